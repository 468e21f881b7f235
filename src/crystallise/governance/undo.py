"""Undo by cause: revert everything learned from a trace, or from a user, as one version.

    crystallise revert --trace tr_9f2c…       # a poisoned run
    crystallise revert --user u-mallory       # everything one user taught the system

How (`plan_undo` is pure planning over the store and repository; `crystallise.engine.undo` writes):

  1. the *cause*: the given traces, or every trace of the user;
  2. affected versions: those whose provenance (kept whole in the store) names a cause trace,
     or whose change set is scoped to that user;
  3. artifacts: each file such a version changed goes back to what it was before it — by a
     three-way merge (`git merge-file`) when later, unrelated versions changed the same file
     since, so their changes stay; a conflict refuses the whole undo, naming the file;
  4. items: an item whose provenance is only cause traces (or that an affected version added
     without provenance, or that is the user's own) is retired; an item also supported by
     other traces keeps them and loses only the cause traces from its provenance;
  5. eval cases recorded from cause traces are voided by appending a void row (eval files
     stay append-only; the suite skips voided cases);
  6. the cause traces are marked `revoked` (feedback of kind "revoked", append-only like all
     feedback), so no learner uses them as evidence again;
  7. one change set (learner "undo") with all of it, committed as one version whose evidence
     says what it undid; fully undone versions are marked reverted by it.

User-level items never enter git: their part of the undo goes to the store's ledger, as every
user-level change does.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crystallise.artifacts import ArtifactRepo
from crystallise.errors import ArtifactError, ValidationError
from crystallise.evidence import REVOKED, is_revoked
from crystallise.governance.protect import APPEND_ONLY, is_protected_path
from crystallise.store.base import Store
from crystallise.types import ChangeSet, Delta, Feedback, Item, Scope, Verdict, Version, now

__all__ = ["REVOKED", "UndoPlan", "is_revoked", "plan_undo", "revoke"]

_ACTIVE = ("active", "quarantined", "candidate")


@dataclass
class UndoPlan:
    """What an undo would do; `changeset` is None when nothing was learned from the cause."""

    cause: str
    traces: list[str]
    versions: list[int] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    trimmed: list[str] = field(default_factory=list)
    voided_cases: list[str] = field(default_factory=list)
    fully_undone: list[int] = field(default_factory=list)  # versions nothing of which is left live
    changeset: ChangeSet | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"cause": self.cause, "traces": len(self.traces), "versions": self.versions, "files": self.files,
                "retired_items": self.retired, "trimmed_items": self.trimmed, "voided_cases": self.voided_cases,
                "fully_undone": self.fully_undone}


def _merge(current: str | None, base: str | None, target: str | None, path: str) -> str | None:
    """Three-way merge: take `current` from `base` to `target` (what undoing means for this file)."""
    if current == base:
        return target
    if current == target:
        return current
    if current is None:
        raise ArtifactError(f"cannot undo {path}: a later version deleted it; revert that version first")
    with tempfile.TemporaryDirectory(prefix="crystallise-undo-") as tmp:
        names = []  # a missing file merges as an empty one
        for name, text in (("current", current), ("base", base or ""), ("target", target or "")):
            p = Path(tmp) / name
            p.write_text(text, encoding="utf-8")
            names.append(str(p))
        proc = subprocess.run(["git", "merge-file", "-p", "-q", *names], capture_output=True)
    if proc.returncode != 0:
        raise ArtifactError(
            f"cannot undo {path}: later versions changed the same lines; revert those versions first "
            "(`crystallise log` lists them) or edit the file by hand"
        )
    merged = proc.stdout.decode("utf-8")
    return None if target is None and not merged else merged


def _cause_traces(store: Store, trace_ids: Sequence[str], user: str | None, org: str | None = None) -> list[str]:
    if user is not None:
        ids = [t.id for t in store.list_traces(user=user, org=org, limit=1_000_000)]
        return sorted(set(ids) | set(trace_ids))
    for tid in trace_ids:
        store.get_trace(tid)  # NotFoundError names the fix
    return sorted(set(trace_ids))


def _affected(store: Store, traces: set[str], user: str | None, org: str | None = None
              ) -> list[tuple[Version, ChangeSet]]:
    out = []
    for v in sorted(store.list_versions(limit=1_000_000), key=lambda v: v.number):
        if v.reverted_by or v.reverts:
            continue
        cs = store.get_changeset(v.changeset_id)
        if cs.learner == "undo":
            continue
        if traces & set(v.provenance) or (user is not None and cs.scope.user == user
                                          and (org is None or cs.scope.org == org)):
            out.append((v, cs))
    return out


def plan_undo(store: Store, repo: ArtifactRepo, *, traces: Sequence[str] = (), user: str | None = None,
              reason: str = "", org: str | None = None) -> UndoPlan:
    """Plan the undo of everything learned from `traces` or from `user` (nothing is written).

    `org` narrows an undo by user to that user *in that org* (their traces, change sets and
    memories there; user ids are per org), and scopes the undo's change set to the org — what
    the HTTP API does for an org's key. Without it a user is undone in every org."""
    if not traces and user is None:
        raise ValidationError("say what to undo: --trace ID (one or more) or --user ID")
    cause_ids = _cause_traces(store, traces, user, org)
    cause = (f"user {user}" + (f" in org {org}" if org else "")) if user is not None else ", ".join(cause_ids)
    cause_set = set(cause_ids)
    plan = UndoPlan(cause=cause, traces=cause_ids)
    affected = _affected(store, cause_set, user, org)
    plan.versions = [v.number for v, _ in affected]
    deltas: list[Delta] = []

    # 3. artifacts, newest version first, each file merged once from its current text
    texts: dict[str, str | None] = {}
    for _, cs in reversed(affected):
        for d in cs.deltas:
            if d.target != "artifact" or not d.path or is_protected_path(d.path, APPEND_ONLY):
                continue
            current = texts[d.path] if d.path in texts else repo.read(d.path)
            texts[d.path] = _merge(current, d.after, d.before, d.path)
    for path, text in sorted(texts.items()):
        before = repo.read(path)
        if text != before:
            deltas.append(Delta(op="set", target="artifact", path=path, before=before, after=text,
                                reason=f"undo {cause}"))
            plan.files.append(path)

    # 4. items learned from the cause
    added_by_affected = {d.item_id for _, cs in affected for d in cs.deltas if d.target == "item" and d.op == "add"}
    for it in _all_items(store):
        prov = set(it.provenance)
        own = user is not None and it.level == "user" and it.user_id == user and (org is None or it.org_id == org)
        if not (prov & cause_set or own or (it.id in added_by_affected and not prov)):
            continue
        after = Item.from_dict(it.to_dict())
        if own or prov <= cause_set:
            after.status, after.valid_to = "retired", now()
            after.meta = {**after.meta, "retired_by": f"undo {cause}"}
            plan.retired.append(it.id)
            op = "retire"
        else:
            after.provenance = [p for p in it.provenance if p not in cause_set]
            plan.trimmed.append(it.id)
            op = "update"
        after.updated_at = now()
        deltas.append(Delta(op=op, target="item", item_id=it.id, before=it.to_dict(), after=after.to_dict(),
                            reason=f"undo {cause}"))

    # 5. eval cases recorded from the cause
    for path in repo.list_files("tasks/"):
        if not path.endswith("/evals.jsonl"):
            continue
        text = repo.read(path) or ""
        rows = [json.loads(line) for line in text.split("\n") if line.strip()]
        voided = {r["voids"] for r in rows if "voids" in r}
        new = [{"id": f"void:{r['id']}", "voids": r["id"], "reason": f"undo {cause}", "created_by": "undo"}
               for r in rows if r.get("source_trace") in cause_set and "voids" not in r and r["id"] not in voided]
        if new:
            after = text + "".join(json.dumps(r, sort_keys=True) + "\n" for r in new)
            deltas.append(Delta(op="set", target="artifact", path=path, before=repo.read(path), after=after,
                                reason=f"undo {cause}: void {len(new)} case(s)"))
            plan.voided_cases += [r["voids"] for r in new]

    if not deltas:
        return plan
    retired = set(plan.retired)
    plan.fully_undone = [v.number for v, cs in affected
                         if all(d.item_id in retired for d in cs.deltas if d.target == "item" and d.op == "add")]
    layers = sorted({cs.layer for _, cs in affected} | ({"context"} if plan.retired or plan.trimmed else set()))
    summary = (f"Undo {cause}: {len(plan.versions)} version(s), {len(plan.files)} file(s), "
               f"{len(plan.retired)} item(s) retired, {len(plan.trimmed)} trimmed, "
               f"{len(plan.voided_cases)} case(s) voided")
    why = f"undo of {cause} requested by the user" + (f": {reason}" if reason else "")
    plan.changeset = ChangeSet(
        learner="undo", layer="harness" if plan.files else "context", deltas=deltas, summary=summary[:200],
        scope=Scope(org=org, user=user), provenance=cause_ids,
        evidence={"undo": plan.to_dict(), "layers": layers, "reason": reason},
        verdict=Verdict(decision="accept", reason=why),
    )
    return plan


def _all_items(store: Store) -> list[Item]:
    """Every live item of every scope (undo must see user-level items too)."""
    return store.scan_items(_ACTIVE)


def revoke(store: Store, trace_ids: Iterable[str], cause: str, reason: str) -> None:
    for tid in trace_ids:
        t = store.get_trace(tid)
        if is_revoked(t):
            continue
        store.add_feedback(Feedback(trace_id=tid, kind=REVOKED, source="explicit",
                                    comment=f"undo {cause}" + (f": {reason}" if reason else "")))
