"""Observe: traces, spans, feedback, implicit signals, @task and the OpenAI wrapper."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pydantic
import pytest

import crystallise
from crystallise.backends.scripted import ScriptedBackend
from crystallise.errors import ConfigError, ModelOutputError, ValidationError
from crystallise.engine.home import Home
from crystallise.types import Item
from tests.helpers import new_home


def test_trace_records_spans_output_and_feedback(tmp_path, store_url):
    home = new_home(tmp_path, store_url)
    with crystallise.trace("answer", agent="support", org="acme", user="u1", input="q?", home=home) as t:
        with t.span("lookup", "tool", input={"k": 1}) as s:
            s.output = "v"
        t.output = "a"
        t.feedback(score=1.0, label="good")
    t.feedback(score=0.0, correction="b")  # after acknowledgement: stored on its own
    got = home.store.get_trace(t.id)
    assert (got.agent_id, got.org_id, got.user_id, got.output, got.status) == ("support", "acme", "u1", "a", "ok")
    assert [s.name for s in got.spans] == ["lookup"] and got.spans[0].attributes["latency_ms"] >= 0
    assert [f.score for f in got.feedback] == [1.0, 0.0] and got.outcome == 0.0
    assert got.feedback[-1].correction == "b"


def test_exception_is_recorded_as_error_and_implicit_signal(tmp_path, store_url):
    home = new_home(tmp_path, store_url)
    with pytest.raises(RuntimeError):
        with crystallise.trace("boom", home=home) as t:
            raise RuntimeError("tool failed")
    got = home.store.get_trace(t.id)
    assert got.status == "error" and "tool failed" in got.error
    assert any(f.source == "implicit" and f.kind == "exception" for f in got.feedback)


@pytest.mark.parametrize("kwargs", [{"score": 2.0}, {}])
def test_bad_feedback_is_a_clear_error(tmp_path, kwargs):
    home = new_home(tmp_path)
    with crystallise.trace("x", home=home) as t:
        with pytest.raises(ValidationError):
            t.feedback(**kwargs)


@pytest.mark.parametrize("scope", [{"agent": ""}, {"user": "x" * 300}, {"org": 5}])
def test_invalid_scope_is_rejected(tmp_path, scope):
    home = new_home(tmp_path)
    with pytest.raises(ValidationError):
        with crystallise.trace("x", home=home, **scope):
            pass


def test_missing_home_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="crystallise init"):
        Home.open(tmp_path / "nowhere")


class DateOut(pydantic.BaseModel):
    date: str


def test_task_decorator_validates_output_and_records_a_span(tmp_path, monkeypatch):
    home = new_home(tmp_path)
    backend = ScriptedBackend(['{"date": "2024-03-03"}'])
    monkeypatch.setattr(Home, "backend", lambda self, spec=None: backend)

    @crystallise.task(home=home)
    def extract_date(text: str) -> DateOut:
        """Find the date the text talks about, as ISO 8601."""

    with crystallise.trace("run", home=home) as t:
        out = extract_date("Meeting moved to March 3rd 2024")
    assert out == DateOut(date="2024-03-03")
    span = home.store.get_trace(t.id).spans[0]
    assert span.kind == "task" and span.attributes["served_by"] == "llm" and span.output == {"date": "2024-03-03"}
    system = backend.requests[0].messages[0].content
    assert "ISO 8601" in system  # the docstring is the instruction
    assert home.repo.read("tasks/extract-date/spec.json") is not None  # defined as a version
    with pytest.raises(ValidationError):
        extract_date(text=None)


def test_task_schema_violation_after_repair_is_a_clear_error(tmp_path, monkeypatch):
    home = new_home(tmp_path)
    backend = ScriptedBackend(['{"nope": 1}', '{"still": "wrong"}'])
    monkeypatch.setattr(Home, "backend", lambda self, spec=None: backend)

    @crystallise.task(home=home)
    def extract_date(text: str) -> DateOut:
        """Find the date."""

    with pytest.raises(ModelOutputError):
        extract_date("x")
    assert len(backend.requests) == 2  # one repair attempt, no more
    (trace,) = home.store.list_traces(with_children=True)
    assert trace.status == "error"  # and nothing acknowledged was lost: the failed call is recorded


def test_context_pack_scopes_budget_and_shown_items(tmp_path, store_url):
    home = new_home(tmp_path, store_url)
    from crystallise.types import Delta

    items = [
        Item(text="Always answer with two decimals", level="agent", agent_id="fin"),
        Item(text="Org rule: cite the formula", level="org", agent_id="fin", org_id="acme"),
        Item(text="User u1 prefers euros", kind="memory", level="user", agent_id="fin", org_id="acme", user_id="u1"),
        Item(text="User u2 secret preference", kind="memory", level="user", agent_id="fin", org_id="acme",
             user_id="u2"),
    ]
    home.store.apply_item_deltas([Delta(op="add", target="item", item_id=i.id, after=i.to_dict()) for i in items])
    with crystallise.trace("q", agent="fin", org="acme", user="u1", home=home) as t:
        pack = crystallise.context(agent="fin", org="acme", user="u1", query="decimals", home=home)
    assert [i.text for i in pack.items] == ["Always answer with two decimals"]  # the relevance floor
    span = home.store.get_trace(t.id).spans[0]
    assert span.kind == "retrieval" and set(span.attributes["shown_items"]) == set(pack.item_ids)
    assert home.store.get_item(items[0].id).shown == 1
    texts = [i.text for i in crystallise.context(agent="fin", org="acme", user="u1", home=home).items]
    assert texts == ["User u1 prefers euros", "Org rule: cite the formula", "Always answer with two decimals"]
    small = crystallise.context(agent="fin", org="acme", user="u1", budget_tokens=12, home=home)
    assert small.tokens <= 12 and len(small.items) < 3


class _ChatHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        reply = {
            "id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "pong"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_wrapped_openai_client_records_llm_spans(tmp_path):
    openai = pytest.importorskip("openai")
    server = HTTPServer(("127.0.0.1", 0), _ChatHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        home = new_home(tmp_path)
        client = crystallise.wrap_openai(
            openai.OpenAI(base_url=f"http://127.0.0.1:{server.server_port}/v1", api_key="x", max_retries=0),
            home=home)
        with crystallise.trace("chat", home=home) as t:
            r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "ping"}])
        assert r.choices[0].message.content == "pong"
        span = home.store.get_trace(t.id).spans[0]
        assert span.kind == "llm" and span.output == "pong" and span.attributes["prompt_tokens"] == 3
        # outside a trace: a trace of its own
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "again"}])
        assert home.store.count_traces() == 2
    finally:
        server.shutdown()
