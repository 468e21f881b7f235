"""Issue 15, part 1: MCP over HTTP runs every tool call inside the calling key's database org scope
(PostgreSQL row-level security), as the REST API does — the SDK runs tool calls in tasks of its own,
outside the HTTP request's context, so the scope is entered per call."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("mcp.server.mcpserver", reason="the MCP server needs the `mcp` extra")
pytest.importorskip("fastapi", reason="streamable HTTP is served by the `serve` extra")

from crystallise.api import create_key  # noqa: E402
from crystallise.store import engine as store_engine  # noqa: E402
from tests import test_mcp  # noqa: E402
from tests.test_mcp import data, http, run  # noqa: E402

template, home, api = test_mcp.template, test_mcp.home, test_mcp.api  # the fixtures of test_mcp.py


def test_every_http_tool_call_runs_in_the_keys_org_scope(home: Any, api: Any, monkeypatch: Any) -> None:
    acme, _ = create_key(home.path, "acme")
    admin, _ = create_key(home.path, "*")
    seen: list[str | None] = []
    real = type(home.store).write_trace

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(store_engine._ORG.get())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(home.store), "write_trace", spy)

    async def calls() -> None:
        async with http(api, acme, agent="coder", user="u1") as c:
            data(await c.call_tool("recall", {"query": "deploy"}))
            data(await c.call_tool("get_playbook", {"task": "plan the deploy"}))
        acme_calls = len(seen)
        assert acme_calls >= 2 and set(seen) == {"acme"}, seen
        async with http(api, admin, agent="coder", org="globex") as c:  # the admin key: every row
            data(await c.call_tool("recall", {"query": "deploy"}))
        assert set(seen[acme_calls:]) == {None}, seen

    run(calls())
