"""Claude through Anthropic's Messages API, with the official `anthropic` SDK (extra `anthropic`).

    anthropic:claude-sonnet-4-5          any model name the API knows

Configured from the environment, read when the backend is built:

    CRYSTALLISE_ANTHROPIC_BASE_URL  or ANTHROPIC_BASE_URL   (default: the SDK's)
    CRYSTALLISE_ANTHROPIC_API_KEY   or ANTHROPIC_API_KEY    (required by the hosted API)

Call path: request → system messages joined into `system`, the rest alternating user/assistant
→ messages.create (SDK retries 429/5xx at most twice) → errors mapped to crystallise's tree →
`Completion` (the text blocks joined). A request with a schema asks for structured output
(`output_config.format = {"type": "json_schema", "schema": ...}`); a 400 about it is handled as
the OpenAI backend does (`params.read_400`): this request goes again without it, and a model that
says it cannot is remembered for 15 minutes — the schema is then enforced by
`structured.complete_json`'s validation and repair. This SDK sends no `temperature`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crystallise.backends.base import Completion, CompletionRequest, Message
from crystallise.backends.params import ParamMemory, read_400
from crystallise.config import env
from crystallise.errors import BackendError, ConfigError

try:
    import anthropic
except ImportError:  # pragma: no cover - depends on the extras installed
    anthropic = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from crystallise.backends.registry import BackendRegistry

__all__ = ["AnthropicBackend", "register", "split_messages"]

_PLACEHOLDER_KEY = "not-set"


def _env(*names: str) -> str | None:
    for name in names:
        value = env(name)
        if value:
            return value
    return None


def split_messages(messages: list[Message]) -> tuple[str, list[dict[str, str]]]:
    """(system, turns): the Messages API takes the system prompt apart, and turns that alternate,
    starting with the user. Consecutive turns of one role are joined; a leading assistant turn gets
    an empty user turn before it.

    >>> split_messages([Message("system", "be brief"), Message("user", "a"), Message("user", "b")])
    ('be brief', [{'role': 'user', 'content': 'a\\n\\nb'}])
    """
    system = "\n\n".join(m.content for m in messages if m.role in ("system", "developer") and m.content)
    turns: list[dict[str, str]] = []
    for m in messages:
        if m.role in ("system", "developer"):
            continue
        role = "assistant" if m.role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + m.content
        else:
            turns.append({"role": role, "content": m.content})
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": "(continue)"})
    return system, turns


class AnthropicBackend:
    """Messages from Anthropic's API (or any server speaking it), via the official SDK.

    Example:

        >>> backend = AnthropicBackend("claude-sonnet-4-5")                          # doctest: +SKIP
        >>> from crystallise.backends import CompletionRequest, Message
        >>> backend.complete(CompletionRequest([Message("user", "2+2?")])).text      # doctest: +SKIP
        '4'
    """

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 120.0, max_retries: int = 2) -> None:
        if anthropic is None:
            raise ConfigError("the anthropic backend needs the `anthropic` extra: pip install 'crystallise[anthropic]'")
        self.model, self.name = model, f"anthropic:{model}"
        self.base_url = base_url or _env("CRYSTALLISE_ANTHROPIC_BASE_URL", "ANTHROPIC_BASE_URL")
        self._key_from_env = api_key is None
        key = api_key or _env("CRYSTALLISE_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY") or _PLACEHOLDER_KEY
        self._client = anthropic.Anthropic(base_url=self.base_url, api_key=key, timeout=timeout,
                                           max_retries=min(max(max_retries, 0), 2))
        self.where = self.base_url or "the Anthropic API"
        self.params = ParamMemory()

    def complete(self, request: CompletionRequest) -> Completion:
        """Send one message request and return its text and usage."""
        system, turns = split_messages(request.messages)
        kwargs: dict[str, Any] = {"model": self.model, "max_tokens": request.max_tokens, "messages": turns}
        if system:
            kwargs["system"] = system
        if request.stop:
            kwargs["stop_sequences"] = request.stop
        if request.schema is not None and not self.params.has(self.model, "schema_unsupported"):
            kwargs["output_config"] = {"format": {"type": "json_schema", "schema": request.schema}}
        start = time.perf_counter()
        try:
            message = self._create(kwargs)
        except _SchemaRejected as rejected:
            kwargs.pop("output_config")
            if rejected.what == "schema_unsupported":
                self.params.note(self.model, "schema_unsupported")
            message = self._create(kwargs)
        latency_ms = (time.perf_counter() - start) * 1000
        text = "".join(getattr(b, "text", "") for b in message.content if getattr(b, "type", "") == "text")
        usage = message.usage
        return Completion(text=text, model=message.model or self.model,
                          prompt_tokens=(usage.input_tokens or 0) if usage else 0,
                          completion_tokens=(usage.output_tokens or 0) if usage else 0, latency_ms=latency_ms)

    def _create(self, kwargs: dict[str, Any]) -> Any:
        """One SDK call with its errors translated into crystallise's tree."""
        try:
            return self._client.messages.create(**kwargs)
        except anthropic.APITimeoutError as exc:
            raise BackendError(f"{self.where} timed out for model {self.model} ({exc}): retry, or raise the "
                               "timeout") from exc
        except anthropic.APIConnectionError as exc:
            raise BackendError(f"cannot reach {self.where} ({exc}): check the network, or set "
                               "CRYSTALLISE_ANTHROPIC_BASE_URL") from exc
        except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as exc:
            source = "the api_key argument" if not self._key_from_env else "CRYSTALLISE_ANTHROPIC_API_KEY (or " \
                "ANTHROPIC_API_KEY)"
            raise ConfigError(f"{self.where} refused the API key ({exc.status_code}): set {source} to a valid "
                              "key") from exc
        except anthropic.NotFoundError as exc:
            raise ConfigError(f"{self.where} answered 404 for model {self.model!r}: check the model name "
                              "(anthropic:MODEL)") from exc
        except anthropic.BadRequestError as exc:
            what = read_400(str(exc.message), None)
            if "output_config" in kwargs and what in ("schema_unsupported", "schema_invalid"):
                raise _SchemaRejected(what) from exc
            raise BackendError(f"{self.where} rejected the request for model {self.model} (HTTP 400): "
                               f"{exc.message}") from exc
        except anthropic.APIStatusError as exc:
            raise BackendError(f"{self.where} failed with HTTP {exc.status_code} for model {self.model} "
                               f"(after retries): {exc.message}") from exc


class _SchemaRejected(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def register(registry: BackendRegistry) -> None:
    """Entry point: `anthropic:MODEL` (MODEL from CRYSTALLISE_ANTHROPIC_MODEL when omitted)."""

    def factory(arg: str | None, models_dir: Path) -> AnthropicBackend:
        model = arg or _env("CRYSTALLISE_ANTHROPIC_MODEL")
        if not model:
            raise ConfigError("the anthropic backend needs a model name: use anthropic:MODEL (e.g. "
                              "anthropic:claude-sonnet-4-5) or set CRYSTALLISE_ANTHROPIC_MODEL")
        return AnthropicBackend(model)

    registry.register("anthropic", factory, help="anthropic:MODEL — Claude via the Messages API (extra `anthropic`)")
