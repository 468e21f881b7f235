"""Issue 15, part 3: ids are per org. Another org's trace, span or feedback id answers exactly like an
unknown one, a retry in the same org stays idempotent, and pre-recording an id squats nothing.

The attacks (org `evil`'s key against org `victim`): another org's trace id answered 409, a span or
feedback id 400 (an existence oracle), and evil pre-recording victim's next id made victim's
retry-safe POST a 409 (its run silently lost)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("fastapi", reason="the HTTP API needs the `serve` extra")

from fastapi.testclient import TestClient  # noqa: E402

from crystallise.api import create_key  # noqa: E402
from crystallise.api.auth import Principal  # noqa: E402
from crystallise.engine import access  # noqa: E402
from crystallise.engine.home import Home  # noqa: E402
from crystallise.server import create_app  # noqa: E402
from crystallise.types import Trace  # noqa: E402


@pytest.fixture
def home(sqlite_home: Home) -> Home:
    return sqlite_home


@pytest.fixture
def keys(home) -> dict[str, str]:
    return {org: create_key(home.path, org)[0] for org in ("victim", "evil", "*")}


@pytest.fixture
def client(home, keys) -> Iterator[TestClient]:
    with TestClient(create_app(home)) as c:
        yield c


def h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def run(trace_id: str, span: str = "sp-1", fb: str = "fb-1", output: str = "4") -> dict:
    return {"name": "run", "id": trace_id, "input": "2+2?", "output": output,
            "spans": [{"name": "step", "id": span}], "feedback": [{"score": 1, "id": fb}]}


def shape(r) -> tuple[int, str, list[str]]:
    body = r.json()
    return r.status_code, r.headers["content-type"], sorted(body)


def test_evil_pre_recording_victims_ids_squats_nothing(client, home, keys):
    squat = client.post("/v1/traces", json=run("run-42", output="poison"), headers=h(keys["evil"]))
    assert squat.status_code == 201 and squat.json()["id"] == "run-42"
    mine = client.post("/v1/traces", json=run("run-42"), headers=h(keys["victim"]))
    assert mine.status_code == 201 and mine.json()["id"] == "run-42"  # the victim's run is not lost
    assert mine.headers["location"] == "/v1/traces/run-42"
    got = client.get("/v1/traces/run-42", headers=h(keys["victim"])).json()
    assert got["output"] == "4" and got["id"] == "run-42"
    assert [s["id"] for s in got["spans"]] == ["sp-1"] and got["feedback"][0]["id"] == "fb-1"
    assert client.get("/v1/traces/run-42", headers=h(keys["evil"])).json()["output"] == "poison"
    retry = client.post("/v1/traces", json=run("run-42"), headers=h(keys["victim"]))
    assert retry.status_code == 409 and "retry" in retry.json()["detail"]  # idempotent within the org
    assert home.store.count_traces() == 2
    admin = {t["id"] for t in client.get("/v1/traces", headers=h(keys["*"])).json()["traces"]}
    assert admin == {"run-42@victim", "run-42@evil"}


def test_another_orgs_ids_answer_like_unknown_ones(client, home, keys):
    assert client.post("/v1/traces", json=run("v-1", span="v-span", fb="v-fb"),
                       headers=h(keys["victim"])).status_code == 201
    # an existing id of another org and an id nobody has: the same status, content type and body keys
    for path in ("/v1/traces/{}", "/v1/traces/{}/feedback"):
        def ask(tid: str, p: str = path):
            if p.endswith("feedback"):
                return client.post(p.format(tid), json={"score": 0}, headers=h(keys["evil"]))
            return client.get(p.format(tid), headers=h(keys["evil"]))
        theirs, nobodys = ask("v-1"), ask("never-was")
        assert shape(theirs) == shape(nobodys) and theirs.status_code == 404
        assert theirs.json()["detail"].replace("v-1", "X") == nobodys.json()["detail"].replace("never-was", "X")
    # re-using the victim's span and feedback ids in evil's own trace is no conflict at all
    r = client.post("/v1/traces", json=run("e-1", span="v-span", fb="v-fb"), headers=h(keys["evil"]))
    assert r.status_code == 201
    r = client.post("/v1/traces/e-1/feedback", json={"score": 0, "id": "v-fb"}, headers=h(keys["evil"]))
    assert r.status_code in (400, 409)  # evil's own feedback id, now used twice in evil's org
    r = client.post("/v1/traces", json={**run("v-1"), "spans": []}, headers=h(keys["evil"]))
    assert r.status_code == 201  # evil may use the victim's trace id: it is another trace
    undo = client.post("/v1/undo", json={"traces": ["v-9"], "dry_run": True}, headers=h(keys["evil"]))
    assert undo.status_code == 404


def test_rows_stored_before_ids_were_per_org_are_found_by_their_org_only(client, home, keys):
    home.store.write_trace(Trace(name="old", id="legacy-1", org_id="victim", input="q"))
    assert client.get("/v1/traces/legacy-1", headers=h(keys["victim"])).status_code == 200
    assert client.get("/v1/traces/legacy-1", headers=h(keys["evil"])).status_code == 404
    assert client.post("/v1/traces", json={"name": "x", "id": "legacy-1"},
                       headers=h(keys["victim"])).status_code == 409  # a retry of an old row
    assert client.post("/v1/traces", json={"name": "x", "id": "legacy-1"},
                       headers=h(keys["evil"])).status_code == 201  # not evil's: no oracle


def test_the_id_rule_is_a_plain_function():
    evil = Principal(org="evil")
    assert access.stored_id("evil", "a") == "a@evil" and access.shown_id(evil, "a@evil") == "a"
    assert access.shown_id(evil, "a@victim") == "a@victim" and access.stored_id(None, "a") == "a"
