"""From a store URL to a configured SQLAlchemy engine, and from driver errors to ours.

Two URL forms are accepted (anything else is a `ConfigError` naming them):

    sqlite:///relative/or/abs/path.db      sqlite:////abs/path.db (SQLAlchemy's form)
    postgresql://user:password@host:5432/db    (also postgres:// and postgresql+psycopg://)

SQLite is set up for an embedded store that must not lose acknowledged writes:
WAL journal (readers never block the writer), `synchronous=FULL` (a committed
transaction survives a power cut), foreign keys on, and a busy timeout so that
concurrent writers wait instead of failing. The pragmas are per connection, so an
event listener sets them on every new one. Write transactions start with
`BEGIN IMMEDIATE`: taking the write lock up front means two writers queue on the
busy timeout rather than one failing with "database is locked" when it upgrades a
read lock mid-transaction.

PostgreSQL enforces org isolation too (migration 5): inside `org_scope("acme")` (the HTTP API
enters it for an org key's request) every transaction runs as the role `crystallise_org` with
`crystallise.org = 'acme'`, and row-level security shows and accepts only that org's traces,
spans, feedback and items (plus shared items), whatever filter the query forgot.

    with org_scope("acme"):
        store.list_traces(org=None)      # on PostgreSQL: acme's traces only
"""

from __future__ import annotations

import contextvars
import importlib.util
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import StaticPool

from crystallise.errors import ConfigError, CrystalliseError, StoreError

__all__ = [
    "BUSY_TIMEOUT_MS",
    "WRITE",
    "is_postgres",
    "make_engine",
    "mask_url",
    "org_scope",
    "parse_url",
    "set_org_scope",
    "translate_errors",
    "write_connection",
]

# Execution option that makes the SQLite `begin` listener emit BEGIN IMMEDIATE.
WRITE = "crystallise_write"

# How long a SQLite writer waits for another writer before giving up.
BUSY_TIMEOUT_MS = 30_000

ACCEPTED_FORMS = "sqlite:///path/to/crystallise.db or postgresql://user:password@host:5432/dbname"
POSTGRES_EXTRA = "install the postgres extra: pip install 'crystallise[postgres]'"


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ***, for error messages and logs."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return "<unparseable URL>"


def parse_url(url: str) -> URL:
    """Check the URL's scheme and pick the driver: psycopg 3 for PostgreSQL, sqlite3 for SQLite."""
    try:
        parsed = sa.make_url(url)
    except exc.ArgumentError:
        raise ConfigError(f"cannot parse store URL {url!r}: use {ACCEPTED_FORMS}") from None
    scheme = parsed.drivername
    if scheme in ("sqlite", "sqlite+pysqlite"):
        return parsed.set(drivername="sqlite+pysqlite")
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        if importlib.util.find_spec("psycopg") is None:
            raise ConfigError(f"store URL {mask_url(parsed)} needs psycopg: {POSTGRES_EXTRA}")
        return parsed.set(drivername="postgresql+psycopg")
    raise ConfigError(f"unsupported store URL scheme {scheme!r} in {mask_url(parsed)}: use {ACCEPTED_FORMS}")


ORG_ROLE = "crystallise_org"  # made by migration 5
_ORG: contextvars.ContextVar[str | None] = contextvars.ContextVar("crystallise_db_org", default=None)


@contextmanager
def org_scope(org: str | None) -> Iterator[None]:
    """Transactions begun inside see (on PostgreSQL) only `org`'s rows; None: every row."""
    token = _ORG.set(org)
    try:
        yield
    finally:
        _ORG.reset(token)


def current_org_scope() -> str | None:
    """The org the current context's transactions run as (None: the owner, no row filter)."""
    return _ORG.get()


def set_org_scope(org: str | None) -> None:
    """`org_scope` for the rest of the current context (an HTTP request: each runs in its own)."""
    _ORG.set(org)


def make_engine(url: str) -> Engine:
    """A configured engine for `url` (see the module docstring). Does not connect yet."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "postgresql":
        engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10})
        _isolate_orgs(engine)
        return engine
    return _sqlite_engine(parsed)


def _isolate_orgs(engine: Engine) -> None:
    """Every transaction begun inside `org_scope(org)` runs as `crystallise_org` for `org` (migration 5)."""
    can: dict[str, bool] = {}

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        org = _ORG.get()
        if org is None:
            return
        if "role" not in can:  # once per engine: does the role exist, and may we take it?
            can["role"] = bool(conn.exec_driver_sql(
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %(r)s) "
                "THEN pg_has_role(current_user, %(r)s, 'MEMBER') ELSE false END", {"r": ORG_ROLE}).scalar())
        conn.exec_driver_sql("SELECT set_config('crystallise.org', %(org)s, true)", {"org": org})
        if can["role"]:
            conn.exec_driver_sql(f"SET LOCAL ROLE {ORG_ROLE}")


def _sqlite_engine(parsed: URL) -> Engine:
    database = parsed.database or ""
    memory = database in ("", ":memory:") or database.startswith("file::memory:")
    connect_args: dict[str, Any] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}
    if memory:
        # One shared connection, or every checkout would see its own empty database.
        engine = sa.create_engine(parsed, connect_args=connect_args, poolclass=StaticPool)
    else:
        directory = os.path.dirname(os.path.abspath(database))
        if not os.path.isdir(directory):
            raise ConfigError(
                f"the directory of the SQLite store {database!r} does not exist: "
                f"create it (mkdir -p {directory}) or point the store URL elsewhere"
            )
        engine = sa.create_engine(parsed, connect_args=connect_args)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver level; transactions are begun by `_begin` below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if not memory:
                _enable_wal(cursor)
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _enable_wal(cursor: Any) -> None:
    """Switch the database file to WAL (a persistent setting), retrying while another
    connection holds the lock: SQLite answers a contended journal-mode change with
    "database is locked" at once, without waiting on the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            cursor.execute("PRAGMA journal_mode = WAL").fetchone()
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def is_postgres(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "postgresql"


@contextmanager
def write_connection(engine: Engine) -> Iterator[Connection]:
    """A connection inside one write transaction: committed on success, rolled back on any error."""
    with engine.connect() as conn:
        conn.execution_options(**{WRITE: True})
        with conn.begin():
            yield conn


@contextmanager
def translate_errors(url: str, doing: str) -> Iterator[None]:
    """Turn SQLAlchemy/driver errors into `StoreError`s that name the store and a fix.

    Our own errors pass through unchanged; so does an error one of our bind
    processors raised (SQLAlchemy wraps those in a StatementError).
    """
    try:
        yield
    except CrystalliseError:
        raise
    except exc.StatementError as error:
        if isinstance(error.orig, CrystalliseError):
            raise error.orig from None
        raise StoreError(_describe(url, doing, error)) from error
    except exc.SQLAlchemyError as error:
        raise StoreError(_describe(url, doing, error)) from error


def _describe(url: str, doing: str, error: exc.SQLAlchemyError) -> str:
    detail = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    masked = mask_url(url)
    if isinstance(error, exc.IntegrityError | exc.ProgrammingError | exc.DataError):
        return f"the store at {masked} failed while {doing}: {detail}"
    if "locked" in detail:
        fix = (
            f"another process held the SQLite write lock for over {BUSY_TIMEOUT_MS // 1000} s; "
            "find the long-running writer, or use PostgreSQL for many concurrent writers"
        )
    elif masked.startswith("postgresql"):
        fix = (
            "check that the PostgreSQL server is running and reachable, and that the URL's host, port, "
            "user, password and database name are right (the URL comes from CRYSTALLISE_STORE_URL or the config)"
        )
    else:
        fix = (
            "check that the path is a crystallise SQLite database (or a new file) on a local disk, "
            "readable and writable by you; move a damaged file aside to start a new store"
        )
    return f"the store at {masked} failed while {doing}: {detail}; {fix}"
