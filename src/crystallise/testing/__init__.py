"""Test doubles and throwaway servers, shipped with the library (as httpx ships its mock transport).

The tests and the benchmarks (bench/) share them, so there is one copy of each:

    from crystallise.testing import Server, fake_openai, PostgresServer, read_jsonl

    with Server(create_app(home)) as api, Server(fake_openai()) as up:   # uvicorn in a thread, loopback
        httpx.get(api.url + "/v1/health")
    pg = PostgresServer.start()                    # initdb + pg_ctl; fsync off (durable=True: on)
    for n, row in read_jsonl(Path("data.jsonl")):  # (line number, value); splits on "\\n" only

`Server` and `fake_openai` need the `serve` extra (FastAPI, uvicorn), `PostgresServer` the
`postgres` extra and PostgreSQL's server binaries; each loads only when first named.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["PostgresServer", "Server", "fake_openai", "postgres_unavailable", "read_jsonl"]

_WHERE = {"Server": "servers", "fake_openai": "servers", "PostgresServer": "pg", "postgres_unavailable": "pg",
          "read_jsonl": "jsonl"}


def __getattr__(name: str) -> Any:
    """Load a helper's module on first use: the servers need optional extras the others do not."""
    if name not in _WHERE:
        raise AttributeError(f"module 'crystallise.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(f"crystallise.testing.{_WHERE[name]}"), name)
