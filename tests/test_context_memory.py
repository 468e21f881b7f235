"""remember / forget / accept through the Committer, on SQLite and PostgreSQL: every delta kind applied and
reverted, supersession and as-of queries, scope isolation, the user ledger, and bad input."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

import crystallise
from crystallise.context import deltas as build
from crystallise.engine.memory import accept, changes, forget, history, remember, revert_change
from crystallise.errors import ArtifactError, NotFoundError, ValidationError
from crystallise.engine.home import Home
from crystallise.engine.committer import Committer
from crystallise.store import MIGRATIONS, migrate
from crystallise.store.engine import make_engine
from crystallise.types import ChangeSet, Item, Scope, Trace, Verdict



def texts(items: list[Item]) -> list[str]:
    return sorted(i.text for i in items)


def user_items(home: Home, user: str, org: str | None = None, **kw: object) -> list[Item]:
    return home.store.query_items(agent="default", org=org, user=user, levels=("user",), **kw)


def test_public_api_exports_remember_and_forget() -> None:
    assert crystallise.remember is remember and crystallise.forget is forget
    assert crystallise.__all__ == sorted(crystallise.__all__)


def test_remember_takes_effect_at_once_in_the_user_ledger_and_never_git(home: Home) -> None:
    item = remember("Prefers metric units", user="u1", home=home)
    assert item.status == "active" and item.level == "user" and item.meta["learned_by"] == "explicit"
    pack = crystallise.context(user="u1", query="which units?", home=home)
    assert item.id in pack.item_ids
    assert home.store.list_versions() == []  # user-level: no version
    assert home.repo.list_files("context/") == []  # and nothing in git
    [cs] = changes("u1", home=home)
    assert cs.status == "committed" and cs.learner == "remember" and "explicit user action" in cs.verdict.reason
    assert [r["op"] for r in history(item.id, home=home)] == ["add"]
    assert history(item.id, home=home)[0]["changeset_id"] == cs.id


def test_agent_and_org_remember_land_as_versions_with_an_explicit_verdict(home: Home) -> None:
    with crystallise.trace("chat", agent="support", org="acme", user="u9", input="refunds?", home=home) as t:
        t.output = "30 days"
    rule = remember("Refunds are allowed for 30 days", agent="support", org="acme", kind="bullet",
                    section="rules", trace_id=t.id, home=home)
    [version] = home.store.list_versions()
    assert version.commit and version.provenance == [t.id]
    assert version.verdict["reason"].startswith("explicit user action: remember")
    playbook = home.repo.read("context/org/acme/playbook.md")
    assert "## rules" in playbook and rule.id in playbook
    log = home.repo.log(1)[0]
    assert log.trailer("Crystallise-Provenance") == [t.id]
    gone = forget(rule.id, agent="support", org="acme", home=home)
    assert gone[0].status == "retired" and rule.id not in home.repo.read("context/org/acme/playbook.md")
    Committer(home).revert(home.store.list_versions()[0].number)  # undo the forget
    assert home.store.get_item(rule.id).status == "active" and rule.id in home.repo.read("context/org/acme/playbook.md")


def test_each_delta_kind_is_applied_and_reverted_in_the_user_ledger(home: Home) -> None:
    store = home.store
    a = remember("I live in Paris", user="u1", home=home, valid_from=1000.0)  # add
    b = remember("Likes jazz", user="u1", home=home)
    c = remember("Likes jazz music a lot", user="u1", home=home)
    snapshot = {i.id: i.to_dict() for i in user_items(home, "u1", status=("active", "retired", "quarantined"))}

    def committed(*deltas: object) -> str:
        cs = ChangeSet(learner="test", layer="context", deltas=list(deltas), scope=Scope(user="u1"),  # type: ignore[arg-type]
                       verdict=Verdict(decision="accept", reason="test"))
        version = Committer(home, recover=False).commit(cs)
        assert version.number == 0 and version.commit == ""
        return cs.id

    steps = [
        ("update", lambda: committed(build.update(store.get_item(b.id), text="Likes jazz and blues"))),
        ("merge", lambda: committed(*build.merge(store.get_item(b.id), [store.get_item(c.id)]))),
        ("supersede", lambda: committed(*build.supersede(store.get_item(a.id),
                                                         Item("I moved to Rome", kind="memory", level="user",
                                                              user_id="u1", key="user.city")))),
        ("retire", lambda: committed(build.retire(store.get_item(b.id), "test"))),
    ]
    for op, apply in steps:
        before = {i.id: i.text + i.status for i in user_items(home, "u1", status=("active", "retired"))}
        cs_id = apply()
        after = {i.id: i.text + i.status for i in user_items(home, "u1", status=("active", "retired"))}
        assert after != before, op
        assert any(r["op"] == op for item_id in after for r in history(item_id, home=home)), op
        revert_change(cs_id, home=home)
        assert {i.id: i.text + i.status for i in user_items(home, "u1", status=("active", "retired"))} == before, op
        assert store.changeset_reverted_by(cs_id) is not None
        with pytest.raises(ValidationError, match="already reverted"):
            revert_change(cs_id, home=home)
    # reverting the first add deletes the item again
    first = changes("u1", home=home)[-1]
    revert_change(first.id, home=home)
    with pytest.raises(NotFoundError):
        store.get_item(a.id)
    assert set(snapshot) - {a.id} <= {i.id for i in user_items(home, "u1", status=("active", "retired"))}


def test_each_delta_kind_is_applied_and_reverted_as_a_version(home: Home) -> None:
    store, committer = home.store, Committer(home)
    a = remember("Use two decimals", agent="fin", kind="bullet", home=home)
    b = remember("Round half up", agent="fin", kind="bullet", home=home)
    c = remember("Use 2 decimal places", agent="fin", kind="bullet", home=home)
    old = remember("Our fiscal year starts in April", agent="fin", home=home, key="org.fiscal_year")
    cases = [
        [build.update(store.get_item(b.id), text="Round half to even")],
        build.merge(store.get_item(a.id), [store.get_item(c.id)]),
        build.supersede(store.get_item(old.id), Item("Our fiscal year starts in January", kind="memory",
                                                     level="agent", agent_id="fin", key="org.fiscal_year")),
        [build.retire(store.get_item(b.id), "obsolete")],
    ]
    for deltas in cases:
        before = home.repo.read("context/agent/fin/playbook.md")
        state = {i.id: (i.text, i.status) for i in store.query_items(agent="fin", status=("active", "retired"))}
        cs = ChangeSet(learner="test", layer="context", deltas=deltas, verdict=Verdict(decision="accept", reason="t"))
        version = committer.commit(cs)
        assert version.number > 0 and version.commit
        assert home.repo.read("context/agent/fin/playbook.md") != before
        committer.revert(version.number)
        assert {i.id: (i.text, i.status) for i in store.query_items(agent="fin", status=("active", "retired"))} == state
        assert home.repo.read("context/agent/fin/playbook.md") == before


def test_supersession_keeps_history_and_as_of_answers_what_was_true(home: Home) -> None:
    t0 = time.time()
    paris = remember("I live in Paris", user="u1", home=home, valid_from=t0 - 3000)
    assert paris.key == "user.city"
    rome = remember("I moved to Rome", user="u1", home=home, valid_from=t0 - 1000)
    old = home.store.get_item(paris.id)
    assert (old.status, old.superseded_by, old.valid_to) == ("retired", rome.id, t0 - 1000)
    assert texts(user_items(home, "u1")) == ["I moved to Rome"]  # the old fact is not shown ...
    assert texts(user_items(home, "u1", as_of=t0 - 2000)) == ["I live in Paris"]  # ... but was true then
    assert texts(user_items(home, "u1", as_of=t0 - 500)) == ["I moved to Rome"]
    assert user_items(home, "u1", as_of=t0 - 5000) == []
    assert [r["op"] for r in history(paris.id, home=home)] == ["add", "supersede"]
    # a fact about an earlier time arrives late: it is stored as already superseded
    oslo = remember("I lived in Oslo", user="u1", home=home, valid_from=t0 - 9000, key="user.city")
    assert oslo.status == "retired" and oslo.superseded_by == paris.id and oslo.valid_to == t0 - 3000
    assert texts(user_items(home, "u1", as_of=t0 - 5000)) == ["I lived in Oslo"]
    assert texts(user_items(home, "u1")) == ["I moved to Rome"]
    # and one in the middle of the timeline cuts the interval it falls into
    lyon = remember("I lived in Lyon", user="u1", home=home, valid_from=t0 - 2000, key="user.city")
    assert (lyon.status, lyon.superseded_by, lyon.valid_to) == ("retired", rome.id, t0 - 1000)
    assert home.store.get_item(paris.id).valid_to == t0 - 2000
    assert texts(user_items(home, "u1", as_of=t0 - 2500)) == ["I live in Paris"]
    assert texts(user_items(home, "u1", as_of=t0 - 1500)) == ["I lived in Lyon"]
    assert texts(user_items(home, "u1", as_of=t0 - 500)) == ["I moved to Rome"]
    # a fact that stops holding is not shown after its valid_to
    remember("Is on holiday in Crete", user="u1", home=home, valid_from=t0 - 100, valid_to=t0 - 10)
    assert "Is on holiday in Crete" not in texts(user_items(home, "u1"))
    assert "Is on holiday in Crete" in texts(user_items(home, "u1", as_of=t0 - 50))
    # the key filter for retrieval
    assert texts(user_items(home, "u1", key="user.city")) == ["I moved to Rome"]


def test_the_same_fact_twice_is_merged_not_duplicated(home: Home) -> None:
    with crystallise.trace("chat", user="u1", input="hi", home=home) as t:
        pass
    first = remember("Prefers aisle seats", user="u1", home=home)
    again = remember("prefers aisle seats!", user="u1", home=home, trace_id=t.id)
    assert again.id == first.id and again.provenance == [t.id]
    assert len(user_items(home, "u1")) == 1
    assert remember("Prefers aisle seats", user="u1", home=home).id == first.id
    assert len(changes("u1", home=home)) == 2  # the third changed nothing, so it wrote nothing


def test_forget_by_query_and_key_is_soft_scoped_and_revertible(home: Home) -> None:
    remember("I live in Paris", user="u1", home=home)
    remember("Likes jazz concerts", user="u1", home=home)
    remember("Likes jazz concerts", user="u2", home=home)
    assert forget(query="opera", user="u1", home=home) == []
    gone = forget(query="jazz", user="u1", home=home)
    assert texts(gone) == ["Likes jazz concerts"] and gone[0].status == "retired"
    assert texts(user_items(home, "u1")) == ["I live in Paris"]
    assert texts(user_items(home, "u2")) == ["Likes jazz concerts"]  # another user's item is untouched
    assert texts(forget(query="user.city", user="u1", home=home)) == ["I live in Paris"]
    assert user_items(home, "u1") == []
    revert_change(changes("u1", home=home)[0].id, home=home)
    assert texts(user_items(home, "u1")) == ["I live in Paris"]


def test_scope_isolation_one_user_never_sees_another_users_items(home: Home) -> None:
    secret = remember("My passport expires in Zanzibar week", user="u1", org="acme", home=home)
    remember("Speaks Dutch", user="u2", org="acme", home=home)
    remember("Likes Zanzibar spice", user="u1", org="other", home=home)  # same user id, another org
    for query in ("passport Zanzibar", "Zanzibar", secret.text, "expires"):
        seen = home.store.query_items(agent="default", org="acme", user="u2", text=query)
        assert all(i.user_id == "u2" for i in seen), query
        pack = crystallise.context(org="acme", user="u2", query=query, home=home)
        assert secret.id not in pack.item_ids and "passport" not in pack.text
        assert home.store.query_items(agent="default", org="acme", text=query) == []  # no user given: no user items
    other_org = home.store.query_items(org="other", user="u1", text="Zanzibar")
    assert texts(other_org) == ["Likes Zanzibar spice"]
    with pytest.raises(NotFoundError, match="not found in scope user 'u2'"):
        forget(secret.id, org="acme", user="u2", home=home)
    with pytest.raises(NotFoundError, match="not found in scope"):
        forget(secret.id, home=home)  # forgetting a user's item needs that user
    with pytest.raises(NotFoundError):
        accept(secret.id, org="acme", user="u2", home=home)
    assert home.store.get_item(secret.id).status == "active"


def test_bad_input_gets_errors_that_name_the_fix(home: Home) -> None:
    with pytest.raises(ValidationError, match="item text is empty"):
        remember("   ", user="u1", home=home)
    with pytest.raises(ValidationError, match="holds at most 2000"):
        remember("x" * 5000, user="u1", home=home)
    with pytest.raises(ValidationError, match="needs an agent"):
        remember("hi", agent=None, user="u1", home=home)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="user id 'u 1' is not valid"):
        remember("hi", user="u 1", home=home)
    with pytest.raises(ValidationError, match="kind must be one of"):
        remember("hi", kind="fact", home=home)
    with pytest.raises(ValidationError, match="valid_to .* must be after valid_from"):
        remember("hi", valid_from=10.0, valid_to=5.0, home=home)
    with pytest.raises(ValidationError, match="subject.attribute"):
        remember("hi", key="City", home=home)
    with pytest.raises(NotFoundError, match="traces list"):
        remember("hi", trace_id="tr_missing", home=home)
    t = home.store.write_trace(Trace(name="chat", user_id="u2"))
    with pytest.raises(ValidationError, match="not a trace of user 'u1'"):
        remember("hi", user="u1", trace_id=t.id, home=home)
    with pytest.raises(ValidationError, match="exactly one of item_id or query"):
        forget(home=home)
    with pytest.raises(ValidationError, match="exactly one of item_id or query"):
        forget("it_x", query="y", home=home)
    with pytest.raises(ValidationError, match="no content words"):
        forget(query="the and of", home=home)
    assert home.store.query_items(status=("active", "quarantined", "retired")) == []  # nothing was written


def test_stale_and_mixed_change_sets_are_refused(home: Home) -> None:
    item = remember("Likes tea", user="u1", home=home)
    stale = build.update(item, text="Likes green tea")
    remember("Likes tea and scones", user="u1", home=home)
    forget(item.id, user="u1", home=home)
    cs = ChangeSet(learner="t", layer="context", deltas=[stale], verdict=Verdict(decision="accept", reason="t"))
    with pytest.raises(ArtifactError, match="changed since"):
        Committer(home).commit(cs)
    agent_item, user_item = Item("Be brief", kind="bullet"), Item("x", level="user", user_id="u1")
    mixed = ChangeSet(learner="t", layer="context", verdict=Verdict(decision="accept", reason="t"),
                      scope=Scope(user="u1"), deltas=[build.add(user_item), build.add(agent_item)])
    version = Committer(home).commit(mixed)  # the agent part is a version; the user part, the user ledger
    assert version.number > 0 and [d.item_id for d in home.store.get_changeset(mixed.id).deltas] == [agent_item.id]
    assert home.store.get_changeset(mixed.id).scope.user is None
    [part] = [cs for cs in changes("u1", home=home) if cs.evidence.get("part_of") == mixed.id]
    assert [d.item_id for d in part.deltas] == [user_item.id] and home.store.get_item(user_item.id).status == "active"
    two_users = ChangeSet(learner="t", layer="context", scope=Scope(user="u1"),
                          verdict=Verdict(decision="accept", reason="t"),
                          deltas=[build.add(Item("x", level="user", user_id="u1")),
                                  build.add(Item("y", level="user", user_id="u2"))])
    with pytest.raises(ValidationError, match="changes one user's items only"):
        Committer(home).commit(two_users)
    remember("Be brief", kind="bullet", home=home)
    [version] = home.store.list_versions()
    with pytest.raises(ValidationError, match="not a user-level change: .* `crystallise revert N`"):
        revert_change(version.changeset_id, home=home)


def test_migration_2_backfills_owners_of_existing_rows(store_url: str) -> None:
    engine = make_engine(store_url)
    try:
        migrate(engine, MIGRATIONS[:1])
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO changesets (id, learner, layer, status, summary, scope, created_at, updated_at) "
                "VALUES ('cs_old', 'reflection', 'context', 'committed', 's', :scope, 1, 1)"
            ), {"scope": '{"agent": "default", "org": "acme", "user": "u1"}'})
            conn.execute(sa.text(
                "INSERT INTO item_deltas (op, item_id, user_id, before_json, after_json, reason, created_at) "
                "VALUES ('add', 'it_1', 'u1', NULL, :after, '', 1)"
            ), {"after": '{"id": "it_1", "org_id": "acme", "user_id": "u1"}'})
        assert migrate(engine) == list(range(2, len(MIGRATIONS) + 1))
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT user_id, org_id FROM changesets")).one() == ("u1", "acme")
            assert conn.execute(sa.text("SELECT org_id FROM item_deltas")).scalar() == "acme"
    finally:
        engine.dispose()
