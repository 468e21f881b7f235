"""Serving the context layer: the pack of learned items an agent sees for a query.

    pack = crystallise.context(agent="support", org="acme", user="u1", query=q, budget_tokens=600)
    prompt = pack.text + "\n\n" + q

Items come from three scopes with precedence user > org > agent; a user's items are
only ever visible to that user. Within a scope, items matching the query lexically
come first, then the rest by value (helpful - harmful). Items are added until the
token budget is spent. Inside a `crystallise.trace` the pack is recorded as a
retrieval span listing the ids shown, which is what credit assignment reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from crystallise.errors import ValidationError
from crystallise.harness.runtime import approx_tokens
from crystallise.home import Home
from crystallise.traces.sdk import current_trace
from crystallise.types import Item

__all__ = ["ContextPack", "assemble"]

_LEVEL_ORDER = {"user": 0, "org": 1, "agent": 2}


@dataclass
class ContextPack:
    text: str
    items: list[Item] = field(default_factory=list)
    tokens: int = 0

    @property
    def item_ids(self) -> list[str]:
        return [it.id for it in self.items]


def assemble(
    *,
    agent: str = "default",
    org: str | None = None,
    user: str | None = None,
    query: str | None = None,
    budget_tokens: int = 800,
    kind: str | None = None,
    home: Home | None = None,
) -> ContextPack:
    """The context pack for a scope and query (see the module docstring)."""
    if budget_tokens <= 0:
        raise ValidationError(f"budget_tokens must be positive, got {budget_tokens}")
    h = home or Home.from_env()
    store = h.store
    matched = store.query_items(agent=agent, org=org, user=user, text=query, kind=kind, limit=200) if query else []
    rest = store.query_items(agent=agent, org=org, user=user, kind=kind, limit=1000)
    seen: set[str] = set()
    ranked: list[Item] = []
    for group, items in ((0, matched), (1, sorted(rest, key=lambda i: -(i.helpful - i.harmful)))):
        for it in sorted(items, key=lambda i: _LEVEL_ORDER.get(i.level, 3)) if group else items:
            if it.id not in seen:
                seen.add(it.id)
                ranked.append(it)
    ranked.sort(key=lambda i: _LEVEL_ORDER.get(i.level, 3))  # stable: keeps query order within a level
    chosen: list[Item] = []
    used = 0
    for it in ranked:
        cost = approx_tokens(it.text) + 2
        if used + cost > budget_tokens:
            continue
        chosen.append(it)
        used += cost
    lines: list[str] = []
    for level, title in (("user", "About this user"), ("org", "Organisation rules"), ("agent", "Playbook")):
        block = [f"- {it.text}" for it in chosen if it.level == level]
        if block:
            lines += [f"## {title}", *block, ""]
    pack = ContextPack(text="\n".join(lines).strip(), items=chosen, tokens=used)
    t = current_trace()
    if t is not None:
        with t.span("context", "retrieval", input={"query": query, "budget_tokens": budget_tokens}) as s:
            s.attributes["shown_items"] = pack.item_ids
            s.output = {"tokens": used, "items": len(chosen)}
    if chosen:
        store.bump_items(pack.item_ids, shown=1)
    return pack
