"""Applying item deltas: the one place the items table changes, and its ledger.

    add                           insert `after`
    update/merge/supersede/retire overwrite the row with `after` (live counters kept, see below)
    any op with after=None        delete the row (how reverting an add looks)

Every applied delta writes one `item_deltas` row with the row as it really was
before and after, so "why is this item here?" is answerable and every change can be
undone. The caller owns the transaction: `SqlStore.apply_item_deltas` for a bare
batch, `SqlStore.add_version` for a version.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from crystallise.errors import ValidationError
from crystallise.store import codec
from crystallise.store.engine import is_postgres
from crystallise.store.schema import item_deltas, items
from crystallise.types import Delta, Item, now

__all__ = ["ITEM_OPS", "apply_deltas", "keep_live_counters"]

ITEM_OPS = frozenset({"add", "update", "merge", "supersede", "retire"})

COUNTERS = ("shown", "helpful", "harmful")


def keep_live_counters(after: Item, current: Item, claimed_before: Any) -> Item:
    """`after` with the credit counters moved by the delta's own change, not reset to its snapshot.

    Counters are live statistics that `bump_items` moves while a learner works from
    an older read. Overwriting them with `after`'s snapshot would silently lose those
    bumps, so when the delta states `before`, the row gets current + (after - before).
    Without `before` the delta is an explicit overwrite and `after`'s values stand.
    """
    if not isinstance(claimed_before, dict):
        return after
    moved = {}
    for name in COUNTERS:
        change = getattr(after, name) - int(claimed_before.get(name, 0) or 0)
        moved[name] = max(0, getattr(current, name) + change)
    return dataclasses.replace(after, **moved)


def apply_deltas(conn: Connection, deltas: Sequence[Delta], *, version: int | None, changeset_id: str | None) -> None:
    """Apply item deltas inside the caller's transaction, writing one ledger row each.

    Raises ValidationError at the first bad delta; the caller's transaction then
    rolls back everything, earlier deltas included.
    """
    ledger = []
    for index, delta in enumerate(deltas):
        what = f"item delta {index} ({delta.op} {delta.item_id or '?'})"
        if delta.target != "item":
            raise ValidationError(
                f"{what}: target is {delta.target!r}; artifact deltas belong to the artifact store, not the item store"
            )
        if delta.op not in ITEM_OPS:
            raise ValidationError(f"{what}: op must be one of {sorted(ITEM_OPS)} for an item delta")
        after = None if delta.after is None else codec.item_from_after(delta.after, delta.item_id, what)
        item_id = after.id if after is not None else delta.item_id
        if not item_id:
            raise ValidationError(f"{what}: a delta that deletes needs item_id")
        query = sa.select(items).where(items.c.id == item_id)
        current = conn.execute(query.with_for_update() if is_postgres(conn) else query).mappings().first()
        before = None if current is None else codec.item_from_row(current)
        if delta.op == "add" and after is None:
            raise ValidationError(f"{what}: an add needs `after` (the new item)")
        if delta.op == "add" and before is not None:
            raise ValidationError(f"{what}: item {item_id} already exists; use an update delta to change it")
        if delta.op != "add" and before is None:
            raise ValidationError(
                f"{what}: item {item_id} does not exist; add it first (run `crystallise items list` to see item ids)"
            )
        if after is None:
            conn.execute(sa.delete(items).where(items.c.id == item_id))
        elif before is None:
            conn.execute(sa.insert(items).values(codec.item_row(after)))
        else:
            after = keep_live_counters(after, before, delta.before)
            conn.execute(sa.update(items).where(items.c.id == item_id).values(codec.item_row(after)))
        ledger.append(codec.ledger_row(delta, before, after, version, changeset_id) | {"created_at": now()})
    if ledger:
        conn.execute(sa.insert(item_deltas), ledger)
