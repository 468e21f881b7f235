"""Memory tiers, committed: core blocks (pinned in every pack) and archival memory (paged by the agent).

    from crystallise.engine import tiers
    tiers.core_memory_set("persona", "I am Sam, a patient travel assistant.", agent="travel")   # a person
    tiers.core_memory_append("human", "Name: Ada", agent="travel", user="u1",
                             editor=tiers.Editor(via="mcp", agent="travel", user="u1"))          # the model
    tiers.core_memory_replace("human", "Ada", "Ada Lovelace", agent="travel", user="u1", editor=...)
    tiers.archival_insert("Ada's 2019 trip: Kyoto, 10 days, hated the rain.", agent="travel", user="u1", editor=...)
    tiers.archival_search("kyoto trip", agent="travel", user="u1", page=0, page_size=5)

The rules (labels, budgets, rendering) are context/core_blocks.py; this module commits. Every edit
is one delta through `memory.commit_explicit` (the user ledger for a user's blocks, a version for
agent/org ones) whose change set names its learner (`core_memory_append`, …), carries the editor
(channel, agent, user, session) as evidence and the trace as provenance, so `crystallise items
history` answers who changed a block, from which run, and `items revert` undoes it.

An edit by the model (`Editor.person` False) lands in the narrowest scope of the conversation,
is stored as a `reflection` (the model's words), and is refused when its text reads like
instructions (context/injection.py): a core block is in every pack, so it must never become a
channel for a prompt injection the model picked up. A model edits core blocks only in a user's
scope (an agent's or org's block reaches every user: a person sets it), and its archival passages
at agent or org level wait quarantined for review. Overflowing a block's budget is refused, never
truncated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from crystallise.context import core_blocks as cb
from crystallise.context import deltas as build
from crystallise.context.injection import detect
from crystallise.context.items import DEFAULT_TRUST, clean_text, validate_scope
from crystallise.engine.home import Home
from crystallise.engine.memory import check_trace, commit_explicit, remember, scope_items
from crystallise.engine.serving import RELEVANCE_FLOOR, search
from crystallise.errors import NotFoundError, ValidationError
from crystallise.types import Item, Scope

__all__ = ["Editor", "archival_insert", "archival_search", "core_block", "core_memory_append", "core_memory_replace",
           "core_memory_set"]

MAX_PAGE = 50


@dataclass(frozen=True)
class Editor:
    """Who made an edit: a person (`person=True`, e.g. the developer through the SDK) or the model,
    through a channel (`via`: sdk | mcp | proxy), for an agent / user, in a trace or session."""

    via: str = "sdk"
    person: bool = True
    agent: str | None = None
    user: str | None = None
    trace_id: str | None = None  # a stored trace of the scope: checked, then the edit's provenance
    session: str | None = None
    trace_ref: str | None = None  # the run the edit was made in, not yet stored (the proxy writes it after)

    def evidence(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


PERSON = Editor()


def _guard_scope(scope: Scope, editor: Editor, what: str) -> None:
    """A model edits core memory in one user's scope only: an agent or org block is in every user's pack."""
    if not editor.person and scope.level != "user":
        raise ValidationError(f"{what} refused: a model edits core memory only in a user's scope (connect with a "
                              f"user), not the {scope.level}'s, which every user's pack shows; a person sets those "
                              "blocks with core_memory_set")


def _guard(text: str, editor: Editor, what: str) -> None:
    if not editor.person:
        rules = detect(text)
        if rules:
            raise ValidationError(
                f"{what} refused: the text reads like instructions ({', '.join(rules)}), and a model's edit of "
                "memory must be facts, not orders (a page or tool output may have asked for it); a person can "
                "set the block with core_memory_set")


def core_block(label: str, *, agent: str = "default", org: str | None = None, user: str | None = None,
               home: Home | None = None) -> Item | None:
    """The live block `label` of exactly this scope, or None."""
    cb.validate_label(label)
    h = home or Home.from_env()
    scope = validate_scope(agent, org, user)
    found = [it for it in scope_items(h, scope, "note") if cb.is_core(it) and cb.label_of(it) == label]
    return found[0] if found else None


def _write(h: Home, scope: Scope, label: str, text: str, *, limit: int | None, editor: Editor, learner: str,
           reason: str) -> Item:
    old = core_block(label, agent=scope.agent, org=scope.org, user=scope.user, home=h)
    limit = cb.validate_limit(limit) if limit is not None else int((old.meta if old else {}).get("limit",
                                                                                                  cb.DEFAULT_LIMIT))
    text = clean_text(text, "note") if text.strip() else ""
    if len(text) > limit:
        raise ValidationError(f"core block {label!r} would hold {len(text)} characters; its limit is {limit}: "
                              "shorten it, or raise the limit (core_memory_set(..., limit=N)) — never truncated")
    _guard_scope(scope, editor, learner)
    _guard(text, editor, learner)
    provenance = check_trace(h, editor.trace_id, scope) if editor.trace_id else []
    meta = {"core_block": label, "limit": limit, "edited_by": editor.evidence()}
    source = "user" if editor.person else "reflection"
    if old is None:
        if not text:
            raise ValidationError(f"core block {label!r} is empty: give it text")
        item = Item(text=text, kind="note", level=scope.level, agent_id=scope.agent, org_id=scope.org,  # type: ignore[arg-type]
                    user_id=scope.user, section=cb.CORE, source=source, provenance=provenance, meta=meta)
        delta = build.add(item, reason)
    elif not text:
        delta = build.retire(old, reason)
    else:
        delta = build.update(old, reason, text=text, source=source, trust=DEFAULT_TRUST[source], meta=meta,
                             provenance=sorted({*old.provenance, *provenance}))
    commit_explicit(h, scope, [delta], what=f"{learner} {label}", provenance=provenance, learner=learner,
                    evidence={"editor": editor.evidence(), "block": label})
    return h.store.get_item(delta.item_id or "")


def core_memory_set(label: str, text: str, *, agent: str = "default", org: str | None = None,
                    user: str | None = None, limit: int | None = None, home: Home | None = None,
                    editor: Editor = PERSON) -> Item:
    """Set block `label` of a scope to `text` (create it; empty text retires it); `limit` its budget."""
    h = home or Home.from_env()
    scope = validate_scope(agent, org, user)
    if not isinstance(text, str):
        raise ValidationError("core block text must be a string")
    return _write(h, scope, cb.validate_label(label), text, limit=limit, editor=editor, learner="core_memory_set",
                  reason=f"core block {label} set")


def core_memory_append(label: str, text: str, *, agent: str = "default", org: str | None = None,
                       user: str | None = None, home: Home | None = None, editor: Editor = PERSON) -> Item:
    """Add a line to block `label` (created on first use), refused past the block's budget."""
    h = home or Home.from_env()
    scope = validate_scope(agent, org, user)
    _guard_scope(scope, editor, "core_memory_append")
    old = core_block(cb.validate_label(label), agent=agent, org=org, user=user, home=h)
    limit = int(old.meta.get("limit", cb.DEFAULT_LIMIT)) if old else cb.DEFAULT_LIMIT
    if not isinstance(text, str):
        raise ValidationError("core_memory_append text must be a string")
    _guard(text, editor, "core_memory_append")
    new = cb.append(old.text if old else "", clean_text(text, "note"), limit=limit, label=label)
    return _write(h, scope, label, new, limit=None if old else limit, editor=editor, learner="core_memory_append",
                  reason=f"core block {label}: appended")


def core_memory_replace(label: str, old_text: str, new_text: str, *, agent: str = "default", org: str | None = None,
                        user: str | None = None, home: Home | None = None, editor: Editor = PERSON) -> Item:
    """Replace the one occurrence of `old_text` in block `label` by `new_text` (empty: delete it)."""
    h = home or Home.from_env()
    _guard_scope(validate_scope(agent, org, user), editor, "core_memory_replace")
    old = core_block(cb.validate_label(label), agent=agent, org=org, user=user, home=h)
    if old is None:
        raise NotFoundError(f"core block {label!r} does not exist in this scope: create it with core_memory_append")
    if not isinstance(new_text, str):
        raise ValidationError("core_memory_replace new text must be a string")
    _guard(new_text, editor, "core_memory_replace")
    new = cb.replace(old.text, old_text, new_text, limit=int(old.meta.get("limit", cb.DEFAULT_LIMIT)), label=label)
    return _write(h, validate_scope(agent, org, user), label, new, limit=None, editor=editor,
                  learner="core_memory_replace", reason=f"core block {label}: replaced text")


def archival_insert(text: str, *, agent: str = "default", org: str | None = None, user: str | None = None,
                    home: Home | None = None, editor: Editor = PERSON) -> Item:
    """Store a passage in archival memory (a note of section `archival`): searchable, never pinned.
    A model's instruction-like text, and any model passage at agent or org level (shared by every
    user there), is kept quarantined (stored, not served) until a person accepts it."""
    h = home or Home.from_env()
    shared = validate_scope(agent, org, user).level != "user"  # every user of the agent / org would find it
    trust = None if editor.person else (0.4 if shared or (isinstance(text, str) and detect(text)) else None)
    return remember(text, agent=agent, org=org, user=user, kind="note", section=cb.ARCHIVAL,
                    source="user" if editor.person else "reflection", trust=trust, trace_id=editor.trace_id,
                    meta={"archival": True, "edited_by": editor.evidence()}, home=h)


def archival_search(query: str, *, agent: str = "default", org: str | None = None, user: str | None = None,
                    page: int = 0, page_size: int = 5, home: Home | None = None) -> dict[str, Any]:
    """One page of the archival notes relevant to `query`, best first: {"results", "page", "has_more"}."""
    for name, value, lo, hi in (("page", page, 0, 1000), ("page_size", page_size, 1, MAX_PAGE)):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValidationError(f"{name} must be an integer from {lo} to {hi}, not {value!r}")
    h = home or Home.from_env()
    want = (page + 1) * page_size + 1
    hits = search(query, agent=agent, org=org, user=user, k=min(4 * want + 20, 1000), kind="note", home=h)
    found = [hit for hit in hits if cb.is_archival(hit.item) and hit.relevant(RELEVANCE_FLOOR)]
    window = found[page * page_size: (page + 1) * page_size]
    return {"results": [{"id": hit.item.id, "text": hit.item.text, "level": hit.item.level,
                         "created_at": hit.item.created_at, "score": round(hit.score, 6)} for hit in window],
            "page": page, "page_size": page_size, "has_more": len(found) > (page + 1) * page_size}
