"""OTLP/HTTP ingest: spans from the real opentelemetry-sdk and its real OTLP HTTP exporter, sent to a
real uvicorn server on 127.0.0.1, read back through the store; plus the OTLP JSON encoding, the
OpenInference / OpenLLMetry attribute variants, and malformed exports (a clear 4xx, nothing written)."""

from __future__ import annotations

import re

import gzip
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi", reason="OTLP ingest needs the `serve` extra")
pytest.importorskip("opentelemetry.sdk", reason="the OTLP tests drive the real opentelemetry-sdk")

import httpx  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult  # noqa: E402
from opentelemetry.trace import Status, StatusCode  # noqa: E402

from crystallise.server import create_app  # noqa: E402
from crystallise.api import create_key  # noqa: E402
from crystallise.errors import NotFoundError  # noqa: E402
from crystallise.engine.home import Home  # noqa: E402
from crystallise.types import Trace  # noqa: E402
from tests.servers import Server  # noqa: E402


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[dict[str, Any]]:
    home = Home.init(tmp_path_factory.mktemp("otlp") / "home")
    keys = {org: create_key(home.path, org)[0] for org in ("acme", "*")}
    app = create_app(home, max_otlp_body_bytes=256 * 1024)
    otlp = next(r.app for r in app.routes if getattr(r, "path", "") == "/otlp")  # type: ignore[attr-defined]
    with Server(app) as server:
        yield {"home": home, "keys": keys, "url": server.url + "/otlp/v1/traces", "ingestor": otlp.state.ingestor}
    home.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def tracer_for(env: dict[str, Any], key: str | None, *, batch: bool = False, **resource: Any) -> tuple[Any, Any]:
    exporter = OTLPSpanExporter(endpoint=env["url"], headers=bearer(key) if key else None, timeout=5)
    provider = TracerProvider(resource=Resource.create({"service.name": "unknown_service", **resource}))
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    return provider, provider.get_tracer("tests.otlp")


def stored(env: dict[str, Any], otel_trace_id: int) -> Trace:
    return by_hex(env, f"{otel_trace_id:032x}")


def by_hex(env: dict[str, Any], th: str) -> Trace:
    """The trace of OTLP trace id `th`, stored as `otel_<hex>@<org>` (ids are per org) or bare."""
    store = env["home"].store
    for candidate in (f"otel_{th}@acme", f"otel_{th}"):
        try:
            return store.get_trace(candidate)  # type: ignore[no-any-return]
        except NotFoundError:
            continue
    matches = [t for t in store.list_traces(after_seq=0, limit=100_000) if t.id.split("@")[0] == f"otel_{th}"]
    if not matches:
        raise NotFoundError(f"no trace otel_{th}")
    return store.get_trace(matches[0].id)  # type: ignore[no-any-return]


def by_name(trace: Trace) -> dict[str, Any]:
    return {s.name: s for s in trace.spans}


# -- the real SDK and exporter -------------------------------------------------------------------------


def test_genai_spans_from_the_real_sdk_become_one_trace(env):
    provider, tracer = tracer_for(env, env["keys"]["acme"])  # SimpleSpanProcessor: one export per span
    question = [{"role": "user", "parts": [{"type": "text", "content": "What is 6 x 7?"}]}]
    with tracer.start_as_current_span("invoke_agent support", attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support", "user.id": "u1",
        "session.id": "s1", "gen_ai.input.messages": json.dumps(question),
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "42"}]}]),
    }) as root:
        with tracer.start_as_current_span("chat gpt-4o", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.provider.name": "openai",
            "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 3,
            "gen_ai.input.messages": json.dumps(question),
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text",
                                                                                  "content": "use the tool"}]}]),
        }):
            pass
        with tracer.start_as_current_span("execute_tool multiply", attributes={
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "multiply",
            "gen_ai.tool.call.arguments": '{"a": 6, "b": 7}', "gen_ai.tool.call.result": "42",
        }):
            pass
        root.add_event("gen_ai.evaluation.result", {
            "gen_ai.evaluation.name": "correctness", "gen_ai.evaluation.score.value": 1.0,
            "gen_ai.evaluation.score.label": "pass", "gen_ai.evaluation.explanation": "matches the key"})
    provider.shutdown()

    t = stored(env, root.get_span_context().trace_id)
    assert (t.name, t.agent_id, t.org_id, t.user_id, t.session_id) == ("invoke_agent support", "support", "acme",
                                                                       "u1", "s1")
    assert t.output == "42" and t.input[0]["role"] == "user" and t.status == "ok"
    spans = by_name(t)
    assert {s.kind for s in t.spans} == {"task", "llm", "tool"}
    chat, tool, agent = spans["chat gpt-4o"], spans["execute_tool multiply"], spans["invoke_agent support"]
    assert chat.parent_id == agent.id and tool.parent_id == agent.id and agent.parent_id is None
    assert (chat.attributes["model"], chat.attributes["prompt_tokens"], chat.attributes["completion_tokens"]) == (
        "gpt-4o", 12, 3)
    assert chat.output == "use the tool" and chat.attributes["provider"] == "openai"
    assert tool.input == {"a": 6, "b": 7} and tool.output == "42" and tool.attributes["tool"] == "multiply"
    assert [(f.kind, f.score, f.label) for f in t.feedback] == [("evaluation", 1.0, "pass")]
    assert not list((env["home"].path / "otlp-pending").glob("*.jsonl"))  # children waited, then joined the root


def test_batched_openllmetry_and_openinference_spans_map_to_crystallise_fields(env):
    provider, tracer = tracer_for(env, env["keys"]["*"], batch=True, **{"crystallise.agent": "pricing",
                                                                         "crystallise.org": "globex"})
    with tracer.start_as_current_span("workflow", attributes={"traceloop.span.kind": "workflow",
                                                              "enduser.id": "u9"}) as root:
        with tracer.start_as_current_span("openai.chat", attributes={
            "llm.request.type": "chat", "gen_ai.system": "OpenAI", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": "Be brief.",
            "gen_ai.prompt.1.role": "user", "gen_ai.prompt.1.content": "Price of A?",
            "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "$5",
            "gen_ai.usage.prompt_tokens": 9, "gen_ai.usage.completion_tokens": 2,
        }):
            pass
        with tracer.start_as_current_span("ChatModel", attributes={
            "openinference.span.kind": "LLM", "llm.model_name": "llama-3", "llm.token_count.prompt": 20,
            "llm.token_count.completion": 4, "input.value": '{"q": "price of B"}', "input.mime_type":
            "application/json", "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": "$7",
        }):
            pass
        with tracer.start_as_current_span("lookup", attributes={"openinference.span.kind": "TOOL",
                                                                "tool.name": "db"}) as failing:
            failing.set_status(Status(StatusCode.ERROR, "db timeout"))
    provider.shutdown()

    t = stored(env, root.get_span_context().trace_id)
    assert (t.agent_id, t.org_id, t.user_id) == ("pricing", "globex", "u9")
    spans = by_name(t)
    llm = spans["openai.chat"]
    assert llm.kind == "llm" and llm.input == [{"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": "Price of A?"}]
    assert llm.output == "$5" and (llm.attributes["model"], llm.attributes["prompt_tokens"]) == ("gpt-4o-mini", 9)
    oi = spans["ChatModel"]
    assert oi.kind == "llm" and oi.input == {"q": "price of B"} and oi.output == "$7"
    assert (oi.attributes["model"], oi.attributes["prompt_tokens"], oi.attributes["completion_tokens"]) == (
        "llama-3", 20, 4)
    assert spans["lookup"].kind == "tool" and spans["lookup"].error == "db timeout"
    assert spans["workflow"].kind == "task" and t.status == "ok"
    assert [(f.kind, f.source) for f in t.feedback] == [("tool_error", "implicit")]


def test_an_exporter_with_a_wrong_key_is_refused_and_nothing_is_written(env):
    before = env["home"].store.count_traces()
    exporter = OTLPSpanExporter(endpoint=env["url"], headers=bearer("cr_wrong"), timeout=5)
    provider = TracerProvider()
    tracer = provider.get_tracer("tests.otlp")
    with tracer.start_as_current_span("root") as span:
        pass
    assert exporter.export([span]) == SpanExportResult.FAILURE  # type: ignore[list-item]
    assert env["home"].store.count_traces() == before


# -- OTLP JSON ----------------------------------------------------------------------------------------


def otlp_json(trace_hex: str, spans: list[dict[str, Any]], resource: dict[str, str] | None = None) -> dict:
    attrs = [{"key": k, "value": {"stringValue": v}} for k, v in (resource or {}).items()]
    return {"resourceSpans": [{"resource": {"attributes": attrs}, "scopeSpans": [
        {"scope": {"name": "hand"}, "spans": [{"traceId": trace_hex, **s} for s in spans]}]}]}


def span_json(span_hex: str, name: str, parent: str = "", **attrs: Any) -> dict[str, Any]:
    def value(v: Any) -> dict[str, Any]:
        if isinstance(v, bool):
            return {"boolValue": v}
        if isinstance(v, int):
            return {"intValue": str(v)}
        return {"doubleValue": v} if isinstance(v, float) else {"stringValue": v}

    now_ns = time.time_ns()
    return {"spanId": span_hex, "parentSpanId": parent, "name": name, "kind": 3,
            "startTimeUnixNano": str(now_ns), "endTimeUnixNano": now_ns + 5_000_000,
            "attributes": [{"key": k, "value": value(v)} for k, v in attrs.items()]}


def post(env: dict[str, Any], body: Any, key: str = "acme", ctype: str = "application/json",
         **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(env["url"], content=content, headers={"content-type": ctype, **bearer(env["keys"][key]),
                                                            **headers}, timeout=10)


def test_json_encoding_is_accepted_and_answered_in_json(env):
    th = "5b8efff798038103d269b633813fc60c"
    body = otlp_json(th, [span_json("eee19b7ec3c1b174", "chat", **{
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "m", "gen_ai.usage.input_tokens": 7,
        "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "hi", "crystallise.user": "u2"}),
        span_json("eee19b7ec3c1b175", "search", "eee19b7ec3c1b174", **{"openinference.span.kind": "RETRIEVER"})],
        resource={"service.name": "helpdesk"})
    body["resourceSpans"][0]["unknownField"] = {"ignored": True}  # receivers must ignore unknown fields
    r = post(env, body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json") and r.json() == {}
    t = by_hex(env, th)
    assert (t.agent_id, t.user_id, t.org_id, t.name) == ("helpdesk", "u2", "acme", "chat")
    assert by_name(t)["chat"].attributes["prompt_tokens"] == 7 and by_name(t)["search"].kind == "retrieval"
    assert post(env, body).json() == {}  # a retried export is accepted again, nothing duplicated
    assert len(by_hex(env, th).spans) == 2
    late = post(env, otlp_json(th, [span_json("eee19b7ec3c1b176", "late", "eee19b7ec3c1b174")])).json()
    assert late["partialSuccess"]["rejectedSpans"] == "1" and "already recorded" in late["partialSuccess"][
        "errorMessage"]


def test_gzip_bodies_are_inflated(env):
    th = "6b8efff798038103d269b633813fc60c"
    r = post(env, gzip.compress(json.dumps(otlp_json(th, [span_json("aaa19b7ec3c1b174", "root")])).encode()),
             **{"content-encoding": "gzip"})
    assert r.status_code == 200 and by_hex(env, th).name == "root"


def test_spans_without_their_root_wait_and_are_flushed_later(env):
    th = "7b8efff798038103d269b633813fc60c"
    r = post(env, otlp_json(th, [span_json("bbb19b7ec3c1b174", "child", "ccc19b7ec3c1b174")]))
    assert r.status_code == 200 and r.json() == {}
    with pytest.raises(NotFoundError):
        by_hex(env, th)
    assert env["ingestor"].flush_stale(now=time.time() + 3600) == 1
    t = by_hex(env, th)
    assert t.name == "child" and t.metadata["complete"] is False and t.org_id == "acme"


def test_bad_spans_are_rejected_through_partial_success(env):
    th = "8b8efff798038103d269b633813fc60c"
    body = otlp_json(th, [span_json("zz", "bad ids")])
    r = post(env, body, ctype="application/x-protobuf; charset=binary")  # wrong encoding for the body
    assert r.status_code == 400 and r.json()["status"] == 400
    res = post(env, body).json()["partialSuccess"]
    assert res["rejectedSpans"] == "1" and "span_id" in res["errorMessage"]
    other_org = otlp_json(th, [span_json("ddd19b7ec3c1b174", "root", **{"crystallise.org": "globex"})])
    res = post(env, other_org).json()["partialSuccess"]
    assert res["rejectedSpans"] == "1" and "globex" in res["errorMessage"]
    with pytest.raises(NotFoundError):
        by_hex(env, th)


@pytest.mark.parametrize("content,ctype,status", [
    (b"\x0a\xff\xff\xff\xff\x0f", "application/x-protobuf", 400),   # truncated protobuf
    (b"{not json", "application/json", 400),
    (b"[1, 2]", "application/json", 400),
    (b'{"resourceSpans": "nope"}', "application/json", 400),
    (b"hello", "text/plain", 415),
    (b"x" * (300 * 1024), "application/x-protobuf", 413),
])
def test_malformed_exports_are_4xx_problems_and_write_nothing(env, content, ctype, status):
    before = env["home"].store.count_traces()
    r = post(env, content, ctype=ctype)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json") and r.json()["detail"]
    assert env["home"].store.count_traces() == before


def test_a_streamed_body_over_the_limit_is_413(env, caplog):
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"\x00" * 8192  # 320 KiB, no Content-Length

    r = httpx.post(env["url"], content=chunks(), headers={"content-type": "application/x-protobuf",
                                                          **bearer(env["keys"]["acme"])}, timeout=10)
    assert r.status_code == 413 and r.json()["status"] == 413
    assert "unhandled" not in caplog.text


def test_protobuf_response_is_an_export_trace_service_response(env):
    th = "9b8efff798038103d269b633813fc60c"
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    body = otlp_json(th, [span_json("eee19b7ec3c1b177", "root")])
    span = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    for key in ("traceId", "spanId"):
        span[key] = __import__("base64").b64encode(bytes.fromhex(span[key])).decode()
    del span["parentSpanId"]
    message = json_format.ParseDict(body, ExportTraceServiceRequest())
    r = post(env, message.SerializeToString(), ctype="application/x-protobuf")
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf"
    assert not ExportTraceServiceResponse.FromString(r.content).HasField("partial_success")
    assert by_hex(env, th).name == "root"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=300), ctype=st.sampled_from(["application/x-protobuf", "application/json"]))
def test_arbitrary_bytes_are_never_a_500(env, content, ctype):
    r = post(env, content, ctype=ctype)
    assert r.status_code in (200, 400, 422)
    if r.status_code == 422:  # only the documented refusal (docs/api.md): NaN/Infinity or a lone surrogate
        detail = r.json()["detail"]
        assert re.search(r"NaN|Infinity|lone surrogate", detail), detail


def test_a_json_body_with_a_lone_surrogate_is_the_documented_422(env):
    """Hypothesis found `{"":"","":"\\uda00"}`: valid JSON syntax, not Unicode — refused as docs/api.md says."""
    r = post(env, b'{"":"","":"\\uda00"}', ctype="application/json")
    assert r.status_code == 422 and "lone surrogate" in r.json()["detail"]
