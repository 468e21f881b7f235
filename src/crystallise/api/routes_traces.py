"""Traces in and out: `POST /v1/traces`, feedback, listing with a `seq` cursor, one trace by id.

    POST /v1/traces                  {"name": "answer", "agent": "support", "user": "u1",
                                      "input": "2+2?", "output": "4", "spans": [...]}   -> 201 {"id", "seq"}
    POST /v1/traces/batch            {"traces": [{...}, ...]}   (up to 1000)   -> 201 (all written) / 207 (some not)
    POST /v1/traces/{id}/feedback    {"score": 0, "correction": "4"}                   -> 201 feedback
    GET  /v1/traces?agent=support&limit=50&after_seq=120                               -> a page
    GET  /v1/traces/{id}                                                               -> the trace

Org isolation: an org key's org is written onto every trace and every list filter; another
org's trace id answers 404 exactly like an unknown one, so existence does not leak.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated

import anyio

from fastapi import APIRouter, Query, Request, Response

from crystallise.api.auth import Principal
from crystallise.api.deps import HomeDep, PrincipalDep
from crystallise.api.problems import Problem
from crystallise.api.schemas import (FeedbackIn, TraceAccepted, TraceBatchAccepted, TraceBatchIn, TraceIn,
                                     TraceOutcome, TracePage)
from crystallise.engine import access
from crystallise.errors import AlreadyRecorded, CrystalliseError, NotFoundError, StoreError, ValidationError
from crystallise.engine.home import Home
from crystallise.types import Feedback, Trace

__all__ = ["INGEST_PATH", "router", "visible_trace"]

router = APIRouter(prefix="/v1/traces", tags=["traces"])
INGEST_PATH = "/v1/traces"  # POST: the ingest hot path (api/fastpath.py)

Filter = Annotated[str | None, Query(min_length=1, max_length=200)]


def visible_trace(home: Home, who: Principal, trace_id: str) -> Trace:
    """The trace if the caller may see it (stored ids, as the caller knows them: engine/access.py);
    otherwise the same NotFoundError whether it exists or not."""
    trace = access.find_trace(home.store, who, trace_id)
    if trace is None:
        raise NotFoundError(f"trace {trace_id} not found: GET /v1/traces lists the traces this key can see")
    return trace


def _given_ids(body: TraceIn) -> set[str]:
    """The ids the client chose (they are stored per org; generated ones are unique already)."""
    ids = {body.id} if body.id else set()
    ids |= {s.id for s in body.spans if s.id} | {s.parent_id for s in body.spans if s.parent_id}
    return ids | {f.id for f in body.feedback if f.id}


def _prepared(body: TraceIn, who: Principal) -> Trace:
    """The trace as it will be stored: the key decides its org (and user, for a user-bound key)."""
    trace = body.to_trace(org=who.write_org(body.org))
    trace.user_id = who.write_user(body.user)
    access.qualify_trace(trace, trace.org_id, given=_given_ids(body))  # ids are per org
    return trace


async def post_trace(body: TraceIn, home: HomeDep, who: PrincipalDep, request: Request,
                     response: Response) -> TraceAccepted:
    """Write a trace with its spans and feedback in one transaction; 201 means it is durable.

    Send your own `id` to make retries safe: a second POST with the same id is 409 and changes nothing.
    Concurrent posts share a commit (`store.group.GroupCommit`): the fsync is paid once per batch.
    """
    trace = _prepared(body, who)
    if body.id is not None and await anyio.to_thread.run_sync(access.find_trace, home.store, who, body.id):
        raise _recorded(body.id)
    writer = getattr(request.app.state, "trace_writer", None)
    try:
        if writer is not None:
            stored = await writer.write_trace(trace)
        else:
            stored = await anyio.to_thread.run_sync(home.store.write_trace, trace)
    except ValidationError:
        # a request with the same id got in first (a retry racing its original, the same batch or not):
        # the same 409 as when it came first, not a 400 that reads as "your trace is bad"
        if body.id is not None and await anyio.to_thread.run_sync(access.find_trace, home.store, who, body.id):
            raise _recorded(body.id) from None
        raise
    shown = access.shown_id(who, stored.id) or stored.id
    response.headers["Location"] = f"/v1/traces/{shown}"
    return TraceAccepted(id=shown, seq=int(stored.seq or 0))


def _recorded(given: str) -> Problem:
    return Problem(409, f"trace {given} was already recorded and traces are immutable: if this was a retry, "
                        "the first request succeeded; otherwise send a new id (or none)")


# Declared like any route (its OpenAPI entry, validation and every error are FastAPI's); a plainly
# valid request is served by api/fastpath.py in front of the middleware stack, with the same endpoint.
router.add_api_route("", post_trace, methods=["POST"], status_code=201, response_model=TraceAccepted,
                     summary="Record a finished trace")


@router.post("/batch", status_code=201, response_model=TraceBatchAccepted, summary="Record many finished traces",
             responses={207: {"model": TraceBatchAccepted, "description": "some traces were not written: see "
                                                                           "each result's status and detail"}})
async def post_traces(body: TraceBatchIn, home: HomeDep, who: PrincipalDep, request: Request,
                      response: Response) -> TraceBatchAccepted:
    """Write up to 1000 traces in one request; each is all or nothing, and they share commits.

    The batch is validated whole (one malformed trace: 422 naming its index, nothing stored). Then
    each trace succeeds or fails alone, in order: `results[i]` is 201 with its `id` and `seq`, or the
    status its own request would have had — 409 for an id recorded before (a retry: the earlier
    write succeeded), 403 for another org or user than the key's, 400 for a value the store cannot
    keep, 503 when the store failed. The answer is 201 when all were written, else 207.
    A batch spares the per-request cost of HTTP (most of the server's CPU for a one-trace request,
    docs/benchmarks.md): what an exporter that buffers should send.
    """
    outcomes: list[TraceOutcome | None] = [None] * len(body.traces)
    todo: list[tuple[int, Trace]] = []
    for i, one in enumerate(body.traces):
        try:
            todo.append((i, _prepared(one, who)))
        except CrystalliseError as error:
            outcomes[i] = _failed(error)
    writer = getattr(request.app.state, "trace_writer", None)
    if writer is not None:
        stored = await asyncio.gather(*(writer.write_trace(t) for _, t in todo), return_exceptions=True)
    else:
        stored = [await anyio.to_thread.run_sync(_write_or_error, home, t) for _, t in todo]
    if stored and all(isinstance(r, StoreError) for r in stored):
        raise stored[0]  # nothing was written: the store is down (503, as for one trace)
    for (i, _), result in zip(todo, stored):
        if isinstance(result, CrystalliseError):
            outcomes[i] = _failed(result)
        elif isinstance(result, BaseException):
            raise result  # not the trace's fault: the app's 500 handler answers, as for one trace
        else:
            outcomes[i] = TraceOutcome(status=201, id=access.shown_id(who, result.id) or result.id,
                                       seq=int(result.seq or 0))
    results = [o for o in outcomes if o is not None]
    written = sum(1 for o in results if o.status == 201)
    if written < len(results):
        response.status_code = 207
    return TraceBatchAccepted(results=results, written=written, failed=len(results) - written)


def _write_or_error(home: Home, trace: Trace) -> Trace | CrystalliseError:
    try:
        return home.store.write_trace(trace)
    except CrystalliseError as error:
        return error


def _failed(error: CrystalliseError) -> TraceOutcome:
    status = 409 if isinstance(error, AlreadyRecorded) else 403 if isinstance(error, access.NotAllowed) else \
        404 if isinstance(error, NotFoundError) else 503 if isinstance(error, StoreError) else 400
    detail = "the store failed: see the server log" if status == 503 else str(error)
    return TraceOutcome(status=status, detail=detail)


@router.post("/{trace_id}/feedback", status_code=201, response_model=Feedback, summary="Give feedback on a trace")
def post_feedback(trace_id: str, body: FeedbackIn, home: HomeDep, who: PrincipalDep) -> Feedback:
    """Attach an outcome to an acknowledged trace (404 for unknown or other orgs' traces)."""
    trace = visible_trace(home, who, trace_id)
    feedback = body.to_feedback(trace.id)
    if body.id is not None:
        feedback.id = access.stored_id(trace.org_id, body.id) or feedback.id
    home.store.add_feedback(feedback)
    return dataclasses.replace(feedback, id=access.shown_id(who, feedback.id) or feedback.id, trace_id=trace_id)


@router.get("", response_model=TracePage, summary="List traces (cursor pagination)")
def list_traces(
    home: HomeDep,
    who: PrincipalDep,
    agent: Filter = None,
    org: Filter = None,
    user: Filter = None,
    name: Annotated[str | None, Query(min_length=1, max_length=500)] = None,
    after_seq: Annotated[int, Query(ge=0, le=2**62, description="return traces with seq greater than this")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    spans: Annotated[bool, Query(description="include spans and feedback")] = False,
) -> TracePage:
    """Traces in `seq` order, oldest first; `next_after_seq` is the cursor for the next page."""
    rows = home.store.list_traces(agent=agent, org=who.read_org(org), user=who.read_user(user), name=name,
                                  after_seq=after_seq, limit=limit, with_children=spans)
    cursor = int(rows[-1].seq or after_seq) if rows else after_seq
    return TracePage(traces=[access.shown_trace(who, t) for t in rows], next_after_seq=cursor,
                     has_more=len(rows) == limit)


@router.get("/{trace_id}", response_model=Trace, summary="One trace with its spans and feedback")
def get_trace(trace_id: str, home: HomeDep, who: PrincipalDep) -> Trace:
    return access.shown_trace(who, visible_trace(home, who, trace_id))
