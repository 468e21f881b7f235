"""Review mode: learned change sets wait for a person before they go live.

A home's `config.json` may hold review rules; a learned change set that matches one is
not committed — it is kept as a *proposal* (status `needs_review`) with its deltas,
evidence and gate verdict, until someone approves or rejects it:

    {"review": [{"layer": "harness"}, {"layer": "context", "level": "org", "owner": "acme"}]}

    crystallise review require --layer harness          # add a rule
    crystallise review list                             # what waits, newest first
    crystallise review show cs_...                      # the diff, the evidence, the verdict
    crystallise review approve cs_... --by alice        # commit it as a version (note who approved)
    crystallise review reject cs_... --by alice --note "too specific"

Change sets the gate itself could not decide (too few cases: verdict `needs_review`) wait
in the same queue. Approval never bypasses the other rules: the committer still checks
that the change set applies to the current state and that it leaves graders, eval cases
and logs alone. People's own actions (defining a task, an explicit remember, a revert)
do not need review; `protect.by_person` tells them apart.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from crystallise.errors import CrystalliseError, ValidationError
from crystallise.governance.protect import Actor, by_person
from crystallise.store.base import Store
from crystallise.types import ChangeSet, Verdict, Version, now

__all__ = [
    "PendingReview",
    "ReviewRule",
    "approve",
    "diff_text",
    "load_rules",
    "pending",
    "reject",
    "requires_review",
    "summary",
]

LAYERS = ("*", "context", "harness", "weights")
LEVELS = ("*", "agent", "org", "user")


class PendingReview(CrystalliseError):  # noqa: N818 - a state, not a failure
    """Raised by the committer instead of committing: the change set waits for review."""

    def __init__(self, changeset: ChangeSet, rule: ReviewRule) -> None:
        super().__init__(f"change set {changeset.id} waits for review ({rule.describe()}): "
                         f"`crystallise review show {changeset.id}`, then approve or reject it")
        self.changeset = changeset
        self.rule = rule


@dataclass(frozen=True)
class ReviewRule:
    """Which learned change sets need a person: by layer, scope level and owner id ("*" = any)."""

    layer: str = "*"
    level: str = "*"
    owner: str | None = None  # the agent / org / user id at that level; None = any

    def __post_init__(self) -> None:
        if self.layer not in LAYERS:
            raise ValidationError(f"review rule layer {self.layer!r} is not one of {', '.join(LAYERS)}")
        if self.level not in LEVELS:
            raise ValidationError(f"review rule level {self.level!r} is not one of {', '.join(LEVELS)}")
        if self.owner is not None and self.level == "*":
            raise ValidationError(
                "a review rule with an owner needs a level (agent, org or user) to say whose id it is"
            )

    def matches(self, cs: ChangeSet) -> bool:
        if self.layer != "*" and cs.layer != self.layer:
            return False
        level = cs.scope.level
        if self.level != "*" and level != self.level:
            return False
        if self.owner is not None:
            owner = {"agent": cs.scope.agent, "org": cs.scope.org, "user": cs.scope.user}[self.level]
            return owner == self.owner
        return True

    def describe(self) -> str:
        parts = [f"layer {self.layer}", f"level {self.level}"] + ([f"owner {self.owner}"] if self.owner else [])
        return "review rule: " + ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def load_rules(config: dict[str, Any]) -> list[ReviewRule]:
    """The rules in a home's config; a malformed entry is a clear error."""
    raw = config.get("review") or []
    if not isinstance(raw, list):
        raise ValidationError('config.json "review" must be a list of rules like {"layer": "harness"}')
    rules = []
    for r in raw:
        if not isinstance(r, dict) or set(r) - {"layer", "level", "owner"}:
            raise ValidationError(f'config.json review rule {r!r}: use keys "layer", "level", "owner" only')
        rules.append(ReviewRule(**r))
    return rules


def requires_review(cs: ChangeSet, rules: Iterable[ReviewRule], actor: Actor | None = None) -> ReviewRule | None:
    """The first rule that holds `cs` for review, or None. People's own actions (an `actor` was
    given) never wait; `approve` commits with the approving person as actor. A change set's own
    evidence (a self-written `{"review": {"decision": "approve"}}`) counts for nothing."""
    if by_person(cs, actor):
        return None
    return next((r for r in rules if r.matches(cs)), None)


def pending(store: Store, limit: int = 100) -> list[ChangeSet]:
    """Proposals waiting for a person, newest first."""
    return store.list_changesets(status="needs_review", limit=limit)


def _waiting(store: Store, changeset_id: str) -> ChangeSet:
    cs = store.get_changeset(changeset_id)
    if cs.status != "needs_review":
        raise ValidationError(
            f"change set {changeset_id} is {cs.status}, not waiting for review: `crystallise review list` shows what is"
        )
    return cs


def approve(committer: Any, changeset_id: str, *, by: str, note: str = "", actor: Actor | None = None) -> Version:
    """Commit a waiting change set as a version, recording who approved it and on what verdict
    (`actor`: the authenticated person approving, recorded with the review). An approval never
    lends the learner's change set a person's authority over graders, cases or logs."""
    if not by or not by.strip():
        raise ValidationError("say who approves (--by NAME): the version records it")
    cs = _waiting(committer.store, changeset_id)
    gate = cs.verdict or Verdict(decision="needs_review", reason="not gated")
    cs.evidence = {**cs.evidence, "review": {"decision": "approve", "by": by, "note": note, "at": now(),
                                             "gate": gate.to_dict(),
                                             **({"actor": actor.to_dict()} if actor is not None else {})}}
    if gate.decision != "accept":
        cs.verdict = Verdict(**{**gate.to_dict(), "decision": "accept",
                                "reason": f"approved by {by} in review (the gate said: {gate.reason})"})
    else:
        cs.verdict = Verdict(**{**gate.to_dict(), "reason": f"{gate.reason}; approved by {by} in review"})
    return committer.commit(cs, actor=Actor.explicit(f"review approved by {by}"))


def reject(store: Store, changeset_id: str, *, by: str, note: str = "") -> ChangeSet:
    """Keep a waiting change set as rejected evidence, with who rejected it and why."""
    if not by or not by.strip():
        raise ValidationError("say who rejects (--by NAME): the change set records it")
    cs = _waiting(store, changeset_id)
    cs.evidence = {**cs.evidence, "review": {"decision": "reject", "by": by, "note": note, "at": now()}}
    cs.status = "rejected"
    store.save_changeset(cs)
    return cs


def diff_text(cs: ChangeSet, read: Callable[[str], str | None] | None = None) -> str:
    """A unified diff of every delta: artifact files as text, items as their text and status.

    `read` (the current tree) marks deltas whose file moved on since the proposal."""
    out: list[str] = []
    for d in cs.deltas:
        if d.target == "artifact":
            stale = read is not None and read(d.path or "") != d.before
            out += _unified(d.before, d.after, f"a/{d.path}", f"b/{d.path}")
            if stale:
                out.append(f"# note: {d.path} changed since this was proposed; approving it will be refused")
        else:
            out += _unified(_item_text(d.before), _item_text(d.after), f"a/item/{d.item_id}", f"b/item/{d.item_id}")
            out.append(f"# {d.op} item {d.item_id}: {d.reason}".rstrip(": "))
    return "\n".join(out)


def _unified(a: str | None, b: str | None, fa: str, fb: str) -> Sequence[str]:
    lines = list(difflib.unified_diff((a or "").splitlines(), (b or "").splitlines(),
                                      fa if a is not None else "/dev/null", fb if b is not None else "/dev/null",
                                      lineterm=""))
    return lines or [f"# {fb}: unchanged"]


def _item_text(snapshot: Any) -> str | None:
    if not snapshot:
        return None
    keep = ("text", "kind", "level", "section", "status", "source", "trust", "valid_to", "superseded_by")
    return json.dumps({k: snapshot.get(k) for k in keep if snapshot.get(k) is not None}, indent=1, sort_keys=True)


def summary(cs: ChangeSet) -> dict[str, Any]:
    """What `review list` shows of one proposal."""
    v = cs.verdict
    return {"id": cs.id, "learner": cs.learner, "layer": cs.layer, "scope": cs.scope.to_dict(),
            "summary": cs.summary, "deltas": len(cs.deltas), "verdict": v.reason if v else "not gated",
            "waiting_because": (cs.evidence.get("review") or {}).get("required_by") or (v.reason if v else ""),
            "created_at": cs.created_at, "provenance": len(cs.provenance)}

