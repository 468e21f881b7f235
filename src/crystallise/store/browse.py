"""Read-only queries for browsing a store (the web UI, the API's newest-first listings).

    recent_traces(store, org="acme", limit=50)             newest first, with spans and feedback
    recent_traces(store, before_seq=page[-1].seq)          the next (older) page
    versions_citing(store, "tr_4c1f…")                     versions whose provenance names the trace
    list_items(store, org="acme", status=("quarantined",))  every item an org's operator may review
    changesets_before(store, status="rejected")            gate verdicts and evidence, newest first

Functions over a `SqlStore`'s engine rather than store methods: they are views for people,
not part of the protocol learners depend on. Reads run in one transaction (one snapshot).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from crystallise.store import codec
from crystallise.store.base import Store
from crystallise.store.engine import translate_errors
from crystallise.errors import NotFoundError
from crystallise.store.schema import changesets, feedback, items, spans, traces, versions
from crystallise.types import ChangeSet, Feedback, Item, Span, Trace, Version

__all__ = ["changesets_before", "list_items", "recent_traces", "versions_citing"]


def _children(conn: Any, ids: Sequence[str]) -> dict[str, tuple[list[Span], list[Feedback]]]:
    found: dict[str, tuple[list[Span], list[Feedback]]] = {i: ([], []) for i in ids}
    if not ids:
        return found
    for row in conn.execute(sa.select(spans).where(spans.c.trace_id.in_(ids)).order_by(spans.c.position)).mappings():
        found[row["trace_id"]][0].append(codec.span_from_row(row))
    query = sa.select(feedback).where(feedback.c.trace_id.in_(ids)).order_by(feedback.c.rid)
    for row in conn.execute(query).mappings():
        found[row["trace_id"]][1].append(codec.feedback_from_row(row))
    return found


def recent_traces(
    store: Store,
    *,
    org: str | None = None,
    agent: str | None = None,
    user: str | None = None,
    status: str | None = None,
    before_seq: int | None = None,
    limit: int = 50,
) -> list[Trace]:
    """Traces newest first (by `seq`), with their spans and feedback; `limit` is capped at 500.

    Page backwards with `before_seq=<the last seq of this page>`.
    """
    limit = max(1, min(int(limit), 500))
    query = sa.select(traces).order_by(traces.c.seq.desc()).limit(limit)
    if before_seq is not None:
        query = query.where(traces.c.seq < before_seq)
    for column, value in (("org_id", org), ("agent_id", agent), ("user_id", user), ("status", status)):
        if value is not None:
            query = query.where(traces.c[column] == value)
    with translate_errors(store.url, "listing recent traces"), store.engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
        children = _children(conn, [r["id"] for r in rows])
    return [codec.trace_from_row(r, *children[r["id"]]) for r in rows]


def versions_citing(store: Store, trace_id: str, *, limit: int = 200) -> list[Version]:
    """Versions whose provenance includes `trace_id`, newest first.

    Provenance is a JSON list in a text column: a LIKE narrows the rows in SQL (its `_` may
    match any character, so every candidate is then checked exactly).
    """
    escaped = trace_id.replace("\\", "\\\\").replace("%", "\\%")
    query = (sa.select(versions).where(versions.c.provenance.like(f'%"{escaped}"%', escape="\\"))
             .order_by(versions.c.number.desc()).limit(limit))
    with translate_errors(store.url, f"finding versions caused by trace {trace_id}"), store.engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    found = [codec.version_from_row(r) for r in rows]
    return [v for v in found if trace_id in v.provenance]


def list_items(
    store: Store,
    *,
    org: str | None = None,
    every_org: bool = False,
    agent: str | None = None,
    user: str | None = None,
    levels: Sequence[str] = ("agent", "org", "user"),
    status: Sequence[str] = ("candidate", "quarantined", "active", "retired"),
    kind: str | None = None,
    viewer_user: str | None = None,
    limit: int = 500,
) -> list[Item]:
    """Items for people to browse: agent-level items, and the org- and user-level items of `org`
    (of every org when `every_org`), by level, status and kind; `user` narrows to one user's items.

    Unlike `Store.query_items` (what an agent may be *shown*), this lists every user's items of
    the org, which is what the org's operator reviews. `viewer_user` (a user-bound key) hides every
    other user's user-level items.
    """
    limit = max(1, min(int(limit), 2000))
    query = sa.select(items).where(items.c.level.in_(list(levels)), items.c.status.in_(list(status)))
    if not every_org:
        query = query.where(sa.or_(items.c.level == "agent", items.c.org_id == org) if org is not None
                            else items.c.level == "agent")
    for column, value in (("agent_id", agent), ("user_id", user), ("kind", kind)):
        if value is not None:
            query = query.where(items.c[column] == value)
    if viewer_user is not None:
        query = query.where(sa.or_(items.c.level != "user", items.c.user_id == viewer_user))
    query = query.order_by(items.c.level, items.c.status, items.c.created_at.desc(), items.c.id).limit(limit)
    with translate_errors(store.url, "listing items"), store.engine.connect() as conn:
        return [codec.item_from_row(r) for r in conn.execute(query).mappings()]


def changesets_before(
    store: Store, *, status: str | None = None, before: str | None = None, limit: int = 50
) -> list[ChangeSet]:
    """Change sets newest first (created_at, then id); `before` is the id of the last one seen.

    Keyset paging: a page never repeats or skips a change set while others are being proposed.
    An unknown `before` id is a NotFoundError.
    """
    limit = max(1, min(int(limit), 1000))
    query = sa.select(changesets).order_by(changesets.c.created_at.desc(), changesets.c.id.desc()).limit(limit)
    if status is not None:
        query = query.where(changesets.c.status == status)
    with translate_errors(store.url, "listing change sets"), store.engine.connect() as conn:
        if before is not None:
            at = conn.execute(sa.select(changesets.c.created_at).where(changesets.c.id == before)).scalar()
            if at is None:
                raise NotFoundError(f"change set {before} not found: use the `next_before` of a previous page")
            query = query.where(sa.tuple_(changesets.c.created_at, changesets.c.id) < sa.tuple_(at, before))
        return [codec.changeset_from_row(r) for r in conn.execute(query).mappings()]
