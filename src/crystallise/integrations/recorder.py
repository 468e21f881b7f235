"""What the integrations share: a trace under construction, keyed by the framework's run ids.

    rec = Recorder(home, agent="support", org="acme", user="u1")
    rec.begin("run-1", name="agent run", input=...)          # the root
    rec.span("run-1", Span(...))                             # as each step ends
    rec.end("run-1", output=..., error=None)                 # written once, fail-open

Ids from the frameworks become crystallise ids by prefix (`tr_`, `sp_`); everything they carry is
data (hostile like any trace: stored, never run).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from crystallise.engine.home import Home
from crystallise.errors import CrystalliseError
from crystallise.types import Span, Trace, now

__all__ = ["Recorder", "epoch"]

log = logging.getLogger("crystallise.integrations")


def epoch(value: Any) -> float | None:
    """An ISO-8601 time (the Agents SDK's) or a number as epoch seconds; None when absent or unreadable."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


@dataclass
class _Open:
    trace: Trace
    spans: list[Span] = field(default_factory=list)


class Recorder:
    """Traces being built, one per root run; `end` writes it (errors logged and counted, never raised)."""

    def __init__(self, home: Home, *, agent: str | None = None, org: str | None = None, user: str | None = None,
                 session: str | None = None) -> None:
        self.home, self.agent, self.org, self.user, self.session = home, agent, org, user, session
        self.written: list[str] = []
        self.errors = 0
        self._open: dict[str, _Open] = {}
        self._lock = threading.Lock()

    def begin(self, key: str, *, trace_id: str, name: str, input: Any = None, agent: str | None = None,
              session: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        trace = Trace(name=name, id=trace_id, agent_id=self.agent or agent or "default", org_id=self.org,
                      user_id=self.user, session_id=self.session or session, input=input,
                      metadata=dict(metadata or {}))
        with self._lock:
            self._open[key] = _Open(trace)

    def is_open(self, key: str) -> bool:
        with self._lock:
            return key in self._open

    def trace_of(self, key: str) -> Trace | None:
        with self._lock:
            entry = self._open.get(key)
        return entry.trace if entry else None

    def span(self, key: str, span: Span) -> None:
        with self._lock:
            entry = self._open.get(key)
            if entry is None:
                return
            span.trace_id = entry.trace.id
            entry.spans.append(span)

    def end(self, key: str, *, output: Any = None, error: str | None = None, ended_at: float | None = None) -> None:
        with self._lock:
            entry = self._open.pop(key, None)
        if entry is None:
            return
        trace = entry.trace
        trace.spans = sorted(entry.spans, key=lambda s: s.started_at)
        trace.ended_at = ended_at or now()
        trace.output = output if output is not None else next(
            (s.output for s in reversed(trace.spans) if s.kind == "llm" and s.output is not None), None)
        if trace.input is None:
            trace.input = next((s.input for s in trace.spans if s.kind == "llm"), None)
        failed = error or next((s.error for s in trace.spans if s.error), None)
        trace.status, trace.error = ("error", failed) if failed else ("ok", None)
        try:
            self.home.store.write_trace(trace)
            self.written.append(trace.id)
        except CrystalliseError:
            self.errors += 1
            log.exception("could not record trace %s from %s", trace.id, trace.metadata.get("framework"))
