"""The HTTP API (`crystallise.api`): every endpoint's happy path, and bad input -> a clear 4xx
with problem details and nothing written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi", reason="the HTTP API needs the `serve` extra")

from fastapi.testclient import TestClient  # noqa: E402

from crystallise.server import create_app  # noqa: E402
from crystallise.api import create_key  # noqa: E402
from crystallise.harness.spec import TaskSpec  # noqa: E402
from crystallise.engine.home import Home  # noqa: E402
from crystallise.engine.committer import Committer  # noqa: E402
from crystallise.types import ChangeSet, Delta, Item, Scope, Verdict  # noqa: E402

PROBLEM = "application/problem+json"


@pytest.fixture
def home(sqlite_home: Home) -> Home:
    return sqlite_home


@pytest.fixture
def keys(home) -> dict[str, str]:
    return {org: create_key(home.path, org)[0] for org in ("acme", "globex", "*")}


@pytest.fixture
def client(home, keys) -> Iterator[TestClient]:
    with TestClient(create_app(home, max_body_bytes=64 * 1024)) as c:
        yield c


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def problem(r: Any, status: int) -> dict[str, Any]:
    """Assert `r` is an RFC 9457 problem with `status`; return its body."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status and body["type"].startswith("urn:crystallise:problem:")
    assert body["title"] and body["detail"]
    return body


TRACE = {"name": "answer", "agent": "support", "user": "u1", "input": "2+2?", "output": "4",
         "spans": [{"name": "chat", "kind": "llm", "input": [{"role": "user", "content": "2+2?"}], "output": "4",
                    "attributes": {"model": "m", "prompt_tokens": 5}}],
         "feedback": [{"score": 1.0, "label": "good"}]}


# -- meta -------------------------------------------------------------------------------------------


def test_openapi_and_health_are_served(client):
    spec = client.get("/openapi.json").json()
    for path in ("/v1/traces", "/v1/traces/{trace_id}", "/v1/traces/{trace_id}/feedback", "/v1/items",
                 "/v1/context", "/v1/tasks", "/v1/tasks/{name}", "/v1/versions", "/v1/versions/{number}",
                 "/v1/versions/{a}/diff/{b}", "/v1/versions/{number}/revert"):
        assert path in spec["paths"], path
    assert client.get("/v1/health").json() == {"status": "ok", "version": spec["info"]["version"], "open": False}


def test_unknown_route_and_method_are_problems(client, keys):
    problem(client.get("/v2/nothing", headers=auth(keys["acme"])), 404)
    problem(client.delete("/v1/traces", headers=auth(keys["acme"])), 405)


# -- auth -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer cr_wrong"}, {"Authorization": "Basic abc"},
                                     {"Authorization": "Bearer "}])
def test_missing_or_wrong_key_is_401_and_writes_nothing(client, home, headers):
    r = client.post("/v1/traces", json=TRACE, headers=headers)
    assert "Bearer" in problem(r, 401)["detail"] or "key" in r.json()["detail"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    problem(client.get("/v1/traces", headers=headers), 401)
    assert home.store.count_traces() == 0


def test_open_server_without_keys_acts_as_admin_for_local_clients_only(home):
    with TestClient(create_app(home), client=("127.0.0.1", 5000)) as c:
        assert c.get("/v1/health").json()["open"] is True
        assert c.post("/v1/traces", json={**TRACE, "org": "acme"}).status_code == 201
        assert c.get("/v1/traces").json()["traces"][0]["org_id"] == "acme"
    with TestClient(create_app(home), client=("203.0.113.9", 5000)) as c:
        assert "create a key" in problem(c.post("/v1/traces", json=TRACE), 401)["detail"]
    assert home.store.count_traces() == 1


@pytest.mark.parametrize("org", ["", "has space", "../etc", "a/b", "x" * 201])
def test_bad_org_names_for_keys_are_refused(home, org):
    from crystallise.errors import ValidationError

    with pytest.raises(ValidationError, match="org"):
        create_key(home.path, org)


def test_keys_made_while_serving_work_at_once(home):
    with TestClient(create_app(home), client=("127.0.0.1", 5000)) as c:
        key, _ = create_key(home.path, "acme")
        problem(c.get("/v1/traces"), 401)
        assert c.get("/v1/traces", headers=auth(key)).status_code == 200


# -- traces -----------------------------------------------------------------------------------------


def test_post_trace_is_durable_and_scoped_to_the_keys_org(client, home, keys):
    r = client.post("/v1/traces", json=TRACE, headers=auth(keys["acme"]))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["seq"] == 1 and r.headers["location"] == f"/v1/traces/{body['id']}"
    stored = home.store.get_trace(body["id"])
    assert (stored.org_id, stored.agent_id, stored.user_id, stored.output) == ("acme", "support", "u1", "4")
    assert stored.spans[0].kind == "llm" and stored.spans[0].attributes["prompt_tokens"] == 5
    assert stored.feedback[0].score == 1.0
    got = client.get(f"/v1/traces/{body['id']}", headers=auth(keys["acme"])).json()
    assert got["id"] == body["id"] and got["spans"][0]["name"] == "chat" and got["feedback"][0]["label"] == "good"


def test_writing_into_another_org_is_refused(client, home, keys):
    problem(client.post("/v1/traces", json={**TRACE, "org": "globex"}, headers=auth(keys["acme"])), 403)
    assert home.store.count_traces() == 0
    r = client.post("/v1/traces", json={**TRACE, "org": "globex"}, headers=auth(keys["*"]))
    assert r.status_code == 201 and home.store.get_trace(r.json()["id"]).org_id == "globex"


def test_another_orgs_trace_is_404_like_a_missing_one(client, home, keys):
    tid = client.post("/v1/traces", json=TRACE, headers=auth(keys["acme"])).json()["id"]
    hidden = problem(client.get(f"/v1/traces/{tid}", headers=auth(keys["globex"])), 404)
    missing = problem(client.get("/v1/traces/tr_missing", headers=auth(keys["globex"])), 404)
    assert hidden["detail"].replace(tid, "X") == missing["detail"].replace("tr_missing", "X")
    problem(client.post(f"/v1/traces/{tid}/feedback", json={"score": 0}, headers=auth(keys["globex"])), 404)
    assert len(home.store.get_trace(tid).feedback) == 1
    assert client.get(f"/v1/traces/{tid}", headers=auth(keys["*"])).status_code == 200


@pytest.mark.parametrize("body,status", [
    ({"name": "x", "usr": "u1"}, 422),  # unknown scope field
    ({"name": "x", "agent": ""}, 422),
    ({"name": "x", "user": "u" * 201}, 422),
    ({"name": "x", "status": "maybe"}, 422),
    ({"name": "x", "spans": [{"name": "s", "kind": "bogus"}]}, 422),
    ({"name": "x", "spans": [{"kind": "llm"}]}, 422),
    ({"name": "x", "feedback": [{"score": 2}]}, 422),
    ({"name": "x", "feedback": [{}]}, 400),
    ({"name": "x", "started_at": -5}, 422),
    ({"name": "x", "id": "bad id with spaces"}, 422),
    ([1, 2], 422),
])
def test_bad_trace_bodies_are_4xx_and_write_nothing(client, home, keys, body, status):
    problem(client.post("/v1/traces", json=body, headers=auth(keys["acme"])), status)
    assert home.store.count_traces() == 0


def test_validation_problem_lists_the_errors(client, keys):
    body = problem(client.post("/v1/traces", json={"usr": 1, "status": 3}, headers=auth(keys["acme"])), 422)
    locs = {e["loc"] for e in body["errors"]}
    assert {"usr", "status"} <= locs and "usr" in body["detail"]


@pytest.mark.parametrize("content,ctype", [(b"{not json", "application/json"), (b"\xff\xfe", "application/json"),
                                           (b"name=x", "text/plain"), (b"", "application/json")])
def test_malformed_bodies_are_4xx(client, home, keys, content, ctype):
    r = client.post("/v1/traces", content=content, headers={**auth(keys["acme"]), "content-type": ctype})
    assert r.status_code in (400, 422) and r.headers["content-type"].startswith(PROBLEM), r.text
    assert home.store.count_traces() == 0


def test_duplicate_trace_id_is_409_and_keeps_the_first(client, home, keys):
    first = client.post("/v1/traces", json={**TRACE, "id": "tr_fixed"}, headers=auth(keys["acme"]))
    assert first.status_code == 201
    assert "retry" in problem(client.post("/v1/traces", json={**TRACE, "id": "tr_fixed", "output": "5"},
                                          headers=auth(keys["acme"])), 409)["detail"]
    assert home.store.get_trace("tr_fixed@acme").output == "4" and home.store.count_traces() == 1  # ids are per org


def test_oversized_body_is_413_before_anything_is_written(client, home, keys):
    big = {**TRACE, "input": "x" * 70_000}
    assert "limit" in problem(client.post("/v1/traces", json=big, headers=auth(keys["acme"])), 413)["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        data = json.dumps(big).encode()
        for i in range(0, len(data), 8192):
            yield data[i:i + 8192]

    problem(client.post("/v1/traces", content=chunks(), headers={**auth(keys["acme"]),
                                                                  "content-type": "application/json"}), 413)
    assert home.store.count_traces() == 0


def test_feedback_is_attached(client, home, keys):
    tid = client.post("/v1/traces", json=TRACE, headers=auth(keys["acme"])).json()["id"]
    r = client.post(f"/v1/traces/{tid}/feedback", json={"score": 0.0, "correction": "5"}, headers=auth(keys["acme"]))
    assert r.status_code == 201 and r.json()["trace_id"] == tid
    assert home.store.get_trace(tid).outcome == 0.0
    for bad, status in (({"score": 1.5}, 422), ({}, 400), ({"scor": 1}, 422)):
        problem(client.post(f"/v1/traces/{tid}/feedback", json=bad, headers=auth(keys["acme"])), status)
    problem(client.post("/v1/traces/tr_nope/feedback", json={"score": 1}, headers=auth(keys["acme"])), 404)
    assert len(home.store.get_trace(tid).feedback) == 2


def test_list_traces_pages_with_a_seq_cursor_and_filters(client, keys):
    for i in range(5):
        client.post("/v1/traces", json={**TRACE, "name": f"n{i % 2}", "user": f"u{i}"}, headers=auth(keys["acme"]))
    client.post("/v1/traces", json={**TRACE, "agent": "other"}, headers=auth(keys["globex"]))
    seen, cursor = [], 0
    while True:
        page = client.get("/v1/traces", params={"limit": 2, "after_seq": cursor}, headers=auth(keys["acme"])).json()
        seen += [t["user_id"] for t in page["traces"]]
        cursor = page["next_after_seq"]
        if not page["has_more"]:
            break
    assert seen == ["u0", "u1", "u2", "u3", "u4"]  # never globex's trace
    get = lambda key, **p: client.get("/v1/traces", params=p, headers=auth(keys[key])).json()["traces"]  # noqa: E731
    assert [t["user_id"] for t in get("acme", name="n1")] == ["u1", "u3"]
    assert [t["user_id"] for t in get("acme", user="u2")] == ["u2"]
    assert get("acme", agent="other") == []
    assert len(get("*")) == 6 and [t["agent_id"] for t in get("*", org="globex")] == ["other"]
    assert get("acme", spans=True, limit=1)[0]["spans"][0]["name"] == "chat"
    assert get("acme", limit=1)[0]["spans"] == []
    problem(client.get("/v1/traces", params={"org": "globex"}, headers=auth(keys["acme"])), 403)


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 5000}, {"limit": "ten"}, {"after_seq": -1},
                                    {"after_seq": "x"}, {"usr": "u1"}, {"agent": ""}])
def test_bad_pagination_and_unknown_filters_are_422(client, keys, params):
    problem(client.get("/v1/traces", params=params, headers=auth(keys["acme"])), 422)


# -- items and context ---------------------------------------------------------------------------------


def seed_items(home: Home) -> list[Item]:
    items = [
        Item(text="Always answer with two decimals", level="agent", agent_id="fin"),
        Item(text="Acme rule: cite the formula", level="org", agent_id="fin", org_id="acme"),
        Item(text="Globex rule: answer in French", level="org", agent_id="fin", org_id="globex"),
        Item(text="User u1 prefers euros", kind="memory", level="user", agent_id="fin", org_id="acme", user_id="u1"),
        Item(text="User u2 secret preference", kind="memory", level="user", agent_id="fin", org_id="acme",
             user_id="u2"),
        Item(text="Globex u1 secret", kind="memory", level="user", agent_id="fin", org_id="globex", user_id="u1"),
        Item(text="Quarantined instruction", level="agent", agent_id="fin", status="quarantined"),
    ]
    home.store.apply_item_deltas([Delta(op="add", target="item", item_id=i.id, after=i.to_dict()) for i in items])
    return items


def test_items_respect_org_and_user_scope(client, home, keys):
    seed_items(home)
    texts = lambda key, **p: sorted(  # noqa: E731
        i["text"] for i in client.get("/v1/items", params=p, headers=auth(keys[key])).json()["items"])
    assert texts("acme", agent="fin") == ["Acme rule: cite the formula", "Always answer with two decimals"]
    assert texts("acme", agent="fin", user="u1") == ["Acme rule: cite the formula",
                                                      "Always answer with two decimals", "User u1 prefers euros"]
    assert texts("globex", agent="fin", user="u1") == ["Always answer with two decimals", "Globex rule: answer in "
                                                       "French", "Globex u1 secret"]
    assert texts("acme", agent="fin", status="quarantined") == ["Quarantined instruction"]
    assert len(texts("acme", agent="fin", status="all", user="u2")) == 4
    assert texts("acme", agent="fin", level="org") == ["Acme rule: cite the formula"]
    assert texts("acme", agent="fin", text="euros", user="u1") == ["User u1 prefers euros"]
    problem(client.get("/v1/items", params={"org": "globex"}, headers=auth(keys["acme"])), 403)


@pytest.mark.parametrize("params", [{"level": "team"}, {"status": "live"}, {"team": "x"}, {"limit": 0},
                                    {"kind": "fact"}])
def test_bad_item_queries_are_422(client, keys, params):
    problem(client.get("/v1/items", params=params, headers=auth(keys["acme"])), 422)


def test_context_pack_is_assembled_and_its_span_credits_items(client, home, keys):
    seed_items(home)
    r = client.post("/v1/context", json={"agent": "fin", "user": "u1", "query": "euros", "budget_tokens": 200},
                    headers=auth(keys["acme"]))
    assert r.status_code == 200, r.text
    pack = r.json()
    assert "User u1 prefers euros" in pack["text"] and "u2 secret" not in pack["text"]
    assert "Globex" not in pack["text"] and pack["span"]["attributes"]["shown_items"] == pack["item_ids"]
    assert all(home.store.get_item(i).shown == 1 for i in pack["item_ids"])
    trace = {**TRACE, "agent": "fin", "spans": [pack["span"]]}
    tid = client.post("/v1/traces", json=trace, headers=auth(keys["acme"])).json()["id"]
    assert home.store.get_trace(tid).spans[0].attributes["shown_items"] == pack["item_ids"]


@pytest.mark.parametrize("body,status", [({"budget_tokens": 0}, 422), ({"team": "x"}, 422),
                                         ({"org": "globex"}, 403), ({"kind": "fact"}, 422), ("query", 422)])
def test_bad_context_requests_are_4xx(client, keys, body, status):
    problem(client.post("/v1/context", json=body, headers=auth(keys["acme"])), status)


# -- tasks and versions --------------------------------------------------------------------------------


def test_tasks_list_and_show(client, home, keys):
    spec = TaskSpec(name="add", description="add two numbers", grade="G3")
    home.repo.commit({"tasks/add/spec.json": spec.to_json(), "tasks/add/evals.jsonl": '{"input": 1}\n',
                      "tasks/add/program.json": '{"how": "synth"}'}, "Add task")
    tasks = client.get("/v1/tasks", headers=auth(keys["acme"])).json()["tasks"]
    assert tasks == [{"name": "add", "org": None, "grade": "G3", "description": "add two numbers", "examples": 0,
                      "eval_cases": 1, "code": False}]
    got = client.get("/v1/tasks/add", headers=auth(keys["acme"])).json()
    assert got["spec"]["grade"] == "G3" and got["program"] == {"how": "synth"}
    assert got["files"] == ["tasks/add/evals.jsonl", "tasks/add/program.json", "tasks/add/spec.json"]
    problem(client.get("/v1/tasks/nope", headers=auth(keys["acme"])), 404)
    problem(client.get("/v1/tasks/Bad%20Name", headers=auth(keys["acme"])), 400)


def test_an_org_key_sees_its_own_task_namespace_and_the_shared_tasks_never_another_orgs(client, home, keys):
    """Issue 15: /ui/tasks/{name} and GET /v1/tasks showed any key other orgs' examples and eval cases."""
    spec = TaskSpec(name="add", description="add two numbers", grade="G1")
    home.repo.commit({"tasks/add/spec.json": spec.to_json(),
                      "orgs/globex/tasks/add/spec.json": '{"grade": "G4"}\n',
                      "orgs/globex/tasks/add/code.py": "def solve(a):\n    return 'GLOBEX-SECRET'\n",
                      "orgs/globex/tasks/add/evals.jsonl": '{"id": "g1", "input": "globex input", "expected": "7"}\n',
                      "orgs/acme/tasks/add/examples.jsonl": '{"input": "acme input", "output": "3"}\n'}, "org tasks")
    acme = client.get("/v1/tasks", headers=auth(keys["acme"])).json()["tasks"]
    assert [(t["name"], t["org"], t["grade"]) for t in acme] == [("add", None, "G1"), ("add", "acme", "G1")]
    mine = client.get("/v1/tasks/add", headers=auth(keys["acme"])).json()
    assert mine["org"] == "acme" and all(not f.startswith("orgs/globex") for f in mine["files"])
    problem(client.get("/v1/tasks/add?org=globex", headers=auth(keys["acme"])), 404)
    assert client.get("/v1/tasks/add?org=globex", headers=auth(keys["*"])).json()["code"] is True
    admin = client.get("/v1/tasks", headers=auth(keys["*"])).json()["tasks"]
    assert {(t["org"], t["grade"]) for t in admin} == {(None, "G1"), ("acme", "G1"), ("globex", "G4")}
    ui = client
    ui.post("/ui/login", data={"key": keys["acme"]})
    for url in ("/ui/tasks/add", "/ui/tasks/add?org=globex", "/ui/tasks", "/ui/"):
        page = ui.get(url)
        assert "GLOBEX-SECRET" not in page.text and "globex input" not in page.text, url
    assert "acme input" in ui.get("/ui/tasks/add").text


def commit_item(home: Home, text: str, level: str, org: str | None = None, user: str | None = None,
                scope_org: str | None = "same") -> int:
    item = Item(text=text, level=level, agent_id="fin", org_id=org, user_id=user)  # type: ignore[arg-type]
    scope = Scope(agent="fin", org=org if scope_org == "same" else scope_org)
    cs = ChangeSet(learner="test", layer="context", summary=f"add {text}", scope=scope,
                   deltas=[Delta(op="add", target="item", item_id=item.id, after=item.to_dict())],
                   provenance=["tr_a"], verdict=Verdict(decision="accept", reason="2 wins, 0 losses"))
    return Committer(home).commit(cs).number


def test_versions_show_diff_and_revert(client, home, keys):
    v1 = commit_item(home, "Acme rule one", "org", "acme")
    v2 = commit_item(home, "Acme rule two", "org", "acme")
    a = auth(keys["acme"])
    versions = client.get("/v1/versions", headers=a).json()
    assert [v["number"] for v in versions["versions"]] == [v2, v1] and versions["next_before"] is None
    page = client.get("/v1/versions", params={"limit": 1}, headers=a).json()
    assert [v["number"] for v in page["versions"]] == [v2] and page["next_before"] == v2
    older = client.get("/v1/versions", params={"limit": 1, "before": page["next_before"]}, headers=a).json()
    assert [v["number"] for v in older["versions"]] == [v1]
    shown = client.get(f"/v1/versions/{v1}", headers=a).json()
    assert shown["version"]["provenance"] == ["tr_a"] and shown["changeset"]["verdict"]["decision"] == "accept"
    assert "Acme rule one" in shown["patch"]
    diff = client.get(f"/v1/versions/{v1}/diff/{v2}", headers=a).json()
    assert "+- Acme rule two" in diff["patch"] and "Acme rule one" in diff["patch"]
    r = client.post(f"/v1/versions/{v2}/revert", json={"reason": "wrong"}, headers=a)
    assert r.status_code == 201 and r.json()["reverts"] == v2
    assert home.store.get_version(v2).reverted_by == r.json()["number"]
    assert "Acme rule two" not in (home.repo.read("context/org/acme/playbook.md") or "")
    assert "already reverted" in problem(client.post(f"/v1/versions/{v2}/revert", headers=a), 400)["detail"]


def test_versions_of_other_orgs_are_hidden_and_shared_ones_need_admin_to_revert(client, home, keys):
    mine = commit_item(home, "Acme secret rule", "org", "acme")
    shared = commit_item(home, "Shared agent rule", "agent")
    # user-level changes go to the store's user ledger, not to versions (context layer, m002)
    assert commit_item(home, "Acme user memory, unscoped change set", "user", "acme", user="u1", scope_org=None) == 0
    assert commit_item(home, "Memory of a user in no org", "user", None, user="u7") == 0
    g = auth(keys["globex"])
    assert [v["number"] for v in client.get("/v1/versions", headers=g).json()["versions"]] == [shared]
    assert len(client.get("/v1/versions", headers=auth(keys["acme"])).json()["versions"]) == 2
    problem(client.get(f"/v1/versions/{mine}", headers=g), 404)
    problem(client.post(f"/v1/versions/{mine}/revert", headers=g), 404)
    problem(client.get(f"/v1/versions/{mine}/diff/{shared}", headers=g), 404)
    assert "admin" in problem(client.post(f"/v1/versions/{shared}/revert", headers=g), 403)["detail"]
    assert home.store.get_version(shared).reverted_by is None
    assert client.post(f"/v1/versions/{shared}/revert", headers=auth(keys["*"])).status_code == 201


@pytest.mark.parametrize("path", ["/v1/versions/0", "/v1/versions/abc", "/v1/versions/1/diff/x",
                                  "/v1/versions?limit=0", "/v1/versions?before=0"])
def test_bad_version_numbers_are_422(client, keys, path):
    problem(client.get(path, headers=auth(keys["acme"])), 422)


def test_missing_version_is_404_and_bad_revert_body_is_422(client, keys):
    problem(client.get("/v1/versions/99", headers=auth(keys["acme"])), 404)
    problem(client.post("/v1/versions/99/revert", json={"reasn": "x"}, headers=auth(keys["*"])), 422)
    problem(client.post("/v1/versions/99/revert", headers=auth(keys["*"])), 404)


def test_traces_items_and_otlp_on_each_store(tmp_path, store_url):
    """The same requests against SQLite and a real PostgreSQL."""
    home = Home.init(tmp_path / "pg-home", store_url=store_url)
    try:
        seed_items(home)
        key, other = create_key(home.path, "acme")[0], create_key(home.path, "globex")[0]
        with TestClient(create_app(home)) as c:
            tid = c.post("/v1/traces", json=TRACE, headers=auth(key)).json()["id"]
            assert c.get(f"/v1/traces/{tid}", headers=auth(key)).json()["spans"][0]["attributes"]["model"] == "m"
            problem(c.get(f"/v1/traces/{tid}", headers=auth(other)), 404)
            items = c.get("/v1/items", params={"agent": "fin", "text": "euros", "user": "u1"}, headers=auth(key))
            assert [i["text"] for i in items.json()["items"]] == ["User u1 prefers euros"]
            span = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "chat",
                    "startTimeUnixNano": "1700000000000000000",
                    "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}}]}
            r = c.post("/otlp/v1/traces", json={"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]},
                       headers=auth(key))
            assert r.status_code == 200 and r.json() == {}
            got = home.store.get_trace("otel_" + "ab" * 16 + "@acme")  # ids are per org
            assert got.org_id == "acme" and got.spans[0].kind == "llm"
    finally:
        home.close()


# -- never a 500 ---------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
TRACE_LIKE = st.fixed_dictionaries({}, optional={
    "name": JSON, "agent": JSON, "org": JSON, "user": JSON, "status": JSON, "id": JSON, "started_at": JSON,
    "spans": st.lists(st.dictionaries(st.sampled_from(["name", "kind", "id", "parent_id", "attributes",
                                                       "started_at", "trace_id"]), JSON), max_size=2),
    "feedback": st.lists(st.dictionaries(st.sampled_from(["score", "label", "kind", "source", "id"]), JSON),
                         max_size=2),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(JSON, TRACE_LIKE))
def test_arbitrary_json_is_never_a_500_and_never_a_partial_write(client, home, keys, body):
    before = home.store.count_traces()
    headers = {**auth(keys["acme"]), "content-type": "application/json"}
    content = json.dumps(body)  # NaN and Infinity included, as a sloppy client would send them
    r = client.post("/v1/traces", content=content, headers=headers)
    assert r.status_code in (201, 400, 403, 409, 422), r.text
    assert home.store.count_traces() == before + (r.status_code == 201)
    r = client.post("/v1/context", content=content, headers=headers)
    assert r.status_code in (200, 400, 403, 422), r.text


# -- the command --------------------------------------------------------------------------------------


def cli() -> Any:
    from crystallise.cli import main, serve

    if "serve" not in main.commands:  # until cli/__init__.py registers it
        serve.register(main)
    return main


def test_serve_creates_keys_and_refuses_an_open_public_bind(home):
    runner = CliRunner()
    r = runner.invoke(cli(), ["--home", str(home.path), "serve", "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "--create-key" in r.output
    r = runner.invoke(cli(), ["--home", str(home.path), "serve", "--create-key", "acme"])
    key = r.output.strip().splitlines()[-1]
    assert r.exit_code == 0 and key.startswith("cr_")
    assert key not in (home.path / "api_keys.json").read_text()
    listed = runner.invoke(cli(), ["--home", str(home.path), "serve", "--list-keys"]).output
    key_id = listed.split()[0]
    assert "acme" in listed and key_id.startswith("key_")
    assert runner.invoke(cli(), ["--home", str(home.path), "serve", "--revoke-key", key_id]).exit_code == 0
    assert runner.invoke(cli(), ["--home", str(home.path), "serve", "--revoke-key", key_id]).exit_code == 2
