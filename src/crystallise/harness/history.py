"""The task's history for learners and the gate: every input shape it has verified, not just the recent window.

A task's inputs come in *shapes*: the input with every number masked (`synth/template.py`,
mode "shape"), so "a firm holds $1,200 of assets ..." and "a firm holds $9,870 of assets ..."
share one shape and a new input format is a new one. Three rules:

1. *Current cases* (`current_cases`): after a drift (a softening for disagreement records its
   trace seq), cases from the drift point on count; of a shape with no case since then, its
   older cases still count (nothing has spoken against them: an old format that is merely not
   seen lately is not forgotten). A shape with newer cases is superseded by them (the answers
   of that shape changed).
2. *The gate sample* (`gate_sample`): the recent window of held-out cases, plus up to
   `per_shape` held-out cases of every shape among the current cases (a shape with no held-out
   case lends its own verified cases): every verified shape is represented, however old.
3. *Lost shapes* (`lost_shapes`): a shape of which the old version passed a case and the new
   version passes none is lost; the gate refuses such a change set (a regression, whatever
   the paired test says), and says which shape in its reason.

    >>> shape_of("a firm holds $1,200 of assets"), shape_of({"b": 1, "a": 2})
    ('a firm holds $# of assets', 'args:a,b')
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from crystallise.evidence import VerifiedCase, is_gate_case
from crystallise.gate import CaseResult
from crystallise.harness.programs import ProgramError, load, sandbox_runner
from crystallise.harness.synth.template import key_of
from crystallise.types import Verdict

__all__ = ["current_cases", "formats_conflict", "gate_sample", "lost_shapes", "refuse_lost_shapes", "shape_of",
           "shape_tally", "uncovered_shapes"]


def shape_of(value: Any) -> str:
    """The input's shape: numbers masked for text, the sorted keys for a mapping, else its type."""
    if isinstance(value, str):
        return key_of(value, "shape")
    if isinstance(value, Mapping):
        return "args:" + ",".join(sorted(str(k) for k in value))
    return f"<{type(value).__name__}>"


def current_cases(cases: Sequence[VerifiedCase], seq: Mapping[str, int], since: int) -> list[VerifiedCase]:
    """Cases from `since` on, plus the older cases of shapes with no case since then (rule 1)."""
    if since <= 0:
        return list(cases)
    recent = [c for c in cases if seq.get(c.trace_id, 0) >= since]
    fresh_shapes = {shape_of(c.input) for c in recent}
    older = [c for c in cases if seq.get(c.trace_id, 0) < since and shape_of(c.input) not in fresh_shapes]
    return older + recent


def _order(case: VerifiedCase) -> str:
    return hashlib.sha256(json.dumps(case.input, sort_keys=True, default=str).encode()).hexdigest()


def gate_sample(cases: Sequence[VerifiedCase], *, window: int, per_shape: int, min_members: int = 3,
                max_history: int | None = None) -> list[VerifiedCase]:
    """The recent `window` held-out cases plus up to `per_shape` cases of every shape (rule 2), recent first.

    A shape is an input form that recurs (`min_members` verified cases or more: free text, where every
    input is its own "shape", adds nothing); at most `max_history` (default `window`) history cases are
    added, the largest shapes first."""
    held = [c for c in cases if is_gate_case(c.input)]
    out = held[-window:] if window > 0 else []
    seen = {c.trace_id for c in out}
    by_shape: dict[str, list[VerifiedCase]] = defaultdict(list)
    for c in cases:
        by_shape[shape_of(c.input)].append(c)
    budget = window if max_history is None else max_history
    counts = defaultdict(int, {s: 0 for s in by_shape})
    for c in out:
        counts[shape_of(c.input)] += 1
    for shape, members in sorted(by_shape.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        if len(members) < min_members:
            continue
        have = counts[shape]
        pool = [c for c in members if is_gate_case(c.input)] or members  # no held-out case: its own cases
        for c in sorted(pool, key=_order):
            if have >= per_shape or budget <= 0:
                break
            if c.trace_id not in seen:
                seen.add(c.trace_id)
                out.append(c)
                have += 1
                budget -= 1
    return out


def shape_tally(old: Sequence[CaseResult], new: Sequence[CaseResult],
                shapes: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """{shape: {"cases", "old", "new"}}: passes of each version per input shape (case id -> shape in `shapes`)."""
    tally: dict[str, dict[str, int]] = {}
    passed_new = {r.case_id: r.passed for r in new}
    for r in old:
        shape = shapes.get(r.case_id)
        if shape is None:
            continue
        t = tally.setdefault(shape, {"cases": 0, "old": 0, "new": 0})
        t["cases"] += 1
        t["old"] += bool(r.passed)
        t["new"] += bool(passed_new.get(r.case_id))
    return tally


def lost_shapes(tally: Mapping[str, Mapping[str, int]]) -> list[str]:
    """Shapes the old version passed a case of and the new version passes none of (rule 3)."""
    return sorted(s for s, t in tally.items() if t["old"] > 0 and t["new"] == 0)


def uncovered_shapes(program: Mapping[str, Any] | None, cases: Sequence[Any], metric: Any,
                     min_members: int = 3) -> dict[str, int]:
    """{shape: cases}: recurring shapes (`min_members`+ cases with `.input`/`.output`) that `program` (a program
    tree) answers right on fewer than half of their cases. The crystallise learner asks it to know whether
    one program per input format is needed."""
    by_shape: dict[str, list[Any]] = defaultdict(list)
    for c in cases:
        by_shape[shape_of(c.input)].append(c)
    recurring = {s: m for s, m in by_shape.items() if len(m) >= min_members}
    if not recurring:
        return {}
    solve = None
    if program:
        try:
            solve = load(dict(program), sandbox_runner).solve
        except ProgramError:
            solve = None
    out = {}
    for shape, members in recurring.items():
        right = 0
        for c in members if solve is not None else ():
            try:
                got = solve(c.input)
            except Exception:  # noqa: BLE001 - a program that fails on an input answers it wrongly
                got = None
            right += got is not None and bool(metric(got, c.output))
        if right < 0.5 * len(members):
            out[shape] = len(members)
    return out


def formats_conflict(missed: Mapping[str, int], cases: Sequence[Any], *, min_members: int = 3,
                     max_shapes: int = 16) -> bool:
    """Whether one rule per input shape is worth a second synthesis: an unanswered recurring shape shares its
    leading sentence (the template key arith groups by) with another recurring shape -- two formats of one
    question -- and the task has at most `max_shapes` recurring shapes (more: free text, where a rule per
    shape would cost a synthesis per input form and rarely verify)."""
    if not missed:
        return False
    members: dict[str, int] = defaultdict(int)
    first: dict[str, Any] = {}
    for c in cases:
        shape = shape_of(c.input)
        members[shape] += 1
        first.setdefault(shape, c.input)
    recurring = [s for s, n in members.items() if n >= min_members]
    if len(recurring) > max_shapes:
        return False
    sentence = {s: key_of(first[s], "sentence") for s in recurring if isinstance(first[s], str)}
    return any(m in sentence and any(o != m and sentence.get(o) == sentence[m] for o in recurring) for m in missed)


def refuse_lost_shapes(verdict: Verdict, old: Sequence[CaseResult], new: Sequence[CaseResult],
                       cases: Sequence[VerifiedCase]) -> None:
    """Rule 3 on a verdict: the per-shape tally goes in its details; a verdict that loses a shape is a reject
    whose reason names the shape (whatever the paired test or the regression rate said)."""
    tally = shape_tally(old, new, {c.trace_id: shape_of(c.input) for c in cases})
    lost = lost_shapes(tally)
    verdict.details["shapes"] = {s[:120]: t for s, t in list(tally.items())[:20]}
    verdict.details["lost_shapes"] = [s[:120] for s in lost[:5]]
    if lost and verdict.decision != "needs_review":
        verdict.decision = "reject"
        t = tally[lost[0]]
        verdict.reason = (f"reject: loses {len(lost)} verified input shape(s), e.g. {lost[0][:80]!r} "
                          f"({t['old']}/{t['cases']} -> 0/{t['cases']} cases pass); was {verdict.reason}")
