"""An OpenAI Agents SDK tracing processor that records agent runs as crystallise traces (extra `agents`).

    import agents
    from crystallise.integrations.openai_agents import CrystalliseTracingProcessor

    agents.add_trace_processor(CrystalliseTracingProcessor(home, org="acme", user="u1"))   # beside OpenAI's
    agents.set_trace_processors([CrystalliseTracingProcessor(home)])                       # or instead of it

One Agents trace (a `Runner.run`) -> one crystallise trace, written when it ends:

    agents span        crystallise span
    agent              task  "agent NAME"            (the first agent names the trace's agent_id)
    task / turn        other (the SDK's run and turn structure; parents of the spans below)
    generation         llm   model, prompt/completion tokens from usage, input and output messages
    response           llm   the Responses API call: model, usage, output text
    function           tool  NAME: input arguments, output
    handoff/guardrail/custom/...  other

Processor callbacks run on the agent's thread; the trace is written synchronously at trace end
(one store transaction), and a store failure is logged, never raised into the run.
"""

from __future__ import annotations

import json
from typing import Any

from crystallise.engine.home import Home
from crystallise.integrations.recorder import Recorder, epoch
from crystallise.types import Span, now

try:
    from agents.tracing import TracingProcessor
except ImportError as exc:  # pragma: no cover - depends on the extras installed
    raise ImportError(f"the OpenAI Agents integration needs the `agents` extra: pip install 'crystallise[agents]' "
                      f"({exc})") from exc

__all__ = ["CrystalliseTracingProcessor"]


def _tokens(usage: Any) -> dict[str, Any]:
    if usage is None:
        return {}
    get = usage.get if isinstance(usage, dict) else lambda k: getattr(usage, k, None)
    given, made = get("input_tokens") or get("prompt_tokens"), get("output_tokens") or get("completion_tokens")
    return {k: int(v) for k, v in (("prompt_tokens", given), ("completion_tokens", made)) if v is not None}


def _loads(text: Any) -> Any:
    if isinstance(text, str):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _span(span: Any) -> Span:
    data = span.span_data
    kind, name, attrs = "other", str(getattr(data, "type", "span")), {"framework": "openai-agents",
                                                                        "agents.span_type": data.type}
    inp: Any = None
    out: Any = None
    if data.type == "agent":
        kind, name = "task", f"agent {data.name}"
        attrs |= {"tools": list(data.tools or []), "handoffs": list(data.handoffs or [])}
    elif data.type == "generation":
        kind, name = "llm", f"chat {data.model or ''}".strip()
        inp, out = list(data.input or []), list(data.output or [])
        attrs |= {"model": data.model, **_tokens(data.usage)}
    elif data.type == "response":
        response = data.response
        kind, name = "llm", f"responses {getattr(response, 'model', '') or ''}".strip()
        inp = data.input
        out = getattr(response, "output_text", None) if response is not None else None
        attrs |= {"model": getattr(response, "model", None), **_tokens(getattr(response, "usage", None))}
    elif data.type == "function":
        kind, name = "tool", str(data.name)
        inp, out = _loads(data.input), data.output
        attrs["tool"] = data.name
    elif data.type == "handoff":
        name = f"handoff {data.from_agent} -> {data.to_agent}"
    elif hasattr(data, "name"):
        name = str(data.name)
    error = span.error
    return Span(name=name, kind=kind, id="sp_" + str(span.span_id).removeprefix("span_"),
                parent_id="sp_" + str(span.parent_id).removeprefix("span_") if span.parent_id else None,
                input=inp, output=out if isinstance(out, str | dict | list | None) else str(out),
                error=(str(error.get("message")) if isinstance(error, dict) else str(error)) if error else None,
                started_at=epoch(span.started_at) or now(), ended_at=epoch(span.ended_at) or now(), attributes=attrs)


class CrystalliseTracingProcessor(TracingProcessor):
    """Records Agents SDK traces into `home` (scope: `agent` overrides the first agent's name; `org`,
    `user`, `session` label every trace — the Agents `group_id` is the session when none is given)."""

    def __init__(self, home: Home, *, agent: str | None = None, org: str | None = None, user: str | None = None,
                 session: str | None = None) -> None:
        self.recorder = Recorder(home, agent=agent, org=org, user=user, session=session)

    def on_trace_start(self, trace: Any) -> None:
        exported = trace.export() or {}
        self.recorder.begin(trace.trace_id, trace_id="tr_" + str(trace.trace_id).removeprefix("trace_"),
                            name=str(exported.get("workflow_name") or trace.name), session=exported.get("group_id"),
                            metadata={"framework": "openai-agents", "agents_trace_id": trace.trace_id,
                                      "agents_metadata": exported.get("metadata") or {}})

    def on_trace_end(self, trace: Any) -> None:
        self.recorder.end(trace.trace_id)

    def on_span_start(self, span: Any) -> None:
        return None

    def on_span_end(self, span: Any) -> None:
        mapped = _span(span)
        if mapped.kind == "task":  # the first agent to finish names the trace (unless `agent` was given)
            opened = self.recorder.trace_of(span.trace_id)
            if opened is not None and not self.recorder.agent and opened.agent_id == "default":
                opened.agent_id = str(span.span_data.name)
        self.recorder.span(span.trace_id, mapped)

    def shutdown(self) -> None:
        return None

    def force_flush(self) -> None:
        return None
