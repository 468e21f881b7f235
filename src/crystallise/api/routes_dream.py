"""Dreaming over HTTP: start a dream for a scope, list what earlier dreams read and did.

    POST /v1/dream {"agent": "support", "org": "acme", "user": null, "since": "7d", "dry_run": true}
                                                    -> the DreamReport (`crystallise dream --json`)
    GET  /v1/dreams?agent=support&status=committed&limit=20      dream-run records, newest first

A thin edge over `context.dream.dream` and `Store.list_dream_runs` (the CLI's `crystallise
dream` and `dream --history`). Visibility follows the scope a run belongs to: an org's key
sees and starts runs of its own org (its org-level and its users' scopes) only; a user-bound
key only its own user's; agent-level scopes are shared by every org, so dreaming one (or
listing its runs) needs the admin key. The dream runs in the request (it calls the home's
model for critiques of failed runs), so a client should allow it time; `dry_run` writes
nothing.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from crystallise.api.auth import Forbidden, Principal
from crystallise.api.deps import HomeDep, PrincipalDep
from crystallise.api.schemas import ScopeId, _In
from crystallise.engine import access
from crystallise.engine.dream import dream
from crystallise.errors import ValidationError
from crystallise.types import Scope

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["dreaming"])

_STATUSES = ("planned", "committed", "held", "rejected", "nothing", "abandoned", "failed", "dry_run")


class DreamIn(_In):
    agent: ScopeId = "default"
    org: ScopeId | None = None
    user: ScopeId | None = None
    since: Annotated[str, Field(max_length=100, description="trace seq, ISO time, duration")] | None = None
    dry_run: bool = Field(False, description="report what would change, write nothing")


class DreamRuns(BaseModel):
    """Dream-run records, newest first: scope, status, the trace seqs read, the change set and
    version it committed, and the run's report."""

    items: list[dict[str, Any]]


def _scope_for(who: Principal, body: DreamIn) -> Scope:
    org = who.write_org(body.org)  # an org key: its own org (another org's is refused)
    user = who.write_user(body.user)  # a user-bound key: its own user
    if who.user is not None and user is None:
        raise Forbidden(f"this API key is bound to user {who.user!r}: it can dream over that user's scope only")
    if org is None and not who.admin:
        raise Forbidden("an agent-level dream changes what every org's agents see: it needs the admin key")
    return Scope(agent=body.agent, org=org, user=user)


@router.post("/dream", summary="Dream over one scope's new traces")
def post_dream(body: DreamIn, home: HomeDep, who: PrincipalDep) -> dict[str, Any]:
    """Credit, critiques of failures, curation, dedup and forgetting for the scope (see
    docs/context.md, Dreaming); returns the report. 403 when the key may not change that scope."""
    scope = _scope_for(who, body)
    with access.every_org():  # credit runs over every org's new traces; the report is cut to the key's below
        report = dream(home, scope, since=body.since, dry_run=body.dry_run)
    return access.report_for(who, report.to_dict())


@router.get("/dreams", response_model=DreamRuns, summary="What earlier dreams read and did")
def list_dreams(
    home: HomeDep,
    who: PrincipalDep,
    agent: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    status: Annotated[str | None, Query(description=f"one of {', '.join(_STATUSES)}")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> DreamRuns:
    if status is not None and status not in _STATUSES:
        raise ValidationError(f"unknown dream-run status {status!r}: use one of {', '.join(_STATUSES)}")
    org = None if who.admin else who.org  # an org key: its org's runs; a user-bound key: its user's too
    return DreamRuns(items=home.store.list_dream_runs(status=status, agent=agent, org=org, user=who.user,
                                                      limit=limit))
