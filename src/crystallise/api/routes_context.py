"""The context layer out: learned items by scope, and assembled context packs.

    GET  /v1/items?agent=support&user=u1&status=active&text=refund       -> {"items": [...], "next_offset"}
    GET  /v1/items/{id}                                                   -> one item
    POST /v1/context {"agent": "support", "user": "u1", "query": "...", "budget_tokens": 600}
                                                                          -> {"text", "items", "span", ...}

Scope rules are the store's (`Store.query_items`): agent-level items of the agent, org-level
items of the org, and user-level items of that user *in that org* only. An org key forces its
org, so it never sees another org's items or another org's users' items.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi import Path as ApiPath

from crystallise.api.auth import Principal
from crystallise.api.deps import HomeDep, PrincipalDep
from crystallise.api.schemas import ContextIn, ContextOut, ItemPage
from crystallise.engine import access
from crystallise.engine.serving import assemble
from crystallise.errors import NotFoundError
from crystallise.types import Item, Span, now

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["context"])

ScopeQ = Annotated[str | None, Query(min_length=1, max_length=200)]
Status = Literal["active", "quarantined", "candidate", "retired", "all"]
LevelQ = Literal["agent", "org", "user"]
_ALL = ("active", "quarantined", "candidate", "retired")


@router.get("/items", response_model=ItemPage, summary="Learned items visible to a scope")
def list_items(
    home: HomeDep,
    who: PrincipalDep,
    agent: Annotated[str | None, Query(min_length=1, max_length=200,
                                       description="agent-level items of this agent (default: every agent)")] = None,
    org: ScopeQ = None,
    user: Annotated[str | None, Query(min_length=1, max_length=200,
                                      description="this user's items (in `org`) are included")] = None,
    level: Annotated[list[LevelQ] | None, Query(description="only these levels (repeatable)")] = None,
    status: Annotated[list[Status] | None, Query(description="item status (repeatable); default active")] = None,
    kind: Literal["memory", "bullet", "skill", "note"] | None = None,
    section: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    text: Annotated[str | None, Query(min_length=1, max_length=2000, description="rank by lexical match")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=100_000, description="skip this many (from `next_offset`)")] = 0,
) -> ItemPage:
    """User-level items appear only when `user` is given, and only that user's."""
    statuses = _ALL if status and "all" in status else tuple(status or ("active",))
    items = home.store.query_items(
        agent=agent, org=who.read_org(org), user=who.read_user(user), levels=tuple(level or ("agent", "org", "user")),
        status=statuses, kind=kind, section=section, text=text, limit=offset + limit + 1,
    )
    page = items[offset: offset + limit]
    return ItemPage(items=page, next_offset=offset + limit if len(items) > offset + limit else None)


def visible_item(who: Principal, item: Item) -> bool:
    """The tenancy rule for items (`engine.access.may_see_item`)."""
    return access.may_see_item(who, item)


@router.get("/items/{item_id}", response_model=Item, summary="One learned item")
def get_item(item_id: Annotated[str, ApiPath(min_length=1, max_length=200)], home: HomeDep,
             who: PrincipalDep) -> Item:
    """404 for an unknown item and, alike, for one this key may not see."""
    try:
        item: Item | None = home.store.get_item(item_id)
    except NotFoundError:
        item = None
    if item is None or not visible_item(who, item):
        raise NotFoundError(f"item {item_id} not found: GET /v1/items lists the items this key can see")
    return item


@router.post("/context", response_model=ContextOut, summary="Assemble a context pack")
def post_context(body: ContextIn, home: HomeDep, who: PrincipalDep) -> ContextOut:
    """The pack `crystallise.context(...)` would return; the shown items' `shown` counters move.

    The reply carries the retrieval `span` the SDK records inside a trace: include it in the
    run's `spans` when you POST the trace, so credit assignment knows what the agent was shown.
    """
    started, t0 = now(), time.perf_counter()
    pack = assemble(agent=body.agent, org=who.read_org(body.org), user=who.read_user(body.user), query=body.query,
                    budget_tokens=body.budget_tokens, kind=body.kind, home=home)
    span = Span(
        name="context", kind="retrieval", input={"query": body.query, "budget_tokens": body.budget_tokens},
        output={"tokens": pack.tokens, "items": len(pack.items)}, started_at=started, ended_at=now(),
        attributes={"shown_items": pack.item_ids, "latency_ms": round((time.perf_counter() - t0) * 1000, 3)},
    )
    return ContextOut(text=pack.text, tokens=pack.tokens, item_ids=pack.item_ids, items=pack.items, span=span)
