"""Builders for the five item deltas — the only way the context layer changes.

    add(item)                          a new item
    update(item, **changes)            new text / status / provenance / meta of one item
    merge(keep, others, text=None)     fold duplicates into `keep`; the others are retired, pointing at it
    supersede(old, new)                `new` replaces the fact `old` from new.valid_from on (old kept in history)
    retire(item, reason)               soft delete: not shown any more, revertible

Each builder reads the item as the learner saw it and returns `Delta`s whose `before`
is that snapshot, so the `Committer` can refuse a stale change set and `revert` can
invert it. Nothing here writes: online learners (remember/forget, extraction), the
promotion learner and the offline dreamer all build change sets from these and hand
them to the `Committer`.

    >>> from crystallise.types import Item
    >>> old, new = Item("lives in Paris", kind="memory"), Item("lives in Rome", kind="memory", valid_from=20.0)
    >>> [(d.op, d.after["status"]) for d in supersede(old, new)]
    [('supersede', 'retired'), ('add', 'active')]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from crystallise.types import Delta, Item, now

__all__ = ["add", "merge", "retire", "supersede", "union", "update"]


def union(*lists: Sequence[str]) -> list[str]:
    """The items of several lists, each once, in first-seen order (provenance merging)."""
    seen: dict[str, None] = {}
    for values in lists:
        for value in values:
            seen.setdefault(value, None)
    return list(seen)


def add(item: Item, reason: str = "") -> Delta:
    return Delta(op="add", target="item", item_id=item.id, after=item.to_dict(), reason=reason or f"add {item.kind}")


def update(item: Item, reason: str = "", *, op: str = "update", **changes: Any) -> Delta:
    """`item` with `changes` (any Item fields); `meta` changes are merged into the old meta."""
    if "meta" in changes:
        changes["meta"] = {**item.meta, **changes["meta"]}
    after = dataclasses.replace(item, **changes, updated_at=now())
    return Delta(op=op, target="item", item_id=item.id, before=item.to_dict(), after=after.to_dict(),  # type: ignore[arg-type]
                 reason=reason or f"{op} {item.kind}")


def merge(keep: Item, others: Sequence[Item], *, text: str | None = None, reason: str = "") -> list[Delta]:
    """Fold `others` into `keep`: provenance and credit counters are summed into it (optionally
    with a new `text`), and each other item is retired with `meta.merged_into = keep.id`."""
    why = reason or f"merge {len(others)} duplicate(s) into {keep.id}"
    merged = update(
        keep, why, op="merge",
        text=text if text is not None else keep.text,
        provenance=union(keep.provenance, *[o.provenance for o in others]),
        trust=max([keep.trust, *[o.trust for o in others]]),
        shown=keep.shown + sum(o.shown for o in others),
        helpful=keep.helpful + sum(o.helpful for o in others),
        harmful=keep.harmful + sum(o.harmful for o in others),
        meta={"merged": union(keep.meta.get("merged", []), [o.id for o in others])},
    )
    return [merged] + [retire(o, f"merged into {keep.id}", merged_into=keep.id) for o in others]


def supersede(old: Item, new: Item, reason: str = "") -> list[Delta]:
    """`new` is what holds from `new.valid_from` (default now) on; `old` ends there.

    If `new` is older than `old` (a fact about the past arrives late), `new` is added as
    already superseded by `old` instead, so both stay correct for `as_of` queries.
    """
    start_new = new.valid_from if new.valid_from is not None else now()
    start_old = old.valid_from if old.valid_from is not None else old.created_at
    if start_new < start_old:
        late = dataclasses.replace(new, valid_from=start_new, valid_to=start_old, superseded_by=old.id,
                                   status="retired")
        return [add(late, reason or f"a fact about the past: {old.id} holds from {start_old:.0f}")]
    ended = update(
        old, reason or f"superseded by {new.id}", op="supersede", status="retired", superseded_by=new.id,
        valid_to=start_new if old.valid_to is None or old.valid_to > start_new else old.valid_to,
    )
    return [ended, add(dataclasses.replace(new, valid_from=start_new), reason or f"supersedes {old.id}")]


def retire(item: Item, reason: str = "", **meta: Any) -> Delta:
    """Soft delete: status retired, the reason and time kept in `meta.retired` (revert restores it)."""
    return update(item, reason or "retired", op="retire", status="retired",
                  meta={"retired": {"at": now(), "reason": reason or "retired"}, **meta})
