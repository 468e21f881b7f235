"""Linked notes (A-MEM style): notes carry keywords and link to their nearest related items.

    note = make_note("Caroline joined an LGBTQ support group in May", user="conv-26")
      -> Item(kind="note", meta={"keywords": ["caroline", "joined", "lgbtq", ...]})
    when an index first sees a new note (index.py sync hook):
      neighbours = the `max_links` most similar items the note's owner may see, cosine >= threshold
      links note -> neighbour and neighbour -> note (both directions), stored in item_links
    retrieval with follow_links=True adds the linked items of the top hits (one hop)

A-MEM asks an LLM for keywords, tags and a context line; here keywords are the note's
own content words (deterministic, no model), and links come from the embedder, so the
graph grows as notes arrive without a learner round. Links are derived data, like the
vectors: they are written straight to the store (not through the gate) and cascade away
with their items.

Scope: a note links only to items in its own block or in blocks every reader of the note
can also read (user -> that user's org and agent; org -> its agent items; agent -> agent),
and following a link always re-checks that the target is visible to the reader.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from crystallise.config import ENV_LINK_THRESHOLD, env
from crystallise.context.lexical import STOP_WORDS
from crystallise.errors import ValidationError
from crystallise.store.base import Store
from crystallise.types import Item

__all__ = ["LINK_THRESHOLDS", "keywords", "link_all", "link_new_notes", "make_note", "neighbours"]

# Cosine above which two items count as related, per embedder family (minilm's scale
# differs from hashed n-grams'); `CRYSTALLISE_LINK_THRESHOLD` overrides.
LINK_THRESHOLDS = {"minilm": 0.5, "hash": 0.35}
MAX_LINKS = 5
# A first load links notes that have no links yet only if there are at most this many
# (linking is one matvec per note); larger stores run `crystallise notes link`.
FIRST_LOAD_LINK_LIMIT = 2000


def keywords(text: str, limit: int = 8) -> list[str]:
    """Content words of `text`, most frequent then longest first: the note's keywords.

    >>> keywords("The support group met; Caroline loved the support group.")
    ['support', 'group', 'caroline', 'loved']
    """
    import re

    words = [w for w in re.findall(r"[a-z][a-z0-9'-]+", text.lower()) if w not in STOP_WORDS and len(w) > 2]
    counts = Counter(words)
    first = {w: i for i, w in reversed(list(enumerate(words)))}
    return sorted(counts, key=lambda w: (-counts[w], first[w]))[:limit]


def make_note(
    text: str,
    *,
    agent: str = "default",
    org: str | None = None,
    user: str | None = None,
    keywords_: Sequence[str] | None = None,
    source: str = "user",
    trust: float = 1.0,
    provenance: Sequence[str] = (),
    meta: dict[str, Any] | None = None,
) -> Item:
    """A note item for a scope (user > org > agent: the narrowest id given), with its keywords in meta."""
    text = " ".join(str(text).split())
    if not text:
        raise ValidationError("a note needs non-empty text")
    level = "user" if user else "org" if org else "agent"
    data = dict(meta or {})
    data["keywords"] = list(keywords_) if keywords_ is not None else keywords(text)
    return Item(text=text, kind="note", level=level, agent_id=agent, org_id=org, user_id=user, section="notes",
                source=source, trust=trust, provenance=list(provenance), meta=data)


def threshold_for(embedder_name: str) -> float:
    forced = env(ENV_LINK_THRESHOLD)
    if forced:
        return float(forced)
    family = embedder_name.split("-", 1)[0]
    return LINK_THRESHOLDS.get(family, 0.5)


def _reader_keys(index: Any, item: Item) -> list[Any]:
    """Blocks every reader of `item` can read: its own and the broader ones of its scope."""
    from crystallise.context.index import block_key

    own = block_key(item)
    keys = [own]
    if item.level == "user" and item.org_id:
        keys.append(("org", item.org_id, None))
    if item.level in ("user", "org"):
        keys.append(("agent", item.agent_id, None))
    return [k for k in keys if k in index.blocks]


def neighbours(index: Any, item: Item, k: int = MAX_LINKS, threshold: float | None = None) -> list[tuple[str, float]]:
    """The `k` most similar items to `item` (by its stored vector) above `threshold`, best first."""
    from crystallise.context.index import block_key

    own = index.blocks.get(block_key(item))
    if own is None or item.id not in own.slot_of:
        return []
    vector = own.matrix[own.slot_of[item.id]].copy()
    limit = threshold_for(index.embedder.name) if threshold is None else threshold
    found: list[tuple[str, float]] = []
    for key in _reader_keys(index, item):
        block = index.blocks[key]
        found += [(i, s) for i, s in block.vector_top(vector, k + 1, block.mask(None, None)) if i != item.id]
    found = [(i, s) for i, s in found if s >= limit]
    found.sort(key=lambda p: (-p[1], p[0]))
    return found[:k]


def _links_for(index: Any, notes: Sequence[Item]) -> list[tuple[str, str, float, str]]:
    reason = f"similar:{index.embedder.name}"
    links: list[tuple[str, str, float, str]] = []
    for note in notes:
        for other, score in neighbours(index, note):
            links += [(note.id, other, score, reason), (other, note.id, score, reason)]
    return links


def link_new_notes(store: Store, index: Any, new: Sequence[Item]) -> int:
    """The index's sync hook: link each newly seen note to its neighbours, both directions."""
    notes = [it for it in new if it.kind == "note"]
    if not notes:
        return 0
    if len(notes) > FIRST_LOAD_LINK_LIMIT:
        return 0  # a bulk first load: `link_all` does it on request
    linked = {src for src, _, _ in store.get_links([n.id for n in notes])}
    todo = [n for n in notes if n.id not in linked]
    return store.put_links(_links_for(index, todo)) if todo else 0


def link_all(store: Store, index: Any, *, relink: bool = False) -> int:
    """Link every indexed note (those without links, or all with `relink`); returns links written."""
    from crystallise.context.index import KINDS

    index.sync(store)
    note_code = KINDS.index("note")
    ids = [i for i, key in index.where.items()
           if index.blocks[key].kind[index.blocks[key].slot_of[i]] == note_code]
    todo = list(store.items_by_ids(ids).values())
    if not relink:
        linked = {src for src, _, _ in store.get_links([n.id for n in todo])}
        todo = [n for n in todo if n.id not in linked]
    return store.put_links(_links_for(index, todo)) if todo else 0
