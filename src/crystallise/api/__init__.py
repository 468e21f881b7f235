"""The HTTP API and OTLP/HTTP ingest (`crystallise serve`): a thin edge over the library.

    from crystallise import Home
    from crystallise.server import create_app       # the API with /mcp and /ui (api.create_app: the API alone)
    app = create_app(Home.open(".crystallise"))     # run with any ASGI server, or `crystallise serve`

    app.py            create_app: middleware, handlers, routers, the mounted OTLP receiver
    auth.py           API keys per org (sha256 in HOME/api_keys.json), Principal
    deps.py           request dependencies: home, caller, strict query strings
    problems.py       RFC 9457 problem details for every error
    limits.py         request body size limit (413 before reading)
    schemas.py        request/response bodies
    routes_traces.py  /v1/traces, feedback
    routes_context.py /v1/items, /v1/context
    routes_versions.py /v1/tasks, /v1/versions (show, diff, revert)
    routes_changesets.py /v1/changesets (eval results)
    routes_review.py  /v1/review (approve, reject), /v1/undo (by trace / by user)
    otlp*.py          /otlp/v1/traces: decode, map GenAI spans, spool incomplete traces

See docs/api.md. Needs the `serve` extra: pip install 'crystallise[serve]'.
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
    import google.protobuf  # noqa: F401
    import opentelemetry.proto  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the HTTP API needs the `serve` extra ({e.name} is missing): pip install 'crystallise[serve]'"
    ) from e

from crystallise.api.app import OTLP_PREFIX, create_app
from crystallise.api.auth import ADMIN, KeyRing, Principal, create_key, is_loopback, revoke_key

__all__ = ["ADMIN", "OTLP_PREFIX", "KeyRing", "Principal", "create_app", "create_key", "is_loopback", "revoke_key"]
