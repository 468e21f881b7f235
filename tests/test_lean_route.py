"""`POST /v1/traces` is served by `LeanJsonRoute` (api/lean_route.py): plainly valid requests skip
FastAPI's dependency solving, everything else is FastAPI's own handler. The two must answer alike:
every request here is sent once down each path and the answers compared (status, headers, body),
hostile and wrong ones included."""

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
from crystallise.api import routes_traces  # noqa: E402
from crystallise.api.lean_route import LeanJsonRoute  # noqa: E402
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
    """Count FastAPI's dependency solving (what the lean path skips)."""
    calls: list[int] = []
    real = fastapi.routing.solve_dependencies

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await real(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    return calls


def _send(client: TestClient, app: Any, lean: bool, *, body: Any, key: str | None, ctype: str = "application/json",
          query: str = "") -> tuple[int, list[tuple[str, str]], Any]:
    # any dependency override sends every request to FastAPI's handler (the lean path stands aside for tests)
    app.dependency_overrides = {} if lean else {_unused: _unused}
    headers = {"Content-Type": ctype} | ({"Authorization": f"Bearer {key}"} if key else {})
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post("/v1/traces" + query, content=content, headers=headers)
    app.dependency_overrides = {}
    text = re.sub(rb"tr_[0-9a-f]{16}", b"tr_ID", r.content)  # generated ids differ between the two sends
    heads = [(k, re.sub(r"tr_[0-9a-f]{16}", "tr_ID", v)) for k, v in r.headers.multi_items() if k != "content-length"]
    doc = json.loads(text) if text else None
    if isinstance(doc, dict) and isinstance(doc.get("seq"), int) and doc["seq"] > 0:
        doc["seq"] = "SEQ"  # one more trace each send
    return r.status_code, heads, doc


def _unused() -> None:
    return None


def test_the_route_is_lean_and_a_valid_post_skips_dependency_solving(setup, monkeypatch) -> None:
    client, app, keys = setup
    route = next(r for r in routes_traces.router.routes if r.path == "/v1/traces" and "POST" in r.methods)
    assert isinstance(route, LeanJsonRoute)
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
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_lean_and_fastapi_paths_answer_alike(setup, case: int) -> None:
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
