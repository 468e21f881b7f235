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
in one place, `by_person`, and only by the authenticated `Actor` the committer is handed by
the code path that called it (the CLI, the admin-key API, the operator's own in-process
code) -- never by the change set's own `learner` string, which any learner (or text a learner
copied from a trace) can set to "human". Which verifiers a learner may use is decided in
`gate.suite.learner_may_add`.
`check_protected` is a pure function over the change set and a `read(path)` of the current tree:

    >>> from crystallise.types import ChangeSet, Delta
    >>> cs = ChangeSet(learner="sneaky", layer="harness", deltas=[
    ...     Delta(op="set", target="artifact", path="tasks/t/evals.jsonl", before='{"id": "a"}\\n', after="")])
    >>> [v.rule for v in check_protected(cs, read=lambda p: '{"id": "a"}\\n')]
    ['append-only']
    >>> grader = ChangeSet(learner="human", layer="harness", deltas=[
    ...     Delta(op="set", target="artifact", path="graders/g.py", before=None, after="x = 1")])
    >>> [v.rule for v in check_protected(grader, read=lambda p: None)]          # a name is no credential
    ['immutable']
    >>> check_protected(grader, read=lambda p: None, actor=Actor.cli("alice"))  # a person at the CLI
    []
"""

from __future__ import annotations

import fnmatch
import getpass
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crystallise.errors import ValidationError
from crystallise.gate.suite import Case, learner_may_add
from crystallise.gate.verifiers import DATA_VERIFIER_KINDS
from crystallise.types import ChangeSet, Delta

__all__ = [
    "APPEND_ONLY",
    "Actor",
    "HUMAN_LEARNERS",
    "IMMUTABLE",
    "Violation",
    "by_person",
    "check_protected",
    "is_protected_path",
]

APPEND_ONLY = ("tasks/*/evals.jsonl", "evals/*.jsonl", "evals/*/*.jsonl",
               "orgs/*/tasks/*/evals.jsonl", "orgs/*/evals/*.jsonl")  # orgs/<org>/: what one org's runs taught
IMMUTABLE = ("graders/*", "tasks/*/graders/*", "logs/*", "orgs/*/graders/*", "orgs/*/tasks/*/graders/*",
             "orgs/*/logs/*")
# Learner names people's actions use. Descriptive only: since issue 15 nothing is decided by
# them (a change set can give itself any name); authority is the `Actor` the committer is given.
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
_SEAL = object()  # only the factories below hold it: an Actor is never built from a change set's strings
_VIA = ("cli", "admin-key", "host", "explicit")


@dataclass(frozen=True)
class Actor:
    """The authenticated person behind a commit, handed to the committer by the code path that
    calls it -- never read from the change set.

        Actor.cli()                    a person at the CLI on the host (the OS user)
        Actor.admin_key(principal)     an admin-key API request (records the key id and who)
        Actor.host("define")           the operator's own in-process code (`@task`, `Loop.define`)
        Actor.explicit("remember")     an explicit memory action of a key's own scope: skips
                                       review, but has no authority over graders, cases or logs

    The first three may change graders, metrics, existing cases and logging (`may_protect`).

        >>> Actor.cli("alice").may_protect, Actor.explicit("remember").may_protect
        (True, False)
        >>> Actor(name="x", via="cli")
        Traceback (most recent call last):
        TypeError: an Actor is made by Actor.cli(), Actor.admin_key(principal), Actor.host() or Actor.explicit()
    """

    name: str
    via: str
    key_id: str | None = None
    _seal: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._seal is not _SEAL or self.via not in _VIA:
            raise TypeError("an Actor is made by Actor.cli(), Actor.admin_key(principal), Actor.host() "
                            "or Actor.explicit()")

    @property
    def may_protect(self) -> bool:
        """Whether this actor may change graders, metrics, existing eval cases and logging."""
        return self.via in ("cli", "admin-key", "host")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "via": self.via, **({"key_id": self.key_id} if self.key_id else {})}

    @classmethod
    def cli(cls, name: str | None = None) -> Actor:
        """A person at the command line on the host (`name`: who they say they are; the OS user
        otherwise)."""
        try:
            who = name or getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (containers)
            who = "unknown"
        return cls(name=who, via="cli", _seal=_SEAL)

    @classmethod
    def admin_key(cls, principal: Any, name: str | None = None) -> Actor:
        """An API request made with the admin key (`principal.admin`); refuses any other key."""
        if not getattr(principal, "admin", False):
            raise TypeError("only the admin key's principal makes an admin-key Actor")
        key_id = getattr(principal, "key_id", None)
        return cls(name=name or key_id or "admin", via="admin-key", key_id=key_id, _seal=_SEAL)

    @classmethod
    def host(cls, what: str) -> Actor:
        """The operator's own code running in-process on the host (defining a task)."""
        return cls(name=what, via="host", _seal=_SEAL)

    @classmethod
    def explicit(cls, what: str) -> Actor:
        """An explicit memory action (remember, forget, accept) through any authenticated edge."""
        return cls(name=what, via="explicit", _seal=_SEAL)


def by_person(cs: ChangeSet, actor: Actor | None = None) -> bool:
    """Whether `cs` is committed on a person's explicit action rather than learned.

    Only the authenticated `actor` the committer was handed decides; `cs` (its learner name,
    its evidence) is deliberately not consulted: a change set calling itself "human" is a
    learner's like any other."""
    del cs
    return actor is not None


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


def check_protected(cs: ChangeSet, *, read: Callable[[str], str | None],
                    actor: Actor | None = None) -> list[Violation]:
    """Every rule `cs` breaks against the current tree (`read(path)` -> text or None), when
    committed by `actor` (None: a learner)."""
    human = by_person(cs, actor) and actor is not None and actor.may_protect
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
        elif (fnmatch.fnmatchcase(path, "tasks/*/spec.json") or fnmatch.fnmatchcase(path, "orgs/*/tasks/*/spec.json")) \
                and not human:
            v = _metric(d, read(path))
        else:
            v = None
        if v is not None:
            out.append(v)
    return out
