"""Serving the context layer: the pack of learned items an agent sees for a query.

    pack = crystallise.context(agent="support", org="acme", user="u1", query=q, budget_tokens=600)
    prompt = pack.text + "\n\n" + q

With a query, items come from hybrid retrieval (`retrieve.search`: BM25 + embeddings,
fused by reciprocal rank) over the three scopes the caller may see; the best are added
in fused order until the token budget is spent. Without a query, every visible item is
a candidate, best value (helpful - harmful) first. Either way the pack shows user items
first, then org, then agent, and a user's items are only ever visible to that user.

Serving follows scope (issue 15): a fact key is served once, from the most specific scope that
has it (user > org > agent, `context.items.most_specific`), and with a query only *relevant*
hits enter the pack (`Hit.relevant`: a shared word, or cosine >= `RELEVANCE_FLOOR`), so the
budget is never filled with unrelated items.

Skills are shown by name and description only (progressive disclosure); a skill's body
enters the pack when it is asked for (`load_skills=["name"]`, or `crystallise.load_skill`)
or, with `auto_skills=True`, when the query matches it strongly: the skill ranks in the
top 3 of *both* the lexical and the vector list. Inside a `crystallise.trace` the pack is
recorded as a retrieval span listing the ids shown (what credit assignment reads) and
the skills loaded.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from crystallise.backends.base import approx_tokens
from crystallise.context import at_time, retrieve
from crystallise.context import core_blocks as core
from crystallise.context.embed import Embedder
from crystallise.context.items import most_specific, validate_time
from crystallise.context.retrieve import Hit, Mode
from crystallise.engine.home import Home
from crystallise.engine.skills import load_skill
from crystallise.errors import NotFoundError, ValidationError
from crystallise.store.base import Store
from crystallise.traces.sdk import current_trace
from crystallise.types import Item

__all__ = ["ContextPack", "assemble", "clear_core_cache", "core_blocks", "recall", "search", "validate_as_of"]

_LEVEL_ORDER = {"user": 0, "org": 1, "agent": 2}
AUTO_SKILL_RANK = 3
CANDIDATES = 50  # hits fetched per query; the budget decides how many are shown
RELEVANCE_FLOOR = 0.3  # cosine below which a hit that shares no word with the query is left out


@dataclass
class ContextPack:
    text: str
    items: list[Item] = field(default_factory=list)
    tokens: int = 0
    skills_loaded: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def item_ids(self) -> list[str]:
        return [it.id for it in self.items]


def _servable(store: object, name: str) -> bool:
    """A skill's body may be loaded unless its item is quarantined or retired (no item: an older repo)."""
    try:
        item = store.get_item(f"it_skill_{name}")  # type: ignore[attr-defined]
    except NotFoundError:
        return True
    return bool(item.status == "active")


_CORE_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[str, str | None, str | None], tuple[Any, list[Item]]]] = \
    weakref.WeakKeyDictionary()
CORE_CACHE_SCOPES = 10_000


def clear_core_cache(store: Any) -> None:
    """Forget the cached core blocks of `store` (a hard deletion does not move the item watermark)."""
    _CORE_CACHE.pop(store, None)


def core_blocks(store: Store, agent: str, org: str | None, user: str | None) -> list[Item]:
    """The live core blocks visible to the scope (agent's, org's, the user's), one per level and label.

    On the hot path of every pack: answered from a per-store cache while the store's item
    watermark has not moved (~0.5 ms instead of a ~2 ms query at 5k items)."""
    mark = store.item_watermark()
    cache = _CORE_CACHE.setdefault(store, {})
    hit = cache.get((agent, org, user))
    if hit is not None and hit[0] == mark:
        return list(hit[1])
    found = store.query_items(agent=agent, org=org, user=user, kind="note", section=core.CORE, limit=1000)
    seen: dict[tuple[str, str], Item] = {}
    for it in sorted(found, key=lambda i: -i.updated_at):
        if core.is_core(it):
            seen.setdefault((it.level, core.label_of(it)), it)
    if len(cache) >= CORE_CACHE_SCOPES:
        cache.clear()
    cache[(agent, org, user)] = (mark, list(seen.values()))
    return list(seen.values())


def _line(it: Item) -> str:
    return f"- {it.text}"


def assemble(
    *,
    agent: str = "default",
    org: str | None = None,
    user: str | None = None,
    query: str | None = None,
    budget_tokens: int = 800,
    kind: str | None = None,
    home: Home | None = None,
    mode: str = "hybrid",
    follow_links: bool = False,
    load_skills: Sequence[str] = (),
    auto_skills: bool = False,
) -> ContextPack:
    """The context pack for a scope and query (see the module docstring)."""
    if isinstance(budget_tokens, bool) or not isinstance(budget_tokens, int) or budget_tokens <= 0:
        raise ValidationError(f"budget_tokens must be a positive integer, got {budget_tokens!r}")
    h = home or Home.from_env()
    store = h.store
    timings: dict[str, float] = {}
    triggered: list[str] = []
    if query is not None and query.strip():
        hits = search(query, agent=agent, org=org, user=user, k=CANDIDATES, kind=kind, mode=mode,  # type: ignore[arg-type]
                      follow_links=follow_links, home=h, timings=timings)
        ranked = most_specific([hit.item for hit in hits if hit.relevant(RELEVANCE_FLOOR)])
        if auto_skills:
            triggered = [hit.item.meta.get("skill", "") for hit in hits if hit.item.kind == "skill"
                         and hit.ranks.get("lexical", 99) <= AUTO_SKILL_RANK
                         and hit.ranks.get("vector", 99) <= AUTO_SKILL_RANK]
    else:
        rest = store.query_items(agent=agent, org=org, user=user, kind=kind, limit=1000)
        ranked = most_specific(sorted(rest, key=lambda i: (_LEVEL_ORDER.get(i.level, 3), -(i.helpful - i.harmful))))
    t_pack = time.perf_counter()
    pinned = core_blocks(store, agent, org, user)  # MemGPT's core memory: in every pack, first
    ranked = [it for it in ranked if not (core.is_core(it) or core.is_archival(it))]  # archival: paged, not packed
    pinned_text = core.render(pinned)
    used = approx_tokens(pinned_text) + 2 if pinned else 0
    if used > budget_tokens:
        raise ValidationError(
            f"the core memory of this scope takes {used} tokens, more than budget_tokens={budget_tokens}: raise "
            "the budget, or shorten a block (core_memory_replace / core_memory_set) — core memory is never dropped "
            "or cut")
    chosen: list[Item] = []
    for it in ranked:
        cost = approx_tokens(_line(it)) + 2
        if used + cost > budget_tokens:
            continue
        chosen.append(it)
        used += cost
    chosen.sort(key=lambda i: _LEVEL_ORDER.get(i.level, 3))  # stable: keeps relevance order within a level
    lines: list[str] = [pinned_text, ""] if pinned else []
    for level, title in (("user", "About this user"), ("org", "Organisation rules"), ("agent", "Playbook")):
        block = [_line(it) for it in chosen if it.level == level and it.kind != "skill"]
        if block:
            lines += [f"## {title}", *block, ""]
    skills = [it for it in chosen if it.kind == "skill"]
    if skills:
        lines += ["## Skills (load one with load_skill(name) for its instructions)", *map(_line, skills), ""]
    loaded: list[str] = []
    wanted = list(dict.fromkeys([*load_skills, *[t for t in triggered if t]]))
    if wanted:
        for name in wanted:
            if not _servable(store, name):
                continue  # quarantined or retired: its instructions wait for review
            skill = load_skill(name, home=h, agent=agent, org=org)
            body = f"## Skill: {skill.name}\n{skill.body.strip()}"
            cost = approx_tokens(body) + 2
            if used + cost > budget_tokens:
                continue
            lines += [body, ""]
            used += cost
            loaded.append(skill.name)
    timings["pack_ms"] = (time.perf_counter() - t_pack) * 1e3
    pack = ContextPack(text="\n".join(lines).strip(), items=[*pinned, *chosen], tokens=used, skills_loaded=loaded,
                       timings=timings)
    t_record = time.perf_counter()
    t = current_trace()
    if t is not None:
        with t.span("context", "retrieval", input={"query": query, "budget_tokens": budget_tokens}) as s:
            s.attributes["shown_items"] = pack.item_ids
            if loaded:
                s.attributes["loaded_skills"] = loaded
            s.output = {"tokens": used, "items": len(pack.items)}
    if pack.items:
        store.bump_items(pack.item_ids, shown=1)
    timings["record_ms"] = (time.perf_counter() - t_record) * 1e3
    return pack


def search(
    query: str,
    *,
    agent: str = "default",
    org: str | None = None,
    user: str | None = None,
    k: int = 10,
    kind: str | Sequence[str] | None = None,
    mode: Mode = "hybrid",
    follow_links: bool = False,
    as_of: float | None = None,
    depth: int | None = None,
    home: Home | None = None,
    embedder: Embedder | None = None,
    timings: dict[str, float] | None = None,
    dates: bool = True,
) -> list[Hit]:
    """The `k` best items for `query` visible to the scope, from the home's store (`context.retrieve.search`)."""
    retrieve.check_query(query, k, mode, agent, org, user)  # a bad argument is named before a missing home
    h = home or Home.from_env()
    if as_of is not None:  # the index holds today's items only: a point in time is read from the ledger
        found = at_time.search(query, store=h.store, embedder=embedder or h.embedder(), as_of=validate_as_of(as_of),
                               agent=agent, org=org, user=user, k=k, kinds=at_time.kinds_of(kind), mode=mode)
        return [Hit(item=it, score=score, ranks=ranks, similarity=cos) for it, score, ranks, cos in found]
    hits = retrieve.search(query, store=h.store, embedder=embedder or h.embedder(), agent=agent, org=org,
                           user=user, k=k, kind=kind, mode=mode, follow_links=follow_links, as_of=as_of,
                           depth=depth, timings=timings, dates=dates)
    kept = {id(it) for it in most_specific([hit.item for hit in hits], texts_once=False)}  # a key: the narrowest
    return [hit for hit in hits if id(hit.item) in kept]


def validate_as_of(as_of: object) -> float:
    """`as_of` as a time (seconds since the epoch), or a ValidationError naming the form."""
    t = validate_time(as_of, "as_of")
    if t is None:
        raise ValidationError("as_of must be a time in seconds since the epoch (e.g. time.time()), not None")
    return t


def recall(
    query: str,
    *,
    agent: str = "default",
    org: str | None = None,
    user: str | None = None,
    k: int = 10,
    home: Home | None = None,
    kind: str | Sequence[str] | None = None,
    mode: Mode = "hybrid",
    follow_links: bool = False,
    as_of: float | None = None,
) -> list[Item]:
    """The `k` items most relevant to `query` that the scope may see, best first.

    Hybrid (BM25 + embeddings, RRF) by default; `mode="lexical"` or `"vector"` uses one
    list; `follow_links=True` also ranks the items linked to the top hits (one hop).
    A user's items only ever reach that user; ties go user > org > agent.

    >>> recall("refund window", agent="support", user="u1", k=3)   # doctest: +SKIP
    [Item(text='Refunds are accepted within 30 days', ...), ...]
    """
    return [hit.item for hit in search(query, agent=agent, org=org, user=user, k=k, kind=kind, mode=mode,
                                       follow_links=follow_links, as_of=as_of, home=home)]

