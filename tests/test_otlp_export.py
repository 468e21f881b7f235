"""Exporting crystallise's own traces over OTLP/HTTP with the GenAI semantic conventions: to a tiny OTLP
receiver (attribute names checked), to crystallise's own OTLP ingest on a real server (tenancy: the key's org,
and no export loop), and failing open when the endpoint is down or slow."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the receivers need the `serve` extra")

from fastapi import FastAPI, Request  # noqa: E402

from crystallise.api import create_app, create_key  # noqa: E402
from crystallise.engine.home import Home  # noqa: E402
from crystallise.testing import Server  # noqa: E402
from crystallise.traces.otlp_export import OtlpExporter, exporter_from_config, to_otlp  # noqa: E402
from crystallise.types import Span, Trace  # noqa: E402


def receiver(delay_s: float = 0.0) -> FastAPI:
    app = FastAPI()
    app.state.bodies = []

    @app.post("/v1/traces")
    async def traces(request: Request) -> dict[str, Any]:
        if delay_s:
            time.sleep(delay_s)  # a slow collector (blocks this test server on purpose)
        app.state.bodies.append({"body": await request.json(), "headers": dict(request.headers)})
        return {}

    return app


def a_trace(agent: str = "support") -> Trace:
    t = Trace(name="answer", agent_id=agent, org_id="acme", user_id="u1", session_id="s1",
              input=[{"role": "user", "content": "What is the refund window?"}], output="30 days")
    t.spans = [Span(name="chat gpt-4o-mini", kind="llm", trace_id=t.id, input=t.input, output="30 days",
                    attributes={"model": "gpt-4o-mini", "response_model": "gpt-4o-mini-2024", "prompt_tokens": 12,
                                "completion_tokens": 3, "finish_reason": "stop", "latency_ms": 4.5}),
               Span(name="lookup", kind="tool", trace_id=t.id, input={"q": "refund"}, output={"days": 30})]
    return t


def attrs(span: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for a in span["attributes"]:
        (kind, value), = a["value"].items()
        out[a["key"]] = int(value) if kind == "intValue" else value
    return out


@pytest.fixture
def collector() -> Iterator[tuple[str, FastAPI]]:
    app = receiver()
    with Server(app) as srv:
        yield srv.url + "/v1/traces", app


def test_a_recorded_trace_is_exported_with_genai_attribute_names(tmp_path, monkeypatch, collector):
    url, app = collector
    monkeypatch.setenv("CRYSTALLISE_OTLP_ENDPOINT", url)
    monkeypatch.setenv("CRYSTALLISE_OTLP_HEADERS", "Authorization=Bearer%20secret,X-Tenant=t1")
    home = Home.init(tmp_path / "home")
    trace = a_trace()
    home.store.write_trace(trace)
    assert home.store.exporter.flush(10)
    [sent] = app.state.bodies
    assert sent["headers"]["authorization"] == "Bearer secret" and sent["headers"]["x-tenant"] == "t1"
    resource = sent["body"]["resourceSpans"][0]
    spans = {s["name"]: s for s in resource["scopeSpans"][0]["spans"]}
    assert set(spans) == {"invoke_agent support", "chat gpt-4o-mini", "execute_tool lookup"}
    root, llm, tool = spans["invoke_agent support"], spans["chat gpt-4o-mini"], spans["execute_tool lookup"]
    assert attrs(root)["gen_ai.operation.name"] == "invoke_agent" and attrs(root)["gen_ai.agent.name"] == "support"
    assert attrs(root)["gen_ai.conversation.id"] == "s1" and attrs(root)["crystallise.trace_id"] == trace.id
    a = attrs(llm)
    assert (a["gen_ai.operation.name"], a["gen_ai.request.model"], a["gen_ai.response.model"]) == (
        "chat", "gpt-4o-mini", "gpt-4o-mini-2024")
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (12, 3)
    assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "openai"
    assert a["gen_ai.response.finish_reasons"] == {"values": [{"stringValue": "stop"}]}
    assert "gen_ai.input.messages" not in a  # content stays home unless asked for
    assert attrs(tool)["gen_ai.operation.name"] == "execute_tool" and attrs(tool)["gen_ai.tool.name"] == "lookup"
    assert llm["parentSpanId"] == tool["parentSpanId"] == root["spanId"] and len(root["traceId"]) == 32
    home.close()


def test_content_capture_uses_the_parts_message_format():
    doc = to_otlp([a_trace()], capture_content=True)
    llm = next(s for s in doc["resourceSpans"][0]["scopeSpans"][0]["spans"] if s["name"].startswith("chat"))
    a = attrs(llm)
    assert json.loads(a["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "What is the refund window?"}]}]
    assert json.loads(a["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "30 days"}], "finish_reason": "stop"}]


def test_exported_to_crystallises_own_ingest_lands_in_the_keys_org_and_never_loops(tmp_path, monkeypatch):
    receiving = Home.init(tmp_path / "receiving")
    key, _ = create_key(receiving.path, "acme")
    with Server(create_app(receiving, upstream="scripted")) as api:
        endpoint = api.url + "/otlp/v1/traces"
        monkeypatch.setenv("CRYSTALLISE_OTLP_ENDPOINT", endpoint)
        monkeypatch.setenv("CRYSTALLISE_OTLP_HEADERS", f"Authorization=Bearer {key}")
        sending = Home.init(tmp_path / "sending")
        original = a_trace()
        original.org_id = "globex"  # the sender's own org label: the receiving key decides where it lands
        sending.store.write_trace(original)
        assert sending.store.exporter.flush(10) and sending.store.exporter.sent == 1
        [got] = receiving.store.list_traces(limit=10)
        got = receiving.store.get_trace(got.id)
        assert got.org_id == "acme" and got.metadata["source"] == "otlp" and got.agent_id == "support"
        llm = next(s for s in got.spans if s.kind == "llm")
        assert (llm.attributes["model"], llm.attributes["prompt_tokens"], llm.attributes["completion_tokens"]) == (
            "gpt-4o-mini", 12, 3)
        assert next(s for s in got.spans if s.kind == "tool").attributes["tool"] == "lookup"
        # the receiving home exporting to its own ingest: ingested traces are not exported again
        loop = exporter_from_config({})
        receiving.store.exporter = loop
        receiving.store.write_trace(got.__class__(**{**got.__dict__, "id": "tr_again", "spans": [], "feedback": [],
                                                     "seq": None}))
        assert loop.flush(5) and loop.sent == 0 and receiving.store.count_traces() == 2
        loop.shutdown()
        sending.close()
    receiving.close()


def test_a_dead_endpoint_fails_open_and_is_counted(tmp_path, caplog):
    with Server(receiver()) as gone:
        dead = gone.url + "/v1/traces"
    home = Home.init(tmp_path / "home")
    home.store.exporter = OtlpExporter(dead, timeout_s=2)
    stored = home.store.write_trace(a_trace())  # the write itself is untouched
    assert home.store.get_trace(stored.id).id == stored.id
    assert home.store.exporter.flush(10)
    assert home.store.exporter.errors == 1 and home.store.exporter.sent == 0
    assert any("OTLP export" in r.message and "failed" in r.message for r in caplog.records)
    home.close()


def test_a_slow_collector_never_blocks_the_writer_a_full_queue_drops(tmp_path):
    app = receiver(delay_s=0.5)
    with Server(app) as slow:
        exporter = OtlpExporter(slow.url + "/v1/traces", max_queue=2, max_batch=1, interval_s=0.05)
        t0 = time.perf_counter()
        for _ in range(8):
            exporter.export(a_trace())
        assert time.perf_counter() - t0 < 0.2  # enqueueing only
        assert exporter.dropped >= 4
        assert exporter.flush(15)
        assert exporter.sent + exporter.dropped == 8 and exporter.errors == 0
        exporter.shutdown()
