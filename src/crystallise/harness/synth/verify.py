"""Verification by replay: run a candidate program on recorded cases, per unit.

    verify(candidate, fit, held-out, metric)
      for each case: unit(value), then solve(value) (or, for a hybrid part, solve(value, fields)
                     with the fields the LLM extracted) — by the interpreter; LLM-written
                     functions inside the program run in the sandbox
      per unit:      answered / correct on fit, answered / correct on held-out
      a unit is verified when
        * it answered at least `min_heldout` held-out cases (no held-out evidence, no trust),
        * its precision on the held-out cases it answered is >= `precision`, and
        * its precision on the fit cases it answered is >= `precision` (the program at least
          reproduces what it was built from)
      abstaining (None) is allowed anywhere and counts against nothing but coverage;
      an exception or a sandbox limit counts as a wrong answer.

Candidates come from strategies that never saw the held-out cases, so an overfitted program
(one that memorised its fit cases) shows up here as wrong or silent on held-out inputs and
is not kept. DSL programs are trees the interpreter runs here; LLM-written code runs only in
the sandbox.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from crystallise.errors import SandboxError
from crystallise.harness.programs import ProgramError, load_body, sandbox_runner
from crystallise.harness.synth.base import Candidate, Case, case_key

__all__ = ["Outcome", "Policy", "UnitCheck", "Verification", "replay", "verify"]

Metric = Callable[[Any, Any], bool]
Extract = Callable[[Any, str], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Policy:
    """How much held-out evidence a unit needs (`precision` on what it answers)."""

    precision: float = 0.95
    min_heldout: int = 1
    timeout_s: float = 2.0


@dataclass
class Outcome:
    case: Case
    unit: str | None
    output: Any = None
    error: str | None = None
    correct: bool = False

    @property
    def answered(self) -> bool:
        return self.output is not None or self.error is not None


@dataclass
class UnitCheck:
    unit: str
    fit_answered: int = 0
    fit_correct: int = 0
    held_answered: int = 0
    held_correct: int = 0
    verified: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Verification:
    """What replay showed about one candidate."""

    strategy: str
    n_fit: int
    n_heldout: int
    units: dict[str, UnitCheck] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)  # held-out cases it got wrong (a few)
    error: str | None = None  # the program did not load
    answered: set[str] = field(default_factory=set)  # case keys it answers within its verified units

    @property
    def verified_units(self) -> list[str]:
        return sorted(u for u, c in self.units.items() if c.verified)

    @property
    def held_answered(self) -> int:
        return sum(c.held_answered for u, c in self.units.items() if c.verified)

    @property
    def held_correct(self) -> int:
        return sum(c.held_correct for u, c in self.units.items() if c.verified)

    def summary(self) -> dict[str, Any]:
        """For program.json: counts over the verified units, and why the others were dropped."""
        dropped = {u: c.reason for u, c in sorted(self.units.items()) if not c.verified}
        return {
            "strategy": self.strategy,
            "fit_cases": self.n_fit,
            "heldout_cases": self.n_heldout,
            "verified_units": len(self.verified_units),
            "heldout_answered": self.held_answered,
            "heldout_correct": self.held_correct,
            "dropped_units": dict(list(dropped.items())[:50]),
            **({"error": self.error} if self.error else {}),
        }


def replay(program: dict[str, Any], cases: Sequence[Case], metric: Metric, *, extract: Extract | None = None,
           timeout_s: float = 2.0) -> list[Outcome]:
    """Run a part's `program` (its body) on each case; raises ProgramError when it does not load."""
    body = load_body(program, sandbox_runner)
    out: list[Outcome] = []
    for case in cases:
        try:
            unit = body.unit(case.input)
        except Exception as e:  # noqa: BLE001 - a unit test that fails claims nothing
            out.append(Outcome(case, None, error=f"unit(): {type(e).__name__}: {e}"))
            continue
        if unit is None:
            out.append(Outcome(case, None))
            continue
        unit = str(unit)
        try:
            if extract is None:
                got = body.solve(case.input)
            else:
                fields = extract(case.input, unit)
                got = None if fields is None else body.solve(case.input, fields)
        except Exception as e:  # noqa: BLE001 - a sandbox limit, a malformed reply: a wrong answer
            out.append(Outcome(case, unit, error=f"{type(e).__name__}: {e}"))
            continue
        out.append(Outcome(case, unit, got, correct=got is not None and bool(metric(got, case.output))))
    return out


def verify(candidate: Candidate, fit: Sequence[Case], held: Sequence[Case], metric: Metric,
           policy: Policy | None = None) -> Verification:
    """Replay `candidate` on fit and held-out cases and decide unit by unit (module docstring)."""
    policy = policy or Policy()
    v = Verification(candidate.strategy, len(fit), len(held))
    try:
        fit_out = replay(candidate.program, fit, metric, extract=candidate.extract, timeout_s=policy.timeout_s)
        held_out = replay(candidate.program, held, metric, extract=candidate.extract, timeout_s=policy.timeout_s)
    except (ProgramError, SandboxError) as e:
        v.error = str(e)[:500]
        return v
    for side, outcomes in (("fit", fit_out), ("held", held_out)):
        for o in outcomes:
            if o.unit is None or not o.answered:
                continue
            check = v.units.setdefault(o.unit, UnitCheck(o.unit))
            setattr(check, f"{side}_answered", getattr(check, f"{side}_answered") + 1)
            setattr(check, f"{side}_correct", getattr(check, f"{side}_correct") + int(o.correct))
            if side == "held" and not o.correct and len(v.failures) < 20:
                v.failures.append({"unit": o.unit, "input": _short(o.case.input), "expected": o.case.output,
                                   "got": o.output, "error": o.error})
    for check in v.units.values():
        check.verified, check.reason = _decide(check, policy)
    good = set(v.verified_units)
    v.answered = {case_key(o.case) for o in fit_out + held_out if o.unit in good and o.output is not None}
    return v


def _decide(c: UnitCheck, policy: Policy) -> tuple[bool, str]:
    if c.held_answered < policy.min_heldout:
        return False, f"answered {c.held_answered} held-out cases (needs {policy.min_heldout})"
    if c.held_correct < policy.precision * c.held_answered:
        return False, f"held-out precision {c.held_correct}/{c.held_answered} below {policy.precision:g}"
    if c.fit_answered and c.fit_correct < policy.precision * c.fit_answered:
        return False, f"fit precision {c.fit_correct}/{c.fit_answered} below {policy.precision:g}"
    return True, f"held-out {c.held_correct}/{c.held_answered}, fit {c.fit_correct}/{c.fit_answered}"


def _short(value: Any, n: int = 300) -> Any:
    return value[:n] + "…" if isinstance(value, str) and len(value) > n else value
