"""The OpenAI-compatible proxy, driven by the official `openai` client against a real uvicorn server,
forwarding to a second real HTTP server (a small fake OpenAI upstream, tests/servers.py): context
injected, the answer unchanged, the trace recorded, feedback on it; and bad input -> a clear 4xx."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the proxy needs the `serve` extra")

import httpx  # noqa: E402
import openai  # noqa: E402

from crystallise.server import create_app  # noqa: E402
from crystallise.api import create_key  # noqa: E402
from crystallise.api.proxy import CONTEXT_PREAMBLE, TRACE_HEADER  # noqa: E402
from crystallise.errors import NotFoundError  # noqa: E402
from crystallise.engine.home import Home  # noqa: E402
from crystallise.types import Delta, Item, Trace  # noqa: E402
from tests.servers import Server, fake_openai  # noqa: E402

PROBLEM = "application/problem+json"
MESSAGES = [{"role": "user", "content": "What is the refund window?"}]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[dict[str, Any]]:
    home = Home.init(tmp_path_factory.mktemp("proxy") / "home")
    keys = {org: create_key(home.path, org)[0] for org in ("acme", "globex", "*")}
    items = [Item(text="Refunds are allowed within 30 days", level="agent", agent_id="support"),
             Item(text="Acme customers get 60 days to ask for a refund", level="org", agent_id="support",
                  org_id="acme"),  # relevant to the question: packs keep unrelated items out (serving.py)
             Item(text="Globex secret rule: refund window of 90 days", level="org", agent_id="support",
                  org_id="globex")]
    home.store.apply_item_deltas([Delta(op="add", target="item", item_id=i.id, after=i.to_dict()) for i in items])
    upstream_app = fake_openai(chunk_delay_s=0.05)
    with Server(upstream_app) as up:
        app = create_app(home, upstream=up.url + "/v1", max_proxy_body_bytes=64 * 1024)
        with Server(app) as api:
            yield {"home": home, "keys": keys, "api": api.url, "up": up.url, "seen": upstream_app.state.requests,
                   "items": {i.text: i.id for i in items}}
    home.close()


def client(env: dict[str, Any], org: str = "acme", **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=env["api"] + "/v1", api_key=env["keys"][org], max_retries=0, timeout=20,
                         default_headers={"X-Crystallise-Agent": "support", "X-Crystallise-User": "u1", **headers})


def stored(env: dict[str, Any], trace_id: str) -> Trace:
    return env["home"].store.get_trace(trace_id)  # type: ignore[no-any-return]


def spans(trace: Trace) -> dict[str, Any]:
    return {s.kind: s for s in trace.spans}


# -- the happy paths ---------------------------------------------------------------------------------


def test_a_call_gets_the_context_and_is_recorded_as_a_trace(env):
    raw = client(env).chat.completions.with_raw_response.create(model="gpt-test", messages=MESSAGES)
    answer = raw.parse()
    assert answer.choices[0].message.content == "echo: What is the refund window?"
    assert (answer.id, answer.model, answer.usage.prompt_tokens) == ("chatcmpl-fake1", "gpt-test-0001", 11)

    sent = env["seen"][-1]
    system = sent["body"]["messages"][0]
    assert system["role"] == "system" and system["content"].startswith(CONTEXT_PREAMBLE)
    assert "Refunds are allowed within 30 days" in system["content"] and "Acme customers get 60" in system["content"]
    assert "Globex" not in system["content"]  # another org's rule never reaches acme's calls
    assert sent["body"]["messages"][1:] == MESSAGES and sent["body"]["model"] == "gpt-test"
    assert env["keys"]["acme"] not in json.dumps(sent["headers"])  # the crystallise key stays here

    trace = stored(env, raw.headers[TRACE_HEADER])
    assert (trace.agent_id, trace.org_id, trace.user_id, trace.status) == ("support", "acme", "u1", "ok")
    assert trace.input == MESSAGES and trace.output == "echo: What is the refund window?"
    by_kind = spans(trace)
    shown = by_kind["retrieval"].attributes["shown_items"]
    items = env["items"]
    assert set(shown) == {items["Refunds are allowed within 30 days"],
                          items["Acme customers get 60 days to ask for a refund"]}
    llm = by_kind["llm"]
    assert llm.attributes["prompt_tokens"] == 11 and llm.attributes["completion_tokens"] == 3
    assert llm.attributes["latency_ms"] > 0 and llm.attributes["response_model"] == "gpt-test-0001"
    assert llm.input[0]["role"] == "system" and llm.attributes["shown_items"] == shown
    assert all(env["home"].store.get_item(i).shown >= 1 for i in shown)


def test_the_answer_is_the_upstreams_unchanged(env):
    body = {"model": "gpt-test", "messages": MESSAGES, "temperature": 0, "logit_bias": {"42": 1}}
    headers = {"Authorization": f"Bearer {env['keys']['acme']}", "X-Crystallise-Context": "off"}
    via = httpx.post(env["api"] + "/v1/chat/completions", json=body, headers=headers, timeout=20)
    direct = httpx.post(env["up"] + "/v1/chat/completions", json=body, timeout=20)
    assert via.status_code == direct.status_code == 200
    assert via.json() == direct.json()
    assert env["seen"][-2]["body"] == body  # unknown fields forwarded as sent; context off: nothing injected
    assert "retrieval" not in spans(stored(env, via.headers[TRACE_HEADER]))

    body["stream"] = True
    with httpx.stream("POST", env["api"] + "/v1/chat/completions", json=body, headers=headers, timeout=20) as r:
        via_bytes = r.read()
        trace_id = r.headers[TRACE_HEADER]
        assert r.headers["content-type"].startswith("text/event-stream")
    direct_bytes = httpx.post(env["up"] + "/v1/chat/completions", json=body, timeout=20).content
    assert via_bytes == direct_bytes and via_bytes.endswith(b"data: [DONE]\n\n")
    assert stored(env, trace_id).output == "echo: What is the refund window?"


def test_streaming_through_the_openai_client_records_before_done(env):
    stream = client(env).chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True})
    trace_id = stream.response.headers[TRACE_HEADER]
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: What is the refund window?" and chunks[-1].usage.total_tokens == 14
    trace = stored(env, trace_id)  # durable as soon as the client saw the end of the stream
    llm = spans(trace)["llm"]
    assert trace.output == text and llm.attributes["stream"] is True and llm.attributes["finish_reason"] == "stop"
    assert llm.attributes["ttft_ms"] > 0 and llm.attributes["total_tokens"] == 14
    assert "usage_estimated" not in llm.attributes


def test_a_stream_without_usage_gets_an_estimate(env):
    stream = client(env).chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
    trace_id = stream.response.headers[TRACE_HEADER]
    list(stream)
    llm = spans(stored(env, trace_id))["llm"]
    assert llm.attributes["usage_estimated"] is True and llm.attributes["completion_tokens"] > 0


def test_feedback_on_a_proxied_call(env):
    raw = client(env).chat.completions.with_raw_response.create(model="gpt-test", messages=MESSAGES)
    trace_id = raw.headers[TRACE_HEADER]
    assert raw.headers["link"] == f'</v1/traces/{trace_id}/feedback>; rel="feedback"'
    r = httpx.post(f"{env['api']}/v1/traces/{trace_id}/feedback", json={"score": 0, "correction": "60 days"},
                   headers={"Authorization": f"Bearer {env['keys']['acme']}"})
    assert r.status_code == 201, r.text
    assert stored(env, trace_id).outcome == 0.0
    other = httpx.post(f"{env['api']}/v1/traces/{trace_id}/feedback", json={"score": 1},
                       headers={"Authorization": f"Bearer {env['keys']['globex']}"})
    assert other.status_code == 404  # another org cannot rate (or see) acme's calls


def test_an_existing_system_message_is_extended_and_scope_comes_from_headers(env):
    messages = [{"role": "system", "content": "You are terse."}, *MESSAGES]
    raw = client(env, "*", **{"X-Crystallise-Org": "globex", "X-Crystallise-Session": "s9",
                              "X-Crystallise-Trace-Name": "support.chat"}) \
        .chat.completions.with_raw_response.create(model="gpt-test", messages=messages, user="end-user-7")
    sent = env["seen"][-1]["body"]["messages"]
    assert len(sent) == 2 and sent[0]["content"].startswith("You are terse.\n\n" + CONTEXT_PREAMBLE)
    assert "Globex secret rule" in sent[0]["content"] and "Acme" not in sent[0]["content"]
    trace = stored(env, raw.headers[TRACE_HEADER])
    # the header's user wins over the body's `user`
    assert (trace.org_id, trace.user_id, trace.session_id, trace.name) == ("globex", "u1", "s9", "support.chat")
    bare = openai.OpenAI(base_url=env["api"] + "/v1", api_key=env["keys"]["acme"], max_retries=0)
    raw = bare.chat.completions.with_raw_response.create(model="gpt-test", messages=MESSAGES, user="end-user-7")
    trace = stored(env, raw.headers[TRACE_HEADER])
    assert (trace.agent_id, trace.user_id) == ("default", "end-user-7")


def test_models_are_listed_from_the_upstream(env):
    assert [m.id for m in client(env).models.list()] == ["fake-model"]


# -- bad input -----------------------------------------------------------------------------------------


def post(env: dict[str, Any], content: Any = None, *, key: str | None = "acme", json_body: Any = None,
         **headers: str) -> httpx.Response:
    h = {"Content-Type": "application/json", **headers}
    if key:
        h["Authorization"] = f"Bearer {env['keys'].get(key, key)}"
    return httpx.post(env["api"] + "/v1/chat/completions", content=content, json=json_body, headers=h, timeout=20)


@pytest.mark.parametrize("content,headers,status", [
    (b"{not json", {}, 400),
    (json.dumps({"model": "m"}), {}, 400),                                   # no messages
    (json.dumps({"model": "m", "messages": []}), {}, 400),
    (json.dumps({"messages": MESSAGES}), {}, 400),                           # no model
    (json.dumps({"model": "m", "messages": [{"content": "hi"}]}), {}, 400),  # a message without a role
    (json.dumps({"model": "m", "messages": MESSAGES, "stream": "yes"}), {}, 400),
    (json.dumps([1, 2]), {}, 400),
    (json.dumps({"model": "m", "messages": MESSAGES}), {"X-Crystallise-Usr": "u1"}, 400),   # misspelt scope
    (json.dumps({"model": "m", "messages": MESSAGES}), {"X-Crystallise-User": "u" * 201}, 400),
    (json.dumps({"model": "m", "messages": MESSAGES}), {"X-Crystallise-Context": "maybe"}, 400),
    (json.dumps({"model": "m", "messages": MESSAGES}), {"X-Crystallise-Context-Budget": "-3"}, 400),
    (json.dumps({"model": "m", "messages": MESSAGES}), {"X-Crystallise-Org": "globex"}, 403),  # another org
])
def test_bad_requests_are_4xx_problems_and_nothing_is_forwarded_or_written(env, content, headers, status):
    before, forwarded = env["home"].store.count_traces(), len(env["seen"])
    r = post(env, content, **headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM) and r.json()["detail"]
    assert r.json()["error"]["type"] == "invalid_request_error"  # OpenAI's shape: clients show error.message
    assert env["home"].store.count_traces() == before and len(env["seen"]) == forwarded


def test_a_wrong_key_is_refused_by_the_openai_client(env):
    before = env["home"].store.count_traces()
    bad = openai.OpenAI(base_url=env["api"] + "/v1", api_key="cr_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert post(env, json.dumps({"model": "m", "messages": MESSAGES}), key=None).status_code == 401
    assert env["home"].store.count_traces() == before


def test_an_oversized_body_is_413(env):
    before = env["home"].store.count_traces()
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 70_000}]}
    r = post(env, json.dumps(big))
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert env["home"].store.count_traces() == before


def test_an_upstream_error_is_passed_through_and_recorded(env):
    with pytest.raises(openai.BadRequestError, match="fake upstream failure 400"):
        client(env).chat.completions.create(model="fail-400", messages=MESSAGES)
    r = post(env, json.dumps({"model": "fail-500", "messages": MESSAGES}))
    assert r.status_code == 500 and r.json() == {"error": {"message": "fake upstream failure 500",
                                                           "type": "server_error", "code": None, "param": None}}
    trace = stored(env, r.headers[TRACE_HEADER])
    assert trace.status == "error" and "HTTP 500" in trace.error and trace.feedback[0].kind == "upstream_error"


def test_upstream_down_is_a_502_problem_and_the_trace_is_still_recorded(env, tmp_path):
    with Server(fake_openai()) as gone:
        dead = gone.url
    app = create_app(env["home"], upstream=dead + "/v1")
    with Server(app) as api:
        c = openai.OpenAI(base_url=api.url + "/v1", api_key=env["keys"]["acme"], max_retries=0)
        with pytest.raises(openai.InternalServerError, match="cannot be reached"):
            c.chat.completions.create(model="gpt-test", messages=MESSAGES)
        r = httpx.post(api.url + "/v1/chat/completions", json={"model": "m", "messages": MESSAGES, "stream": True},
                       headers={"Authorization": f"Bearer {env['keys']['acme']}"})
        assert r.status_code == 502 and r.headers["content-type"].startswith(PROBLEM)
        body = r.json()
        assert body["type"] == "urn:crystallise:problem:bad-gateway" and "--upstream" in body["detail"]
        assert body["error"]["type"] == "upstream_unavailable"
        trace = stored(env, r.headers[TRACE_HEADER])
        assert trace.status == "error" and "cannot be reached" in trace.error
        assert spans(trace)["llm"].error == trace.error and spans(trace)["retrieval"]


def test_a_client_that_hangs_up_mid_stream_leaves_an_abandoned_trace(env):
    headers = {"Authorization": f"Bearer {env['keys']['acme']}"}
    body = {"model": "gpt-test", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", env["api"] + "/v1/chat/completions", json=body, headers=headers) as r:
        trace_id = r.headers[TRACE_HEADER]
        next(r.iter_raw())  # the first event only, then close the connection
    deadline = time.monotonic() + 10
    while True:
        try:
            trace = stored(env, trace_id)
            break
        except NotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    assert trace.status == "error" and [f.kind for f in trace.feedback] == ["abandoned"]


# -- the home's own backend ---------------------------------------------------------------------------


def test_the_homes_backend_serves_in_the_openai_format(env):
    app = create_app(env["home"], upstream="scripted:Thirty days.")
    with Server(app) as api:
        c = openai.OpenAI(base_url=api.url + "/v1", api_key=env["keys"]["acme"], max_retries=0,
                          default_headers={"X-Crystallise-Agent": "support"})
        raw = c.chat.completions.with_raw_response.create(model="scripted", messages=MESSAGES, max_tokens=20)
        done = raw.parse()
        assert done.choices[0].message.content == "Thirty days." and done.object == "chat.completion"
        assert done.choices[0].finish_reason == "stop" and done.usage.total_tokens >= 0
        assert spans(stored(env, raw.headers[TRACE_HEADER]))["retrieval"].attributes["shown_items"]
        stream = c.chat.completions.create(model="scripted", messages=MESSAGES, stream=True,
                                           stream_options={"include_usage": True})
        chunks = list(stream)
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "Thirty days."
        assert chunks[-1].usage is not None and stored(env, stream.response.headers[TRACE_HEADER]).status == "ok"
        assert [m.id for m in c.models.list()] == ["scripted"]
        with pytest.raises(openai.BadRequestError, match="tools"):
            c.chat.completions.create(model="scripted", messages=MESSAGES,
                                      tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])


@pytest.mark.slow
def test_the_real_local_model_serves_through_the_proxy(env):
    from crystallise.backends import catalog

    if not any(m["name"] == "smollm2-135m" for m in catalog.installed(env["home"].models_dir)):
        reason = f"smollm2-135m is not pulled into {env['home'].models_dir}: crystallise models pull smollm2-135m"
        if os.environ.get("CRYSTALLISE_REQUIRE_LOCAL") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    app = create_app(env["home"], upstream="local:smollm2-135m")
    with Server(app) as api:
        c = openai.OpenAI(base_url=api.url + "/v1", api_key=env["keys"]["acme"], max_retries=0, timeout=120)
        raw = c.chat.completions.with_raw_response.create(
            model="smollm2-135m", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8)
        done = raw.parse()
        assert done.choices[0].message.content.strip() and done.usage.completion_tokens > 0
        trace = stored(env, raw.headers[TRACE_HEADER])
        assert spans(trace)["llm"].attributes["completion_tokens"] == done.usage.completion_tokens
        stream = c.chat.completions.create(model="smollm2-135m", messages=[{"role": "user", "content": "Say hi."}],
                                           max_tokens=8, stream=True)
        assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices).strip()
