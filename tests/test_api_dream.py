"""Dreaming over HTTP (`POST /v1/dream`, `GET /v1/dreams`): the happy path and key scoping.

The home's model is the scripted double answering one fixed critique, so a dream over a
scope with a failed run adds one lesson.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the HTTP API needs the `serve` extra")

from fastapi.testclient import TestClient  # noqa: E402

from crystallise.server import create_app  # noqa: E402
from crystallise.api import create_key  # noqa: E402
from crystallise.engine.home import Home  # noqa: E402
from crystallise.types import Feedback, Span, Trace  # noqa: E402

LESSON = "Convert percentages to decimals before multiplying"
CRITIQUE = {"critique": "the percentage was used as a whole number",
            "deltas": [{"op": "add", "text": LESSON, "section": "pitfalls"}]}


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    h = Home.init(tmp_path / "home")
    h.config["model"] = "scripted:" + json.dumps(CRITIQUE)
    h.save_config()
    h.close()
    h = Home.open(tmp_path / "home")
    yield h
    h.close()


@pytest.fixture
def keys(home: Home) -> dict[str, str]:
    found = {org: create_key(home.path, org)[0] for org in ("acme", "globex", "*")}
    found["acme-u1"] = create_key(home.path, "acme", user="u1")[0]
    return found


@pytest.fixture
def client(home: Home, keys: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(home)) as c:
        yield c


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def failed_run(home: Home, org: str | None, user: str | None = None) -> Trace:
    t = Trace(name="q", agent_id="fin", org_id=org, user_id=user, input="What is 5% of 200?", output="1000",
              spans=[Span("context", "retrieval", attributes={"shown_items": []})],
              feedback=[Feedback(trace_id="", score=0.0, correction="10")])
    return home.store.write_trace(t)


def lessons(home: Home, org: str | None, user: str | None = None) -> list[str]:
    level = "user" if user else "org" if org else "agent"
    return [i.text for i in home.store.query_items(agent="fin", org=org, user=user, levels=(level,))]


def test_an_org_key_dreams_over_its_org_and_sees_only_its_runs(client, home, keys) -> None:
    failed_run(home, "acme")
    failed_run(home, "globex")
    dry = client.post("/v1/dream", json={"agent": "fin", "dry_run": True}, headers=auth(keys["acme"]))
    assert dry.status_code == 200, dry.text
    assert dry.json()["dry_run"] and dry.json()["totals"]["add"] == 1 and lessons(home, "acme") == []
    r = client.post("/v1/dream", json={"agent": "fin"}, headers=auth(keys["acme"]))
    assert r.status_code == 200, r.text
    (scope,) = r.json()["scopes"]
    assert scope["scope"]["org"] == "acme" and scope["status"] == "committed" and scope["version"]
    assert lessons(home, "acme") == [LESSON] and lessons(home, "globex") == []
    again = client.post("/v1/dream", json={"agent": "fin"}, headers=auth(keys["acme"])).json()
    assert again["totals"] == dict.fromkeys(("add", "update", "merge", "supersede", "retire"), 0)  # idempotent
    runs: list[dict[str, Any]] = client.get("/v1/dreams", headers=auth(keys["acme"])).json()["items"]
    assert runs and {r["org_id"] for r in runs} == {"acme"}
    assert client.get("/v1/dreams", headers=auth(keys["globex"])).json()["items"] == []
    assert client.get("/v1/dreams?agent=fin", headers=auth(keys["*"])).json()["items"]


def test_dream_scoping_and_bad_input_are_clear_4xx(client, home, keys) -> None:
    failed_run(home, "acme", "u1")
    r = client.post("/v1/dream", json={"agent": "fin", "org": "globex"}, headers=auth(keys["acme"]))
    assert r.status_code == 403 and "cannot write to org 'globex'" in r.json()["detail"]
    r = client.post("/v1/dream", json={"agent": "fin", "user": "u2"}, headers=auth(keys["acme-u1"]))
    assert r.status_code == 403
    r = client.post("/v1/dream", json={"agent": "fin"}, headers=auth(keys["acme-u1"]))  # the key's own user
    assert r.status_code == 200, r.text
    assert r.json()["scopes"][0]["scope"]["user"] == "u1" and lessons(home, "acme", "u1") == [LESSON]
    assert client.post("/v1/dream", json={"agent": "fin", "nope": 1}, headers=auth(keys["acme"])).status_code == 422
    bad_since = client.post("/v1/dream", json={"agent": "fin", "since": "soon"}, headers=auth(keys["acme"]))
    assert bad_since.status_code == 400 and "since" in bad_since.json()["detail"]
    bad_status = client.get("/v1/dreams?status=odd", headers=auth(keys["acme"]))
    assert bad_status.status_code == 400 and "unknown dream-run status" in bad_status.json()["detail"]
    assert client.post("/v1/dream", json={"agent": "fin"}).status_code == 401
    agent_level = client.post("/v1/dream", json={"agent": "fin"}, headers=auth(keys["*"]))
    assert agent_level.status_code == 200, agent_level.text
    mine = client.get("/v1/dreams", headers=auth(keys["acme-u1"])).json()["items"]
    assert mine and {(r["org_id"], r["user_id"]) for r in mine} == {("acme", "u1")}  # a user-bound key: its own
