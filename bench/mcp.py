"""`crystallise bench mcp`: the MCP tools' latency as a client sees it, over stdio and streamable HTTP.

    crystallise bench mcp                          # 200 calls per tool, a home with 500 items, real MiniLM
    crystallise bench mcp --embedder hash --calls 50 --json

1. a fresh home with --items learned items: half a user's memories, half the org's playbook
   bullets (org acme, agent coder; written through `remember`, as a client would);
2. stdio: the SDK's stdio client starts `crystallise mcp --agent coder --org acme --user me` (start-up =
   process start to the first tool list); HTTP: `crystallise serve` as a subprocess with an org
   key, the SDK's streamable HTTP client against `/mcp`;
3. per transport, --calls calls of each of get_playbook, recall, remember and feedback, back to
   back from one client: p50 / p95 / max wall time per call, measured in the client.

Every call goes through the whole path (JSON-RPC, the tool, the store, the trace write for the
answering tools). Figures go in docs/benchmarks.md with the machine they ran on.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from crystallise.engine.home import Home

WORDS = ("refund parcel invoice tabs spaces deploy friday monday lint test commit branch review release "
         "python rust latency cache index schema migration backup alert customer email phone").split()
TOOLS = ("get_playbook", "recall", "remember", "feedback")


def _text(i: int) -> str:
    picks = [WORDS[(i * k + 3) % len(WORDS)] for k in (1, 3, 7, 11)]
    return f"Note {i}: prefer {picks[0]} over {picks[1]} when the {picks[2]} needs {picks[3]}"


def _exe() -> str:
    return str(Path(sys.executable).with_name("crystallise"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _calls(client: Any, n: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {t: [] for t in TOOLS}
    for i in range(n):
        args = {"get_playbook": {"task": f"handle a {WORDS[i % len(WORDS)]} question"},
                "recall": {"query": f"{WORDS[i % len(WORDS)]} {WORDS[(i + 5) % len(WORDS)]}", "k": 5},
                "remember": {"text": f"Bench fact {i}: the {WORDS[(i + 2) % len(WORDS)]} owner is team {i % 7}"},
                "feedback": {"score": float(i % 2)}}
        for tool in TOOLS:
            t0 = time.perf_counter()
            result = await client.call_tool(tool, args[tool])
            times[tool].append((time.perf_counter() - t0) * 1000)
            if result.is_error:
                raise click.ClickException(f"{tool} failed: {result.content[0].text}")
    return times


def _stats(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {"p50_ms": round(statistics.median(ordered), 2),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
            "max_ms": round(ordered[-1], 2)}


async def _stdio(home: Path, n: int, env: dict[str, str]) -> dict[str, Any]:
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(command=_exe(), args=["--home", str(home), "mcp", "--agent", "coder",
                                                         "--org", "acme", "--user", "me"], env=env)
    t0 = time.perf_counter()
    async with Client(params) as c:
        await c.list_tools()
        startup = (time.perf_counter() - t0) * 1000
        times = await _calls(c, n)
    return {"startup_ms": round(startup, 1), **{t: _stats(v) for t, v in times.items()}}


async def _http(url: str, key: str, n: int) -> dict[str, Any]:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    timeout = httpx2.Timeout(30, read=300)  # the SDK's MCP defaults: the first call loads the embedder
    headers = {"Authorization": f"Bearer {key}", "X-Crystallise-Agent": "coder", "X-Crystallise-User": "me"}
    # the org comes from the key (acme)
    t0 = time.perf_counter()
    http = httpx2.AsyncClient(headers=headers, timeout=timeout)
    async with Client(streamable_http_client(url, http_client=http)) as c:
        await c.list_tools()
        startup = (time.perf_counter() - t0) * 1000
        times = await _calls(c, n)
    return {"connect_ms": round(startup, 1), **{t: _stats(v) for t, v in times.items()}}


def _serve(home: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = _free_port()
    proc = subprocess.Popen([_exe(), "--home", str(home), "serve", "--port", str(port), "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return proc, f"http://127.0.0.1:{port}/mcp"
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise click.ClickException("crystallise serve did not start within 120 s")


@click.command("mcp")
@click.option("--items", default=500, show_default=True, type=click.IntRange(0, 100_000),
              help="Learned items in the home (half user memories, half agent bullets).")
@click.option("--calls", default=200, show_default=True, type=click.IntRange(1, 100_000), help="Calls per tool.")
@click.option("--embedder", default="auto", show_default=True,
              help="auto (the packaged MiniLM) or hash (the deterministic double).")
@click.option("--transport", "transports", multiple=True, type=click.Choice(["stdio", "http"]),
              default=("stdio", "http"), show_default=True)
@click.option("--json", "as_json", is_flag=True)
def command(items: int, calls: int, embedder: str, transports: tuple[str, ...], as_json: bool) -> None:
    """Latency of the MCP tools over stdio and streamable HTTP."""
    from crystallise.api import create_key
    from crystallise.engine.memory import remember

    env = {**os.environ, "CRYSTALLISE_EMBEDDER": embedder}
    os.environ["CRYSTALLISE_EMBEDDER"] = embedder
    with tempfile.TemporaryDirectory(prefix="crystallise-bench-mcp-") as tmp:
        home = Home.init(Path(tmp) / "home")
        for i in range(items):
            user = "me" if i % 2 == 0 else None
            remember(_text(i), agent="coder", org="acme", user=user, kind="memory" if user else "bullet", home=home)
        key, _ = create_key(home.path, "acme")
        home.close()
        result: dict[str, Any] = {"items": items, "calls_per_tool": calls, "embedder": embedder}
        if "stdio" in transports:
            result["stdio"] = asyncio.run(_stdio(home.path, calls, env))
        if "http" in transports:
            proc, url = _serve(home.path, env)
            try:
                result["http"] = asyncio.run(_http(url, key, calls))
            finally:
                proc.terminate()
                proc.wait(30)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"MCP tool latency: {items} items, {calls} calls per tool, embedder {embedder}")
    for transport in transports:
        r = result[transport]
        first = r.get("startup_ms", r.get("connect_ms"))
        click.echo(f"  {transport}: {'start-up' if transport == 'stdio' else 'connect'} {first} ms")
        for tool in TOOLS:
            s = r[tool]
            click.echo(f"    {tool:<13} p50 {s['p50_ms']:>8.2f} ms   p95 {s['p95_ms']:>8.2f} ms   "
                       f"max {s['max_ms']:>8.2f} ms")
