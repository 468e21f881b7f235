"""The MCP server (Model Context Protocol, the official `mcp` SDK): crystallise's memory,
playbook, skills and feedback as tools any MCP client — a coding agent, a chat app — can call.

    crystallise mcp --agent coder --user me          # stdio: the client starts it (docs/mcp.md)
    crystallise serve                                # streamable HTTP at http://127.0.0.1:8400/mcp

    tools.py   the tools over the library, the scope binding, the session's last answer
    http.py    /mcp for `crystallise serve`: the API's key check, scope headers, the SDK's transport

Needs the `mcp` extra (also part of `serve`): pip install 'crystallise[mcp]'.
"""

from __future__ import annotations

try:
    import mcp.server.mcpserver  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the MCP server needs the `mcp` extra ({e.name} is missing): pip install 'crystallise[mcp]'"
    ) from e

from crystallise.mcp.tools import Binding, create_mcp_server

__all__ = ["Binding", "create_mcp_server"]
