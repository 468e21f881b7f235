"""Named locks held across several store transactions, by every process that shares the store.

    with exclusive(store, "artifacts"):     # one holder at a time, on any machine
        ...                                 # read, decide, commit to git, record the version

PostgreSQL: a session-level advisory lock (`pg_advisory_lock`) on a connection of its own, held
until the block ends; a process that dies loses its session and with it the lock, so a crash never
leaves the lock behind. SQLite (one machine by nature): `flock` on a file beside the database, which
the kernel drops with the process too. An in-memory SQLite store is one process: a no-op.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from crystallise.store.engine import translate_errors
from crystallise.store.sql import SqlStore

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["exclusive", "lock_key"]


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for `name` (PostgreSQL's bigint)."""
    digest = hashlib.blake2b(f"crystallise:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def exclusive(store: SqlStore, name: str) -> Iterator[None]:
    """Hold the lock `name` for the block, waiting for whoever holds it (see the module docstring)."""
    engine = store.engine
    if engine.dialect.name == "postgresql":
        key = lock_key(name)
        with translate_errors(store.url, f"taking the {name} lock"):
            conn = engine.connect()
            try:
                conn.execute(sa.select(sa.func.pg_advisory_lock(key)))
                conn.commit()  # a session lock: it outlives the transaction that took it
            except BaseException:
                conn.invalidate()  # closing the session releases anything half-taken
                conn.close()
                raise
        try:
            yield
        finally:
            try:
                conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
                conn.commit()
            except Exception:  # noqa: BLE001 - a broken session: dropping it releases the lock
                conn.invalidate()
            finally:
                conn.close()
        return
    database = engine.url.database or ""
    if fcntl is None or database in ("", ":memory:") or database.startswith("file::memory:"):
        yield
        return
    with open(Path(database).with_name(Path(database).name + f".{name}.lock"), "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
