"""`every`: a function run in a worker thread at an interval while an async context is open.

    async with every(30.0, extract_ended_sessions, home, what="session-end extraction"):
        ...   # the server runs; a failure is logged and tried again next time, never raised

Used by the server's background chores (engine/session_end.py, api/otlp.py's stale-trace flush).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

__all__ = ["every"]

log = logging.getLogger("crystallise.engine")


@contextlib.asynccontextmanager
async def every(interval: float, fn: Callable[..., Any], *args: Any, what: str, **kwargs: Any) -> AsyncIterator[None]:
    """Run `fn(*args, **kwargs)` in a worker thread every `interval` seconds until the context closes."""
    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(fn, *args, **kwargs)
            except Exception:  # noqa: BLE001 - a background chore must not die on one bad run
                log.exception("%s failed; trying again in %.0f s", what, interval)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
