"""Shared store fixtures: every store test runs against SQLite and a real PostgreSQL.

- `store_url`: a URL of a fresh, empty database (a temp SQLite file, or a new
  PostgreSQL database on the session's server); parametrised `sqlite` / `postgres`.
- `store`: `open_store(store_url)`, closed after the test.
- `pg_server`: the session's throwaway PostgreSQL (see tests/pg.py), started only
  when a postgres-parametrised test runs.
- `home`: a new home whose store is `store_url` (so it runs on both stores), closed after the test.
  A test file that needs another kind of home (a copied template, SQLite only) defines its own.

The postgres params carry the `postgres` marker, so `pytest -m 'not postgres'`
runs SQLite alone and never starts a server. Where PostgreSQL cannot be started
(no initdb on PATH, no psycopg) those params are skipped with the reason.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from crystallise.engine.home import Home
from crystallise.store import Store, open_store
from tests.pg import PostgresServer, postgres_unavailable

# Context retrieval embeds with the deterministic offline double unless a test asks for
# the real MiniLM (tests/test_retrieval.py, marked slow): loading torch costs seconds.
os.environ.setdefault("CRYSTALLISE_EMBEDDER", "hash")
# SDK traces are written before `with trace(...)` exits, so a test can read them at once; the
# background writer (the default) has its own tests (tests/test_tracing_background.py).
os.environ.setdefault("CRYSTALLISE_TRACE_WRITES", "sync")
# Learning jobs and dreaming use the model roles (docs/models.md): a test gets no coder and the answer
# model as critic unless it asks, so a machine that pulled the 1.5B coder runs the same tests as one
# that did not (tests/test_model_roles.py tests the roles themselves).
os.environ.setdefault("CRYSTALLISE_CODER_MODEL", "none")
os.environ.setdefault("CRYSTALLISE_CRITIC_MODEL", "answer")

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    reason = postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    server = PostgresServer.start()
    # A run killed with SIGTERM (`timeout`, CI cancel) would skip fixture teardown and
    # leave the server running: turn SIGTERM into KeyboardInterrupt, which pytest
    # unwinds through the finalizers, and stop at interpreter exit as a last resort.
    atexit.register(server.stop)
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_DFL and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield server
    finally:
        server.stop()
        atexit.unregister(server.stop)
        if signal.getsignal(signal.SIGTERM) is _interrupt:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crystallise.db'}"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return str(server.create_database())


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def home(store_url: str, tmp_path: Path) -> Iterator[Home]:
    h = Home.init(tmp_path / "home", store_url=store_url)
    yield h
    h.close()


@pytest.fixture(scope="session")
def home_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One initialised SQLite home (git repository + migrated store), copied by `sqlite_home`: much faster
    than `Home.init` per test."""
    h = Home.init(tmp_path_factory.mktemp("template") / "home")
    h.close()
    return h.path


@pytest.fixture
def sqlite_home(tmp_path: Path, home_template: Path) -> Iterator[Home]:
    """A fresh SQLite home of its own for the test (a copy of `home_template`)."""
    h = Home.open(shutil.copytree(home_template, tmp_path / "home"))
    yield h
    h.close()
