"""`POST /v1/traces`: plainly valid requests are served by `IngestFastPath` (api/fastpath.py) in front
of the middleware stack, everything else by the full stack and FastAPI's own handler. The two must
answer alike: every request here is sent once down each path and the answers compared (status,
headers, body), hostile, oversized, encoded and failing ones included."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the HTTP API needs the `serve` extra")

import fastapi.routing  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from crystallise.api import create_key  # noqa: E402
from crystallise.api.fastpath import IngestFastPath  # noqa: E402
from crystallise.engine.home import Home  # noqa: E402
from crystallise.server import create_app  # noqa: E402

TRACE = {"name": "answer", "agent": "support", "user": "u1", "input": "2+2?", "output": "4",
         "spans": [{"name": "chat", "kind": "llm", "output": "4", "attributes": {"model": "m", "latency_ms": 1.5}}],
         "feedback": [{"score": 1.0, "label": "correct"}]}


@pytest.fixture
def setup(sqlite_home: Home) -> Iterator[tuple[TestClient, Any, dict[str, str]]]:
    keys = {org: create_key(sqlite_home.path, org)[0] for org in ("acme", "globex")}
    app = create_app(sqlite_home)
    with TestClient(app) as client:
        yield client, app, keys


def _solves(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count FastAPI's dependency solving (what the fast path skips)."""
    calls: list[int] = []
    real = fastapi.routing.solve_dependencies

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await real(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    return calls


def _send(client: TestClient, app: Any, lean: bool, *, body: Any, key: str | None, ctype: str = "application/json",
          query: str = "", extra: dict[str, str] | None = None, chunked: bool = False,
          ) -> tuple[int, list[tuple[str, str]], Any]:
    # any dependency override sends every request to the full stack (the fast path stands aside for tests)
    app.dependency_overrides = {} if lean else {_unused: _unused}
    headers = {"Content-Type": ctype} | ({"Authorization": f"Bearer {key}"} if key else {}) | (extra or {})
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post("/v1/traces" + query, content=iter([content]) if chunked else content, headers=headers)
    app.dependency_overrides = {}
    text = re.sub(rb"tr_[0-9a-f]{16}", b"tr_ID", r.content)  # generated ids differ between the two sends
    heads = [(k, re.sub(r"tr_[0-9a-f]{16}", "tr_ID", v)) for k, v in r.headers.multi_items() if k != "content-length"]
    doc = json.loads(text) if text else None
    if isinstance(doc, dict) and isinstance(doc.get("seq"), int) and doc["seq"] > 0:
        doc["seq"] = "SEQ"  # one more trace each send
    return r.status_code, heads, doc


def _unused() -> None:
    return None


def test_a_valid_post_skips_the_stack_and_dependency_solving(setup, monkeypatch) -> None:
    client, app, keys = setup
    assert app.user_middleware[0].cls is IngestFastPath  # the outermost of the app's own layers
    calls = _solves(monkeypatch)
    r = client.post("/v1/traces", json=TRACE, headers={"Authorization": f"Bearer {keys['acme']}"})
    assert r.status_code == 201 and calls == []
    assert r.headers["location"] == f"/v1/traces/{r.json()['id']}"
    stored = client.get(r.headers["location"], headers={"Authorization": f"Bearer {keys['acme']}"}).json()
    assert stored["org_id"] == "acme" and stored["spans"][0]["attributes"]["latency_ms"] == 1.5
    r = client.post("/v1/traces?usr=u2", json=TRACE, headers={"Authorization": f"Bearer {keys['acme']}"})
    assert r.status_code == 422 and calls  # a query string goes to FastAPI's handler: unknown parameter


CASES: list[dict[str, Any]] = [
    {"body": TRACE},
    {"body": {**TRACE, "id": "t-fixed"}},                                   # then the same id again: 409
    {"body": {**TRACE, "id": "t-fixed"}},
    {"body": {**TRACE, "org": "globex"}},                                   # another org: 403
    {"body": {**TRACE, "user": "u" * 300}},                                 # too long: 422
    {"body": {**TRACE, "spans": "not a list"}},
    {"body": {**TRACE, "surprise": 1}},                                     # extra field: 422
    {"body": {**TRACE, "feedback": [{"score": 2.0}]}},
    {"body": {**TRACE, "feedback": [{}]}},                                  # empty feedback: 400 from the library
    {"body": b'{"name": "x", "input": NaN}'},                               # StrictJson: 422
    {"body": b'{"name": "x", "input": "\\ud800"}'},                         # lone surrogate: 422
    {"body": b'{"name": "x", '},                                            # not JSON: 400
    {"body": b""},
    {"body": [TRACE]},
    {"body": TRACE, "key": None},                                           # no key: 401
    {"body": TRACE, "key": "cr_wrong"},
    {"body": TRACE, "ctype": "text/plain"},
    {"body": TRACE, "ctype": "application/json; charset=utf-8"},
    {"body": TRACE, "query": "?agent=support"},                             # unknown query parameter: 422
    {"body": TRACE, "chunked": True},                                       # no Content-Length: the full stack
    {"body": {**TRACE, "input": "x" * (1 << 20)}},                          # over the body limit: 413
    {"body": TRACE, "extra": {"Content-Encoding": "gzip"}},                 # an encoded body: the full stack
    {"body": TRACE, "extra": {"Authorization": "Basic abc"}},               # not a bearer key: 401
    {"body": {**TRACE, "spans": [{"name": "s", "id": "dup"}, {"name": "s2", "id": "dup"}]}},  # same span id twice
    {"body": b'{"name": "x", "input": 1e999}'},                            # an overflowing float: 422
    {"body": b"[" * 300 + b"]" * 300},                                       # deep nesting: 422
    {"body": b"\xff\xfe{}"},                                                # not UTF-8: 400
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_fast_and_full_paths_answer_alike(setup, case: int) -> None:
    client, app, keys = setup
    spec = dict(CASES[case])
    spec["key"] = keys["acme"] if "key" not in spec else spec["key"]
    if case == 2:  # the duplicate: record it first on a path of its own, then both paths must refuse it
        _send(client, app, True, **dict(CASES[1], key=keys["acme"]))
    if case == 1:  # each path records its own fixed id
        lean = _send(client, app, True, **dict(spec, body={**TRACE, "id": "t-lean"}))
        full = _send(client, app, False, **dict(spec, body={**TRACE, "id": "t-full"}))
        assert lean[0] == full[0] == 201
        assert json.dumps(lean).replace("t-lean", "X") == json.dumps(full).replace("t-full", "X")
        return
    lean, full = _send(client, app, True, **spec), _send(client, app, False, **spec)
    assert lean == full
    if lean[0] >= 400:
        assert lean[2]["status"] == lean[0]  # a problem document, not a stray 500


def test_an_unexpected_failure_is_the_same_500_on_both_paths(sqlite_home: Home, monkeypatch) -> None:
    key = create_key(sqlite_home.path, "acme")[0]
    app = create_app(sqlite_home)
    with TestClient(app, raise_server_exceptions=False) as client:
        def broken(*_a: Any, **_k: Any) -> Any:
            raise RuntimeError("disk on fire: secret-path /var/x")

        monkeypatch.setattr(sqlite_home.store, "write_traces", broken)
        lean, full = (_send(client, app, fast, body=TRACE, key=key) for fast in (True, False))
        assert lean == full and lean[0] == 500 and "secret" not in json.dumps(lean[2])
        assert sqlite_home.store.count_traces() == 0


def test_a_client_that_leaves_before_its_body_gets_no_answer_and_nothing_is_written(sqlite_home: Home) -> None:
    import asyncio

    key = create_key(sqlite_home.path, "acme")[0]
    app = create_app(sqlite_home)
    body = json.dumps(TRACE).encode()
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": "POST", "path": "/v1/traces", "raw_path": b"/v1/traces", "query_string": b"",
             "root_path": "", "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5),
             "http_version": "1.1", "headers": [(b"content-type", b"application/json"),
                                                (b"content-length", str(len(body)).encode()),
                                                (b"authorization", f"Bearer {key}".encode())]}
    messages = iter([{"type": "http.request", "body": body[:10], "more_body": True}, {"type": "http.disconnect"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with TestClient(app):  # the lifespan (the app's state) is up
        asyncio.run(app(scope, receive, send))
    assert sent == [] and sqlite_home.store.count_traces() == 0
