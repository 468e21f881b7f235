"""A route whose valid requests skip FastAPI's per-request machinery (the ingest hot path).

    router.add_api_route("", post_trace, methods=["POST"], status_code=201, response_model=TraceAccepted,
                         route_class_override=LeanJsonRoute)

    async def post_trace(body: TraceIn, home: HomeDep, who: PrincipalDep, request: Request,
                         response: Response) -> TraceAccepted: ...

FastAPI solves the dependency tree, inspects the content type, validates the body and then the
returned model again, for every request: about 1 ms of CPU per `POST /v1/traces`, more than the
durable write itself (`crystallise bench ingest`). A `LeanJsonRoute` is declared like any route —
its OpenAPI entry, its validation and every error it answers are FastAPI's — but a request that
is plainly valid is served directly:

1. no query string, a JSON content type, no dependency overrides (tests);
2. `json.loads` + `Model.model_validate` of the body: exactly what FastAPI does (python mode);
3. the caller from `deps.get_principal` (the same key check, 401s and org scope);
4. the endpoint called with `body, home, who, request, response`, the result dumped as
   FastAPI dumps a `response_model`, with the endpoint's response headers.

Anything else (a query parameter, another content type, a body that is not JSON or does not
validate) goes to FastAPI's own handler for the route, unchanged, with the body already read:
every refusal is answered by the same code as before. Errors raised by the endpoint or the key
check go through the app's exception handlers as usual (this runs inside the route).
The endpoint must take exactly those five parameters, `body` annotated with a pydantic model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, get_type_hints

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from crystallise.api.deps import get_principal
from crystallise.api.hostile import SafeJSONResponse

__all__ = ["LeanJsonRoute"]

_PARAMS = ("body", "home", "who", "request", "response")


class LeanJsonRoute(APIRoute):
    """An APIRoute whose plainly valid JSON requests bypass dependency solving (see the module doc)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        full = super().get_route_handler()  # FastAPI's handler: every request that is not plainly valid
        endpoint = self.endpoint
        hints = get_type_hints(endpoint)
        model = hints.get("body")
        if tuple(p for p in hints if p != "return") != _PARAMS or not (
                isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"LeanJsonRoute serves endpoints taking ({', '.join(_PARAMS)}) with a pydantic body "
                            f"model; {endpoint.__qualname__} takes {list(hints)}")
        answer_model = self.response_model
        status = self.status_code or 200

        async def handler(request: Request) -> Response:
            body = await _plain_body(request, model)
            if body is None:
                return await full(request)
            who = await get_principal(request)
            sub = Response()  # as FastAPI's sub-response (solve_dependencies): no length, no status unless set
            del sub.headers["content-length"]
            sub.status_code = None  # type: ignore[assignment]
            result = await endpoint(body=body, home=request.app.state.home, who=who, request=request, response=sub)
            if isinstance(answer_model, type) and issubclass(answer_model, BaseModel) and \
                    not isinstance(result, answer_model):
                result = answer_model.model_validate(result, from_attributes=True)
            content = result.model_dump(mode="json", by_alias=True) if isinstance(result, BaseModel) else result
            response = SafeJSONResponse(content, status_code=sub.status_code or status)
            response.headers.raw.extend(sub.headers.raw)
            return response

        return handler


async def _plain_body(request: Request, model: type[BaseModel]) -> BaseModel | None:
    """The validated body when nothing about the request needs FastAPI's own handling; else None."""
    if request.scope.get("query_string") or getattr(request.app, "dependency_overrides", None):
        return None
    ctype = request.headers.get("content-type")
    if ctype is None or ctype.partition(";")[0].strip().lower() != "application/json":
        return None
    raw = await request.body()  # cached on the request: FastAPI's handler reads the same bytes
    try:
        return model.model_validate(json.loads(raw))
    except (ValueError, ValidationError, RecursionError):  # answered by FastAPI's handler, as before
        return None
