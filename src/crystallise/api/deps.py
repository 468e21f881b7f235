"""Request dependencies shared by every route: the home, the caller, strict query strings.

    @router.get("/v1/things")
    def things(home: HomeDep, who: PrincipalDep) -> ...

The app (and the mounted OTLP app) keep the `Home` and the `KeyRing` in `app.state`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from crystallise.api.auth import ADMIN, KeyRing, Principal, is_loopback
from crystallise.api.problems import Problem
from crystallise.engine import access
from crystallise.engine.home import Home

__all__ = ["HomeDep", "PrincipalDep", "get_home", "get_principal", "reject_unknown_query"]

_BEARER = {"WWW-Authenticate": 'Bearer realm="crystallise"'}


# The dependencies are `async def` although they never await: FastAPI runs a plain `def`
# dependency in a worker thread, a thread hop per dependency per request (measurable at
# hundreds of requests a second, see `crystallise bench ingest`). None of them blocks.


async def get_home(request: Request) -> Home:
    return request.app.state.home  # type: ignore[no-any-return]


async def get_principal(request: Request) -> Principal:
    """The caller, from `Authorization: Bearer KEY`; 401 problem details when missing or wrong."""
    keys: KeyRing = request.app.state.keys
    header = request.headers.get("authorization")
    if keys.open:
        client = request.client.host if request.client else ""
        if not is_loopback(client):
            raise Problem(401, "this server has no API keys, so it only answers clients on this machine: "
                               "create a key with `crystallise serve --create-key ORG`", headers=_BEARER)
        return Principal(org=ADMIN)  # open and local: every request acts as admin, any key is ignored
    if header is None:
        raise Problem(401, "no API key: send `Authorization: Bearer KEY` (create one with "
                           "`crystallise serve --create-key ORG`)", headers=_BEARER)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "malformed Authorization header: send `Authorization: Bearer KEY`", headers=_BEARER)
    principal = keys.verify(token.strip(), refresh=False)  # `keys.open` above re-read the key file
    if principal is None:
        raise Problem(401, "unknown API key: check it, or create one with `crystallise serve --create-key ORG`",
                      headers=_BEARER)
    access.enter(principal)  # the database holds the org line too (PostgreSQL row-level security)
    return principal


async def reject_unknown_query(request: Request) -> None:
    """422 for query parameters the route does not take (a misspelt `usr=` must not widen a read)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    allowed = getattr(route, "_crystallise_query", None)
    if allowed is None:
        allowed = _query_names(route.dependant)
        route._crystallise_query = allowed  # type: ignore[attr-defined]  # noqa: SLF001 - our own mark on the route
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        accepted = ", ".join(sorted(allowed)) or "none"
        raise Problem(422, f"unknown query parameter(s) {', '.join(unknown)}: this endpoint accepts {accepted}",
                      errors=[{"loc": f"query.{u}", "msg": "unknown parameter", "type": "extra_forbidden"}
                              for u in unknown])


def _query_names(dependant: Dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


HomeDep = Annotated[Home, Depends(get_home)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
