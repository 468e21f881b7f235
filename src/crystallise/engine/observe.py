"""Record runs into a home: `trace()` (sync and async), and an existing `openai` client's calls (`wrap_openai`).

    with crystallise.trace("chat", agent="support") as t:          # or: async with crystallise.trace(...)
        client.chat.completions.create(model="...", messages=[...])   # -> an llm span (engine/openai_wrap.py)

Where the finished trace goes is `engine/tracing.py`'s business: by default a background writer,
so the application pays for building the record only, and a store that is down or slow never
raises into it (fail open). An exception inside the block is recorded and re-raised unchanged.
"""

from __future__ import annotations

from typing import Any

from crystallise.engine.home import Home
from crystallise.engine.openai_wrap import wrap_openai
from crystallise.engine.tracing import default_home, writer_for
from crystallise.traces.sdk import Recording, check_scope, recording

__all__ = ["trace", "wrap_openai"]


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
) -> Recording:
    """Record one agent run into the home's store: `with trace(...) as t:` or `async with trace(...) as t:`
    (`crystallise.traces.sdk` says what is recorded; `async with` never waits on the store)."""
    check_scope(agent=agent, org=org, user=user)  # a bad label is named before a missing home
    h = home or default_home()
    return recording(writer_for(h), name, agent=agent, org=org, user=user, session=session, input=input,
                     metadata=metadata, async_store=writer_for(h, background=True))
