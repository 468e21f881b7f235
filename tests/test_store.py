"""The store protocol against SQLite and a real PostgreSQL (the `store` fixture runs both)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crystallise.errors import ConfigError, NotFoundError, StoreError, ValidationError
from crystallise.store import MIGRATIONS, SqlStore, Store, migrate, open_store, schema
from crystallise.types import ChangeSet, Delta, Feedback, Item, Span, Trace, Version

SRC = str(Path(__file__).resolve().parents[1] / "src")


def engine(store: Store) -> sa.Engine:
    assert isinstance(store, SqlStore)
    return store.engine


def rows(store: Store, table: sa.Table) -> list[dict[str, Any]]:
    with engine(store).connect() as conn:
        return [dict(row) for row in conn.execute(sa.select(table)).mappings()]


def add(store: Store, *items: Item) -> None:
    store.apply_item_deltas([Delta(op="add", target="item", item_id=i.id, after=i.to_dict()) for i in items])


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=60)


# -- traces ------------------------------------------------------------------------------


def test_store_satisfies_protocol(store: Store) -> None:
    assert isinstance(store, Store)


def test_the_protocol_is_the_whole_public_store() -> None:
    """One Store protocol that matches the implementation: every public method, no more, no less."""
    from crystallise.store.sql import SqlStore

    public = lambda cls: {n for n in dir(cls) if not n.startswith("_")}  # noqa: E731
    assert public(SqlStore) - {"engine", "redactor"} == public(Store) - {"engine", "redactor"}


def test_trace_round_trip_with_spans_and_feedback(store: Store) -> None:
    trace = Trace(
        name="answer",
        agent_id="support",
        org_id="acme",
        user_id="u1",
        session_id="s1",
        input={"question": "2+2?", "nested": [1, 2.5, None, True]},
        output="4",
        ended_at=123.25,
        metadata={"model": "m", "ünïcode": "✓"},
        spans=[Span(name="llm", kind="llm", attributes={"tokens": 7}), Span(name="calc", kind="tool", error="boom")],
        feedback=[
            Feedback(trace_id="", score=1.0, label="right"),
            Feedback(trace_id="", source="implicit", kind="retry"),
        ],
    )
    written = store.write_trace(trace)
    assert written.seq is not None and trace.seq is None  # the argument is not modified
    assert [s.trace_id for s in written.spans] == [trace.id, trace.id]
    assert store.get_trace(trace.id) == written
    assert store.get_trace(trace.id).outcome == 1.0
    store.add_feedback(Feedback(trace_id=trace.id, score=0.0, comment="actually wrong"))
    assert store.get_trace(trace.id).outcome == 0.0  # feedback keeps insertion order


def test_seq_is_monotonic_and_after_seq_pages(store: Store) -> None:
    written = [store.write_trace(Trace(name=f"n{i % 2}", agent_id="a" if i < 5 else "b")) for i in range(7)]
    seqs = [t.seq or 0 for t in written]
    assert seqs == sorted(seqs) and len(set(seqs)) == 7
    pages, after = [], 0
    while page := store.list_traces(after_seq=after, limit=3):
        pages.append([t.id for t in page])
        after = page[-1].seq or 0
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [tid for page in pages for tid in page] == [t.id for t in written]
    assert [t.id for t in store.list_traces(agent="b")] == [t.id for t in written[5:]]
    assert len(store.list_traces(name="n0")) == 4
    assert store.list_traces(limit=0) == []
    assert store.count_traces() == 7
    with pytest.raises(ValidationError):
        store.list_traces(limit=-1)


def test_list_traces_children_in_bulk(store: Store) -> None:
    for i in range(20):
        store.write_trace(Trace(spans=[Span(name="s")], feedback=[Feedback(trace_id="", score=i / 20)]))
    statements: list[str] = []

    def listener(*args: Any) -> None:
        statements.append(args[2])

    sa.event.listen(engine(store), "before_cursor_execute", listener)
    try:
        bare = store.list_traces()
        n_bare = len(statements)
        full = store.list_traces(with_children=True)
    finally:
        sa.event.remove(engine(store), "before_cursor_execute", listener)
    assert all(t.spans == [] and t.feedback == [] for t in bare)
    assert all(len(t.spans) == 1 and len(t.feedback) == 1 for t in full)
    assert len(statements) - n_bare <= n_bare + 2  # traces + spans + feedback, not one query per trace


def test_duplicate_trace_id_is_rejected_and_nothing_written(store: Store) -> None:
    first = store.write_trace(Trace(id="tr_dup", output="first", spans=[Span(name="a")]))
    again = Trace(id="tr_dup", output="second", spans=[Span(name="b")], feedback=[Feedback(trace_id="", score=0.0)])
    with pytest.raises(ValidationError, match="trace tr_dup was already recorded; traces are immutable"):
        store.write_trace(again)
    assert store.get_trace("tr_dup") == first
    assert store.count_traces() == 1 and len(rows(store, schema.spans)) == 1 and rows(store, schema.feedback) == []


def test_trace_write_is_all_or_nothing(store: Store) -> None:
    store.write_trace(Trace(spans=[Span(name="a", id="sp_taken")]))
    with pytest.raises(ValidationError, match="already recorded"):
        store.write_trace(Trace(id="tr_b", spans=[Span(name="ok"), Span(name="clash", id="sp_taken")]))
    with pytest.raises(NotFoundError):
        store.get_trace("tr_b")
    assert store.count_traces() == 1 and len(rows(store, schema.spans)) == 1


def test_feedback_on_unknown_trace(store: Store) -> None:
    with pytest.raises(NotFoundError, match=r"trace tr_nope not found.*crystallise traces list"):
        store.add_feedback(Feedback(trace_id="tr_nope", score=1.0))
    assert rows(store, schema.feedback) == []


def test_unknown_ids_name_the_id_and_the_command(store: Store) -> None:
    calls: list[tuple[Callable[[], object], str]] = [
        (lambda: store.get_trace("tr_x"), "tr_x.*crystallise traces list"),
        (lambda: store.get_item("it_x"), "it_x.*crystallise items list"),
        (lambda: store.get_changeset("cs_x"), "cs_x.*crystallise changesets list"),
        (lambda: store.get_version(42), "42.*crystallise log"),
        (lambda: store.mark_reverted(42, 43), "42.*crystallise log"),
    ]
    for call, pattern in calls:
        with pytest.raises(NotFoundError, match=pattern):
            call()


@pytest.mark.parametrize(
    "trace",
    [
        Trace(name="bad\x00name"),
        Trace(status="maybe"),  # type: ignore[arg-type]
        Trace(input={"when": object()}),
        Trace(feedback=[Feedback(trace_id="", score=2.0)]),
        Trace(spans=[Span(name="s", kind="banana")]),  # type: ignore[arg-type]
        Trace(spans=[Span(name="s", id="same"), Span(name="t", id="same")]),
    ],
    ids=["nul", "status", "not-json", "score", "span-kind", "span-ids"],
)
def test_invalid_traces_are_rejected_before_writing(store: Store, trace: Trace) -> None:
    with pytest.raises(ValidationError):
        store.write_trace(trace)
    assert store.count_traces() == 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
plain_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)  # NUL: JSON fields only
timestamps = st.floats(min_value=0, max_value=4e9)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=plain_text,
    agent=plain_text.filter(bool),
    error=st.none() | plain_text,
    payload=json_values,
    metadata=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    span_name=plain_text,
    attributes=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    started=timestamps,
    score=st.none() | st.floats(min_value=0, max_value=1),
    comment=st.none() | plain_text,
)
def test_arbitrary_unicode_round_trips_exactly(
    store: Store,
    name: str,
    agent: str,
    error: str | None,
    payload: Any,
    metadata: dict[str, Any],
    span_name: str,
    attributes: dict[str, Any],
    started: float,
    score: float | None,
    comment: str | None,
) -> None:
    trace = Trace(
        name=name, agent_id=agent, user_id=name or None, error=error, input=payload, output=[payload],
        started_at=started, metadata=metadata,
        spans=[Span(name=span_name, input=payload, attributes=attributes, started_at=started)],
        feedback=[Feedback(trace_id="", score=score, comment=comment, correction=payload, label=name)],
    )  # fmt: skip
    written = store.write_trace(trace)
    assert store.get_trace(trace.id).to_dict() == written.to_dict()
    assert store.get_trace(trace.id).to_dict() == trace.to_dict() | {
        "seq": written.seq,
        "spans": [s.to_dict() | {"trace_id": trace.id} for s in trace.spans],
        "feedback": [f.to_dict() | {"trace_id": trace.id} for f in trace.feedback],
    }


# -- items -------------------------------------------------------------------------------


def test_item_add_update_retire_and_delete_by_none(store: Store) -> None:
    item = Item(text="Refunds take 5 days", section="billing", provenance=["tr_1"], meta={"k": [1]})
    add(store, item)
    assert store.get_item(item.id) == item
    updated = Item.from_dict(item.to_dict() | {"text": "Refunds take 3 days", "updated_at": item.updated_at + 1})
    retired = Item.from_dict(updated.to_dict() | {"status": "retired"})
    store.apply_item_deltas(
        [Delta(op="update", target="item", item_id=item.id, before=item.to_dict(), after=updated.to_dict())]
    )
    assert store.get_item(item.id).text == "Refunds take 3 days"
    store.apply_item_deltas([Delta(op="retire", target="item", item_id=item.id, after=retired.to_dict())])
    assert store.get_item(item.id).status == "retired"
    assert store.query_items() == [] and store.query_items(status=("retired",)) == [retired]
    store.apply_item_deltas([Delta(op="add", target="item", item_id=item.id, after=item.to_dict()).inverted()])
    with pytest.raises(NotFoundError):
        store.get_item(item.id)
    ledger = rows(store, schema.item_deltas)
    assert [r["op"] for r in ledger] == ["add", "update", "retire", "update"]
    assert json.loads(ledger[1]["before_json"])["text"] == "Refunds take 5 days"  # the real previous row
    assert ledger[-1]["after_json"] is None and all(r["version"] is None for r in ledger)


def test_update_keeps_counter_bumps_made_since_the_learner_read(store: Store) -> None:
    item = Item(text="Cite the order number")
    add(store, item)
    read = store.get_item(item.id)  # a learner reads the item ...
    store.bump_items([item.id], shown=5, helpful=2)  # ... while serving keeps counting
    after = read.to_dict() | {"text": "Always cite the order number", "harmful": read.harmful + 1}
    store.apply_item_deltas([Delta(op="update", target="item", item_id=item.id, before=read.to_dict(), after=after)])
    now_item = store.get_item(item.id)
    assert (now_item.text, now_item.shown, now_item.helpful, now_item.harmful) == (after["text"], 5, 2, 1)
    explicit = now_item.to_dict() | {"shown": 0}  # no `before`: an explicit overwrite
    store.apply_item_deltas([Delta(op="update", target="item", item_id=item.id, after=explicit)])
    assert store.get_item(item.id).shown == 0


@pytest.mark.parametrize(
    "bad",
    [
        Delta(op="update", target="item", item_id="it_missing", after=Item(text="x", id="it_missing").to_dict()),
        Delta(op="retire", target="item", item_id="it_missing", after=None),
        Delta(op="add", target="item", item_id="it_ok", after=Item(text="dup", id="it_ok").to_dict()),
        Delta(op="add", target="item", item_id="it_u", after=Item(text="x", id="it_u", level="user").to_dict()),
        Delta(op="add", target="item", item_id="it_x", after={"id": "it_x"}),
        Delta(op="set", target="artifact", path="playbook.md", after="text"),
    ],
    ids=["update-missing", "delete-missing", "add-twice", "user-without-user-id", "no-text", "artifact"],
)
def test_one_bad_delta_rolls_back_the_batch(store: Store, bad: Delta) -> None:
    good = Item(text="fine", id="it_ok")
    with pytest.raises(ValidationError):
        store.apply_item_deltas([Delta(op="add", target="item", item_id=good.id, after=good.to_dict()), bad])
    assert store.query_items(status=("active", "retired")) == []
    assert rows(store, schema.item_deltas) == []


def test_bump_items_concurrently_gives_the_exact_total(store: Store) -> None:
    a, b = Item(text="a"), Item(text="b")
    add(store, a, b)
    threads, per_thread = 6, 15

    def work() -> None:
        for _ in range(per_thread):
            store.bump_items([a.id, b.id, b.id, "it_missing"], shown=1, helpful=2)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    total = threads * per_thread
    assert (store.get_item(a.id).shown, store.get_item(a.id).helpful) == (total, 2 * total)
    assert (store.get_item(b.id).shown, store.get_item(b.id).harmful) == (2 * total, 0)
    with pytest.raises(ValidationError):
        store.bump_items([a.id], shown=-1)


def test_scope_isolation_is_a_privacy_boundary(store: Store) -> None:
    mine = Item(text="my secret passport number", level="user", org_id="acme", user_id="alice", id="it_alice")
    theirs = Item(text="bob secret passport number", level="user", org_id="acme", user_id="bob", id="it_bob")
    namesake = Item(text="other alice passport", level="user", org_id="globex", user_id="alice", id="it_alice2")
    acme = Item(text="acme passport policy", level="org", org_id="acme", id="it_acme")
    globex = Item(text="globex passport policy", level="org", org_id="globex", id="it_globex")
    agent = Item(text="passport checks", id="it_agent")
    other_agent = Item(text="passport other agent", agent_id="sales", id="it_sales")
    add(store, mine, theirs, namesake, acme, globex, agent, other_agent)

    def ids(**kw: Any) -> set[str]:
        return {i.id for i in store.query_items(agent="default", **kw)}

    assert ids(org="acme", user="alice") == {"it_alice", "it_acme", "it_agent"}
    assert ids(org="acme", user="alice", text="bob secret passport") == {"it_alice", "it_acme", "it_agent"}
    assert ids(org="acme", user="bob") == {"it_bob", "it_acme", "it_agent"}
    assert ids(org="globex", user="alice") == {"it_alice2", "it_globex", "it_agent"}
    assert ids(user="alice") == {"it_agent"}  # user ids are only unique within an org
    assert ids(org="acme") == {"it_acme", "it_agent"}
    assert ids() == {"it_agent"}
    assert ids(org="acme", user="alice", levels=("user",)) == {"it_alice"}
    assert {i.id for i in store.query_items(agent="sales")} == {"it_sales"}
    with pytest.raises(ValidationError):
        store.query_items(levels=("team",))


def test_lexical_search_ranks_and_filters(store: Store) -> None:
    both = Item(text="Shipping delays for parcels sent abroad", id="it_both", updated_at=1.0)
    one = Item(text="Shipping costs are listed on the website", id="it_one", updated_at=3.0)
    none = Item(text="Billing happens monthly", id="it_none", updated_at=2.0)
    tip = Item(text="Shipping delay workaround", kind="note", section="ops", id="it_note", status="candidate")
    add(store, both, one, none, tip)
    assert [i.id for i in store.query_items(text="shipping delay")] == ["it_both", "it_one"]
    assert [i.id for i in store.query_items(text="parcel")] == ["it_both"]  # stemmed
    assert [i.id for i in store.query_items()] == ["it_one", "it_none", "it_both"]  # updated_at desc
    assert [i.id for i in store.query_items(text="delays", kind="note", section="ops", status=("candidate",))] == [
        "it_note"
    ]
    assert [i.id for i in store.query_items(text="delay shipping", limit=1)] == ["it_both"]


@pytest.mark.parametrize("query", ['"', "*", "AND", "(", ")", "🙂", "", "   ", "NEAR(", "a:b", "'", "-", "OR OR", "^"])
def test_search_syntax_characters_never_raise(store: Store, query: str) -> None:
    add(store, Item(text="the shipping AND billing policy"))
    assert isinstance(store.query_items(text=query), list)
    assert len(store.query_items(text=f'shipping {query} "policy')) == 1
    if not any(ch.isalnum() for ch in query):
        assert store.query_items(text=query) == []


def test_search_index_follows_updates_and_deletes(store: Store) -> None:
    item = Item(text="alpha words")
    add(store, item)
    changed = item.to_dict() | {"text": "beta words"}
    store.apply_item_deltas([Delta(op="update", target="item", item_id=item.id, after=changed)])
    store.bump_items([item.id], shown=1)
    assert store.query_items(text="alpha") == [] and len(store.query_items(text="beta")) == 1
    store.apply_item_deltas([Delta(op="update", target="item", item_id=item.id, after=None)])
    assert store.query_items(text="beta") == []


# -- change sets and versions -------------------------------------------------------------


def changeset_adding(*items: Item) -> ChangeSet:
    deltas = [Delta(op="add", target="item", item_id=i.id, after=i.to_dict(), reason="seen twice") for i in items]
    deltas.append(Delta(op="set", target="artifact", path="playbook/general.md", before=None, after="- be brief\n"))
    return ChangeSet(learner="reflect", layer="context", deltas=deltas, provenance=["tr_1"], evidence={"n": 2})


def test_add_version_applies_deltas_ledger_and_commit_atomically(store: Store) -> None:
    item = Item(text="Answer in one sentence")
    cs = changeset_adding(item)
    store.save_changeset(cs)
    assert store.get_changeset(cs.id) == cs
    version = store.add_version(Version(number=0, changeset_id=cs.id, commit="abc123", message="learn"), cs)
    assert version.number == 1 and store.get_version(1) == version
    assert store.get_item(item.id) == item
    assert store.get_changeset(cs.id).status == "committed" and cs.status == "proposed"
    ledger = rows(store, schema.item_deltas)
    assert [(r["version"], r["changeset_id"], r["op"], r["item_id"]) for r in ledger] == [(1, cs.id, "add", item.id)]
    with pytest.raises(ValidationError, match="already committed as version 1"):
        store.add_version(Version(number=0, changeset_id=cs.id, commit="def", message="again"), cs)
    with pytest.raises(ValidationError, match="already committed"):
        store.save_changeset(cs)


def test_failed_add_version_changes_nothing(store: Store) -> None:
    cs = changeset_adding(Item(text="ok"))
    cs.deltas.append(
        Delta(op="update", target="item", item_id="it_missing", after=Item(text="x", id="it_missing").to_dict())
    )
    with pytest.raises(ValidationError, match="it_missing"):
        store.add_version(Version(number=0, changeset_id=cs.id, commit="abc", message="m"), cs)
    assert store.list_versions() == [] and store.query_items() == [] and rows(store, schema.item_deltas) == []
    with pytest.raises(NotFoundError):
        store.get_changeset(cs.id)


def test_version_numbering_listing_and_revert_marks(store: Store) -> None:
    def commit(number: int) -> Version:
        cs = ChangeSet(learner="l", layer="context")
        return store.add_version(Version(number=number, changeset_id="", commit="c", message="m"), cs)

    assert [commit(0).number, commit(0).number, commit(7).number, commit(0).number] == [1, 2, 7, 8]
    with pytest.raises(ValidationError, match="version 7 already exists"):
        commit(7)
    with pytest.raises(ValidationError):
        commit(-1)
    assert [v.number for v in store.list_versions()] == [8, 7, 2, 1]
    assert [v.number for v in store.list_versions(limit=2)] == [8, 7]
    store.mark_reverted(2, by=8)
    store.mark_reverted(2, by=8)  # idempotent
    assert store.get_version(2).reverted_by == 8
    with pytest.raises(ValidationError, match="already reverted by version 8"):
        store.mark_reverted(2, by=9)


def test_changesets_upsert_and_filter(store: Store) -> None:
    a = ChangeSet(learner="l", layer="context", created_at=1.0)
    b = ChangeSet(learner="l", layer="harness", created_at=2.0, summary="b")
    store.save_changeset(a)
    store.save_changeset(b)
    a.status, a.summary = "rejected", "worse on 3 cases"
    store.save_changeset(a)
    assert store.get_changeset(a.id) == a
    assert [c.id for c in store.list_changesets()] == [b.id, a.id]
    assert [c.id for c in store.list_changesets(status="rejected")] == [a.id]


# -- watermarks, migrations, durability, URLs ------------------------------------------


def test_watermarks(store: Store) -> None:
    assert store.get_watermark("reflect") == 0
    store.set_watermark("reflect", 5)
    store.set_watermark("reflect", 9)
    store.set_watermark("other", 1)
    assert (store.get_watermark("reflect"), store.get_watermark("other")) == (9, 1)
    with pytest.raises(ValidationError):
        store.set_watermark("reflect", -1)


def test_migrations_are_idempotent_and_match_schema(store: Store) -> None:
    assert migrate(engine(store)) == []
    recorded = rows(store, schema.schema_migrations)
    assert [r["version"] for r in recorded] == list(range(1, len(MIGRATIONS) + 1))
    inspector = sa.inspect(engine(store))
    for table in schema.metadata.sorted_tables:
        reflected = {c["name"] for c in inspector.get_columns(table.name)} - {"tsv"}
        assert reflected == set(table.columns.keys()), table.name

    calls: list[int] = []
    extra = [*MIGRATIONS, ("test_extra", lambda conn: calls.append(1))]
    assert migrate(engine(store), extra) == [len(extra)]
    assert migrate(engine(store), extra) == [] and calls == [1]
    with pytest.raises(StoreError, match="upgrade crystallise"):
        migrate(engine(store))  # the database is now newer than this code


def test_concurrent_first_opens_apply_each_migration_once(store_url: str) -> None:
    code = (
        "import json, sys, time\n"
        "from crystallise.store.engine import make_engine\n"
        "from crystallise.store.migrations import migrate\n"
        "engine = make_engine(sys.argv[1])\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "sys.stdout.write(json.dumps(migrate(engine)))\n"
    )
    start = str(time.time() + 1.5)
    env = {**os.environ, "PYTHONPATH": SRC}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, store_url, start], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err.decode() for _, err in results]
    applied = sorted(json.loads(out) for out, _ in results)
    assert applied == [[], [], list(range(1, len(MIGRATIONS) + 1))]


def test_acknowledged_trace_survives_immediate_exit(store_url: str) -> None:
    code = (
        "import os, sys\n"
        "from crystallise.store import open_store\n"
        "from crystallise.types import Trace, Span\n"
        "store = open_store(sys.argv[1])\n"
        "store.write_trace(Trace(id='tr_durable', output='kept', spans=[Span(name='s')]))\n"
        "os._exit(0)\n"
    )
    result = run_python(code, store_url)
    assert result.returncode == 0, result.stderr
    with open_store(store_url) as store:  # type: ignore[attr-defined]
        assert store.get_trace("tr_durable").output == "kept"


def test_in_memory_sqlite_store_is_safe_across_threads() -> None:
    store = open_store("sqlite://")
    item = Item(text="x")
    add(store, item)

    def work() -> None:
        for _ in range(30):
            store.bump_items([item.id], shown=1)

    workers = [threading.Thread(target=work) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert store.get_item(item.id).shown == 120
    store.close()


PRAGMAS = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")


def test_sqlite_connection_settings(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine(store).connect() as conn:
            pragmas = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in PRAGMAS}
        assert pragmas == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 30_000}
    finally:
        store.close()


def test_url_errors_name_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"mysql.*sqlite:///.*postgresql://"):
        open_store("mysql://u:pw@localhost/db")
    with pytest.raises(ConfigError, match="mkdir -p"):
        open_store(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    with pytest.raises(StoreError) as caught:
        open_store("postgresql://crystallise:hunter2@127.0.0.1:1/db")
    assert "***" in str(caught.value) and "hunter2" not in str(caught.value) and "running" in str(caught.value)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'crystallise\[postgres\]'"):
        open_store("postgresql://u:pw@localhost/db")


def test_count_traces_filters_like_list_traces_and_stops_at_the_limit(store: Store) -> None:
    for i in range(7):
        store.write_trace(Trace(name="answer" if i % 2 else "other", agent_id="a", org_id="o1" if i < 5 else "o2",
                                user_id=f"u{i % 3}"))
    first = store.list_traces(limit=1)[0].seq
    for filters in ({}, {"name": "answer"}, {"org": "o1"}, {"user": "u1", "org": "o1"}, {"after_seq": first},
                    {"agent": "nobody"}):
        assert store.count_traces(**filters) == len(store.list_traces(limit=100, **filters)), filters
    assert store.count_traces(limit=3) == 3 and store.count_traces(org="o1", limit=100) == 5
    assert store.count_traces(after_seq=first, limit=2) == 2


def test_sessions_after_reads_times_and_only_real_end_marks(store: Store) -> None:
    """The scheduler's per-tick session check: last time per session, and the metadata of traces that
    may mark an end. Hostile metadata that merely *mentions* an end is handed over as data, never as an end."""
    store.write_trace(Trace(name="x", session_id="s1", started_at=10.0, ended_at=20.0))
    store.write_trace(Trace(name="x", session_id="s1", started_at=30.0, ended_at=None))
    store.write_trace(Trace(name="x", session_id="s2", started_at=5.0, ended_at=6.0, metadata={"session_end": True}))
    store.write_trace(Trace(name="x", session_id="s3", started_at=5.0, ended_at=6.0,
                            metadata={"note": "session_end", "session.end": "true", "x": "'; DROP TABLE traces; --"}))
    store.write_trace(Trace(name="x", session_id=None, started_at=1.0, ended_at=2.0))
    marks = ("session_end", "session.end")
    seen = {s: (t, m) for _, s, t, m in store.sessions_after(after_seq=0, limit=100, marks=marks)}
    assert seen["s1"] == (30.0, []) and seen["s2"][1] == [{"session_end": True}]
    assert seen["s3"][1] == [{"session.end": "true"}]  # the end marks only: the caller decides, nothing else kept
    assert seen[None][0] == 2.0 and store.count_traces() == 5
    first_two = store.sessions_after(after_seq=0, limit=2, marks=marks)
    assert [(s, t) for _, s, t, _ in first_two] == [("s1", 30.0)]
