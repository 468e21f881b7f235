"""Retrieval quality features: contextual indexing (meta.context), dates named in the query, LoCoMo learning."""

from __future__ import annotations

import json
from datetime import datetime, UTC

import numpy as np
import pytest

from crystallise.context.index import embed_text, lexical_text
from crystallise.context.query_dates import date_window, observed_at, parse_date
from crystallise.engine.serving import search
from crystallise.types import Delta, Item


def ts(y: int, m: int, d: int) -> float:
    return datetime(y, m, d, tzinfo=UTC).timestamp()



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


# -- the hot path: BM25 accumulation, sign-bit prefilter -------------------------------------------


def test_bm25_dense_and_sparse_accumulation_agree():
    from crystallise.context.lexical import BM25Index

    ix = BM25Index()
    docs = ["red apple pie", "green apple", "red car", "blue car wash", "apple red red"] * 40
    for i, d in enumerate(docs):
        ix.add(i, d)
    dense_slots, dense = ix.scores("red apple car")  # many postings: the dense accumulator
    assert len(dense_slots) == len(docs)
    ix2 = BM25Index()
    for i, d in enumerate(docs):
        ix2.add(i, d)
    ix2._lengths = np.zeros(100_000, dtype=np.float32)  # noqa: SLF001 - force the sparse (sort) path
    ix2._lengths[: len(docs)] = ix._lengths[: len(docs)]
    sparse_slots, sparse = ix2.scores("red apple car")
    assert np.array_equal(dense_slots, sparse_slots) and np.allclose(dense, sparse)
    ix.add(0, "nothing in common")  # a change invalidates cached weights
    assert 0 not in set(ix.scores("red apple car")[0].tolist())


def test_sign_bit_prefilter_finds_the_exact_best_and_respects_the_mask(monkeypatch):
    from crystallise.context import index as index_mod
    from crystallise.context.index import Block

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    block = Block(64)
    items = [Item(text=f"t{i}", kind="memory", level="user", user_id="u") for i in range(3000)]
    for it, v in zip(items, vectors):
        block.put(it, v)
    mask = block.mask(None, None)
    monkeypatch.setattr(index_mod, "PREFILTER_MIN", 0)
    for i in range(0, 3000, 300):  # an item's own vector: Hamming 0, so it survives the prefilter and wins
        assert block.vector_top(vectors[i], 10, mask)[0][0] == items[i].id
    hidden = mask.copy()
    hidden[5] = False
    assert items[5].id not in {i for i, _ in block.vector_top(vectors[5], 10, hidden)}
    late = Item(text="late", kind="memory", level="user", user_id="u")
    block.put(late, vectors[7])  # added after the bits were built: indexed on put
    assert {i for i, _ in block.vector_top(vectors[7], 2, block.mask(None, None))} == {late.id, items[7].id}
    mask = block.mask(None, None)
    monkeypatch.setattr(index_mod, "PREFILTER_MIN", 10**9)
    exact = [i for i, _ in block.vector_top(vectors[1], 10, mask)]
    monkeypatch.setattr(index_mod, "PREFILTER_MIN", 0)
    approx = [i for i, _ in block.vector_top(vectors[1], 10, mask)]
    assert len(set(exact) & set(approx)) >= 8  # 1,000 of 3,000 candidates kept: near-exact


def test_locomo_session_level_recall_counts_distinct_sessions_in_rank_order():
    from types import SimpleNamespace

    from bench.locomo import _session_hit

    def hit(*dia: str) -> SimpleNamespace:
        return SimpleNamespace(item=SimpleNamespace(meta={"dia_ids": list(dia)}))

    ranking = [hit("D1:1"), hit("D1:4"), hit("D2:2"), hit("D3:9"), hit("D1:2"), hit("D4:1")]
    assert _session_hit(ranking, {"D3:1"}, [1, 2, 3, 5]) == {1: 0.0, 2: 0.0, 3: 1.0, 5: 1.0}
    assert _session_hit(ranking, {"D9:1", "D2:7"}, [1, 2]) == {1: 0.0, 2: 1.0}  # any evidence session counts
    assert _session_hit(ranking, {"D7:1"}, [5]) == {5: 0.0}
    assert _session_hit([], {"D1:1"}, [5]) == {5: 0.0}
