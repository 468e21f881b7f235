"""Eval results out: every change set a learner proposed, with the gate's verdict and its evidence.

    GET /v1/changesets?status=rejected&limit=20          newest first -> {"changesets", "next_before"}
    GET /v1/changesets?before=cs_91f…                    the next (older) page
    GET /v1/changesets/{id}                              one, with deltas, verdict and evidence

Accepted change sets became versions (GET /v1/versions); rejected and needs-review ones are
kept here as evidence, which is what makes "why did it not learn X?" answerable. A verdict
holds the paired old-vs-new result of the eval suite: cases, wins, losses, the statistic and
its p-value. Visibility is the versions' rule (engine.access.sees): an org key sees its own
org's change sets and agent-level ones, never another org's or another user's.

Dream runs (offline learning over traces since a watermark) are not served yet: the dreaming
layer is being built; they will appear here as their own resource once it records runs.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from crystallise.api.deps import HomeDep, PrincipalDep
from crystallise.api.schemas import ChangeSetPage
from crystallise.engine.access import sees
from crystallise.errors import NotFoundError
from crystallise.store.browse import changesets_before
from crystallise.types import ChangeSet

__all__ = ["router"]

router = APIRouter(prefix="/v1/changesets", tags=["eval results"])

Status = Literal["proposed", "accepted", "rejected", "needs_review", "committed"]


@router.get("", response_model=ChangeSetPage, summary="Change sets with their gate verdicts (eval results)")
def list_changesets(
    home: HomeDep,
    who: PrincipalDep,
    status: Status | None = None,
    before: Annotated[str | None, Query(min_length=1, max_length=200, description="`next_before` of a page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ChangeSetPage:
    page: list[ChangeSet] = []
    cursor, exhausted = before, False
    while len(page) <= limit and not exhausted:  # others' change sets are skipped: read on to fill the page
        rows = changesets_before(home.store, status=status, before=cursor, limit=limit * 2)
        page += [cs for cs in rows if sees(who, cs)]
        exhausted = len(rows) < limit * 2
        cursor = rows[-1].id if rows else cursor
    more = len(page) > limit
    page = page[:limit]
    return ChangeSetPage(changesets=page, next_before=page[-1].id if more else None)

@router.get("/{changeset_id}", response_model=ChangeSet, summary="One change set: deltas, verdict, evidence")
def get_changeset(changeset_id: Annotated[str, Path(min_length=1, max_length=200)], home: HomeDep,
                  who: PrincipalDep) -> ChangeSet:
    try:
        cs: ChangeSet | None = home.store.get_changeset(changeset_id)
    except NotFoundError:
        cs = None
    if cs is None or not sees(who, cs):
        raise NotFoundError(f"change set {changeset_id} not found: GET /v1/changesets lists the ones this key can see")
    return cs
