"""Review mode and undo by cause over HTTP: what waits for a person, their decision, and undo.

    GET  /v1/review?limit=20                      change sets waiting for review, newest first
    GET  /v1/review/{id}                          one: the change set, its unified diff, why it waits
    POST /v1/review/{id}/approve {"by": "alice", "note": "..."}   -> 201 the version it became
    POST /v1/review/{id}/reject  {"by": "alice", "note": "..."}   -> the change set, kept as evidence
    POST /v1/undo {"traces": ["tr_..."]} | {"user": "u1"}, "dry_run": true   -> the plan (and the version)

A thin edge over `governance.review` and `governance.undo` (the CLI's `review` and `revert
--trace/--user`). Visibility is the change sets' rule (`engine.access.sees`): an org's key
sees its org's proposals and agent-level ones, never another org's (404, as if unknown).
Deciding needs more than seeing: an agent-level proposal changes what every org's agents see,
so approving or rejecting it needs the admin key, and a user-bound key decides nothing (403).

Undo with an org key is confined to that org: an undo by user undoes that user *in the key's
org* (`plan_undo(org=...)`), traces must be the org's own, and a plan that would also change
shared (agent-level) knowledge or another org's is refused with 403 before anything is written;
`dry_run` shows the plan with the reasons in `needs_admin` instead.

Dream runs have their own routes (routes_dream.py); a dream's change set held for review
waits here like any other.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from crystallise.api.auth import Forbidden, Principal
from crystallise.api.deps import HomeDep, PrincipalDep
from crystallise.api.problems import Problem
from crystallise.api.routes_changesets import list_changesets
from crystallise.api.routes_traces import visible_trace
from crystallise.api.schemas import ChangeSetPage, RecordId, ScopeId, _In
from crystallise.engine import access
from crystallise.engine.access import sees
from crystallise.errors import NotFoundError
from crystallise.governance import review as rv
from crystallise.engine.undo import UndoPlan, plan_undo, undo
from crystallise.engine.home import Home
from crystallise.engine.committer import Committer
from crystallise.types import ChangeSet, Version

__all__ = ["needs_admin", "router"]

router = APIRouter(prefix="/v1", tags=["review and undo"])

ChangeSetId = Annotated[str, Path(min_length=1, max_length=200)]


class ReviewIn(_In):
    by: Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S",
                             description="who decides (recorded with the change set / version)")]
    note: Annotated[str, Field(max_length=2000, description="why")] = ""


class ReviewDetail(BaseModel):
    """One proposal: the change set (deltas, evidence, verdict), its diff against the current
    artifacts, and the rule or verdict it waits on."""

    changeset: ChangeSet
    diff: str
    waiting_because: str


class UndoIn(_In):
    traces: Annotated[list[RecordId], Field(max_length=1000, description="undo what these traces taught")] = []
    user: ScopeId | None = Field(None, description="or undo everything this user taught (in the key's org)")
    reason: Annotated[str, Field(max_length=500)] = ""
    dry_run: bool = Field(False, description="only say what the undo would do")


class UndoOut(BaseModel):
    """The plan (`cause`, `versions`, `files`, `retired_items`, `trimmed_items`, `voided_cases`,
    `fully_undone`), the version that did it (None for a dry run or when nothing was learned),
    and, for a dry run with an org key, what would make it need the admin key."""

    dry_run: bool
    plan: dict[str, Any]
    version: Version | None = None
    needs_admin: list[str] = []


def _visible(home: Home, who: Principal, changeset_id: str) -> ChangeSet:
    try:
        cs: ChangeSet | None = home.store.get_changeset(changeset_id)
    except NotFoundError:
        cs = None
    if cs is None or not sees(who, cs):
        raise NotFoundError(f"change set {changeset_id} not found: GET /v1/review lists the ones waiting for review")
    return cs


def _decidable(home: Home, who: Principal, changeset_id: str) -> ChangeSet:
    cs = _visible(home, who, changeset_id)
    if who.user is not None:
        raise Forbidden(f"this API key is bound to user {who.user!r}: reviewing learned changes needs the org's key")
    if not who.admin and cs.scope.org != who.org:
        raise Forbidden(f"change set {changeset_id} is {cs.scope.level}-level (shared by every org): deciding it "
                        "needs the admin key")
    if cs.status != "needs_review":
        raise Problem(409, f"change set {changeset_id} is {cs.status}, not waiting for review: "
                           "GET /v1/review lists what is")
    return cs


@router.get("/review", response_model=ChangeSetPage, summary="Change sets waiting for review")
def list_review(
    home: HomeDep,
    who: PrincipalDep,
    before: Annotated[str | None, Query(min_length=1, max_length=200, description="`next_before` of a page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ChangeSetPage:
    """Newest first; each carries its deltas, evidence (`evidence.review.required_by`: the rule that
    holds it) and the gate's verdict."""
    return list_changesets(home, who, status="needs_review", before=before, limit=limit)


@router.get("/review/{changeset_id}", response_model=ReviewDetail, summary="One proposal with its diff")
def get_review(changeset_id: ChangeSetId, home: HomeDep, who: PrincipalDep) -> ReviewDetail:
    cs = _visible(home, who, changeset_id)
    return ReviewDetail(changeset=cs, diff=rv.diff_text(cs, home.repo.read),
                        waiting_because=str(rv.summary(cs)["waiting_because"]))


def _by(body: ReviewIn, who: Principal) -> str:
    return body.by.strip() + (f" (key {who.key_id})" if who.key_id else "")


@router.post("/review/{changeset_id}/approve", status_code=201, response_model=Version,
             summary="Approve a proposal: it becomes a version")
def approve_review(changeset_id: ChangeSetId, body: ReviewIn, home: HomeDep, who: PrincipalDep) -> Version:
    """409 if it is not waiting any more, or if the artifacts moved on since it was proposed."""
    _decidable(home, who, changeset_id)
    return rv.approve(Committer(home), changeset_id, by=_by(body, who), note=body.note,
                      actor=access.actor_for(who, f"review approved by {_by(body, who)}"))


@router.post("/review/{changeset_id}/reject", response_model=ChangeSet,
             summary="Reject a proposal: it stays as evidence")
def reject_review(changeset_id: ChangeSetId, body: ReviewIn, home: HomeDep, who: PrincipalDep) -> ChangeSet:
    _decidable(home, who, changeset_id)
    return rv.reject(home.store, changeset_id, by=_by(body, who), note=body.note)


def needs_admin(home: Home, who: Principal, plan: UndoPlan) -> list[str]:
    """What in an undo plan lies outside an org key's org (empty for the admin key)."""
    if who.admin:
        return []
    found: list[str] = []
    for number in plan.versions:
        cs = home.store.get_changeset(home.store.get_version(number).changeset_id)
        if cs.scope.org != who.org:
            found.append(f"version {number} is {cs.scope.level}-level (shared by every org)")
    for d in plan.changeset.deltas if plan.changeset else []:
        if d.target == "artifact" and not (d.path or "").startswith(f"context/org/{who.org}/"):
            found.append(f"file {d.path} is shared by every org")
        snap = d.before if isinstance(d.before, dict) else {}
        if d.target == "item" and (snap.get("level") == "agent" or snap.get("org_id") != who.org):
            found.append(f"item {d.item_id} is {snap.get('level', 'agent')}-level outside org {who.org}")
    return found


@router.post("/undo", response_model=UndoOut, summary="Undo everything learned from traces or from a user")
def post_undo(body: UndoIn, home: HomeDep, who: PrincipalDep) -> UndoOut:
    """One new version undoes it all (`governance.undo`); the cause traces are marked revoked.
    `dry_run` writes nothing. 403 when an org key's undo would change shared knowledge."""
    if bool(body.traces) == (body.user is not None):
        raise Problem(422, "say what to undo: `traces` (a list of trace ids) or `user`, not both and not neither")
    org = None if who.admin else who.org
    user = who.write_user(body.user) if body.user is not None else None
    traces = [visible_trace(home, who, t).id for t in body.traces]  # another org's: 404, as if unknown
    reason = body.reason or "requested through the API"
    if body.dry_run:
        plan = plan_undo(home, traces=traces, user=user, reason=reason, org=org)
        return UndoOut(dry_run=True, plan=plan.to_dict(), needs_admin=needs_admin(home, who, plan))

    def refuse_outside(plan: UndoPlan) -> None:
        outside = needs_admin(home, who, plan)
        if outside:
            raise Forbidden(f"this undo would also change what is not org {who.org}'s alone "
                            f"({'; '.join(outside[:3])}): it needs the admin key (try it with dry_run first)")

    plan, version = undo(home, traces=traces, user=user, reason=reason, org=org, check=refuse_outside,
                         actor=access.actor_for(who, "undo"))
    return UndoOut(dry_run=False, plan=plan.to_dict(), version=version)
