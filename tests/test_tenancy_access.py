"""Issue 15, part 1: the one access module decides what a key sees of learning too: a dream's credit
counts and a version diff show an org key its own org's, never another org's (and never nothing)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("fastapi", reason="the HTTP API needs the `serve` extra")

from fastapi.testclient import TestClient  # noqa: E402

from crystallise.api import create_key  # noqa: E402
from crystallise.engine.committer import Committer  # noqa: E402
from crystallise.engine.home import Home  # noqa: E402
from crystallise.server import create_app  # noqa: E402
from crystallise.types import ChangeSet, Delta, Feedback, Item, Scope, Span, Trace, Verdict  # noqa: E402


@pytest.fixture
def home(sqlite_home: Home) -> Home:
    sqlite_home.config["model"] = "scripted:{}"
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


def shown_run(org: str, item: str, score: float) -> Trace:
    t = Trace(name="run", org_id=org, input="q", output="a",
              spans=[Span(name="context", kind="retrieval", attributes={"shown_items": [item]})])
    t.feedback.append(Feedback(trace_id=t.id, score=score))
    return t


def test_a_dream_shows_an_org_key_its_own_orgs_credit_only(client, home, keys):
    for i in range(3):
        home.store.write_trace(shown_run("victim", f"it_v{i}", 1.0))
    home.store.write_trace(shown_run("evil", "it_e", 0.0))
    r = client.post("/v1/dream", json={"dry_run": True}, headers=h(keys["evil"]))
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["credit"]["traces"] == 1 and report["credit"]["helpful"] == 0  # not the victim's 3
    assert "credit_by_org" not in report
    assert all((s["scope"] or {}).get("org") == "evil" for s in report["scopes"])
    admin = client.post("/v1/dream", json={"dry_run": True}, headers=h(keys["*"])).json()
    assert admin["credit"]["traces"] == 4 and set(admin["credit_by_org"]) == {"victim", "evil"}


def commit_files(home: Home, org: str | None, files: dict[str, str]) -> int:
    deltas = [Delta(op="set", target="artifact", path=p, before=home.repo.read(p), after=t) for p, t in files.items()]
    cs = ChangeSet(learner="crystallise", layer="harness", deltas=deltas, scope=Scope(agent="default", org=org),
                   verdict=Verdict(decision="accept", reason="gate"))
    return Committer(home).commit(cs).number


def test_a_version_diff_shows_an_org_key_its_own_orgs_changes(client, home, keys):
    item = Item(text="Victim rule", level="org", org_id="victim")
    v1 = Committer(home).commit(ChangeSet(learner="test", layer="context", scope=Scope(org="victim"),
                                          deltas=[Delta(op="add", target="item", item_id=item.id,
                                                        after=item.to_dict())],
                                          verdict=Verdict(decision="accept", reason="ok"))).number
    commit_files(home, "evil", {"orgs/evil/tasks/t/code.py": "EVIL-PROGRAM\n"})
    v3 = commit_files(home, "victim", {"orgs/victim/tasks/t/code.py": "VICTIM-PROGRAM\n"})
    mine = client.get(f"/v1/versions/{v1}/diff/{v3}", headers=h(keys["victim"])).json()["patch"]
    assert "VICTIM-PROGRAM" in mine and "EVIL-PROGRAM" not in mine
    assert client.get(f"/v1/versions/{v1}/diff/{v3}", headers=h(keys["evil"])).status_code == 404
    full = client.get(f"/v1/versions/{v1}/diff/{v3}", headers=h(keys["*"])).json()["patch"]
    assert "VICTIM-PROGRAM" in full and "EVIL-PROGRAM" in full
    assert [v["number"] for v in client.get("/v1/versions", headers=h(keys["evil"])).json()["versions"]] == [v1 + 1]


def test_postgres_row_level_security_holds_where_a_filter_is_missed(store_url, tmp_path):
    """Issue 15: on PostgreSQL the database holds the org line too (migration 5). Inside an org key's
    scope a query that forgets its org filter still sees only that org's traces, spans, feedback and
    items (plus shared items), and a write into another org is refused."""
    from crystallise.errors import CrystalliseError, NotFoundError
    from crystallise.store.engine import org_scope

    if not store_url.startswith("postgres"):
        pytest.skip("row-level security is PostgreSQL's; SQLite relies on the code's filters")
    home = Home.init(tmp_path / "rls", store_url=store_url)
    try:
        store = home.store
        victim = store.write_trace(shown_run("victim", "it_v", 1.0))
        evil = store.write_trace(shown_run("evil", "it_e", 0.0))
        for org in ("victim", None):
            it = Item(text=f"rule of {org}", level="org" if org else "agent", org_id=org)
            store.apply_item_deltas([Delta(op="add", target="item", item_id=it.id, after=it.to_dict())])
        with org_scope("evil"):
            assert [t.id for t in store.list_traces(after_seq=0, limit=100, with_children=True)] == [evil.id]
            with pytest.raises(NotFoundError):
                store.get_trace(victim.id)
            texts = {i.text for i in store.scan_items(status=("active", "quarantined", "candidate", "retired"))}
            assert texts == {"rule of None"}  # the shared item, never the victim's
            with pytest.raises(CrystalliseError):
                store.write_trace(Trace(name="x", org_id="victim", input="planted"))
            mine = store.write_trace(Trace(name="x", org_id="evil", input="ok"))
        assert {t.id for t in store.list_traces(after_seq=0, limit=100)} == {victim.id, evil.id, mine.id}
        assert len(store.get_trace(victim.id).spans) == 1  # outside any org scope: everything
    finally:
        home.close()


def test_a_group_commit_of_several_orgs_is_not_held_to_the_first_requests_org(store_url, tmp_path):
    """The shared drain task is made by whichever request came first: its batch (several orgs'
    traces) must not run in that request's database org scope."""
    import asyncio

    from crystallise.store.engine import org_scope
    from crystallise.store.group import GroupCommit

    home = Home.init(tmp_path / "gc", store_url=store_url)
    try:
        writer = GroupCommit(home.store)

        async def both() -> list[Trace]:
            with org_scope("victim"):  # the first request's scope, inherited by the drain task
                return list(await asyncio.gather(writer.write_trace(Trace(name="a", org_id="victim")),
                                                 writer.write_trace(Trace(name="b", org_id="evil"))))

        written = asyncio.run(both())
        assert {t.org_id for t in written} == {"victim", "evil"} and home.store.count_traces() == 2
    finally:
        home.close()


def test_postgres_row_level_security_covers_what_learning_wrote(store_url, tmp_path):
    """Migration 7: change sets, versions, the item ledger, dream runs, the usage log and item vectors
    are held to the org line in the database too. Inside evil's scope a query that forgets its org
    filter sees only evil's and shared rows; the committer, run from inside that scope, still numbers
    versions over every row (no collision with the victim's)."""
    from crystallise.store.engine import org_scope

    if not store_url.startswith("postgres"):
        pytest.skip("row-level security is PostgreSQL's; SQLite relies on the code's filters")
    home = Home.init(tmp_path / "rls-learned", store_url=store_url)
    try:
        store, committer = home.store, Committer(home)
        accept = Verdict(decision="accept", reason="test")
        numbers, item_ids = {}, {}
        for org in ("victim", None):
            it = Item(text=f"rule of {org}", level="org" if org else "agent", org_id=org)
            item_ids[org] = it.id
            cs = ChangeSet(learner="test", layer="context", scope=Scope(org=org), verdict=accept,
                           deltas=[Delta(op="add", target="item", item_id=it.id, after=it.to_dict())])
            numbers[org] = committer.commit(cs).number
        victim_run = store.write_trace(shown_run("victim", "it_v", 1.0))
        store.record_usage([(victim_run.id, "it_v", 1, 1.0)])
        store.save_dream_run({"id": "dr_v", "batch_id": "b", "scope_key": "org:victim", "level": "org",
                              "agent_id": "default", "org_id": "victim", "user_id": None, "status": "done",
                              "since_seq": 0, "until_seq": 1, "started_at": 1.0})
        victim_cs = store.get_version(numbers["victim"]).changeset_id
        with org_scope("evil"):
            assert {cs.scope.org for cs in store.list_changesets(limit=100)} == {None}
            assert {v.number for v in store.list_versions(limit=100)} == {numbers[None]}
            assert [r["id"] for r in store.list_dream_runs()] == []
            assert store.usage_pairs([victim_run.id]) == set()
            assert store.item_history(item_ids["victim"]) == [] and len(store.item_history(item_ids[None])) == 1
            # the committer from inside an org's request: numbers over every row, writes its own org
            it = Item(text="rule of evil", level="org", org_id="evil")
            mine = committer.commit(ChangeSet(learner="test", layer="context", scope=Scope(org="evil"),
                                              verdict=accept,
                                              deltas=[Delta(op="add", target="item", item_id=it.id,
                                                            after=it.to_dict())]))
            assert mine.number == max(numbers.values()) + 1
            assert {v.number for v in store.list_versions(limit=100)} == {numbers[None], mine.number}
        assert store.get_changeset(victim_cs).scope.org == "victim"  # outside any scope: everything
        assert len(store.list_versions(limit=100)) == 3 and len(store.list_dream_runs()) == 1
    finally:
        home.close()
