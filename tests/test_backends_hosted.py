"""Hosted backends through their official SDKs against real local HTTP servers (crystallise.testing.Server):
Anthropic's Messages API, and the OpenAI backend's current parameters and 400 handling."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the fake servers need the `serve` extra")
pytest.importorskip("anthropic", reason="the anthropic backend needs the `anthropic` extra")

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402

from crystallise.backends import CompletionRequest, Message, get_backend  # noqa: E402
from crystallise.backends.anthropic_http import AnthropicBackend  # noqa: E402
from crystallise.backends.openai_http import OpenAIBackend  # noqa: E402
from crystallise.backends.structured import complete_json  # noqa: E402
from crystallise.errors import BackendError, ConfigError  # noqa: E402
from crystallise.testing import Server  # noqa: E402

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
          "additionalProperties": False}


def ask(text: str = "hi", **kw: Any) -> CompletionRequest:
    return CompletionRequest([Message("system", "Be brief."), Message("user", text)], **kw)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


# ── a fake Messages API ──────────────────────────────────────────────────────


def fake_anthropic() -> FastAPI:
    """POST /v1/messages: answers `{"name": "Ada"}` when asked for JSON, else `echo: <last user text>`.
    Model `no-schema` answers 400 to output_config.format (as a model without structured output does);
    `bad-key` 401; `overloaded` 529."""
    app = FastAPI()
    app.state.requests = []

    @app.post("/v1/messages")
    async def messages(request: Request) -> Any:
        body = await request.json()
        app.state.requests.append({"body": body, "headers": dict(request.headers)})
        model = body["model"]
        if model == "bad-key":
            return JSONResponse({"type": "error", "error": {"type": "authentication_error",
                                                            "message": "invalid x-api-key"}}, status_code=401)
        if model == "overloaded":
            return JSONResponse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
                                status_code=529, headers={"retry-after-ms": "1"})
        if model == "no-schema" and "output_config" in body:
            return JSONResponse({"type": "error", "error": {
                "type": "invalid_request_error",
                "message": "output_config.format: structured outputs are not supported for this model"}},
                status_code=400)
        wants_json = "output_config" in body or "JSON" in str(body.get("system", "")) + str(body["messages"])
        text = '{"name": "Ada"}' if wants_json else "echo: " + body["messages"][-1]["content"]
        return {"id": "msg_1", "type": "message", "role": "assistant", "model": model + "-20260101",
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": 12, "output_tokens": 5}}

    return app


@pytest.fixture
def claude() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    app = fake_anthropic()
    with Server(app) as srv:
        yield srv.url, app.state.requests


def test_anthropic_spec_sends_a_messages_request_and_reads_text_and_usage(claude, monkeypatch) -> None:
    url, seen = claude
    monkeypatch.setenv("CRYSTALLISE_ANTHROPIC_BASE_URL", url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    backend = get_backend("anthropic:claude-test")
    done = backend.complete(ask("What is 2+2?", max_tokens=40, stop=["\n\n"]))
    assert (done.text, done.model, done.prompt_tokens, done.completion_tokens) == (
        "echo: What is 2+2?", "claude-test-20260101", 12, 5)
    body, headers = seen[0]["body"], seen[0]["headers"]
    assert body["system"] == "Be brief." and body["messages"] == [{"role": "user", "content": "What is 2+2?"}]
    assert (body["model"], body["max_tokens"], body["stop_sequences"]) == ("claude-test", 40, ["\n\n"])
    sent_key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
    assert sent_key == "sk-ant-test" and "anthropic-version" in headers


def test_anthropic_schema_goes_as_output_config_format(claude) -> None:
    url, seen = claude
    value, _, repaired = complete_json(AnthropicBackend("claude-test", base_url=url, api_key="k"), ask(), SCHEMA)
    assert value == {"name": "Ada"} and not repaired
    assert seen[0]["body"]["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}


def test_anthropic_model_without_structured_output_falls_back_and_remembers(claude) -> None:
    url, seen = claude
    backend = AnthropicBackend("no-schema", base_url=url, api_key="k")
    for _ in range(2):
        value, _, _ = complete_json(backend, ask("Answer in JSON"), SCHEMA)
        assert value == {"name": "Ada"}
    assert ["output_config" in r["body"] for r in seen] == [True, False, False]
    assert backend.params.has("no-schema", "schema_unsupported")


def test_anthropic_errors_name_the_fix(claude) -> None:
    url, _ = claude
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        AnthropicBackend("bad-key", base_url=url, api_key=None).complete(ask())
    with pytest.raises(BackendError, match="HTTP 529"):
        AnthropicBackend("overloaded", base_url=url, api_key="k", max_retries=0).complete(ask())


def test_anthropic_needs_a_model_name(monkeypatch) -> None:
    monkeypatch.delenv("CRYSTALLISE_ANTHROPIC_MODEL", raising=False)
    with pytest.raises(ConfigError, match="anthropic:MODEL"):
        get_backend("anthropic")


def test_anthropic_missing_sdk_names_the_extra(monkeypatch) -> None:
    import crystallise.backends.anthropic_http as mod

    monkeypatch.setattr(mod, "anthropic", None)
    with pytest.raises(ConfigError, match=r"crystallise\[anthropic\]"):
        get_backend("anthropic:claude-test")


# ── the OpenAI backend: current parameters, 400s read per model ──────────────


def fake_openai_strict() -> FastAPI:
    """Chat completions that refuse parameters the way today's servers do, by model name:
    `o3-*`/`gpt-5*` refuse max_tokens and a non-default temperature (OpenAI's wording);
    `old-*` refuses max_completion_tokens (an older server); `noschema-*` has no json_schema;
    `picky-*` refuses the schema given (`Invalid schema ...`), once."""
    app = FastAPI()
    app.state.requests = []
    app.state.picky_refused = False

    def reject(param: str, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                       "code": "unsupported_parameter"}}, status_code=400)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        app.state.requests.append(body)
        model = body["model"]
        if model.startswith(("o3", "gpt-5")):
            if "max_tokens" in body:
                return reject("max_tokens", "Unsupported parameter: 'max_tokens' is not supported with this "
                                            "model. Use 'max_completion_tokens' instead.")
            if body.get("temperature", 1) != 1:
                return reject("temperature", "Unsupported value: 'temperature' does not support 0.0 with this "
                                             "model. Only the default (1) value is supported.")
        if model.startswith("toolong-"):
            return reject("messages", "This model's maximum context length is 8192 tokens")
        if model.startswith("old-") and "max_completion_tokens" in body:
            return reject("max_completion_tokens", "Unrecognized request argument supplied: max_completion_tokens")
        if model.startswith("noschema-") and "response_format" in body:
            return reject("response_format", "response_format of type json_schema is not supported")
        if model.startswith("picky-") and "response_format" in body and not app.state.picky_refused:
            app.state.picky_refused = True
            return reject("response_format", "Invalid schema for response_format 'output': In context=(), "
                                             "'additionalProperties' is required to be supplied and to be false")
        text = '{"name": "Ada"}' if "response_format" in body or "JSON" in str(body["messages"]) else "ok"
        return {"id": "c1", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}

    return app


@pytest.fixture
def strict() -> Iterator[tuple[str, list[dict[str, Any]], FastAPI]]:
    app = fake_openai_strict()
    with Server(app) as srv:
        yield srv.url + "/v1", app.state.requests, app


def test_reasoning_models_get_max_completion_tokens_and_no_temperature(strict) -> None:
    url, seen, _ = strict
    for model in ("o3-mini", "gpt-5.1"):
        assert OpenAIBackend(model, base_url=url).complete(ask(max_tokens=30)).text == "ok"
    assert len(seen) == 2  # no 400 on the way: the first request was already right
    assert all(r["max_completion_tokens"] == 30 and "max_tokens" not in r and "temperature" not in r for r in seen)


def test_a_temperature_refusal_is_retried_without_it_and_remembered(strict) -> None:
    url, seen, _ = strict
    backend = OpenAIBackend("o3-custom-proxy-name", base_url=url)
    backend.model = "o3"  # as if the name hid the family: the server's 400 teaches it
    backend.params.ttl_s = 60
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("crystallise.backends.openai_http.is_reasoning_model", lambda m: False)
        assert backend.complete(ask()).text == "ok"
        assert backend.complete(ask()).text == "ok"
    assert ["temperature" in r for r in seen] == [True, False, False]
    assert backend.params.has("o3", "temperature")


def test_an_older_server_gets_max_tokens_after_refusing_the_new_name(strict) -> None:
    url, seen, _ = strict
    backend = OpenAIBackend("old-llama", base_url=url)
    assert backend.complete(ask(max_tokens=9)).text == "ok"
    assert backend.complete(ask(max_tokens=9)).text == "ok"
    assert [("max_completion_tokens" in r, r.get("max_tokens")) for r in seen] == [(True, None), (False, 9),
                                                                                   (False, 9)]


def test_schema_unsupported_is_remembered_per_model_and_expires(strict) -> None:
    url, seen, _ = strict
    backend = OpenAIBackend("noschema-1", base_url=url)
    clock = [0.0]
    backend.params._clock = lambda: clock[0]
    assert complete_json(backend, ask("Answer in JSON"), SCHEMA)[0] == {"name": "Ada"}
    assert complete_json(backend, ask("Answer in JSON"), SCHEMA)[0] == {"name": "Ada"}
    assert ["response_format" in r for r in seen] == [True, False, False]
    assert not backend.params.has("gpt-4o", "schema_unsupported")  # per model, not per backend
    clock[0] = backend.params.ttl_s + 1  # later: the model is asked with the schema again
    complete_json(backend, ask("Answer in JSON"), SCHEMA)
    assert "response_format" in seen[3]


def test_a_400_about_this_schema_is_not_read_as_no_structured_output(strict) -> None:
    url, seen, _ = strict
    backend = OpenAIBackend("picky-1", base_url=url)
    assert complete_json(backend, ask("Answer in JSON"), SCHEMA)[0] == {"name": "Ada"}
    assert complete_json(backend, ask("Answer in JSON"), SCHEMA)[0] == {"name": "Ada"}
    assert ["response_format" in r for r in seen] == [True, False, True]  # the next request tries it again
    assert not backend.params.has("picky-1", "schema_unsupported")


def test_an_unrelated_400_is_an_error_not_a_retry(strict) -> None:
    url, seen, _ = strict
    with pytest.raises(BackendError, match="maximum context length"):
        OpenAIBackend("toolong-1", base_url=url).complete(ask(schema=SCHEMA))
    assert len(seen) == 1  # a 400 about the messages, with a schema present, is not a schema problem
