"""The UI's jobs pages: learning runs, what they are doing, what they committed.

    /jobs                      newest first: kind, scope, task, status, progress, message
    /jobs/{id}                 one job: progress, log lines, result (versions, change sets not accepted), error;
                               the page refreshes itself every 2 s while the job is queued or running
    POST /jobs/{id}/cancel     -> back to the job (cancelled, or asked to stop)

Every read and the cancel go through the HTTP API's own functions (`api.routes_jobs`), so the
rules are the API's: an org's key sees and cancels its org's jobs only, another org's job id is
"not found", a user-bound key cancels nothing.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from crystallise.api import routes_jobs
from crystallise.api.auth import Principal
from crystallise.web.app import form, render, ui_principal

__all__ = ["router"]

router = APIRouter()

Who = Annotated[Principal, Depends(ui_principal)]
JobId = Annotated[str, Path(min_length=1, max_length=200)]


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, who: Who) -> Response:
    page = routes_jobs.get_jobs(request.app.state.home, who, status=None, kind=None, limit=200)
    busy = any(j.status in ("queued", "running") for j in page.items)
    return render(request, "jobs.html", who=who, root=_root(request), jobs=page.items, refresh=busy)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, who: Who, job_id: JobId) -> Response:
    job = routes_jobs.get_job(job_id, request.app.state.home, who)
    can_cancel = job.status in ("queued", "running") and not job.cancel_requested and who.user is None
    return render(request, "job.html", who=who, root=_root(request), job=job, can_cancel=can_cancel,
                  refresh=job.status in ("queued", "running"))


@router.post("/jobs/{job_id}/cancel")
async def cancel(request: Request, who: Who, job_id: JobId) -> Response:
    await form(request)  # the CSRF check
    routes_jobs.cancel_job(job_id, request.app.state.home, who, request)
    return RedirectResponse(f"{_root(request)}/jobs/{quote(job_id)}", status_code=303)
