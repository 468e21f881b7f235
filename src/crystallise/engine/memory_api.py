"""The memory API users come from (Mem0's shape), over crystallise's items and ledger.

    from crystallise import Memory
    m = Memory()                                               # the home of CRYSTALLISE_HOME
    m.add("I live in Paris", user_id="u1")                     # {"results": [{"id", "memory", "event": "ADD"}]}
    m.add([{"role": "user", "content": "I moved to Rome."}], user_id="u1")   # supersedes Paris
    m.search("where does the user live?", user_id="u1")      # {"results": [{"id", "memory", "score", …}]}
    m.get(memory_id); m.get_all(user_id="u1"); m.update(memory_id, "I live in Milan")
    m.delete(memory_id); m.delete_all(user_id="u1"); m.history(memory_id)  # [{"event": "ADD"|"UPDATE"|"DELETE", …}]
    await AsyncMemory().add(...)                               # the same, off the event loop

A memory is an item (kind `memory`) of one scope: `user_id` (in `org_id`), else `org_id`, else
the agent's (`agent_id`, default "default"). Every write is a delta committed by
`engine/memory.py` — the user ledger for a user's memories, a version for agent/org ones — so
`history` is the ledger and every change is revertible (`crystallise items revert`). `delete`
retires (soft); the hard deletion of a user is `crystallise forget --user`.

`add` with a string stores it as said; with chat messages (`[{"role", "content"}]`, OTel GenAI
`parts` too) it keeps what the rule extractor finds durable in the *user's* messages ("my name
is", "I prefer", "remember that" …), or, with `infer=False`, every user message as is.

Filters are exact scopes, as in Mem0: `user_id="u1"` lists u1's own memories, not the agent's.
`who` (an API principal) confines every call to what that key may see: another org's ids answer
like unknown ones (`engine/access.py`); the REST routes (`/v1/memories`) pass it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from crystallise.context import deltas as build
from crystallise.context.extract import RuleExtractor, messages_of
from crystallise.context.items import clean_text, same_scope, validate_scope
from crystallise.engine import access
from crystallise.engine.home import Home
from crystallise.engine.memory import commit_explicit, find_item, forget, remember, scope_items
from crystallise.engine.serving import RELEVANCE_FLOOR
from crystallise.engine.serving import search as serving_search
from crystallise.errors import NotFoundError, ValidationError
from crystallise.types import Item, Scope, Trace, now

__all__ = ["AsyncMemory", "Memory", "memory_dict"]

MAX_METADATA = 4096  # bytes of JSON per memory
T = TypeVar("T")


def _iso(t: float | None) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t, dt.UTC).isoformat()


def memory_dict(it: Item, score: float | None = None) -> dict[str, Any]:
    """One memory in Mem0's shape (plus crystallise's status, scope level and fact key)."""
    out: dict[str, Any] = {
        "id": it.id, "memory": it.text, "user_id": it.user_id, "agent_id": it.agent_id, "org_id": it.org_id,
        "run_id": it.meta.get("run_id"), "metadata": it.meta.get("metadata") or {},
        "created_at": _iso(it.created_at), "updated_at": _iso(it.updated_at), "status": it.status,
        "level": it.level, "key": it.key,
    }
    if it.meta.get("reverted"):
        out["status"] = "reverted"
    if score is not None:
        out["score"] = round(score, 6)
    return out


def _metadata(metadata: Any) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise ValidationError("metadata must be a dict of JSON values (e.g. {\"category\": \"food\"})")
    try:
        raw = json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValidationError(f"metadata must hold JSON values only: {e}") from None
    if len(raw.encode()) > MAX_METADATA:
        raise ValidationError(f"metadata is {len(raw.encode())} bytes of JSON; at most {MAX_METADATA}: keep ids "
                              "and labels there, not documents")
    return dict(metadata)


def _texts(messages: Any, infer: bool) -> list[str]:
    """What `add` stores: a string as said; of chat messages, the user's durable statements."""
    if isinstance(messages, str):
        return [messages]
    if isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, list) or not messages:
        raise ValidationError("add needs a string or a non-empty list of messages [{\"role\": \"user\", "
                              "\"content\": \"...\"}]")
    said = [text for role, text in messages_of(messages) if role == "user" and text.strip()]
    if not infer:
        return said
    found = RuleExtractor().extract(Trace(name="memory.add", input=[{"role": "user", "content": t} for t in said]))
    return list(dict.fromkeys(c.text for c in found))


class Memory:
    """Mem0-shaped memory over a crystallise home (see the module docstring).

    `agent_id` / `org_id` given here are the defaults of every call; `who` confines the calls
    to what an API key may see (the REST routes pass the request's principal).
    """

    def __init__(self, home: Home | None = None, *, agent_id: str = "default", org_id: str | None = None,
                 who: access.Who | None = None) -> None:
        self.home = home or Home.from_env()
        self.agent_id, self.org_id, self.who = agent_id, org_id, who

    # -- scope ---------------------------------------------------------------------------------
    def _scope(self, user_id: str | None, agent_id: str | None, org_id: str | None) -> Scope:
        org = org_id if org_id is not None else self.org_id
        if self.who is not None:
            org = self.who.write_org(org)  # type: ignore[attr-defined]
            user_id = self.who.write_user(user_id)  # type: ignore[attr-defined]
        return validate_scope(agent_id or self.agent_id, org, user_id)

    def _mine(self, memory_id: Any) -> Item:
        """`_find` for a change: an item the key sees but may not change (an agent-level one for an
        org key, the org's for a user-bound key) is refused (`access.require_change`: 403)."""
        item = self._find(memory_id)
        if self.who is not None:
            access.require_change(self.who, item)
        return item

    def _find(self, memory_id: Any) -> Item:
        if not isinstance(memory_id, str) or not memory_id or len(memory_id) > 200:
            raise ValidationError("memory_id must be a memory's id (a non-empty string, e.g. 'it_…')")
        try:
            item = find_item(self.home.store, memory_id)
        except NotFoundError:
            item = None
        if item is None or (self.who is not None and not access.may_see_item(self.who, item)):
            raise NotFoundError(f"memory {memory_id} not found: get_all (GET /v1/memories) lists the memories you "
                                "can see")
        return item

    @staticmethod
    def _scope_of(item: Item) -> Scope:
        return Scope(agent=item.agent_id, org=item.org_id, user=item.user_id if item.level == "user" else None)

    # -- writes --------------------------------------------------------------------------------
    def add(self, messages: str | list[dict[str, Any]], *, user_id: str | None = None, agent_id: str | None = None,
            org_id: str | None = None, run_id: str | None = None, metadata: dict[str, Any] | None = None,
            infer: bool = True, trace_id: str | None = None) -> dict[str, Any]:
        """Store memories; `event` is ADD (new), NONE (already known: merged) per memory, and a
        fact that replaced an older one lists it in `supersedes`."""
        scope = self._scope(user_id, agent_id, org_id)
        meta = {"metadata": _metadata(metadata)} if metadata else {}
        if run_id is not None:
            if not isinstance(run_id, str) or not run_id or len(run_id) > 200:
                raise ValidationError("run_id must be a non-empty string of at most 200 characters")
            meta["run_id"] = run_id
        results = []
        for text in _texts(messages, infer):
            t0 = now()
            it = remember(text, agent=scope.agent, org=scope.org, user=scope.user, trace_id=trace_id, meta=meta,
                          home=self.home)
            fresh = it.created_at >= t0  # else an existing memory said the same: merged, nothing new
            entry = {**memory_dict(it), "event": "ADD" if fresh else "NONE"}
            old = [o.id for o in self.home.store.query_items(
                agent=scope.agent, org=scope.org, user=scope.user, levels=(scope.level,), status=("retired",),
                key=it.key, limit=100) if o.superseded_by == it.id] if it.key else []
            if old:
                entry["supersedes"] = old
            results.append(entry)
        return {"results": results}

    def update(self, memory_id: str, data: str, *, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """New text (and metadata) for a live memory, as an update delta of its own scope."""
        item = self._mine(memory_id)
        if item.status not in ("active", "quarantined"):
            raise ValidationError(f"memory {memory_id} is {item.status}: only a live memory can be updated "
                                  "(add it again instead)")
        text = clean_text(data, item.kind)
        redactor = getattr(self.home.store, "redactor", None)
        if redactor is not None:
            text = redactor.redact_text(text)
        changes: dict[str, Any] = {"text": text}
        if metadata is not None:
            changes["meta"] = {"metadata": _metadata(metadata)}
        delta = build.update(item, "updated through the memory API", **changes)
        commit_explicit(self.home, self._scope_of(item), [delta], what=f"update {memory_id}", provenance=[],
                        learner="memory.update")
        return {"message": "Memory updated successfully!", "id": memory_id, "event": "UPDATE",
                "memory": text}

    def delete(self, memory_id: str) -> dict[str, Any]:
        """Retire one memory (soft, revertible)."""
        item = self._mine(memory_id)
        s = self._scope_of(item)
        if item.status in ("active", "quarantined"):
            forget(memory_id, agent=s.agent, org=s.org, user=s.user, home=self.home,
                   reason="deleted through the memory API")
        return {"message": "Memory deleted successfully!", "id": memory_id, "event": "DELETE"}

    def delete_all(self, *, user_id: str | None = None, agent_id: str | None = None, org_id: str | None = None,
                   run_id: str | None = None) -> dict[str, Any]:
        """Retire every memory of one scope (one change set); at least one of the ids is required."""
        if user_id is None and agent_id is None and org_id is None and run_id is None:
            raise ValidationError("delete_all needs user_id, agent_id, org_id or run_id: it never deletes everything")
        doomed = self._all(user_id, agent_id, org_id, run_id)
        if doomed:
            scope = self._scope_of(doomed[0])
            commit_explicit(self.home, scope, [build.retire(it, "deleted through the memory API") for it in doomed],
                            what=f"delete_all: {len(doomed)} memories", provenance=[], learner="memory.delete_all")
        return {"message": "Memories deleted successfully!", "count": len(doomed)}

    # -- reads ---------------------------------------------------------------------------------
    def _all(self, user_id: str | None, agent_id: str | None, org_id: str | None, run_id: str | None) -> list[Item]:
        scope = self._scope(user_id, agent_id, org_id)
        found = scope_items(self.home, scope, "memory")
        return [it for it in found if run_id is None or it.meta.get("run_id") == run_id]

    def get(self, memory_id: str) -> dict[str, Any] | None:
        """One memory (a retired or reverted one too, with its status), or None for an unknown id."""
        try:
            return self.require(memory_id)
        except NotFoundError:
            return None

    def require(self, memory_id: str) -> dict[str, Any]:
        """`get`, raising NotFoundError (unknown, and another scope's alike) instead of returning None."""
        return memory_dict(self._find(memory_id))

    def get_all(self, *, user_id: str | None = None, agent_id: str | None = None, org_id: str | None = None,
                run_id: str | None = None, limit: int = 100) -> dict[str, Any]:
        """The live memories of exactly one scope, newest first."""
        _limit(limit)
        found = sorted(self._all(user_id, agent_id, org_id, run_id), key=lambda it: (-it.updated_at, it.id))
        return {"results": [memory_dict(it) for it in found[:limit]]}

    def search(self, query: str, *, user_id: str | None = None, agent_id: str | None = None,
               org_id: str | None = None, run_id: str | None = None, limit: int = 10,
               as_of: float | None = None) -> dict[str, Any]:
        """The memories of one scope relevant to `query` (a shared word, or an embedding close
        enough: `serving.RELEVANCE_FLOOR`), best first by hybrid retrieval; `as_of` answers with
        what was true then (the ledger's point in time)."""
        _limit(limit)
        scope = self._scope(user_id, agent_id, org_id)
        hits = serving_search(query, agent=scope.agent, org=scope.org, user=scope.user, k=min(limit * 3 + 10, 1000),
                              kind="memory", as_of=as_of, home=self.home)
        kept = [h for h in hits if same_scope(h.item, scope) and h.relevant(RELEVANCE_FLOOR)
                and (run_id is None or h.item.meta.get("run_id") == run_id)][:limit]
        return {"results": [memory_dict(h.item, h.score) for h in kept]}

    def history(self, memory_id: str) -> list[dict[str, Any]]:
        """Every change of a memory, oldest first: ADD / UPDATE / DELETE with the old and new text,
        who made it (the change set's learner) and from which traces (provenance)."""
        self._find(memory_id)
        store = self.home.store
        out = []
        for row in store.item_history(memory_id):
            before, after = row.get("before"), row.get("after")
            event = _event(row["op"], before, after)
            try:
                cs = store.get_changeset(row["changeset_id"]) if row.get("changeset_id") else None
            except NotFoundError:
                cs = None
            out.append({
                "id": f"{row['changeset_id']}:{row['seq']}", "memory_id": memory_id,
                "old_memory": (before or {}).get("text"), "new_memory": (after or {}).get("text"),
                "event": event, "created_at": _iso(row["created_at"]), "is_deleted": event == "DELETE",
                "status": (after or {}).get("status"), "reason": row.get("reason"),
                "changeset_id": row.get("changeset_id"), "version": row.get("version"),
                "actor": cs.learner if cs else None, "provenance": list(cs.provenance) if cs else [],
                "reverted": bool(cs and cs.learner == "revert"),
            })
        return out


def _event(op: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    if after is None or (after.get("status") == "retired" and (before or {}).get("status") != "retired"):
        return "DELETE"
    if before is None or op == "add":
        return "ADD"
    return "UPDATE"


def _limit(limit: Any) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise ValidationError(f"limit must be an integer from 1 to 1000, not {limit!r}")


class AsyncMemory:
    """`Memory` for asyncio code: the same methods, awaited; each runs in a worker thread so a
    store write never blocks the event loop.

        m = AsyncMemory()
        await m.add("I prefer tabs", user_id="u1")
    """

    def __init__(self, home: Home | None = None, *, agent_id: str = "default", org_id: str | None = None,
                 who: access.Who | None = None) -> None:
        self.sync = Memory(home, agent_id=agent_id, org_id=org_id, who=who)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def add(self, messages: str | Sequence[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        return await self._run(self.sync.add, messages, **kwargs)

    async def search(self, query: str, **kwargs: Any) -> dict[str, Any]:
        return await self._run(self.sync.search, query, **kwargs)

    async def get(self, memory_id: str) -> dict[str, Any] | None:
        return await self._run(self.sync.get, memory_id)

    async def get_all(self, **kwargs: Any) -> dict[str, Any]:
        return await self._run(self.sync.get_all, **kwargs)

    async def update(self, memory_id: str, data: str, **kwargs: Any) -> dict[str, Any]:
        return await self._run(self.sync.update, memory_id, data, **kwargs)

    async def delete(self, memory_id: str) -> dict[str, Any]:
        return await self._run(self.sync.delete, memory_id)

    async def delete_all(self, **kwargs: Any) -> dict[str, Any]:
        return await self._run(self.sync.delete_all, **kwargs)

    async def history(self, memory_id: str) -> list[dict[str, Any]]:
        return await self._run(self.sync.history, memory_id)
