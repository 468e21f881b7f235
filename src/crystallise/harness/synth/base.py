"""The one interface every synthesis strategy implements, and the data it passes around.

    learner: verified cases ──split──► fit (shown to strategies)  +  held-out (never shown)
                 for strategy in lookup, arith, strings, coder, hybrid:       # cheapest first
                     candidate = strategy.propose(Problem(fit cases not yet covered, ...))
                     verification = verify.check(candidate, fit, held-out)    # replay in the sandbox
                     keep the candidate's verified units; the next strategy sees what is left
                 compose the kept parts into one program (`compose.py`)

A *candidate* is a program tree (one part's body, `harness/programs`: data, run by the
interpreter; LLM-written functions inside it run in the sandbox) whose loaded form has

    unit(value)            -> str | None   which part of the task this input belongs to
                                           (a template, a formula, a (template, signature) pair)
    solve(value)           -> answer | None (None: abstain)
    solve(value, fields)   -> answer | None (hybrid parts only: `fields` were extracted by the LLM)

Units are what verification accepts or rejects: a unit is kept only when the program
reproduces the held-out cases of that unit, so one wrong rule does not sink twenty right ones,
and the composed program answers only inputs of verified units (it abstains elsewhere).

The split is by a hash of the input, not by order, so a stream's order cannot bias it, and it
is independent of the gate's split (`learn.is_gate_case`), which removes its cases first.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Candidate", "Case", "Problem", "Strategy", "case_key", "is_heldout", "split"]

Metric = Callable[[Any, Any], bool]


@dataclass(frozen=True)
class Case:
    """One verified example: an input and its right answer (`id` = the trace it came from)."""

    input: Any
    output: Any
    id: str = ""


def _key(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


def case_key(case: Case) -> str:
    """Identity of a case across strategies: its trace id, else its input."""
    return case.id or "input:" + _key(case.input)


def is_heldout(value: Any) -> bool:
    """One input in three is held out from synthesis (salted apart from the gate's split).

    >>> sum(is_heldout(f"case {i}") for i in range(300)) in range(80, 120)
    True
    """
    return int(_hash(value)[:8], 16) % 3 == 0


def split(cases: Sequence[Case], units: Sequence[str | None] | None = None) -> tuple[list[Case], list[Case]]:
    """(fit, held-out): the held-out cases are never shown to a strategy.

    One case in three by hash. With `units` (the part of the task each case belongs to, as a
    strategy would group them) the split is stratified: a unit of three or more cases that the
    hash left without a held-out case gives up its lowest-hash case, so every unit a strategy
    can learn can also be checked. Only inputs decide this, never answers.
    """
    held_flags = [is_heldout(c.input) for c in cases]
    if units is not None:
        members: dict[str, list[int]] = {}
        for i, u in enumerate(units):
            if u is not None:
                members.setdefault(u, []).append(i)
        for idx in members.values():
            if len(idx) >= 2 and not any(held_flags[i] for i in idx):
                held_flags[min(idx, key=lambda i: _hash(cases[i].input))] = True
    fit = [c for c, h in zip(cases, held_flags) if not h]
    held = [c for c, h in zip(cases, held_flags) if h]
    return fit, held


def _hash(value: Any) -> str:
    return hashlib.sha256(("heldout:" + _key(value)).encode()).hexdigest()


@dataclass
class Problem:
    """What a strategy is given: the fit cases left to cover, and how answers are judged."""

    task: str
    fit: list[Case]
    metric: Metric
    description: str = ""
    numeric: bool = False  # the task's metric compares numbers (ACE's rule)
    previous: dict[str, Any] = field(default_factory=dict)  # this strategy's state in the current program
    budget_s: float = 2.0
    progress: Callable[[str], None] | None = None

    def say(self, message: str) -> None:
        if self.progress:
            self.progress(message)


@dataclass
class Candidate:
    """A program proposed by one strategy, before verification.

    `program` is the part's body (a JSON tree, `harness/programs/interp.py`); `state` is
    what the strategy needs to learn incrementally next time (stored in
    program.json); `notes` says how it was made (rounds, LLM calls, sizes) for people;
    `extraction` is, for hybrid parts, the per-unit schema and examples the runtime uses
    to have the LLM fill the fields before `solve(value, fields)`.
    """

    strategy: str
    program: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    extraction: dict[str, Any] | None = None
    # hybrid parts: a function (value, unit) -> fields | None that runs the extraction at learn time
    extract: Callable[[Any, str], dict[str, Any] | None] | None = None

    @property
    def source(self) -> str:
        """The part's rendering (for people and logs; never what runs)."""
        from crystallise.harness.programs.rendering import render_body

        return render_body(self.program)


class Strategy(Protocol):
    """A way to turn verified cases into a program. One required method.

    Optionally `partition(cases) -> [unit or None per case]` says how the strategy will group
    the cases, so the learner can stratify the held-out split by it (the default groups by
    template, `strategies.template_units`)."""

    name: str

    def propose(self, problem: Problem) -> Candidate | None:
        """A candidate program for (some of) the problem's fit cases, or None."""
        ...
