"""What the server writes to its log about a request carries no user data (issue 15, part 6).

A log outlives a user's deletion (`forget --user` cannot reach an operator's log collector), so the
server's own log lines name *where* and *what kind* of failure, never the values involved:

    route(request)    the route's template (`/v1/users/{user}/items`), not the path with the ids in it
    redact(text)      an error message with every quoted value, `key=(value)` pair of a database error
                      and long token replaced by `…`
    failure(exc)      `TypeName: scrubbed message` plus the traceback's frames (code locations only)

The caller still gets the full message in its problem+json reply: it is the caller's own data.
(The access log's query strings are dropped by `cli/serve.QueryStringFilter`.)

    >>> redact("trace 'run-42@acme' was recorded before; Key (id)=(alice@example.com) exists")
    'trace … was recorded before; Key (id)=(…) exists'
"""

from __future__ import annotations

import re
import traceback
from typing import Any

__all__ = ["failure", "redact", "route"]

_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`")
_PAIR = re.compile(r"=\((?:[^()]|\([^()]*\))*\)")
_TOKEN = re.compile(r"\b[\w.@+-]{33,}\b")
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")


def redact(text: Any, *, limit: int = 300) -> str:
    out = _QUOTED.sub("…", str(text))
    out = _PAIR.sub("=(…)", out)
    out = _EMAIL.sub("…", out)
    out = _TOKEN.sub("…", out)
    return out[:limit]


def route(request: Any) -> str:
    """The matched route's template, else the first path segment(s) without ids."""
    found = getattr(request, "scope", {}).get("route")
    template = getattr(found, "path", None) or getattr(found, "path_format", None)
    if isinstance(template, str):
        return template
    parts = [p for p in str(getattr(getattr(request, "url", None), "path", "")).split("/") if p][:2]
    return "/" + "/".join(parts) + ("/…" if parts else "")


def failure(exc: BaseException) -> str:
    frames = "".join(traceback.format_tb(exc.__traceback__)) if exc.__traceback__ else ""
    return f"{type(exc).__name__}: {redact(exc)}\n{frames}".rstrip()
