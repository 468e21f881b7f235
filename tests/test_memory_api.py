"""The Mem0-shaped memory API (engine/memory_api.py), sync and async, and over REST (/v1/memories)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from crystallise.engine.home import Home
from crystallise.engine.memory import revert_change
from crystallise.engine.memory_api import AsyncMemory, Memory
from crystallise.errors import NotFoundError, ValidationError


class Both:
    """Calls a Memory method directly, or the AsyncMemory one through asyncio.run: each test runs twice."""

    def __init__(self, home: Home, mode: str) -> None:
        self.mode, self.sync, self.aio = mode, Memory(home), AsyncMemory(home)

    def __getattr__(self, name: str) -> Any:
        if self.mode == "sync":
            return getattr(self.sync, name)
        return lambda *a, **k: asyncio.run(getattr(self.aio, name)(*a, **k))


@pytest.fixture(params=["sync", "async"])
def m(request: pytest.FixtureRequest, home: Home) -> Both:
    return Both(home, request.param)


def test_add_get_get_all_and_events(m: Both) -> None:
    first = m.add("I live in Paris", user_id="u1", metadata={"cat": "home"})["results"]
    assert [(r["memory"], r["event"], r["user_id"], r["metadata"]) for r in first] == [
        ("I live in Paris", "ADD", "u1", {"cat": "home"})]
    again = m.add("I live in Paris", user_id="u1")["results"][0]
    assert (again["id"], again["event"]) == (first[0]["id"], "NONE")  # merged, not duplicated
    moved = m.add([{"role": "user", "content": "Hello. I moved to Rome. What's the weather?"},
                   {"role": "assistant", "content": "I prefer sunshine."}], user_id="u1")["results"]
    assert [r["memory"] for r in moved] == ["I moved to Rome."]  # the user's durable statement only
    assert moved[0]["supersedes"] == [first[0]["id"]]
    assert [r["memory"] for r in m.get_all(user_id="u1")["results"]] == ["I moved to Rome."]
    assert m.get(first[0]["id"])["status"] == "retired"  # superseded, still readable
    assert m.get("it_unknown") is None
    assert m.get_all(user_id="u2")["results"] == []  # another user's scope is empty
    assert set(first[0]) >= {"id", "memory", "user_id", "metadata", "created_at", "updated_at"}


def test_otel_parts_messages_and_infer_false(m: Both) -> None:
    parts = [{"role": "user", "parts": [{"type": "text", "content": "My name is Ada."}]}]
    assert [r["memory"] for r in m.add(parts, user_id="u1")["results"]] == ["My name is Ada."]
    raw = m.add([{"role": "user", "content": "jazz on fridays"}], user_id="u1", infer=False)["results"]
    assert [r["memory"] for r in raw] == ["jazz on fridays"]
    assert m.add([{"role": "user", "content": "what time is it?"}], user_id="u1")["results"] == []


def test_search_update_delete_history(m: Both) -> None:
    a = m.add("Prefers window seats", user_id="u1")["results"][0]
    m.add("Allergic to peanuts", user_id="u1")
    m.add("Prefers aisle seats", user_id="u2")
    found = m.search("seats", user_id="u1", limit=5)["results"]
    assert [r["memory"] for r in found] == ["Prefers window seats"] and found[0]["score"] > 0
    assert m.update(a["id"], "Prefers aisle seats")["event"] == "UPDATE"
    assert m.get(a["id"])["memory"] == "Prefers aisle seats"
    assert m.delete(a["id"])["event"] == "DELETE"
    assert m.search("seats", user_id="u1")["results"] == []
    events = m.history(a["id"])
    assert [(e["event"], e["old_memory"], e["new_memory"]) for e in events] == [
        ("ADD", None, "Prefers window seats"),
        ("UPDATE", "Prefers window seats", "Prefers aisle seats"),
        ("DELETE", "Prefers aisle seats", "Prefers aisle seats")]
    assert [e["actor"] for e in events] == ["remember", "memory.update", "forget"]
    assert m.delete_all(user_id="u1")["count"] == 1
    assert m.get_all(user_id="u1")["results"] == [] and len(m.get_all(user_id="u2")["results"]) == 1


def test_search_as_of_answers_what_was_true_then(m: Both, home: Home) -> None:
    m.add("I live in Paris", user_id="u1")
    time.sleep(0.02)
    t = time.time()
    time.sleep(0.02)
    m.add("I live in Rome", user_id="u1")
    for mode in ("hybrid", "lexical", "vector"):
        from crystallise.engine.serving import search
        then = [h.item.text for h in search("where do I live", user="u1", as_of=t, mode=mode, home=home)]
        now_ = [h.item.text for h in search("where do I live", user="u1", mode=mode, home=home)]
        assert then[:1] == ["I live in Paris"] and now_[:1] == ["I live in Rome"], mode
    assert [r["memory"] for r in m.search("live", user_id="u1", as_of=t)["results"]] == ["I live in Paris"]
    assert m.search("live", user_id="u1", as_of=0.0)["results"] == []  # before anything was said


def test_as_of_reads_the_old_text_and_forgotten_items(home: Home) -> None:
    mem = Memory(home)
    a = mem.add("Likes green tea", user_id="u1")["results"][0]
    time.sleep(0.02)
    t = time.time()
    time.sleep(0.02)
    mem.update(a["id"], "Likes black coffee")
    assert [r["memory"] for r in mem.search("likes", user_id="u1", as_of=t)["results"]] == ["Likes green tea"]
    mem.delete(a["id"])
    assert [r["memory"] for r in mem.search("likes", user_id="u1", as_of=t)["results"]] == ["Likes green tea"]
    assert mem.search("likes", user_id="u1")["results"] == []
    with pytest.raises(ValidationError, match="as_of"):
        mem.search("likes", user_id="u1", as_of="yesterday")  # type: ignore[arg-type]


def test_a_reverted_remember_stays_in_history_as_reverted(home: Home) -> None:
    mem = Memory(home)
    a = mem.add("Has a cat named Tom", user_id="u1")["results"][0]
    cs = mem.history(a["id"])[0]["changeset_id"]
    revert_change(cs, home=home)
    with pytest.raises(NotFoundError):
        home.store.get_item(a["id"])  # no longer stored or served
    shown = mem.get(a["id"])
    assert shown is not None and shown["status"] == "reverted" and shown["memory"] == "Has a cat named Tom"
    assert [e["event"] for e in mem.history(a["id"])] == ["ADD", "DELETE"]
    assert mem.history(a["id"])[-1]["reverted"] is True


def test_a_reverted_remember_is_shown_by_the_cli_and_the_ui(sqlite_home: Home) -> None:
    from click.testing import CliRunner
    from fastapi.testclient import TestClient

    from crystallise.api import create_key
    from crystallise.cli import main
    from crystallise.server import create_app

    mem = Memory(sqlite_home, org_id="acme")
    a = mem.add("Has a dog named Rex", user_id="u1")["results"][0]
    revert_change(mem.history(a["id"])[0]["changeset_id"], home=sqlite_home)
    shown = CliRunner().invoke(main, ["--home", str(sqlite_home.path), "items", "show", a["id"]],
                               catch_exceptions=False)
    assert shown.exit_code == 0 and "reverted" in shown.output and "Rex" in shown.output
    acme, _ = create_key(sqlite_home.path, "acme")
    globex, _ = create_key(sqlite_home.path, "globex")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with TestClient(create_app(sqlite_home)) as c:
        c.post("/ui/login", content=f"key={acme}&next=/ui/", headers=form)
        page = c.get(f"/ui/items/{a['id']}")
        assert page.status_code == 200 and "Reverted by change set" in page.text and "Rex" in page.text
    with TestClient(create_app(sqlite_home)) as c:
        c.post("/ui/login", content=f"key={globex}&next=/ui/", headers=form)
        other = c.get(f"/ui/items/{a['id']}")
        assert other.status_code == 404 and "Rex" not in other.text  # still another org's


def test_bad_input_is_named(home: Home) -> None:
    mem = Memory(home)
    with pytest.raises(ValidationError, match="metadata"):
        mem.add("x y z", user_id="u1", metadata={"n": float("nan")})
    with pytest.raises(ValidationError, match="metadata"):
        mem.add("x y z", user_id="u1", metadata={"blob": "x" * 10_000})
    with pytest.raises(ValidationError, match="delete_all needs"):
        mem.delete_all()
    with pytest.raises(ValidationError, match="messages"):
        mem.add([], user_id="u1")
    with pytest.raises(ValidationError, match="limit"):
        mem.get_all(user_id="u1", limit=0)
    with pytest.raises(NotFoundError):
        mem.update("it_nope", "x")
    assert mem.get("../../etc/passwd") is None
    with pytest.raises(ValidationError, match="memory_id"):
        mem.get("x" * 500)


# -- over REST ----------------------------------------------------------------------------------------

fastapi = pytest.importorskip("fastapi", reason="the HTTP API needs the `serve` extra")
from fastapi.testclient import TestClient  # noqa: E402

from crystallise.api import create_key  # noqa: E402
from crystallise.server import create_app  # noqa: E402


@pytest.fixture
def api(sqlite_home: Home) -> Any:
    keys = {name: create_key(sqlite_home.path, org, user=user)[0]
            for name, org, user in (("acme", "acme", None), ("globex", "globex", None), ("u1", "acme", "u1"))}
    with TestClient(create_app(sqlite_home)) as c:
        yield c, {k: {"Authorization": f"Bearer {v}"} for k, v in keys.items()}


def test_rest_round_trip(api: Any) -> None:
    c, h = api
    r = c.post("/v1/memories", json={"messages": "I live in Paris", "user_id": "u1"}, headers=h["acme"])
    assert r.status_code == 200, r.text
    mid = r.json()["results"][0]["id"]
    assert r.json()["results"][0]["org_id"] == "acme"  # the key's org
    got = c.get(f"/v1/memories/{mid}", headers=h["acme"]).json()
    assert got["memory"] == "I live in Paris" and got["user_id"] == "u1"
    found = c.post("/v1/memories/search", json={"query": "Paris", "user_id": "u1"}, headers=h["acme"]).json()
    assert [m["id"] for m in found["results"]] == [mid]
    assert c.put(f"/v1/memories/{mid}", json={"text": "I live in Rome"}, headers=h["acme"]).json()["event"] == "UPDATE"
    assert [m["memory"] for m in c.get("/v1/memories?user_id=u1", headers=h["acme"]).json()["results"]] == [
        "I live in Rome"]
    assert c.delete(f"/v1/memories/{mid}", headers=h["acme"]).json()["event"] == "DELETE"
    events = c.get(f"/v1/memories/{mid}/history", headers=h["acme"]).json()
    assert [e["event"] for e in events] == ["ADD", "UPDATE", "DELETE"]
    c.post("/v1/memories", json={"messages": [{"role": "user", "content": "My name is Ada."}], "user_id": "u1"},
           headers=h["acme"])
    assert c.delete("/v1/memories?user_id=u1", headers=h["acme"]).json()["count"] == 1
    bad = c.post("/v1/memories", json={"messages": "x", "user_id": "u1", "metadata": {"a": "b" * 9000}},
                 headers=h["acme"])
    assert bad.status_code == 400 and "metadata" in bad.json()["detail"]


def test_rest_tenancy_attacks(api: Any) -> None:
    c, h = api
    mine = c.post("/v1/memories", json={"messages": "Secret: my PIN is 1234", "user_id": "u1", "infer": False},
                  headers=h["acme"]).json()["results"][0]["id"]
    other = c.post("/v1/memories", json={"messages": "Likes tea", "user_id": "u2"},
                   headers=h["acme"]).json()["results"][0]["id"]
    unknown = c.get("/v1/memories/it_doesnotexist", headers=h["globex"])  # (history: the same message)
    assert unknown.status_code == 404
    for path in (f"/v1/memories/{mine}", f"/v1/memories/{mine}/history"):
        r = c.get(path, headers=h["globex"])  # another org's key: exactly like an unknown id
        assert r.status_code == 404
        assert r.json()["detail"].replace(mine, "ID") == unknown.json()["detail"].replace("it_doesnotexist", "ID")
        assert "PIN" not in r.text
    assert c.put(f"/v1/memories/{mine}", json={"text": "pwned"}, headers=h["globex"]).status_code == 404
    assert c.delete(f"/v1/memories/{mine}", headers=h["globex"]).status_code == 404
    assert c.get(f"/v1/memories/{mine}", headers=h["acme"]).json()["memory"].startswith("Secret")  # untouched
    # another org's key sees nothing of acme's users, and cannot name acme
    assert c.get("/v1/memories?user_id=u1", headers=h["globex"]).json()["results"] == []
    assert c.post("/v1/memories/search", json={"query": "PIN", "user_id": "u1"},
                  headers=h["globex"]).json()["results"] == []
    assert c.get("/v1/memories?user_id=u1&org_id=acme", headers=h["globex"]).status_code == 403
    assert c.delete("/v1/memories?user_id=u1", headers=h["globex"]).json()["count"] == 0
    # an end-user key: its own user's memories only
    assert c.get(f"/v1/memories/{mine}", headers=h["u1"]).status_code == 200
    assert c.get(f"/v1/memories/{other}", headers=h["u1"]).status_code == 404
    assert c.delete(f"/v1/memories/{other}", headers=h["u1"]).status_code == 404
    assert c.get("/v1/memories?user_id=u2", headers=h["u1"]).status_code == 403
    assert [m["id"] for m in c.get("/v1/memories", headers=h["u1"]).json()["results"]] == [mine]
    # hostile ids never reach the store as anything but a lookup (a NUL: 400 at the door, api/hostile.py)
    for hostile in ("it_x' OR '1'='1", "%00", "..%2F..%2Fapi_keys.json", "x" * 300):
        assert c.get(f"/v1/memories/{hostile}", headers=h["acme"]).status_code in (400, 404, 422)
