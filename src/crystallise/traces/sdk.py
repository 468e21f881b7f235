"""Recording runs: `with crystallise.trace(...) as t:` (`engine/observe.py` binds it to a home).

    with crystallise.trace("answer", agent="support", user="u1", input=q) as t:
        pack = crystallise.context(agent="support", user="u1", query=q)   # retrieval span
        answer = my_task(q)                                               # task span (+ llm span)
        t.output = answer
    t.feedback(score=0.0, correction="42")       # later: attached to the stored trace

The active trace lives in a ContextVar, so `@task` calls, context assembly and the
wrapped OpenAI client add their spans to it without being passed it. On leaving the
block the trace is written to the store in one transaction — from then on it is
acknowledged and immutable; feedback given afterwards is stored on its own.
An exception inside the block is recorded (status "error" + implicit feedback) and
re-raised.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

from crystallise.errors import ValidationError
from crystallise.types import Feedback, Span, Trace, now

__all__ = ["TraceHandle", "TraceWriter", "check_scope", "current_trace", "recording"]

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


@contextmanager
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
) -> Iterator[TraceHandle]:
    """Record one agent run into `store` (see the module docstring; `crystallise.trace` picks the home's)."""
    check_scope(agent=agent, org=org, user=user)
    record = Trace(
        name=name, agent_id=agent, org_id=org, user_id=user, session_id=session, input=input, metadata=metadata or {}
    )
    handle = TraceHandle(store, record)
    token = _current.set(handle)
    start = time.perf_counter()
    try:
        yield handle
    except BaseException as e:
        record.status = "error"
        record.error = f"{type(e).__name__}: {e}"
        record.metadata["traceback"] = traceback.format_exc(limit=8)
        handle.signal("exception", comment=record.error, score=0.0)
        raise
    finally:
        _current.reset(token)
        record.ended_at = now()
        record.metadata.setdefault("latency_ms", round((time.perf_counter() - start) * 1000, 3))
        store.write_trace(record)
        handle.acknowledged = True
