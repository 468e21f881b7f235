"""What counts as evidence: the one place the rules about a run's feedback live.

Every learner, grade rule, credit count, advisor and training set asks these functions;
none re-implements them (two copies of a rule drift apart: STYLE.md habit 12).

    run (Trace) + its feedback, oldest first
      revoked?      feedback of kind "revoked" (`crystallise revert --trace/--user`)
                    -> no evidence at all: no truth, no outcome, no credit, no case
      verified?     the latest explicit feedback that speaks about the answer wins:
                      a correction             -> its value is the truth   ("correction")
                      a score of 1             -> the output is the truth  ("accepted")
                      a lower score, no correction
                                               -> takes back an accepted output (a correction stands:
                                                  it names the right answer whatever was output)
      outcome       the latest explicit score: +1 (>= 0.5), -1 (< 0.5), 0 (none yet); a label alone
                    counts as the score it stands for ("thumbs_down" -> 0.0: types.LABEL_SCORES)
      gate case     one input in four (by a hash of the input) is kept for the gate only

    >>> from crystallise.types import Feedback, Trace
    >>> t = Trace(name="add", input="1+1", output="3", feedback=[Feedback(trace_id="", score=0.0, correction="2")])
    >>> verified(t), outcome_of(t)
    (('2', 'correction'), -1)
    >>> t.feedback.append(Feedback(trace_id="", kind=REVOKED))
    >>> verified(t), outcome_of(t), verified_cases([t], "add")
    (None, None, [])

Pure functions over `crystallise.types`: a leaf of the dependency graph (docs/architecture.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from crystallise.types import Trace

__all__ = [
    "REVOKED",
    "VerifiedCase",
    "is_gate_case",
    "is_revoked",
    "outcome_of",
    "score_of",
    "truth_of",
    "verified",
    "verified_cases",
]

REVOKED = "revoked"  # the feedback kind an undo appends to the traces it takes back (governance/undo.py)


def is_revoked(trace: Trace) -> bool:
    """True for a run an undo took back: it is no evidence for anything, ever again."""
    return any(f.kind == REVOKED for f in trace.feedback)


def verified(trace: Trace) -> tuple[Any, Literal["correction", "accepted"]] | None:
    """(right answer, how it is known) from the run's explicit feedback, or None (see the module docstring).

    Errored and revoked runs have no verified answer."""
    if trace.status != "ok" or is_revoked(trace):
        return None
    found: tuple[Any, Literal["correction", "accepted"]] | None = None
    for fb in sorted(trace.feedback, key=lambda f: f.created_at):  # stable: the store's order on a tie
        if fb.source != "explicit":
            continue
        score = fb.effective_score  # a label alone ("thumbs_up") counts as the score it stands for
        if fb.correction is not None:
            found = (fb.correction, "correction")
        elif score is not None and score >= 1.0 and trace.output is not None:
            found = (trace.output, "accepted")
        elif score is not None and found is not None and found[1] == "accepted":
            found = None  # a later failing score takes the acceptance back
    return found


def truth_of(trace: Trace) -> Any:
    """The verified right answer of a run, or None (`verified` without the how)."""
    v = verified(trace)
    return None if v is None else v[0]


def score_of(trace: Trace) -> float | None:
    """The latest explicit score of a run (1.0 = success), or None: none given, or the run was revoked."""
    return None if is_revoked(trace) else trace.outcome


def outcome_of(trace: Trace) -> int | None:
    """+1 (succeeded), -1 (failed), 0 (no outcome yet) or None (revoked: earns nothing, teaches nothing)."""
    if is_revoked(trace):
        return None
    score = trace.outcome
    if score is None:
        return 0
    return 1 if score >= 0.5 else -1


@dataclass
class VerifiedCase:
    """An input whose right answer is known, from one run of a task."""

    trace_id: str
    input: Any
    output: Any  # the verified right answer
    org: str | None = None  # the org whose run it was: its examples are served to that org only


def verified_cases(traces: Iterable[Trace], task: str) -> list[VerifiedCase]:
    """Cases with a known right answer, from the runs of `task` (revoked and errored runs never count)."""
    out: list[VerifiedCase] = []
    for t in traces:
        if t.name != task:
            continue
        v = verified(t)
        if v is not None:
            out.append(VerifiedCase(t.id, t.input, v[0], t.org_id))
    return out


def is_gate_case(value: Any) -> bool:
    """One input in four is kept for the gate only: learners never see it."""
    key = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return int(hashlib.sha256(key.encode()).hexdigest()[8:16], 16) % 4 == 0
