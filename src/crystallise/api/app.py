"""The HTTP API app: a thin edge over the library (parse, call, serialise).

    from crystallise.api import create_app
    app = create_app(Home.open("/srv/crystallise"))        # any ASGI server; `crystallise serve` uses uvicorn

Layers of one request, outside in:

    BodyLimit          413 before an oversized body is read (limits.py)
    StrictJson         422 for NaN/Infinity or lone surrogates in any JSON body, 400 for a NUL in a URL (hostile.py)
    auth               Authorization: Bearer KEY -> Principal (deps.py, auth.py)
    route              pydantic parses -> library call -> dataclass/pydantic out (routes_*.py)
    (POST /v1/traces: a plainly valid request is served before all of the above, fastpath.py)
    problem handlers   every error -> RFC 9457 problem details (problems.py)

`/otlp` is the OTLP/HTTP receiver (otlp.py), its own app mounted here; `/mcp` the MCP tools over
streamable HTTP (crystallise.mcp.http), when the `mcp` extra is installed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute
from fastapi.responses import RedirectResponse

from crystallise.api import (
    proxy,
    proxy_responses,
    routes_changesets,
    routes_context,
    routes_dream,
    routes_memories,
    routes_jobs,
    routes_review,
    routes_traces,
    routes_versions,
)
from crystallise.api.auth import KeyRing
from crystallise.api.deps import reject_unknown_query
from crystallise.api.docs_offline import install_docs
from crystallise.api.fastpath import IngestFastPath
from crystallise.api.hostile import SafeJSONResponse, StrictJson
from crystallise.api.limits import DEFAULT_MAX_BODY, BodyLimit
from crystallise.api.otlp import create_otlp_app, periodic_flush
from crystallise.api.problems import document_problems, install_handlers
from crystallise.api.links import add_links
from crystallise.api.proxy_upstream import resolve_upstream
from crystallise.api.schemas import Health
from crystallise.version import __version__
from crystallise.engine import session_end
from crystallise.engine.home import Home
from crystallise.engine.jobs import InProcessExecutor
from crystallise.engine.scheduler import LearnPolicy, Scheduler
from crystallise.store.group import GroupCommit

__all__ = ["OTLP_PREFIX", "UI_PREFIX", "create_app"]

log = logging.getLogger("crystallise.api")

OTLP_PREFIX = "/otlp"
MCP_PATH = "/mcp"
UI_PREFIX = "/ui"
PROXY_PATHS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings")
DESCRIPTION = """\
Record agent runs, read what crystallise learned, and undo it.

* Authenticate with `Authorization: Bearer KEY` (keys: `crystallise serve --create-key ORG`).
  An org's key only ever reads and writes its own org's data.
* Errors are RFC 9457 problem details (`application/problem+json`).
* OpenTelemetry exporters: `POST /otlp/v1/traces` (protobuf or JSON; OTLP/HTTP).
* OpenAI clients: base URL `http://HOST:PORT/v1`, the crystallise key as the API key
  (`POST /v1/chat/completions`: the learned context is injected and the call recorded).
"""


def create_app(
    home: Home,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    max_otlp_body_bytes: int = 8 << 20,
    otlp_flush_after_s: float = 300.0,
    upstream: str | None = None,
    max_proxy_body_bytes: int = 8 << 20,
    reports_dir: str | None = None,
    mcp: Callable[[Home], Any] | None = None,
    ui: Callable[[Home, KeyRing, Path], Any] | None = None,
    extract_every_s: float | None = None,
    run_jobs: bool = False,
    learn: bool = False,
    executor: Callable[[Home], Any] | None = None,
) -> FastAPI:
    """The API over `home`; OpenAPI at `/openapi.json`, interactive docs at `/docs`.

    `max_body_bytes` caps JSON bodies (413 above it); OTLP batches get `max_otlp_body_bytes`.
    Spans whose root span has not arrived wait up to `otlp_flush_after_s` (see otlp_spool.py).
    `upstream` is where `/v1/chat/completions` forwards: an http(s) URL or a backend spec
    (default: $CRYSTALLISE_PROXY_UPSTREAM, the config's `proxy_upstream`, the home's model); chat
    bodies get `max_proxy_body_bytes`. `reports_dir` holds the bench reports the web UI lists.
    `mcp(home)` makes the endpoint served at /mcp (None: no MCP), `ui(home, keys, reports)` the web
    UI mounted at /ui (None: no UI); `crystallise.server.create_app` passes both.
    `run_jobs`: run queued learning jobs on a thread of this process (engine/jobs.InProcessExecutor);
    `learn`: also queue them on evidence (engine/scheduler.py, unless the config's "learn" is off) —
    extraction when a session ends among them. `crystallise serve` turns both on (`--no-learn`: the
    scheduler off). Without a scheduler, `extract_every_s` runs extraction that often when a session
    has ended (engine/session_end.py). `executor(home)`: another
    executor for the jobs (a context manager: `crystallise.scale.RaySupervisor`, `serve --engine ray`).
    """
    keys = KeyRing(home.path)
    home.store  # noqa: B018 - open (and migrate) the store once, before requests race to do it
    otlp = create_otlp_app(home, keys, flush_after_s=otlp_flush_after_s, max_body_bytes=max_otlp_body_bytes)
    chat_upstream = resolve_upstream(home, upstream)
    mcp_endpoint = mcp(home) if mcp is not None else None

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if keys.open:
            log.warning("no API keys configured: the API is OPEN to anyone who can reach it; "
                        "create one with `crystallise serve --create-key ORG`")
        async with periodic_flush(otlp.state.ingestor), mcp_endpoint.run() if mcp_endpoint else _nothing(), \
                session_end.running(home, interval=extract_every_s) if extract_every_s else _nothing():
            with contextlib.ExitStack() as stack:
                if run_jobs or learn:
                    app.state.executor = stack.enter_context(
                        executor(home) if executor is not None else InProcessExecutor(home))
                if learn:
                    stack.enter_context(Scheduler(home, LearnPolicy.from_config(home.config))
                                        .running(app.state.executor))
                try:
                    yield
                finally:
                    await chat_upstream.aclose()

    app = FastAPI(
        title="crystallise",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_query)],
        default_response_class=SafeJSONResponse,  # a stored NaN or lone surrogate never makes a read 500
        docs_url=None, redoc_url=None,  # served offline instead (docs_offline.py)
    )
    install_docs(app, title="crystallise")
    app.state.home, app.state.keys, app.state.upstream = home, keys, chat_upstream
    app.state.trace_writer = GroupCommit(home.store)
    install_handlers(app)
    _document_problems(app)
    app.include_router(routes_traces.router)
    app.include_router(routes_context.router)
    app.include_router(routes_versions.router)
    app.include_router(routes_changesets.router)
    app.include_router(routes_review.router)
    app.include_router(routes_dream.router)
    app.include_router(routes_memories.router)
    app.include_router(routes_jobs.router)
    app.include_router(proxy.router)
    app.include_router(proxy_responses.router)

    @app.get("/v1/health", response_model=Health, tags=["meta"], summary="Liveness (no key needed)")
    def health() -> Health:
        return Health(version=__version__, open=keys.open)

    app.mount(OTLP_PREFIX, otlp)
    if mcp_endpoint is not None:  # the MCP tools over streamable HTTP (crystallise.mcp.http)
        app.add_route(MCP_PATH, mcp_endpoint, methods=["GET", "POST", "DELETE"], include_in_schema=False)
    if ui is not None:
        _mount_ui(app, ui(home, keys, Path(reports_dir or home.config.get("reports_dir") or "reports")))

    def limit_for(path: str) -> int:
        if path.startswith(OTLP_PREFIX + "/"):
            return max_otlp_body_bytes
        return max_proxy_body_bytes if path in PROXY_PATHS else max_body_bytes

    app.add_middleware(StrictJson)  # inside BodyLimit: an oversized body is refused before it is buffered
    app.add_middleware(BodyLimit, limit_for=limit_for)
    ingest = next(r for r in routes_traces.router.routes if isinstance(r, APIRoute)
                  and r.path == routes_traces.INGEST_PATH and "POST" in r.methods)
    app.add_middleware(IngestFastPath, route=ingest, limit=limit_for(ingest.path))  # outermost (fastpath.py)
    return app


def _document_problems(app: FastAPI) -> None:
    """/openapi.json declares the problem-details errors every route answers (problems.py)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_links(document_problems(generate()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


@contextlib.asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield


def _mount_ui(app: FastAPI, ui: Any) -> None:
    """The web UI at /ui; `/` sends browsers there."""

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(UI_PREFIX + "/", status_code=307)

    app.mount(UI_PREFIX, ui)
