"""The whole HTTP server: the API with the MCP endpoint at /mcp and the web UI at /ui.

    from crystallise.server import create_app
    app = create_app(Home.open(".crystallise"))       # what `crystallise serve` runs

The API (`crystallise.api`) knows nothing of the UI or MCP: both sit above it (they use its auth
and problem details) and are composed here, the one module that sees all three.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from crystallise.api.app import create_app as create_api_app
from crystallise.api.auth import KeyRing
from crystallise.config import ENV_SERVE_SPEC, env
from crystallise.engine.home import Home
from crystallise.scale.ray_exec import need_ray
from crystallise.scale.supervisor import RaySupervisor
from crystallise.web import create_web_app

try:  # the MCP tools need the `mcp` extra (part of `serve`); without it there is no /mcp
    from crystallise.mcp.http import McpEndpoint
except ImportError as _e:  # pragma: no cover - depends on the installed extras
    McpEndpoint = None
    _MCP_MISSING: ImportError | None = _e
else:
    _MCP_MISSING = None

__all__ = ["create_app", "fleet_app"]

log = logging.getLogger("crystallise.api")


def _mcp(home: Home) -> Any:
    if McpEndpoint is None:
        log.info("no MCP endpoint at /mcp: %s", _MCP_MISSING)
        return None
    return McpEndpoint(home)


def _ui(home: Home, keys: KeyRing, reports: Path) -> Any:
    return create_web_app(home, keys, reports_dir=reports)


def create_app(home: Home, *, engine: str = "inprocess", ray_address: str | None = None, **options: Any) -> FastAPI:
    """The API over `home` with /mcp and /ui (`crystallise.api.app.create_app` lists the options);
    `engine="ray"` runs its learning jobs on the Ray cluster at `ray_address` (crystallise.scale): the Ray
    driver lives in a child process that `RaySupervisor` restarts, so the API outlives the cluster's head."""
    if engine == "ray":
        need_ray()  # the ImportError naming the `scale` extra, before the server starts
        options["executor"] = lambda h: RaySupervisor(h, address=ray_address)
    elif engine != "inprocess":
        raise ValueError(f"unknown engine {engine!r}: use 'inprocess' or 'ray'")
    return create_api_app(home, mcp=_mcp, ui=_ui, **options)


def fleet_app() -> FastAPI:
    """One process of `crystallise serve --workers N` (uvicorn imports this factory in each worker).

    The parent passes the home and the options as JSON in CRYSTALLISE_SERVE_SPEC. Nothing a process
    keeps can disagree with its siblings: keys are re-read from the home's file on change, the UI's
    CSRF secret is the home's (web/app.py), the OTLP spool locks each trace across processes, and
    learned state lives in the store and the artifact repository (docs/deploy.md)."""
    raw = env(ENV_SERVE_SPEC)
    if not raw:
        raise RuntimeError(f"{ENV_SERVE_SPEC} is not set: start the fleet with `crystallise serve --workers N`")
    spec = json.loads(raw)
    return create_app(Home.open(spec.pop("home")), **spec)
