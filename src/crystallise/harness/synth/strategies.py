"""The enumerative strategies behind the one interface: arithmetic over numbers, and strings.

Both need no model. Each turns the fit cases it is given into a candidate program whose
`unit(value)` names the part of the task an input belongs to, and leaves verification to the
learner (`verify.py`), which replays the candidate on held-out cases it never saw.

* `ArithPart` — `arith.ArithStrategy` without its own hold-out: units are
  "<template> | (d, p, n)" (one arithmetic rule each). Incremental: rules of the current
  program whose unit was verified are offered back as `previous` and kept while new evidence
  agrees with them.
* `StringsPart` — the FlashFill-style `strings.StringStrategy` per template group: the
  constant text is factored out of the inputs first (`template.py`), outputs are decoded to a
  type the DSL has ("8" -> 8, "yes"/"no" -> bool) and encoded back by the program. Mapping
  inputs (`{"first": ..., "last": ...}`) become positional arguments in key order.
  A group that found nothing is retried only once it has half again as many cases.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from typing import Any

from crystallise.harness.synth.arith import ArithRule, ArithStrategy
from crystallise.harness.synth.base import Candidate, Case, Problem
from crystallise.harness.synth.strings import StringStrategy
from crystallise.harness.synth.strings_search import type_of
from crystallise.harness.synth.template import (
    GroupProgram,
    OutputCodec,
    Template,
    choose_mode,
    key_of,
    grouped,
    templates,
)

__all__ = ["ArithPart", "StringsPart", "group_cases", "retry", "template_units"]


class ArithPart:
    """Arithmetic over the typed numbers in the input (see `arith.py`)."""

    name = "arith"

    def __init__(self, *, max_size: int = 7, min_cases: int = 2,
                 modes: tuple[str, ...] = ("sentence", "line", "shape")) -> None:
        self.max_size = max_size
        self.min_cases = min_cases  # fit cases per rule; the held-out ones come on top
        self.modes = modes  # key modes tried in order; ("shape",): one rule per input format

    def partition(self, cases: list[Case]) -> list[str | None]:
        texts = [c.input for c in cases if isinstance(c.input, str)]
        units = iter(ArithStrategy(modes=self.modes).partition(texts)) if texts else iter(())
        return [next(units) if isinstance(c.input, str) else None for c in cases]

    def propose(self, problem: Problem) -> Candidate | None:
        strategy = ArithStrategy(budget_s=problem.budget_s, max_size=self.max_size, holdout=False,
                                 min_cases=self.min_cases, modes=self.modes)
        verified = set(problem.previous.get("units", []))
        state = problem.previous.get("state", {})
        previous = [r for r in (ArithRule.from_dict(d) for d in state.get("rules", [])) if r.unit in verified]
        texts = [(c.input, str(c.output)) for c in problem.fit if isinstance(c.input, str)]

        def progress(done: int, total: int) -> None:
            problem.say(f"arith: group {done}/{total}")

        found = strategy.synthesise(texts, metric=lambda p, t: bool(problem.metric(p, t)), progress=progress,
                                    previous=previous, previous_mode=state.get("mode") if previous else None)
        if not found:
            return None
        _, rules, mode = found
        rules = sorted(rules, key=lambda r: (r.key, r.signature))
        return Candidate(self.name, ArithStrategy.body(rules, mode),
                         state={"mode": mode, "rules": [r.to_dict() for r in rules]},
                         notes={"rules": len(rules)})


def template_units(cases: list[Case], min_cases: int = 3) -> list[str | None]:
    """The template group of each case (the default partition for a stratified split)."""
    texts = [c.input for c in cases if isinstance(c.input, str)]
    mode = choose_mode(texts, min_cases) if texts else "none"
    return [key_of(c.input, mode) if isinstance(c.input, str)
            else "args:" + ",".join(sorted(c.input)) if isinstance(c.input, dict) and c.input else None
            for c in cases]


def group_cases(cases: list[Case], min_cases: int) -> tuple[str, dict[str, Template], dict[str, list[Case]]]:
    """(mode, templates, cases by unit) for string inputs; mapping inputs group by their keys."""
    texts = [c.input for c in cases if isinstance(c.input, str)]
    mode = choose_mode(texts, min_cases) if texts else "none"
    tpls = templates(texts, mode) if texts else {}
    groups: dict[str, list[Case]] = defaultdict(list)
    for c in cases:
        if isinstance(c.input, str):
            groups[key_of(c.input, mode)].append(c)
        elif isinstance(c.input, dict) and c.input:
            groups["args:" + ",".join(sorted(c.input))].append(c)
    return mode, tpls, {k: v for k, v in groups.items() if len(v) >= min_cases}


def retry(tried: dict[str, int], unit: str, n: int) -> bool:
    """A group that failed at `tried[unit]` cases is worth another try at 1.5x as many."""
    before = tried.get(unit)
    return before is None or n >= 1.5 * before


def unit_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


class StringsPart:
    """FlashFill-style enumeration over the payload of each template group."""

    name = "strings"

    def __init__(self, *, min_cases: int = 3, max_examples: int = 10, budget_factor: float = 4.0) -> None:
        self.min_cases = min_cases
        self.max_examples = max_examples  # shown to the search; the rest are checked by replay
        self.budget_factor = budget_factor  # the strategy's whole budget, in units of problem.budget_s
        self.tried: dict[str, int] = {}  # unit -> cases it had when the search found nothing

    def propose(self, problem: Problem) -> Candidate | None:
        mode, tpls, groups = group_cases(problem.fit, self.min_cases)
        self.tried = {**problem.previous.get("state", {}).get("tried", {}), **self.tried}
        deadline = time.monotonic() + problem.budget_s * self.budget_factor
        found: list[GroupProgram] = []
        for unit, cases in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            if time.monotonic() >= deadline:
                break
            if not retry(self.tried, unit, len(cases)):
                continue
            problem.say(f"strings: {unit[:40] or 'inputs'} ({len(cases)} cases)")
            program = self._search(unit, cases, tpls, min(problem.budget_s, deadline - time.monotonic()))
            if program is None:
                self.tried[unit] = len(cases)
            else:
                self.tried.pop(unit, None)
                found.append(program)
        if not found:
            return None
        return Candidate(self.name, grouped(mode, found), state={"tried": dict(self.tried)},
                         notes={"groups": len(found)})

    def _search(self, unit: str, cases: list[Case], tpls: dict[str, Template], budget_s: float) -> GroupProgram | None:
        outputs = [c.output for c in cases]
        codec = OutputCodec.infer(outputs)
        keys: tuple[str, ...] | None = None
        if unit.startswith("args:"):
            keys = tuple(sorted(cases[0].input))
            template = Template(unit, "", "")
            rows = [[c.input[k] for k in keys] for c in cases]
        else:
            template = tpls[unit]
            rows = [[template.payload(c.input)] for c in cases]
        try:
            typed = [codec.decode(o) for o in outputs]
        except (TypeError, ValueError):
            return None
        examples = [(r, y) for r, y in zip(rows, typed) if None not in r and type_of(y) is not None]
        if len(examples) < self.min_cases or any(type_of(v) is None for r, _ in examples for v in r):
            return None
        examples = sorted(examples, key=lambda e: unit_hash(e[0]))[: self.max_examples]
        program = StringStrategy().search(examples, budget_s=max(0.1, budget_s))
        if program is None:
            return None
        return GroupProgram(template, program.tree, codec, keys)
