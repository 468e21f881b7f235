"""Where the OpenAI-compatible proxy sends a chat completion: an HTTP server, or the home's own backend.

    resolve_upstream(home, "http://127.0.0.1:8080/v1")   -> HttpUpstream   (vLLM, Ollama, llama.cpp, hosted)
    resolve_upstream(home, "local:smollm2-135m")         -> BackendUpstream (any backend spec; the local GGUF)
    resolve_upstream(home, None)                         -> $CRYSTALLISE_PROXY_UPSTREAM, config `proxy_upstream`,
                                                            else the home's model (`local` by default)

Both answer in the OpenAI wire format, so the proxy treats them alike:

    await up.complete(body)      -> Reply(status, headers, content)       one JSON document
    await up.open_stream(body)   -> Reply with `chunks`: the SSE bytes     `data: {...}\\n\\n` ... `data: [DONE]`
    await up.embeddings(body)    -> Reply                                 POST /v1/embeddings

A BackendUpstream honours the request's `model`: the configured backend under any of its names,
or (a local upstream) any model pulled into the models folder, each loaded once; another name is
`ModelNotServed` (a 400 naming the models it has). Its embeddings come from the home's embedder.

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
from crystallise.backends import catalog
from crystallise.backends.base import CompletionRequest, Message, approx_tokens
from crystallise.errors import BackendError, ConfigError, CrystalliseError, UserError, ValidationError
from crystallise.engine.home import Home
from crystallise.types import new_id

__all__ = [
    "ENV_UPSTREAM",
    "ENV_UPSTREAM_KEY",
    "BackendUpstream",
    "HttpUpstream",
    "ModelNotServed",
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


class ModelNotServed(ValidationError):
    """The request names a model the home's own backend does not have (answered 400, param `model`)."""

    param, code = "model", "model_not_found"


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

    async def embeddings(self, body: dict[str, Any]) -> Reply:
        try:
            r = await self._client.post("/embeddings", json=body)
        except httpx.HTTPError as e:
            raise self._unavailable(e) from e
        return Reply(r.status_code, _passed(r.headers), r.content)

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
        self._backends: dict[str, Any] = {}
        self._lock = anyio.Lock()

    async def _get(self, spec: str | None = None) -> Any:
        spec = spec or self.spec
        async with self._lock:  # loading a GGUF takes seconds: once, not per racing request
            if spec not in self._backends:
                try:
                    self._backends[spec] = await anyio.to_thread.run_sync(self.home.backend, spec)
                except UserError as e:
                    raise UpstreamUnavailable(f"the proxy's backend {spec!r} cannot start: {e}") from e
        return self._backends[spec]

    async def served(self) -> dict[str, str]:
        """Model name -> backend spec: the configured backend under each of its names, and, for a
        local upstream, every model pulled into the models folder."""
        backend = await self._get()
        names = {self.spec: self.spec, backend.name: self.spec}
        if getattr(backend, "model", None):
            names[str(backend.model)] = self.spec
        if self.spec == "local" or self.spec.startswith("local:"):
            for m in await anyio.to_thread.run_sync(catalog.installed, self.home.models_dir):
                names.setdefault(str(m["name"]), f"local:{m['name']}")
        return names

    async def route(self, model: Any) -> Any:
        """The backend serving `model`, or `ModelNotServed` naming the models there are."""
        served = await self.served()
        if isinstance(model, str) and model in served:
            return await self._get(served[model])
        raise ModelNotServed(
            f"model {model!r} is not served here: the proxy's upstream is the home's own backend "
            f"{self.spec!r}, which has {', '.join(sorted(served))} (GET /v1/models). Ask for one of them, "
            "or start the proxy with `crystallise serve --upstream URL` to forward to a server that has it")

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
        backend = await self.route(body.get("model"))
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
        first = str(getattr(backend, "model", None) or backend.name)
        names = [first] + sorted({n for n, spec in (await self.served()).items() if spec != self.spec} - {first})
        doc = {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "crystallise"}
                                          for n in names]}
        return Reply(200, {"content-type": "application/json"}, json.dumps(doc).encode())

    async def embeddings(self, body: dict[str, Any]) -> Reply:
        """OpenAI's embeddings, from the home's embedder (`context/embed.py`)."""
        embedder = await anyio.to_thread.run_sync(self.home.embedder)
        model = body.get("model")
        if model not in (embedder.name, self.home.embedder_spec):
            raise ModelNotServed(f"embedding model {model!r} is not served here: the home's embedder is "
                                 f"{embedder.name!r} (set CRYSTALLISE_EMBEDDER to change it, or start the proxy "
                                 "with `crystallise serve --upstream URL` to forward embeddings)")
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ValidationError("input must be a string or a non-empty list of strings (token arrays are "
                                  "not accepted by the home's embedder)")
        if body.get("encoding_format") not in (None, "float"):
            raise ValidationError("encoding_format: the home's embedder answers `float` only")
        vectors = await anyio.to_thread.run_sync(embedder.embed, texts)
        dims = body.get("dimensions")
        if dims is not None and dims != embedder.dim:
            raise ValidationError(f"dimensions: the home's embedder {embedder.name!r} has {embedder.dim}, not {dims}")
        tokens = sum(approx_tokens(t) for t in texts)
        doc = {"object": "list", "model": embedder.name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
               "data": [{"object": "embedding", "index": i, "embedding": [float(x) for x in row]}
                        for i, row in enumerate(vectors)]}
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
