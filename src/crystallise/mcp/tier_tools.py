"""The memory-tier tools (MemGPT's self-editing memory) for MCP clients: engine/tiers.py over the binding.

    core_memory_append(label, text)             a line added to a core block (created on first use)
    core_memory_replace(label, old_text, new_text)   one occurrence replaced (empty new text deletes it)
    core_memory_view()                          the blocks pinned in this scope's packs, with their budgets
    archival_insert(text)                       a passage kept in archival memory (searchable, never pinned)
    archival_search(query, page, page_size)     one page of the relevant archival passages

Edits act for the connection's narrowest scope (the user's, when one is bound) and are recorded as
the model's (`tiers.Editor(person=False, via="mcp", ...)`): a delta with the session as provenance,
instruction-like text refused for blocks and quarantined for archival passages, a block's budget
never exceeded (the error says how to make room).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ToolAnnotations
from pydantic import Field

from crystallise.context import core_blocks as cb
from crystallise.engine import tiers
from crystallise.engine.home import Home
from crystallise.engine.serving import core_blocks
from crystallise.mcp.outputs import ArchivalPage, CoreBlockOut, CoreBlocksOut, ItemOut

__all__ = ["register_tier_tools"]

Label = Annotated[str, Field(pattern=cb.LABEL.pattern, description="The block: 'human' (who the user is), "
                                                                   "'persona' (who you are), or another name.")]


def _block(it: Any) -> CoreBlockOut:
    return {"id": it.id, "label": cb.label_of(it), "level": it.level, "text": it.text, "chars": len(it.text),
            "limit": int(it.meta.get("limit", cb.DEFAULT_LIMIT))}


def register_tier_tools(server: MCPServer, home: Home, scope: Callable[[Context], tuple[Any, str]],
                        call: Callable[[Callable[[], Any]], Any]) -> None:
    """Add the tier tools to `server`; `scope` resolves a call's (binding, session), `call` maps errors."""
    edits = ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=False, openWorldHint=False)
    changes = ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=False, openWorldHint=False)
    reads = ToolAnnotations(readOnlyHint=True, openWorldHint=False)

    def editor(ctx: Context) -> tuple[Any, tiers.Editor]:
        b, session = scope(ctx)
        return b, tiers.Editor(via="mcp", person=False, agent=b.agent, user=b.user, session=session.split("|")[1]
                               if "|" in session else session)

    @server.tool(annotations=edits)
    def core_memory_append(
        label: Label,
        text: Annotated[str, Field(description="A fact to keep in view in every conversation, one line.")],
        ctx: Context,
    ) -> CoreBlockOut:
        """Add a line to a core memory block: facts about the user or yourself that every answer should
        see (name, preferences, ongoing goals). Blocks have a size limit; make room with core_memory_replace."""
        b, ed = editor(ctx)
        return call(lambda: _block(tiers.core_memory_append(label, text, agent=b.agent, org=b.org, user=b.user,
                                                            home=home, editor=ed)))

    @server.tool(annotations=changes)
    def core_memory_replace(
        label: Label,
        old_text: Annotated[str, Field(description="Exact text in the block, occurring once.")],
        new_text: Annotated[str, Field(description="What replaces it; empty to delete it.")],
        ctx: Context,
    ) -> CoreBlockOut:
        """Replace text in a core memory block (correct an outdated fact, or delete one to make room)."""
        b, ed = editor(ctx)
        return call(lambda: _block(tiers.core_memory_replace(label, old_text, new_text, agent=b.agent, org=b.org,
                                                             user=b.user, home=home, editor=ed)))

    @server.tool(annotations=reads)
    def core_memory_view(ctx: Context) -> CoreBlocksOut:
        """The core memory blocks pinned in this conversation's context, with their sizes and limits."""
        b, _ = scope(ctx)
        return call(lambda: {"blocks": [_block(it) for it in core_blocks(home.store, b.agent, b.org, b.user)]})

    @server.tool(annotations=edits)
    def archival_insert(
        text: Annotated[str, Field(description="A passage worth finding later (details, past events).")],
        ctx: Context,
    ) -> ItemOut:
        """Keep a passage in archival memory: unlimited, not shown by default, found with archival_search."""
        b, ed = editor(ctx)

        def run() -> ItemOut:
            it = tiers.archival_insert(text, agent=b.agent, org=b.org, user=b.user, home=home, editor=ed)
            return {"id": it.id, "text": it.text, "kind": it.kind, "level": it.level, "section": it.section,
                    "status": it.status}

        return call(run)

    @server.tool(annotations=reads)
    def archival_search(
        query: Annotated[str, Field(description="What to look for, in words.")],
        ctx: Context,
        page: Annotated[int, Field(ge=0, le=1000, description="0 first; ask for the next while has_more.")] = 0,
        page_size: Annotated[int, Field(ge=1, le=tiers.MAX_PAGE, description="Passages per page.")] = 5,
    ) -> ArchivalPage:
        """Search archival memory, one page at a time, best first."""
        b, _ = scope(ctx)
        return call(lambda: tiers.archival_search(query, agent=b.agent, org=b.org, user=b.user, page=page,
                                                  page_size=page_size, home=home))
