"""Hostile bytes at the door, and rows that cannot be sent back: one place for both (issue 15).

Two things JSON lets a client send that no reader can carry back out:

    NaN, Infinity, -Infinity     not JSON (RFC 8259); Python's parser takes them, every
                                 strict serialiser (ours included) refuses to write them
    a lone surrogate "\\ud800"    not Unicode; it cannot be encoded as UTF-8

A row holding either made every later `GET /v1/traces` of its org a 500. And a URL may carry a NUL
(`/v1/jobs/%00`, `?user_id=%00`), which PostgreSQL cannot even compare with a text column: the
lookup failed as a 503 "store unavailable" (found by tests/test_attacks_new_surfaces.py). So:

0. `StrictJson` refuses a NUL in any request's path or query string (400 problem+json) before a
   route sees it: no id, name or filter holds one, on any store.

1. `StrictJson` (ASGI middleware, every JSON body: REST, OTLP/JSON, the proxy, MCP) refuses
   them before any route sees the body: 422 problem+json naming the field, nothing stored;
   bodies that are not valid UTF-8 are a 400. `refuse(value, where)` is the same check for
   values that arrive another way (OTLP protobuf, once decoded).
2. `SafeJSONResponse` (the app's default response class) writes what is already stored
   anyway: NaN/Infinity as null, a lone surrogate as U+FFFD. A row stored before this fix
   reads back (slightly repaired) instead of answering 500.

    >>> problem({"a": [1, float("nan")]})
    '$.a[1] is NaN or Infinity (not JSON): send null or a finite number'
    >>> problem({"k": "x\\ud800"}) is not None, scrub({"k": "x\\ud800", "n": float("inf")})
    (True, {'k': 'x\\ufffd', 'n': None})
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crystallise.api.problems import PROBLEM_JSON, Problem, SafeJSONResponse, lone_surrogate, problem_body, scrub

__all__ = ["SafeJSONResponse", "StrictJson", "problem", "refuse", "replaying", "scrub"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WRITES = ("POST", "PUT", "PATCH")
MAX_DEPTH = 200  # deeper than any real payload; Python's own parser stops near 1000


def problem(value: Any, where: str = "$", depth: int = 0) -> str | None:
    """What in `value` no reader can carry back out (None: nothing), as `path: fix`."""
    if depth > MAX_DEPTH:
        return f"{where} is nested more than {MAX_DEPTH} deep: flatten it"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is NaN or Infinity (not JSON): send null or a finite number"
    if isinstance(value, str):
        return f"{where} has a lone surrogate (not Unicode): decode the text with errors='replace'" \
            if lone_surrogate(value) else None
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and lone_surrogate(k):
                return f"{where} has a key with a lone surrogate (not Unicode): decode it with errors='replace'"
            found = problem(v, f"{where}.{k}" if isinstance(k, str) and len(k) < 60 else f"{where}[key]", depth + 1)
            if found:
                return found
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found = problem(v, f"{where}[{i}]", depth + 1)
            if found:
                return found
    return None


def refuse(value: Any, where: str = "$") -> None:
    """422 if `value` holds NaN/Infinity or a lone surrogate (see `problem`)."""
    found = problem(value, where)
    if found:
        raise Problem(422, found, errors=[{"loc": where, "msg": found, "type": "value"}])


def bad_id(value: Any, what: str, max_len: int = 200) -> str | None:
    """Why `value` cannot be a record id (over-long, control characters, not Unicode), or None."""
    if not isinstance(value, str) or not value:
        return f"{what} must be a non-empty string"
    if len(value) > max_len:
        return f"{what} is {len(value)} characters; ids are at most {max_len}"
    if _CONTROL.search(value) or lone_surrogate(value):
        return f"{what} holds control characters or a lone surrogate: ids are printable text"
    return None


def _reject_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not JSON: send null or a finite number")


class _NotJson(ValueError):
    pass


# What a body must contain for `problem` to find anything, once it is valid UTF-8 (which cannot
# carry a surrogate): a NaN/Infinity constant, a \uD800-\uDFFF escape, a float literal big enough
# to overflow (a long exponent or 309+ digits), or more than MAX_DEPTH brackets. A body with none of
# these is let through without a second parse and walk (the ingest path: ~0.3 ms of CPU a request).
_SUSPECT = re.compile(r"NaN|Infinity|\\u[dD][89a-fA-F]|[eE][+-]?\d{3}|\d{309}")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')  # a JSON string literal (it may hold brackets)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")


def _suspect(text: str) -> bool:
    return _SUSPECT.search(text) is not None or _deeper_than(text, MAX_DEPTH)


def _deeper_than(text: str, limit: int) -> bool:
    """Whether the JSON text may nest more than `limit` deep. Counting brackets alone sent every
    many-trace batch (hundreds of brackets, depth ~5) down the full parse and walk; here the
    brackets outside strings are peeled one level a pass (regex passes = the depth), so only a body
    that really nests deeper, or whose brackets do not pair (not JSON: the route answers it), is."""
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if len(brackets) > 50_000:
        return True  # peeling costs up to `limit` passes over it: the full check is no dearer here
    for _ in range(limit):
        if not brackets:
            return False
        peeled = _INNERMOST.sub("", brackets)
        if peeled == brackets:
            return True  # unpaired: let the full check (and then the parser) answer it
        brackets = peeled
    return bool(brackets)


def check_body(body: bytes) -> tuple[int, str] | None:
    """(status, detail) when a JSON body must be refused; None when it may go on (a body that
    is not JSON at all goes on too: the route answers it as before)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        return 400, f"the body is not valid UTF-8 (byte {e.start}): send UTF-8 JSON"
    if not _suspect(text):
        return None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except _NotJson as e:
        try:  # a NaN in a body that is not JSON anyway (cut short, say) is the route's 400, not a 422
            json.loads(text)
        except (ValueError, RecursionError):
            return None
        return 422, str(e)
    except (ValueError, RecursionError):
        return None
    found = problem(value)
    return (422, found) if found else None


class StrictJson:
    """Pure ASGI middleware: JSON write bodies with NaN/Infinity or lone surrogates are refused
    (422 problem+json) before any route or store sees them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _nul_in_url(scope):
            await _refuse(scope, send, 400, "the URL holds a NUL byte (%00): no id, name or filter holds one; "
                                            "send the id as it was given to you", loc="url")
            return
        if scope["type"] != "http" or scope.get("method") not in _WRITES or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            more = bool(message.get("more_body"))
        body = b"".join(chunks)
        refused = check_body(body) if body else None
        if refused is not None:
            await _refuse(scope, send, *refused)
            return
        await self.app(scope, replaying(body, False, receive), send)


def replaying(body: bytes, more: bool, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read (one message, `more_body` as it was),
    then whatever the client still sends: for middleware that looked at the body before the app."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay


def _nul_in_url(scope: Scope) -> bool:
    return "\x00" in scope.get("path", "") or b"%00" in bytes(scope.get("query_string") or b"").lower()


async def _refuse(scope: Scope, send: Send, status: int, detail: str, loc: str = "body") -> None:
    path = str(scope.get("path", "")).replace("\x00", "\ufffd")
    doc = problem_body(status, detail, path, errors=[{"loc": loc, "msg": detail, "type": "value"}])
    out = json.dumps(doc).encode()
    await send({"type": "http.response.start", "status": doc["status"],  # 400 on the OpenAI paths
                "headers": [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})


def _is_json(scope: Scope) -> bool:
    """A plain JSON body (a compressed one is checked once decoded, by the route: otlp.py)."""
    ctype = b"application/json"
    for name, value in scope.get("headers", []):
        if name == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
            return False
        if name == b"content-type":
            ctype = value.lower()
    return b"json" in ctype or b"text/plain" in ctype
