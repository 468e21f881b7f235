"""Backends without a model: registry, structured output, replay, scripted, and OpenAI over real HTTP."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import crystallise.backends as backends
from crystallise.backends import (
    BackendRegistry,
    CompletionRequest,
    Message,
    ReplayBackend,
    ScriptedBackend,
    complete_json,
    complete_text,
    extract_json,
    get_backend,
    load_registry,
)
from crystallise.backends.openai_http import OpenAIBackend
from crystallise.errors import BackendError, ConfigError, ModelOutputError, ValidationError

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def ask(text: str = "who?", **kwargs: Any) -> CompletionRequest:
    return CompletionRequest([Message("system", "Be brief."), Message("user", text)], **kwargs)


def test_public_api_is_sorted_and_importable() -> None:
    assert backends.__all__ == sorted(backends.__all__)
    for name in backends.__all__:
        assert getattr(backends, name) is not None


# ── registry ────────────────────────────────────────────────────────────────


def test_registry_resolves_builtin_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYSTALLISE_OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert isinstance(get_backend("scripted"), ScriptedBackend)
    assert get_backend("scripted:fixed").complete(ask()).text == "fixed"
    replay = get_backend("replay:answer")
    assert isinstance(replay, ReplayBackend) and replay.name == "replay:answer"
    openai_backend = get_backend("openai:some-model")
    assert openai_backend.name == "openai:some-model"
    assert openai_backend.base_url == "http://127.0.0.1:9/v1"
    assert load_registry().prefixes() == ["anthropic", "local", "openai", "replay", "scripted"]


def test_unknown_prefix_lists_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        get_backend("nope:thing")
    message = str(err.value)
    assert "'nope:thing'" in message
    for prefix in ("anthropic", "local", "openai", "replay", "scripted"):
        assert prefix in message


def test_spec_arguments_are_required_where_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRYSTALLISE_OPENAI_MODEL", raising=False)
    with pytest.raises(ConfigError, match="replay:FIELD"):
        get_backend("replay")
    with pytest.raises(ConfigError, match="openai:MODEL"):
        get_backend("openai")


def test_local_missing_model_names_pull_command(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"crystallise models pull qwen2\.5-coder-0\.5b"):
        get_backend("local", models_dir=tmp_path)
    with pytest.raises(ConfigError, match="crystallise models pull smollm2-135m"):
        get_backend("local:smollm2-135m", models_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown model 'mystery'"):
        get_backend("local:mystery", models_dir=tmp_path)


def test_models_dir_comes_from_crystallise_home_at_call_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CRYSTALLISE_MODELS_DIR", raising=False)  # `make test` shares one models folder
    monkeypatch.setenv("CRYSTALLISE_HOME", str(tmp_path / "home"))
    with pytest.raises(ConfigError) as err:
        get_backend("local:smollm2-135m")
    assert str(tmp_path / "home" / "models") in str(err.value)


class FakeEntryPoint:
    def __init__(self, name: str, value: str, target: Any) -> None:
        self.name, self.value, self._target = name, value, target

    def load(self) -> Any:
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


def test_plugin_registers_through_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    def register(registry: BackendRegistry) -> None:
        registry.register("echo2", lambda arg, models_dir: ScriptedBackend(name=f"echo2:{arg}"), help="echo2:X")

    def fake_entry_points(group: str) -> list[FakeEntryPoint]:
        assert group == "crystallise.backends"
        return [
            FakeEntryPoint("scripted", "crystallise.backends.scripted:register", None),  # built-in: skipped
            FakeEntryPoint("echo2", "my_plugin:register", register),
        ]

    monkeypatch.setattr("importlib.metadata.entry_points", fake_entry_points)
    backend = get_backend("echo2:abc")
    assert backend.name == "echo2:abc"
    assert backend.complete(ask("ping")).text == "ping"
    assert load_registry().describe()["echo2"] == "echo2:X"


def test_broken_plugin_warns_and_builtins_survive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "importlib.metadata.entry_points",
        lambda group: [FakeEntryPoint("bad", "bad_plugin:register", ImportError("no module bad_plugin"))],
    )
    with pytest.warns(RuntimeWarning, match="'bad'"):
        registry = load_registry()
    assert "scripted" in registry.prefixes()


def test_explicit_registry_and_invalid_prefix() -> None:
    registry = BackendRegistry()
    registry.register("fake", lambda arg, models_dir: ScriptedBackend([str(models_dir)]))
    assert get_backend("fake", registry=registry, models_dir=Path("/m")).complete(ask()).text == "/m"
    with pytest.raises(ConfigError, match="invalid backend prefix"):
        registry.register("a:b", lambda arg, models_dir: ScriptedBackend())


# ── scripted double ─────────────────────────────────────────────────────────


def test_scripted_in_order_records_requests_and_says_when_exhausted() -> None:
    fake = ScriptedBackend(["one", "two"])
    assert [fake.complete(ask(q)).text for q in ("a", "b")] == ["one", "two"]
    assert [r.messages[-1].content for r in fake.requests] == ["a", "b"]
    with pytest.raises(BackendError, match="2 replies were scripted"):
        fake.complete(ask("c"))


def test_scripted_callable_and_echo() -> None:
    assert ScriptedBackend(lambda r: r.messages[-1].content.upper()).complete(ask("hi")).text == "HI"
    assert ScriptedBackend().complete(ask("echo me")).text == "echo me"


# ── structured output ───────────────────────────────────────────────────────


def test_complete_json_valid_first_time_sets_schema_on_a_copy() -> None:
    fake = ScriptedBackend(['{"name": "Ada", "age": 36}'])
    request = ask()
    value, completion, repaired = complete_json(fake, request, SCHEMA)
    assert value == {"name": "Ada", "age": 36} and not repaired
    assert completion.text == '{"name": "Ada", "age": 36}'
    assert fake.requests[0].schema == SCHEMA
    assert request.schema is None  # the caller's request is untouched


def test_complete_json_repairs_once_with_the_error() -> None:
    fake = ScriptedBackend(['{"name": "Ada", "age": "thirty-six"}', '{"name": "Ada", "age": 36}'])
    value, completion, repaired = complete_json(fake, ask(), SCHEMA)
    assert value == {"name": "Ada", "age": 36} and repaired
    repair = fake.requests[1]
    assert repair.schema == SCHEMA
    assert [m.role for m in repair.messages] == ["system", "user", "assistant", "user"]
    assert repair.messages[2].content == '{"name": "Ada", "age": "thirty-six"}'
    assert "age" in repair.messages[3].content and "integer" in repair.messages[3].content
    assert "JSON only" in repair.messages[3].content


def test_complete_json_fails_after_one_repair() -> None:
    fake = ScriptedBackend(["I cannot do that.", '{"name": "Ada"}', "never asked"])
    with pytest.raises(ModelOutputError) as err:
        complete_json(fake, ask(), SCHEMA)
    assert len(fake.requests) == 2  # exactly one repair attempt
    assert err.value.raw == '{"name": "Ada"}'
    assert "'age' is a required property" in str(err.value)
    assert "larger model" in str(err.value)


def test_complete_json_strips_fences_and_prose() -> None:
    fenced = 'Here you go:\n```json\n{"name": "Bo", "age": 5}\n```\nAnything else?'
    value, _, repaired = complete_json(ScriptedBackend([fenced]), ask(), SCHEMA)
    assert value == {"name": "Bo", "age": 5} and not repaired
    assert extract_json('Sure: {"a": [1, {"b": 2}]} trailing {"c": 3}') == {"a": [1, {"b": 2}]}
    assert extract_json("```\n[1, 2]\n```") == [1, 2]
    assert extract_json("  42 ") == 42
    assert extract_json("note {not json} then {\"ok\": true}") == {"ok": True}
    with pytest.raises(ValueError):
        extract_json("no json here")


def test_complete_json_rejects_invalid_schema() -> None:
    with pytest.raises(ValidationError, match="not a valid JSON schema"):
        complete_json(ScriptedBackend(["{}"]), ask(), {"type": "no-such-type"})


def test_complete_text_strips() -> None:
    assert complete_text(ScriptedBackend(["  hello \n"]), ask()).text == "hello"


# ── replay ──────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("value", "text"),
    [("Paris", "Paris"), (42, "42"), (None, ""), ({"a": [1]}, '{"a": [1]}'), (["x"], '["x"]')],
)
def test_replay_answers_from_record(value: Any, text: str) -> None:
    completion = get_backend("replay:answer").complete(ask(metadata={"record": {"answer": value, "q": "?"}}))
    assert completion.text == text
    assert completion.prompt_tokens == completion.completion_tokens == 0
    assert completion.latency_ms < 50


def test_replay_without_record_or_field() -> None:
    backend = ReplayBackend("answer")
    with pytest.raises(ValidationError, match="crystallise bench"):
        backend.complete(ask())
    with pytest.raises(ValidationError, match="it has gold, question"):
        backend.complete(ask(metadata={"record": {"question": "q", "gold": "g"}}))


# ── OpenAI-compatible HTTP, against a real local server ─────────────────────


class FakeOpenAIServer:
    """A tiny OpenAI-compatible server: POST /v1/chat/completions, non-streaming JSON."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.replies: list[tuple[int, dict[str, Any]]] = []  # queued (status, body); default below
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
                if self.path != "/v1/chat/completions":
                    status, payload = 404, {"error": {"message": f"no route {self.path}"}}
                elif server.replies:
                    status, payload = server.replies.pop(0)
                else:
                    status, payload = 200, server.completion("Hello from the server.")
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("retry-after-ms", "1")  # keep the SDK's retries fast
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    @staticmethod
    def completion(text: str, model: str = "served-model") -> dict[str, Any]:
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15},
        }


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx honours proxy variables; the local test server must be reached directly."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    srv = FakeOpenAIServer()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def test_openai_backend_sends_chat_and_parses_reply(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/wrong")
    monkeypatch.setenv("CRYSTALLISE_OPENAI_BASE_URL", server.url)  # wins over OPENAI_BASE_URL
    monkeypatch.setenv("CRYSTALLISE_OPENAI_API_KEY", "sk-test")
    backend = get_backend("openai:tiny")
    completion = backend.complete(ask("hi", max_tokens=20, stop=["\n\n"], seed=7))
    assert completion.text == "Hello from the server."
    assert (completion.model, completion.prompt_tokens, completion.completion_tokens) == ("served-model", 11, 4)
    assert completion.latency_ms > 0
    sent = server.requests[0]
    assert sent["model"] == "tiny"
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert (sent["max_completion_tokens"], sent["temperature"], sent["stop"], sent["seed"]) == (20, 0.0, ["\n\n"], 7)
    assert "max_tokens" not in sent  # deprecated: reasoning models refuse it
    assert "response_format" not in sent
    assert server.headers[0]["authorization"] == "Bearer sk-test"


def test_openai_backend_schema_goes_as_response_format(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CRYSTALLISE_OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.replies.append((200, server.completion('{"name": "Ada", "age": 36}')))
    backend = OpenAIBackend("tiny", base_url=server.url)
    value, completion, repaired = complete_json(backend, ask(), SCHEMA)
    assert value == {"name": "Ada", "age": 36} and not repaired
    assert server.requests[0]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": SCHEMA},
    }
    assert server.headers[0]["authorization"] == "Bearer not-needed"  # placeholder for local servers


def test_openai_backend_falls_back_when_server_rejects_response_format(server: FakeOpenAIServer) -> None:
    server.replies += [
        (400, {"error": {"message": "response_format json_schema not supported"}}),
        (200, server.completion('{"name": "Ada", "age": 36}')),
        (200, server.completion('{"name": "Bo", "age": 1}')),
    ]
    backend = OpenAIBackend("tiny", base_url=server.url)
    assert complete_json(backend, ask(), SCHEMA)[0] == {"name": "Ada", "age": 36}
    assert complete_json(backend, ask(), SCHEMA)[0] == {"name": "Bo", "age": 1}
    assert ["response_format" in r for r in server.requests] == [True, False, False]


def test_openai_backend_retries_5xx_at_most_twice(server: FakeOpenAIServer) -> None:
    server.replies += [(503, {"error": {"message": "busy"}})] * 3 + [(200, server.completion("late"))]
    backend = OpenAIBackend("tiny", base_url=server.url)
    with pytest.raises(BackendError, match="HTTP 503"):
        backend.complete(ask())
    assert len(server.requests) == 3  # first try + 2 retries
    assert backend.complete(ask()).text == "late"


def test_openai_backend_auth_error_names_env_var(server: FakeOpenAIServer) -> None:
    server.replies.append((401, {"error": {"message": "bad key"}}))
    with pytest.raises(ConfigError, match="CRYSTALLISE_OPENAI_API_KEY"):
        OpenAIBackend("tiny", base_url=server.url).complete(ask())


def test_openai_backend_unreachable_names_url_and_fix() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(BackendError) as err:
        OpenAIBackend("tiny", base_url=url, max_retries=0, timeout=5).complete(ask())
    assert url in str(err.value)
    assert "CRYSTALLISE_OPENAI_BASE_URL" in str(err.value) and "server running" in str(err.value)


# ── local backend set-up errors (no model needed) ───────────────────────────


def test_local_without_llama_cpp_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import crystallise.backends.local as local

    (tmp_path / "smollm2-135m.gguf").write_bytes(b"GGUF")
    monkeypatch.setattr(local, "_llama_missing", lambda: True)
    with pytest.raises(ConfigError, match=r"pip install 'crystallise\[local\]'"):
        get_backend("local:smollm2-135m", models_dir=tmp_path)
    monkeypatch.setitem(__import__("sys").modules, "llama_cpp", None)  # import fails at load time too
    backend = local.LocalBackend(tmp_path / "smollm2-135m.gguf")
    with pytest.raises(ConfigError, match=r"crystallise\[local\]"):
        backend.complete(ask())


@pytest.mark.parametrize(("env", "expected"), [("1", True), ("off", False)])
def test_local_extra_buffer_types_can_be_forced(env: str, expected: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import crystallise.backends.local as local

    monkeypatch.setenv("CRYSTALLISE_LLAMA_EXTRA_BUFTS", env)
    assert local._extra_bufts_wanted() is expected
