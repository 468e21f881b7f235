"""The OpenAI-compatible proxy: point an OpenAI client's base URL at crystallise, change nothing else.

    client = openai.OpenAI(base_url="http://127.0.0.1:8400/v1", api_key=CRYSTALLISE_KEY,
                           default_headers={"X-Crystallise-Agent": "support", "X-Crystallise-User": "u1"})
    client.chat.completions.create(model="gpt-4o-mini", messages=[...])          # or stream=True

One request, in order:

    1. scope      X-Crystallise-Agent/-Org/-User/-Session headers (the body's `user` is the fallback user);
                  the key's org is forced, an unknown X-Crystallise-* header is a 400 (422s answer 400 on the
                  OpenAI paths, in OpenAI's error shape: problems.py)
    2. context    assemble(agent, org, user, query = the last user message) -> merged into the first
                  system message (or a new one), unless `X-Crystallise-Context: off`
    3. forward    to the upstream (proxy_upstream.py): its status and body come back unchanged,
                  a stream chunk by chunk
    4. record     one trace: a retrieval span (the items shown) and an llm span (model, usage, latency,
                  time to first token); written *before* the answer ends — the last bytes of a stream
                  (`data: [DONE]`) are held back until the trace is durable, so feedback can follow at once
    5. answer     + `X-Crystallise-Trace-Id: tr_…`: POST /v1/traces/{id}/feedback rates the call

The upstream unreachable is a 502 problem (with an OpenAI-style `error` member, which the openai
client shows), and the trace is still recorded, as an error. A client that hangs up mid-stream
leaves a trace with `abandoned` implicit feedback.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from crystallise.api import logsafe
from crystallise.api.auth import Principal
from crystallise.api.deps import HomeDep, PrincipalDep
from crystallise.api.problems import Problem, problem_response
from crystallise.api import proxy_memory_tools as memory_tools
from crystallise.api.proxy_upstream import Reply, UpstreamUnavailable
from crystallise.api.sse import SseRecorder
from crystallise.engine.serving import assemble
from crystallise.errors import CrystalliseError, ValidationError
from crystallise.backends.base import approx_tokens
from crystallise.engine.home import Home
from crystallise.types import Feedback, Span, Trace, new_id, now

__all__ = ["CONTEXT_PREAMBLE", "TRACE_HEADER", "Call", "openai_problem", "read_scope", "router"]

log = logging.getLogger("crystallise.api.proxy")

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible proxy"])

TRACE_HEADER = "X-Crystallise-Trace-Id"
CONTEXT_PREAMBLE = "What has been learned for this agent (apply it where it is relevant):\n\n"
_HEADERS = {"agent", "org", "user", "session", "trace-name", "context", "context-budget", memory_tools.HEADER}


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Annotated[str, Field(min_length=1, max_length=50)]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """An OpenAI chat completion request. Fields not listed here are forwarded as they are."""

    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Field(min_length=1, max_length=500)]
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=100_000)]
    stream: StrictBool = False
    user: Annotated[str, Field(max_length=200)] | None = None


@dataclass
class ProxyScope:
    agent: str
    org: str | None
    user: str | None
    session: str | None
    name: str
    inject: bool
    budget: int


def _scope_value(name: str, value: str) -> str:
    value = value.strip()
    if not value or len(value) > 200:
        raise Problem(422, f"header X-Crystallise-{name.title()} must be 1-200 characters, got {len(value)}",
                      errors=[{"loc": f"header.x-crystallise-{name}", "msg": "1-200 characters", "type": "value"}])
    return value


def read_scope(request: Request, who: Principal, body: Any) -> ProxyScope:
    """Scope from the X-Crystallise-* headers; misspelt ones are refused like unknown query parameters.
    `body.user` (a chat or responses request) is the fallback user."""
    given: dict[str, str] = {}
    for key, value in request.headers.items():
        if key.lower().startswith("x-crystallise-"):
            given[key.lower().removeprefix("x-crystallise-")] = value
    unknown = sorted(set(given) - _HEADERS)
    if unknown:
        names = ", ".join(f"X-Crystallise-{u.title()}" for u in unknown)
        known = ", ".join(f"X-Crystallise-{h.title()}" for h in sorted(_HEADERS))
        raise Problem(422, f"unknown header(s) {names}: the proxy reads {known}",
                      errors=[{"loc": f"header.x-crystallise-{u}", "msg": "unknown header", "type": "extra_forbidden"}
                              for u in unknown])
    scoped = {k: _scope_value(k, v) for k, v in given.items() if k in ("agent", "org", "user", "session", "trace-name")}
    context = given.get("context", "on").strip().lower()
    if context not in ("on", "off"):
        raise Problem(422, f"X-Crystallise-Context must be `on` or `off`, got {context!r}")
    budget_text = given.get("context-budget", "800").strip()
    if not budget_text.isdigit() or not 0 < int(budget_text) <= 200_000:
        raise Problem(422, f"X-Crystallise-Context-Budget must be a token count in 1..200000, got {budget_text!r}")
    return ProxyScope(
        agent=scoped.get("agent", "default"), org=who.write_org(scoped.get("org")),
        user=who.write_user(scoped.get("user") or (body.user.strip() if body.user and body.user.strip() else None)),
        session=scoped.get("session"), name=scoped.get("trace-name", "chat.completions"),
        inject=context == "on", budget=int(budget_text),
    )


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def inject(messages: list[dict[str, Any]], pack_text: str) -> list[dict[str, Any]]:
    """The messages with the pack merged into the leading system message (a new one if there is none).

    Merging, not adding a second system message: several chat templates accept only one.
    """
    if not pack_text:
        return messages
    block = CONTEXT_PREAMBLE + pack_text
    out = [dict(m) for m in messages]
    first = out[0]
    if first.get("role") in ("system", "developer") and isinstance(first.get("content"), str | None):
        first["content"] = (first["content"] + "\n\n" if first.get("content") else "") + block
    elif first.get("role") in ("system", "developer") and isinstance(first.get("content"), list):
        first["content"] = [*first["content"], {"type": "text", "text": block}]
    else:
        out.insert(0, {"role": "system", "content": block})
    return out


class Call:
    """One proxied call: what was sent, what came back, and the trace that records it."""

    def __init__(self, home: Home, upstream_label: str, scope: ProxyScope, body: dict[str, Any]) -> None:
        self.home, self.scope, self.body, self.upstream = home, scope, body, upstream_label
        self.trace_id = new_id("tr_")
        self.started, self.t0 = now(), time.perf_counter()
        self.retrieval: Span | None = None
        self.sent: list[dict[str, Any]] = body["messages"]
        self.recorded = self.attempted = False
        self.tool_spans: list[Span] = []  # memory tools the proxy ran (proxy_memory_tools.py)

    async def assemble(self) -> None:
        messages = self.body["messages"]
        query = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "") or None
        if not self.scope.inject:
            return
        s = self.scope
        t0, started = time.perf_counter(), now()
        pack = await anyio.to_thread.run_sync(lambda: assemble(
            agent=s.agent, org=s.org, user=s.user, query=query, budget_tokens=s.budget, home=self.home))
        self.retrieval = Span(
            name="context", kind="retrieval", trace_id=self.trace_id,
            input={"query": query, "budget_tokens": s.budget},
            output={"tokens": pack.tokens, "items": len(pack.items)}, started_at=started, ended_at=now(),
            attributes={"shown_items": pack.item_ids, "latency_ms": round((time.perf_counter() - t0) * 1000, 3)},
        )
        self.sent = inject(messages, pack.text)

    def forward_body(self) -> dict[str, Any]:
        return {**self.body, "messages": self.sent}

    def trace(self, *, status: int | None, output: Any, model: str | None, usage: dict[str, Any] | None,
              finish: str | None, error: str | None, ttft_ms: float | None = None,
              abandoned: bool = False) -> Trace:
        latency = round((time.perf_counter() - self.t0) * 1000, 3)
        attrs: dict[str, Any] = {"model": self.body.get("model"), "response_model": model, "upstream": self.upstream,
                                 "stream": bool(self.body.get("stream")), "upstream_status": status,
                                 "finish_reason": finish, "latency_ms": latency}
        if ttft_ms is not None:
            attrs["ttft_ms"] = ttft_ms
        if usage:
            attrs.update({k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens") if k in usage})
        elif status == 200:  # a stream without a usage chunk: estimate, and say so
            attrs.update(prompt_tokens=sum(approx_tokens(_text(m.get("content"))) for m in self.sent),
                         completion_tokens=approx_tokens(output if isinstance(output, str) else ""),
                         usage_estimated=True)
        if self.retrieval is not None:
            attrs["shown_items"] = self.retrieval.attributes["shown_items"]
        llm = Span(name=f"chat {self.body.get('model')}", kind="llm", trace_id=self.trace_id,
                   parent_id=None, input=self.sent, output=output, error=error, started_at=self.started,
                   ended_at=now(), attributes=attrs)
        s = self.scope
        trace = Trace(name=s.name, id=self.trace_id, agent_id=s.agent, org_id=s.org, user_id=s.user,
                      session_id=s.session, input=self.body["messages"], output=output,
                      status="error" if error else "ok", error=error, started_at=self.started, ended_at=now(),
                      metadata={"proxy": {"upstream": self.upstream, "status": status}, "latency_ms": latency},
                      spans=[sp for sp in (self.retrieval, llm, *self.tool_spans) if sp is not None])
        if abandoned:
            trace.feedback.append(Feedback(trace_id=self.trace_id, kind="abandoned", source="implicit",
                                           comment="the client closed the stream before it ended"))
        elif error:
            trace.feedback.append(Feedback(trace_id=self.trace_id, kind="upstream_error", source="implicit",
                                           comment=error[:2000]))
        return trace

    async def record(self, trace: Trace) -> bool:
        """Write the trace once; True when it is durable. A store failure is logged, never raised:
        the client still gets its answer, without the trace id header."""
        if self.attempted:
            return self.recorded
        self.attempted = True
        try:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.home.store.write_trace, trace)
        except CrystalliseError as e:
            log.error("the proxy could not record trace %s: %s", self.trace_id, logsafe.failure(e))
            return False
        self.recorded = True
        return True

    def headers(self, ok: bool) -> dict[str, str]:
        if not ok:
            return {"X-Crystallise-Trace-Error": "the trace could not be recorded: see the server log"}
        return {TRACE_HEADER: self.trace_id, "Link": f'</v1/traces/{self.trace_id}/feedback>; rel="feedback"'}


def _summary(reply: Reply) -> tuple[Any, str | None, dict[str, Any] | None, str | None, str | None]:
    """(output, model, usage, finish_reason, error) of a whole JSON answer."""
    try:
        doc = json.loads(reply.content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        doc = None
    if reply.status >= 400 or not isinstance(doc, dict):
        message = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(message, dict):
            message = message.get("message")
        text = str(message or reply.content[:500].decode("utf-8", "replace") or "no body")
        return None, None, None, None, f"upstream HTTP {reply.status}: {text}"
    choice = (doc.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output: Any = message.get("content")
    if output is None and message.get("tool_calls"):
        output = {"tool_calls": message["tool_calls"]}
    usage = doc.get("usage") if isinstance(doc.get("usage"), dict) else None
    return output, doc.get("model"), usage, choice.get("finish_reason"), None


def openai_problem(e: ValidationError) -> Problem:
    """A 400 in OpenAI's shape; `ModelNotServed` says param `model`, code `model_not_found`."""
    return Problem(400, str(e), param=getattr(e, "param", None), code=getattr(e, "code", None))


def _bad_gateway(call: Call, detail: str, ok: bool, path: str = "/v1/chat/completions") -> Response:
    return problem_response(502, detail, path, headers=call.headers(ok),
                            error={"message": detail, "type": "upstream_unavailable", "code": 502, "param": None})


@router.post("/chat/completions", summary="OpenAI-compatible chat completions (streaming or not)",
             response_description="the upstream's answer, unchanged (JSON, or text/event-stream when stream=true)",
             responses={200: {"content": {"application/json": {}, "text/event-stream": {}}}})
async def chat_completions(
    request: Request, home: HomeDep, who: PrincipalDep, body: Annotated[ChatRequest, Body()],
) -> Response:
    """Forward a chat completion with the learned context injected; record it as a trace.

    Scope headers: `X-Crystallise-Agent`, `-User` (default: the body's `user`), `-Session`, `-Org`
    (admin key only), `-Trace-Name`, `-Context: off`, `-Context-Budget: TOKENS`. The answer carries
    `X-Crystallise-Trace-Id`; rate it with `POST /v1/traces/{id}/feedback`.
    """
    payload = await request.json()
    scope = read_scope(request, who, body)
    upstream = request.app.state.upstream
    call = Call(home, upstream.label, scope, payload)
    await call.assemble()
    stream = bool(payload.get("stream"))
    tools = memory_tools.requested(request.headers.get(f"x-crystallise-{memory_tools.HEADER}"), stream)
    try:
        if tools:
            reply = await memory_tools.complete(upstream, memory_tools.with_tools(call.forward_body()), home, scope,
                                                call.trace_id, call.tool_spans)
        else:
            reply = await (upstream.open_stream(call.forward_body()) if stream else
                           upstream.complete(call.forward_body()))
    except UpstreamUnavailable as e:
        ok = await call.record(call.trace(status=None, output=None, model=None, usage=None, finish=None,
                                          error=str(e)))
        return _bad_gateway(call, str(e), ok)
    except ValidationError as e:
        raise openai_problem(e) from e

    if reply.chunks is None:
        output, model, usage, finish, error = _summary(reply)
        ok = await call.record(call.trace(status=reply.status, output=output, model=model, usage=usage,
                                          finish=finish, error=error))
        return Response(reply.content, status_code=reply.status, headers={**reply.headers, **call.headers(ok)},
                        media_type=reply.headers.get("content-type", "application/json"))
    return StreamingResponse(_relay(call, reply), status_code=200, headers={**reply.headers, **call.headers(True)},
                             media_type=reply.headers.get("content-type", "text/event-stream"))


async def _relay(call: Call, reply: Reply) -> AsyncIterator[bytes]:
    """Pass the SSE events through as they come; write the trace before the final `[DONE]`."""
    rec = SseRecorder(call.t0)

    def trace(error: str | None = None, abandoned: bool = False) -> Trace:
        return call.trace(status=200, output=rec.output, model=rec.model, usage=rec.usage, finish=rec.finish,
                          error=error, ttft_ms=rec.ttft_ms, abandoned=abandoned)

    chunks = reply.chunks
    if chunks is None:  # the caller only relays streams
        return
    try:
        async for chunk in chunks:
            for event, done in rec.feed(chunk):
                if done:
                    await call.record(trace())
                yield event
        tail = rec.flush()
        await call.record(trace(None if rec.done else "the upstream stream ended without [DONE]"))
        if tail:
            yield tail
    except UpstreamUnavailable as e:
        await call.record(trace(f"the upstream failed mid-stream: {e}"))
        yield b"data: " + json.dumps({"error": {"message": str(e), "type": "upstream_unavailable"}}).encode() + b"\n\n"
    finally:
        if not call.attempted:  # cancelled: the client hung up
            await call.record(trace("the client closed the stream before it ended", abandoned=True))
        if reply.close is not None:
            with anyio.CancelScope(shield=True):
                await reply.close()


@router.get("/models", summary="The upstream's models (OpenAI-compatible)")
async def list_models(request: Request, who: PrincipalDep) -> Response:
    try:
        reply = await request.app.state.upstream.models()
    except UpstreamUnavailable as e:
        return problem_response(502, str(e), "/v1/models",
                                error={"message": str(e), "type": "upstream_unavailable", "code": 502, "param": None})
    return Response(reply.content, status_code=reply.status, headers=reply.headers,
                    media_type=reply.headers.get("content-type", "application/json"))
