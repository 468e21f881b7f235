"""Streamable HTTP for the MCP tools, mounted by `crystallise serve` at `/mcp`.

    endpoint = McpEndpoint(home)            # an ASGI app; create_app routes /mcp to it
    async with endpoint.run(): ...          # the SDK's session manager, inside the app's lifespan

One request, outside in:

    key       `Authorization: Bearer KEY`, checked by the HTTP API's own `get_principal`
              (401 problem details for a missing or unknown key, before the SDK sees anything)
    origin    with no keys configured (open, loopback only) the Host and any Origin must be
              loopback too, so a web page cannot reach the tools through DNS rebinding
    scope     per tool call: `X-Crystallise-Agent` (default "default"), `X-Crystallise-Org`,
              `X-Crystallise-User`; an org key forces its org and a user-bound key its user
              (`Principal.write_org` / `write_user`), so naming another org is a tool error
    session   an `Mcp-Session-Id` is bound to the key that opened it (`SessionOwners`): another key
              naming it -- to call tools in it or to DELETE it -- gets the 404 of an unknown session
    SDK       `StreamableHTTPSessionManager.handle_request`

A client (Python SDK):

    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    http = httpx2.AsyncClient(headers={"Authorization": "Bearer cr_...", "X-Crystallise-User": "u1"},
                              timeout=httpx2.Timeout(30, read=300))   # the SDK's own MCP timeouts
    async with Client(streamable_http_client("http://127.0.0.1:8400/mcp", http_client=http)) as c:
        await c.call_tool("remember", {"text": "I prefer tabs"})
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from mcp.server.mcpserver import Context
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from crystallise.api.auth import Principal, is_loopback
from crystallise.api.deps import get_principal
from crystallise.api.problems import Problem, problem_response
from crystallise.errors import ValidationError
from crystallise.engine import access
from crystallise.engine.home import Home
from crystallise.mcp.tools import PRINCIPAL_KEY, SCOPE_HEADERS, Binding, Sessions, create_mcp_server

__all__ = ["McpEndpoint", "SessionOwners", "binding_for"]


def binding_for(principal: Principal, headers: Any) -> Binding:
    """The scope of one HTTP tool call: the scope headers, with the key's org and user forced."""
    agent = headers.get(SCOPE_HEADERS["agent"]) or "default"
    org = principal.write_org(headers.get(SCOPE_HEADERS["org"]) or None)
    user = principal.write_user(headers.get(SCOPE_HEADERS["user"]) or None)
    return Binding(agent=agent, org=org, user=user).validate()


def _resolve(ctx: Context) -> tuple[Binding, str]:
    request = ctx.request_context.request
    principal = getattr(request, "scope", {}).get(PRINCIPAL_KEY) if request is not None else None
    if not isinstance(principal, Principal):  # only reachable if something bypassed McpEndpoint
        raise ValidationError("this MCP call carries no verified API key: connect through /mcp")
    b = binding_for(principal, request.headers)
    # The SDK runs each tool call in its own task, outside the request's context: the database's org
    # line (PostgreSQL row-level security) is entered here, for this call, as the HTTP API does.
    access.enter(principal)
    session = request.headers.get("mcp-session-id") or request.headers.get("x-crystallise-session") or "-"
    return b, f"{principal.key_id}|{session}|{b.agent}|{b.org}|{b.user}"


SESSION_HEADER = "mcp-session-id"


def _owner(principal: Principal) -> str:
    """Who a session belongs to: the key (its id), or the one open principal of a server with no keys."""
    return f"{principal.org}|{principal.key_id or '-'}|{principal.user or '-'}"


class SessionOwners:
    """MCP session id -> the key that opened it (bounded, oldest forgotten first).

    The SDK's session manager knows sessions, not keys: without this, any valid key that learnt a
    session id (a log line, a shared proxy) could send requests into it or DELETE it (issue 18).
    """

    def __init__(self, limit: int = 100_000) -> None:
        self._owner: dict[str, str] = {}
        self._limit = limit

    def owned_by(self, session: str, principal: Principal) -> bool:
        return self._owner.get(session) == _owner(principal)

    def capture(self, send: Send, principal: Principal) -> Send:
        """`send`, noting the session id the SDK assigns in its answer as owned by `principal`."""
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                for name, value in message.get("headers", []):
                    if name.decode("latin-1").lower() == SESSION_HEADER:
                        self._owner[value.decode("latin-1")] = _owner(principal)
                        while len(self._owner) > self._limit:
                            self._owner.pop(next(iter(self._owner)))
            await send(message)
        return wrapped

    def release_on_success(self, send: Send, session: str) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start" and 200 <= int(message.get("status", 500)) < 300:
                self._owner.pop(session, None)
            await send(message)
        return wrapped


def _host(value: str) -> str:
    return urlsplit("//" + value).hostname or ""


class McpEndpoint:
    """The `/mcp` ASGI app: key check, loopback check when open, then the SDK (see module docstring)."""

    def __init__(self, home: Home) -> None:
        self.server = create_mcp_server(home, resolver=_resolve, sessions=Sessions())
        self.manager: Any = None
        self.owners = SessionOwners()

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        """The SDK's session manager for one lifespan of the app (a manager runs only once, and an
        app may be started again, e.g. by tests)."""
        # DNS-rebinding protection is done here (it depends on whether keys exist, which can change
        # while serving); the SDK's own check is fixed at start-up and would refuse real host names.
        self.server.streamable_http_app(
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        self.manager = self.server.session_manager
        async with self.manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            if request.app.state.keys.open:
                self._check_local(request)
            principal = await get_principal(request)
        except Problem as p:
            await problem_response(p.status, p.detail, request.url.path, headers=p.headers, **p.extra)(
                scope, receive, send)
            return
        if self.manager is None:
            await problem_response(503, "the MCP endpoint is not started: run the app with its lifespan "
                                        "(uvicorn does)", request.url.path)(scope, receive, send)
            return
        scope[PRINCIPAL_KEY] = principal
        session = request.headers.get(SESSION_HEADER)
        if session is not None and not self.owners.owned_by(session, principal):
            # another key's session (or one this endpoint never opened): answered like an unknown session,
            # so a key that learnt a session id can neither use nor delete it, nor learn that it exists
            await problem_response(404, "MCP session not found: start a new session (initialize) with your own "
                                        "key", request.url.path)(scope, receive, send)
            return
        if session is None:
            send = self.owners.capture(send, principal)
        elif request.method == "DELETE":
            send = self.owners.release_on_success(send, session)
        await self.manager.handle_request(scope, receive, send)

    @staticmethod
    def _check_local(request: Request) -> None:
        origin = request.headers.get("origin")
        if not is_loopback(_host(request.headers.get("host", ""))) or (
                origin is not None and not is_loopback(urlsplit(origin).hostname or "")):
            raise Problem(403, "this server has no API keys, so /mcp only answers requests addressed to this "
                               "machine (Host and Origin on loopback): create a key with "
                               "`crystallise serve --create-key ORG`")
