"""Review mode and undo by cause over HTTP (`/v1/review`, `/v1/undo`): the happy paths, org-key
scoping (an org's key sees and decides its own org's proposals only), and problem-details 4xx."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the HTTP API needs the `serve` extra")

from fastapi.testclient import TestClient  # noqa: E402

from crystallise.server import create_app  # noqa: E402
from crystallise.api import create_key  # noqa: E402
from crystallise.engine.memory import remember  # noqa: E402
from crystallise.governance.review import PendingReview  # noqa: E402
from crystallise.engine.home import Home  # noqa: E402
from crystallise.engine.committer import Committer  # noqa: E402
from crystallise.types import ChangeSet, Delta, Item, Scope, Trace, Verdict  # noqa: E402

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    h = Home.init(tmp_path_factory.mktemp("review") / "home")
    h.close()
    return h.path


@pytest.fixture
def home(tmp_path: Path, template: Path) -> Iterator[Home]:
    h = Home.open(shutil.copytree(template, tmp_path / "home"))
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


def problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["detail"]
    return body


def learned(home: Home, text: str, org: str | None, provenance: list[str] = ()) -> tuple[ChangeSet, Item]:
    """What a learner proposes: one bullet, with a gate verdict, committed through the Committer."""
    item = Item(text=text, level="org" if org else "agent", agent_id="support", org_id=org, source="reflection")
    cs = ChangeSet(learner="reflect", layer="context", summary=f"Add bullet: {text}", scope=Scope("support", org),
                   deltas=[Delta(op="add", target="item", item_id=item.id, after=item.to_dict(), reason="lesson")],
                   provenance=list(provenance),
                   verdict=Verdict(decision="accept", reason="3 wins / 0 losses, McNemar exact p=0.25", n=12,
                                   old_passed=8, new_passed=11, wins=3, losses=0))
    try:
        Committer(home).commit(cs)
    except PendingReview:
        pass
    return cs, item


@pytest.fixture
def held(home: Home) -> dict[str, ChangeSet]:
    """Three proposals waiting under a review rule: acme's, globex's, and an agent-level one."""
    home.config["review"] = [{"layer": "context"}]
    home.save_config()
    return {name: learned(home, f"{name} rule: check the order number first", org)[0]
            for name, org in (("acme", "acme"), ("globex", "globex"), ("shared", None))}


def test_review_list_and_show_are_scoped_to_the_org(client, keys, held) -> None:
    acme = client.get("/v1/review", headers=auth(keys["acme"]))
    assert acme.status_code == 200
    assert {cs["id"] for cs in acme.json()["changesets"]} == {held["acme"].id, held["shared"].id}
    admin = client.get("/v1/review?limit=2", headers=auth(keys["*"])).json()
    assert len(admin["changesets"]) == 2 and admin["next_before"]
    older = client.get(f"/v1/review?before={admin['next_before']}", headers=auth(keys["*"])).json()
    assert len(admin["changesets"]) + len(older["changesets"]) == 3

    one = client.get(f"/v1/review/{held['acme'].id}", headers=auth(keys["acme"]))
    assert one.status_code == 200
    body = one.json()
    assert body["changeset"]["status"] == "needs_review" and body["changeset"]["verdict"]["wins"] == 3
    assert "+" in body["diff"] and "acme rule: check the order number first" in body["diff"]
    assert "layer context" in body["waiting_because"]
    problem(client.get(f"/v1/review/{held['globex'].id}", headers=auth(keys["acme"])), 404)  # as if unknown
    problem(client.get("/v1/review/cs_nope", headers=auth(keys["acme"])), 404)
    problem(client.get("/v1/review", headers=auth("cr_wrong")), 401)


def test_approve_makes_a_version_and_reject_keeps_evidence(client, home, keys, held) -> None:
    cs = held["acme"]
    r = client.post(f"/v1/review/{cs.id}/approve", json={"by": "alice", "note": "checked"}, headers=auth(keys["acme"]))
    assert r.status_code == 201, r.text
    version = r.json()
    assert version["changeset_id"] == cs.id and "approved by alice" in version["verdict"]["reason"]
    stored = home.store.get_changeset(cs.id)
    assert stored.status == "committed" and stored.evidence["review"]["by"].startswith("alice (key key_")
    item_id = cs.deltas[0].item_id
    assert home.store.get_item(item_id).status == "active"
    assert client.get(f"/v1/versions/{version['number']}", headers=auth(keys["acme"])).status_code == 200
    problem(client.post(f"/v1/review/{cs.id}/approve", json={"by": "alice"}, headers=auth(keys["acme"])), 409)

    r = client.post(f"/v1/review/{held['shared'].id}/reject", json={"by": "bob"}, headers=auth(keys["acme"]))
    assert "admin key" in problem(r, 403)["detail"]  # shared by every org: not acme's to decide
    r = client.post(f"/v1/review/{held['shared'].id}/reject", json={"by": "root", "note": "too broad"},
                    headers=auth(keys["*"]))
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    assert home.store.get_changeset(held["shared"].id).evidence["review"]["note"] == "too broad"
    problem(client.post(f"/v1/review/{held['shared'].id}/approve", json={"by": "root"}, headers=auth(keys["*"])), 409)
    assert [c["id"] for c in client.get("/v1/review", headers=auth(keys["*"])).json()["changesets"]] == \
        [held["globex"].id]


def test_review_decisions_refuse_bad_input_and_other_keys(client, home, keys, held) -> None:
    url = f"/v1/review/{held['acme'].id}"
    problem(client.post(url + "/approve", json={}, headers=auth(keys["acme"])), 422)  # who decides?
    problem(client.post(url + "/approve", json={"by": "   "}, headers=auth(keys["acme"])), 422)
    problem(client.post(url + "/approve", json={"by": "a", "extra": 1}, headers=auth(keys["acme"])), 422)
    problem(client.post(url + "/approve", json={"by": "a"}, headers=auth(keys["globex"])), 404)
    problem(client.post(url + "/approve", json={"by": "a"}, headers=auth(keys["acme-u1"])), 403)
    problem(client.post(url + "/approve", content=b"{", headers={**auth(keys["acme"]),
                                                                  "content-type": "application/json"}), 400)
    assert home.store.get_changeset(held["acme"].id).status == "needs_review"  # nothing was decided


def test_undo_by_trace_with_dry_run_and_org_scoping(client, home, keys) -> None:
    trace = home.store.write_trace(Trace(name="answer", agent_id="support", org_id="acme", user_id="u1"))
    cs, item = learned(home, "acme: quote 60 days", "acme", provenance=[trace.id])
    body = {"traces": [trace.id], "reason": "poisoned run"}

    problem(client.post("/v1/undo", json=body, headers=auth(keys["globex"])), 404)  # not globex's trace
    dry = client.post("/v1/undo", json={**body, "dry_run": True}, headers=auth(keys["acme"]))
    assert dry.status_code == 200, dry.text
    plan = dry.json()
    assert plan["dry_run"] and plan["version"] is None and plan["needs_admin"] == []
    assert plan["plan"]["retired_items"] == [item.id] and len(plan["plan"]["versions"]) == 1
    assert home.store.get_item(item.id).status == "active"  # a dry run writes nothing

    done = client.post("/v1/undo", json=body, headers=auth(keys["acme"]))
    assert done.status_code == 200, done.text
    assert done.json()["version"]["number"] > plan["plan"]["versions"][0]
    assert home.store.get_item(item.id).status == "retired"
    assert any(f.kind == "revoked" for f in home.store.get_trace(trace.id).feedback)
    # the undo is acme's own version: acme sees it
    assert client.get(f"/v1/versions/{done.json()['version']['number']}", headers=auth(keys["acme"])).status_code == 200


def test_undo_refuses_what_an_org_key_may_not_change(client, home, keys) -> None:
    trace = home.store.write_trace(Trace(name="answer", agent_id="support", org_id="acme", user_id="u1"))
    _, shared = learned(home, "every org: quote 60 days", None, provenance=[trace.id])
    body = {"traces": [trace.id]}
    dry = client.post("/v1/undo", json={**body, "dry_run": True}, headers=auth(keys["acme"])).json()
    assert any("shared by every org" in n for n in dry["needs_admin"])
    assert "admin key" in problem(client.post("/v1/undo", json=body, headers=auth(keys["acme"])), 403)["detail"]
    assert home.store.get_item(shared.id).status == "active"
    assert not any(f.kind == "revoked" for f in home.store.get_trace(trace.id).feedback)  # nothing written
    ok = client.post("/v1/undo", json=body, headers=auth(keys["*"]))
    assert ok.status_code == 200 and home.store.get_item(shared.id).status == "retired"


def test_undo_by_user_stays_in_the_keys_org(client, home, keys) -> None:
    mine = remember("I ship to Rome", agent="support", org="acme", user="u1", home=home)
    theirs = remember("I ship to Oslo", agent="support", org="globex", user="u1", home=home)
    r = client.post("/v1/undo", json={"user": "u1", "reason": "account closed"}, headers=auth(keys["acme"]))
    assert r.status_code == 200, r.text
    assert r.json()["plan"]["cause"] == "user u1 in org acme"
    assert home.store.get_item(mine.id).status == "retired"
    assert home.store.get_item(theirs.id).status == "active"  # globex's u1 is another person's data
    problem(client.post("/v1/undo", json={"user": "u2"}, headers=auth(keys["acme-u1"])), 403)  # bound to u1
    problem(client.post("/v1/undo", json={}, headers=auth(keys["acme"])), 422)
    problem(client.post("/v1/undo", json={"user": "u1", "traces": ["tr_1"]}, headers=auth(keys["acme"])), 422)
    problem(client.post("/v1/undo", json={"traces": ["tr_nope"]}, headers=auth(keys["acme"])), 404)
