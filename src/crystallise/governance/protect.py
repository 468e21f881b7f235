"""Protected graders: learners may add eval cases, never change graders, cases or logs.

A self-improving agent that can edit what grades it will, sooner or later, grade itself
well. So the committer refuses, *by construction*, any change set from a learner that

    1. rewrites or deletes an existing eval case      tasks/<name>/evals.jsonl, evals/**.jsonl
       (these files are append-only: the new text must start with the old text, and the
       appended rows must be new ids, one JSON object per line)
    2. touches a grader or a log                      graders/**, tasks/<name>/graders/**, logs/**
    3. changes the metric a task is checked with      tasks/<name>/spec.json "metric"
       (or deletes the spec)
    4. targets anything but items and artifacts       traces, spans and feedback are the log:
                                                      no delta can reach them
    5. appends a case graded by code, or no case      a learner's new case must be a valid case
                                                      with a data verifier (exact, numeric,
                                                      regex, json_schema): python and judge
                                                      verifiers are grader code

Human actions (defining a task, an explicit edit) are allowed 2-3 and 5; nobody may rewrite
an existing case (1): give the corrected case a new id. Who counts as a person is decided
in one place, `by_person`; which verifiers a learner may use, in `gate.suite.learner_may_add`.
`check_protected` is a pure function over the change set and a `read(path)` of the current tree:

    >>> from crystallise.types import ChangeSet, Delta
    >>> cs = ChangeSet(learner="sneaky", layer="harness", deltas=[
    ...     Delta(op="set", target="artifact", path="tasks/t/evals.jsonl", before='{"id": "a"}\\n', after="")])
    >>> [v.rule for v in check_protected(cs, read=lambda p: '{"id": "a"}\\n')]
    ['append-only']
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable
from dataclasses import dataclass

from crystallise.errors import ValidationError
from crystallise.gate.suite import Case, learner_may_add
from crystallise.gate.verifiers import DATA_VERIFIER_KINDS
from crystallise.types import ChangeSet, Delta

__all__ = [
    "APPEND_ONLY",
    "HUMAN_LEARNERS",
    "IMMUTABLE",
    "Violation",
    "by_person",
    "check_protected",
    "is_protected_path",
]

APPEND_ONLY = ("tasks/*/evals.jsonl", "evals/*.jsonl", "evals/*/*.jsonl")
IMMUTABLE = ("graders/*", "tasks/*/graders/*", "logs/*")
# Change sets made by people (or on their explicit behalf), not by learners.
HUMAN_LEARNERS = frozenset({"define", "human", "user", "review", "revert", "undo",
                            "remember", "forget", "accept", "forget-user"})  # context/memory.py, forget_user.py
_TARGETS = ("item", "artifact")


@dataclass(frozen=True)
class Violation:
    """One reason a change set may not be committed."""

    rule: str  # append-only | immutable | metric | target | grader
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.detail} ({self.rule})"


def is_protected_path(path: str | None, patterns: tuple[str, ...] = APPEND_ONLY + IMMUTABLE) -> bool:
    """Whether `path` falls under `patterns` (fnmatch's * crosses '/': `graders/*` is the whole folder)."""
    return bool(path) and any(fnmatch.fnmatchcase(path, p) for p in patterns)


_matches = is_protected_path


def by_person(cs: ChangeSet) -> bool:
    """Whether `cs` is a person's action (or made on their explicit behalf) rather than a learner's.

    Today the change set's `learner` name decides; this is the one place to re-key it on the
    authenticated principal."""
    return cs.learner in HUMAN_LEARNERS


def _ids(text: str) -> list[str]:
    out = []
    for line in text.split("\n"):  # not splitlines(): U+2028 inside a row's strings is no line break
        if line.strip():
            row = json.loads(line)
            out.append(str(row.get("id")) if isinstance(row, dict) else "")
    return out


def _append_only(d: Delta, current: str | None, human: bool) -> Violation | None:
    path = d.path or ""
    before = current or ""
    if d.after is None:
        return Violation("append-only", path, "deletes an eval file") if before else None
    if not d.after.startswith(before):
        return Violation("append-only", path, "rewrites or removes existing eval cases; add new cases only")
    added = d.after[len(before):]
    if before and not before.endswith("\n") and added:
        return Violation("append-only", path, "appends to an unterminated line (would change the last case)")
    try:
        old, new = _ids(before), _ids(added)
    except (json.JSONDecodeError, ValueError, RecursionError):  # RecursionError: a row nested too deep to parse
        return Violation("append-only", path, "appended text is not one JSON object per line")
    reused = sorted(set(old) & set(new)) or sorted({i for i in new if new.count(i) > 1})
    if reused:
        return Violation("append-only", path, f"re-uses case id(s) {reused[:3]}: a case, once written, is fixed")
    return None if human else _learner_cases(path, added)


def _learner_cases(path: str, added: str) -> Violation | None:
    """Every row a learner appends is a valid case graded by a data verifier (nothing of it runs here)."""
    kinds = ", ".join(sorted(DATA_VERIFIER_KINDS))
    for line in added.split("\n"):  # as _ids: U+2028 inside a row is no line break
        if not line.strip():
            continue
        row = json.loads(line)  # _ids has parsed it already
        if not isinstance(row, dict):
            return Violation("grader", path, "appended row is not a case object")
        cid = row.get("id")
        if "voids" in row:
            return Violation("append-only", path, f"voids case {row['voids']!r}: only a person's undo may void a case")
        verifier = row.get("verifier", {"kind": "exact"})  # a case without one is graded by exact match
        if not learner_may_add(verifier):
            kind = verifier.get("kind") if isinstance(verifier, dict) else verifier
            return Violation("grader", path, f"case {cid!r} is graded by a {kind!r} verifier: learners may add "
                                             f"cases with data verifiers only ({kinds}); grader code is a person's")
        try:
            Case.from_dict(row)
        except (ValidationError, TypeError) as exc:
            return Violation("grader", path, f"case {cid!r} is not a valid eval case ({exc})")
    return None


def _metric(d: Delta, current: str | None) -> Violation | None:
    if not current:
        return None
    path = d.path or ""
    if d.after is None:
        return Violation("metric", path, "deletes the task spec")
    try:
        old, new = json.loads(current).get("metric"), json.loads(d.after).get("metric")
    except (json.JSONDecodeError, AttributeError):
        return Violation("metric", path, "the new spec is not a JSON object")
    if old != new:
        return Violation("metric", path, f"changes the task's metric {old!r} -> {new!r} (the grader)")
    return None


def check_protected(cs: ChangeSet, *, read: Callable[[str], str | None]) -> list[Violation]:
    """Every rule `cs` breaks against the current tree (`read(path)` -> text or None)."""
    human = by_person(cs)
    out: list[Violation] = []
    for d in cs.deltas:
        if d.target not in _TARGETS:
            out.append(Violation("target", str(d.target), "deltas may change items and artifacts only, never logs"))
            continue
        if d.target != "artifact" or not d.path:
            continue
        path = d.path
        if _matches(path, APPEND_ONLY):
            v = _append_only(d, read(path), human)
        elif _matches(path, IMMUTABLE):
            v = None if human else Violation("immutable", path, "graders and logs are outside a learner's reach")
        elif fnmatch.fnmatchcase(path, "tasks/*/spec.json") and not human:
            v = _metric(d, read(path))
        else:
            v = None
        if v is not None:
            out.append(v)
    return out
