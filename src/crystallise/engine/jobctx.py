"""What a running job leaves on the work it does: the job id on every change set it commits, and
its progress and log lines in the job's record.

    with job_scope("job_1a2b"):            # engine/jobs.run enters it around a job's work
        Committer(home).commit(cs)         # cs.evidence["job"] == "job_1a2b", plus a fingerprint

A change set committed inside a job carries the job id and a fingerprint of what it changes
(`fingerprint`: learner, layer, scope and every delta's target and new content, never the
random ids or timestamps a re-run would draw afresh). When a job is run again -- a worker died
after the commit but before the job was marked done, a Ray retry -- and its learner proposes the
same change, `already_committed` finds the version the first attempt committed, and the
committer returns that version instead of committing twice. Outside a job nothing is stamped,
and a change set's own claim to a job id is dropped: the id comes from the running job only.

`Reporter` is the job's progress line: `progress(0.4, "learn: fewshot")`, `log(line)`; and a
plain `say(text)` callable for the engine functions that report progress as text (the loop, the
dream, adapters). Every call checks the job's cancel request and raises `Cancelled` if a person
asked to stop it: the work stops at its next report, between commits, never inside one.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from crystallise.errors import CrystalliseError
from crystallise.store import jobs as job_rows
from crystallise.store.sql import SqlStore
from crystallise.types import ChangeSet

__all__ = ["Cancelled", "Reporter", "already_committed", "current_job", "fingerprint", "job_scope", "stamp"]

_JOB: contextvars.ContextVar[str | None] = contextvars.ContextVar("crystallise_job", default=None)
_ITEM_KEYS = ("kind", "level", "section", "status", "text", "agent_id", "org_id", "user_id")


class Cancelled(CrystalliseError):
    """The job was cancelled while it ran (it stops at its next progress report)."""


def current_job() -> str | None:
    """The id of the job this code runs in (None: not in a job)."""
    return _JOB.get()


@contextmanager
def job_scope(job_id: str) -> Iterator[None]:
    token = _JOB.set(job_id)
    try:
        yield
    finally:
        _JOB.reset(token)


def fingerprint(cs: ChangeSet) -> str:
    """What `cs` changes, hashed: equal for the same proposal made again (see the module docstring)."""
    deltas = []
    for d in cs.deltas:
        if d.target == "artifact":
            deltas.append([d.op, d.target, d.path, d.after])
        else:
            after = {k: d.after.get(k) for k in _ITEM_KEYS} if isinstance(d.after, dict) else None
            deltas.append([d.op, d.target, d.item_id if d.op != "add" else None, after])
    doc = [cs.learner, cs.layer, cs.scope.to_dict(), deltas]
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:32]


def stamp(cs: ChangeSet) -> None:
    """Put the running job's id and `cs`'s fingerprint in its evidence (outside a job: drop both)."""
    evidence = {k: v for k, v in cs.evidence.items() if k not in ("job", "job_fingerprint")}
    job = current_job()
    if job is not None:
        evidence.update(job=job, job_fingerprint=fingerprint(cs))
    cs.evidence = evidence


def already_committed(store: SqlStore, cs: ChangeSet) -> int | None:
    """The version the running job committed earlier for the same proposal as `cs` (None: none)."""
    job, fp = cs.evidence.get("job"), cs.evidence.get("job_fingerprint")
    if job is None or job != current_job() or not isinstance(fp, str):
        return None
    return job_rows.committed_for_job(store, job, fp)


class Reporter:
    """A job's progress and log (see the module docstring). Writes at most every `every_s` seconds
    for progress alone; every log line is written."""

    def __init__(self, store: SqlStore, job_id: str, *, every_s: float = 0.5) -> None:
        self.store, self.job_id, self.every_s = store, job_id, every_s
        self._last = 0.0
        self.fraction = 0.0

    def check(self) -> None:
        row = job_rows.get(self.store, self.job_id)
        if row is not None and row["cancel_requested"]:
            raise Cancelled(f"job {self.job_id} was cancelled")

    def progress(self, fraction: float | None = None, message: str | None = None, *, log: bool = True) -> None:
        if fraction is not None:
            self.fraction = max(self.fraction, min(1.0, fraction))
        at = time.monotonic()
        if not log and at - self._last < self.every_s:
            return
        self._last = at
        row = job_rows.append_log(self.store, self.job_id, message if log else None,
                                  progress=self.fraction, message=message)
        if row is not None and row["cancel_requested"]:
            raise Cancelled(f"job {self.job_id} was cancelled")

    def log(self, line: str) -> None:
        self.progress(None, line)

    def say(self, text: str) -> None:
        """A text progress callback (`Loop.learn(progress=...)`, `dream(progress=...)`)."""
        self.progress(None, text)

    def steps(self, total: int) -> Any:
        """A `say` that also moves the fraction one step of `total` per message (capped below 1)."""
        done = [0]

        def say(text: str) -> None:
            done[0] += 1
            self.progress(min(0.95, done[0] / max(total, 1)), text)

        return say
