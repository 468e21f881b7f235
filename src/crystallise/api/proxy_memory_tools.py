"""Memory-tier tools injected into proxied chat completions (`X-Crystallise-Memory-Tools: on`).

    client.chat.completions.create(model=..., messages=[...],
                                   extra_headers={"X-Crystallise-Memory-Tools": "on", "X-Crystallise-User": "u1"})

1. inject   the request's `tools` get `core_memory_append`, `core_memory_replace`, `archival_insert`
            and `archival_search` (a client tool of the same name is refused: 400)
2. loop     when the model's answer calls only these tools, the proxy runs them (engine/tiers.py, for
            the call's scope, as the model's edit: `Editor(via="proxy", person=False)`), appends the
            results as `tool` messages and asks again — at most `MAX_ROUNDS` times; an answer that
            calls a client tool (or none) goes back to the client unchanged
3. record   each executed call is a `tool` span of the call's trace (arguments, result or error)

The core blocks themselves reach the model through the injected context pack (engine/serving.py
pins them). Streaming with memory tools is refused (400): the loop needs whole answers.
"""

from __future__ import annotations

import json
from typing import Any

import anyio

from crystallise.api.problems import Problem
from crystallise.api.proxy_upstream import Reply
from crystallise.context import core_blocks as cb
from crystallise.engine import tiers
from crystallise.engine.home import Home
from crystallise.errors import UserError
from crystallise.types import Span, now

__all__ = ["HEADER", "MAX_ROUNDS", "TOOLS", "complete", "requested", "with_tools"]

HEADER = "memory-tools"  # X-Crystallise-Memory-Tools
MAX_ROUNDS = 4


def _fn(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required, "additionalProperties": False}}}


_LABEL = {"type": "string", "pattern": cb.LABEL.pattern, "description": "'human' (the user) or 'persona' (you)"}
TOOLS = [
    _fn("core_memory_append", "Add a line to a core memory block, which every future answer sees.",
        {"label": _LABEL, "text": {"type": "string"}}, ["label", "text"]),
    _fn("core_memory_replace", "Replace text occurring once in a core memory block (empty new_text deletes it).",
        {"label": _LABEL, "old_text": {"type": "string"}, "new_text": {"type": "string"}},
        ["label", "old_text", "new_text"]),
    _fn("archival_insert", "Keep a passage in archival memory (not shown by default; searchable).",
        {"text": {"type": "string"}}, ["text"]),
    _fn("archival_search", "Search archival memory, one page at a time.",
        {"query": {"type": "string"}, "page": {"type": "integer", "minimum": 0},
         "page_size": {"type": "integer", "minimum": 1, "maximum": tiers.MAX_PAGE}}, ["query"]),
]
NAMES = frozenset(t["function"]["name"] for t in TOOLS)


def requested(value: str | None, stream: bool) -> bool:
    """Whether the header asks for memory tools (`on` / `off`, default off)."""
    v = (value or "off").strip().lower()
    if v not in ("on", "off"):
        raise Problem(422, f"X-Crystallise-Memory-Tools must be `on` or `off`, got {v!r}")
    if v == "on" and stream:
        raise Problem(400, "X-Crystallise-Memory-Tools: on needs stream=false: the proxy runs the memory tools "
                           "between whole answers")
    return v == "on"


def with_tools(body: dict[str, Any]) -> dict[str, Any]:
    """`body` with the memory tools added to its `tools`."""
    theirs = body.get("tools") or []
    if not isinstance(theirs, list):
        raise Problem(400, "`tools` must be a list of tool definitions")
    clash = sorted(NAMES & {t.get("function", {}).get("name") for t in theirs if isinstance(t, dict)})
    if clash:
        raise Problem(400, f"the request defines tool(s) {clash}, which X-Crystallise-Memory-Tools adds itself: "
                           "rename yours or turn the header off")
    return {**body, "tools": [*theirs, *TOOLS]}


def _run(home: Home, scope: Any, trace_id: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    ed = tiers.Editor(via="proxy", person=False, agent=scope.agent, user=scope.user, session=scope.session,
                      trace_ref=trace_id)
    where = {"agent": scope.agent, "org": scope.org, "user": scope.user, "home": home}
    if name == "archival_search":
        return tiers.archival_search(str(args.get("query", "")), page=args.get("page", 0),
                                     page_size=args.get("page_size", 5), **where)
    if name == "archival_insert":
        it = tiers.archival_insert(args.get("text", ""), editor=ed, **where)
        return {"id": it.id, "status": it.status}
    if name == "core_memory_append":
        it = tiers.core_memory_append(args.get("label", ""), args.get("text", ""), editor=ed, **where)
    else:
        it = tiers.core_memory_replace(args.get("label", ""), args.get("old_text", ""), args.get("new_text", ""),
                                       editor=ed, **where)
    return {"label": cb.label_of(it), "text": it.text, "chars": len(it.text), "limit": it.meta.get("limit")}


def _ours(message: dict[str, Any]) -> list[dict[str, Any]] | None:
    calls = message.get("tool_calls")
    if not isinstance(calls, list) or not calls:
        return None
    names = [(c.get("function") or {}).get("name") for c in calls if isinstance(c, dict)]
    return calls if len(names) == len(calls) and all(n in NAMES for n in names) else None


async def complete(upstream: Any, body: dict[str, Any], home: Home, scope: Any, trace_id: str,
                   spans: list[Span]) -> Reply:
    """The upstream's answer after running the memory tools it called (see the module docstring)."""
    messages = list(body["messages"])
    for _ in range(MAX_ROUNDS):
        reply: Reply = await upstream.complete({**body, "messages": messages})
        try:
            doc = json.loads(reply.content) if reply.status == 200 else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            doc = None
        message = ((doc or {}).get("choices") or [{}])[0].get("message") or {} if isinstance(doc, dict) else {}
        calls = _ours(message)
        if calls is None:
            return reply
        messages.append({"role": "assistant", "content": message.get("content"), "tool_calls": calls})
        for c in calls:
            fn = c.get("function") or {}
            started = now()
            try:
                args = json.loads(fn.get("arguments") or "{}")
                if not isinstance(args, dict):
                    raise UserError("tool arguments must be a JSON object")
                result: Any = await anyio.to_thread.run_sync(_run, home, scope, trace_id, fn["name"], args)
                error = None
            except (UserError, json.JSONDecodeError) as e:
                result, error = {"error": str(e)}, str(e)
            spans.append(Span(name=fn["name"], kind="tool", trace_id=trace_id, input=fn.get("arguments"),
                              output=result, error=error, started_at=started, ended_at=now(),
                              attributes={"memory_tool": True}))
            messages.append({"role": "tool", "tool_call_id": c.get("id"), "content": json.dumps(result)})
    return reply
