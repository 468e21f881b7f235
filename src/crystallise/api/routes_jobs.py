"""Tasks and learning jobs over HTTP: define a task, queue learning, follow and cancel jobs.

    POST /v1/tasks {"name": "ratio", "metric": "numeric", "instruction": "...", "output_schema": {...}}
                                                        201 new, 200 already defined the same way
    POST /v1/learn {"task": "ratio"} | {"all": true} | {"kind": "dream", "org": "acme"}
                                                        202 {"jobs": [...]}: queued, run by the server's workers
    GET  /v1/jobs?status=running&kind=learn&limit=50    jobs the key may see, newest first
    GET  /v1/jobs/{id}                                  one job: status, progress, log, result
    GET  /v1/jobs/{id}/events                           Server-Sent Events: `progress` while it runs, then `done`
    POST /v1/jobs/{id}/cancel                           cancel (queued) or ask to stop (running)

A thin edge over `engine/jobs.py` and `engine/task_defs.py`. Tenancy: an org key's jobs are its
org's (the org comes from the key), it sees and cancels only those, and another org's job id
answers 404 exactly like an unknown one; a user-bound key starts nothing. A task's definition is
shared by every org (its name, metric, schema, instruction), so defining one needs the admin key.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from crystallise.api.auth import Forbidden, Principal
from crystallise.api.deps import HomeDep, PrincipalDep
from crystallise.api.schemas import ScopeId, _In
from crystallise.engine import jobs
from crystallise.engine.job_kinds import Refused
from crystallise.engine.task_defs import define, task_names
from crystallise.errors import NotFoundError, ValidationError
from crystallise.types import Scope

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["jobs"])

Name = Annotated[str, Field(min_length=1, max_length=64)]


class TaskIn(_In):
    name: Name
    metric: str = Field("exact", description="exact | numeric: how an answer is checked against its correction")
    instruction: Annotated[str, Field(max_length=4000)] = ""
    output_schema: dict[str, Any] | None = Field(None, description="a JSON Schema for the output (default: text)")
    input_schema: dict[str, Any] | None = None


class TaskOut(BaseModel):
    name: str
    grade: str
    metric: str
    instruction: str
    output_schema: dict[str, Any]
    created: bool


class LearnIn(_In):
    task: Name | None = Field(None, description="learn this task (kind learn)")
    all: bool = Field(False, description="learn every task")
    kind: str = Field("learn", description="learn, dream, extract, skills, promote, weights-export, ...")
    agent: ScopeId = "default"
    org: ScopeId | None = None
    user: ScopeId | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="the kind's own parameters")


class JobOut(BaseModel):
    id: str
    kind: str
    scope: dict[str, Any]
    params: dict[str, Any]
    status: str
    progress: float
    message: str
    log: list[dict[str, Any]]
    attempts: int
    worker: str | None
    result: dict[str, Any] | None
    error: str | None
    cancel_requested: bool
    created_at: float
    started_at: float | None
    finished_at: float | None


class JobsOut(BaseModel):
    items: list[JobOut]


def _out(job: jobs.Job) -> JobOut:
    data = job.to_dict()
    return JobOut(**{k: data[k] for k in JobOut.model_fields})


def _executor(request: Request) -> jobs.Executor | None:
    return getattr(request.app.state, "executor", None)


@router.post("/tasks", status_code=201, response_model=TaskOut, summary="Define a task",
             responses={200: {"model": TaskOut, "description": "already defined the same way: nothing changed"}})
def post_task(body: TaskIn, home: HomeDep, who: PrincipalDep, response: Response) -> TaskOut:
    """Commit a task's spec (its first version). Traces named after the task are its evidence; their
    feedback's correction is the verified answer. 200 when it exists with the same definition."""
    if not who.admin:
        raise Forbidden("a task's definition is shared by every org: defining one needs the admin key")
    spec, created = define(home, body.name, metric=body.metric, output_schema=body.output_schema,
                           input_schema=body.input_schema, instruction=body.instruction)
    if not created:
        response.status_code = 200
    response.headers["Location"] = f"/v1/tasks/{spec.name}"
    return TaskOut(name=spec.name, grade=spec.grade, metric=spec.metric, instruction=spec.description,
                   output_schema=spec.output_schema, created=created)


@router.post("/learn", status_code=202, response_model=JobsOut, summary="Queue learning jobs")
def post_learn(body: LearnIn, home: HomeDep, who: PrincipalDep, request: Request) -> JobsOut:
    """Queue one job (`task`, or another `kind`), or a learn job per task (`all`); 202 with the jobs.
    They run on the server's job workers (`crystallise serve`) or a `crystallise worker`."""
    org = who.write_org(body.org)
    if body.kind == "learn":
        if body.all == (body.task is not None):
            raise ValidationError('name one task ("task": "NAME") or ask for every task ("all": true)')
        names = task_names(home) if body.all else [body.task]
        if not names:
            raise NotFoundError("no task is defined yet: POST /v1/tasks first")
    elif body.task is not None or body.all:
        raise ValidationError(f'"task" and "all" are for learn jobs; a {body.kind} job takes "params"')
    scope = Scope(agent=body.agent, org=org, user=body.user)
    queued = []
    try:
        if body.kind == "learn":
            queued = [jobs.submit(home, "learn", scope=scope, params={**body.params, "task": n}, actor=who)
                      for n in names]
        else:
            queued = [jobs.submit(home, body.kind, scope=scope, params=body.params, actor=who)]
    except Refused as e:
        raise Forbidden(str(e)) from None
    executor = _executor(request)
    for job in queued:
        if executor is not None:
            executor.start(job)
    return JobsOut(items=[_out(j) for j in queued])


@router.get("/jobs", response_model=JobsOut, summary="Learning jobs, newest first")
def get_jobs(
    home: HomeDep,
    who: PrincipalDep,
    status: Annotated[str | None, Query(description="queued, running, succeeded, failed, cancelled")] = None,
    kind: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobsOut:
    return JobsOut(items=[_out(j) for j in jobs.list_jobs(home, who, status=status, kind=kind, limit=limit)])


@router.get("/jobs/{job_id}", response_model=JobOut, summary="One job: status, progress, log, result")
def get_job(job_id: str, home: HomeDep, who: PrincipalDep) -> JobOut:
    return _out(jobs.get(home, job_id, who))


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, summary="Cancel a job")
def cancel_job(job_id: str, home: HomeDep, who: PrincipalDep, request: Request) -> JobOut:
    """A queued job is cancelled at once; a running one stops at its next progress report."""
    try:
        job = jobs.cancel(home, job_id, who)
    except Refused as e:
        raise Forbidden(str(e)) from None
    return _out(job)


@router.get("/jobs/{job_id}/events", summary="Follow a job (Server-Sent Events)",
            response_class=StreamingResponse)
async def job_events(job_id: str, home: HomeDep, who: PrincipalDep,
                     poll_s: Annotated[float, Query(ge=0.05, le=10)] = 0.5) -> StreamingResponse:
    """`event: progress` with the job (JSON) each time it changes, then `event: done` when it is finished."""
    await anyio.to_thread.run_sync(jobs.get, home, job_id, who)  # 404 before the stream starts
    return StreamingResponse(_events(home, who, job_id, poll_s), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


async def _events(home: Any, who: Principal, job_id: str, poll_s: float) -> AsyncIterator[bytes]:
    seen: tuple[Any, ...] | None = None
    while True:
        job = await anyio.to_thread.run_sync(jobs.get, home, job_id, who)
        key = (job.status, job.progress, job.message, len(job.log), job.cancel_requested)
        if key != seen:
            seen = key
            name = "done" if job.done else "progress"
            yield f"event: {name}\ndata: {json.dumps(_out(job).model_dump(), default=str)}\n\n".encode()
        if job.done:
            return
        await asyncio.sleep(poll_s)
