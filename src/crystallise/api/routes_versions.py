"""Tasks and versions: what was learned, why, and undo.

    GET  /v1/tasks                      every task with its grade and evidence counts
    GET  /v1/tasks/{name}               spec, grade, program, files
    GET  /v1/versions?limit=20&before=57   newest first (cursor: `next_before`)
    GET  /v1/versions/{n}               change set, verdict, provenance, patch
    GET  /v1/versions/{a}/diff/{b}      the artifact patch from a to b
    POST /v1/versions/{n}/revert        undo n as a new version (history only grows)

Org keys see the versions of their org and agent-level versions (shared knowledge); other
orgs' versions answer 404. Reverting an agent-level version needs the admin key, because
it changes what every org's agents see.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query

from crystallise.api.auth import Forbidden, Principal
from crystallise.api.deps import HomeDep, PrincipalDep
from crystallise.api.schemas import RevertIn, TaskDetail, TaskList, TaskSummary, VersionDetail, VersionDiff, VersionPage
from crystallise.errors import NotFoundError, ValidationError
from crystallise.harness.spec import TaskSpec, View, task_path, valid_task_name
from crystallise.engine.home import Home
from crystallise.engine import access
from crystallise.engine.access import sees, sees_version
from crystallise.engine.committer import Committer, playbook_path
from crystallise.types import ChangeSet, Version

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["tasks and versions"])

VersionNo = Annotated[int, Path(ge=1, le=2**62)]


# -- tasks ---------------------------------------------------------------------------------------


def _read_jsonl(home: Home, path: str) -> list[dict[str, Any]]:
    try:
        return View(home.repo.read).jsonl(path)
    except ValueError:
        return []


def _spec(home: Home, org: str | None, name: str) -> Any:
    """The shared spec, with an org namespace's own grade and output schema over it."""
    shared = View.of(home.repo).spec(name)
    if shared is None or org is None:
        return shared
    own = home.repo.read(access.org_folder(org) + task_path(name, "spec.json"))
    if own:
        with contextlib.suppress(ValueError, AttributeError):
            data = json.loads(own)
            shared = TaskSpec(**{**asdict(shared), **{k: data[k] for k in ("grade", "output_schema") if k in data}})
    return shared


def _summary(home: Home, org: str | None, name: str) -> TaskSummary | None:
    spec = _spec(home, org, name)
    if spec is None:
        return None
    root = (access.org_folder(org) if org else "") + task_path(name, "")
    return TaskSummary(
        name=name, org=org, grade=spec.grade, description=spec.description,
        examples=len(_read_jsonl(home, root + "examples.jsonl")),
        eval_cases=len(_read_jsonl(home, root + "evals.jsonl")),
        code=home.repo.read(root + "code.py") is not None,
    )


def _org_folders(home: Home) -> list[str]:
    return sorted({"/".join(p.split("/")[:2]) + "/" for p in home.repo.list_files("orgs/") if p.count("/") >= 3})


@router.get("/tasks", response_model=TaskList, tags=["tasks and versions"], summary="Tasks and their grades")
def list_tasks(home: HomeDep, who: PrincipalDep) -> TaskList:
    """The shared tasks, and the namespaces learned from one org's runs that this key may see: an org
    key its own org's, the admin key every org's (engine/access.py)."""
    out: list[TaskSummary] = []
    for org, prefix in access.task_namespaces(who, _org_folders(home)):
        names = sorted({p[len(prefix):].split("/")[0] for p in home.repo.list_files(prefix)
                        if p[len(prefix):].count("/") >= 1})
        out += [s for s in (_summary(home, org, n) for n in names if _valid(n)) if s is not None]
    return TaskList(tasks=out)


def _valid(name: str) -> bool:
    try:
        valid_task_name(name)
    except ValidationError:
        return False
    return True


def task_root(home: Home, who: Principal, name: str, org: str | None) -> tuple[TaskSummary, str]:
    """The task `name` as `who` may see it and the folder its files are read from: `org`'s namespace
    (an org key: only its own; another org's answers like an unknown task), else the shared one."""
    valid_task_name(name)
    if org is not None and not who.admin and org != who.org:
        raise NotFoundError(f"no task {name!r}: GET /v1/tasks lists the tasks")
    if org is None and not who.admin and home.repo.list_files(access.org_folder(who.org) + task_path(name, "")):
        org = who.org  # an org key is shown what its own runs taught, where they taught anything
    summary = _summary(home, org, name)
    if summary is None or (org is not None and not home.repo.list_files(access.org_folder(org) + task_path(name, ""))):
        raise NotFoundError(f"no task {name!r}: GET /v1/tasks lists the tasks")
    return summary, (access.org_folder(org) if org else "") + task_path(name, "")


@router.get("/tasks/{name}", response_model=TaskDetail, summary="One task: spec, grade, program, files")
def get_task(name: str, home: HomeDep, who: PrincipalDep,
             org: Annotated[str | None, Query(min_length=1, max_length=200,
                                              description="an org's namespace (the admin key; an org key: its own)")]
             = None) -> TaskDetail:
    """An org key is shown its own org's namespace of the task (or the shared task where its runs
    taught nothing); another org's namespace answers 404 like an unknown task."""
    summary, root = task_root(home, who, name, org)
    spec = _spec(home, summary.org, name)
    program_text = home.repo.read(root + "program.json")
    program: Any = None
    if program_text:
        try:
            program = json.loads(program_text)
        except json.JSONDecodeError:
            program = program_text
    return TaskDetail(**summary.model_dump(), spec=asdict(spec), program=program, files=home.repo.list_files(root))


# -- versions ------------------------------------------------------------------------------------


def _visible(home: Home, who: Principal, number: int) -> tuple[Version, ChangeSet]:
    """The version and its change set if the caller may see them; NotFoundError otherwise."""
    try:
        version = home.store.get_version(number)
        changeset = home.store.get_changeset(version.changeset_id)
    except NotFoundError:
        version = changeset = None  # type: ignore[assignment]
    if version is None or not sees(who, changeset):
        raise NotFoundError(f"version {number} not found: GET /v1/versions lists the versions this key can see")
    return version, changeset


@router.get("/versions", response_model=VersionPage, summary="Versions, newest first")
def list_versions(
    home: HomeDep,
    who: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[int | None, Query(ge=1, le=2**62,
                                        description="only versions numbered below this (cursor)")] = None,
) -> VersionPage:
    newest = home.store.list_versions(limit=1)
    if not newest:
        return VersionPage(versions=[], next_before=None)
    top = newest[0].number if before is None else before - 1
    fetch = max(0, newest[0].number - top) + limit
    seen: dict[str, bool] = {}
    while True:  # the store pages newest-first by count only: widen until the page is full
        rows = home.store.list_versions(limit=fetch)
        page = [v for v in rows if v.number <= top and (who.admin or _visible_cached(home, who, v, seen))]
        if len(page) >= limit or len(rows) < fetch:
            break
        fetch *= 2
    page = page[:limit]
    return VersionPage(versions=page, next_before=page[-1].number if len(page) == limit else None)


_sees = sees  # the tenancy rule lives in crystallise.engine.access (kept under its old name for one release)


def _visible_cached(home: Home, who: Principal, version: Version, cache: dict[str, bool]) -> bool:
    return sees_version(home.store, who, version, cache)


@router.get("/versions/{number}", response_model=VersionDetail, summary="One version with verdict and patch")
def get_version(number: VersionNo, home: HomeDep, who: PrincipalDep) -> VersionDetail:
    version, changeset = _visible(home, who, number)
    patch = home.repo.show(version.commit) if version.commit else \
        "(user-level change: recorded in the store ledger only; the deltas are in the change set)"
    return VersionDetail(version=version, changeset=changeset, patch=patch)


@router.get("/versions/{a}/diff/{b}", response_model=VersionDiff, summary="Artifact patch from version a to b")
def diff_versions(a: VersionNo, b: VersionNo, home: HomeDep, who: PrincipalDep) -> VersionDiff:
    va, _ = _visible(home, who, a)
    vb, _ = _visible(home, who, b)
    if not va.commit or not vb.commit:
        raise NotFoundError(f"version {a if not va.commit else b} changed user-level items only: "
                            "it has no git commit to diff; GET /v1/versions/{n} shows its deltas")
    if who.admin:
        return VersionDiff(a=a, b=b, patch=home.repo.diff(va.commit, vb.commit))
    # an org key sees the shared artifacts and its own org's playbooks, never other orgs': only files the
    # versions it may see changed, and none that a version it may not see changed (another org's task
    # runs recorded as eval cases, another org's skill) — those are left out of the patch
    roots = ("README.md", "context/agent/", f"context/org/{who.org}/", "tasks/", "skills/", "adapters/",
             access.org_folder(who.org))
    seen: set[str] = set()
    hidden: set[str] = set()
    for v in home.store.list_versions(limit=max(a, b) + 1):
        if min(a, b) < v.number <= max(a, b):
            changeset = home.store.get_changeset(v.changeset_id)
            (seen if sees(who, changeset) else hidden).update(_paths(changeset))
    files = sorted(p for p in seen - hidden if p.startswith(roots))
    patch = "".join(home.repo.diff(va.commit, vb.commit, path=p) for p in files)
    return VersionDiff(a=a, b=b, patch=patch)


def _paths(changeset: ChangeSet) -> set[str]:
    """The files a change set wrote: its artifacts, and the playbooks its item deltas re-rendered."""
    out = set()
    for d in changeset.deltas:
        if d.target == "artifact" and d.path:
            out.add(d.path)
        for snap in (d.before, d.after):
            if isinstance(snap, dict) and snap.get("level") == "agent":
                out.add(playbook_path("agent", snap.get("agent_id") or "default"))
            elif isinstance(snap, dict) and snap.get("level") == "org" and snap.get("org_id"):
                out.add(playbook_path("org", snap["org_id"]))
    return out


@router.post("/versions/{number}/revert", status_code=201, response_model=Version, summary="Revert a version")
def revert_version(
    number: VersionNo, home: HomeDep, who: PrincipalDep,
    body: Annotated[RevertIn | None, Body()] = None,
) -> Version:
    """Undo version `number` as a new version; 409 if a later version changed the same files."""
    _, changeset = _visible(home, who, number)
    if not who.admin and changeset.scope.org != who.org:
        raise Forbidden(f"version {number} is agent-level (shared by every org): reverting it needs the admin key")
    if who.user is not None and changeset.scope.user != who.user:
        raise Forbidden(f"this API key is bound to user {who.user!r}: it can only revert versions of that user's "
                        "own items; use the org's key")
    reason = body.reason if body else "requested through the API"
    return Committer(home).revert(number, reason=reason, actor=access.actor_for(who, "revert"))
