"""Where the OpenAI-compatible proxy sends a chat completion: an HTTP server, or the home's own backend.

    resolve_upstream(home, "http://127.0.0.1:8080/v1")   -> HttpUpstream   (vLLM, Ollama, llama.cpp, hosted)
    resolve_upstream(home, "local:smollm2-135m")         -> BackendUpstream (any backend spec; the local GGUF)
    resolve_upstream(home, None)                         -> $CRYSTALLISE_PROXY_UPSTREAM, config `proxy_upstream`,
                                                            else the home's model (`local` by default)

Both answer in the OpenAI wire format, so the proxy treats them alike:

    await up.complete(body)      -> Reply(status, headers, content)       one JSON document
    await up.open_stream(body)   -> Reply with `chunks`: the SSE bytes     `data: {...}\\n\\n` ... `data: [DONE]`

An HttpUpstream passes the server's bytes through unchanged (status, JSON, SSE chunks); a
BackendUpstream builds the same documents from a `Completion`. Failing to reach the upstream
at all raises `UpstreamUnavailable` (the proxy answers 502); an upstream that answers with an
error status is passed through as that status, body unchanged.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from crystallise.config import ENV_UPSTREAM, ENV_UPSTREAM_KEY, env
from crystallise.backends.base import CompletionRequest, Message
from crystallise.errors import BackendError, ConfigError, CrystalliseError, UserError, ValidationError
from crystallise.engine.home import Home
from crystallise.types import new_id

__all__ = [
    "ENV_UPSTREAM",
    "ENV_UPSTREAM_KEY",
    "BackendUpstream",
    "HttpUpstream",
    "Reply",
    "UpstreamUnavailable",
    "resolve_upstream",
]


# Response headers worth passing back to the client; the rest (hop-by-hop, lengths, encodings
# that httpx already decoded) would be wrong after the proxy re-frames the body.
_PASS_HEADERS = ("content-type", "x-request-id", "retry-after")
_PASS_PREFIXES = ("openai-", "x-ratelimit-")


class UpstreamUnavailable(CrystalliseError):
    """The upstream could not be reached or did not answer in time (answered 502)."""


@dataclass
class Reply:
    """What the upstream answered: its status, the headers to pass on, and the body or the SSE chunks."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes = b""
    chunks: AsyncIterator[bytes] | None = None
    close: Any = None  # async callable releasing the upstream connection of a stream


def _passed(headers: httpx.Headers) -> dict[str, str]:
    return {k: v for k, v in headers.items()
            if k.lower() in _PASS_HEADERS or k.lower().startswith(_PASS_PREFIXES)}


class HttpUpstream:
    """An OpenAI-compatible server at `base_url` (ending in /v1). The client's crystallise key is
    never forwarded; the upstream's own key comes from $CRYSTALLISE_PROXY_UPSTREAM_KEY."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 300.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.label = self.base_url
        headers = {"Accept-Encoding": "identity"}  # SSE arrives as sent, chunk by chunk
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.AsyncClient(
            base_url=self.base_url, headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0), follow_redirects=False,
        )

    def _unavailable(self, error: Exception) -> UpstreamUnavailable:
        what = "timed out" if isinstance(error, httpx.TimeoutException) else "cannot be reached"
        return UpstreamUnavailable(
            f"the upstream model server at {self.base_url} {what} ({type(error).__name__}: {error}): start it, "
            f"or point the proxy elsewhere with `crystallise serve --upstream URL` (or ${ENV_UPSTREAM})"
        )

    async def complete(self, body: dict[str, Any]) -> Reply:
        try:
            r = await self._client.post("/chat/completions", json=body)
        except httpx.HTTPError as e:
            raise self._unavailable(e) from e
        return Reply(r.status_code, _passed(r.headers), r.content)

    async def open_stream(self, body: dict[str, Any]) -> Reply:
        request = self._client.build_request("POST", "/chat/completions", json=body)
        try:
            r = await self._client.send(request, stream=True)
        except httpx.HTTPError as e:
            raise self._unavailable(e) from e
        if r.status_code != 200 or "text/event-stream" not in r.headers.get("content-type", ""):
            try:  # an error (or a server that ignored stream=true): answer it whole
                content = await r.aread()
            except httpx.HTTPError as e:
                raise self._unavailable(e) from e
            finally:
                await r.aclose()
            return Reply(r.status_code, _passed(r.headers), content)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in r.aiter_bytes():
                    yield chunk
            except httpx.HTTPError as e:
                raise self._unavailable(e) from e

        return Reply(200, _passed(r.headers), chunks=chunks(), close=r.aclose)

    async def models(self) -> Reply:
        try:
            r = await self._client.get("/models")
        except httpx.HTTPError as e:
            raise self._unavailable(e) from e
        return Reply(r.status_code, _passed(r.headers), r.content)

    async def aclose(self) -> None:
        await self._client.aclose()


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


class BackendUpstream:
    """The home's own model backend (e.g. the local GGUF) behind the OpenAI wire format.

    The backend answers whole completions, so a streamed request gets the answer as one
    content chunk, framed exactly like an OpenAI stream (role chunk, content, finish, [DONE]).
    """

    def __init__(self, home: Home, spec: str) -> None:
        self.home, self.spec, self.label = home, spec, f"backend {spec}"
        self._backend: Any = None
        self._lock = anyio.Lock()

    async def _get(self) -> Any:
        async with self._lock:  # loading a GGUF takes seconds: once, not per racing request
            if self._backend is None:
                try:
                    self._backend = await anyio.to_thread.run_sync(self.home.backend, self.spec)
                except UserError as e:
                    raise UpstreamUnavailable(f"the proxy's backend {self.spec!r} cannot start: {e}") from e
        return self._backend

    @staticmethod
    def _request(body: dict[str, Any]) -> CompletionRequest:
        unsupported = [k for k in ("tools", "functions", "tool_choice") if body.get(k)]
        if unsupported or (body.get("n") or 1) != 1:
            what = ", ".join(unsupported) or f"n={body.get('n')}"
            raise ValidationError(f"the home's own backend cannot do {what}: leave it out, or run the proxy "
                                  "with an OpenAI-compatible upstream (`crystallise serve --upstream URL`)")
        stop = body.get("stop")
        return CompletionRequest(
            messages=[Message(str(m.get("role", "user")), _text(m.get("content"))) for m in body["messages"]],
            max_tokens=int(body.get("max_completion_tokens") or body.get("max_tokens") or 256),
            temperature=float(body["temperature"]) if body.get("temperature") is not None else 0.0,
            stop=[stop] if isinstance(stop, str) else list(stop) if isinstance(stop, list) else None,
            seed=int(body["seed"]) if isinstance(body.get("seed"), int) else None,
        )

    async def _complete(self, body: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        request = self._request(body)
        backend = await self._get()
        try:
            done = await anyio.to_thread.run_sync(backend.complete, request)
        except BackendError as e:
            raise UpstreamUnavailable(f"the proxy's backend {self.spec!r} failed: {e}") from e
        finish = "length" if done.completion_tokens >= request.max_tokens else "stop"
        usage = {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
                 "total_tokens": done.prompt_tokens + done.completion_tokens}
        head = {"id": new_id("chatcmpl-"), "created": int(time.time()), "model": done.model}
        return {**head, "text": done.text, "finish": finish, "usage": usage}, done

    async def complete(self, body: dict[str, Any]) -> Reply:
        out, _ = await self._complete(body)
        doc = {"id": out["id"], "object": "chat.completion", "created": out["created"], "model": out["model"],
               "choices": [{"index": 0, "message": {"role": "assistant", "content": out["text"]},
                            "logprobs": None, "finish_reason": out["finish"]}],
               "usage": out["usage"]}
        return Reply(200, {"content-type": "application/json"}, json.dumps(doc).encode())

    async def open_stream(self, body: dict[str, Any]) -> Reply:
        out, _ = await self._complete(body)
        head = {"id": out["id"], "object": "chat.completion.chunk", "created": out["created"], "model": out["model"]}

        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            return b"data: " + json.dumps({**head, "choices": choices, **extra}).encode() + b"\n\n"

        events = [
            event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                    "finish_reason": None}]),
            event([{"index": 0, "delta": {"content": out["text"]}, "logprobs": None, "finish_reason": None}]),
            event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": out["finish"]}]),
        ]
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(event([], usage=out["usage"]))
        events.append(b"data: [DONE]\n\n")

        async def chunks() -> AsyncIterator[bytes]:
            for e in events:
                yield e

        return Reply(200, {"content-type": "text/event-stream; charset=utf-8"}, chunks=chunks())

    async def models(self) -> Reply:
        backend = await self._get()
        name = getattr(backend, "model", None) or backend.name
        doc = {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "crystallise"}]}
        return Reply(200, {"content-type": "application/json"}, json.dumps(doc).encode())

    async def aclose(self) -> None:
        return None


Upstream = HttpUpstream | BackendUpstream


def resolve_upstream(home: Home, spec: str | None = None, *, timeout: float = 300.0) -> Upstream:
    """The upstream named by `spec`, else $CRYSTALLISE_PROXY_UPSTREAM, the home's `proxy_upstream`
    setting, or the home's own model. An http(s) URL is a server; anything else a backend spec."""
    chosen = spec or env(ENV_UPSTREAM) or home.config.get("proxy_upstream") or home.model_spec
    if not isinstance(chosen, str) or not chosen.strip():
        raise ConfigError(f"proxy upstream {chosen!r} is empty: pass --upstream URL or a backend spec such as `local`")
    chosen = chosen.strip()
    if chosen.startswith(("http://", "https://")):
        return HttpUpstream(chosen, api_key=env(ENV_UPSTREAM_KEY) or None, timeout=timeout)
    if "://" in chosen:
        raise ConfigError(f"proxy upstream {chosen!r}: use an http(s)://HOST/v1 URL or a backend spec (local, "
                          "local:NAME, openai:MODEL)")
    return BackendUpstream(home, chosen)
