"""The scheduler (engine/scheduler.py): which evidence queues which job, and one leader at a time."""

from __future__ import annotations

import time

import pytest

from crystallise.engine import jobs
from crystallise.engine.observe import trace
from crystallise.engine.scheduler import LearnPolicy, Scheduler
from crystallise.engine.task_defs import define
from crystallise.errors import ConfigError
from crystallise.store import jobs as rows
from crystallise.types import Scope
from tests.helpers import ratio_records


def _record(home, n, *, org=None, name="ratio", session=None, start=1):
    for rec in ratio_records(n, start=start):
        with trace(name, org=org, session=session, input=rec["context"], home=home) as t:
            t.output = "0"
            t.feedback(score=0.0, correction=rec["target"])


def test_a_task_with_enough_new_verified_outcomes_queues_one_learn_job_per_org(sqlite_home):
    home = sqlite_home
    define(home, "ratio", metric="numeric")
    policy = LearnPolicy(task_outcomes=5, dream_traces=0, extract=False)
    s = Scheduler(home, policy)
    _record(home, 4, org="acme")
    _record(home, 6, org="beta")
    _record(home, 9, name="other-name")  # not a task: no learn job
    (job,) = s.tick()
    assert (job.kind, job.scope, job.params) == ("learn", Scope(org="beta"), {"task": "ratio"})
    assert s.tick() == []  # already queued
    _record(home, 1, org="acme", start=50)
    (acme,) = s.tick()
    assert acme.scope == Scope(org="acme")
    # a failed job's scope waits retry_after_s; a succeeded one waits for new evidence (the watermark)
    jobs.claim(home, worker="w")
    rows.update(home.store, job.id, status="failed", finished_at=time.time(), error="x")
    assert all(j.scope != Scope(org="beta") for j in s.tick())


def test_dreams_by_count_and_extraction_when_a_session_ends(sqlite_home):
    home = sqlite_home
    s = Scheduler(home, LearnPolicy(task_outcomes=1000, dream_traces=3, extract=True, session_idle_s=3600))
    _record(home, 2, org="acme", name="chat", session="s1")
    assert s.tick() == []  # 2 traces < 3; session s1 still open
    _record(home, 1, org="acme", name="chat", session="s1", start=9)
    (dream,) = s.tick()
    assert (dream.kind, dream.scope) == ("dream", Scope(org="acme"))
    _record(home, 1, org="acme", name="chat")  # no session: it ended at once
    kinds = [j.kind for j in s.tick()]
    assert kinds == ["extract"]


def test_policy_from_config_refuses_unknown_keys_and_can_be_off(sqlite_home):
    with pytest.raises(ConfigError, match="unknown key"):
        LearnPolicy.from_config({"learn": {"task_outcome": 3}})
    off = Scheduler(sqlite_home, LearnPolicy.from_config({"learn": {"enabled": False}}))
    define(sqlite_home, "ratio", metric="numeric")
    _record(sqlite_home, 30)
    assert off.tick() == []
    assert LearnPolicy.from_config({}).task_outcomes == 20


def test_only_one_of_two_schedulers_leads(sqlite_home):
    policy = LearnPolicy(poll_s=0.05, dream_traces=0, extract=False)
    a, b = Scheduler(sqlite_home, policy), Scheduler(sqlite_home, policy)
    with a.running(), b.running():
        deadline = time.monotonic() + 5
        while not (a.leader or b.leader) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert [a.leader, b.leader].count(True) == 1
        leader, other = (a, b) if a.leader else (b, a)
        leader.stop()
        deadline = time.monotonic() + 5
        while not other.leader and time.monotonic() < deadline:
            time.sleep(0.02)
        assert other.leader  # it takes over
