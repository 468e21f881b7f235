"""The UI's pages. Each reads through the HTTP API's own functions and visibility rules, then renders.

    /                         overview: latest traces and versions, tasks
    /traces, /traces/{id}     runs with their spans, the items they were shown, their feedback,
                              and the versions whose provenance includes them
    /items, /items/{id}       learned items by scope and status (quarantined ones flagged)
    /versions, /versions/{n}  change, gate verdict, provenance (-> traces), the diff, a revert button
    /versions/{a}/diff/{b}    what changed between two versions
    /tasks, /tasks/{name}     grade and the evidence behind it (examples, eval cases, code)
    /reports, /reports/{dir}  learning curves and results of `crystallise bench ... --out DIR`
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from crystallise.api import routes_context, routes_traces, routes_versions
from crystallise.api.auth import Principal
from crystallise.api.schemas import RevertIn
from crystallise.engine.access import sees_version, shown_trace
from crystallise.errors import NotFoundError, ValidationError
from crystallise.harness.spec import View
from crystallise.engine.home import Home
from crystallise.engine.memory import find_item
from crystallise.store import browse
from crystallise.types import Feedback, Item, Trace, Version
from crystallise.web.app import COOKIE, form, render, ui_principal
from crystallise.web.reports import find_reports, load_report, report_file

__all__ = ["router"]

router = APIRouter()

Who = Annotated[Principal, Depends(ui_principal)]
Number = Annotated[int, Path(ge=1, le=2**62)]
Text = Annotated[str | None, Query(max_length=200)]
LEVELS = ("agent", "org", "user")
STATUSES = ("candidate", "quarantined", "active", "retired")


def _home(request: Request) -> Home:
    return request.app.state.home  # type: ignore[no-any-return]


def _opt(value: str | None) -> str | None:
    return value.strip() or None if value is not None else None


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


# -- login -----------------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: Text = None) -> Response:
    return render(request, "login.html", next=next or "", root=_root(request), message=None)


@router.post("/login")
async def login(request: Request) -> Response:
    from urllib.parse import parse_qs

    fields = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
    key, target = fields.get("key", "").strip(), fields.get("next", "")
    root = _root(request)
    if not key or request.app.state.keys.verify(key) is None:
        return render(request, "login.html", status=401, next=target, root=root,
                      message="unknown API key: check it, or create one with `crystallise serve --create-key ORG`")
    if not target.startswith(root + "/") or target.startswith("//"):
        target = root + "/"  # never redirect off this UI
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, key, httponly=True, samesite="strict", path=root or "/",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    await form(request)
    response = RedirectResponse(_root(request) + "/login", status_code=303)
    response.delete_cookie(COOKIE, path=_root(request) or "/")
    return response


# -- overview --------------------------------------------------------------------------------------


def _org_filter(who: Principal, org: str | None) -> str | None:
    return who.read_org(_opt(org))


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, who: Who) -> Response:
    home = _home(request)
    traces = [shown_trace(who, t) for t in  # ids as the key knows them (no `@org` qualifier)
              browse.recent_traces(home.store, org=None if who.admin else who.org, user=who.user, limit=10)]
    versions = routes_versions.list_versions(home, who, limit=10, before=None).versions
    tasks = routes_versions.list_tasks(home, who).tasks
    return render(request, "overview.html", who=who, root=_root(request), traces=traces, versions=versions,
                  tasks=tasks, reports=find_reports(request.app.state.reports_dir)[:5])


# -- traces ----------------------------------------------------------------------------------------


@router.get("/traces", response_class=HTMLResponse)
def traces_page(request: Request, who: Who, agent: Text = None, user: Text = None, org: Text = None,
                status: Text = None, before: Annotated[int | None, Query(ge=1, le=2**62)] = None) -> Response:
    home = _home(request)
    state = _opt(status)
    if state not in (None, "ok", "error"):
        raise ValidationError(f"status must be ok or error, not {state!r}")
    rows = [shown_trace(who, t) for t in
            browse.recent_traces(home.store, org=_org_filter(who, org), agent=_opt(agent),
                                 user=who.read_user(_opt(user)), status=state, before_seq=before, limit=50)]
    filters = {"agent": _opt(agent) or "", "user": _opt(user) or "", "org": _opt(org) or "", "status": state or ""}
    older = None
    if len(rows) == 50 and rows[-1].seq:
        older = "?" + urlencode({**{k: v for k, v in filters.items() if v}, "before": rows[-1].seq})
    return render(request, "traces.html", who=who, root=_root(request), traces=rows, older=older, filters=filters)


_visible_item = routes_context.visible_item


def _shown_items(home: Home, who: Principal, trace: Trace) -> list[tuple[str, Item | None]]:
    ids: list[str] = []
    for span in trace.spans:
        for item_id in span.attributes.get("shown_items") or []:
            if isinstance(item_id, str) and item_id not in ids:
                ids.append(item_id)
    shown: list[tuple[str, Item | None]] = []
    for item_id in ids:
        try:
            item: Item | None = home.store.get_item(item_id)
        except NotFoundError:
            item = None  # removed since (a reverted add)
        if item is None or _visible_item(who, item):
            shown.append((item_id, item))
    return shown


def _versions_for(home: Home, who: Principal, trace_id: str) -> list[Version]:
    seen: dict[str, bool] = {}
    return [v for v in browse.versions_citing(home.store, trace_id)
            if who.admin or sees_version(home.store, who, v, seen)]


@router.get("/traces/{trace_id}", response_class=HTMLResponse)
def trace_page(request: Request, who: Who, trace_id: Annotated[str, Path(max_length=200)]) -> Response:
    home = _home(request)
    trace = routes_traces.visible_trace(home, who, trace_id)  # as stored: its id qualified by its org
    return render(request, "trace.html", who=who, root=_root(request), trace=shown_trace(who, trace),
                  shown=_shown_items(home, who, trace), versions=_versions_for(home, who, trace.id))


@router.post("/traces/{trace_id}/feedback")
async def trace_feedback(request: Request, who: Who, trace_id: Annotated[str, Path(max_length=200)]) -> Response:
    fields = await form(request)
    home = _home(request)
    trace = routes_traces.visible_trace(home, who, trace_id)
    score = {"good": 1.0, "bad": 0.0}.get(fields.get("rating", ""))
    comment = _opt(fields.get("comment")) or None
    correction = _opt(fields.get("correction")) or None
    if score is None and comment is None and correction is None:
        raise ValidationError("feedback needs a rating, a comment or a correction")
    if comment and len(comment) > 10_000:
        raise ValidationError("the comment is over 10000 characters: shorten it")
    # the stored id (`X@org`), never the given one: a no-org trace named `X` is not this key's
    home.store.add_feedback(Feedback(trace_id=trace.id, score=score, label=fields.get("rating") or None,
                                     correction=correction, comment=comment))
    return RedirectResponse(f"{_root(request)}/traces/{quote(trace_id)}#feedback", status_code=303)


# -- items -----------------------------------------------------------------------------------------


@router.get("/items", response_class=HTMLResponse)
def items_page(request: Request, who: Who, agent: Text = None, user: Text = None, org: Text = None,
               level: Text = None, status: Text = None, kind: Text = None) -> Response:
    lvl, state, kind_ = _opt(level), _opt(status), _opt(kind)
    if lvl not in (None, *LEVELS):
        raise ValidationError(f"level must be one of {', '.join(LEVELS)}, not {lvl!r}")
    if state not in (None, *STATUSES):
        raise ValidationError(f"status must be one of {', '.join(STATUSES)}, not {state!r}")
    if kind_ not in (None, "memory", "bullet", "skill", "note"):
        raise ValidationError(f"kind must be memory, bullet, skill or note, not {kind_!r}")
    wanted_org = _org_filter(who, org)
    rows = browse.list_items(_home(request).store, org=wanted_org, every_org=who.admin and wanted_org is None,
                             agent=_opt(agent), user=who.read_user(_opt(user)) if _opt(user) else None,
                             levels=(lvl,) if lvl else LEVELS, status=(state,) if state else STATUSES, kind=kind_,
                             viewer_user=who.user)
    counts = {s: sum(1 for i in rows if i.status == s) for s in STATUSES}
    return render(request, "items.html", who=who, root=_root(request), items=rows, counts=counts,
                  filters={"agent": _opt(agent) or "", "user": _opt(user) or "", "org": _opt(org) or "",
                           "level": lvl or "", "status": state or "", "kind": kind_ or ""},
                  levels=LEVELS, statuses=STATUSES)


@router.get("/items/{item_id}", response_class=HTMLResponse)
def item_page(request: Request, who: Who, item_id: Annotated[str, Path(max_length=200)]) -> Response:
    try:
        item = find_item(_home(request).store, item_id)  # a reverted item is shown from its ledger, as reverted
    except NotFoundError:
        item = None
    if item is None or not _visible_item(who, item):
        raise NotFoundError(f"item {item_id} not found: the items page lists the items this key can see")
    return render(request, "item.html", who=who, root=_root(request), item=item)


# -- versions --------------------------------------------------------------------------------------


@router.get("/versions", response_class=HTMLResponse)
def versions_page(request: Request, who: Who, before: Annotated[int | None, Query(ge=1, le=2**62)] = None) -> Response:
    page = routes_versions.list_versions(_home(request), who, limit=50, before=before)
    return render(request, "versions.html", who=who, root=_root(request), versions=page.versions,
                  older=page.next_before)


def _diff_lines(patch: str) -> list[tuple[str, str]]:
    lines = []
    for line in patch.splitlines():
        cls = ("meta" if line.startswith(("diff ", "index ", "+++", "---", "commit ", "Author:", "Date:")) else
               "hunk" if line.startswith("@@") else "add" if line.startswith("+") else
               "del" if line.startswith("-") else "")
        lines.append((cls, line))
    return lines


@router.get("/versions/{number}", response_class=HTMLResponse)
def version_page(request: Request, who: Who, number: Number) -> Response:
    home = _home(request)
    detail = routes_versions.get_version(number, home, who)
    cs = detail.changeset
    can_revert = detail.version.reverted_by is None and (who.admin or cs.scope.org == who.org) \
        and (who.user is None or cs.scope.user == who.user)
    return render(request, "version.html", who=who, root=_root(request), v=detail.version, cs=cs,
                  patch_lines=_diff_lines(detail.patch), can_revert=can_revert)


@router.post("/versions/{number}/revert")
async def revert(request: Request, who: Who, number: Number) -> Response:
    fields = await form(request)
    reason = (_opt(fields.get("reason")) or "reverted from the web UI")[:500]
    new = routes_versions.revert_version(number, _home(request), who, RevertIn(reason=reason))
    return RedirectResponse(f"{_root(request)}/versions/{new.number}", status_code=303)


@router.get("/versions/{number}/compare")
def compare(request: Request, who: Who, number: Number, against: Annotated[int, Query(ge=1, le=2**62)]) -> Response:
    a, b = sorted((against, number))
    return RedirectResponse(f"{_root(request)}/versions/{a}/diff/{b}", status_code=303)


@router.get("/versions/{a}/diff/{b}", response_class=HTMLResponse)
def diff_page(request: Request, who: Who, a: Number, b: Number) -> Response:
    diff = routes_versions.diff_versions(a, b, _home(request), who)
    return render(request, "diff.html", who=who, root=_root(request), a=a, b=b, patch=_diff_lines(diff.patch))


# -- tasks -----------------------------------------------------------------------------------------


@router.get("/tasks", response_class=HTMLResponse)
def tasks_page(request: Request, who: Who) -> Response:
    return render(request, "tasks.html", who=who, root=_root(request),
                  tasks=routes_versions.list_tasks(_home(request), who).tasks)


@router.get("/tasks/{name}", response_class=HTMLResponse)
def task_page(request: Request, who: Who, name: Annotated[str, Path(max_length=200)],
              org: Annotated[str | None, Query(max_length=200)] = None) -> Response:
    """The files of the namespace this key may see (routes_versions.task_root: engine/access.py)."""
    home = _home(request)
    task = routes_versions.get_task(name, home, who, org=_opt(org))
    _, root = routes_versions.task_root(home, who, name, task.org)
    view = View.of(home.repo)
    files: dict[str, Any] = {}
    for fname in ("code.py", "prompt.md", "schema.json"):
        text = view.read(root + fname)
        if text:
            files[fname] = text
    evidence: dict[str, list[dict[str, Any]]] = {}
    for fname in ("examples.jsonl", "evals.jsonl"):
        with contextlib.suppress(ValueError):
            evidence[fname] = view.jsonl(root + fname)[:50]
    return render(request, "task.html", who=who, root=_root(request), task=task, files=files, evidence=evidence)


# -- reports ---------------------------------------------------------------------------------------


@router.get("/reports", response_class=HTMLResponse)
def reports_page(request: Request, who: Who) -> Response:
    root = request.app.state.reports_dir
    return render(request, "reports.html", who=who, root=_root(request), reports=find_reports(root), folder=root)


@router.get("/reports/{name:path}/files/{filename}")
def report_asset(request: Request, who: Who, name: str, filename: str) -> Response:
    path = report_file(request.app.state.reports_dir, name, filename)
    media = {".png": "image/png", ".svg": "image/svg+xml", ".md": "text/plain; charset=utf-8",
             ".json": "application/json"}[path.suffix]
    return FileResponse(path, media_type=media, headers={"X-Content-Type-Options": "nosniff",
                                                         "Content-Security-Policy": "default-src 'none'"})


@router.get("/reports/{name:path}", response_class=HTMLResponse)
def report_page(request: Request, who: Who, name: str) -> Response:
    report = load_report(request.app.state.reports_dir, name)
    return render(request, "report.html", who=who, root=_root(request), report=report)
