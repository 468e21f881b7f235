"""Strategies cheapest first, each verified by replay, composed into one program.

    synthesise(learning cases)
      for strategy in lookup, arith, strings, coder, hybrid:
          fit, held-out = split(uncovered cases, by the strategy's units)   # held-out: never shown to it
          candidate  = strategy.propose(fit)
          verdict    = verify(candidate, fit, held-out)          # replay, unit by unit
          keep the verified units; the cases they answer are covered
      the kept parts -> one program tree (program.json "program", run by the interpreter),
      its rendering -> code.py (for people);   how each part was made -> program.json;
      hybrid extraction specs of verified units -> hybrid.json

Later strategies only see what earlier ones left, so the expensive ones (a coder model, an
extraction model) run on the hard remainder. A lookup table is the exception to the split:
it answers exactly the inputs it holds, so it is right by construction, gets every case,
and covers none (the other strategies still learn from all of them; the table goes first).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from crystallise.harness.programs import FORMAT, ProgramError, load, render, sandbox_runner
from crystallise.harness.synth.base import Case, Problem, Strategy, case_key, split
from crystallise.harness.synth.strategies import template_units
from crystallise.harness.synth.verify import Policy, verify

__all__ = ["Synthesis", "synthesise"]


@dataclass
class Synthesis:
    """The program (a tree), its rendering, and what program.json / hybrid.json should say about it."""

    code: str
    program: dict[str, Any]
    meta: dict[str, Any]
    hybrid: dict[str, Any] | None = None
    parts: list[str] = field(default_factory=list)
    units: int = 0


def synthesise(
    task: str,
    cases: Sequence[Case],
    strategies: Sequence[Strategy],
    metric: Callable[[Any, Any], bool],
    *,
    previous: dict[str, Any] | None = None,
    policies: dict[str, Policy] | None = None,
    description: str = "",
    numeric: bool = False,
    budget_s: float = 2.0,
    progress: Callable[[str], None] | None = None,
    tried: dict[str, Any] | None = None,
) -> Synthesis | None:
    """The verified program for `cases`, or None when no strategy's program verified. `tried`, when
    given, receives what each strategy tried that did not verify (also when the result is None)."""
    previous = previous or {}
    policies = policies or {}
    left = list(cases)
    parts: list[dict[str, Any]] = []
    meta: dict[str, Any] = {"learning_cases": len(cases), "parts": {}, "tried": {} if tried is None else tried}
    hybrid: dict[str, Any] | None = None
    for strategy in strategies:
        if not left:
            break
        name = strategy.name
        partition = getattr(strategy, "partition", template_units)
        left_fit, left_held = split(left, partition(left))
        given = list(cases) if name == "lookup" else left_fit
        problem = Problem(task, given, metric, description=description, numeric=numeric,
                          previous=previous.get("parts", {}).get(name, {}), budget_s=budget_s, progress=progress)
        if progress:
            progress(f"synthesis: {name}")
        candidate = strategy.propose(problem)
        if candidate is None or not candidate.program:
            if candidate is not None and candidate.state:
                meta["tried"][name] = candidate.state
            continue
        if name == "lookup":  # answers repeats only: the other strategies still learn from every case
            units, summary = None, {"strategy": name, "verified": "by construction: answers only the inputs it holds"}
            covered: set[str] = set()
        else:
            v = verify(candidate, left_fit, left_held, metric, policies.get(name))
            if not v.verified_units:
                meta["tried"][name] = {**candidate.state, "verification": v.summary()}
                continue
            units, summary = frozenset(v.verified_units), v.summary()
            covered = v.answered
        parts.append({"strategy": name, "units": None if units is None else sorted(units),
                      "hybrid": candidate.extraction is not None, "body": candidate.program})
        meta["parts"][name] = {"units": sorted(units) if units is not None else None, "state": candidate.state,
                               "verification": summary, "notes": candidate.notes}
        if candidate.extraction is not None and units is not None:
            hybrid = {"mode": candidate.extraction.get("mode"),
                      "units": {u: s for u, s in candidate.extraction["units"].items() if u in units}}
        left = [c for c in left if case_key(c) not in covered]
    if not parts:
        return None
    program = {"format": FORMAT, "parts": parts}
    meta["strategies"] = [p["strategy"] for p in parts]
    meta["replay"] = _final_replay(program, cases, metric)
    n_units = sum(len(p["units"]) if p["units"] is not None else 1 for p in parts)
    return Synthesis(render(program), program, meta, hybrid, [p["strategy"] for p in parts], n_units)


def _final_replay(program: dict[str, Any], cases: Sequence[Case], metric: Callable[[Any, Any], bool]) -> dict[str, int]:
    """The composed program (code parts) on every learning case: a check of the composition."""
    try:
        loaded = load(program, sandbox_runner)
    except ProgramError as e:
        return {"error": str(e)[:300]}  # type: ignore[dict-item]
    answered = correct = 0
    for c in cases:
        out = loaded.solve(c.input)
        if out is not None:
            answered += 1
            correct += bool(metric(out, c.output))
    return {"cases": len(cases), "answered": answered, "correct": correct}

