"""The web UI's app: server-rendered pages (Jinja2), one small vanilla JS file, no build step.

    app = create_web_app(home, keys, reports_dir=Path("reports"))   # mounted at /ui by crystallise.api

Who is looking: the same org API keys as the HTTP API. `/ui/login` takes a key and keeps it
in an HttpOnly, SameSite=Strict cookie; every page then reads through the same visibility
rules as the API (`crystallise.api.routes_*`), so an org's key shows that org's traces,
items and versions and nothing of another org's. With no keys configured the server is
open on loopback only, exactly like the API.

Forms that change something (revert, feedback, review decisions) carry a CSRF token derived from the cookie
(an HMAC with a per-process secret), checked before anything is written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from crystallise.api import logsafe
from crystallise.api.auth import ADMIN, Forbidden, KeyRing, Principal, is_loopback
from crystallise.api.problems import Problem, lone_surrogate, scrub
from crystallise.engine import access
from crystallise.errors import ArtifactError, ConfigError, NotFoundError, ProtectedError, StoreError, UserError
from crystallise.engine.home import Home

__all__ = ["COOKIE", "LoginRequired", "create_web_app", "csrf_token", "form", "render", "ui_principal"]

log = logging.getLogger("crystallise.web")

COOKIE = "crystallise_key"
STATIC = Path(__file__).parent / "static"


class LoginRequired(Exception):
    """No (valid) key in the cookie: the page answers with a redirect to the login form."""


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _short(value: Any, n: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("crystallise.web", "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=_when, pretty=_pretty, short=_short, q=lambda s: quote(str(s), safe=""))
    return env


async def ui_principal(request: Request) -> Principal:
    """The caller from the cookie (open server: admin for loopback clients); LoginRequired otherwise.
    Async, so that the request's database org scope (`access.enter`) reaches the page's handler."""
    keys: KeyRing = request.app.state.keys
    if keys.open:
        client = request.client.host if request.client else ""
        if is_loopback(client):
            return Principal(org=ADMIN)
        raise Forbidden("this server has no API keys, so its UI only answers on this machine: "
                        "create a key with `crystallise serve --create-key ORG`")
    key = request.cookies.get(COOKIE)
    principal = keys.verify(key) if key else None
    if principal is None:
        raise LoginRequired()
    access.enter(principal)
    return principal


def csrf_token(request: Request) -> str:
    secret: bytes = request.app.state.csrf_secret
    return hmac.new(secret, (request.cookies.get(COOKIE) or "open").encode(), hashlib.sha256).hexdigest()[:40]


async def form(request: Request) -> dict[str, str]:
    """The posted urlencoded form (first value of each field), with its CSRF token checked."""
    body = (await request.body()).decode("utf-8", "replace")
    fields = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
    if not hmac.compare_digest(fields.get("csrf", ""), csrf_token(request)):
        raise Forbidden("the form's security token is missing or stale: reload the page and try again")
    return fields


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    env: Environment = request.app.state.jinja
    who = context.pop("who", None)
    html = env.get_template(template).render(request=request, who=who, csrf=csrf_token(request),
                                             open=request.app.state.keys.open, **context)
    if lone_surrogate(html):  # a row stored before bad input was refused (api/hostile.py): show it repaired
        html = scrub(html)
    return HTMLResponse(html, status_code=status)


def _error(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, "error.html", status=status, status_code=status, message=message)


def shared_secret(home_path: Path) -> bytes:
    """The home's UI secret (HOME/ui-secret, made once, mode 0600): every server process of a fleet
    (`serve --workers N`) signs and checks CSRF tokens with the same one, so a form rendered by one
    process can be posted to another. One that others on the machine could read (group or other
    bits set, e.g. copied in with a loose umask) is replaced, as torn content is: with it, anyone
    who reads it forges the CSRF token of an open (key-less, loopback) UI."""
    path = home_path / "ui-secret"
    for _ in range(3):
        try:
            data = path.read_bytes()
            loose = path.stat().st_mode & 0o077
        except FileNotFoundError:
            data, loose = b"", 0
        if len(data) == 32 and not loose:
            return data
        tmp = home_path / f".ui-secret.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, secrets.token_bytes(32))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            if data:  # torn, foreign or readable by others: replace it
                os.replace(tmp, path)
            else:  # the first process to link wins; the others read its secret
                os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    raise ConfigError(f"cannot keep a 32-byte UI secret in {path}: check that the home is writable")


def create_web_app(home: Home, keys: KeyRing, *, reports_dir: Path | None = None) -> FastAPI:
    """The UI over `home`; `reports_dir` holds `crystallise bench ... --out` folders (default ./reports)."""
    from crystallise.web import jobs, pages, review

    app = FastAPI(title="crystallise UI", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.home, app.state.keys = home, keys
    app.state.reports_dir = Path(reports_dir or "reports").resolve()
    app.state.csrf_secret = shared_secret(Path(home.path))
    app.state.jinja = _environment()
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(pages.router)
    app.include_router(review.router)
    app.include_router(jobs.router)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{request.scope.get('root_path', '')}/login?next={quote(path, safe='')}", 303)

    @app.exception_handler(UserError)
    async def _user(request: Request, exc: UserError) -> Response:
        status = 404 if isinstance(exc, NotFoundError) else 403 if isinstance(exc, Forbidden) else 400
        return _error(request, status, str(exc))

    @app.exception_handler(ArtifactError)
    @app.exception_handler(ProtectedError)
    async def _conflict(request: Request, exc: Exception) -> Response:
        return _error(request, 409, str(exc))

    @app.exception_handler(Problem)  # raised by the API functions the pages call (e.g. 409 already decided)
    async def _problem(request: Request, exc: Problem) -> Response:
        return _error(request, exc.status, exc.detail)

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> Response:
        log.error("store failure on %s: %s", logsafe.route(request), logsafe.redact(exc))
        return _error(request, 503, f"the store failed: {exc}")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        what = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()[:3])
        return _error(request, 422, f"invalid request ({what}): fix the address or the form")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        message = f"no page {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        return _error(request, exc.status_code, message)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s: %s", request.method, logsafe.route(request), logsafe.failure(exc))
        return _error(request, 500, "internal error: see the server log")

    return app
