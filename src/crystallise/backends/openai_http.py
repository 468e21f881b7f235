"""Any OpenAI-compatible chat server (vLLM, Ollama, llama.cpp server, hosted APIs).

Configured from the environment, read when the backend is built:

    CRYSTALLISE_OPENAI_BASE_URL  or OPENAI_BASE_URL   (default: the SDK's, api.openai.com)
    CRYSTALLISE_OPENAI_API_KEY   or OPENAI_API_KEY    (default: "not-needed", for local servers)

Call path: request → chat.completions.create (SDK retries 429/5xx at most twice)
→ errors mapped to crystallise's tree → `Completion`.

Parameters are today's: `max_completion_tokens` (not the deprecated `max_tokens`), and no
`temperature` for reasoning models (o-series, gpt-5*), which accept only the default. A 400 that
names a parameter is read by `params.read_400` and the request is retried adapted (at most three
times): `temperature` left out, `max_tokens` for an older server, the schema left out. What a model
refused is remembered per model for 15 minutes (`params.ParamMemory`), then tried again. A request
with a schema is sent with `response_format={"type": "json_schema", ...}`; without it (a server
that says it cannot, or a schema it cannot compile) the schema is enforced only by
`structured.complete_json`'s validation and repair.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crystallise.config import env
from crystallise.backends.base import Completion, CompletionRequest
from crystallise.backends.params import ParamMemory, is_reasoning_model, read_400
from crystallise.errors import BackendError, ConfigError

if TYPE_CHECKING:
    from crystallise.backends.registry import BackendRegistry

__all__ = ["DEFAULT_BASE_URL", "OpenAIBackend", "register"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_PLACEHOLDER_KEY = "not-needed"


_MAX_ADAPTATIONS = 3


class _Rejected(Exception):
    """The server answered 400 for a reason the request can be adapted to (`params.read_400`)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


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
        self.params = ParamMemory()

    def _kwargs(self, request: CompletionRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        tokens_key = "max_tokens" if self.params.has(self.model, "max_tokens") else "max_completion_tokens"
        kwargs[tokens_key] = request.max_tokens
        if not is_reasoning_model(self.model) and not self.params.has(self.model, "temperature"):
            kwargs["temperature"] = request.temperature
        if request.stop:
            kwargs["stop"] = request.stop
        if request.seed is not None:
            kwargs["seed"] = request.seed
        if request.schema is not None and not self.params.has(self.model, "schema_unsupported"):
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": request.schema},
            }
        return kwargs

    def _adapt(self, kwargs: dict[str, Any], what: str) -> None:
        """Change `kwargs` as the 400 asked; remember it for the model unless it was about this schema."""
        if what == "temperature":
            kwargs.pop("temperature", None)
        elif what == "max_completion_tokens":
            kwargs["max_completion_tokens"] = kwargs.pop("max_tokens", kwargs.get("max_completion_tokens"))
        elif what == "max_tokens":
            kwargs["max_tokens"] = kwargs.pop("max_completion_tokens", kwargs.get("max_tokens"))
        else:  # schema_unsupported / schema_invalid: validation and repair above us enforce it instead
            kwargs.pop("response_format", None)
        if what == "max_completion_tokens":
            return  # the default already: nothing to remember
        if what != "schema_invalid":
            self.params.note(self.model, what)

    def complete(self, request: CompletionRequest) -> Completion:
        """Send one non-streaming chat completion and return its text and usage."""
        kwargs = self._kwargs(request)
        start = time.perf_counter()
        for attempt in range(_MAX_ADAPTATIONS + 1):
            try:
                response = self._create(kwargs, adaptable=attempt < _MAX_ADAPTATIONS)
                break
            except _Rejected as rejected:
                self._adapt(kwargs, rejected.what)
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

    def _create(self, kwargs: dict[str, Any], *, adaptable: bool = True) -> Any:
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
            what = read_400(str(exc.message), getattr(exc, "param", None))
            if adaptable and what is not None and _applies(what, kwargs):
                raise _Rejected(what) from exc
            raise BackendError(
                f"{self.base_url} rejected the request for model {self.model} (HTTP 400): {exc.message}"
            ) from exc
        except openai.APIStatusError as exc:
            raise BackendError(
                f"{self.base_url} failed with HTTP {exc.status_code} for model {self.model} "
                f"(after retries): {exc.message}"
            ) from exc


def _applies(what: str, kwargs: dict[str, Any]) -> bool:
    """Whether adapting to `what` changes this request (else the 400 is a real error)."""
    if what in ("schema_unsupported", "schema_invalid"):
        return "response_format" in kwargs
    if what == "max_completion_tokens":
        return "max_tokens" in kwargs
    if what == "max_tokens":
        return "max_completion_tokens" in kwargs
    return what in kwargs


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
