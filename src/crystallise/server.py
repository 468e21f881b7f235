"""The whole HTTP server: the API with the MCP endpoint at /mcp and the web UI at /ui.

    from crystallise.server import create_app
    app = create_app(Home.open(".crystallise"))       # what `crystallise serve` runs

The API (`crystallise.api`) knows nothing of the UI or MCP: both sit above it (they use its auth
and problem details) and are composed here, the one module that sees all three.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from crystallise.api.app import create_app as create_api_app
from crystallise.api.auth import KeyRing
from crystallise.engine.home import Home
from crystallise.web import create_web_app

try:  # the MCP tools need the `mcp` extra (part of `serve`); without it there is no /mcp
    from crystallise.mcp.http import McpEndpoint
except ImportError as _e:  # pragma: no cover - depends on the installed extras
    McpEndpoint = None
    _MCP_MISSING: ImportError | None = _e
else:
    _MCP_MISSING = None

__all__ = ["create_app"]

log = logging.getLogger("crystallise.api")


def _mcp(home: Home) -> Any:
    if McpEndpoint is None:
        log.info("no MCP endpoint at /mcp: %s", _MCP_MISSING)
        return None
    return McpEndpoint(home)


def _ui(home: Home, keys: KeyRing, reports: Path) -> Any:
    return create_web_app(home, keys, reports_dir=reports)


def create_app(home: Home, **options: Any) -> FastAPI:
    """The API over `home` with /mcp and /ui (`crystallise.api.app.create_app` lists the options)."""
    return create_api_app(home, mcp=_mcp, ui=_ui, **options)
