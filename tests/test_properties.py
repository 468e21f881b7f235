"""Property-based tests over the store and the SDK: arbitrary unicode (surrogates, NUL, zero-width, emoji),
nested JSON with NaN/inf and huge integers, odd ids and scores. Every call either succeeds and reads back
exactly, or raises a crystallise error that says what to change — and then nothing of it was written (never
a partial write, never a raw driver exception). Runs on SQLite and PostgreSQL with few examples each."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import crystallise
from crystallise.errors import CrystalliseError, NotFoundError
from crystallise.engine.home import Home
from crystallise.store import Store
from crystallise.types import Delta, Feedback, Item, Span, Trace

FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                      HealthCheck.too_slow])

odd_chars = st.one_of(st.characters(), st.sampled_from(["\x00", "\ud800", "\udfff", "\u200b", "\U0001f600", "\n",
                                                        "'", '"', "\\", "%", "_"]))
text = st.text(odd_chars, max_size=60)
numbers = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True))
json_values = st.recursive(st.one_of(st.none(), st.booleans(), numbers, text),
                           lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(text, kids, max_size=4)),
                           max_leaves=12)
ids = st.one_of(st.none(), text)


def same(a: Any, b: Any) -> bool:
    """Equal as JSON (NaN equals NaN; -0.0 keeps its sign)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def refused_cleanly(error: BaseException) -> None:
    assert isinstance(error, CrystalliseError), f"a raw {type(error).__name__} escaped: {error!r}"
    assert str(error).strip()


@pytest.fixture
def bare(store: Store) -> Store:
    store.redactor = None  # PII redaction would (rightly) rewrite random digits: test the store itself
    return store


@FEW
@given(name=text, agent=ids, org=ids, user=ids, value=json_values, output=json_values, meta=st.dictionaries(
    text, json_values, max_size=3), span_input=json_values, attrs=st.dictionaries(text, json_values, max_size=3))
def test_a_trace_round_trips_or_is_refused_whole(bare: Store, name: str, agent: Any, org: Any, user: Any,
                                                 value: Any, output: Any, meta: dict, span_input: Any,
                                                 attrs: dict) -> None:
    trace = Trace(name=name, agent_id=agent, org_id=org, user_id=user, input=value, output=output, metadata=meta,
                  spans=[Span(name="step", kind="tool", input=span_input, attributes=attrs)])
    before = bare.count_traces()
    try:
        bare.write_trace(trace)
    except Exception as error:  # noqa: BLE001 - the property is about which exceptions
        refused_cleanly(error)
        assert bare.count_traces() == before
        with pytest.raises(NotFoundError):
            bare.get_trace(trace.id)
        return
    got = bare.get_trace(trace.id)
    assert (got.name, got.agent_id, got.org_id, got.user_id) == (name, agent, org, user)
    assert same(got.input, value) and same(got.output, output) and same(got.metadata, meta)
    assert len(got.spans) == 1 and same(got.spans[0].input, span_input) and same(got.spans[0].attributes, attrs)


@FEW
@given(score=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)), label=st.one_of(st.none(), text),
       correction=json_values, comment=st.one_of(st.none(), text))
def test_feedback_round_trips_or_is_refused(bare: Store, score: Any, label: Any, correction: Any,
                                            comment: Any) -> None:
    trace = bare.write_trace(Trace(name="run", input="q"))
    fb = Feedback(trace_id=trace.id, score=score, label=label, correction=correction, comment=comment)
    try:
        bare.add_feedback(fb)
    except Exception as error:  # noqa: BLE001
        refused_cleanly(error)
        assert bare.get_trace(trace.id).feedback == []
        return
    [got] = bare.get_trace(trace.id).feedback
    stored = None if score is None else float(score) + 0.0  # a score of -0.0 is stored as 0.0 on every store
    assert same([got.score, got.label, got.correction, got.comment], [stored, label, correction, comment])


def test_a_negative_zero_score_is_stored_as_zero(bare: Store) -> None:
    # found by hypothesis in a fresh-clone run: SQLite returned 0.0 for -0.0, PostgreSQL kept the sign
    trace = bare.write_trace(Trace(name="run", input="q"))
    bare.add_feedback(Feedback(trace_id=trace.id, score=-0.0))
    assert json.dumps(bare.get_trace(trace.id).feedback[0].score) == "0.0"


@FEW
@given(body=st.text(odd_chars, min_size=0, max_size=80), meta=st.dictionaries(text, json_values, max_size=3),
       section=text, key=st.one_of(st.none(), text))
def test_an_item_delta_round_trips_or_changes_nothing(bare: Store, body: str, meta: dict, section: str,
                                                      key: Any) -> None:
    item = Item(text=body, kind="memory", level="agent", agent_id="ag", section=section, key=key, meta=meta)
    first = Item(text="a fact that is fine", kind="memory", level="agent", agent_id="ag")
    deltas = [Delta(op="add", target="item", item_id=first.id, after=first.to_dict()),
              Delta(op="add", target="item", item_id=item.id, after=item.to_dict())]
    try:
        bare.apply_item_deltas(deltas)
    except Exception as error:  # noqa: BLE001
        refused_cleanly(error)
        for it in (first, item):  # all or nothing: the good delta of the batch is not applied either
            with pytest.raises(NotFoundError):
                bare.get_item(it.id)
        return
    got = bare.get_item(item.id)
    assert (got.text, got.section, got.key) == (body, section, key) and same(got.meta, meta)


@pytest.fixture
def home(store_url: str, tmp_path: Path) -> Iterator[Home]:
    h = Home.init(tmp_path / "home", store_url=store_url)
    h.store.redactor = None
    yield h
    h.close()


@FEW
@given(name=text, value=json_values, answer=json_values, score=st.one_of(st.none(), st.floats()))
def test_the_sdk_records_exactly_or_says_why(home: Home, name: str, value: Any, answer: Any, score: Any) -> None:
    before, rejected = home.store.count_traces(), crystallise.tracing_stats().rejected
    try:
        with crystallise.trace(name, agent="a", input=value, home=home) as t:
            t.output = answer
            if score is not None:
                t.feedback(score=score)
    except Exception as error:  # noqa: BLE001
        refused_cleanly(error)
        # a refused feedback score fails the block: the trace is still recorded, whole, as an error;
        # a trace the store refuses (a NUL in its name, say) is not recorded at all
        written = home.store.list_traces(after_seq=0, limit=100_000)[before:]
        assert len(written) <= 1 and all(w.status == "error" and w.name == name for w in written)
        return
    try:
        got = home.store.get_trace(t.id)
    except NotFoundError:
        # tracing fails open (issue 18): a trace the store refuses (a NUL in its name, say) never raises into
        # the application; it is counted as refused and logged with the reason, and nothing of it is stored
        assert crystallise.tracing_stats().rejected > rejected
        assert home.store.count_traces() == before
        return
    assert got.name == name and same(got.input, value) and same(got.output, answer)
    assert score is None or math.isclose(got.feedback[0].score or 0.0, score)


def test_a_trace_the_store_refuses_is_counted_and_not_stored(home: Home) -> None:
    before, rejected = home.store.count_traces(), crystallise.tracing_stats().rejected
    with crystallise.trace("bad\x00name", agent="a", input="q", home=home) as t:
        t.output = "a"
    crystallise.flush(10)
    assert crystallise.tracing_stats().rejected == rejected + 1 and home.store.count_traces() == before


def test_a_huge_input_round_trips(bare: Store) -> None:
    huge = {"text": "é\u200b\x00" * 700_000, "n": [math.inf, -math.inf, 2**70]}
    trace = bare.write_trace(Trace(name="big", input=huge))
    assert same(bare.get_trace(trace.id).input, huge)


@FEW
@given(value=st.text(odd_chars, max_size=40), n=st.one_of(st.integers(), st.floats(allow_nan=True), text))
def test_a_task_call_answers_or_says_why(home: Home, value: str, n: Any) -> None:
    """`@task` inputs: a typed signature takes any text; a wrong type is refused before anything runs."""
    @crystallise.task(model="scripted", home=home)
    def echo(text: str, count: int) -> str:
        """Repeat the text."""
        raise NotImplementedError

    before = home.store.count_traces()
    try:
        out = echo(value, count=n)
    except Exception as error:  # noqa: BLE001
        refused_cleanly(error)
        written = home.store.list_traces(after_seq=0, limit=100_000)[before:]
        assert len(written) <= 1 and all(w.status == "error" for w in written)
        return
    assert isinstance(out, str)
    [recorded] = home.store.list_traces(after_seq=0, limit=100_000, with_children=True)[before:]
    # the input as validated: the text exactly, the count as the integer pydantic made of it ("5" -> 5)
    assert recorded.input["text"] == value and isinstance(recorded.input["count"], int) and recorded.status == "ok"
    assert recorded.input["count"] == int(n)


def test_new_ids_are_unique_random_hex_and_a_forked_child_never_repeats_its_parent() -> None:
    import os as _os
    import re as _re

    from crystallise.types import new_id

    ids = [new_id("tr_") for _ in range(20_000)]  # several pool refills
    assert len(set(ids)) == len(ids) and all(_re.fullmatch(r"tr_[0-9a-f]{16}", i) for i in ids)
    read, write = _os.pipe()
    pid = _os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        _os.close(read)
        _os.write(write, " ".join(new_id() for _ in range(50)).encode())
        _os._exit(0)
    _os.close(write)
    parent = {new_id() for _ in range(50)}
    with _os.fdopen(read) as f:
        child = set(f.read().split())
    _os.waitpid(pid, 0)
    assert len(child) == 50 and not parent & child
