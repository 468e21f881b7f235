"""The store's side of dreaming: the usage/credit log, dream-run records, processed traces.

Functions over a connection inside the caller's transaction; the `SqlStore` methods that
use them are the "dreaming" block at the end of `sql.py`.

    insert_usage(conn, rows)          log (trace, item, outcome, at); bump credit for new rows only
    last_used(conn, ids)              item id -> latest `at` it was shown in a logged trace
    save_run / finish_run             one dream-run row per scope; finishing it records the
                                      processed traces and moves the scope's watermark, atomically

Idempotency lives here: a (trace, item) pair is credited once however often it is logged
(a re-run, a crash between credit and watermark, the loop and the dreamer both crediting),
because `helpful`/`harmful` move only for rows this transaction actually inserted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from crystallise.store.engine import is_postgres
from crystallise.store.schema import dream_runs, dream_traces, item_usage, items, traces, watermarks
from crystallise.types import now

__all__ = ["UsageRow", "finish_run", "insert_usage", "last_used", "list_runs", "processed", "save_run",
           "trace_scopes", "usage_pairs", "watermarks_with_prefix"]

UsageRow = tuple[str, str, int, float]  # (trace_id, item_id, outcome: 1 | -1 | 0, at)
CHUNK = 500


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), CHUNK):
        yield values[i:i + CHUNK]


def _insert_ignore(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], keys: list[str]) -> None:
    dialect = postgresql if is_postgres(conn) else sqlite
    for chunk in _chunks(rows):
        conn.execute(dialect.insert(table).values(list(chunk)).on_conflict_do_nothing(index_elements=keys))


def usage_pairs(conn: Connection, trace_ids: Sequence[str]) -> set[tuple[str, str]]:
    """The (trace, item) pairs already logged for these traces."""
    found: set[tuple[str, str]] = set()
    for chunk in _chunks(list(trace_ids)):
        query = sa.select(item_usage.c.trace_id, item_usage.c.item_id).where(item_usage.c.trace_id.in_(chunk))
        found |= {(r.trace_id, r.item_id) for r in conn.execute(query)}
    return found


def insert_usage(conn: Connection, rows: Sequence[UsageRow]) -> dict[str, int]:
    """Log usage rows; credit (`helpful` / `harmful`) moves only for pairs not logged before.

    Returns {"new": rows inserted, "helpful": bumps, "harmful": bumps}. Pairs about items that
    no longer exist are logged but credit nothing.
    """
    unique: dict[tuple[str, str], UsageRow] = {}
    for row in rows:
        unique.setdefault((row[0], row[1]), row)
    have = usage_pairs(conn, sorted({t for t, _ in unique}))
    fresh = [row for pair, row in unique.items() if pair not in have]
    if not fresh:
        return {"new": 0, "helpful": 0, "harmful": 0}
    conn.execute(sa.insert(item_usage), [{"trace_id": t, "item_id": i, "outcome": int(o), "at": float(a)}
                                        for t, i, o, a in fresh])
    moved = {"helpful": 0, "harmful": 0}
    for outcome, counter in ((1, "helpful"), (-1, "harmful")):
        per_item: dict[str, int] = {}
        for _, item_id, o, _ in fresh:
            if o == outcome:
                per_item[item_id] = per_item.get(item_id, 0) + 1
        by_amount: dict[int, list[str]] = {}
        for item_id, amount in per_item.items():
            by_amount.setdefault(amount, []).append(item_id)
        for amount, ids in by_amount.items():
            for chunk in _chunks(ids):
                done = conn.execute(sa.update(items).where(items.c.id.in_(chunk))
                                    .values({counter: items.c[counter] + amount})).rowcount or 0
                moved[counter] += done * amount
    return {"new": len(fresh), **moved}


def last_used(conn: Connection, item_ids: Sequence[str]) -> dict[str, float]:
    """Item id -> the latest time it was shown in a logged trace (absent: never logged)."""
    out: dict[str, float] = {}
    for chunk in _chunks(list(item_ids)):
        query = (sa.select(item_usage.c.item_id, sa.func.max(item_usage.c.at).label("at"))
                 .where(item_usage.c.item_id.in_(chunk)).group_by(item_usage.c.item_id))
        out.update({r.item_id: float(r.at) for r in conn.execute(query)})
    return out


def trace_scopes(conn: Connection) -> list[tuple[str, str | None, str | None, int]]:
    """(agent, org, user, max seq) of every group of traces: what an all-scopes dream looks at."""
    query = (sa.select(traces.c.agent_id, traces.c.org_id, traces.c.user_id, sa.func.max(traces.c.seq).label("top"))
             .group_by(traces.c.agent_id, traces.c.org_id, traces.c.user_id))
    return [(r.agent_id, r.org_id, r.user_id, int(r.top)) for r in conn.execute(query)]


def processed(conn: Connection, scope_key: str, trace_ids: Sequence[str]) -> set[str]:
    """Which of `trace_ids` a dream of `scope_key` has processed already."""
    found: set[str] = set()
    for chunk in _chunks(list(trace_ids)):
        query = sa.select(dream_traces.c.trace_id).where(dream_traces.c.scope_key == scope_key,
                                                         dream_traces.c.trace_id.in_(chunk))
        found |= {r.trace_id for r in conn.execute(query)}
    return found


def _run_row(run: dict[str, Any]) -> dict[str, Any]:
    row = {c.name: run.get(c.name) for c in dream_runs.columns}
    row["report"] = json.dumps(run.get("report") or {}, sort_keys=True, default=str)
    return row


def save_run(conn: Connection, run: dict[str, Any]) -> None:
    """Insert or replace one dream-run row (see `dream_runs` in schema.py)."""
    row = _run_row(run)
    dialect = postgresql if is_postgres(conn) else sqlite
    insert = dialect.insert(dream_runs).values(row)
    conn.execute(insert.on_conflict_do_update(index_elements=["id"],
                                              set_={k: insert.excluded[k] for k in row if k != "id"}))


def finish_run(conn: Connection, run: dict[str, Any], *, watermark: str, value: int, trace_ids: Sequence[str]) -> None:
    """Record the run as finished, its traces as processed and the scope's watermark, in one go."""
    save_run(conn, run)
    at = now()
    rows = [{"scope_key": run["scope_key"], "trace_id": t, "run_id": run["id"], "created_at": at}
            for t in dict.fromkeys(trace_ids)]
    _insert_ignore(conn, dream_traces, rows, ["scope_key", "trace_id"])
    current = conn.execute(sa.select(watermarks.c.value).where(watermarks.c.name == watermark)).scalar()
    if current is None:
        conn.execute(sa.insert(watermarks).values(name=watermark, value=value, updated_at=at))
    elif int(current) < value:  # a --since re-run never moves a watermark back
        conn.execute(sa.update(watermarks).where(watermarks.c.name == watermark).values(value=value, updated_at=at))


def watermarks_with_prefix(conn: Connection, prefix: str) -> dict[str, int]:
    query = sa.select(watermarks.c.name, watermarks.c.value).where(
        watermarks.c.name.startswith(prefix, autoescape=True))
    return {r.name: int(r.value) for r in conn.execute(query)}


def run_from_row(row: Any) -> dict[str, Any]:
    run = dict(row)
    run["report"] = json.loads(run["report"]) if run.get("report") else {}
    return run


def list_runs(conn: Connection, *, scope_key: str | None = None, status: str | None = None,
              agent: str | None = None, org: str | None = None, user: str | None = None,
              limit: int = 50) -> list[dict[str, Any]]:
    """Dream-run rows, newest first (each filter given narrows the rows to that agent / org / user)."""
    query = sa.select(dream_runs).order_by(dream_runs.c.started_at.desc(), dream_runs.c.id).limit(limit)
    for column, value in ((dream_runs.c.agent_id, agent), (dream_runs.c.org_id, org), (dream_runs.c.user_id, user)):
        if value is not None:
            query = query.where(column == value)
    if scope_key is not None:
        query = query.where(dream_runs.c.scope_key == scope_key)
    if status is not None:
        query = query.where(dream_runs.c.status == status)
    return [run_from_row(r) for r in conn.execute(query).mappings()]
