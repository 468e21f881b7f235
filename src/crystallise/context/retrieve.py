"""Hybrid retrieval: BM25 + embedding similarity, fused by reciprocal rank, within one scope.

    search("when did Caroline join the support group?", store=store, embedder=emb, user="conv-26", k=10)
        -> [Hit(item, score, ranks), ...]    (`crystallise.engine.serving.recall` for a home: its items)

    1. sync the process's index with the store (one indexed read when nothing changed)
    2. lexical list: BM25 over each visible block (user, org, agent)          lexical.py
       vector list:  cosine of the query embedding against the same blocks    index.py
    3. fuse: score(item) = sum over lists of 1 / (RRF_K + rank in that list)   (RRF, K = 60)
       date list, when the query names a date ("in May 2023", "on 7 July, 2023"): the
       candidates of the lists above observed in that window, in fused order (query_dates.py)
       optional list, follow_links=True: the items linked to the top hits (one hop)
    4. order by fused score; ties go to the higher-precedence scope (user > org > agent)
    5. re-read the winners from the store and drop anything no longer active or not
       visible to this scope: the index is a cache, the store is the truth

Why RRF: BM25 scores and cosines live on different scales that move with the corpus and
the model; rank fusion needs no calibration and no weight tuned to a benchmark
(Cormack et al. 2009). docs/retrieval.md measures lexical-only, vector-only and fused.

Scope is a privacy boundary: only the blocks of `visible_keys(agent, org, user)` are ever
searched, so one user's items (their text, vectors and links) never reach another user.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from crystallise.context.embed import Embedder
from crystallise.context.index import KINDS, block_key, index_for, visible_keys
from crystallise.context.query_dates import date_window
from crystallise.errors import ValidationError
from crystallise.store.base import Store
from crystallise.types import Item, now

__all__ = ["RRF_K", "Hit", "search"]

RRF_K = 60
Mode = Literal["hybrid", "lexical", "vector"]
MODES = ("hybrid", "lexical", "vector")
_LEVEL_ORDER = {"user": 0, "org": 1, "agent": 2}


@dataclass
class Hit:
    """One retrieved item with its fused score and its 1-based rank in each list it was in."""

    item: Item
    score: float
    ranks: dict[str, int] = field(default_factory=dict)
    similarity: float | None = None  # cosine to the query, when the vector list saw it

    def relevant(self, floor: float = 0.3) -> bool:
        """Whether the hit is about the query at all: it shares a word with it (lexical list), or its
        embedding is at least `floor` close. Vector search ranks *everything*, so a pack without this
        floor fills its budget with unrelated items (issue 15)."""
        return "lexical" in self.ranks or (self.similarity is not None and self.similarity >= floor)


def _kinds(kind: str | Sequence[str] | None) -> list[str] | None:
    if kind is None:
        return None
    kinds = [kind] if isinstance(kind, str) else list(kind)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValidationError(f"unknown item kind(s) {bad}: use {list(KINDS)}")
    return kinds


def check_query(query: Any, k: Any, mode: str, agent: Any, org: Any, user: Any) -> None:
    if not isinstance(query, str) or not query.strip():
        raise ValidationError("recall needs a non-empty query string (what the agent is about to answer)")
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ValidationError(f"k must be a positive integer, not {k!r}")
    if mode not in MODES:
        raise ValidationError(f"mode must be one of {list(MODES)}, not {mode!r}")
    if not isinstance(agent, str) or not agent:
        raise ValidationError(f"agent must be a non-empty string, not {agent!r}")
    for name, value in (("org", org), ("user", user)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ValidationError(f"{name} must be a non-empty string or None, not {value!r}")


def search(
    query: str,
    *,
    store: Store,
    embedder: Embedder,
    agent: str = "default",
    org: str | None = None,
    user: str | None = None,
    k: int = 10,
    kind: str | Sequence[str] | None = None,
    mode: Mode = "hybrid",
    follow_links: bool = False,
    as_of: float | None = None,
    depth: int | None = None,
    timings: dict[str, float] | None = None,
    dates: bool = True,
) -> list[Hit]:
    """The `k` best items for `query` visible to the scope, as `Hit`s (see the module docstring).

    `depth` is how far down each list fusion looks (default max(50, 4k)); `as_of` serves
    what was valid at that time (default: now, superseded items hidden); `dates=False`
    ignores dates named in the query; `timings`, if given, receives `sync_ms`, `embed_ms`
    (the query embedding), `search_ms`, `fetch_ms`.
    """
    check_query(query, k, mode, agent, org, user)
    kinds = _kinds(kind)
    emb = embedder
    t0 = time.perf_counter()
    index = index_for(store, emb)
    index.sync(store)
    t1 = time.perf_counter()
    depth = depth or max(50, 4 * k)
    when = now() if as_of is None else as_of
    with index.lock:
        blocks = index.visible(agent, org, user)
        masks = {key: block.mask(kinds, as_of) for key, block in blocks}
        if as_of is None:  # also hide facts whose validity window is over (or not begun)
            for key, block in blocks:
                n = len(block.ids)
                masks[key] &= (block.valid_from[:n] <= when) & (block.valid_to[:n] > when)
        lists: dict[str, list[str]] = {}
        t_embed = 0.0
        if mode in ("hybrid", "lexical"):
            for key, block in blocks:  # per block: BM25 statistics are per block, so are its ranks
                lists[f"lexical:{key}"] = [i for i, _ in block.lexical_top(query, depth, masks[key])]
        if mode in ("hybrid", "vector") and blocks:
            te = time.perf_counter()
            q = emb.embed([query])[0]
            t_embed = time.perf_counter() - te
            scored = [(s, _LEVEL_ORDER[key[0]], i) for key, block in blocks
                      for i, s in block.vector_top(q, depth, masks[key])]
            scored.sort(key=lambda p: (-p[0], p[1], p[2]))  # equal similarity: user > org > agent
            lists["vector"] = [i for _, _, i in scored[:depth]]
            cosine = {i: float(sc) for sc, _, i in scored[:depth]}
        else:
            cosine = {}
        fused, ranks = _fuse(lists)
        window = date_window(query) if dates else None
        if window is not None and fused:
            lists["date"] = _date_list(index, fused, window)
            fused, ranks = _fuse(lists)
        level = {i: index.where[i][0] for i in fused}
    order = sorted(fused, key=lambda i: (-fused[i], _LEVEL_ORDER[level[i]], i))
    if follow_links and order:
        linked = _link_list(store, index, order[:k], masks, agent, org, user)
        if linked:
            lists["link"] = linked
            fused, ranks = _fuse(lists)
            level = {i: index.where[i][0] for i in fused if i in index.where}
            order = sorted(level, key=lambda i: (-fused[i], _LEVEL_ORDER[level[i]], i))
    t2 = time.perf_counter()
    hits = _fresh(store, index, order[: k + 10], agent, org, user, kinds, fused, ranks)[:k]
    for hit in hits:
        hit.similarity = cosine.get(hit.item.id)
    t3 = time.perf_counter()
    if timings is not None:
        timings.update(sync_ms=(t1 - t0) * 1e3, embed_ms=t_embed * 1e3, search_ms=(t2 - t1 - t_embed) * 1e3,
                       fetch_ms=(t3 - t2) * 1e3)
    return hits


def _fuse(lists: dict[str, list[str]]) -> tuple[dict[str, float], dict[str, dict[str, int]]]:
    """Reciprocal rank fusion: score = sum of 1 / (RRF_K + rank); ranks keyed by list family."""
    fused: dict[str, float] = {}
    ranks: dict[str, dict[str, int]] = {}
    for name, ids in lists.items():
        family = name.split(":", 1)[0]
        for rank, item_id in enumerate(ids, start=1):
            fused[item_id] = fused.get(item_id, 0.0) + 1.0 / (RRF_K + rank)
            ranks.setdefault(item_id, {})[family] = min(rank, ranks.get(item_id, {}).get(family, rank))
    return fused, ranks


def _date_list(index: Any, fused: dict[str, float], window: tuple[float, float]) -> list[str]:
    """The fused candidates observed inside `window`, best first: one more list to fuse, not a filter."""
    lo, hi = window
    inside = []
    for item_id in sorted(fused, key=lambda i: (-fused[i], i)):
        key = index.where.get(item_id)
        if key is None:
            continue
        block = index.blocks[key]
        if lo <= block.when[block.slot_of[item_id]] < hi:
            inside.append(item_id)
    return inside


def _link_list(store: Store, index: Any, top: list[str], masks: dict, agent: str, org: str | None,
               user: str | None) -> list[str]:
    """Items linked from the top hits, in (parent rank, link strength) order, visible ones only."""
    allowed = set(visible_keys(agent, org, user))
    position = {item_id: n for n, item_id in enumerate(top)}
    links = sorted(store.get_links(top), key=lambda link: (position[link[0]], -link[2], link[1]))
    out: list[str] = []
    for _, dst, _ in links:
        key = index.where.get(dst)
        if key is None or key not in allowed or dst in out:
            continue
        block = index.blocks[key]
        if masks.get(key) is not None and masks[key][block.slot_of[dst]]:
            out.append(dst)
    return out


def _fresh(store: Store, index: Any, ids: list[str], agent: str, org: str | None, user: str | None,
           kinds: list[str] | None, fused: dict[str, float], ranks: dict[str, dict[str, int]]) -> list[Hit]:
    """The winners as stored now; stale index entries are dropped from the index and the answer."""
    if not ids:
        return []
    allowed = set(visible_keys(agent, org, user))
    current = store.items_by_ids(ids)
    hits: list[Hit] = []
    for item_id in ids:
        item = current.get(item_id)
        if item is None or item.status != "active":
            index.drop(item_id)
            continue
        if block_key(item) not in allowed or (kinds is not None and item.kind not in kinds):
            continue  # moved scope since the index saw it: the next sync re-files it
        hits.append(Hit(item=item, score=fused[item_id], ranks=ranks.get(item_id, {})))
    return hits
