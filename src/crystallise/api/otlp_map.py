"""OpenTelemetry spans -> one crystallise Trace (pure functions over plain dicts).

A *raw span* is the decoded OTLP span as JSON-able data (see `otlp.raw_spans`):

    {"trace_id": "5b8e…(32 hex)", "span_id": "eee1…(16 hex)", "parent_id": None | "…",
     "name": "chat gpt-4o", "kind": 3, "start": 1767000000.1, "end": 1767000000.9,
     "attrs": {"gen_ai.operation.name": "chat", ...}, "resource": {"service.name": "support"},
     "scope": "opentelemetry.instrumentation.openai", "status_code": 0, "status_message": "",
     "events": [{"name": "gen_ai.evaluation.result", "time": 1767000001.0, "attrs": {...}}]}

`build_trace(spans)` turns all spans of one OTLP trace id into one Trace:

1. the root span (no parent) names the trace and gives its scope, input, output, status;
2. each span becomes a Span: kind from `gen_ai.operation.name` (chat -> llm, execute_tool -> tool,
   invoke_agent -> task) or the OpenInference / OpenLLMetry kinds; model, provider and token usage
   under crystallise's own attribute names; prompts/completions from whichever convention is present;
3. `gen_ai.evaluation.result` events (and `gen_ai.evaluation.*` span attributes) become Feedback;
   a failed root span becomes implicit "exception" feedback, a failed tool span "tool_error".

Conventions read (first present wins), newest first:
  GenAI semconv   gen_ai.input.messages / gen_ai.output.messages (attributes or events),
                  gen_ai.{system,user,assistant,tool}.message + gen_ai.choice events,
                  gen_ai.content.prompt / .completion events
  OpenLLMetry     gen_ai.prompt.N.role|content, gen_ai.completion.N.role|content, traceloop.entity.*
  OpenInference   llm.input_messages.N.message.*, llm.output_messages.N.message.*, input.value,
                  output.value, llm.model_name, llm.token_count.*, openinference.span.kind
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from crystallise.types import Feedback, Span, Trace

__all__ = ["build_trace", "crystallise_span_id", "crystallise_trace_id", "span_kind"]

RawSpan = dict[str, Any]
STATUS_ERROR = 2
_LLM_OPS = {"chat", "text_completion", "generate_content", "completion"}
_AGENT_OPS = {"invoke_agent", "create_agent", "invoke_workflow"}
_ROLE_EVENTS = {"gen_ai.system.message": "system", "gen_ai.user.message": "user",
                "gen_ai.assistant.message": "assistant", "gen_ai.tool.message": "tool"}
_CONSUMED_PREFIXES = ("gen_ai.prompt.", "gen_ai.completion.", "llm.input_messages.", "llm.output_messages.")
_CONSUMED = {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions", "input.value",
             "output.value", "traceloop.entity.input", "traceloop.entity.output", "gen_ai.tool.call.arguments",
             "gen_ai.tool.call.result", "crystallise.input", "crystallise.output"}
_SCOPE_KEYS = {
    "agent": ("crystallise.agent",),
    "org": ("crystallise.org",),
    "user": ("crystallise.user", "user.id", "enduser.id"),
    "session": ("crystallise.session", "session.id", "gen_ai.conversation.id"),
}


def crystallise_trace_id(otel_trace_id: str) -> str:
    """`otel_` + the 32 hex digits, so a trace is found by the id your tracing tool shows."""
    return "otel_" + otel_trace_id


def crystallise_span_id(otel_span_id: str) -> str:
    return "sp_" + otel_span_id


# -- small helpers -------------------------------------------------------------------------------


def _clean(text: Any, limit: int | None = None) -> str:
    """A plain-text column value: no NULs (PostgreSQL refuses them), optionally capped."""
    s = str(text).replace("\x00", "\ufffd")
    return s[:limit] if limit else s


def _json(value: Any) -> Any:
    """Parse JSON-looking strings (instrumentations serialise messages into attribute strings)."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _first(sources: Iterable[dict[str, Any]], keys: Iterable[str]) -> Any:
    keys = tuple(keys)
    for source in sources:
        for key in keys:
            value = source.get(key)
            if value is not None and value != "":
                return value
    return None


def _indexed(attrs: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """`prefix.0.role`, `prefix.0.content`, `prefix.1.message.role` ... -> [{role, content}, ...]."""
    groups: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        if not key.startswith(prefix):
            continue
        index, _, field = key[len(prefix):].partition(".")
        if index.isdigit() and field:
            field = field.removeprefix("message.")
            groups.setdefault(int(index), {})[field] = _json(value) if field == "content" else value
    return [groups[i] for i in sorted(groups)]


def _message_text(message: Any) -> str | None:
    """The text of a message in any of the conventions, or None if it is not plain text."""
    if isinstance(message, str):
        return message
    if not isinstance(message, dict) or message.get("tool_calls"):
        return None
    content = message.get("content", message.get("parts"))
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = [t for p in content if isinstance(p, dict) and p.get("type", "text") == "text"
                 and isinstance(t := p.get("content", p.get("text")), str)]
        if len(texts) == len(content):
            return "".join(texts)
    return None


def _answer(messages: Any) -> Any:
    """A single plain-text completion becomes its text; anything richer stays as sent."""
    if isinstance(messages, list) and len(messages) == 1:
        text = _message_text(messages[0])
        if text is not None:
            return text
    return messages


# -- one span ------------------------------------------------------------------------------------


def span_kind(attrs: dict[str, Any]) -> str:
    """crystallise span kind from the GenAI operation or the OpenInference / OpenLLMetry span kinds."""
    op = attrs.get("gen_ai.operation.name")
    oi = str(attrs.get("openinference.span.kind", "")).upper()
    tl = str(attrs.get("traceloop.span.kind", "")).lower()
    if op in _LLM_OPS or oi == "LLM" or attrs.get("llm.request.type") in ("chat", "completion"):
        return "llm"
    if op == "execute_tool" or oi == "TOOL" or tl == "tool":
        return "tool"
    if op in _AGENT_OPS or oi == "AGENT" or tl in ("agent", "workflow", "task"):
        return "task"
    if oi == "RETRIEVER" or op == "retrieval" or attrs.get("crystallise.shown_items"):
        return "retrieval"
    if op is None and ("gen_ai.prompt.0.content" in attrs or "llm.input_messages.0.message.role" in attrs):
        return "llm"
    return "other"


def _event_attr(span: RawSpan, key: str) -> Any:
    return _first((e.get("attrs", {}) for e in span.get("events", [])), (key,))


def _input(span: RawSpan) -> Any:
    a = span["attrs"]
    messages = _json(a.get("gen_ai.input.messages") or _event_attr(span, "gen_ai.input.messages"))
    if messages:
        system = _json(a.get("gen_ai.system_instructions"))
        return ([{"role": "system", "parts": system}] if system else []) + (
            messages if isinstance(messages, list) else [messages])
    by_event = [{"role": _ROLE_EVENTS[e["name"]], "content": _json(e.get("attrs", {}).get("content"))}
                for e in span.get("events", []) if e.get("name") in _ROLE_EVENTS]
    if by_event:
        return by_event
    for value in (_event_attr(span, "gen_ai.prompt"), _indexed(a, "gen_ai.prompt."),
                  _indexed(a, "llm.input_messages."), a.get("gen_ai.tool.call.arguments"), a.get("input.value"),
                  a.get("traceloop.entity.input"), a.get("crystallise.input")):
        if value not in (None, "", []):
            return _json(value)
    return None


def _output(span: RawSpan) -> Any:
    a = span["attrs"]
    messages = _json(a.get("gen_ai.output.messages") or _event_attr(span, "gen_ai.output.messages"))
    if messages:
        return _answer(messages)
    choices = [_json(e.get("attrs", {}).get("message", e.get("attrs", {}).get("content")))
               for e in span.get("events", []) if e.get("name") == "gen_ai.choice"]
    if any(c is not None for c in choices):
        return _answer(choices)
    for value in (_event_attr(span, "gen_ai.completion"), _indexed(a, "gen_ai.completion."),
                  _indexed(a, "llm.output_messages."), a.get("gen_ai.tool.call.result"), a.get("output.value"),
                  a.get("traceloop.entity.output"), a.get("crystallise.output")):
        if value not in (None, "", []):
            return _answer(_json(value))
    return None


def _error(span: RawSpan) -> str | None:
    if span.get("status_code") != STATUS_ERROR:
        return None
    for e in span.get("events", []):
        if e.get("name") == "exception":
            ea = e.get("attrs", {})
            kind, message = ea.get("exception.type"), ea.get("exception.message")
            if kind or message:
                return _clean(f"{kind or 'Error'}: {message or ''}".strip().rstrip(":"))
    return _clean(span.get("status_message") or span["attrs"].get("error.type") or "error")


def to_span(span: RawSpan, known: set[str]) -> Span:
    """One crystallise Span; the parent link is kept when the parent is part of the trace."""
    a = span["attrs"]
    attributes: dict[str, Any] = {}
    for name, keys in (
        ("model", ("gen_ai.request.model", "gen_ai.response.model", "llm.model_name")),
        ("provider", ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")),
        ("prompt_tokens", ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt",
                           "llm.usage.prompt_tokens")),
        ("completion_tokens", ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens",
                               "llm.token_count.completion", "llm.usage.completion_tokens")),
        ("operation", ("gen_ai.operation.name",)),
        ("tool", ("gen_ai.tool.name", "tool.name")),
        ("agent", ("gen_ai.agent.name",)),
        ("shown_items", ("crystallise.shown_items",)),
    ):
        value = _first([a], keys)
        if value is not None:
            attributes[name] = value
    if span.get("end") is not None:
        attributes["latency_ms"] = round((span["end"] - span["start"]) * 1000, 3)
    attributes["otel"] = {
        "span_id": span["span_id"],
        "parent_span_id": span.get("parent_id"),
        "span_kind": span.get("kind", 0),
        "scope": span.get("scope", ""),
        "attributes": {k: v for k, v in a.items() if k not in _CONSUMED and not k.startswith(_CONSUMED_PREFIXES)},
    }
    parent = span.get("parent_id")
    return Span(
        name=_clean(span.get("name") or "span", 500),
        kind=span_kind(a),  # type: ignore[arg-type]
        id=crystallise_span_id(span["span_id"]),
        parent_id=crystallise_span_id(parent) if parent and parent in known else None,
        input=_input(span),
        output=_output(span),
        error=_error(span),
        started_at=span["start"],
        ended_at=span.get("end"),
        attributes=attributes,
    )


# -- feedback ------------------------------------------------------------------------------------


def _evaluation(attrs: dict[str, Any], trace_id: str, at: float) -> Feedback | None:
    value = attrs.get("gen_ai.evaluation.score.value")
    label = attrs.get("gen_ai.evaluation.score.label")
    name = attrs.get("gen_ai.evaluation.name") or "evaluation"
    explanation = attrs.get("gen_ai.evaluation.explanation")
    if value is None and label is None:
        return None
    score = float(value) if isinstance(value, int | float) and 0.0 <= float(value) <= 1.0 else None
    comment = f"{name}: {explanation}" if explanation else str(name)
    if value is not None and score is None:
        comment += f" (score {value} is outside [0, 1], kept here only)"
    return Feedback(trace_id=trace_id, score=score, label=_clean(label, 200) if label is not None else None,
                    comment=_clean(comment), kind="evaluation", created_at=at)


def feedback_of(spans: list[RawSpan], trace_id: str, root: RawSpan | None) -> list[Feedback]:
    out: list[Feedback] = []
    for s in spans:
        for e in s.get("events", []):
            if e.get("name") == "gen_ai.evaluation.result":
                fb = _evaluation(e.get("attrs", {}), trace_id, e.get("time") or s["start"])
                if fb:
                    out.append(fb)
        fb = _evaluation(s["attrs"], trace_id, s.get("end") or s["start"])
        if fb:
            out.append(fb)
        a = s["attrs"]
        score = a.get("crystallise.feedback.score")
        if score is not None or a.get("crystallise.feedback.label") or a.get("crystallise.feedback.correction"):
            ok = isinstance(score, int | float) and 0.0 <= float(score) <= 1.0
            out.append(Feedback(trace_id=trace_id, score=float(score) if ok else None,
                                label=a.get("crystallise.feedback.label"),
                                correction=_json(a.get("crystallise.feedback.correction")),
                                comment=a.get("crystallise.feedback.comment"), created_at=s.get("end") or s["start"]))
        error = _error(s)
        if error and s is root:
            out.append(Feedback(trace_id=trace_id, score=0.0, kind="exception", comment=error, source="implicit"))
        elif error and span_kind(a) == "tool":
            out.append(Feedback(trace_id=trace_id, kind="tool_error", comment=f"{s['name']}: {error}",
                                source="implicit"))
    return out


# -- the trace -----------------------------------------------------------------------------------


def find_root(spans: list[RawSpan]) -> RawSpan:
    """The span without a parent; else (a trace whose root never came) the earliest orphan."""
    ids = {s["span_id"] for s in spans}
    roots = [s for s in spans if not s.get("parent_id")] or [s for s in spans if s.get("parent_id") not in ids]
    return min(roots or spans, key=lambda s: s["start"])


def scope_of(spans: list[RawSpan], root: RawSpan) -> dict[str, str | None]:
    """agent/org/user/session from the root's attributes, then any span's, then the resource."""
    ordered = [root] + [s for s in spans if s is not root]
    sources = [s["attrs"] for s in ordered] + [s.get("resource", {}) for s in ordered]
    found: dict[str, str | None] = {}
    for field, keys in _SCOPE_KEYS.items():
        value = _first(sources, keys)
        found[field] = _clean(value, 200) if value is not None else None
    if found["agent"] is None:
        service = _first([s.get("resource", {}) for s in ordered], ("service.name",))
        named = _first([s["attrs"] for s in ordered], ("gen_ai.agent.name",))
        if named is None and service and not str(service).startswith("unknown_service"):
            named = service
        found["agent"] = _clean(named, 200) if named else "default"
    return found


def build_trace(spans: list[RawSpan], org: str | None) -> Trace:
    """All spans of one OTLP trace id (any order) -> one Trace in the given org (see module doc)."""
    spans = sorted(spans, key=lambda s: (s["start"], s.get("end") or s["start"]))
    root = find_root(spans)
    trace_id = crystallise_trace_id(root["trace_id"])
    known = {s["span_id"] for s in spans}
    mapped = [to_span(s, known) for s in spans]
    root_span = mapped[spans.index(root)]
    scope = scope_of(spans, root)
    ends = [s["end"] for s in spans if s.get("end") is not None]
    trace_input = root_span.input
    if trace_input is None:
        trace_input = next((m.input for m in mapped if m.input is not None), None)
    trace_output = root_span.output
    if trace_output is None:
        by_end = sorted(mapped, key=lambda m: m.ended_at or m.started_at, reverse=True)
        trace_output = next((m.output for m in by_end if m.output is not None), None)
    trace = Trace(
        name=root_span.name,
        id=trace_id,
        agent_id=scope["agent"] or "default",
        org_id=org,
        user_id=scope["user"],
        session_id=scope["session"],
        input=trace_input,
        output=trace_output,
        status="error" if root_span.error else "ok",
        error=root_span.error,
        started_at=spans[0]["start"],
        ended_at=max(ends) if ends else None,
        metadata={
            "source": "otlp",
            "otel_trace_id": root["trace_id"],
            "resource": root.get("resource", {}),
            "complete": not root.get("parent_id"),
        },
        spans=mapped,
    )
    if trace.ended_at is not None:
        trace.metadata["latency_ms"] = round((trace.ended_at - trace.started_at) * 1000, 3)
    trace.feedback = feedback_of(spans, trace_id, root)
    return trace
