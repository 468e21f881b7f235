"""The async SDK: the same calls, awaited, without blocking the event loop.

    async with crystallise.trace("answer", user="u1", input=q) as t:      # traces: a background writer
        pack = await crystallise.aget_context(user="u1", query=q)
        items = await crystallise.arecall(q, user="u1", k=5)
        t.output = await my_agent(pack.text, q)
    await crystallise.aremember("prefers metric units", user="u1")
    await crystallise.aforget(query="metric", user="u1")

    @crystallise.task
    async def extract_date(text: str) -> DateOut:       # an async def task is awaited
        '''Find the date the text talks about, as ISO 8601.'''

Each call runs its sync twin (same arguments, same result, same errors) in a worker thread
(`asyncio.to_thread`, which carries the caller's context: a span recorded inside joins the
caller's trace). Store reads and commits are blocking I/O; the loop goes on meanwhile.
"""

from __future__ import annotations

import asyncio
from typing import Any

from crystallise.engine.memory import forget, remember
from crystallise.engine.serving import ContextPack, assemble, recall
from crystallise.types import Item

__all__ = ["aforget", "aget_context", "arecall", "aremember"]


async def aremember(text: str, **kwargs: Any) -> Item:
    """`crystallise.remember`, awaited."""
    return await asyncio.to_thread(remember, text, **kwargs)


async def arecall(query: str, **kwargs: Any) -> list[Item]:
    """`crystallise.recall`, awaited."""
    return await asyncio.to_thread(recall, query, **kwargs)


async def aforget(item_id: str | None = None, **kwargs: Any) -> list[Item]:
    """`crystallise.forget`, awaited."""
    return await asyncio.to_thread(forget, item_id, **kwargs)


async def aget_context(**kwargs: Any) -> ContextPack:
    """`crystallise.get_context` (the context pack), awaited."""
    return await asyncio.to_thread(assemble, **kwargs)
