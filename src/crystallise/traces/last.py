"""The id of the trace the last `@task` call in this context was recorded in.

    answer = extract_date("Meeting moved to March 3rd")
    crystallise.score(crystallise.last_trace_id(), correction={"date": "2024-03-03"})

A context variable (per thread, per asyncio task), so concurrent callers never see each other's
ids. Inside an explicit `with crystallise.trace(...) as t:` the id is `t.id`, the same trace.
"""

from __future__ import annotations

import contextvars

__all__ = ["last_trace_id", "set_last_trace_id"]

_LAST: contextvars.ContextVar[str | None] = contextvars.ContextVar("crystallise_last_trace", default=None)


def set_last_trace_id(trace_id: str) -> None:
    _LAST.set(trace_id)


def last_trace_id() -> str | None:
    """The trace id of the last `@task` call made in this context (None before the first)."""
    return _LAST.get()
