"""Errors as RFC 9457 problem details: `application/problem+json` with type, title, status, detail.

    HTTP/1.1 404 Not Found
    Content-Type: application/problem+json

    {"type": "urn:crystallise:problem:not-found", "title": "Not found", "status": 404,
     "detail": "trace tr_1 not found: run `crystallise traces list` to see recorded traces",
     "instance": "/v1/traces/tr_1"}

How exceptions map (first match wins):

    RequestValidationError (pydantic)  422 validation      + "errors": [{"loc", "msg", "type"}]
                                       (400 bad-request when the body is not JSON at all, and on
                                       the OpenAI-compatible paths, with OpenAI's `error` member)
    Problem                            its own status      (raised by the API layer itself)
    starlette HTTPException            its status          (unknown route 404, wrong method 405 ...)
    NotFoundError                      404 not-found
    access.NotAllowed (Forbidden too)  403 forbidden
    other UserError                    400 bad-request     (ValidationError, ConfigError ...)
    ArtifactError                      409 conflict        (a change collides with a later one)
    ProtectedError                     409 conflict        (a change set touched graders, eval cases, logs)
    StoreError                         503 unavailable
    anything else                      500 internal        (details only in the server log)
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from crystallise.api import logsafe
from crystallise.engine import access
from crystallise.errors import ArtifactError, NotFoundError, ProtectedError, StoreError, UserError

__all__ = ["PROBLEM_JSON", "Problem", "SafeJSONResponse", "document_problems", "install_handlers", "lone_surrogate",
           "problem_response", "scrub"]

log = logging.getLogger("crystallise.api")

PROBLEM_JSON = "application/problem+json"
_TITLES = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Missing or wrong API key"),
    403: ("forbidden", "Not allowed for this API key"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    409: ("conflict", "Conflict"),
    413: ("too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation", "Invalid request"),
    500: ("internal", "Internal server error"),
    502: ("bad-gateway", "Upstream model server unavailable"),
    503: ("unavailable", "Store unavailable"),
}


_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(text: str) -> bool:
    """Whether `text` holds a lone surrogate (not Unicode: it cannot be written as UTF-8)."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def scrub(value: Any) -> Any:
    """`value` with NaN/Infinity as None and lone surrogates as U+FFFD (for writing out)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value) if lone_surrogate(value) else value
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


class SafeJSONResponse(JSONResponse):
    """A JSONResponse that never fails on stored NaN or lone surrogates (it writes them repaired)."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except (ValueError, UnicodeEncodeError):
            return super().render(scrub(content))


class Problem(Exception):
    """An error the API layer answers directly: `raise Problem(401, "send Authorization: Bearer KEY")`."""

    def __init__(self, status: int, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers, self.extra = status, detail, headers, extra


# OpenAI clients read an error's text from `error.message`: problems on the proxy's paths carry
# that member too (an RFC 9457 extension member), in OpenAI's shape, and what this API answers 422
# elsewhere is a 400 there, as OpenAI answers it:
#     400 {"error": {"type": "invalid_request_error", "message": "...", "param": "messages", "code": "..."}}
OPENAI_PATHS = ("/v1/chat/completions", "/v1/models", "/v1/responses", "/v1/embeddings")
_OPENAI_CODES = {"missing": "missing_required_parameter", "extra_forbidden": "unknown_parameter",
                 "json_invalid": "invalid_json"}


def _openai_error(status: int, slug: str, detail: str, extra: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's error member: `param` and `code` from the first invalid field, or as the raiser gave them."""
    first = (extra.get("errors") or [{}])[0]
    loc = str(first.get("loc") or "").split(".")
    param = extra.pop("param", None) or (loc[0] if loc[0] and loc[0] != "body" else None)
    code = extra.pop("code", None) or (_OPENAI_CODES.get(str(first.get("type")), "invalid_value") if first else None)
    if status == 401:
        code = code or "invalid_api_key"
    kind = "invalid_request_error" if 400 <= status < 500 else slug.replace("-", "_")
    return {"message": detail, "type": kind, "param": param, "code": code}


def problem_body(status: int, detail: str, instance: str | None = None, **extra: Any) -> dict[str, Any]:
    if instance in OPENAI_PATHS and status == 422:
        status = 400
    slug, title = _TITLES.get(status, ("error", "Error"))
    body: dict[str, Any] = {"type": f"urn:crystallise:problem:{slug}", "title": title, "status": status,
                            "detail": detail}
    if instance:
        body["instance"] = instance
    if instance in OPENAI_PATHS:
        body["error"] = _openai_error(status, slug, detail, extra)
    body.update(extra)
    return body


def problem_response(
    status: int, detail: str, instance: str | None = None, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = problem_body(status, detail, instance, **extra)
    return SafeJSONResponse(body, status_code=body["status"], media_type=PROBLEM_JSON, headers=headers)


def _loc(loc: Any) -> str:
    return ".".join(str(p) for p in loc) if isinstance(loc, list | tuple) else str(loc)


def _validation_detail(errors: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """One readable sentence, plus the errors as plain JSON (no input echo: it may be large or secret)."""
    items = []
    for e in errors:
        loc: Any = [p for p in e.get("loc", ()) if p != "body"] if len(e.get("loc", ())) > 1 else e.get("loc", ())
        msg = str(e.get("msg", "invalid"))
        if e.get("type") == "json_invalid":
            where = e.get("loc", ("body", "?"))[-1]
            loc = "body"
            msg = (f"body is not valid JSON ({(e.get('ctx') or {}).get('error', 'decode error')} at character "
                   f"{where}): send a JSON object")
        elif tuple(e.get("loc", ())) == ("body",) and e.get("type") in ("model_attributes_type", "dict_type"):
            msg = "the body must be a JSON object sent with `Content-Type: application/json`"
        elif e.get("type") == "extra_forbidden":
            msg = "unknown field: remove it (see /openapi.json for the accepted fields)"
        elif e.get("type") == "missing":
            msg = "field required"
        items.append({"loc": _loc(loc), "msg": msg, "type": str(e.get("type", ""))})
    head = "; ".join(f"{i['loc']}: {i['msg']}" if i["loc"] else i["msg"] for i in items[:3])
    more = f" (and {len(items) - 3} more)" if len(items) > 3 else ""
    return head + more, items


def install_handlers(app: FastAPI) -> None:
    """Register the mapping of the module docstring on `app` (and on mounted sub-apps)."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        detail, items = _validation_detail(errors)
        status = 400 if any(e.get("type") == "json_invalid" for e in errors) else 422
        return problem_response(status, detail, request.url.path, errors=items)

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.detail, request.url.path, headers=exc.headers, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no endpoint {request.url.path}: see /docs or /openapi.json for the endpoints"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}: see /openapi.json"
        return problem_response(exc.status_code, detail, request.url.path, headers=getattr(exc, "headers", None))

    @app.exception_handler(UserError)
    async def _user(request: Request, exc: UserError) -> JSONResponse:
        status = 404 if isinstance(exc, NotFoundError) else 403 if isinstance(exc, access.NotAllowed) else 400
        return problem_response(status, str(exc), request.url.path)

    @app.exception_handler(ArtifactError)
    @app.exception_handler(ProtectedError)
    async def _conflict(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(409, str(exc), request.url.path)

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> JSONResponse:
        log.error("store failure on %s: %s", logsafe.route(request), logsafe.redact(exc))
        # the cause names the database (user, host, port, name; a SQLite file's path): the operator's, in
        # the log; a client learns only that it may retry
        return problem_response(503, "the store is unavailable: retry in a moment (a retried trace with your own "
                                     "id answers 409 if the first one was recorded); the server log has the cause",
                                request.url.path)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s: %s", request.method, logsafe.route(request), logsafe.failure(exc))
        return problem_response(500, "internal error: see the server log", request.url.path)


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details; `errors` lists the invalid fields of a 422",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "detail": {"type": "string"}, "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "loc": {"type": "string"}, "msg": {"type": "string"}, "type": {"type": "string"}}}},
    },
    "additionalProperties": True,
}


def document_problems(openapi: dict[str, Any]) -> dict[str, Any]:
    """Say in the OpenAPI document what the handlers above really answer: every operation's 4xx
    (and a store outage's 503) is problem details as `application/problem+json` — in place of
    FastAPI's default 422 body, which this API never sends."""
    openapi.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    schemas = openapi["components"]["schemas"]
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    ref = {"$ref": "#/components/schemas/Problem"}
    for path_item in openapi.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for status, description in (("422", "Invalid request"), ("4XX", "Client error (problem details)"),
                                        ("503", "Store unavailable")):
                responses[status] = {"description": description, "content": {PROBLEM_JSON: {"schema": ref}}}
    return openapi
