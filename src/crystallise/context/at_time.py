"""Point-in-time search: what a scope held at time `t`, read from the item ledger.

    hits = at_time.search("where does the user live?", store=s, embedder=e, user="u1", as_of=t)

The serving index (`context/index.py`) holds *active* items only, so it cannot answer "what was
true at t" — asking it with `as_of` found nothing (issue 18). This path does not use the index:

1. candidates: the items of the visible scopes, live or retired, from the store
   (`Store.query_items`, the same scope rules as serving);
2. each is taken *as it was at t*: an item changed after `t` is replaced by the `after` of its last
   ledger row written at or before `t` (`Store.item_history`), so an edited text answers with the
   old words and a forgotten one with what it said before; one whose state then was not served
   (quarantined, forgotten) or whose validity (`valid_from <= t < valid_to`, the fact's own time,
   as `Store.query_items(as_of=)`) does not hold `t` is left out;
3. ranked as serving ranks: BM25 over the candidates' text and cosine to the query embedding,
   fused by reciprocal rank (`RRF_K`), ties user > org > agent.

Slower than the index (it embeds the candidates), which is fine for an audit question;
the hot path (`as_of=None`) never comes here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

import numpy as np

from crystallise.context.embed import Embedder
from crystallise.context.items import LEVEL_ORDER
from crystallise.context.lexical import BM25Index
from crystallise.store.base import Store
from crystallise.errors import ValidationError
from crystallise.types import Item, ItemKind

__all__ = ["MAX_CANDIDATES", "as_it_was", "kinds_of", "search"]

MAX_CANDIDATES = 20_000
RRF_K = 60


def kinds_of(kind: str | Sequence[str] | None) -> list[str] | None:
    """`kind` as a list of item kinds (None: every kind); an unknown kind is named."""
    if kind is None:
        return None
    kinds = [kind] if isinstance(kind, str) else list(kind)
    bad = [k for k in kinds if k not in get_args(ItemKind)]
    if bad:
        raise ValidationError(f"unknown item kind(s) {bad}: use {list(get_args(ItemKind))}")
    return kinds


def as_it_was(store: Store, item: Item, t: float) -> Item | None:
    """`item` as the ledger says it stood at `t` (valid time decides whether it held then), or None.

    Changed since `t`: its last ledger state written at or before `t`; none (it was written later,
    about an earlier time, e.g. `remember(..., valid_from=...)`): its first state. A state that is
    retired without a successor (forgotten, deleted) or not yet released (quarantined) is not served.
    """
    then = item
    if item.updated_at > t:
        rows = [r for r in store.item_history(item.id) if r.get("after")]
        earlier = [r for r in rows if r["created_at"] <= t]
        if earlier or rows:
            then = Item.from_dict((earlier or rows)[-1 if earlier else 0]["after"])
    if then.status != "active" and not (then.status == "retired" and then.superseded_by):
        return None
    lo = then.valid_from if then.valid_from is not None else -np.inf
    hi = then.valid_to if then.valid_to is not None else np.inf
    return then if lo <= t < hi else None


def search(query: str, *, store: Store, embedder: Embedder, as_of: float, agent: str = "default",
           org: str | None = None, user: str | None = None, k: int = 10,
           kinds: Sequence[str] | None = None, mode: str = "hybrid") -> list[tuple[Item, float, dict[str, int],
                                                                                 float | None]]:
    """The `k` best items valid at `as_of` for `query`: (item as it was, fused score, ranks, cosine)."""
    found = store.query_items(agent=agent, org=org, user=user, status=("active", "retired", "quarantined"),
                              as_of=as_of, limit=MAX_CANDIDATES)
    then = [it for it in (as_it_was(store, it, as_of) for it in found)
            if it is not None and (kinds is None or it.kind in kinds)]
    if not then:
        return []
    lists: dict[str, list[int]] = {}
    cosine: dict[int, float] = {}
    if mode in ("hybrid", "lexical"):
        bm25 = BM25Index()
        for slot, it in enumerate(then):
            bm25.add(slot, it.text)
        lists["lexical"] = [slot for slot, _ in bm25.search(query, len(then))]
    if mode in ("hybrid", "vector"):
        q = np.asarray(embedder.embed([query])[0], dtype=np.float32)
        m = np.asarray(embedder.embed([it.text for it in then]), dtype=np.float32)
        scores = m @ q
        order = sorted(range(len(then)), key=lambda s: (-float(scores[s]), LEVEL_ORDER.get(then[s].level, 3), s))
        lists["vector"] = order
        cosine = {s: float(scores[s]) for s in order}
    fused: dict[int, float] = {}
    ranks: dict[int, dict[str, int]] = {}
    for name, slots in lists.items():
        for rank, slot in enumerate(slots, start=1):
            fused[slot] = fused.get(slot, 0.0) + 1.0 / (RRF_K + rank)
            ranks.setdefault(slot, {})[name] = rank
    best = sorted(fused, key=lambda s: (-fused[s], LEVEL_ORDER.get(then[s].level, 3), then[s].id))[:k]
    return [(then[s], fused[s], ranks[s], cosine.get(s)) for s in best]
