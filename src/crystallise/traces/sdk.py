"""Recording runs: `with crystallise.trace(...) as t:` (`engine/observe.py` binds it to a home).

    with crystallise.trace("answer", agent="support", user="u1", input=q) as t:
        pack = crystallise.context(agent="support", user="u1", query=q)   # retrieval span
        answer = my_task(q)                                               # task span (+ llm span)
        t.output = answer
    t.feedback(score=0.0, correction="42")       # later: attached to the stored trace

The active trace lives in a ContextVar, so `@task` calls, context assembly and the
wrapped OpenAI client add their spans to it without being passed it. On leaving the
block the trace goes to the store passed in (`crystallise.trace` passes the home's background
writer, `traces/background.py`, or writes through) — from then on it is acknowledged and
immutable; feedback given afterwards goes the same way on its own. `async with` works too.
An exception inside the block is recorded (status "error" + implicit feedback) and
re-raised.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

from crystallise.errors import ValidationError
from crystallise.types import Feedback, Span, Trace, now

__all__ = ["Recording", "TraceHandle", "TraceWriter", "check_scope", "current_trace", "handoff", "recording"]

class TraceWriter(Protocol):
    """Where a finished run goes: the store's `write_trace` and `add_feedback` (crystallise.store.Store)."""

    def write_trace(self, trace: Trace) -> Any: ...

    def add_feedback(self, feedback: Feedback) -> Any: ...


_current: ContextVar[TraceHandle | None] = ContextVar("crystallise_trace", default=None)


def current_trace() -> TraceHandle | None:
    """The trace being recorded in this context, if any."""
    return _current.get()


class TraceHandle:
    """What `trace()` yields: add spans, set the output, give feedback."""

    def __init__(self, store: TraceWriter, record: Trace) -> None:
        self.store = store
        self.record = record
        self._stack: list[Span] = []
        self.acknowledged = False

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def output(self) -> Any:
        return self.record.output

    @output.setter
    def output(self, value: Any) -> None:
        self.record.output = value

    @contextmanager
    def span(self, name: str, kind: str = "other", *, input: Any = None, **attributes: Any) -> Iterator[Span]:
        """Record a nested step; its latency and any exception are captured."""
        s = Span(name=name, kind=kind, trace_id=self.id, input=input, attributes=dict(attributes))  # type: ignore[arg-type]
        s.parent_id = self._stack[-1].id if self._stack else None
        self._stack.append(s)
        start = time.perf_counter()
        try:
            yield s
        except BaseException as e:
            s.error = f"{type(e).__name__}: {e}"
            raise
        finally:
            s.ended_at = now()
            s.attributes.setdefault("latency_ms", round((time.perf_counter() - start) * 1000, 3))
            self._stack.pop()
            self.record.spans.append(s)

    def add_span(self, span: Span) -> None:
        """Attach an already-finished span (used by wrappers that time calls themselves)."""
        span.trace_id = self.id
        if span.parent_id is None and self._stack:
            span.parent_id = self._stack[-1].id
        self.record.spans.append(span)

    def feedback(
        self,
        score: float | None = None,
        label: str | None = None,
        correction: Any = None,
        comment: str | None = None,
    ) -> Feedback:
        """Explicit feedback: `score` in [0, 1] (1 = success), a `label`, the right answer as
        `correction`. Inside the block it is stored with the trace; afterwards on its own."""
        if score is not None and not (0.0 <= float(score) <= 1.0):
            raise ValidationError(f"feedback score must be between 0 and 1, got {score!r}")
        if score is None and label is None and correction is None and comment is None:
            raise ValidationError("feedback needs at least one of score, label, correction or comment")
        fb = Feedback(trace_id=self.id, score=score, label=label, correction=correction, comment=comment)
        if self.acknowledged:
            self.store.add_feedback(fb)
        self.record.feedback.append(fb)
        return fb

    def signal(self, kind: str, comment: str = "", score: float | None = None) -> None:
        """Implicit feedback (retry, schema_repair, exception, slow) recorded by the SDK."""
        fb = Feedback(trace_id=self.id, score=score, kind=kind, comment=comment, source="implicit")
        if self.acknowledged:
            self.store.add_feedback(fb)
        self.record.feedback.append(fb)


def check_scope(*, agent: Any, org: Any, user: Any) -> None:
    """The scope labels of a run: non-empty strings of at most 200 characters (None for org/user)."""
    for label, value in (("agent", agent), ("org", org), ("user", user)):
        if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > 200):
            raise ValidationError(f"{label} must be a non-empty string of at most 200 characters, got {value!r}")


def handoff(record: Trace) -> Trace:
    """The finished trace as it is handed over: its own lists, so feedback or a late span added to
    the handle afterwards cannot change (or double) what a background writer has yet to store."""
    return dataclasses.replace(record, spans=list(record.spans), feedback=list(record.feedback),
                               metadata=dict(record.metadata))


class Recording:
    """One run being recorded: `with` it, or `async with` it (what `recording()` and `crystallise.trace` return).

    `store` takes the finished trace on a plain `with`; `async_store` (default: `store`, called in a
    worker thread) on `async with`, so an event loop never waits on a write. The handle's later
    feedback goes to the same place as its trace.
    """

    def __init__(self, store: TraceWriter, record: Trace, *, async_store: TraceWriter | None = None) -> None:
        self.store = store
        self.async_store = async_store
        self.record = record
        self.handle: TraceHandle | None = None
        self._token: Any = None
        self._start = 0.0

    def _enter(self, store: TraceWriter) -> TraceHandle:
        if self.handle is not None:
            raise ValidationError("a trace context records one run: call crystallise.trace(...) again for another")
        self.handle = TraceHandle(store, self.record)
        self._token = _current.set(self.handle)
        self._start = time.perf_counter()
        return self.handle

    def _finish(self, error: BaseException | None) -> TraceHandle:
        handle, record = self.handle, self.record
        if handle is None:
            raise ValidationError("a trace context was exited before it was entered")
        if error is not None:
            record.status = "error"
            record.error = f"{type(error).__name__}: {error}"
            record.metadata["traceback"] = "".join(
                traceback.format_exception(type(error), error, error.__traceback__, limit=8))
            handle.signal("exception", comment=record.error, score=0.0)
        _current.reset(self._token)
        record.ended_at = now()
        record.metadata.setdefault("latency_ms", round((time.perf_counter() - self._start) * 1000, 3))
        return handle

    def __enter__(self) -> TraceHandle:
        return self._enter(self.store)

    def __exit__(self, exc_type: Any, error: BaseException | None, tb: Any) -> None:
        handle = self._finish(error)
        handle.store.write_trace(handoff(self.record))
        handle.acknowledged = True

    async def __aenter__(self) -> TraceHandle:
        return self._enter(self.async_store or self.store)

    async def __aexit__(self, exc_type: Any, error: BaseException | None, tb: Any) -> None:
        handle = self._finish(error)
        if self.async_store is None:
            await asyncio.to_thread(handle.store.write_trace, handoff(self.record))
        else:
            handle.store.write_trace(handoff(self.record))  # a background writer: returns at once
        handle.acknowledged = True


def recording(
    store: TraceWriter,
    name: str = "run",
    *,
    agent: str = "default",
    org: str | None = None,
    user: str | None = None,
    session: str | None = None,
    input: Any = None,
    metadata: dict[str, Any] | None = None,
    async_store: TraceWriter | None = None,
) -> Recording:
    """Record one agent run into `store` (see the module docstring; `crystallise.trace` picks the home's)."""
    check_scope(agent=agent, org=org, user=user)
    record = Trace(
        name=name, agent_id=agent, org_id=org, user_id=user, session_id=session, input=input, metadata=metadata or {}
    )
    return Recording(store, record, async_store=async_store)
