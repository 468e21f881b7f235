"""Request body size limits, enforced before the body is read.

    BodyLimit(app, limit_for=lambda path: 1 << 20)

1. a `Content-Length` over the limit is answered 413 at once; the body is never read;
2. otherwise (chunked bodies, or a lying Content-Length) the bytes are counted as the
   app receives them; the chunk that crosses the limit stops the read, whatever the app
   had started to answer is dropped and the client gets 413.

Nothing is written in either case: endpoints parse the whole body before they write.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crystallise.api.problems import PROBLEM_JSON, problem_body

__all__ = ["BodyLimit", "BodyTooLarge", "DEFAULT_MAX_BODY"]

DEFAULT_MAX_BODY = 1 << 20  # 1 MiB


class BodyTooLarge(HTTPException):
    """Raised inside `receive` when the body crosses the limit; BodyLimit answers 413.

    An HTTPException, so the app's own handlers treat it as an ordinary client error (no
    "unhandled error" log) while it unwinds the request.
    """

    def __init__(self) -> None:
        super().__init__(413, "request body too large")


class BodyLimit:
    """Pure ASGI middleware: 413 problem details for bodies over `limit_for(path)` bytes."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = self.limit_for(path)
        declared = _content_length(scope)
        if declared == -1:
            await _send_problem(send, 400, "Content-Length is not a non-negative integer: send a valid one", path)
            return
        if declared is not None and declared > limit:
            await _send_problem(send, 413, _too_large(declared, limit), path)
            return

        state = {"received": 0, "exceeded": False, "started": False}

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["exceeded"] = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            if state["exceeded"]:
                return  # the app's answer to a truncated body is replaced by 413 below
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            pass
        except Exception:
            if not state["exceeded"]:
                raise
        if state["exceeded"] and not state["started"]:
            await _send_problem(send, 413, _too_large(state["received"], limit, streamed=True), path)


def _too_large(size: int, limit: int, streamed: bool = False) -> str:
    what = f"more than {limit} bytes were sent" if streamed else f"the body is {size} bytes"
    return (f"{what}; the limit here is {limit} bytes: send smaller batches "
            "(or raise the limit with `crystallise serve --max-body-bytes`)")


def _content_length(scope: Scope) -> int | None:
    """The declared length; None if absent, -1 if malformed."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                n = int(value)
            except ValueError:
                return -1
            return n if n >= 0 else -1
    return None


async def _send_problem(send: Send, status: int, detail: str, path: str) -> None:
    body = json.dumps(problem_body(status, detail, path)).encode()
    headers: list[Any] = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
