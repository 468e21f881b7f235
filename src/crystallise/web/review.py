"""The UI's review and undo pages: change sets waiting for a person, their decision, and undo by cause.

    /review                 what waits (newest first): learner, scope, change, why it waits, the gate
    /review/{id}            one proposal: the diff, the evidence, the verdict; approve / reject forms
    POST /review/{id}/approve   -> the version it became
    POST /review/{id}/reject    -> back to the proposal, now marked rejected
    /traces/{id}/undo       what undoing everything learned from that trace would do (a dry run)
    POST /traces/{id}/undo  -> the version that undid it (or back to the trace: nothing was learned)

Every read and decision goes through the HTTP API's own functions (`api.routes_review`), so the
rules are the API's: an org's key sees its org's proposals and agent-level ones, decides its
org's only; agent-level ones need the admin key; a user-bound key decides nothing; an undo that
would reach shared knowledge needs the admin key.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from crystallise.api import routes_review
from crystallise.api.auth import Principal
from crystallise.errors import ValidationError
from crystallise.web.app import form, render, ui_principal

__all__ = ["router"]

router = APIRouter()

Who = Annotated[Principal, Depends(ui_principal)]
ChangeSetId = Annotated[str, Path(min_length=1, max_length=200)]


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


def _lines(diff: str) -> list[tuple[str, str]]:
    from crystallise.web.pages import _diff_lines

    return [("meta" if line.startswith("# ") else cls, line) for cls, line in _diff_lines(diff)]


@router.get("/review", response_class=HTMLResponse)
def review_page(request: Request, who: Who) -> Response:
    page = routes_review.list_review(request.app.state.home, who, before=None, limit=200)
    return render(request, "review.html", who=who, root=_root(request), changesets=page.changesets,
                  more=page.next_before is not None)


@router.get("/review/{changeset_id}", response_class=HTMLResponse)
def review_one(request: Request, who: Who, changeset_id: ChangeSetId) -> Response:
    home = request.app.state.home
    detail = routes_review.get_review(changeset_id, home, who)
    cs = detail.changeset
    can_decide = cs.status == "needs_review" and who.user is None and (who.admin or cs.scope.org == who.org)
    evidence = {k: v for k, v in cs.evidence.items() if k != "review"}
    return render(request, "review_one.html", who=who, root=_root(request), cs=cs, diff=_lines(detail.diff),
                  waiting=detail.waiting_because, evidence=evidence, review=cs.evidence.get("review") or {},
                  can_decide=can_decide)


async def _decision(request: Request) -> routes_review.ReviewIn:
    fields = await form(request)
    by, note = (fields.get("by") or "").strip(), (fields.get("note") or "").strip()
    if not by:
        raise ValidationError("say who decides (the `by` field): the change set records it")
    return routes_review.ReviewIn(by=by[:200], note=note[:2000])


@router.post("/review/{changeset_id}/approve")
async def approve(request: Request, who: Who, changeset_id: ChangeSetId) -> Response:
    body = await _decision(request)
    version = routes_review.approve_review(changeset_id, body, request.app.state.home, who)
    return RedirectResponse(f"{_root(request)}/versions/{version.number}", status_code=303)


@router.post("/review/{changeset_id}/reject")
async def reject(request: Request, who: Who, changeset_id: ChangeSetId) -> Response:
    body = await _decision(request)
    routes_review.reject_review(changeset_id, body, request.app.state.home, who)
    return RedirectResponse(f"{_root(request)}/review/{quote(changeset_id)}", status_code=303)


TraceId = Annotated[str, Path(min_length=1, max_length=200)]


@router.get("/traces/{trace_id}/undo", response_class=HTMLResponse)
def undo_preview(request: Request, who: Who, trace_id: TraceId) -> Response:
    body = routes_review.UndoIn(traces=[trace_id], dry_run=True)
    preview = routes_review.post_undo(body, request.app.state.home, who)
    return render(request, "undo.html", who=who, root=_root(request), trace_id=trace_id, plan=preview.plan,
                  needs_admin=preview.needs_admin)


@router.post("/traces/{trace_id}/undo")
async def undo_trace(request: Request, who: Who, trace_id: TraceId) -> Response:
    fields = await form(request)
    reason = (fields.get("reason") or "").strip()[:500] or "undone from the web UI"
    done = routes_review.post_undo(routes_review.UndoIn(traces=[trace_id], reason=reason),
                                   request.app.state.home, who)
    if done.version is None:
        return RedirectResponse(f"{_root(request)}/traces/{quote(trace_id)}", status_code=303)
    return RedirectResponse(f"{_root(request)}/versions/{done.version.number}", status_code=303)
