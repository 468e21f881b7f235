"""The in-process retrieval index: per-scope float32 matrices + BM25, kept in sync with the store.

Context assembly must be fast (compass: p95 <= 10 ms at 100k items on one core), so the
hot path never scans the items table. Instead each process keeps, per store and
embedder, one `Block` per scope owner:

    ("agent", agent_id, None)   agent-level items of one agent
    ("org",   org_id,   None)   org-level items of one org
    ("user",  org_id,   user_id) one user's items (org_id may be None), never shared

A query for (agent, org, user) reads at most those three blocks, which is the store's
scope rule (`Store.query_items`) by construction: no other user's block is ever touched.

Sync (every call, cheap): `store.item_watermark()` = (max ledger seq, max item rid) is one
indexed read. When it moved, the ids changed since are read from the ledger, re-read from
the items table, and re-indexed. Vectors are computed *lazily* here, not on the write
path: an item written by any path (remember, the Committer, the API, a SQL shell) gets
its vector the first time an index sees it, stored in `item_vectors` keyed by (item,
embedder name) with the hash of its text, so other processes and later runs reuse it,
an edited text is re-embedded, and the write path never waits for a model.
`backfill()` does the same ahead of time for a whole store (`crystallise index backfill`).

Serving re-reads the chosen items from the store (retrieve.py), so an item deleted
outside the ledger (e.g. a user's hard deletion) is never shown even before a sync.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crystallise.config import ENV_PREFILTER_MIN, env
from crystallise.context.embed import Embedder
from crystallise.context.lexical import BM25Index
from crystallise.context.query_dates import observed_at
from crystallise.store.base import Store
from crystallise.store.vectors import text_sha
from crystallise.types import Item

__all__ = [
    "Block", "BlockKey", "ScopeIndex", "block_key", "forget_ids", "forget_user_block", "index_for", "visible_keys",
]

BlockKey = tuple[str, str | None, str | None]
Progress = Callable[[str, int, int], None]
KINDS = ("memory", "bullet", "skill", "note")
# Blocks at least this large prefilter vector search by sign bits (Block.vector_top); below it,
# the exact matvec is already fast. Env CRYSTALLISE_PREFILTER_MIN overrides (0 = always).
PREFILTER_MIN = 20000


def prefilter_min() -> int:
    """`PREFILTER_MIN`, or $CRYSTALLISE_PREFILTER_MIN (read when a search runs, not at import)."""
    return int(env(ENV_PREFILTER_MIN) or PREFILTER_MIN)
PREFILTER_OVERSAMPLE = 10  # candidates kept by the prefilter per result asked for (at least 1,000)
_KIND_CODE = {k: i for i, k in enumerate(KINDS)}
EMBED_BATCH = 256


def block_key(item: Item) -> BlockKey:
    """The block an item lives in (see the module docstring)."""
    if item.level == "user":
        return ("user", item.org_id, item.user_id)
    if item.level == "org":
        return ("org", item.org_id, None)
    return ("agent", item.agent_id, None)


def visible_keys(agent: str, org: str | None, user: str | None) -> list[BlockKey]:
    """Blocks a scope may read, in precedence order user > org > agent."""
    keys: list[BlockKey] = []
    if user:
        keys.append(("user", org, user))
    if org:
        keys.append(("org", org, None))
    keys.append(("agent", agent, None))
    return keys


def embed_text(item: Item) -> str:
    """What an item's vector embeds: its text (a skill's text is its description)."""
    return item.text


def lexical_text(item: Item) -> str:
    """What BM25 indexes: the text plus `meta["context"]`, text a learner attached to help find the item.

    Contextual indexing: a conversational turn ("I loved it, so inspiring!") is found by the
    words of the turns around it ("Which book was your favourite?"). The context is matched
    but never shown (the pack shows `text`) and never embedded: mixing it into the vector
    blurs what the item itself says (docs/retrieval.md measures both).

    >>> lexical_text(Item(text="I loved it", meta={"context": "Which book?"}))
    'I loved it Which book?'
    """
    context = item.meta.get("context") if isinstance(item.meta, dict) else None
    return f"{item.text} {context}" if isinstance(context, str) and context else item.text


@dataclass
class Block:
    """One scope owner's items: a growable float32 matrix, per-slot facts, and a BM25 index."""

    dim: int
    ids: list[str | None] = field(default_factory=list)
    slot_of: dict[str, int] = field(default_factory=dict)
    free: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        cap = 64
        self.matrix = np.zeros((cap, self.dim), dtype=np.float32)
        self.alive = np.zeros(cap, dtype=bool)
        self.kind = np.zeros(cap, dtype=np.int8)
        self.valid_from = np.full(cap, -math.inf)
        self.valid_to = np.full(cap, math.inf)
        self.superseded = np.zeros(cap, dtype=bool)
        self.when = np.zeros(cap)  # observed_at: what a date named in the query is compared with
        self.bm25 = BM25Index()
        self.bits: np.ndarray | None = None  # sign bits of (vector - center), built on demand for big blocks
        self.center: np.ndarray | None = None
        self.bits_built_at = 0

    def __len__(self) -> int:
        return len(self.slot_of)

    def _grow(self, need: int) -> None:
        cap = len(self.alive)
        if need <= cap:
            return
        new = max(need, 2 * cap)

        def grow(a: np.ndarray, fill: Any) -> np.ndarray:
            out = np.full((new, *a.shape[1:]), fill, dtype=a.dtype)
            out[:cap] = a
            return out

        self.matrix = grow(self.matrix, 0.0)
        self.alive = grow(self.alive, False)
        self.kind = grow(self.kind, 0)
        self.valid_from = grow(self.valid_from, -math.inf)
        self.valid_to = grow(self.valid_to, math.inf)
        self.superseded = grow(self.superseded, False)
        self.when = grow(self.when, 0.0)
        if self.bits is not None:  # column-major (words, slots): one contiguous pass per word
            wider = np.zeros((self.bits.shape[0], new), dtype=np.uint64)
            wider[:, :cap] = self.bits
            self.bits = wider

    def put(self, item: Item, vector: np.ndarray) -> None:
        self.remove(item.id)
        if self.free:
            slot = self.free.pop()
            self.ids[slot] = item.id
        else:
            slot = len(self.ids)
            self.ids.append(item.id)
            self._grow(slot + 1)
        self.slot_of[item.id] = slot
        self.matrix[slot] = vector
        if self.bits is not None and self.center is not None:
            self.bits[:, slot] = _sign_bits(vector[None, :] - self.center)[0]
        self.alive[slot] = True
        self.kind[slot] = _KIND_CODE.get(item.kind, 0)
        self.valid_from[slot] = -math.inf if item.valid_from is None else item.valid_from
        self.valid_to[slot] = math.inf if item.valid_to is None else item.valid_to
        self.superseded[slot] = item.superseded_by is not None
        self.when[slot] = observed_at(item)
        self.bm25.add(slot, lexical_text(item))

    def remove(self, item_id: str) -> None:
        slot = self.slot_of.pop(item_id, None)
        if slot is None:
            return
        self.ids[slot] = None
        self.alive[slot] = False
        self.matrix[slot] = 0.0
        self.bm25.remove(slot)
        self.free.append(slot)

    def mask(self, kinds: Sequence[str] | None, as_of: float | None) -> np.ndarray:
        """Slots that may be served: alive, of `kinds`, valid now (or at `as_of`)."""
        n = len(self.ids)
        m = self.alive[:n].copy()
        if kinds is not None:
            m &= np.isin(self.kind[:n], [_KIND_CODE[k] for k in kinds if k in _KIND_CODE])
        if as_of is None:
            m &= ~self.superseded[:n]
        else:
            m &= (self.valid_from[:n] <= as_of) & (self.valid_to[:n] > as_of)
        return m

    def vector_top(self, query: np.ndarray, k: int, mask: np.ndarray) -> list[tuple[str, float]]:
        """The `k` most similar allowed items (id, cosine), best first.

        Small blocks: exact, one matvec. Blocks of `PREFILTER_MIN` items or more: a matvec
        over 100k x 384 float32 reads 150 MB (~11 ms on one core here), so the candidates
        are first narrowed by Hamming distance between sign bits (48 bytes a row for 384-d,
        ~1 ms), keeping `PREFILTER_OVERSAMPLE * k` (at least 1,000), and only those are
        scored exactly. Approximate: docs/benchmarks.md measures the overlap with exact.
        """
        n = len(self.ids)
        if n == 0 or k <= 0 or not mask.any():
            return []
        candidates = None
        if n >= prefilter_min():
            keep = max(PREFILTER_OVERSAMPLE * k, 1000)
            if keep < int(mask.sum()):
                candidates = self._prefilter(query, keep, mask)
        if candidates is None:
            scores = self.matrix[:n] @ query
            scores[~mask] = -np.inf
            k = min(k, int(mask.sum()))
            top = np.argpartition(-scores, k - 1)[:k] if n > k else np.arange(n)
            top = top[np.isfinite(scores[top])]
            order = top[np.lexsort((top, -scores[top]))]
            return [(self.ids[i], float(scores[i])) for i in order]  # type: ignore[misc]
        exact = self.matrix[candidates] @ query
        k = min(k, len(candidates))
        pick = np.argpartition(-exact, k - 1)[:k] if len(candidates) > k else np.arange(len(candidates))
        slots, scores = candidates[pick], exact[pick]
        order = np.lexsort((slots, -scores))
        return [(self.ids[int(slots[i])], float(scores[i])) for i in order]  # type: ignore[misc]

    def _prefilter(self, query: np.ndarray, keep: int, mask: np.ndarray) -> np.ndarray:
        """Slots of the `keep` allowed rows nearest to `query` by sign-bit Hamming distance."""
        n = len(self.ids)
        if self.bits is None or self.center is None or n > 2 * self.bits_built_at:  # (re)centre as the block grows
            live = self.matrix[:n][self.alive[:n]]
            self.center = live.mean(axis=0) if len(live) else np.zeros(self.dim, dtype=np.float32)
            bits = _sign_bits(self.matrix - self.center)
            bits[~self.alive] = 0
            self.bits, self.bits_built_at = np.ascontiguousarray(bits.T), n
        q = _sign_bits(query[None, :] - self.center)[0]
        dist = np.bitwise_count(self.bits[0, :n] ^ q[0]).astype(np.uint16)
        for word in range(1, len(q)):  # per 64-bit word: ~0.4 ms for 100k x 384 bits, vs 2 ms row-wise
            dist += np.bitwise_count(self.bits[word, :n] ^ q[word])
        dist[~mask] = np.iinfo(np.uint16).max
        return np.argpartition(dist, keep - 1)[:keep]

    def lexical_top(self, query: str, k: int, mask: np.ndarray) -> list[tuple[str, float]]:
        slots, scores = self.bm25.scores(query)
        if len(slots) == 0 or k <= 0:
            return []
        keep = mask[slots]
        slots, scores = slots[keep], scores[keep]
        if len(slots) > k:
            top = np.argpartition(-scores, k - 1)[:k]
            slots, scores = slots[top], scores[top]
        order = np.lexsort((slots, -scores))
        return [(self.ids[int(slots[i])], float(scores[i])) for i in order]  # type: ignore[misc]


def _sign_bits(rows: np.ndarray) -> np.ndarray:
    """One bit per dimension (> 0), packed into uint64 words: (n, dim) float -> (n, ceil(dim / 64))."""
    packed = np.packbits(rows > 0, axis=1)
    pad = (-packed.shape[1]) % 8
    if pad:
        packed = np.pad(packed, ((0, 0), (0, pad)))
    return np.ascontiguousarray(packed).view(np.uint64)


class ScopeIndex:
    """Every active item of one store, by block, for one embedder. Use `index_for(store, embedder)`."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.blocks: dict[BlockKey, Block] = {}
        self.where: dict[str, BlockKey] = {}
        self.watermark: tuple[int, int] | None = None
        self.lock = threading.RLock()
        self.embedded = 0  # vectors this index computed (not found in the store)
        self.on_new: list[Callable[[Any, list[Item]], None]] = []  # hooks: note linking (notes.py)

    # -- sync ---------------------------------------------------------------------------
    def sync(self, store: Store, progress: Progress | None = None) -> int:
        """Bring the index up to date with the store; returns how many items were (re)indexed."""
        with self.lock:
            mark = store.item_watermark()
            if mark == self.watermark:
                return 0
            old = self.watermark
            if old is None or mark[0] < old[0] or mark[1] < old[1]:  # first load, or rows vanished
                self.blocks, self.where = {}, {}
                changed = store.scan_items(("active",))
                removed: list[str] = []
            else:
                ids = store.changed_item_ids(old[0], old[1])
                fresh = store.items_by_ids(ids)
                changed = [it for it in fresh.values() if it.status == "active"]
                removed = [i for i in ids if i not in fresh or fresh[i].status != "active"]
            for item_id in removed:
                self.drop(item_id)
            new = [it for it in changed if it.id not in self.where]
            self._index(store, changed, progress)
            self.watermark = mark
            for hook in self.on_new:
                hook(store, new)
            return len(changed)

    def drop(self, item_id: str) -> None:
        """Forget an item (it was deleted or retired)."""
        with self.lock:
            key = self.where.pop(item_id, None)
            if key is not None:
                self.blocks[key].remove(item_id)

    def _index(self, store: Store, items: Sequence[Item], progress: Progress | None) -> None:
        vectors = self.vectors(store, items, progress)
        for item in items:
            key = block_key(item)
            old = self.where.get(item.id)
            if old is not None and old != key:
                self.blocks[old].remove(item.id)
            block = self.blocks.get(key)
            if block is None:
                block = self.blocks[key] = Block(self.embedder.dim)
            block.put(item, vectors[item.id])
            self.where[item.id] = key

    def vectors(self, store: Store, items: Sequence[Item], progress: Progress | None = None) -> dict[str, np.ndarray]:
        """Vectors of `items`: from the store when their text hash matches, else embedded and stored."""
        name = self.embedder.name
        wanted = {it.id: text_sha(embed_text(it)) for it in items}
        stored = store.get_vectors(name, None if len(wanted) > 5000 else list(wanted))
        out: dict[str, np.ndarray] = {}
        todo: list[Item] = []
        for it in items:
            hit = stored.get(it.id)
            if hit is not None and hit[0] == wanted[it.id] and hit[1].shape[0] == self.embedder.dim:
                out[it.id] = hit[1]
            else:
                todo.append(it)
        for start in range(0, len(todo), EMBED_BATCH):
            batch = todo[start : start + EMBED_BATCH]
            if progress:
                progress(f"embedding with {name}", start, len(todo))
            matrix = self.embedder.embed([embed_text(it) for it in batch])
            fresh = {it.id: (wanted[it.id], matrix[i]) for i, it in enumerate(batch)}
            store.put_vectors(name, fresh)
            out.update({k: v for k, (_, v) in fresh.items()})
            self.embedded += len(batch)
        if progress and todo:
            progress(f"embedding with {name}", len(todo), len(todo))
        return out

    # -- reading --------------------------------------------------------------------------
    def visible(self, agent: str, org: str | None, user: str | None) -> list[tuple[BlockKey, Block]]:
        return [(k, self.blocks[k]) for k in visible_keys(agent, org, user) if k in self.blocks]

    def size(self) -> int:
        return len(self.where)


_INDEXES: OrderedDict[tuple[str, str], ScopeIndex] = OrderedDict()
_INDEXES_LOCK = threading.Lock()
MAX_INDEXES = 8


def index_for(store: Store, embedder: Embedder) -> ScopeIndex:
    """The process's index for a store URL and an embedder (least recently used of 8 kept)."""
    key = (str(store.url), embedder.name)
    with _INDEXES_LOCK:
        index = _INDEXES.get(key)
        if index is None:
            index = _INDEXES[key] = ScopeIndex(embedder)
            from crystallise.context.notes import link_new_notes

            index.on_new.append(lambda st, new, ix=index: link_new_notes(st, ix, new))
            while len(_INDEXES) > MAX_INDEXES:
                _INDEXES.popitem(last=False)
        _INDEXES.move_to_end(key)
        return index


def backfill(store: Store, embedder: Embedder, progress: Progress | None = None) -> dict[str, int]:
    """Embed every active item that has no current vector for `embedder`; returns counts."""
    index = index_for(store, embedder)
    before = index.embedded
    indexed = index.sync(store, progress)
    return {"items": index.size(), "indexed": indexed, "embedded": index.embedded - before}


def forget_ids(ids: Iterable[str]) -> None:
    """Drop ids from every index in this process (after a hard deletion)."""
    with _INDEXES_LOCK:
        indexes = list(_INDEXES.values())
    for index in indexes:
        for item_id in ids:
            index.drop(item_id)


def forget_user_block(org: str | None, user: str, ids: Iterable[str] = ()) -> None:
    """Drop a deleted user's whole block, and `ids` (items derived from them), from every index here.

    Serving re-reads chosen items from the store, so a deleted item is never shown anyway;
    this keeps the deleted text out of the process's memory too (`crystallise forget --user`).
    """
    with _INDEXES_LOCK:
        indexes = list(_INDEXES.values())
    gone = list(ids)
    for index in indexes:
        with index.lock:
            block = index.blocks.get(("user", org, user))
            owned = [i for i, key in index.where.items() if key == ("user", org, user)] if block else []
            for item_id in [*owned, *gone]:
                index.drop(item_id)
            index.blocks.pop(("user", org, user), None)
