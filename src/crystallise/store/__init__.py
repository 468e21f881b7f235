"""The trace and item store: one protocol, SQLite (embedded default) or PostgreSQL, same schema.

    >>> from crystallise.store import open_store
    >>> store = open_store("sqlite:////home/me/.crystallise/crystallise.db")   # doctest: +SKIP
    >>> store = open_store("postgresql://crystallise:secret@db:5432/crystallise")   # doctest: +SKIP

`open_store` checks the URL, connects, and applies any pending migrations, so the
store it returns is ready to use. Layout of this package:

    base.py        the `Store` protocol
    engine.py      URL -> configured engine (SQLite pragmas), driver errors -> StoreError
    schema.py      the current tables (for queries)
    migrations.py  ordered, append-only migrations recorded in `schema_migrations`
    codec.py       rows <-> dataclasses, value checks
    deltas.py      applying item deltas + the item ledger
    search.py      lexical search (FTS5 / tsvector) with query sanitising
    sql.py         `SqlStore`, the implementation
"""

from __future__ import annotations

from crystallise.store.base import Store
from crystallise.store.engine import make_engine, translate_errors
from crystallise.store.migrations import MIGRATIONS, migrate
from crystallise.store.sql import SqlStore

__all__ = ["MIGRATIONS", "SqlStore", "Store", "migrate", "open_store"]


def open_store(url: str) -> SqlStore:
    """Open (creating and migrating if needed) the store at `url`.

    Accepts `sqlite:///path/to.db` and `postgresql://user:password@host:port/db`.
    Raises ConfigError for an unsupported URL or a missing driver, StoreError
    (with the password masked) if the database cannot be reached.
    """
    engine = make_engine(url)
    try:
        with translate_errors(url, "opening the store"):
            migrate(engine)
    except BaseException:
        engine.dispose()
        raise
    return SqlStore(url, engine)
