"""Any OpenAI-compatible chat server (vLLM, Ollama, llama.cpp server, hosted APIs).

Configured from the environment, read when the backend is built:

    CRYSTALLISE_OPENAI_BASE_URL  or OPENAI_BASE_URL   (default: the SDK's, api.openai.com)
    CRYSTALLISE_OPENAI_API_KEY   or OPENAI_API_KEY    (default: "not-needed", for local servers)

Call path: request → chat.completions.create (SDK retries 429/5xx at most twice)
→ errors mapped to crystallise's tree → `Completion`. A request with a schema is
sent with `response_format={"type": "json_schema", ...}`; a server that rejects
that field (400) is asked once more without it, and remembered, so the schema is
then enforced only by `structured.complete_json`'s validation and repair.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crystallise.config import env
from crystallise.backends.base import Completion, CompletionRequest
from crystallise.errors import BackendError, ConfigError

if TYPE_CHECKING:
    from crystallise.backends.registry import BackendRegistry

__all__ = ["DEFAULT_BASE_URL", "OpenAIBackend", "register"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_PLACEHOLDER_KEY = "not-needed"


class _SchemaRejected(Exception):
    """The server answered 400 to a request carrying `response_format`."""


def _env(*names: str) -> str | None:
    for name in names:
        value = env(name)
        if value:
            return value
    return None


class OpenAIBackend:
    """Chat completions from an OpenAI-compatible HTTP server, via the official `openai` SDK.

    Example:

        >>> backend = OpenAIBackend("qwen2.5-coder", base_url="http://localhost:8080/v1")  # doctest: +SKIP
        >>> from crystallise.backends import CompletionRequest, Message
        >>> backend.complete(CompletionRequest([Message("user", "2+2?")])).text         # doctest: +SKIP
        '4'
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
    ) -> None:
        try:
            import openai
        except ImportError:  # pragma: no cover - openai is a core dependency
            raise ConfigError("the openai backend needs the openai SDK: pip install openai") from None
        self._openai = openai
        self.model = model
        self.name = f"openai:{model}"
        self.base_url = (
            base_url or _env("CRYSTALLISE_OPENAI_BASE_URL", "OPENAI_BASE_URL") or DEFAULT_BASE_URL
        ).rstrip("/")
        self._key_from_env = api_key is None
        key = api_key or _env("CRYSTALLISE_OPENAI_API_KEY", "OPENAI_API_KEY") or _PLACEHOLDER_KEY
        self._client = openai.OpenAI(
            base_url=self.base_url, api_key=key, timeout=timeout, max_retries=min(max(max_retries, 0), 2)
        )
        self._schema_supported = True

    def complete(self, request: CompletionRequest) -> Completion:
        """Send one non-streaming chat completion and return its text and usage."""
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.stop:
            kwargs["stop"] = request.stop
        if request.seed is not None:
            kwargs["seed"] = request.seed
        if request.schema is not None and self._schema_supported:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": request.schema},
            }
        start = time.perf_counter()
        try:
            response = self._create(kwargs)
        except _SchemaRejected:
            # Older servers reject json_schema; fall back to validation + repair above us,
            # and stop sending it once the plain request has gone through.
            kwargs.pop("response_format")
            response = self._create(kwargs)
            self._schema_supported = False
        latency_ms = (time.perf_counter() - start) * 1000
        if not response.choices:
            raise BackendError(f"{self.base_url} returned no choices for model {self.model}")
        message = response.choices[0].message
        usage = response.usage
        return Completion(
            text=message.content or "",
            model=response.model or self.model,
            prompt_tokens=(usage.prompt_tokens or 0) if usage else 0,
            completion_tokens=(usage.completion_tokens or 0) if usage else 0,
            latency_ms=latency_ms,
        )

    def _create(self, kwargs: dict[str, Any]) -> Any:
        """One SDK call with its errors translated into crystallise's tree."""
        openai = self._openai
        try:
            return self._client.chat.completions.create(**kwargs)
        except openai.APITimeoutError as exc:
            raise BackendError(
                f"the OpenAI-compatible server at {self.base_url} timed out ({exc}): is it overloaded "
                "or the model too large? Retry, or raise the timeout"
            ) from exc
        except openai.APIConnectionError as exc:
            raise BackendError(
                f"cannot reach the OpenAI-compatible server at {self.base_url} ({exc}): is the server "
                "running? Set CRYSTALLISE_OPENAI_BASE_URL to its URL (e.g. http://localhost:8000/v1)"
            ) from exc
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            source = "the api_key argument" if not self._key_from_env else (
                "CRYSTALLISE_OPENAI_API_KEY (or OPENAI_API_KEY)"
            )
            raise ConfigError(
                f"{self.base_url} refused the API key ({exc.status_code}): set {source} to a valid key"
            ) from exc
        except openai.NotFoundError as exc:
            raise ConfigError(
                f"{self.base_url} answered 404 for model {self.model!r}: check the model name "
                "(openai:MODEL) and that CRYSTALLISE_OPENAI_BASE_URL ends in /v1"
            ) from exc
        except openai.BadRequestError as exc:
            if "response_format" in kwargs:
                raise _SchemaRejected from exc
            raise BackendError(
                f"{self.base_url} rejected the request for model {self.model} (HTTP 400): {exc.message}"
            ) from exc
        except openai.APIStatusError as exc:
            raise BackendError(
                f"{self.base_url} failed with HTTP {exc.status_code} for model {self.model} "
                f"(after retries): {exc.message}"
            ) from exc


def register(registry: BackendRegistry) -> None:
    """Entry point: `openai:MODEL` (MODEL from CRYSTALLISE_OPENAI_MODEL when omitted)."""

    def factory(arg: str | None, models_dir: Path) -> OpenAIBackend:
        model = arg or _env("CRYSTALLISE_OPENAI_MODEL")
        if not model:
            raise ConfigError(
                "the openai backend needs a model name: use openai:MODEL (e.g. openai:gpt-4o-mini) "
                "or set CRYSTALLISE_OPENAI_MODEL"
            )
        return OpenAIBackend(model)

    registry.register("openai", factory, help="openai:MODEL — any OpenAI-compatible server")
