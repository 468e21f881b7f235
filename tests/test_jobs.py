"""Jobs (engine/jobs.py): the state machine, one job per scope, cancel, tenancy, idempotent re-runs.

Real stores (SQLite and PostgreSQL through `home`), a real git repository; the one double is a job
kind whose work waits on an event (`gated_kind`), so a test can hold a job in `running`.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from crystallise.backends.scripted import ScriptedBackend
from crystallise.engine import jobs
from crystallise.engine.committer import Committer
from crystallise.engine.job_kinds import KINDS, JobKind, Refused
from crystallise.engine.jobctx import job_scope
from crystallise.engine.loop import CachedBackend, Loop, LoopConfig
from crystallise.engine.task_defs import define
from crystallise.errors import ArtifactError, NotFoundError, StoreError, ValidationError
from crystallise.gate import score_numeric
from crystallise.harness.runtime import close_sandboxes
from crystallise.harness.spec import TaskSpec
from crystallise.store import jobs as job_rows
from crystallise.store.engine import is_postgres, org_scope
from crystallise.types import ChangeSet, Delta, Scope, Verdict
from tests.helpers import ratio_records

ACME = SimpleNamespace(org="acme", user=None, admin=False, key_id="k1")
EVIL = SimpleNamespace(org="evil", user=None, admin=False, key_id="k2")
ACME_USER = SimpleNamespace(org="acme", user="u1", admin=False, key_id="k3")


@pytest.fixture(autouse=True)
def _sandboxes():
    yield
    close_sandboxes()


@pytest.fixture
def gated_kind(monkeypatch):
    """A job kind `wait` that reports progress until `release` is set (or it is cancelled)."""
    release = threading.Event()
    started = threading.Event()

    def work(home, scope, params, rep):
        started.set()
        while not release.is_set():
            rep.progress(0.5, "waiting")  # a cancel request raises here
            time.sleep(0.02)
        return {"versions": [], "scope": scope.to_dict()}

    monkeypatch.setitem(KINDS, "wait", JobKind("wait", {}, ("agent", "org"), False, work, "test"))
    return SimpleNamespace(release=release, started=started)


def test_a_job_moves_queued_running_succeeded_and_a_rerun_changes_nothing(home, gated_kind):
    job = jobs.submit(home, "wait", scope=Scope(org="acme"), actor=ACME)
    assert (job.status, job.attempts, job.scope.org) == ("queued", 0, "acme")
    claimed = jobs.claim(home, worker="w1")
    assert (claimed.id, claimed.status, claimed.worker, claimed.attempts) == (job.id, "running", "w1", 1)
    assert jobs.claim(home, worker="w2") is None  # nothing else queued
    gated_kind.release.set()
    done = jobs.run(home, job.id, worker="w1")
    assert done.status == "succeeded" and done.progress == 1.0 and done.result["scope"]["org"] == "acme"
    assert done.finished_at >= done.started_at >= done.created_at
    assert [entry["line"] for entry in done.log][-1] == "succeeded"
    again = jobs.run(home, job.id, worker="w2")  # a finished job is returned as it is
    assert again.to_dict() == done.to_dict()


def test_bad_submissions_are_refused_and_never_stored(home):
    define(home, "ratio", metric="numeric")
    for kind, params, fix in [("learnn", {}, "unknown job kind"), ("learn", {}, "needs the task's name"),
                              ("learn", {"task": "ratio", "lr": 1}, "unknown parameter"),
                              ("learn", {"task": 3}, "wrong type"),
                              ("learn", {"task": "ratio", "learners": ["magic"]}, "learners must be"),
                              ("learn", {"task": "nope"}, "no task 'nope'")]:
        with pytest.raises((ValidationError, NotFoundError), match=fix):
            jobs.submit(home, kind, scope=Scope(org="acme"), params=params, actor=ACME)
    with pytest.raises(ValidationError, match="runs on agent or org scopes"):
        jobs.submit(home, "learn", scope=Scope(org="acme", user="u1"), params={"task": "ratio"})
    assert jobs.list_jobs(home) == []


def test_tenancy_other_orgs_jobs_are_unknown_and_user_keys_start_nothing(home, gated_kind):
    job = jobs.submit(home, "wait", scope=Scope(org="acme"), actor=ACME)
    with pytest.raises(NotFoundError) as theirs:
        jobs.get(home, job.id, EVIL)
    with pytest.raises(NotFoundError) as unknown:
        jobs.get(home, "job_0000000000000000", EVIL)
    assert str(theirs.value).replace(job.id, "ID") == str(unknown.value).replace("job_0000000000000000", "ID")
    with pytest.raises(NotFoundError):
        jobs.cancel(home, job.id, EVIL)
    assert jobs.get(home, job.id, ACME).status == "queued"  # the attack changed nothing
    assert [j.id for j in jobs.list_jobs(home, EVIL)] == []
    assert [j.id for j in jobs.list_jobs(home, ACME)] == [job.id]
    with pytest.raises(Refused, match="org 'evil'"):
        jobs.submit(home, "wait", scope=Scope(org="acme"), actor=EVIL)
    with pytest.raises(Refused, match="user-bound key"):
        jobs.submit(home, "wait", scope=Scope(org="acme"), actor=ACME_USER)
    with pytest.raises(Refused, match="admin key"):
        jobs.submit(home, "dream", scope=Scope(), actor=ACME)  # agent level: every org's agents
    with pytest.raises(Refused, match="admin key"):
        jobs.submit(home, "extract", scope=Scope(org="acme"), actor=ACME)


def test_two_jobs_on_one_scope_run_one_after_the_other(home, gated_kind):
    first = jobs.submit(home, "wait", scope=Scope(org="acme"))
    second = jobs.submit(home, "wait", scope=Scope(org="acme"))
    other = jobs.submit(home, "wait", scope=Scope(org="beta"))
    assert jobs.claim(home, worker="w1").id == first.id
    assert jobs.claim(home, worker="w2").id == other.id  # the same scope is busy: the next scope's job
    assert jobs.claim(home, worker="w3") is None
    # run() of the second waits until the first is done, holding the scope's lock meanwhile
    runner = threading.Thread(target=jobs.run, args=(home, first.id), kwargs={"worker": "w1"})
    runner.start()
    assert gated_kind.started.wait(10)
    waiting: dict = {}
    t2 = threading.Thread(target=lambda: waiting.setdefault("job", jobs.run(home, second.id, worker="w4")))
    t2.start()
    time.sleep(0.3)
    assert jobs.get(home, second.id).status == "queued"
    gated_kind.release.set()
    runner.join(10)
    t2.join(10)
    a, b = jobs.get(home, first.id), waiting["job"]
    assert a.status == b.status == "succeeded" and b.started_at >= a.finished_at
    jobs.run(home, other.id, worker="w2")


def test_scope_lock_excludes_a_second_holder(home):
    with jobs.scope_lock(home, "default/acme/-") as got:
        assert got
        with jobs.scope_lock(home, "default/acme/-", wait=False) as second:
            assert not second
        with jobs.scope_lock(home, "default/beta/-", wait=False) as other:
            assert other


def test_cancel_queued_and_running_jobs(home, gated_kind):
    queued = jobs.submit(home, "wait", scope=Scope(org="beta"))
    assert jobs.cancel(home, queued.id).status == "cancelled"
    assert jobs.claim(home, worker="w") is None
    running = jobs.submit(home, "wait", scope=Scope(org="acme"), actor=ACME)
    result: dict = {}
    t = threading.Thread(target=lambda: result.setdefault("job", jobs.run(home, running.id)))
    t.start()
    assert gated_kind.started.wait(10)
    with pytest.raises(NotFoundError):  # a user-bound key does not see its org's jobs
        jobs.cancel(home, running.id, ACME_USER)
    assert jobs.cancel(home, running.id, ACME).cancel_requested
    t.join(10)
    assert result["job"].status == "cancelled"
    assert jobs.run(home, running.id).status == "cancelled"


def test_a_failing_job_records_its_error(home, monkeypatch):
    def boom(home, scope, params, rep):
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(KINDS, "boom", JobKind("boom", {}, ("agent", "org"), False, boom, "test"))
    job = jobs.run(home, jobs.submit(home, "boom", scope=Scope(org="acme")).id)
    assert job.status == "failed" and job.error == "RuntimeError: disk on fire"


def test_reap_requeues_a_dead_workers_job_then_fails_it(home, gated_kind):
    jobs.submit(home, "wait", scope=Scope(org="acme"), max_attempts=2)
    jobs.claim(home, worker="dead")  # claimed, and its worker never took the lock: it died
    assert jobs.reap(home) == []  # within the grace period
    (moved,) = jobs.reap(home, grace_s=0)
    assert moved.status == "queued"
    jobs.claim(home, worker="dead-again")
    (failed,) = jobs.reap(home, grace_s=0)
    assert failed.status == "failed" and "stopped 2 time(s)" in failed.error


def _artifact_cs(home, text: str) -> ChangeSet:
    path = "tasks/ratio/notes.md"
    return ChangeSet(learner="fewshot", layer="harness", summary="notes",
                     deltas=[Delta(op="set", target="artifact", path=path, before=home.repo.read(path), after=text)],
                     verdict=Verdict(decision="accept", reason="test"))


def test_a_change_set_committed_by_a_job_is_not_committed_twice(home):
    committer = Committer(home)
    with job_scope("job_aaaaaaaaaaaaaaaa"):
        first = committer.commit(_artifact_cs(home, "one\n"))
        proposal_again = ChangeSet(**{**_artifact_cs(home, "one\n").__dict__, "id": "cs_second"})
        proposal_again.deltas[0].before = None  # proposed before the first attempt's commit, as a retry would
        again = committer.commit(proposal_again)
    assert again.number == first.number
    assert len(home.store.list_versions(limit=100)) == 1
    cs = home.store.get_changeset(first.changeset_id)
    assert cs.evidence["job"] == "job_aaaaaaaaaaaaaaaa" and cs.evidence["job_fingerprint"]
    # outside the job (or in another job) the same stale proposal is a new commit attempt: refused as stale
    stale = ChangeSet(**{**_artifact_cs(home, "one\n").__dict__, "id": "cs_third"})
    stale.deltas[0].before = None
    with pytest.raises(ArtifactError):
        committer.commit(stale)
    # a change set cannot claim a job id for itself
    forged = _artifact_cs(home, "two\n")
    forged.evidence["job"] = "job_aaaaaaaaaaaaaaaa"
    v = committer.commit(forged)
    assert "job" not in home.store.get_changeset(v.changeset_id).evidence


def _learn_home(home):
    define(home, "ratio", metric="numeric")
    home.config["model"] = "scripted:0"  # an always-wrong "LLM": only crystallised code can pass
    loop = Loop(home, TaskSpec(name="ratio", metric="numeric"), CachedBackend(ScriptedBackend(lambda r: "0")),
                score_numeric, LoopConfig(scope=Scope(org="acme"), learners=("crystallise",)))
    for rec in ratio_records(24):
        loop.record_labelled(rec["context"], rec["target"])


def test_a_learn_job_crystallises_and_its_rerun_after_a_crash_commits_nothing(home):
    _learn_home(home)
    job = jobs.submit(home, "learn", scope=Scope(org="acme"), params={"task": "ratio", "learners": ["crystallise"]},
                      actor=ACME)
    done = jobs.run(home, job.id, worker="w1")
    assert done.status == "succeeded", done.error
    assert done.result["versions"] and home.repo.read("orgs/acme/tasks/ratio/code.py")
    assert any("learn: crystallise" in entry["line"] for entry in done.log)
    versions = len(home.store.list_versions(limit=1000))
    # the worker "died" before marking the job done: the job is running again, the loop's watermark unmoved
    job_rows.update(home.store, job.id, status="running", worker="dead", result=None)
    again = jobs.run(home, job.id, worker="w2")
    assert again.status == "succeeded" and again.attempts == 2
    assert len(home.store.list_versions(limit=1000)) == versions


def test_postgres_row_level_security_hides_other_orgs_jobs_even_without_the_code_check(home):
    if not is_postgres(home.store.engine):
        pytest.skip("row-level security is PostgreSQL's (SQLite has the code's check only)")
    job = jobs.submit(home, "skills", scope=Scope(org="acme"))
    forged = {"id": "job_forged", "kind": "skills", "scope_key": "k", "agent_id": "default", "org_id": "acme",
              "user_id": None, "params": {}, "status": "queued", "progress": 0.0, "message": "", "log": [],
              "attempts": 0, "max_attempts": 3, "worker": None, "result": None, "error": None, "actor": {},
              "cancel_requested": False, "created_at": 1.0, "started_at": None, "finished_at": None,
              "updated_at": 1.0}
    with org_scope("evil"):
        assert job_rows.get(home.store, job.id) is None  # the raw row read: no org filter in the query
        assert job_rows.rows(home.store) == []
        assert not job_rows.update(home.store, job.id, status="cancelled")
        with pytest.raises(StoreError):  # a row of another org cannot be written either
            job_rows.insert(home.store, forged)
    with org_scope("acme"):
        assert job_rows.get(home.store, job.id)["id"] == job.id
    assert jobs.get(home, job.id).status == "queued"


def test_a_weights_export_job_writes_the_scopes_verified_runs_into_the_home(home):
    _learn_home(home)  # 24 verified runs of ratio in org acme
    with pytest.raises(Refused, match="admin key"):
        jobs.submit(home, "weights-export", scope=Scope(org="acme"), params={"task": "ratio"}, actor=ACME)
    job = jobs.run(home, jobs.submit(home, "weights-export", scope=Scope(org="acme"), params={"task": "ratio"}).id)
    assert job.status == "succeeded", job.error
    folder = home.path / "exports" / job.id
    assert job.result["folder"] == str(folder) and job.result["sft"]["examples"] == 24
    assert len((folder / "sft.jsonl").read_text().splitlines()) == 24
