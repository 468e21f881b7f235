"""`crystallise serve --workers 2` over a real PostgreSQL: no per-process state that can disagree.

The server runs as the real CLI in a child process; every request below opens a fresh connection,
so the kernel spreads them over both server processes. Checked: both processes exist, a key made
or revoked while serving works or stops working everywhere, every acknowledged trace is stored
once, OTLP spans of one trace sent to different processes join into one trace, and the UI's CSRF
secret is the home's (not a per-process random one).
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from crystallise.api.auth import create_key, revoke_key
from crystallise.api.otlp_map import crystallise_trace_id
from crystallise.engine import access
from crystallise.engine.home import Home
from crystallise.web.app import shared_secret

pytestmark = pytest.mark.postgres
CLI = "from crystallise.cli import main; main()"

TRACE = {"name": "answer", "agent": "support", "user": "u1", "input": "2+2?", "output": "4",
         "spans": [{"name": "chat", "kind": "llm", "output": "4"}], "feedback": [{"score": 1.0}]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids |= {int(x) for x in (task / "children").read_text().split()}
    return kids


def _fresh(method: str, url: str, key: str | None, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "Connection": "close"} if key else {"Connection": "close"}
    with httpx.Client(timeout=30) as c:
        return c.request(method, url, headers=headers, **kw)


@pytest.fixture
def fleet(tmp_path, pg_server):
    home = Home.init(tmp_path / "home", store_url=pg_server.create_database())
    key, _ = create_key(home.path, "acme")
    port = _free_port()
    env = {**os.environ, "CRYSTALLISE_HOME": str(home.path)}
    proc = subprocess.Popen([sys.executable, "-c", CLI, "serve", "--port", str(port), "--workers", "2",
                             "--log-level", "warning"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if _fresh("GET", f"{base}/v1/health", None).status_code == 200 and len(_children(proc.pid)) >= 2:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"serve --workers 2 did not start: {proc.stdout.read().decode()[-3000:]}")
            time.sleep(0.3)
        yield home, base, key, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        home.close()


def test_serve_workers_refuses_sqlite(tmp_path):
    Home.init(tmp_path / "home").close()
    env = {**os.environ, "CRYSTALLISE_HOME": str(tmp_path / "home")}
    r = subprocess.run([sys.executable, "-c", CLI, "serve", "--workers", "2"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "needs a PostgreSQL store" in r.stderr


def test_two_processes_agree_on_keys_traces_and_otlp(fleet):
    home, base, key, proc = fleet
    workers = [p for p in _children(proc.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
    assert len(workers) == 2, "two server processes under the supervisor"

    # every acknowledged trace is stored once, whichever process took it
    ids = []
    for i in range(30):
        r = _fresh("POST", f"{base}/v1/traces", key, json={**TRACE, "input": f"q{i}"})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    with access.every_org():
        stored = [home.store.get_trace(i) for i in ids]
    assert len({t.id for t in stored}) == 30

    # a key made and one revoked while serving: every process sees both at once
    new, record = create_key(home.path, "acme")
    assert all(_fresh("GET", f"{base}/v1/traces", new).status_code == 200 for _ in range(16))
    revoke_key(home.path, record["id"])
    assert all(_fresh("GET", f"{base}/v1/traces", new).status_code == 401 for _ in range(16))
    assert _fresh("GET", f"{base}/v1/traces", key).status_code == 200

    # OTLP: a child span, then its root, in separate requests (so, often, to separate processes)
    for n in range(12):
        trace_hex = f"{n + 1:032x}"
        child = {"traceId": trace_hex, "spanId": f"{2 * n + 2:016x}", "parentSpanId": f"{2 * n + 1:016x}",
                 "name": "chat", "kind": 3, "startTimeUnixNano": "1", "endTimeUnixNano": "2"}
        root = {"traceId": trace_hex, "spanId": f"{2 * n + 1:016x}", "name": "agent", "kind": 1,
                "startTimeUnixNano": "1", "endTimeUnixNano": "3"}
        for span in (child, root):
            body = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
            r = _fresh("POST", f"{base}/otlp/v1/traces", key, json=body)
            assert r.status_code == 200 and not r.json().get("partialSuccess", {}).get("rejectedSpans"), r.text
    listed = _fresh("GET", f"{base}/v1/traces?limit=100", key).json()
    otlp = [t for t in listed["traces"] if t["name"] == "agent"]
    assert len(otlp) == 12
    for t in otlp:
        full = _fresh("GET", f"{base}/v1/traces/{t['id']}", key).json()
        assert len(full["spans"]) == 2, full  # the child waited in the shared spool, whichever process took it
    assert not list((home.path / "otlp-pending").glob("*.jsonl"))

    # the same, child and root at the same moment: an acknowledged child span is never lost (either it is
    # in the trace, or it was refused because its root was written first)
    def send(span: dict) -> httpx.Response:
        body = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
        return _fresh("POST", f"{base}/otlp/v1/traces", key, json=body)

    with ThreadPoolExecutor(8) as pool:
        for n in range(100, 124):
            trace_hex = f"{n:032x}"
            child = {"traceId": trace_hex, "spanId": f"{2 * n + 2:016x}", "parentSpanId": f"{2 * n + 1:016x}",
                     "name": "chat", "kind": 3, "startTimeUnixNano": "1", "endTimeUnixNano": "2"}
            root = {"traceId": trace_hex, "spanId": f"{2 * n + 1:016x}", "name": "racer", "kind": 1,
                    "startTimeUnixNano": "1", "endTimeUnixNano": "3"}
            c, r = pool.map(send, [child, root])
            assert c.status_code == 200 and r.status_code == 200
            got = _fresh("GET", f"{base}/v1/traces?limit=200", key).json()["traces"]
            trace = next(t for t in got if t["name"] == "racer" and t["id"].startswith(crystallise_trace_id(trace_hex)))
            full = _fresh("GET", f"{base}/v1/traces/{trace['id']}", key).json()
            child_refused = bool(c.json().get("partialSuccess", {}).get("rejectedSpans"))
            assert len(full["spans"]) == (1 if child_refused else 2), (c.json(), full)
    assert not list((home.path / "otlp-pending").glob("*.jsonl"))


def test_the_ui_secret_is_the_homes(tmp_path):
    first = shared_secret(tmp_path)
    assert len(first) == 32 and shared_secret(tmp_path) == first  # what a second process reads
    assert stat.S_IMODE((tmp_path / "ui-secret").stat().st_mode) == 0o600
    (tmp_path / "ui-secret").write_bytes(b"torn")
    fixed = shared_secret(tmp_path)
    assert len(fixed) == 32 and fixed != first
