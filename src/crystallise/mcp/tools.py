"""The MCP tools: remember, recall, forget, the playbook for a task, skills, feedback.

Each tool is a thin edge over the library (parse, call, serialise); none has learning logic
of its own:

    remember(text, kind, section, source)  engine.memory.remember    (explicit: effective at once)
    recall(query, k, kind)                 engine.serving.recall     (hybrid BM25 + embeddings)
    forget(query | item_id)                engine.memory.forget      (retired, revertible)
    get_playbook(task, budget_tokens)      engine.serving.assemble (the pack an agent is served)
    list_skills()                          engine.skills.list_skills (names + descriptions only)
    load_skill(name, file)                 engine.skills.load_skill (the body: progressive disclosure)
    feedback(score, label, correction, comment, trace_id)   store.add_feedback on the last answer
    core_memory_*, archival_*              engine.tiers (tier_tools.py: MemGPT's self-editing memory)

Each tool's output schema is a TypedDict of outputs.py. Annotations are honest: recall, get_playbook
and load_skill write a usage trace (below), so they are not read-only; forget is destructive.

Who the tools act for is never a tool argument, so a model cannot talk itself into another
user's memories: the scope comes from the connection (`Binding`) — CLI flags for stdio, the
API key plus `X-Crystallise-Agent` / `-Org` / `-User` headers for streamable HTTP, where an
org's key forces its org (http.py).

Every answer that shows learned items (recall, get_playbook, load_skill) is recorded as a
trace `mcp:<tool>` of that scope with a retrieval span listing the shown item ids — what
credit assignment reads — and `feedback` attaches to the last such trace of the session, so
"that was wrong" on an MCP answer teaches the same loop a traced SDK run does.

    >>> server = create_mcp_server(Home.open(".crystallise"), binding=Binding(agent="coder", user="me"))
    >>> server.run("stdio")                                     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import Field

from crystallise.context.items import validate_scope
from crystallise.context.injection import detect
from crystallise.engine import access
from crystallise.engine.memory import forget as lib_forget
from crystallise.engine.memory import remember as lib_remember
from crystallise.engine.serving import assemble
from crystallise.engine.serving import recall as lib_recall
from crystallise.engine.skills import list_skills as lib_list
from crystallise.engine.skills import load_skill as lib_load
from crystallise.errors import NotFoundError, StoreError, UserError, ValidationError
from crystallise.version import __version__
from crystallise.engine.home import Home
from crystallise.harness.spec import View
from crystallise.mcp.outputs import (
    FeedbackOut,
    ForgetOut,
    ItemOut,
    LoadSkillOut,
    PlaybookOut,
    RecallOut,
    RememberOut,
    SkillsOut,
)
from crystallise.mcp.tier_tools import register_tier_tools
from crystallise.types import Feedback, Item, Span, Trace, now

__all__ = ["SCOPE_HEADERS", "Binding", "Sessions", "create_mcp_server"]

SCOPE_HEADERS = {"agent": "x-crystallise-agent", "org": "x-crystallise-org", "user": "x-crystallise-user"}
PRINCIPAL_KEY = "crystallise.principal"  # where http.py leaves the verified caller in the ASGI scope
INSTRUCTIONS = """\
crystallise is this agent's long-term memory and learned playbook.
- Before a task, call get_playbook(task) and follow what it returns; list_skills() shows the skills,
  load_skill(name) their instructions.
- When the user states a lasting fact or preference, or says "remember ...", call remember(text).
- recall(query) finds what was remembered; forget(query) retires what the user asks you to forget.
- After an answer built on crystallise's context, call feedback(score=1 or 0, correction=...) when the
  user tells you whether it was right."""

T = TypeVar("T")


@dataclass(frozen=True)
class Binding:
    """The scope the tools act for: agent-level knowledge of `agent`, org-level of `org`,
    user-level of `user` (in `org`). `validate()` raises a ValidationError naming the bad id."""

    agent: str = "default"
    org: str | None = None
    user: str | None = None

    def validate(self) -> Binding:
        validate_scope(self.agent, self.org, self.user)
        return self

    def owns(self, trace: Trace) -> bool:
        """Whether a trace belongs to this scope (feedback may only target those)."""
        return (trace.agent_id, trace.org_id, trace.user_id) == (self.agent, self.org, self.user)


class Sessions:
    """The last answer's trace id per session, so `feedback` knows what it is about."""

    def __init__(self, limit: int = 10_000) -> None:
        self._last: dict[str, str] = {}
        self._lock = threading.Lock()
        self._limit = limit

    def note(self, session: str, trace_id: str) -> None:
        with self._lock:
            self._last.pop(session, None)
            self._last[session] = trace_id
            while len(self._last) > self._limit:  # oldest sessions go first
                self._last.pop(next(iter(self._last)))

    def last(self, session: str) -> str | None:
        with self._lock:
            return self._last.get(session)


# A resolver turns a tool call's context into (binding, session key); stdio's is fixed,
# streamable HTTP's reads the verified key and the scope headers (http.py).
Resolver = Callable[[Context], tuple[Binding, str]]


def fixed(binding: Binding) -> Resolver:
    """The resolver of a stdio server: one scope and one session for the process."""
    session = "mcp-stdio-" + uuid.uuid4().hex[:12]
    binding.validate()
    return lambda ctx: (binding, session)


def _call(fn: Callable[[], T]) -> T:
    """Library errors become tool errors that name the fix; nothing else is swallowed."""
    try:
        return fn()
    except UserError as e:
        raise ToolError(str(e)) from e
    except StoreError as e:
        raise ToolError(f"the store failed: {e}") from e


def _item(it: Item) -> ItemOut:
    return {"id": it.id, "text": it.text, "kind": it.kind, "level": it.level, "section": it.section,
            "status": it.status}


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{what} is empty: give the words to use")
    return value.strip()


def create_mcp_server(home: Home, *, binding: Binding | None = None, resolver: Resolver | None = None,
                      sessions: Sessions | None = None) -> MCPServer:
    """The MCP server over `home`: pass a fixed `binding` (stdio) or a per-call `resolver` (HTTP)."""
    if (binding is None) == (resolver is None):
        raise ValueError("give exactly one of binding= (stdio) or resolver= (streamable HTTP)")
    resolve = resolver or fixed(binding)  # type: ignore[arg-type]
    memo = sessions or Sessions()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    server: MCPServer = MCPServer("crystallise", version=__version__, instructions=INSTRUCTIONS,
                                  log_level="WARNING")
    root.handlers[:], root.level = handlers, level  # the SDK configures the root logger: not a library's call
    writes = ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=False, openWorldHint=False)
    # recall, get_playbook and load_skill record what they showed (a trace with a retrieval span): that
    # usage is what credit assignment reads and what `feedback` attaches to, so it stays, and the tools
    # say honestly that they write (additively: nothing is changed or removed). list_skills records nothing.
    records = ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=False, openWorldHint=False)
    reads = ToolAnnotations(readOnlyHint=True, openWorldHint=False)
    retires = ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=True, openWorldHint=False)

    def scope(ctx: Context) -> tuple[Binding, str]:
        return _call(lambda: resolve(ctx))

    def record(b: Binding, session: str, tool: str, query: Any, shown: list[str], output: Any,
               started: float, t0: float, **attrs: Any) -> str:
        """Write the answer as a trace with its retrieval span; remember it as the session's last."""
        span = Span(name=tool, kind="retrieval", input=query, output=output, started_at=started, ended_at=now(),
                    attributes={"shown_items": shown, "latency_ms": round((time.perf_counter() - t0) * 1000, 3),
                                **attrs})
        trace = Trace(name=f"mcp:{tool}", agent_id=b.agent, org_id=b.org, user_id=b.user, session_id=session[:200],
                      input=query, output=output, started_at=started, ended_at=now(), spans=[span],
                      metadata={"via": "mcp"})
        stored = home.store.write_trace(trace)
        memo.note(session, stored.id)
        return stored.id

    @server.tool(annotations=writes)
    def remember(
        text: Annotated[str, Field(description="The fact, preference or lesson, in one sentence.")],
        ctx: Context,
        kind: Annotated[Literal["memory", "bullet", "note"],
                        Field(description="memory: a fact or preference; bullet: a playbook rule or lesson; "
                                          "note: a longer note")] = "memory",
        section: Annotated[str, Field(description="Playbook section for a bullet (e.g. strategies, pitfalls)")]
        = "general",
        source: Annotated[Literal["user", "tool"],
                          Field(description="user: the user said it; tool: it came from a tool output or a "
                                            "document (instruction-like text is then quarantined)")] = "user",
    ) -> RememberOut:
        """Remember something for this user (or agent / org) now: the same fact again is merged, a
        contradicting fact replaces the old one, and it is shown by get_playbook and recall at once."""
        b, _ = scope(ctx)

        def run() -> RememberOut:




            words = _text(text, "text")
            # a tool call is a model's word, not a person's: instruction-like text it stores (a page it read
            # may have asked it to) waits for a person whatever source it claims (docs/reliability.md)
            trust = 0.4 if detect(words) else None
            it = lib_remember(words, agent=b.agent, org=b.org, user=b.user, kind=kind, section=section,
                              source=source, trust=trust, home=home)
            note = ("quarantined: instruction-like text from an untrusted source is kept but not shown until "
                    "a person accepts it") if it.status == "quarantined" else "remembered"
            return {**_item(it), "note": note}

        return _call(run)

    @server.tool(annotations=records)
    def recall(
        query: Annotated[str, Field(description="What to look for, in words.")],
        ctx: Context,
        k: Annotated[int, Field(ge=1, le=50, description="How many items at most.")] = 5,
        kind: Annotated[Literal["memory", "bullet", "note", "skill"] | None,
                        Field(description="Only items of this kind.")] = None,
    ) -> RecallOut:
        """Find what was learned or remembered for this scope that is relevant to `query`, best first."""
        b, session = scope(ctx)
        started, t0 = now(), time.perf_counter()

        def run() -> RecallOut:


            q = _text(query, "query")
            items = lib_recall(q, agent=b.agent, org=b.org, user=b.user, k=k, kind=kind, home=home)
            shown = [it.id for it in items]
            if shown:
                home.store.bump_items(shown, shown=1)
            tid = record(b, session, "recall", {"query": q, "k": k}, shown, {"items": len(items)}, started, t0)
            return {"items": [_item(it) for it in items], "trace_id": tid}

        return _call(run)

    @server.tool(annotations=retires)
    def forget(
        ctx: Context,
        query: Annotated[str | None, Field(description="Forget this scope's items containing these words.")] = None,
        item_id: Annotated[str | None, Field(description="Or forget exactly this item (an id from recall).")]
        = None,
    ) -> ForgetOut:
        """Forget (retire) items of this scope: by words or by id. Revertible by a person
        (`crystallise items revert` / `crystallise revert`); nothing matching forgets nothing."""
        b, _ = scope(ctx)

        def run() -> ForgetOut:


            if query is not None and not query.strip():
                raise ValidationError("query is empty: give the words the items to forget contain, or an item_id")
            gone = lib_forget(item_id, query=query, agent=b.agent, org=b.org, user=b.user, home=home,
                              reason="forgotten through MCP")
            return {"forgotten": [_item(it) for it in gone], "count": len(gone)}

        return _call(run)

    @server.tool(annotations=records)
    def get_playbook(
        task: Annotated[str, Field(description="The task at hand, in words, or the name of a crystallise task.")],
        ctx: Context,
        budget_tokens: Annotated[int, Field(ge=50, le=8000, description="Most tokens of context to return.")]
        = 800,
    ) -> PlaybookOut:
        """The learned context for a task: what is known about the user, the org's rules, the agent's
        playbook (strategies, pitfalls) and the names of the skills that may help. Follow it."""
        b, session = scope(ctx)
        started, t0 = now(), time.perf_counter()

        def run() -> PlaybookOut:


            q = _text(task, "task")
            spec_note = _task_query(home, q)
            pack = assemble(agent=b.agent, org=b.org, user=b.user, query=spec_note or q,
                            budget_tokens=budget_tokens, home=home)
            skills = [it.meta.get("skill") for it in pack.items if it.kind == "skill"]
            tid = record(b, session, "get_playbook", {"task": q, "budget_tokens": budget_tokens}, pack.item_ids,
                         {"tokens": pack.tokens, "items": len(pack.items)}, started, t0)
            return {"text": pack.text or "(nothing learned for this scope yet)", "tokens": pack.tokens,
                    "item_ids": pack.item_ids, "skills": [s for s in skills if s], "trace_id": tid}

        return _call(run)

    @server.tool(annotations=reads)
    def list_skills(ctx: Context) -> SkillsOut:
        """The skills available to this scope, by name and description; load_skill(name) gives one's
        instructions."""
        b, _ = scope(ctx)

        def run() -> SkillsOut:


            found = lib_list(home, agent=b.agent, org=b.org)
            return {"skills": [{"name": s.name, "description": s.description, "level": s.level,
                                "source": s.source, "trust": s.trust} for s in found]}

        return _call(run)

    @server.tool(annotations=records)
    def load_skill(
        name: Annotated[str, Field(description="The skill's name, as list_skills shows it.")],
        ctx: Context,
        file: Annotated[str | None, Field(description="One of the skill's other files (its `files`), to read "
                                                      "that file instead of the instructions.")] = None,
    ) -> LoadSkillOut:
        """A skill's instructions (its SKILL.md body), or one of its files."""
        b, session = scope(ctx)
        started, t0 = now(), time.perf_counter()

        def run() -> LoadSkillOut:


            n = _text(name, "name")
            skill = lib_load(n, home=home, agent=b.agent, org=b.org)
            if file is not None and file not in skill.files:
                listed = ", ".join(sorted(skill.files)) or "none"
                raise NotFoundError(f"skill {n!r} has no file {file!r}: its files are {listed}")
            body = skill.files[file] if file is not None else skill.body
            shown = [skill.item().id]
            tid = record(b, session, "load_skill", {"name": n, "file": file}, shown, {"chars": len(body)},
                         started, t0, loaded_skills=[skill.name])
            return {"name": skill.name, "description": skill.description, "file": file or "SKILL.md",
                    "text": body, "files": sorted(skill.files), "allowed_tools": skill.allowed_tools,
                    "trust": skill.trust, "trace_id": tid}

        return _call(run)

    @server.tool(annotations=writes)
    def feedback(
        ctx: Context,
        score: Annotated[float | None, Field(ge=0, le=1, description="1 = the answer was right/helpful, "
                                                                     "0 = wrong/harmful")] = None,
        label: Annotated[str | None, Field(max_length=200, description="A short verdict, e.g. 'wrong'.")] = None,
        correction: Annotated[str | None, Field(max_length=20_000, description="What the right answer was.")]
        = None,
        comment: Annotated[str | None, Field(max_length=20_000, description="Anything else worth keeping.")]
        = None,
        trace_id: Annotated[str | None, Field(description="The answer to rate (a trace_id from recall, "
                                                          "get_playbook or load_skill); default: the last one "
                                                          "of this session.")] = None,
    ) -> FeedbackOut:
        """Say how the last answer built on crystallise's context went; learning credits the items it showed."""
        b, session = scope(ctx)

        def run() -> FeedbackOut:
            if score is None and label is None and not (correction or "").strip() and not (comment or "").strip():
                raise ValidationError("feedback is empty: give a score (0-1), a label, a correction or a comment")
            tid = trace_id or memo.last(session)
            if tid is None:
                raise ValidationError("no answer to give feedback on yet in this session: call get_playbook, recall "
                                      "or load_skill first, or pass the trace_id one of them returned")
            trace = None  # ids are per org (engine/access.py): the org's qualified id, then the id as stored
            for candidate in dict.fromkeys((access.stored_id(b.org, tid), tid)):
                try:
                    found = home.store.get_trace(candidate)
                except NotFoundError:
                    continue
                if b.owns(found):
                    trace = found
                    break
            if trace is None:  # unknown and another scope's answer alike
                raise NotFoundError(f"trace {tid} not found in this scope: pass a trace_id this session's tools "
                                    "returned")
            fb = Feedback(trace_id=trace.id, score=score, label=label, correction=correction, comment=comment)
            home.store.add_feedback(fb)
            return {"trace_id": tid, "feedback_id": fb.id, "recorded": True}

        return _call(run)

    register_tier_tools(server, home, scope, _call)
    return server


def _task_query(home: Home, text: str) -> str | None:
    """A crystallise task's own name and description, when `text` names one (its playbook query)."""
    if len(text) > 64 or " " in text:
        return None
    try:
        spec = View.of(home.repo).spec(text)
    except (UserError, OSError):
        return None
    return f"{spec.name}: {spec.description}" if spec is not None and spec.description else None
