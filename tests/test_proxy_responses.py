"""The proxy's Responses API, embeddings, model routing and OpenAI-shaped errors, driven by the real `openai`
client against real uvicorn servers: an HTTP upstream (the fake OpenAI server), and the home's own backend."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the proxy needs the `serve` extra")

import httpx  # noqa: E402
import openai  # noqa: E402

from crystallise.api import create_key  # noqa: E402
from crystallise.api.proxy import CONTEXT_PREAMBLE, TRACE_HEADER  # noqa: E402
from crystallise.engine.home import Home  # noqa: E402
from crystallise.server import create_app  # noqa: E402
from crystallise.testing import Server, fake_openai  # noqa: E402
from crystallise.types import Delta, Item  # noqa: E402

QUESTION = "What is the refund window?"


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[dict[str, Any]]:
    home = Home.init(tmp_path_factory.mktemp("responses") / "home")
    home.config["embedder"] = "hash"
    keys = {org: create_key(home.path, org)[0] for org in ("acme", "globex")}
    items = [Item(text="Refunds are allowed within 30 days", level="agent", agent_id="support"),
             Item(text="Acme customers get 60 days to ask for a refund", level="org", agent_id="support",
                  org_id="acme"),
             Item(text="Globex secret rule: refund window of 90 days", level="org", agent_id="support",
                  org_id="globex")]
    home.store.apply_item_deltas([Delta(op="add", target="item", item_id=i.id, after=i.to_dict()) for i in items])
    upstream_app = fake_openai(chunk_delay_s=0.01)
    with Server(upstream_app) as up:
        with Server(create_app(home, upstream=up.url + "/v1")) as api, \
                Server(create_app(home, upstream="scripted:Thirty days.")) as local:
            yield {"home": home, "keys": keys, "api": api.url, "local": local.url, "seen": upstream_app.state.requests}
    home.close()


def client(env: dict[str, Any], org: str = "acme", where: str = "api") -> openai.OpenAI:
    return openai.OpenAI(base_url=env[where] + "/v1", api_key=env["keys"][org], max_retries=0, timeout=20,
                         default_headers={"X-Crystallise-Agent": "support", "X-Crystallise-User": "u1"})


# -- /v1/responses ------------------------------------------------------------------------------------


def test_responses_with_a_string_input_is_answered_injected_and_recorded_in_the_keys_org(env):
    raw = client(env).responses.with_raw_response.create(model="gpt-test", input=QUESTION,
                                                         instructions="Be brief.", max_output_tokens=50)
    answer = raw.parse()
    assert answer.object == "response" and answer.status == "completed"
    assert answer.output_text == "echo: " + QUESTION and answer.output[0].type == "message"
    assert (answer.usage.input_tokens, answer.usage.output_tokens, answer.usage.total_tokens) == (11, 3, 14)
    sent = env["seen"][-1]["body"]
    assert sent["max_completion_tokens"] == 50 and sent["messages"][-1] == {"role": "user", "content": QUESTION}
    system = sent["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("Be brief.\n\n" + CONTEXT_PREAMBLE)
    assert "Acme customers get 60" in system["content"] and "Globex" not in system["content"]
    trace = env["home"].store.get_trace(raw.headers[TRACE_HEADER])
    assert (trace.name, trace.org_id, trace.agent_id, trace.user_id) == ("responses", "acme", "support", "u1")
    assert trace.output == "echo: " + QUESTION


def test_responses_items_and_another_orgs_key(env):
    raw = client(env, "globex").responses.with_raw_response.create(model="gpt-test", input=[
        {"role": "user", "content": [{"type": "input_text", "text": "Earlier question"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Earlier answer"}]},
        {"type": "message", "role": "user", "content": QUESTION}])
    answer = raw.parse()
    assert answer.output_text == "echo: " + QUESTION
    sent = env["seen"][-1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[1]["content"] == "Earlier question" and "Globex secret rule" in sent[0]["content"]
    assert "Acme" not in sent[0]["content"]  # globex's key sees globex's context only
    assert env["home"].store.get_trace(raw.headers[TRACE_HEADER]).org_id == "globex"  # the key's org
    forged = httpx.post(env["api"] + "/v1/responses", json={"model": "gpt-test", "input": QUESTION},
                        headers={"Authorization": f"Bearer {env['keys']['globex']}", "X-Crystallise-Org": "acme"})
    assert forged.status_code == 403  # an org key cannot write (or read context) as another org


def test_responses_stream_relays_text_deltas_and_completes_after_the_trace(env):
    c = client(env)
    with c.responses.stream(model="gpt-test", input=QUESTION) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
        trace_id = stream._response.headers[TRACE_HEADER]  # noqa: SLF001 - the raw response's header
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") >= 2
    assert final.output_text == "echo: " + QUESTION and final.usage.output_tokens == 3
    trace = env["home"].store.get_trace(trace_id)
    assert trace.status == "ok" and trace.output == "echo: " + QUESTION


def test_responses_function_tools_round_trip_in_chat_form(env):
    tool = {"type": "function", "name": "lookup", "description": "d",
            "parameters": {"type": "object", "properties": {}}}
    client(env).responses.create(model="gpt-test", tools=[tool], tool_choice={"type": "function", "name": "lookup"},
                                 input=[{"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": "{}"},
                                        {"type": "function_call_output", "call_id": "c1", "output": "42"},
                                        {"role": "user", "content": QUESTION}])
    sent = env["seen"][-1]["body"]
    assert sent["tools"] == [{"type": "function", "function": {k: tool[k] for k in ("name", "description",
                                                                                    "parameters")}}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert sent["messages"][-3]["tool_calls"][0]["function"]["name"] == "lookup"
    assert sent["messages"][-2] == {"role": "tool", "tool_call_id": "c1", "content": "42"}


@pytest.mark.parametrize("body,param", [
    ({"model": "gpt-test"}, "input"),
    ({"model": "gpt-test", "input": QUESTION, "previous_response_id": "resp_1"}, None),
    ({"model": "gpt-test", "input": [{"type": "reasoning", "summary": []}]}, None),
    ({"model": "gpt-test", "input": QUESTION, "tools": [{"type": "web_search"}]}, None),
])
def test_bad_responses_requests_are_openai_shaped_400s_and_nothing_is_forwarded(env, body, param):
    forwarded, before = len(env["seen"]), env["home"].store.count_traces()
    with pytest.raises(openai.BadRequestError) as err:
        client(env).responses.create(**body)
    error = err.value.body if isinstance(err.value.body, dict) else {}
    assert err.value.status_code == 400 and error.get("type") == "invalid_request_error" and error.get("message")
    if param:
        assert error["param"] == param and error["code"] == "missing_required_parameter"
    assert len(env["seen"]) == forwarded and env["home"].store.count_traces() == before


# -- the home's own backend: the requested model is honoured --------------------------------------------


def test_a_local_upstream_serves_its_own_model_and_responses(env):
    c = client(env, where="local")
    assert [m.id for m in c.models.list()] == ["scripted"]
    assert c.chat.completions.create(model="scripted", messages=[{"role": "user", "content": QUESTION}]) \
        .choices[0].message.content == "Thirty days."
    assert c.responses.create(model="scripted", input=QUESTION).output_text == "Thirty days."
    with c.responses.stream(model="scripted", input=QUESTION) as stream:
        assert stream.get_final_response().output_text == "Thirty days."


def test_a_local_upstream_refuses_another_model_naming_the_ones_it_has(env):
    before = env["home"].store.count_traces()
    for ask in (lambda c: c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}]),
                lambda c: c.responses.create(model="gpt-4o", input="x")):
        with pytest.raises(openai.BadRequestError) as err:
            ask(client(env, where="local"))
        error = err.value.body
        assert error["param"] == "model" and error["code"] == "model_not_found"
        assert "'gpt-4o' is not served here" in error["message"] and "scripted" in error["message"]
    assert env["home"].store.count_traces() == before  # refused before anything was recorded


# -- /v1/embeddings -------------------------------------------------------------------------------------


def test_embeddings_from_the_homes_embedder_with_a_local_upstream(env):
    c = client(env, where="local")
    out = c.embeddings.create(model="hash-256", input=["refund policy", "refunds policies", "weather in Paris"],
                              encoding_format="float")
    vectors = [d.embedding for d in out.data]
    assert out.model == "hash-256" and len(vectors) == 3 and len(vectors[0]) == 256
    dot = [sum(a * b for a, b in zip(vectors[0], v)) for v in vectors[1:]]
    assert dot[0] > dot[1]  # the real embedder: spelling neighbours are nearer
    with pytest.raises(openai.BadRequestError, match="hash-256") as err:
        c.embeddings.create(model="text-embedding-3-small", input="x")
    assert err.value.body["param"] == "model"
    r = httpx.post(env["local"] + "/v1/embeddings", json={"model": "hash-256", "input": [[1, 2, 3]]},
                   headers={"Authorization": f"Bearer {env['keys']['acme']}"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_embeddings_are_forwarded_to_an_http_upstream(env):
    out = client(env).embeddings.create(model="text-embedding-3-small", input="abcd", encoding_format="float")
    assert out.data[0].embedding == [4.0, 0.0, 1.0]
    sent = env["seen"][-1]
    assert sent["body"]["model"] == "text-embedding-3-small"
    assert env["keys"]["acme"] not in json.dumps(sent["headers"])  # the crystallise key is never forwarded


def test_the_proxy_paths_need_a_key(env):
    for path in ("/v1/responses", "/v1/embeddings"):
        r = httpx.post(env["api"] + path, json={"model": "m", "input": "x"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error"
