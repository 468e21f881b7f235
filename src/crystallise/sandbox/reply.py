"""What the host accepts from a sandbox worker: every line is checked against the protocol's shapes.

The worker runs hostile code, so its replies are hostile input. A reply is one JSON object of
exactly one of these shapes (a key too many is as wrong as one missing):

    start     {"phase": "loading"} | {"error": "rejected" | "unavailable", "message": str}
    ready     {"ready": true} | {"error": "memory"} | {"raised": RAISED}
    call      {"ok": VALUE, ...} | {"raised": RAISED, ...} | {"error": "memory", ...}
              | {"error": "output", "size": n, ...} | {"error": "bad_return", "message": str, ...}
              where ... is "cpu": s, "id": the id of the request just sent
    RAISED    {"type": str (1-200 chars), "message": str (<= 2000), "line": int >= 1 | null}
    VALUE     null, true/false, an int, a finite float, a str of valid Unicode, a list or a dict with
              str keys, nested at most 100 deep
    s         a finite number >= 0 (CPU seconds the worker has used)

Anything else raises ProtocolError, which the sandbox turns into SandboxCrashed after killing the
worker. The checks are plain functions over parsed JSON, so they are tested without a worker.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["MAX_DEPTH", "ProtocolError", "check_ready", "check_reply", "check_start", "check_value"]

MAX_DEPTH = 100  # nesting of a returned value; deeper would crash callers that recurse over it


class ProtocolError(Exception):
    """A worker's line is not what the protocol allows here (internal: the sandbox raises SandboxCrashed)."""


def _text(value: Any, what: str, longest: int, shortest: int = 0) -> str:
    if type(value) is not str or not shortest <= len(value) <= longest:
        raise ProtocolError(f"{what} must be a string of {shortest}-{longest} characters")
    _unicode(value, what)
    return value


def _unicode(value: str, what: str) -> None:
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError(f"{what} holds a lone surrogate, which is not Unicode text") from None


def _keys(reply: Any, *allowed: frozenset[str]) -> dict[str, Any]:
    if type(reply) is not dict:
        raise ProtocolError(f"a reply must be a JSON object, not {type(reply).__name__}")
    if frozenset(reply) not in allowed:
        raise ProtocolError(f"a reply with keys {sorted(reply)[:8]} is not one the protocol has here")
    return reply


def _raised(value: Any) -> dict[str, Any]:
    r = _keys(value, frozenset({"type", "message", "line"}))
    _text(r["type"], "raised.type", 200, 1)
    _text(r["message"], "raised.message", 2000)
    line = r["line"]
    if line is not None and (type(line) is not int or not 1 <= line <= 10**7):
        raise ProtocolError("raised.line must be a line number or null")
    return r


_START = (frozenset({"phase"}), frozenset({"error", "message"}))
_READY = (frozenset({"ready"}), frozenset({"error"}), frozenset({"raised"}))
_CALL = tuple(
    frozenset(k) | {"cpu", "id"} for k in ({"ok"}, {"raised"}, {"error"}, {"error", "size"}, {"error", "message"})
)


def check_start(reply: Any) -> dict[str, Any]:
    """The worker's first line: it loaded and is running the program's module code, or it refused."""
    r = _keys(reply, *_START)
    if "phase" in r:
        if r["phase"] != "loading":
            raise ProtocolError("phase must be 'loading'")
    elif r["error"] not in ("rejected", "unavailable"):
        raise ProtocolError("a start error must be 'rejected' or 'unavailable'")
    else:
        _text(r["message"], "error.message", 4000)
    return r


def check_ready(reply: Any) -> dict[str, Any]:
    """The worker's second line: the program loaded, or its module code failed."""
    r = _keys(reply, *_READY)
    if "ready" in r and r["ready"] is not True:
        raise ProtocolError("ready must be true")
    if "error" in r and r["error"] != "memory":
        raise ProtocolError("a load error must be 'memory'")
    if "raised" in r:
        _raised(r["raised"])
    return r


def check_reply(reply: Any, max_output: int, request_id: int) -> dict[str, Any]:
    """The answer to the call with id `request_id` (a stale or early line has another id)."""
    r = _keys(reply, *_CALL)
    if type(r["id"]) is not int or r["id"] != request_id:
        raise ProtocolError("the reply answers another request")
    cpu = r["cpu"]  # an int is compared as one: math.isfinite(10**400) would raise OverflowError
    if not ((type(cpu) is int and 0 <= cpu < 10**12) or (type(cpu) is float and math.isfinite(cpu) and cpu >= 0)):
        raise ProtocolError("cpu must be a finite number of seconds >= 0")
    if "ok" in r:
        check_value(r["ok"])
    elif "raised" in r:
        _raised(r["raised"])
    elif "size" in r:
        if r["error"] != "output" or type(r["size"]) is not int or not max_output < r["size"] < 1 << 62:
            raise ProtocolError("an output error must give the size, over the limit")
    elif "message" in r:
        if r["error"] != "bad_return":
            raise ProtocolError("an error with a message must be 'bad_return'")
        _text(r["message"], "error.message", 2000)
    elif r["error"] != "memory":
        raise ProtocolError("an error without details must be 'memory'")
    return r


def check_value(value: Any) -> None:
    """A JSON value a caller can store and recurse over, or ProtocolError (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        t = type(v)
        if v is None or t is bool or t is int:
            continue
        if t is float:
            if not math.isfinite(v):
                raise ProtocolError("a returned float must be finite")
        elif t is str:
            _unicode(v, "a returned string")
        elif t is list or t is dict:
            if depth >= MAX_DEPTH:
                raise ProtocolError(f"a returned value nests deeper than {MAX_DEPTH}")
            if t is dict:
                for k in v:
                    if type(k) is not str:
                        raise ProtocolError("a returned object's keys must be strings")
                    _unicode(k, "a returned key")
                stack.extend((x, depth + 1) for x in v.values())
            else:
                stack.extend((x, depth + 1) for x in v)
        else:
            raise ProtocolError(f"a returned value holds a {t.__name__}, which JSON does not have")
