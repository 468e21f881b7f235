"""Record runs into a home: `trace()`, and the calls an existing `openai` client makes (`wrap_openai`).

    client = crystallise.wrap_openai(openai.OpenAI(base_url=..., api_key=...))
    with crystallise.trace("chat", agent="support") as t:
        client.chat.completions.create(model="...", messages=[...])   # -> an llm span

Outside a trace, each call gets a trace of its own. Errors are recorded on the span
(and as implicit feedback) and re-raised unchanged; latency and token usage go in
the span's attributes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from crystallise.engine.home import Home
from crystallise.traces.sdk import TraceHandle, check_scope, current_trace, recording
from crystallise.types import Span, now

__all__ = ["trace", "wrap_openai"]


@contextmanager
def trace(
    name: str = "run",
    *,
    agent: str = "default",
    org: str | None = None,
    user: str | None = None,
    session: str | None = None,
    input: Any = None,
    metadata: dict[str, Any] | None = None,
    home: Home | None = None,
) -> Iterator[TraceHandle]:
    """Record one agent run into the home's store (`crystallise.traces.sdk` says how)."""
    check_scope(agent=agent, org=org, user=user)  # a bad label is named before a missing home
    h = home or Home.from_env()
    with recording(h.store, name, agent=agent, org=org, user=user, session=session, input=input,
                   metadata=metadata) as handle:
        yield handle


class _Completions:
    def __init__(self, inner: Any, home: Home | None) -> None:
        self._inner = inner
        self._home = home

    def create(self, **kwargs: Any) -> Any:
        with ExitStack() as stack:
            t = current_trace() or stack.enter_context(
                trace("openai.chat", input=kwargs.get("messages"), home=self._home or Home.from_env())
            )
            span = Span(name="chat " + str(kwargs.get("model", "")), kind="llm", input=kwargs.get("messages"),
                        attributes={"model": kwargs.get("model"), "stream": bool(kwargs.get("stream"))})
            start = time.perf_counter()
            try:
                response = self._inner.create(**kwargs)
            except Exception as e:
                span.error = f"{type(e).__name__}: {e}"
                t.signal("exception", comment=span.error, score=0.0)
                raise
            finally:
                span.ended_at = now()
                span.attributes["latency_ms"] = round((time.perf_counter() - start) * 1000, 3)
                t.add_span(span)
            if not kwargs.get("stream"):
                try:
                    span.output = response.choices[0].message.content
                    usage = getattr(response, "usage", None)
                    if usage is not None:
                        span.attributes["prompt_tokens"] = usage.prompt_tokens
                        span.attributes["completion_tokens"] = usage.completion_tokens
                except (AttributeError, IndexError):
                    pass
                if t.record.name == "openai.chat" and t.output is None:
                    t.output = span.output
            return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Chat:
    def __init__(self, inner: Any, home: Home | None) -> None:
        self._inner = inner
        self.completions = _Completions(inner.completions, home)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Client:
    def __init__(self, inner: Any, home: Home | None) -> None:
        self._inner = inner
        self.chat = _Chat(inner.chat, home)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def wrap_openai(client: Any, *, home: Home | None = None) -> Any:
    """A drop-in proxy of `client` whose chat completions are recorded as llm spans."""
    return _Client(client, home)
