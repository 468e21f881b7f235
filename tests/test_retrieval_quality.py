"""Retrieval quality features: contextual indexing (meta.context), dates named in the query, LoCoMo learning."""

from __future__ import annotations

import json
from datetime import datetime, UTC

import pytest

from crystallise.context.index import embed_text, lexical_text
from crystallise.context.query_dates import date_window, observed_at, parse_date
from crystallise.context.retrieve import search
from crystallise.types import Delta, Item
from tests.helpers import new_home


def ts(y: int, m: int, d: int) -> float:
    return datetime(y, m, d, tzinfo=UTC).timestamp()


@pytest.fixture
def home(tmp_path, store_url):
    h = new_home(tmp_path, store_url)
    yield h
    h.close()


def add(home, *items: Item) -> None:
    home.store.apply_item_deltas([Delta(op="add", target="item", item_id=i.id, after=i.to_dict()) for i in items])


def note(text: str, user: str = "u1", **meta) -> Item:
    return Item(text=text, kind="note", level="user", user_id=user, meta=meta)


# -- dates named in a query ---------------------------------------------------------------------


@pytest.mark.parametrize("query, lo, hi", [
    ("What did John share on 7 July, 2023?", ts(2023, 7, 7), ts(2023, 7, 8)),
    ("what happened on July 7th 2023", ts(2023, 7, 7), ts(2023, 7, 8)),
    ("the 21st of Nov 2022 meeting", ts(2022, 11, 21), ts(2022, 11, 22)),
    ("logs from 2024-02-29", ts(2024, 2, 29), ts(2024, 3, 1)),
    ("What did Caroline paint in May 2023?", ts(2023, 5, 1), ts(2023, 6, 1)),
    ("plans for December, 2023", ts(2023, 12, 1), ts(2024, 1, 1)),
    ("Which trips did Tim take in 2022?", ts(2022, 1, 1), ts(2023, 1, 1)),
])
def test_date_window_has_the_granularity_the_query_states(query, lo, hi):
    assert date_window(query) == (lo, hi)


@pytest.mark.parametrize("query", ["When did Caroline go to the support group?", "the 2023 budget",
                                   "may I ask about 31 February 2023", "room 2023", ""])
def test_no_window_without_a_real_date(query):
    assert date_window(query) is None


def test_parse_date_and_observed_at():
    assert parse_date("1:56 pm on 8 May, 2023") == ts(2023, 5, 8)
    assert parse_date("May 2023") is None  # a month is not a date
    assert observed_at(Item(text="x", meta={"observed_at": 5.0})) == 5.0
    item = Item(text="x", meta={"observed_at": "yesterday"})
    assert observed_at(item) == item.created_at


def test_a_date_in_the_query_ranks_what_was_said_then_first(home):
    # four equally matching notes, observed in different months; the query names one month
    months = [(2023, 3), (2023, 5), (2023, 7), (2023, 9)]
    items = [note(f"Caroline talked about her painting class ({y}-{m})", observed_at=ts(y, m, 10))
             for y, m in months]
    add(home, *items)
    hits = search("What did Caroline say about painting in July 2023?", user="u1", k=4, mode="lexical", home=home)
    assert hits[0].item.id == items[2].id and "date" in hits[0].ranks
    plain = search("What did Caroline say about painting in July 2023?", user="u1", k=4, mode="lexical",
                   home=home, dates=False)
    assert all("date" not in h.ranks for h in plain)
    # a list to fuse, not a filter: items outside the window are still served
    assert {h.item.id for h in hits} == {i.id for i in items}


# -- contextual indexing --------------------------------------------------------------------------


def test_lexical_text_adds_context_but_the_vector_and_the_pack_do_not():
    it = note("I loved it, so inspiring!", context="Melanie: Which book was your favourite?")
    assert lexical_text(it) == "I loved it, so inspiring! Melanie: Which book was your favourite?"
    assert embed_text(it) == "I loved it, so inspiring!"
    assert lexical_text(note("plain")) == "plain" and lexical_text(note("x", context=3)) == "x"


def test_context_makes_a_reply_findable_by_the_question_it_answers(home):
    import crystallise

    reply = note("Becoming Nicole by Amy Ellis Nutt, it was so inspiring!",
                 context="Melanie: Which book would you recommend to me?")
    other = note("I went hiking with my family last weekend")
    add(home, reply, other)
    hits = search("What book did Caroline recommend?", user="u1", k=2, mode="lexical", home=home)
    assert hits and hits[0].item.id == reply.id
    pack = crystallise.context(user="u1", query="What book did Caroline recommend?", home=home)
    assert "Becoming Nicole" in pack.text and "Which book would you" not in pack.text
    assert {"pack_ms", "record_ms"} <= set(pack.timings)


# -- the LoCoMo learner ---------------------------------------------------------------------------


def test_locomo_learner_keeps_provenance_context_and_dates(home, tmp_path):
    from bench.locomo import learn_conversation, load_samples

    sample = {"sample_id": "conv-x", "qa": [], "conversation": {
        "speaker_a": "Ann", "speaker_b": "Bob", "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [{"speaker": "Ann", "dia_id": "D1:1", "text": "Which book should I read?"},
                      {"speaker": "Bob", "dia_id": "D1:2", "text": "Dune, for sure."},
                      {"speaker": "Ann", "dia_id": "D1:3", "text": "Thanks!"}]}}
    path = tmp_path / "x.json"
    path.write_text(json.dumps([sample]))
    assert load_samples(path)[0]["sample_id"] == "conv-x"
    assert learn_conversation(home, sample, "note", context_width=1) == 3
    items = {i.meta["dia_ids"][0]: i for i in home.store.query_items(agent="locomo", user="conv-x", limit=10)}
    mid = items["D1:2"]
    assert mid.text == "Bob (1:56 pm on 8 May, 2023): Dune, for sure."
    assert mid.meta["context"] == "Ann: Which book should I read?\nAnn: Thanks!"
    assert mid.meta["observed_at"] == ts(2023, 5, 8) and mid.provenance
    hits = search("Which book did Bob suggest in May 2023?", agent="locomo", user="conv-x", k=3, mode="lexical",
                  home=home)
    assert {d for h in hits[:2] for d in h.item.meta["dia_ids"]} == {"D1:1", "D1:2"}  # the answer, by its context
