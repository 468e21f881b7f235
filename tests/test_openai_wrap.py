"""wrap_openai with the real `openai` package against the fake OpenAI-compatible server (crystallise.testing):
plain, streamed (sync and async), AsyncOpenAI, with_raw_response, retries, slow calls; label-only feedback."""

from __future__ import annotations

import asyncio

import openai
import pytest

import crystallise
from crystallise.evidence import outcome_of, verified
from crystallise.testing import Server, fake_openai
from crystallise.types import Feedback, Trace
from tests.helpers import new_home

MSG = [{"role": "user", "content": "ping"}]


@pytest.fixture(scope="module")
def upstream():
    with Server(fake_openai()) as up:
        yield up


def _client(up, cls=openai.OpenAI, **kw):
    return cls(base_url=up.url + "/v1", api_key="x", max_retries=kw.pop("max_retries", 0), **kw)


def _signals(trace: Trace) -> list[str]:
    return [f.kind for f in trace.feedback if f.source == "implicit"]


def test_plain_and_streamed_calls_record_the_output(tmp_path, upstream):
    home = new_home(tmp_path)
    client = crystallise.wrap_openai(_client(upstream), home=home)
    with crystallise.trace("chat", home=home) as t:
        r = client.chat.completions.create(model="m", messages=MSG)
        chunks = list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "pong"}],
                                                     stream=True, stream_options={"include_usage": True}))
    assert r.choices[0].message.content == "echo: ping"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: pong"
    plain, streamed = home.store.get_trace(t.id).spans
    assert plain.output == "echo: ping" and plain.attributes["prompt_tokens"] == 11
    assert streamed.output == "echo: pong", "the stream's text is assembled from its chunks"
    assert streamed.attributes["stream"] is True and streamed.attributes["finish_reason"] == "stop"
    assert streamed.attributes["completion_tokens"] == 3 and streamed.attributes["time_to_first_chunk_ms"] >= 0
    # a stream outside any trace: a trace of its own, written once the stream ends
    with client.chat.completions.create(model="m", messages=MSG, stream=True) as s:
        text = "".join(c.choices[0].delta.content or "" for c in s if c.choices)
    own = [x for x in home.store.list_traces(limit=10) if x.name == "openai.chat"]
    assert text == "echo: ping" and len(own) == 1 and own[0].output == "echo: ping"


def test_async_client_plain_and_streamed(tmp_path, upstream, monkeypatch):
    monkeypatch.setenv("CRYSTALLISE_TRACE_WRITES", "background")
    home = new_home(tmp_path)
    client = crystallise.wrap_openai(_client(upstream, openai.AsyncOpenAI), home=home)

    async def main() -> str:
        async with crystallise.trace("chat", home=home) as t:
            r = await client.chat.completions.create(model="m", messages=MSG)
            stream = await client.chat.completions.create(model="m", messages=MSG, stream=True)
            async for _ in stream:
                pass
            assert r.choices[0].message.content == "echo: ping"
        return t.id

    trace_id = asyncio.run(main())
    assert crystallise.flush(10)
    spans = home.store.get_trace(trace_id).spans
    assert [s.output for s in spans] == ["echo: ping", "echo: ping"]
    assert spans[0].attributes["latency_ms"] > 0.0 and spans[1].attributes["stream"] is True


def test_with_raw_response_is_recorded_and_returned_unchanged(tmp_path, upstream):
    home = new_home(tmp_path)
    client = crystallise.wrap_openai(_client(upstream), home=home)
    with crystallise.trace("chat", home=home) as t:
        raw = client.chat.completions.with_raw_response.create(model="m", messages=MSG)
        assert raw.headers.get("content-type", "").startswith("application/json")
        assert raw.parse().choices[0].message.content == "echo: ping"
        raw_stream = client.chat.completions.with_raw_response.create(model="m", messages=MSG, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in raw_stream.parse() if c.choices) == "echo: ping"
    spans = home.store.get_trace(t.id).spans
    assert [s.output for s in spans] == ["echo: ping", "echo: ping"]


def test_client_retries_app_retries_and_slow_calls_are_implicit_feedback(tmp_path, upstream):
    home = new_home(tmp_path)
    client = crystallise.wrap_openai(_client(upstream, max_retries=3), home=home)
    with crystallise.trace("chat", home=home) as t:
        r = client.chat.completions.create(model="flaky-2-a", messages=MSG)   # 503, 503, then an answer
    got = home.store.get_trace(t.id)
    assert r.choices[0].message.content == "echo: ping"
    assert got.spans[0].attributes["retries"] == 2 and _signals(got) == ["retry"]

    with crystallise.trace("chat", home=home) as t:   # the application sends the same request twice
        client.chat.completions.create(model="m", messages=MSG)
        client.chat.completions.create(model="m", messages=MSG)
    assert _signals(home.store.get_trace(t.id)) == ["retry"]

    slow = crystallise.wrap_openai(_client(upstream), home=home, slow_ms=0.0)
    with crystallise.trace("chat", home=home) as t:
        slow.chat.completions.create(model="m", messages=MSG)
    assert _signals(home.store.get_trace(t.id)) == ["latency"]

    with pytest.raises(openai.InternalServerError), crystallise.trace("chat", home=home) as t:
        client.chat.completions.create(model="fail-500", messages=MSG)
    failed = home.store.get_trace(t.id)
    assert "exception" in _signals(failed) and failed.spans[0].error


@pytest.mark.parametrize(("label", "outcome"), [("thumbs_down", -1), ("Thumbs-Up", 1), ("👎", -1), ("meh", 0)])
def test_label_only_feedback_counts_as_its_score(label, outcome):
    t = Trace(name="chat", output="a", feedback=[Feedback(trace_id="", label=label)])
    assert outcome_of(t) == outcome
    assert (verified(t) is not None) == (outcome == 1)  # a thumbs up accepts the output, as a score of 1 does


def test_label_only_feedback_through_the_sdk(tmp_path):
    home = new_home(tmp_path)
    with crystallise.trace("chat", home=home, input="q") as t:
        t.output = "a"
    t.feedback(label="thumbs_down")
    assert outcome_of(home.store.get_trace(t.id)) == -1
