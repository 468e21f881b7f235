"""`wrap_openai`: record the chat completions an existing `openai` client makes, sync or async.

    client = crystallise.wrap_openai(openai.OpenAI(base_url=..., api_key=...))    # or openai.AsyncOpenAI
    with crystallise.trace("chat", agent="support") as t:
        client.chat.completions.create(model="m", messages=[...])                  # -> an llm span
        for chunk in client.chat.completions.create(model="m", messages=[...], stream=True):
            ...                                                                    # -> an llm span once it ends
        raw = client.chat.completions.with_raw_response.create(model="m", messages=[...])   # recorded too

What each call records (one `llm` span; outside a trace, a trace `openai.chat` of its own):

    output              the message text; for a stream, the text assembled from its chunks
    attributes          model, stream, latency_ms, prompt/completion tokens (when the server says),
                        finish_reason, retries (the client's own retries), time_to_first_chunk_ms
    implicit feedback   exception  the call failed (recorded, then re-raised unchanged)
                        retry      the client retried it (429/5xx/timeouts: `retries_taken`), or the
                                   same request was sent again in this trace (the app retried)
                        latency    it took longer than `slow_ms` (default 20 s)

A stream's span is finished when the stream is read to its end, closed, or fails; read it inside
the trace block (a span that ends after its trace was handed over is not added). Every call
goes through `with_raw_response`, so the client's retry count is known; the caller gets exactly
what the unwrapped client would return.
"""

from __future__ import annotations

import hashlib
import json
import time
import weakref
from collections.abc import Callable
from typing import Any

from crystallise.engine.home import Home
from crystallise.engine.tracing import default_home, writer_for
from crystallise.traces.sdk import TraceHandle, current_trace, handoff
from crystallise.types import Span, Trace, now

__all__ = ["SLOW_MS", "wrap_openai"]

SLOW_MS = 20_000.0

# Request fingerprints seen per trace: the same request twice in one run is an application retry.
_seen: weakref.WeakKeyDictionary[TraceHandle, set[str]] = weakref.WeakKeyDictionary()


def _fingerprint(kwargs: dict[str, Any]) -> str:
    key = {k: kwargs.get(k) for k in ("model", "messages", "tools", "response_format")}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


class _Call:
    """One recorded call: its span, the trace it belongs to, and how to finish both."""

    def __init__(self, home: Home | None, kwargs: dict[str, Any], slow_ms: float, background: bool) -> None:
        self.kwargs = kwargs
        self.slow_ms = slow_ms
        self.parent = current_trace()
        if self.parent is None:  # a trace of its own, written when the call (or its stream) ends
            h = home or default_home()
            record = Trace(name="openai.chat", input=kwargs.get("messages"))
            self.handle = TraceHandle(writer_for(h, background=True if background else None), record)
        else:
            self.handle = self.parent
        self.span = Span(name="chat " + str(kwargs.get("model", "")), kind="llm", input=kwargs.get("messages"),
                         attributes={"model": kwargs.get("model"), "stream": bool(kwargs.get("stream"))})
        self.start = time.perf_counter()
        self.first_chunk: float | None = None
        self.done = False
        seen = _seen.setdefault(self.handle, set())
        fp = _fingerprint(kwargs)
        if fp in seen:
            self.handle.signal("retry", comment="the same request was sent again in this trace")
        seen.add(fp)

    def retried(self, n: int) -> None:
        if n:
            self.span.attributes["retries"] = n
            self.handle.signal("retry", comment=f"the OpenAI client retried the call {n} time(s)")

    def completed(self, response: Any) -> None:
        """Record a (non-streamed) ChatCompletion."""
        try:
            choice = response.choices[0]
            self.span.output = choice.message.content
            self.span.attributes["finish_reason"] = choice.finish_reason
        except (AttributeError, IndexError, TypeError):
            pass
        self.usage(getattr(response, "usage", None))
        self.finish()

    def usage(self, usage: Any) -> None:
        if usage is not None:
            for name in ("prompt_tokens", "completion_tokens"):
                value = getattr(usage, name, None)
                if value is not None:
                    self.span.attributes[name] = value

    def finish(self, error: BaseException | None = None, *, abandoned: bool = False) -> None:
        if self.done:
            return
        self.done = True
        latency = (time.perf_counter() - self.start) * 1000
        self.span.ended_at = now()
        self.span.attributes["latency_ms"] = round(latency, 3)
        if self.first_chunk is not None:
            self.span.attributes["time_to_first_chunk_ms"] = round((self.first_chunk - self.start) * 1000, 3)
        if error is not None:
            self.span.error = f"{type(error).__name__}: {error}"
            self.handle.signal("exception", comment=self.span.error, score=0.0)
        if abandoned:
            self.span.attributes["abandoned"] = True
        if latency > self.slow_ms:
            self.handle.signal("latency", comment=f"the call took {latency:.0f} ms (over {self.slow_ms:.0f} ms)")
        if self.parent is not None:
            if self.parent.acknowledged:
                return  # the trace was handed over before the stream ended: too late to add to it
            self.parent.add_span(self.span)
            if self.parent.record.name == "openai.chat" and self.parent.output is None:
                self.parent.output = self.span.output
            return
        record = self.handle.record
        self.handle.add_span(self.span)
        record.output = self.span.output
        if error is not None:
            record.status, record.error = "error", self.span.error
        record.ended_at = now()
        record.metadata["latency_ms"] = round(latency, 3)
        self.handle.store.write_trace(handoff(record))
        self.handle.acknowledged = True


class _Assembler:
    """Collects a stream's chunks into the text, finish reason and usage it amounts to."""

    def __init__(self, call: _Call) -> None:
        self.call = call
        self.parts: list[str] = []
        self.tool_calls: dict[int, dict[str, str]] = {}

    def add(self, chunk: Any) -> None:
        if self.call.first_chunk is None:
            self.call.first_chunk = time.perf_counter()
        self.call.usage(getattr(chunk, "usage", None))
        for choice in getattr(chunk, "choices", None) or []:
            if getattr(choice, "index", 0) != 0:
                continue
            delta = getattr(choice, "delta", None)
            if delta is not None:
                if getattr(delta, "content", None):
                    self.parts.append(delta.content)
                for tc in getattr(delta, "tool_calls", None) or []:
                    slot = self.tool_calls.setdefault(getattr(tc, "index", 0), {"name": "", "arguments": ""})
                    fn = getattr(tc, "function", None)
                    if fn is not None:
                        slot["name"] += getattr(fn, "name", None) or ""
                        slot["arguments"] += getattr(fn, "arguments", None) or ""
            if getattr(choice, "finish_reason", None):
                self.call.span.attributes["finish_reason"] = choice.finish_reason

    def end(self, error: BaseException | None = None, *, abandoned: bool = False) -> None:
        if self.call.done:
            return
        self.call.span.output = "".join(self.parts) if self.parts or not self.tool_calls else None
        if self.tool_calls:
            self.call.span.attributes["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        self.call.finish(error, abandoned=abandoned)


class _Stream:
    """The client's Stream, recorded as it is read (iterate, `with`, `close()` as usual)."""

    def __init__(self, inner: Any, call: _Call) -> None:
        self._inner = inner
        self._acc = _Assembler(call)

    def __iter__(self) -> Any:
        try:
            for chunk in self._inner:
                self._acc.add(chunk)
                yield chunk
        except BaseException as e:
            self._acc.end(e)
            raise
        self._acc.end()

    def __next__(self) -> Any:
        try:
            chunk = next(self._inner)
        except StopIteration:
            self._acc.end()
            raise
        except BaseException as e:
            self._acc.end(e)
            raise
        self._acc.add(chunk)
        return chunk

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._acc.end(abandoned=not self._acc.call.done)
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _AsyncStream(_Stream):
    """The client's AsyncStream, recorded as it is read (`async for`, `async with`, `await close()`)."""

    async def __aiter__(self) -> Any:
        try:
            async for chunk in self._inner:
                self._acc.add(chunk)
                yield chunk
        except BaseException as e:
            self._acc.end(e)
            raise
        self._acc.end()

    async def __anext__(self) -> Any:
        try:
            chunk = await self._inner.__anext__()
        except StopAsyncIteration:
            self._acc.end()
            raise
        except BaseException as e:
            self._acc.end(e)
            raise
        self._acc.add(chunk)
        return chunk

    async def __aenter__(self) -> _AsyncStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:  # type: ignore[override]
        self._acc.end(abandoned=not self._acc.call.done)
        await self._inner.close()


class _Raw:
    """A raw response whose `parse()` gives the recorded stream (the rest is the client's own)."""

    def __init__(self, inner: Any, parsed: Any) -> None:
        self._inner = inner
        self._parsed = parsed

    def parse(self, **kwargs: Any) -> Any:
        return self._parsed if not kwargs else self._inner.parse(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Completions:
    def __init__(self, inner: Any, home: Home | None, slow_ms: float, is_async: bool, raw: bool = False) -> None:
        self._inner = inner
        self._home = home
        self._slow_ms = slow_ms
        self._async = is_async
        self._raw = raw

    @property
    def with_raw_response(self) -> _Completions:
        return _Completions(self._inner, self._home, self._slow_ms, self._async, raw=True)

    def _outcome(self, call: _Call, raw: Any, fallback: Any, stream_type: type[_Stream]) -> Any:
        """What the caller gets: the parsed value (or the raw response), recorded."""
        if raw is None:  # a client without with_raw_response: the plain value
            value = fallback
        else:
            call.retried(int(getattr(raw, "retries_taken", 0) or 0))
            value = raw.parse()
        if call.kwargs.get("stream"):
            wrapped = stream_type(value, call)
            return _Raw(raw, wrapped) if self._raw and raw is not None else wrapped
        call.completed(value)
        return raw if self._raw and raw is not None else value

    def create(self, **kwargs: Any) -> Any:
        if self._async:
            return self._acreate(**kwargs)
        call = _Call(self._home, kwargs, self._slow_ms, background=False)
        raw_create: Callable[..., Any] | None = getattr(getattr(self._inner, "with_raw_response", None),
                                                         "create", None)
        try:
            raw = raw_create(**kwargs) if raw_create is not None else None
            plain = self._inner.create(**kwargs) if raw_create is None else None
            return self._outcome(call, raw, plain, _Stream)
        except BaseException as e:
            call.finish(e)
            raise

    async def _acreate(self, **kwargs: Any) -> Any:
        call = _Call(self._home, kwargs, self._slow_ms, background=True)
        raw_create = getattr(getattr(self._inner, "with_raw_response", None), "create", None)
        try:
            raw = await raw_create(**kwargs) if raw_create is not None else None
            plain = await self._inner.create(**kwargs) if raw_create is None else None
            return self._outcome(call, raw, plain, _AsyncStream)
        except BaseException as e:
            call.finish(e)
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Chat:
    def __init__(self, inner: Any, home: Home | None, slow_ms: float, is_async: bool) -> None:
        self._inner = inner
        self.completions = _Completions(inner.completions, home, slow_ms, is_async)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Client:
    def __init__(self, inner: Any, home: Home | None, slow_ms: float) -> None:
        self._inner = inner
        is_async = type(inner).__name__.startswith("Async")
        self.chat = _Chat(inner.chat, home, slow_ms, is_async)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def wrap_openai(client: Any, *, home: Home | None = None, slow_ms: float = SLOW_MS) -> Any:
    """A drop-in proxy of an `openai.OpenAI` or `openai.AsyncOpenAI` client whose chat completions
    (plain, streamed, `with_raw_response`) are recorded as llm spans (see the module docstring)."""
    return _Client(client, home, slow_ms)
