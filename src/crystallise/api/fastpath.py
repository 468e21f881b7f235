"""The ingest hot path: a plainly valid `POST /v1/traces` served in front of the middleware stack.

    app.add_middleware(IngestFastPath, route=post_route, limit=1 << 20)   # the last added: create_app

Every request walks Starlette's middleware (server errors, BodyLimit, StrictJson, exception
handling, the exit stack), the router's match over every route, FastAPI's dependency solving,
content-type parsing and the response model's second validation. For trace ingest, the one route
that runs hundreds of times a second, that machinery cost more CPU than the durable write itself
(`crystallise bench ingest`, docs/benchmarks.md). This ASGI middleware, the outermost one the app
adds (inside only Starlette's ServerErrorMiddleware), serves the request directly when nothing
about it needs that machinery, and otherwise hands it on untouched:

1. `POST` to exactly the route's path, no query string, no root path, no dependency overrides
   (tests), `Content-Type: application/json` (parameters allowed), no `Content-Encoding`, and a
   declared `Content-Length` within the body limit (BodyLimit's 413 and its streamed-body count
   stay BodyLimit's: a chunked body goes on), each of those headers and `Authorization` sent once
   (the layers behind disagree on which of two they read: BodyLimit and FastAPI the first,
   StrictJson the last), and a body of exactly the declared length (at most limit + one chunk is
   buffered; a longer body goes on, unread bytes and all, to BodyLimit's count);
2. the body passes StrictJson's check (`hostile.check_body`: no NaN/Infinity, lone surrogate,
   overflowing float or deep nesting) and `json.loads` + `Model.model_validate` accept it: exactly
   what FastAPI does (python mode);
3. the caller from `deps.get_principal` (the same key check, 401s and org scope), the endpoint
   called with `body, home, who, request, response`, the result dumped as FastAPI dumps a
   `response_model`, with the endpoint's response headers.

A request that fails 1 or 2 goes on to the full app with its body replayed, so every refusal is
answered by the same code as before (tests/test_fastpath.py and, as raw ASGI with duplicate headers,
lying lengths and hypothesis, tests/test_fastpath_attacks.py send valid, hostile and wrong requests
down both paths and require the same status, headers and body). An error raised in 3 — a 401, a
409 for a recorded id, a store failure — is answered by the app's own exception handlers, looked up
as Starlette's ExceptionMiddleware looks them up; an unexpected one is raised on to
ServerErrorMiddleware, which answers it with the app's 500 handler. Nothing is retried: the
endpoint runs once.
The endpoint must take exactly those five parameters, `body` annotated with a pydantic model.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, get_type_hints

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from crystallise.api.deps import get_principal
from crystallise.api.hostile import SafeJSONResponse, check_body, replaying

__all__ = ["IngestFastPath"]

_PARAMS = ("body", "home", "who", "request", "response")
_JSON = b"application/json"
_ONCE = (b"content-type", b"content-length", b"authorization")  # a request sending one of these twice is not plain


class IngestFastPath:
    """Pure ASGI middleware: serves `route`'s plainly valid JSON requests without the stack (module doc)."""

    def __init__(self, app: ASGIApp, *, route: APIRoute, limit: int) -> None:
        self.app, self.route, self.limit = app, route, limit
        self.endpoint = route.endpoint
        hints = get_type_hints(self.endpoint)
        model = hints.get("body")
        if tuple(p for p in hints if p != "return") != _PARAMS or not (
                isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"IngestFastPath serves endpoints taking ({', '.join(_PARAMS)}) with a pydantic body "
                            f"model; {self.endpoint.__qualname__} takes {list(hints)}")
        self.model: type[BaseModel] = model
        answer = route.response_model
        self.answer = answer if isinstance(answer, type) and issubclass(answer, BaseModel) else None
        self.status = route.status_code or 200
        self.path = route.path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._plain(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more and size <= self.limit:  # never more than the limit buffered, whatever the length said
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before its body arrived: nothing to answer
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more = bool(message.get("more_body"))
        raw = b"".join(chunks)
        replay = replaying(raw, more, receive)

        # a body longer than its Content-Length said (or than the limit) is not plain: the full stack
        # reads the rest through BodyLimit, which counts what streams and answers 413
        body = None if more or size != self.declared(scope) else self._valid(raw)
        if body is None:  # refused or not plainly valid: the full stack answers, from the same bytes
            await self.app(scope, replay, send)
            return
        scope["route"] = self.route  # the template in log lines (api/logsafe.py), as the router sets it
        request = Request(scope, replay)
        try:
            response = await self._serve(request, body)
        except Exception as exc:
            handler = _handler(scope["app"], exc)
            if handler is None:
                raise  # unexpected: ServerErrorMiddleware answers it with the 500 handler and logs it
            response = await handler(request, exc)
        await response(scope, replay, send)

    def _plain(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") != self.path or \
                scope.get("query_string") or scope.get("root_path"):
            return False
        seen: dict[bytes, bytes] = {}
        for name, value in scope.get("headers", ()):
            if name in _ONCE:
                if name in seen:  # sent twice: the layers behind read the first (BodyLimit, FastAPI) or
                    return False  # the last (StrictJson); only the full stack answers it as it always did
                seen[name] = value
            elif name == b"content-encoding" or name == b"transfer-encoding":
                return False
        ctype, length = seen.get(b"content-type"), seen.get(b"content-length")
        if ctype is None or length is None or ctype.partition(b";")[0].strip().lower() != _JSON:
            return False
        return length.isdigit() and int(length) <= self.limit and not scope["app"].dependency_overrides

    @staticmethod
    def declared(scope: Scope) -> int:
        """The Content-Length `_plain` accepted (one header, digits only)."""
        return int(next(value for name, value in scope["headers"] if name == b"content-length"))

    def _valid(self, raw: bytes) -> BaseModel | None:
        if not raw or check_body(raw) is not None:
            return None
        try:
            return self.model.model_validate(json.loads(raw))
        except (ValueError, ValidationError, RecursionError):
            return None

    async def _serve(self, request: Request, body: BaseModel) -> Response:
        who = await get_principal(request)
        sub = Response()  # as FastAPI's sub-response (solve_dependencies): no length, no status unless set
        del sub.headers["content-length"]
        sub.status_code = None  # type: ignore[assignment]
        result = await self.endpoint(body=body, home=request.app.state.home, who=who, request=request, response=sub)
        if self.answer is not None and not isinstance(result, self.answer):
            result = self.answer.model_validate(result, from_attributes=True)
        content = result.model_dump(mode="json", by_alias=True) if isinstance(result, BaseModel) else result
        response = SafeJSONResponse(content, status_code=sub.status_code or self.status)
        response.headers.raw.extend(sub.headers.raw)
        return response


def _handler(app: FastAPI, exc: Exception) -> Callable[[Request, Exception], Awaitable[Response]] | None:
    """The app's handler for `exc` as Starlette's ExceptionMiddleware finds it (by class, most specific
    first; the 500 / `Exception` handler belongs to ServerErrorMiddleware, outside this layer)."""
    handlers: dict[Any, Any] = app.exception_handlers
    for cls in type(exc).__mro__:
        if cls in handlers and cls is not Exception:
            return handlers[cls]  # type: ignore[no-any-return]
    return None
