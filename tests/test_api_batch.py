"""`POST /v1/traces/batch`: many traces in one request, each all or nothing, on SQLite and PostgreSQL.
The key decides every trace's org and user exactly as for one trace; what one trace may not do fails
that trace alone (409, 403, 400), a malformed batch stores nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the HTTP API needs the `serve` extra")

from fastapi.testclient import TestClient  # noqa: E402

from crystallise.api import create_key  # noqa: E402
from crystallise.engine.home import Home  # noqa: E402
from crystallise.server import create_app  # noqa: E402


def run(i: int, **kw: Any) -> dict[str, Any]:
    return {"name": "answer", "agent": "support", "input": f"q{i}", "output": f"a{i}",
            "spans": [{"name": "chat", "kind": "llm", "output": f"a{i}"}],
            "feedback": [{"score": 1.0}], **kw}


@pytest.fixture
def api(home: Home) -> Iterator[tuple[TestClient, dict[str, dict[str, str]], Home]]:
    keys = {"acme": create_key(home.path, "acme")[0], "globex": create_key(home.path, "globex")[0],
            "acme-u1": create_key(home.path, "acme", user="u1")[0]}
    with TestClient(create_app(home)) as client:
        yield client, {k: {"Authorization": f"Bearer {v}"} for k, v in keys.items()}, home


def test_a_batch_is_written_in_order_and_each_trace_is_readable(api) -> None:
    client, auth, home = api
    r = client.post("/v1/traces/batch", json={"traces": [run(i) for i in range(25)]}, headers=auth["acme"])
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["written"] == 25 and doc["failed"] == 0 and all(o["status"] == 201 for o in doc["results"])
    seqs = [o["seq"] for o in doc["results"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 25
    one = client.get(f"/v1/traces/{doc['results'][3]['id']}", headers=auth["acme"]).json()
    assert one["input"] == "q3" and one["org_id"] == "acme" and one["spans"][0]["output"] == "a3"
    assert client.get(f"/v1/traces/{doc['results'][3]['id']}", headers=auth["globex"]).status_code == 404
    assert home.store.count_traces() == 25


def test_each_trace_fails_alone_with_the_status_its_own_request_would_get(api) -> None:
    client, auth, home = api
    assert client.post("/v1/traces", json=run(0, id="t-old"), headers=auth["acme"]).status_code == 201
    batch = [run(1), run(2, id="t-old"), run(3, org="globex"), run(4, id="t-new"), run(5, id="t-new"),
             run(6, name="bad\x00name"), run(7)]
    r = client.post("/v1/traces/batch", json={"traces": batch}, headers=auth["acme"])
    assert r.status_code == 207, r.text
    statuses = [o["status"] for o in r.json()["results"]]
    assert statuses == [201, 409, 403, 201, 409, 400, 201], r.json()
    assert r.json()["written"] == 3 and r.json()["failed"] == 4
    assert home.store.count_traces() == 4  # the earlier one + three; nothing of the refused ones
    assert not [t for t in home.store.list_traces(limit=100) if t.org_id != "acme"]


def test_a_user_bound_key_writes_only_as_its_user(api) -> None:
    client, auth, home = api
    r = client.post("/v1/traces/batch", json={"traces": [run(1), run(2, user="u2"), run(3, user="u1")]},
                    headers=auth["acme-u1"])
    assert [o["status"] for o in r.json()["results"]] == [201, 403, 201]
    assert {t.user_id for t in home.store.list_traces(limit=10)} == {"u1"}


@pytest.mark.parametrize("body, status", [
    ({"traces": []}, 422),
    ({"traces": [run(0), {"name": "x", "spans": "not a list"}]}, 422),
    ({"traces": [run(0)], "extra": 1}, 422),
    ({"traces": [run(i) for i in range(1001)]}, 422),
    ({"traces": [run(0, input=float("nan"))]}, 422),
])
def test_a_malformed_batch_stores_nothing(api, body, status) -> None:
    client, auth, home = api
    import json

    r = client.post("/v1/traces/batch", content=json.dumps(body, allow_nan=True), headers=auth["acme"] |
                    {"Content-Type": "application/json"})
    assert r.status_code in (status, 413) and r.json()["status"] == r.status_code
    assert home.store.count_traces() == 0


def test_no_key_no_batch(api) -> None:
    client, _, home = api
    assert client.post("/v1/traces/batch", json={"traces": [run(0)]}).status_code == 401
    assert client.post("/v1/traces/batch", json={"traces": [run(0)]},
                       headers={"Authorization": "Bearer cr_wrong"}).status_code == 401
    assert home.store.count_traces() == 0
