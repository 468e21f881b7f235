"""Linked notes: keywords, links written both ways as notes arrive, one-hop following, cascade on delete."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from crystallise.context.embed import get_embedder
from crystallise.context.index import index_for
from crystallise.context.notes import keywords, link_all, make_note, neighbours
from crystallise.engine.serving import recall, search
from crystallise.errors import ValidationError
from crystallise.store.schema import item_links, items
from crystallise.types import Delta



def add(home, *notes):
    home.store.apply_item_deltas([Delta(op="add", target="item", item_id=n.id, after=n.to_dict()) for n in notes])
    return notes


def test_make_note_scopes_and_keywords():
    n = make_note("  Caroline joined the LGBTQ support group;  the support group meets weekly ", user="c1")
    assert n.kind == "note" and n.level == "user" and n.text.startswith("Caroline joined")
    assert n.meta["keywords"][:2] == ["support", "group"] and "the" not in n.meta["keywords"]
    assert make_note("x y z", org="acme").level == "org" and make_note("x y z").level == "agent"
    assert keywords("") == []
    with pytest.raises(ValidationError):
        make_note("   ")


def test_new_notes_link_to_neighbours_both_ways_as_they_arrive(home):
    a, b, far = add(home, make_note("Caroline went hiking in the mountains with her dog", user="c1"),
                    make_note("Melanie paints sunsets at the lake every weekend", user="c1"),
                    make_note("Quarterly tax filing deadline for the bakery", user="c1"))
    recall("hiking", user="c1", home=home)  # the index sees the first notes and links them
    first = home.store.get_links([a.id, b.id, far.id])
    # a later note about hiking links to the hiking note, in both directions
    (c,) = add(home, make_note("Caroline went hiking in the mountains again with her dog", user="c1"))
    recall("anything", user="c1", home=home)
    links = {(s, d) for s, d, _ in home.store.get_links([a.id, c.id])}
    assert (c.id, a.id) in links and (a.id, c.id) in links
    assert all(far.id not in (s, d) for s, d, _ in home.store.get_links([c.id]))
    score = {(s, d): sc for s, d, sc in home.store.get_links([c.id])}[(c.id, a.id)]
    assert 0.35 <= score <= 1.0
    assert len(first) <= len(home.store.get_links([a.id, b.id, far.id]))


def test_follow_links_adds_linked_items_one_hop(home):
    index = index_for(home.store, get_embedder("hash"))
    a, b, c = add(home, make_note("Project Falcon kickoff is on Monday at 9", user="u1"),
                  make_note("Project Falcon kickoff agenda: budget and hiring", user="u1"),
                  make_note("Unrelated: the office coffee machine is broken", user="u1"))
    index.sync(home.store)
    # an explicit link from the coffee note to the kickoff note (e.g. written by a curator)
    home.store.put_links([(a.id, c.id, 0.9, "manual"), (c.id, a.id, 0.9, "manual")])
    plain = [h.item.id for h in search("Falcon kickoff Monday", user="u1", k=2, mode="lexical", home=home)]
    assert c.id not in plain
    linked = search("Falcon kickoff Monday", user="u1", k=3, mode="lexical", follow_links=True, home=home)
    assert c.id in [h.item.id for h in linked]
    assert "link" in next(h for h in linked if h.item.id == c.id).ranks


def test_links_never_cross_users_and_cascade_on_delete(home):
    mine, theirs = add(home, make_note("The wifi password is on the fridge", user="alice"),
                       make_note("The wifi password is on the fridge", user="bob"))
    index = index_for(home.store, get_embedder("hash"))
    index.sync(home.store)
    assert neighbours(index, mine) == []  # an identical note of another user is no neighbour
    assert link_all(home.store, index) == 0
    # a (hostile) link across users written straight into the store is not followed
    home.store.put_links([(mine.id, theirs.id, 1.0, "manual")])
    seen = {i.id for i in recall("wifi password", user="alice", follow_links=True, k=10, home=home)}
    assert seen == {mine.id}
    with home.store.engine.begin() as conn:
        conn.execute(sa.delete(items).where(items.c.id == theirs.id))
        assert conn.execute(sa.select(item_links).where(item_links.c.dst_id == theirs.id)).first() is None
