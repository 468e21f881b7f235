"""The Mem0-shaped memory API over HTTP (`engine/memory_api.Memory`, confined to the caller's key).

    POST   /v1/memories                {"messages": "I live in Paris" | [{"role","content"}], "user_id": "u1"}
    GET    /v1/memories?user_id=u1     -> {"results": [memory, ...]}          (get_all: one scope, live ones)
    POST   /v1/memories/search         {"query": "...", "user_id": "u1", "limit": 5, "as_of": 1.7e9}
    GET    /v1/memories/{id}           -> memory (a retired or reverted one too, with its status)
    PUT    /v1/memories/{id}           {"text": "I live in Rome", "metadata": {...}}
    DELETE /v1/memories/{id}           -> {"message", "id", "event": "DELETE"}    (retired, revertible)
    DELETE /v1/memories?user_id=u1     -> {"message", "count"}                     (delete_all of one scope)
    GET    /v1/memories/{id}/history   -> [{"event": "ADD"|"UPDATE"|"DELETE", "old_memory", "new_memory", …}]

Tenancy (`engine/access.py`): an org key acts in its own org (naming another is 403, as on every
write route); a user-bound key only for its own user; a memory id of another org, or of another
user for a user-bound key, answers 404 exactly like an unknown id. Seeing is not changing
(`access.require_change`): PUT and DELETE of an agent-level memory (shown to every org) need the
admin key, and a user-bound key changes only its own user's memories, not its org's (403).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi import Path as ApiPath
from pydantic import BaseModel, Field

from crystallise.api.deps import HomeDep, PrincipalDep
from crystallise.api.schemas import ScopeId, Seconds, _In
from crystallise.engine.memory_api import Memory

__all__ = ["router"]

router = APIRouter(prefix="/v1/memories", tags=["memories"])

MemoryId = Annotated[str, ApiPath(min_length=1, max_length=200)]
ScopeQ = Annotated[str | None, Query(min_length=1, max_length=200)]
Text = Annotated[str, Field(min_length=1, max_length=20_000)]


class MessageIn(_In):
    role: Literal["user", "assistant", "system", "tool"]
    content: Annotated[str, Field(max_length=20_000)] | None = None
    parts: Annotated[list[dict[str, Any]], Field(max_length=100)] | None = None


class AddIn(_In):
    messages: Text | Annotated[list[MessageIn], Field(min_length=1, max_length=200)]
    user_id: ScopeId | None = None
    agent_id: ScopeId | None = None
    org_id: ScopeId | None = None
    run_id: ScopeId | None = None
    metadata: dict[str, Any] | None = None
    infer: bool = True


class SearchIn(_In):
    query: Text
    user_id: ScopeId | None = None
    agent_id: ScopeId | None = None
    org_id: ScopeId | None = None
    run_id: ScopeId | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 10
    as_of: Seconds | None = None


class UpdateIn(_In):
    text: Text
    metadata: dict[str, Any] | None = None


class MemoryOut(BaseModel):
    id: str
    memory: str
    user_id: str | None = None
    agent_id: str
    org_id: str | None = None
    run_id: str | None = None
    metadata: dict[str, Any] = {}
    created_at: str | None = None
    updated_at: str | None = None
    status: str
    level: str
    key: str | None = None
    score: float | None = None
    event: Literal["ADD", "NONE"] | None = None
    supersedes: list[str] | None = None


class Results(BaseModel):
    results: list[MemoryOut]


class Done(BaseModel):
    message: str
    id: str | None = None
    event: Literal["UPDATE", "DELETE"] | None = None
    memory: str | None = None
    count: int | None = None


class HistoryEvent(BaseModel):
    id: str
    memory_id: str
    old_memory: str | None
    new_memory: str | None
    event: Literal["ADD", "UPDATE", "DELETE"]
    created_at: str | None
    is_deleted: bool
    status: str | None
    reason: str | None
    changeset_id: str | None
    version: int | None
    actor: str | None
    provenance: list[str]
    reverted: bool


def _memory(home: Any, who: Any) -> Memory:
    return Memory(home, who=who)


@router.post("", response_model=Results, summary="Add memories (a text, or chat messages)")
def add(body: AddIn, home: HomeDep, who: PrincipalDep) -> Any:
    messages = body.messages if isinstance(body.messages, str) else [
        m.model_dump(exclude_none=True) for m in body.messages]
    return _memory(home, who).add(messages, user_id=body.user_id, agent_id=body.agent_id, org_id=body.org_id,
                                  run_id=body.run_id, metadata=body.metadata, infer=body.infer)


@router.get("", response_model=Results, summary="The live memories of one scope")
def get_all(home: HomeDep, who: PrincipalDep, user_id: ScopeQ = None, agent_id: ScopeQ = None,
            org_id: ScopeQ = None, run_id: ScopeQ = None,
            limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    return _memory(home, who).get_all(user_id=user_id, agent_id=agent_id, org_id=org_id, run_id=run_id,
                                      limit=limit)


@router.post("/search", response_model=Results, summary="The memories of one scope most relevant to a query")
def search(body: SearchIn, home: HomeDep, who: PrincipalDep) -> Any:
    return _memory(home, who).search(body.query, user_id=body.user_id, agent_id=body.agent_id, org_id=body.org_id,
                                     run_id=body.run_id, limit=body.limit, as_of=body.as_of)


@router.delete("", response_model=Done, summary="Delete (retire) every memory of one scope")
def delete_all(home: HomeDep, who: PrincipalDep, user_id: ScopeQ = None, agent_id: ScopeQ = None,
               org_id: ScopeQ = None, run_id: ScopeQ = None) -> Any:
    return _memory(home, who).delete_all(user_id=user_id, agent_id=agent_id, org_id=org_id, run_id=run_id)


@router.get("/{memory_id}", response_model=MemoryOut, summary="One memory")
def get(memory_id: MemoryId, home: HomeDep, who: PrincipalDep) -> Any:
    return _memory(home, who).require(memory_id)


@router.put("/{memory_id}", response_model=Done, summary="New text for a memory (an update delta)")
def update(memory_id: MemoryId, body: UpdateIn, home: HomeDep, who: PrincipalDep) -> Any:
    return _memory(home, who).update(memory_id, body.text, metadata=body.metadata)


@router.delete("/{memory_id}", response_model=Done, summary="Delete (retire) a memory; revertible")
def delete(memory_id: MemoryId, home: HomeDep, who: PrincipalDep) -> Any:
    return _memory(home, who).delete(memory_id)


@router.get("/{memory_id}/history", response_model=list[HistoryEvent], summary="Every change of a memory")
def history(memory_id: MemoryId, home: HomeDep, who: PrincipalDep) -> Any:
    return _memory(home, who).history(memory_id)
