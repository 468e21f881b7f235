"""Implicit extraction when a session ends, without anyone running `crystallise items extract`.

    extract_ended_sessions(home)            # what `crystallise serve` runs every `interval` seconds
    end_session(home, "s-42")               # the SDK's "this conversation is over": extract now

A session has ended when, among the traces recorded since extraction's watermark, one of its
traces says so (`metadata.session_end` true, or an OTel `session.end` attribute mapped there), its
latest trace is older than `idle_s` (default 30 minutes: a chat nobody answers), or the trace has
no session at all (a one-shot run is its own session). When any session has ended, the extraction
learner runs over every trace since its watermark (`engine/extract.run_extraction`: idempotent,
resumable, candidates quarantined until corroborated), so what a user said is considered without a
person starting it. Learning stays off the hot path: the serve loop calls this from a worker
thread, never from a request.

The jobs scheduler, where it exists, calls the same function as its `extract` job (`due` tells it
whether there is work); until then the API app's lifespan runs `SessionExtractor`.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from typing import Any

from crystallise.context.extract import WATERMARK
from crystallise.engine.extract import run_extraction
from crystallise.engine.home import Home
from crystallise.engine.periodic import every
from crystallise.types import now

__all__ = ["IDLE_S", "due", "end_session", "extract_ended_sessions", "running"]

log = logging.getLogger("crystallise.extract")
IDLE_S = 1800.0
SCAN = 5000  # traces looked at per check


_END_MARKS = ("session_end", "session.end")  # top-level metadata keys; only a JSON `true` ends a session


def _ended_explicitly(marks: dict[str, Any]) -> bool:
    return any(marks.get(k) is True for k in _END_MARKS)


def due(home: Home, *, idle_s: float = IDLE_S, at: float | None = None) -> list[str]:
    """Sessions that ended among the traces since the watermark: "session@org" (a session is its org's:
    another org's trace neither ends nor prolongs it), "-" for traces with none."""
    t = now() if at is None else at
    since = home.store.get_watermark(WATERMARK)
    ended: set[str] = set()
    for org, session, last, marks in home.store.sessions_after(after_seq=since, limit=SCAN, marks=_END_MARKS):
        if not session:
            ended.add("-")
        elif t - last >= idle_s or any(_ended_explicitly(m) for m in marks):
            ended.add(session if org is None else f"{session}@{org}")
    return sorted(ended)


def extract_ended_sessions(home: Home, *, idle_s: float = IDLE_S, at: float | None = None) -> dict[str, int]:
    """Run extraction when a session has ended since the last run; returns its totals (empty: nothing due)."""
    sessions = due(home, idle_s=idle_s, at=at)
    if not sessions:
        return {}
    totals = run_extraction(home)
    log.info("session end: extraction over %d trace(s) (%d session(s) ended)", totals["traces"], len(sessions))
    return {**totals, "sessions": len(sessions)}


def end_session(home: Home, session_id: str) -> dict[str, int]:
    """A session is over: extract from everything recorded so far, now (idempotent)."""
    return {**run_extraction(home), "sessions": 1} if session_id else {}


def running(home: Home, *, interval: float = 30.0, idle_s: float = IDLE_S) -> AbstractAsyncContextManager[None]:
    """`extract_ended_sessions` every `interval` seconds in a worker thread while the context is open.
    A failure is logged and retried next time: it never reaches a request."""
    return every(interval, extract_ended_sessions, home, idle_s=idle_s, what="session-end extraction")
