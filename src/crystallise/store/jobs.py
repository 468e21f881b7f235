"""The store's side of jobs (engine/jobs.py): rows of the `jobs` table, and the atomic claim.

    insert(store, row)                       a new (queued) job row
    get(store, job_id) / rows(store, ...)    read them (dicts with JSON columns decoded)
    claim(store, worker=..., kinds=...)      take the oldest queued job whose scope has no running job,
                                             in one write transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL:
                                             an advisory transaction lock), so two workers never take
                                             one job, nor two jobs of one scope
    update(store, job_id, when=..., **cols)  change columns (only if the row's status is in `when`)
    append_log(store, job_id, line, ...)     a log line (the newest LOG_KEEP kept) + progress, atomically
    committed_for_job(store, job, fp)        the version of a change set this job committed already with
                                             this fingerprint (idempotent re-runs: engine/jobctx.py)

Functions take the `SqlStore` and use its transactions (`_read` / `_write`): the table is the
store's like any other, kept in its own module so `sql.py` stays one idea.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from crystallise.store.schema import changesets, jobs, versions
from crystallise.types import now

if TYPE_CHECKING:
    from crystallise.store.sql import SqlStore

__all__ = ["ACTIVE", "JOB_LOCK", "LOG_KEEP", "STATUSES", "TERMINAL", "append_log", "claim", "committed_for_job",
           "get", "insert", "rows", "update"]

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = ("succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")
LOG_KEEP = 500  # log lines kept per job (the oldest are dropped first)
JOB_LOCK = 0x6A6F62_636C6D  # pg_advisory_xact_lock key of a claim ("jobclm")
_JSON = ("params", "log", "result", "actor")


def _decode(row: Any) -> dict[str, Any]:
    out = dict(row)
    for k in _JSON:
        out[k] = json.loads(out[k]) if out.get(k) else ([] if k == "log" else None)
    out["cancel_requested"] = bool(out["cancel_requested"])
    return out


def _encode(cols: dict[str, Any]) -> dict[str, Any]:
    out = dict(cols)
    for k in _JSON:
        if k in out:
            out[k] = None if out[k] is None and k == "result" else json.dumps(out[k], sort_keys=True, default=str)
    return out


def insert(store: SqlStore, row: dict[str, Any]) -> None:
    with store._write(f"queueing job {row['id']}") as conn:  # noqa: SLF001 - the store's own transaction
        conn.execute(sa.insert(jobs).values(_encode(row)))


def get(store: SqlStore, job_id: str) -> dict[str, Any] | None:
    with store._read(f"reading job {job_id}") as conn:  # noqa: SLF001
        row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().first()
    return _decode(row) if row is not None else None


def rows(store: SqlStore, *, org: str | None = None, any_org: bool = True, status: str | None = None,
         kind: str | None = None, scope_key: str | None = None, user: str | None = None,
         limit: int = 50) -> list[dict[str, Any]]:
    """Job rows, newest first. `any_org=False` keeps only `org`'s rows (None: jobs outside any org)."""
    query = sa.select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)
    if not any_org:
        query = query.where(jobs.c.org_id.is_(None) if org is None else jobs.c.org_id == org)
    for column, value in ((jobs.c.status, status), (jobs.c.kind, kind), (jobs.c.scope_key, scope_key),
                          (jobs.c.user_id, user)):
        if value is not None:
            query = query.where(column == value)
    with store._read("listing jobs") as conn:  # noqa: SLF001
        return [_decode(r) for r in conn.execute(query).mappings()]


def claim(store: SqlStore, *, worker: str, kinds: tuple[str, ...] | None = None,
          job_id: str | None = None) -> dict[str, Any] | None:
    """Atomically mark the oldest queued job (of `kinds`; or exactly `job_id`) whose scope has no
    running job as running by `worker`, and return it (None: nothing to take)."""
    with store._write("claiming a job", lock=JOB_LOCK) as conn:  # noqa: SLF001
        busy = sa.select(jobs.c.scope_key).where(jobs.c.status == "running").scalar_subquery()
        query = (sa.select(jobs.c.id).where(jobs.c.status == "queued", jobs.c.scope_key.not_in(busy))
                 .order_by(jobs.c.created_at, jobs.c.id).limit(1))
        if kinds is not None:
            query = query.where(jobs.c.kind.in_(kinds))
        if job_id is not None:
            query = query.where(jobs.c.id == job_id)
        found = conn.execute(query).scalar()
        if found is None:
            return None
        at = now()
        conn.execute(sa.update(jobs).where(jobs.c.id == found, jobs.c.status == "queued").values(
            status="running", worker=worker, attempts=jobs.c.attempts + 1, started_at=at, finished_at=None,
            updated_at=at, error=None))
        row = conn.execute(sa.select(jobs).where(jobs.c.id == found)).mappings().first()
    return _decode(row)


def update(store: SqlStore, job_id: str, *, when: tuple[str, ...] | None = None, **cols: Any) -> bool:
    """Set `cols` on the job (only while its status is one of `when`); True if a row changed."""
    query = sa.update(jobs).where(jobs.c.id == job_id).values(_encode({**cols, "updated_at": now()}))
    if when is not None:
        query = query.where(jobs.c.status.in_(when))
    with store._write(f"updating job {job_id}") as conn:  # noqa: SLF001
        return bool(conn.execute(query).rowcount)


def append_log(store: SqlStore, job_id: str, line: str | None, *, progress: float | None = None,
               message: str | None = None) -> dict[str, Any] | None:
    """Add a log line (and move progress/message) in one transaction; returns the row after it."""
    with store._write(f"logging job {job_id}") as conn:  # noqa: SLF001
        row = conn.execute(sa.select(jobs.c.log, jobs.c.progress).where(jobs.c.id == job_id)).first()
        if row is None:
            return None
        log = json.loads(row.log) if row.log else []
        values: dict[str, Any] = {"updated_at": now()}
        if line is not None:
            log = [*log, {"at": now(), "line": line}][-LOG_KEEP:]
            values["log"] = json.dumps(log)
        if progress is not None:
            values["progress"] = max(0.0, min(1.0, float(progress)))
        if message is not None:
            values["message"] = message
        conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(values))
        full = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().first()
    return _decode(full) if full is not None else None


def committed_for_job(store: SqlStore, job_id: str, fingerprint: str) -> int | None:
    """The version number of an accepted change set that job `job_id` committed with `fingerprint`
    (None: it has not). Change sets carry the job id in `evidence["job"]` (engine/jobctx.py)."""
    query = (sa.select(changesets.c.id, changesets.c.evidence)
             .where(changesets.c.status.in_(("accepted", "committed")), changesets.c.evidence.contains(job_id)))
    with store._read(f"looking up job {job_id}'s change sets") as conn:  # noqa: SLF001
        for row in conn.execute(query):
            evidence = json.loads(row.evidence or "{}")
            if evidence.get("job") != job_id or evidence.get("job_fingerprint") != fingerprint:
                continue
            number = conn.execute(sa.select(versions.c.number).where(versions.c.changeset_id == row.id)).scalar()
            if number is not None:
                return int(number)
    return None
