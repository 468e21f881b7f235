"""Crystallise's own traces, exported over OTLP/HTTP (JSON) with the OpenTelemetry GenAI conventions.

Every trace the store records (SDK, proxy, MCP, OTLP ingest aside) can go on to any OpenTelemetry
backend — Jaeger, Tempo, Honeycomb, Langfuse, another crystallise:

    CRYSTALLISE_OTLP_ENDPOINT=http://collector:4318/v1/traces      (config.json "otlp_endpoint"; also
                                                                    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or
                                                                    OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces)
    CRYSTALLISE_OTLP_HEADERS="Authorization=Bearer cr_..."         (config "otlp_headers"; OTEL_EXPORTER_OTLP_HEADERS)
    CRYSTALLISE_OTLP_CAPTURE_CONTENT=1                             (config "otlp_capture_content"; default off:
                                                                    messages stay home unless asked for)

One crystallise trace becomes one OTel trace: a root span `invoke_agent AGENT` and one child per span.

    crystallise                        exported as
    trace                              invoke_agent {agent}: gen_ai.operation.name=invoke_agent,
                                       gen_ai.agent.name, gen_ai.conversation.id (the session)
    llm span                           chat {model}: gen_ai.operation.name=chat, gen_ai.request.model,
                                       gen_ai.response.model, gen_ai.usage.input_tokens/output_tokens,
                                       gen_ai.provider.name + gen_ai.system, gen_ai.response.finish_reasons,
                                       (content on) gen_ai.input.messages / gen_ai.output.messages in `parts`
    tool span                          execute_tool {name}: gen_ai.operation.name=execute_tool, gen_ai.tool.name
    other spans                        their name; crystallise.span.kind
    every span                         crystallise.trace_id, crystallise.span_id; errors as status ERROR

Trace and span ids are derived from crystallise's ids (sha256), so a re-export is the same OTel trace.

Fail-open, like any telemetry: `export(trace)` only enqueues (a bounded queue; when it is full the
trace is dropped and counted); a daemon thread posts batches (`max_batch` traces, or every
`interval_s`); a failed post is logged (at most once a minute) and counted in `errors`, never raised.
`flush()` waits for what is queued; it runs at interpreter exit too. Traces that came in through
OTLP ingest (metadata source `otlp`) are not exported again, so exporting to one's own ingest
cannot loop.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import queue
import threading
import time
import urllib.request
from collections.abc import Mapping
from typing import Any

from crystallise.config import (
    ENV_OTEL_ENDPOINT,
    ENV_OTEL_HEADERS,
    ENV_OTEL_TRACES_ENDPOINT,
    ENV_OTLP_CAPTURE,
    ENV_OTLP_ENDPOINT,
    ENV_OTLP_HEADERS,
    env,
)
from crystallise.types import Span, Trace
from crystallise.version import __version__

__all__ = ["OtlpExporter", "exporter_from_config", "to_otlp"]

log = logging.getLogger("crystallise.otlp_export")

_SCOPE = {"name": "crystallise", "version": __version__}
_OPERATIONS = {"llm": "chat", "tool": "execute_tool"}


def _hex(value: str, n: int) -> str:
    return hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:n]


def _value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, list | tuple) and all(isinstance(x, str) for x in v):
        return {"arrayValue": {"values": [{"stringValue": x} for x in v]}}
    return {"stringValue": v if isinstance(v, str) else json.dumps(v, default=str)}


def _attrs(attrs: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in attrs.items() if v is not None]


def _nanos(t: float | None, default: float) -> str:
    return str(int((t if t is not None else default) * 1e9))


def _parts(messages: Any) -> list[dict[str, Any]]:
    """Messages in the GenAI `parts` form: [{"role", "parts": [{"type": "text", "content"}]}]."""
    if isinstance(messages, str):
        return [{"role": "user", "parts": [{"type": "text", "content": messages}]}]
    out = []
    for m in messages if isinstance(messages, list) else []:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if isinstance(content, list):
            parts = [{"type": "text", "content": str(p.get("text", ""))} for p in content
                     if isinstance(p, dict) and p.get("type") in ("text", "input_text", "output_text")]
        else:
            parts = [{"type": "text", "content": "" if content is None else str(content)}]
        out.append({"role": str(m.get("role", "user")), "parts": parts})
    return out


def _provider(span: Span) -> str | None:
    a = span.attributes
    given = a.get("provider") or a.get("system")
    if given:
        return str(given)
    model, upstream = str(a.get("model") or ""), str(a.get("upstream") or "")
    if model.startswith("claude") or "anthropic" in upstream:
        return "anthropic"
    if upstream.startswith("backend local") or model.startswith("local"):
        return "crystallise.local"
    return "openai" if model else None


def _span_attrs(span: Span, capture: bool) -> dict[str, Any]:
    a = span.attributes
    out: dict[str, Any] = {"crystallise.span.kind": span.kind, "crystallise.span_id": span.id}
    op = _OPERATIONS.get(span.kind)
    if op:
        out["gen_ai.operation.name"] = op
    if span.kind == "llm":
        provider = _provider(span)
        finish = a.get("finish_reason")
        out.update({"gen_ai.request.model": a.get("model") or span.name.removeprefix("chat ").strip() or None,
                    "gen_ai.response.model": a.get("response_model"),
                    "gen_ai.usage.input_tokens": a.get("prompt_tokens"),
                    "gen_ai.usage.output_tokens": a.get("completion_tokens"),
                    "gen_ai.provider.name": provider, "gen_ai.system": provider,
                    "gen_ai.response.finish_reasons": [str(finish)] if finish else None})
        if capture:
            out["gen_ai.input.messages"] = json.dumps(_parts(span.input), default=str)
            out["gen_ai.output.messages"] = json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": span.output}],
                  "finish_reason": finish or "stop"}] if isinstance(span.output, str) else _parts(span.output),
                default=str)
    elif span.kind == "tool":
        out["gen_ai.tool.name"] = a.get("tool") or span.name
        if capture:
            out["gen_ai.tool.call.arguments"] = json.dumps(span.input, default=str)
            out["gen_ai.tool.call.result"] = json.dumps(span.output, default=str)
    elif capture:
        out["crystallise.input"] = json.dumps(span.input, default=str)
        out["crystallise.output"] = json.dumps(span.output, default=str)
    if a.get("latency_ms") is not None:
        out["crystallise.latency_ms"] = a["latency_ms"]
    return out


def to_otlp(traces: list[Trace], *, service: str = "crystallise", capture_content: bool = False) -> dict[str, Any]:
    """An OTLP/HTTP JSON `ExportTraceServiceRequest` for `traces` (see the module table)."""
    spans: list[dict[str, Any]] = []
    for t in traces:
        trace_id, root_id = _hex(t.id, 32), _hex(t.id + "/root", 16)
        end = t.ended_at or max([s.ended_at or s.started_at for s in t.spans] + [t.started_at])
        root_attrs = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": t.agent_id,
                      "gen_ai.conversation.id": t.session_id, "crystallise.trace_id": t.id,
                      "crystallise.org_id": t.org_id, "crystallise.user_id": t.user_id, "crystallise.name": t.name}
        if capture_content:
            root_attrs |= {"crystallise.input": json.dumps(t.input, default=str),
                           "crystallise.output": json.dumps(t.output, default=str)}
        spans.append({"traceId": trace_id, "spanId": root_id, "name": f"invoke_agent {t.agent_id}", "kind": 1,
                      "startTimeUnixNano": _nanos(t.started_at, t.started_at), "endTimeUnixNano": _nanos(end, end),
                      "attributes": _attrs(root_attrs),
                      "status": {"code": 2, "message": t.error or ""} if t.status == "error" else {"code": 1}})
        for s in t.spans:
            name = {"llm": f"chat {s.attributes.get('model') or ''}".strip(),
                    "tool": f"execute_tool {s.attributes.get('tool') or s.name}"}.get(s.kind, s.name)
            parent = _hex(s.parent_id, 16) if s.parent_id else root_id
            spans.append({"traceId": trace_id, "spanId": _hex(s.id, 16), "parentSpanId": parent, "name": name,
                          "kind": 3 if s.kind == "llm" else 1,
                          "startTimeUnixNano": _nanos(s.started_at, t.started_at),
                          "endTimeUnixNano": _nanos(s.ended_at, s.started_at),
                          "attributes": _attrs(_span_attrs(s, capture_content)),
                          "status": {"code": 2, "message": s.error} if s.error else {"code": 0}})
    resource = {"attributes": _attrs({"service.name": service, "telemetry.sdk.name": "crystallise",
                                      "telemetry.sdk.version": __version__})}
    return {"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": _SCOPE, "spans": spans}]}]}


class OtlpExporter:
    """Batches traces to an OTLP/HTTP endpoint from a daemon thread; never raises into the caller.

    Example:

        >>> exp = OtlpExporter("http://127.0.0.1:4318/v1/traces")   # doctest: +SKIP
        >>> exp.export(trace); exp.flush()                           # doctest: +SKIP
        >>> exp.sent, exp.dropped, exp.errors                        # doctest: +SKIP
        (1, 0, 0)
    """

    def __init__(self, endpoint: str, *, headers: Mapping[str, str] | None = None, capture_content: bool = False,
                 service: str = "crystallise", max_queue: int = 2048, max_batch: int = 64, interval_s: float = 2.0,
                 timeout_s: float = 10.0) -> None:
        self.endpoint, self.headers = endpoint, {"Content-Type": "application/json", **(headers or {})}
        self.capture_content, self.service = capture_content, service
        self.max_batch, self.interval_s, self.timeout_s = max_batch, interval_s, timeout_s
        self.sent = self.dropped = self.errors = 0
        self._queue: queue.Queue[Trace] = queue.Queue(maxsize=max_queue)
        self._pending = 0  # queued or being posted
        self._cv = threading.Condition()
        self._last_log = 0.0
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="crystallise-otlp-export", daemon=True)
        self._thread.start()
        atexit.register(self.shutdown)

    def __call__(self, trace: Trace) -> None:
        self.export(trace)

    def export(self, trace: Trace) -> None:
        """Queue `trace` for export (dropped, and counted, when the queue is full)."""
        if trace.metadata.get("source") == "otlp" or self._stop:
            return
        with self._cv:
            try:
                self._queue.put_nowait(trace)
                self._pending += 1
                return
            except queue.Full:
                self.dropped += 1
            self._warn(f"the OTLP export queue is full: dropped a trace ({self.dropped} so far)")

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything queued has been posted (or failed); True when it all went out in time."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.05))
        return True

    def shutdown(self) -> None:
        """Flush, then stop the thread (at interpreter exit too)."""
        if not self._stop:
            self.flush(timeout_s=self.timeout_s)
            self._stop = True

    def _warn(self, message: str) -> None:
        if time.monotonic() - self._last_log > 60:
            self._last_log = time.monotonic()
            log.warning(message)

    def _take(self) -> list[Trace]:
        """What is queued (up to max_batch), waiting at most interval_s for the first trace."""
        batch: list[Trace] = []
        try:
            batch.append(self._queue.get(timeout=self.interval_s))
            while len(batch) < self.max_batch:
                batch.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return batch

    def _run(self) -> None:
        while not self._stop:
            batch = self._take()
            if not batch:
                continue
            try:
                self._post(batch)
            finally:
                with self._cv:
                    self._pending -= len(batch)
                    self._cv.notify_all()

    def _post(self, batch: list[Trace]) -> None:
        try:
            body = json.dumps(to_otlp(batch, service=self.service, capture_content=self.capture_content),
                              default=str).encode()
            request = urllib.request.Request(self.endpoint, data=body, headers=self.headers, method="POST")  # noqa: S310
            with urllib.request.urlopen(request, timeout=self.timeout_s) as r:  # noqa: S310 - the configured endpoint
                r.read()
            self.sent += len(batch)
        except Exception as e:  # noqa: BLE001 - telemetry fails open: count, log, go on
            self.errors += 1
            self._warn(f"OTLP export to {self.endpoint} failed ({type(e).__name__}: {e}); "
                       f"{len(batch)} trace(s) not exported, {self.errors} failure(s) so far")


def _headers(text: str | None) -> dict[str, str]:
    """`k=v,k2=v2` (the OTEL_EXPORTER_OTLP_HEADERS form) -> a dict."""
    out = {}
    for pair in (text or "").split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            out[key.strip()] = urllib.request.unquote(value.strip())
    return out


def exporter_from_config(config: Mapping[str, Any]) -> OtlpExporter | None:
    """The exporter the environment or the home's config asks for, else None (nothing exported)."""
    endpoint = env(ENV_OTLP_ENDPOINT) or env(ENV_OTEL_TRACES_ENDPOINT) or config.get("otlp_endpoint")
    if not endpoint and env(ENV_OTEL_ENDPOINT):
        endpoint = str(env(ENV_OTEL_ENDPOINT)).rstrip("/") + "/v1/traces"
    if not endpoint:
        return None
    headers = config.get("otlp_headers") if isinstance(config.get("otlp_headers"), dict) else {}
    headers = {**headers, **_headers(env(ENV_OTEL_HEADERS)), **_headers(env(ENV_OTLP_HEADERS))}
    capture = (env(ENV_OTLP_CAPTURE) or str(config.get("otlp_capture_content", ""))).lower() in ("1", "true", "on")
    return OtlpExporter(str(endpoint), headers=headers, capture_content=capture,
                        service=str(config.get("otlp_service_name") or "crystallise"))
