"""Continuous learning: queue jobs when the evidence is there, without anyone calling `learn`.

    policy = LearnPolicy.from_config(home.config)          # config.json "learn": {...}
    with Scheduler(home, policy).running(executor):       # `crystallise serve` (unless --no-learn),
        ...                                                # `crystallise worker`

Each tick (every `poll_s` seconds) queues, for work not already queued or running:

    learn    a task, per org (and the operator's own runs), once it has >= `task_outcomes` new verified
             outcomes since its last learn (the loop's watermark, `engine/loop.learn_watermark`)
    dream    a scope (agent / org / user) after `dream_traces` new traces since its last dream, or,
             with `dream_every_s`, any scope with new traces that long after its last dream job
    extract  when a session ends: the newest trace of a session since the last extraction is
             `session_idle_s` old (a trace without a session ends its own at once)

Thresholds live in the home's config.json under "learn" (defaults below); `"enabled": false`
there, or `crystallise serve --no-learn`, switches the scheduler off. A job that failed is not
queued again for its scope before `retry_after_s`. Several processes may run a scheduler over
one store: only the one holding the scheduler lock (`jobs.scope_lock(home, "scheduler")`: a
file lock on SQLite, an advisory lock on PostgreSQL) queues anything; the others wait to take over.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

from crystallise.engine import jobs, session_end
from crystallise.engine.dream import scope_key as dream_key
from crystallise.engine.home import Home
from crystallise.engine.loop import learn_watermark
from crystallise.engine.scope import teaches
from crystallise.engine.task_defs import task_names
from crystallise.errors import ConfigError
from crystallise.evidence import verified_cases
from crystallise.types import Scope, now

__all__ = ["LearnPolicy", "Scheduler"]

log = logging.getLogger("crystallise.scheduler")


@dataclass(frozen=True)
class LearnPolicy:
    enabled: bool = True
    task_outcomes: int = 20  # new verified outcomes of a task (per org) that queue a learn job
    dream_traces: int = 200  # new traces of a scope that queue a dream job (0: never by count)
    dream_every_s: float | None = None  # also dream any scope with new traces this long after its last dream
    extract: bool = True  # queue extraction when a session ends
    session_idle_s: float = 600.0  # a session with no trace for this long has ended
    retry_after_s: float = 300.0  # a failed job's scope waits this long before it is queued again
    poll_s: float = 5.0

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LearnPolicy:
        raw = config.get("learn", {})
        if not isinstance(raw, dict):
            raise ConfigError('config.json "learn" must be an object, e.g. {"task_outcomes": 20}')
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(f'config.json "learn" has unknown key(s) {", ".join(unknown)}: use {", ".join(known)}')
        return cls(**raw)


class Scheduler:
    """Queues learning jobs on evidence (see the module docstring)."""

    def __init__(self, home: Home, policy: LearnPolicy | None = None) -> None:
        self.home = home
        self.policy = policy or LearnPolicy.from_config(home.config)
        self._stop = threading.Event()
        self.leader = False

    # -- one tick ----------------------------------------------------------------------------
    def tick(self) -> list[jobs.Job]:
        """Queue what the evidence calls for now; returns the jobs queued."""
        if not self.policy.enabled:
            return []
        active = [j for j in jobs.list_jobs(self.home, limit=1000) if not j.done or j.status == "failed"]
        queued = []
        for kind, scope, params in [*self._learn_due(), *self._dreams_due(), *self._extract_due()]:
            if self._blocked(active, kind, scope, params):
                continue
            job = jobs.submit(self.home, kind, scope=scope, params=params)
            log.info("queued %s for %s %s (%s)", kind, scope.to_dict(), params, job.id)
            active.append(job)
            queued.append(job)
        return queued

    def _blocked(self, active: list[jobs.Job], kind: str, scope: Scope, params: dict[str, Any]) -> bool:
        for j in active:
            if j.kind != kind or j.scope != scope or j.params.get("task") != params.get("task"):
                continue
            if not j.done:
                return True  # already queued or running
            if j.status == "failed" and now() - (j.finished_at or 0) < self.policy.retry_after_s:
                return True
        return False

    def _learn_due(self) -> Iterator[tuple[str, Scope, dict[str, Any]]]:
        store = self.home.store
        orgs = sorted({org for _, org, _, _ in store.trace_scopes()}, key=lambda o: o or "")
        for task in task_names(self.home):
            for org in orgs:
                since = store.get_watermark(learn_watermark(task, org))
                n = self.policy.task_outcomes
                if store.count_traces(name=task, org=org, after_seq=since, limit=max(n, 1)) < n:
                    continue  # too few new runs to hold n verified outcomes: no need to read their feedback
                fresh = [t for t in store.list_traces(name=task, org=org, after_seq=since, with_children=True,
                                                      limit=10_000) if teaches(t, org=org)]
                if len(verified_cases(fresh, task)) >= self.policy.task_outcomes:
                    yield "learn", Scope(org=org), {"task": task}

    def _dreams_due(self) -> Iterator[tuple[str, Scope, dict[str, Any]]]:
        p = self.policy
        if not p.dream_traces and p.dream_every_s is None:
            return
        store = self.home.store
        marks = store.watermarks_with_prefix("dream/")
        last = {(j.scope.agent, j.scope.org, j.scope.user): j.created_at
                for j in reversed(jobs.list_jobs(self.home, kind="dream", limit=1000))}
        for agent, org, user, top in store.trace_scopes():
            scope = Scope(agent=agent, org=org, user=user)
            since = marks.get(f"dream/{dream_key(scope)}", 0)
            if top <= since:
                continue
            if p.dream_traces and store.count_traces(agent=agent, org=org, user=user, after_seq=since,
                                                     limit=p.dream_traces) >= p.dream_traces:
                yield "dream", scope, {}
            elif p.dream_every_s is not None and now() - last.get((agent, org, user), 0.0) >= p.dream_every_s:
                yield "dream", scope, {}

    def _extract_due(self) -> Iterator[tuple[str, Scope, dict[str, Any]]]:
        # what "a session has ended" means is engine/session_end.py's (idle, an explicit end, no session)
        if self.policy.extract and session_end.due(self.home, idle_s=self.policy.session_idle_s):
            yield "extract", Scope(), {}

    # -- running -----------------------------------------------------------------------------
    def loop(self, executor: jobs.Executor | None = None) -> None:
        """Tick until `stop()`, while holding the scheduler lock (waiting for it otherwise); hand
        each queued job to `executor`, and put back the jobs of workers that died."""
        while not self._stop.is_set():
            with jobs.scope_lock(self.home, "scheduler", wait=False) as leader:
                self.leader = leader
                while leader and not self._stop.is_set():
                    try:
                        jobs.reap(self.home)
                        for job in self.tick():
                            if executor is not None:
                                executor.start(job)
                    except Exception:  # noqa: BLE001 - one bad tick must not stop continuous learning
                        log.exception("scheduler tick failed")
                    self._stop.wait(self.policy.poll_s)
            self.leader = False
            self._stop.wait(self.policy.poll_s)

    def stop(self) -> None:
        self._stop.set()

    @contextlib.contextmanager
    def running(self, executor: jobs.Executor | None = None) -> Iterator[Scheduler]:
        """The scheduler on a thread of its own for the block (nothing when the policy is off)."""
        if not self.policy.enabled:
            yield self
            return
        thread = threading.Thread(target=self.loop, args=(executor,), name="crystallise-scheduler", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.stop()
            thread.join(30)

