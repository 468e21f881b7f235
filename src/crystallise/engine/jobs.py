"""Learning runs as jobs: every learning run is a record in the store, queued, claimed, run, finished.

    job = submit(home, "learn", scope=Scope(org="acme"), params={"task": "ratio"}, actor=who)
    job = claim(home, worker="w1")            # the oldest queued job whose scope runs nothing else
    job = run(home, job.id, worker="w1")      # to a terminal state, with progress and log lines
    cancel(home, job.id, who); get(home, job.id, who); list_jobs(home, who, status="running")

States (a job moves only along these arrows; `run` of a finished job returns it unchanged):

    queued ──claim──► running ──► succeeded | failed | cancelled
       └──cancel──► cancelled         (cancel of a running job: it stops at its next progress report)

One job at a time per scope: `claim` takes a job only while no job of its scope runs (one write
transaction), and `run` holds the scope's lock while it works -- SQLite: a file lock in the home
(`locks/`), PostgreSQL: a session advisory lock -- so a job started by hand, or a second worker
on another machine, waits rather than learning the same scope twice at once. A worker that died
leaves a running job whose lock nobody holds; `reap` puts it back in the queue (or fails it after
`max_attempts`), and its re-run never commits a change its first attempt committed: change sets
carry the job id (engine/jobctx.py).

Tenancy (engine/access.py): a job belongs to its scope's org; an org key sees, cancels and
starts only its own org's jobs, and another org's job id answers exactly like an unknown one. A
user-bound key starts none (engine/job_kinds.py says who may start which kind).

Executors run claimed jobs: `InProcessExecutor` (threads in this process) is the embedded
default; an executor has two methods, `start(job)` and `cancel(job_id)`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa

from crystallise.context.items import validate_scope
from crystallise.engine import access
from crystallise.engine.home import Home
from crystallise.engine.job_kinds import KINDS, Refused, check
from crystallise.engine.jobctx import Cancelled, Reporter, job_scope
from crystallise.errors import NotFoundError, ValidationError
from crystallise.harness.spec import View, valid_task_name
from crystallise.store import jobs as rows
from crystallise.store.engine import is_postgres, org_scope
from crystallise.types import Scope, new_id, now

__all__ = ["Executor", "InProcessExecutor", "Job", "Refused", "cancel", "claim", "get", "list_jobs", "reap", "run",
           "scope_key", "scope_lock", "submit", "worker_id"]

log = logging.getLogger("crystallise.jobs")


@dataclass
class Job:
    """One learning run (see the module docstring). `result`: the versions committed and the change
    sets not accepted (per kind: engine/job_kinds.py); `error`: why it failed."""

    id: str
    kind: str
    scope: Scope
    params: dict[str, Any]
    status: str = "queued"
    progress: float = 0.0
    message: str = ""
    log: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    max_attempts: int = 3
    worker: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    actor: dict[str, Any] = field(default_factory=dict)
    cancel_requested: bool = False
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = 0.0

    @property
    def done(self) -> bool:
        return self.status in rows.TERMINAL

    @property
    def scope_key(self) -> str:
        return scope_key(self.kind, self.scope)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["scope"] = self.scope.to_dict()
        return data

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        scope = Scope(agent=row["agent_id"], org=row["org_id"], user=row["user_id"])
        names = {f.name for f in dataclasses.fields(cls)} - {"scope"}
        return cls(scope=scope, **{k: v for k, v in row.items() if k in names})


class Executor(Protocol):
    """Runs jobs somewhere: `start` hands a queued job over (it is claimed and run there),
    `cancel` asks a running one to stop. `InProcessExecutor` here; Ray in `crystallise.scale`."""

    def start(self, job: Job) -> None: ...

    def cancel(self, job_id: str) -> None: ...


# -- scopes and their locks -----------------------------------------------------------------------


def scope_key(kind: str, scope: Scope) -> str:
    """The scope a job holds while it runs: extraction reads every trace (one scope for the home),
    everything else the agent/org/user it names."""
    if "global" in KINDS[kind].levels:
        return "global"
    return "/".join([scope.agent, scope.org or "-", scope.user or "-"])


def _lock_number(key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"crystallise-job:{key}".encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def scope_lock(home: Home, key: str, *, wait: bool = True) -> Iterator[bool]:
    """Hold the lock of scope `key` (yields True), or with `wait=False` yield False at once when
    another holder has it. SQLite homes: `flock` on `<home>/locks/job-<hash>.lock` (the OS drops it
    when a process dies); PostgreSQL: a session advisory lock on a connection of its own."""
    store = home.store
    if is_postgres(store.engine):
        with store.engine.connect() as conn:
            number = _lock_number(key)
            if wait:
                conn.execute(sa.select(sa.func.pg_advisory_lock(number)))
                got = True
            else:
                got = bool(conn.execute(sa.select(sa.func.pg_try_advisory_lock(number))).scalar())
            conn.commit()
            try:
                yield got
            finally:
                if got:
                    try:
                        conn.execute(sa.select(sa.func.pg_advisory_unlock(number)))
                        conn.commit()
                    except Exception:  # a session lock must never go back to the pool held
                        conn.invalidate()
                        raise
        return
    folder = home.path / "locks"
    folder.mkdir(exist_ok=True)
    path = folder / f"job-{hashlib.sha256(key.encode()).hexdigest()[:24]}.lock"
    with open(path, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def worker_id() -> str:
    """host:pid:thread -- who runs a job (shown in `crystallise jobs show`)."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


# -- the record ---------------------------------------------------------------------------------


def _actor(who: access.Who | None) -> dict[str, Any]:
    if who is None:
        return {"via": "local", "admin": True}
    return {"via": "key", "org": who.org, "user": who.user, "admin": bool(who.admin),
            "key_id": getattr(who, "key_id", None)}


def submit(home: Home, kind: str, *, scope: Scope, params: dict[str, Any] | None = None,
           actor: access.Who | None = None, max_attempts: int = 3) -> Job:
    """Queue a job. `actor`: the API caller (None: the operator on this machine, with admin rights).
    Unknown kinds, unknown or mistyped parameters and scopes the actor may not touch are refused
    (ValidationError / Refused) and nothing is stored."""
    if not isinstance(scope, Scope):
        raise ValidationError(f"scope must be a crystallise.types.Scope, not {type(scope).__name__}")
    scope = validate_scope(scope.agent, scope.org, scope.user)
    if actor is not None and not actor.admin and scope.org not in (None, actor.org):
        raise Refused(f"this API key belongs to org {actor.org!r}: it can start jobs of that org only")
    admin = actor is None or bool(actor.admin)
    _, params = check(kind, scope, params, admin=admin, user_key=actor is not None and actor.user is not None)
    if kind == "learn":
        _require_task(home, params["task"])
    at = now()
    job = Job(id=new_id("job_"), kind=kind, scope=scope, params=params, actor=_actor(actor),
              max_attempts=max_attempts, created_at=at, updated_at=at)
    row = {k: v for k, v in job.to_dict().items() if k != "scope"}
    row.update(scope_key=job.scope_key, agent_id=scope.agent, org_id=scope.org, user_id=scope.user)
    rows.insert(home.store, row)  # an org key's request: PostgreSQL checks the row is its org's too
    return job


def _require_task(home: Home, name: str) -> None:
    if View.of(home.repo).spec(valid_task_name(name)) is None:
        raise NotFoundError(f"no task {name!r}: define it with `crystallise tasks define {name}` "
                            "(or POST /v1/tasks) first")


def _load(home: Home, job_id: str) -> Job | None:
    """The job whatever its org (the workers' read: they run every org's jobs)."""
    with org_scope(None):
        row = rows.get(home.store, job_id)
    return Job.from_row(row) if row is not None else None


def get(home: Home, job_id: str, actor: access.Who | None = None) -> Job:
    """The job, if `actor` may see it; otherwise the same NotFoundError as an unknown id. Inside an
    org key's request PostgreSQL's row-level security hides other orgs' rows as well (migration 6)."""
    row = rows.get(home.store, job_id) if isinstance(job_id, str) and job_id else None
    job = Job.from_row(row) if row is not None else None
    if job is None or (actor is not None and not access.may_see_record(actor, job.scope.org, job.scope.user)):
        raise NotFoundError(f"job {job_id!r} not found: `crystallise jobs list` (GET /v1/jobs) lists jobs")
    return job


def list_jobs(home: Home, actor: access.Who | None = None, *, status: str | None = None, kind: str | None = None,
              limit: int = 50) -> list[Job]:
    """Jobs `actor` may see, newest first."""
    if status is not None and status not in rows.STATUSES:
        raise ValidationError(f"unknown job status {status!r}: use one of {', '.join(rows.STATUSES)}")
    if kind is not None and kind not in KINDS:
        raise ValidationError(f"unknown job kind {kind!r}: use one of {', '.join(KINDS)}")
    if not 1 <= limit <= 1000:
        raise ValidationError("limit must be between 1 and 1000")
    everyone = actor is None or actor.admin
    found = rows.rows(home.store, org=None if everyone else actor.org, any_org=everyone, status=status,
                      kind=kind, user=None if actor is None else actor.user, limit=limit)
    return [Job.from_row(r) for r in found]


def cancel(home: Home, job_id: str, actor: access.Who | None = None) -> Job:
    """Cancel a queued job now, or ask a running one to stop at its next report; a finished job is
    returned as it is. Another org's job id: NotFoundError, as for an unknown one."""
    job = get(home, job_id, actor)
    if actor is not None and actor.user is not None:
        raise Refused("a user-bound key cannot cancel jobs: use the org's key")
    if not rows.update(home.store, job.id, when=("queued",), status="cancelled", finished_at=now(),
                       message="cancelled before it ran", cancel_requested=True):
        rows.update(home.store, job.id, when=("running",), cancel_requested=True)
    return get(home, job_id, actor)


# -- running ------------------------------------------------------------------------------------


def claim(home: Home, *, worker: str, kinds: tuple[str, ...] | list[str] | None = None) -> Job | None:
    """Atomically take the oldest queued job (of `kinds`) whose scope has no running job; None: none."""
    with org_scope(None):
        row = rows.claim(home.store, worker=worker, kinds=tuple(kinds) if kinds else None)
    return Job.from_row(row) if row is not None else None


def run(home: Home, job_id: str, *, worker: str | None = None, poll_s: float = 0.2) -> Job:
    """Run a job to a terminal state and return it. A queued job is claimed first (waiting while
    another job of its scope runs); a job `worker` claimed runs; a running job of a worker that
    died (its scope lock is free) runs again as a new attempt; a finished job is returned as is."""
    worker = worker or worker_id()
    waited = 0.0
    with org_scope(None):
        while True:
            job = _load(home, job_id)
            if job is None:
                raise NotFoundError(f"job {job_id!r} not found")
            if job.done:
                return job
            if job.status == "queued":
                row = rows.claim(home.store, worker=worker, job_id=job_id)
                if row is None:
                    time.sleep(poll_s)  # another job of its scope runs: wait for it
                    waited += poll_s
                    if waited >= 10.0:  # ... unless its worker died: put that job back
                        reap(home)
                        waited = 0.0
                    continue
                job = Job.from_row(row)
            with scope_lock(home, job.scope_key) as _:
                job = _load(home, job_id) or job
                if job.done:
                    return job
                if job.worker != worker:  # a re-run of a job whose worker died: a new attempt, ours now
                    rows.update(home.store, job_id, when=("running",), worker=worker, attempts=job.attempts + 1)
                return _execute(home, job_id, worker)


def _execute(home: Home, job_id: str, worker: str) -> Job:
    job = _load(home, job_id)
    assert job is not None  # noqa: S101 - loaded under the scope lock a moment ago
    rep = Reporter(home.store, job_id)
    kind = KINDS[job.kind]
    try:
        rep.progress(0.0, f"{job.kind} started on {worker} (attempt {job.attempts})")
        with job_scope(job_id):
            result = kind.run(home, job.scope, job.params, rep)
    except Cancelled:
        rows.update(home.store, job_id, when=("running",), status="cancelled", finished_at=now(),
                    message="cancelled while it ran")
    except Exception as e:  # noqa: BLE001 - any failure of the work is the job's failure, recorded
        log.warning("job %s (%s) failed: %s: %s", job_id, job.kind, type(e).__name__, e)
        error = f"{type(e).__name__}: {e}"[:2000]
        rows.append_log(home.store, job_id, f"failed: {error}")
        rows.update(home.store, job_id, when=("running",), status="failed", finished_at=now(), error=error,
                    message="failed")
    else:
        rows.append_log(home.store, job_id, "succeeded", progress=1.0)
        rows.update(home.store, job_id, when=("running",), status="succeeded", finished_at=now(), result=result,
                    progress=1.0, message=_summary(result))
    done = _load(home, job_id)
    assert done is not None  # noqa: S101
    return done


def _summary(result: dict[str, Any]) -> str:
    if result.get("summary"):
        return str(result["summary"])
    versions = result.get("versions") or []
    return f"{len(versions)} version(s) committed" if versions else "nothing committed"


def reap(home: Home, *, grace_s: float = 10.0) -> list[Job]:
    """Running jobs whose scope lock nobody holds (their worker died): back to the queue, or failed
    after `max_attempts`. Returns the jobs it moved. Safe to call from any worker at any time; a job
    claimed less than `grace_s` ago is left alone (its worker is about to take the lock)."""
    moved = []
    with org_scope(None):
        for row in rows.rows(home.store, status="running", limit=1000):
            job = Job.from_row(row)
            if job.started_at is not None and now() - job.started_at < grace_s:
                continue
            with scope_lock(home, job.scope_key, wait=False) as free:
                if not free:
                    continue
                fresh = _load(home, job.id)
                if fresh is None or fresh.status != "running":
                    continue
                if fresh.attempts >= fresh.max_attempts:
                    rows.update(home.store, job.id, when=("running",), status="failed", finished_at=now(),
                                error=f"its worker {fresh.worker} stopped {fresh.attempts} time(s)", message="failed")
                else:
                    rows.append_log(home.store, job.id, f"worker {fresh.worker} stopped: queued again")
                    rows.update(home.store, job.id, when=("running",), status="queued", worker=None)
                moved.append(_load(home, job.id) or fresh)
    return moved


class InProcessExecutor:
    """Runs jobs on `threads` threads of this process: each loops claim -> run. `start(job)` wakes
    one (the job itself is taken in queue order by whichever thread is free); `close()` stops them
    after their current job.

        with InProcessExecutor(home) as ex:
            ex.start(submit(home, "learn", scope=Scope(), params={"task": "ratio"}))
    """

    def __init__(self, home: Home, *, threads: int = 1, kinds: tuple[str, ...] | None = None,
                 idle_s: float = 1.0) -> None:
        self.home, self.kinds, self.idle_s = home, kinds, idle_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, name=f"crystallise-job-{i}", daemon=True)
                         for i in range(threads)]
        for t in self._threads:
            t.start()

    def start(self, job: Job) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        cancel(self.home, job_id)

    def _loop(self) -> None:
        worker = worker_id()
        while not self._stop.is_set():
            try:
                job = claim(self.home, worker=worker, kinds=self.kinds)
                if job is not None:
                    run(self.home, job.id, worker=worker)
                    continue
            except Exception:  # noqa: BLE001 - a store hiccup must not kill the worker thread
                log.exception("job worker %s", worker)
            self._wake.wait(self.idle_s)
            self._wake.clear()

    def close(self, timeout: float | None = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout)

    def __enter__(self) -> InProcessExecutor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
