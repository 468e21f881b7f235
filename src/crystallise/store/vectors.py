"""Item vectors, item links and the item change feed: the store side of hybrid retrieval.

Functions over a connection (the caller owns the transaction); `SqlStore` exposes them
as methods. Identical on SQLite and PostgreSQL:

    item_vectors(item_id, model, dim, text_sha, vector BLOB/BYTEA, created_at)
        vector = numpy float32 little-endian bytes (`np.frombuffer(v, "<f4")` reads it back)
    item_links(src_id, dst_id, score, reason, created_at)
    change feed: (max item_deltas.seq, max items.rid) is a cheap watermark; the ids changed
        since an older watermark are the ledger's item ids after its seq plus rows after its rid.

    >>> store.put_vectors("hash-256", {"it_1": ("ab12...", np.ones(256, np.float32))})   # doctest: +SKIP
    >>> store.get_vectors("hash-256", ["it_1"])["it_1"][1].shape                          # doctest: +SKIP
    (256,)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from crystallise.errors import ValidationError
from crystallise.store import codec
from crystallise.store.engine import is_postgres
from crystallise.store.schema import item_deltas, item_links, item_vectors, items
from crystallise.types import Item, now

__all__ = [
    "changed_item_ids",
    "get_links",
    "get_vectors",
    "item_watermark",
    "items_by_ids",
    "put_links",
    "put_vectors",
    "scan_items",
    "text_sha",
    "vector_bytes",
]

CHUNK = 500


def text_sha(text: str) -> str:
    """The hash a stored vector records of the text it embeds (first 16 hex of sha256)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def vector_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def _upsert(conn: Connection, table: sa.Table, rows: list[dict], keys: list[str]) -> None:
    if not rows:
        return
    insert = (postgresql.insert if is_postgres(conn) else sqlite.insert)(table)
    stmt = insert.on_conflict_do_update(
        index_elements=keys, set_={c: insert.excluded[c] for c in rows[0] if c not in keys}
    )
    conn.execute(stmt, rows)


def item_watermark(conn: Connection) -> tuple[int, int]:
    """(max ledger seq, max item rid): changes whenever an item is added, changed or removed by a delta."""
    row = conn.execute(
        sa.select(sa.select(sa.func.max(item_deltas.c.seq)).scalar_subquery(),
                  sa.select(sa.func.max(items.c.rid)).scalar_subquery())
    ).one()
    return int(row[0] or 0), int(row[1] or 0)


def changed_item_ids(conn: Connection, after_seq: int, after_rid: int) -> list[str]:
    """Ids of items touched by a delta after `after_seq`, or inserted after `after_rid`."""
    ids = dict.fromkeys(
        r[0] for r in conn.execute(sa.select(item_deltas.c.item_id).where(item_deltas.c.seq > after_seq)
                                   .order_by(item_deltas.c.seq))
    )
    ids.update(dict.fromkeys(r[0] for r in conn.execute(sa.select(items.c.id).where(items.c.rid > after_rid))))
    return list(ids)


def items_by_ids(conn: Connection, ids: Sequence[str]) -> dict[str, Item]:
    """The items that exist among `ids` (missing ones are simply absent)."""
    found: dict[str, Item] = {}
    for chunk in _chunks(list(ids)):
        for row in conn.execute(sa.select(items).where(items.c.id.in_(chunk))).mappings():
            found[row["id"]] = codec.item_from_row(row)
    return found


def scan_items(conn: Connection, status: Sequence[str] = ("active",)) -> list[Item]:
    """Every item with one of `status`, of every scope, in rid order: the index's initial load."""
    query = sa.select(items).where(items.c.status.in_(list(status))).order_by(items.c.rid)
    return [codec.item_from_row(row) for row in conn.execute(query).mappings()]


def get_vectors(conn: Connection, model: str, ids: Sequence[str] | None) -> dict[str, tuple[str, np.ndarray]]:
    """item id -> (text_sha, float32 vector) for `model`; `ids=None` reads every vector of the model."""
    query = sa.select(item_vectors.c.item_id, item_vectors.c.text_sha, item_vectors.c.vector).where(
        item_vectors.c.model == model
    )
    out: dict[str, tuple[str, np.ndarray]] = {}
    groups = [None] if ids is None else list(_chunks(list(ids)))
    for chunk in groups:
        q = query if chunk is None else query.where(item_vectors.c.item_id.in_(chunk))
        for item_id, sha, blob in conn.execute(q):
            out[item_id] = (sha, np.frombuffer(bytes(blob), dtype="<f4"))
    return out


def put_vectors(conn: Connection, model: str, vectors: Mapping[str, tuple[str, np.ndarray]]) -> int:
    """Insert or replace vectors of existing items; vectors of items deleted meanwhile are skipped."""
    if not model:
        raise ValidationError("put_vectors: the embedder name (model) must be non-empty")
    ids = list(vectors)
    existing: set[str] = set()
    for chunk in _chunks(ids):
        existing.update(r[0] for r in conn.execute(sa.select(items.c.id).where(items.c.id.in_(chunk))))
    at = now()
    rows = []
    for item_id in ids:
        if item_id not in existing:
            continue
        sha, vec = vectors[item_id]
        v = np.asarray(vec, dtype=np.float32)
        if v.ndim != 1 or not np.isfinite(v).all():
            raise ValidationError(f"vector of item {item_id} must be a finite 1-d float array, got shape {v.shape}")
        rows.append({"item_id": item_id, "model": model, "dim": int(v.shape[0]), "text_sha": sha,
                     "vector": vector_bytes(v), "created_at": at})
    for start in range(0, len(rows), CHUNK):
        _upsert(conn, item_vectors, rows[start : start + CHUNK], ["item_id", "model"])
    return len(rows)


def put_links(conn: Connection, links: Iterable[tuple[str, str, float, str]]) -> int:
    """Insert or update directed links (src, dst, score, reason) between existing items; self-links are refused."""
    rows = []
    at = now()
    for src, dst, score, reason in links:
        if src == dst:
            raise ValidationError(f"item {src} cannot link to itself")
        rows.append({"src_id": src, "dst_id": dst, "score": float(score), "reason": reason, "created_at": at})
    if not rows:
        return 0
    wanted = list({r["src_id"] for r in rows} | {r["dst_id"] for r in rows})
    existing: set[str] = set()
    for chunk in _chunks(wanted):
        existing.update(r[0] for r in conn.execute(sa.select(items.c.id).where(items.c.id.in_(chunk))))
    rows = [r for r in rows if r["src_id"] in existing and r["dst_id"] in existing]
    for start in range(0, len(rows), CHUNK):
        _upsert(conn, item_links, rows[start : start + CHUNK], ["src_id", "dst_id"])
    return len(rows)


def get_links(conn: Connection, ids: Sequence[str]) -> list[tuple[str, str, float]]:
    """Outgoing links (src, dst, score) of `ids`, strongest first per source."""
    out: list[tuple[str, str, float]] = []
    for chunk in _chunks(list(ids)):
        q = (sa.select(item_links.c.src_id, item_links.c.dst_id, item_links.c.score)
             .where(item_links.c.src_id.in_(chunk)).order_by(item_links.c.src_id, item_links.c.score.desc()))
        out += [(r[0], r[1], float(r[2])) for r in conn.execute(q)]
    return out
