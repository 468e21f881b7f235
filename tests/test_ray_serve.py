"""`crystallise serve --engine ray`, end to end and through the loss of the Ray head: the real serve
process over PostgreSQL, a real 2-node Ray cluster, inside a private network namespace with only
loopback (`unshare -n`; tests/ray_serve_driver.py does the work and reports facts).

1. Over HTTP alone: define a task, post corrected traces; the scheduler queues a learn job by itself,
   a Ray worker runs it, the org's version is live.
2. kill -9 of the head (every process of its node) while a job runs on it and others are queued:
   serve keeps answering (ingest 201), logs ONE error naming the head's address and keeps retrying;
   the job in flight is requeued and re-run, never committed twice or half; when a head comes back
   at the same address the queued jobs run (docs/deploy.md, "What happens when a part fails").

Also here, without a cluster: the supervisor's own behaviour with no head at all (one error, retries,
the API process unaffected).
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crystallise.scale.dispatch import head_answers
from crystallise.scale.supervisor import RaySupervisor
from tests.test_ray_cluster import run_in_private_network

HERE = Path(__file__).resolve().parent


def _drive(phase: str, tmp_path: Path) -> dict:
    out = tmp_path / "facts.json"
    done = run_in_private_network("ray_serve_driver.py", phase, str(out), timeout=600)
    assert out.exists(), f"no facts (exit {done.returncode}): {done.stdout[-3000:]}{done.stderr[-3000:]}"
    facts = json.loads(out.read_text())
    assert "error" not in facts, f"{facts['error']}\n{done.stdout[-4000:]}\n{facts.get('serve_log', '')[-6000:]}"
    return facts


def _one_commit_per_version(facts: dict) -> None:
    """versions = accepted change sets; at most one version per job; each version one registry commit, linear."""
    versions = facts["versions"]
    assert len(versions) == facts["accepted_changesets"]
    per_job: dict[str, int] = {}
    for cs in facts["changesets_of_versions"]:
        if cs["job"] is None:  # `POST /v1/tasks`'s version (the task defined), not a job's
            continue
        per_job[cs["job"]] = per_job.get(cs["job"], 0) + 1
    assert all(n == 1 for n in per_job.values()), f"a job committed twice: {per_job}"
    registry = [r.split("\x00") for r in facts["registry"]]
    assert all(len(parents.split()) <= 1 for _, parents, _ in registry), "a merge commit in the registry"
    assert {v["commit"] for v in versions if v["commit"]} <= {sha for sha, _, _ in registry}
    pushed = {cs for _, _, trailer in registry for cs in trailer.split("\x1f") if cs}
    assert pushed <= {v["changeset"] for v in versions}, "a commit in the registry with no version (half-committed)"


@pytest.mark.slow
@pytest.mark.postgres
def test_serve_engine_ray_learns_from_http_traffic_alone(tmp_path):
    facts = _drive("serve", tmp_path)
    assert facts["define_status"] == 201 and facts["ingest_statuses"] == [201]
    job = facts["job"]
    assert job["status"] == "succeeded", job["error"]
    assert job["worker"].startswith("ray:"), f"the job ran in {job['worker']}, not on a Ray worker"
    assert job["scope"]["org"] == "acme" and job["params"] == {"task": "ratio"} and facts["learn_jobs"] == 1
    (number,) = job["result"]["versions"]
    assert number in [v["number"] for v in facts["versions_api"]]  # live: the org's versions list shows it
    assert facts["job_api"]["progress"] == 1.0 and facts["evil_sees"] == 404
    assert [cs["job"] for cs in facts["changesets_of_versions"] if cs["job"]] == [job["id"]]
    _one_commit_per_version(facts)
    assert facts["serve_alive"]


@pytest.mark.slow
@pytest.mark.postgres
def test_serve_survives_losing_the_ray_head_and_resumes_when_it_returns(tmp_path):
    facts = _drive("head-loss", tmp_path)
    log = facts["serve_log"]
    address = "127.0.0.1:6391"

    # the API never stopped: every trace posted during the outage acknowledged, health 200
    assert facts["during_outage"] and all(d["status"] == 201 and d["health"] == 200
                                          for d in facts["during_outage"]), facts["during_outage"]
    assert facts["after_status"] == 201 and facts["serve_alive"]
    # one clear error naming the address, then quiet retries, and a line when the head is back
    errors = [ln for ln in log.splitlines() if "is unreachable" in ln]
    assert len(errors) == 1 and address in errors[0] and "ERROR" in errors[0], errors
    assert sum("answers again" in ln for ln in log.splitlines()) == 1
    assert facts["error_after_s"] < 20

    # jobs that were queued when the head died and still queued once the last node had gone (the second
    # node may finish what it was given before its raylet gives up): they wait, and run when the head is back
    in_outage = {j["id"]: j for j in facts["jobs_in_outage"]}
    at_kill = {j["id"] for j in facts["at_kill"]}
    waited = [i for i, j in in_outage.items() if j["status"] == "queued" and i != facts["in_flight"] and i in at_kill]
    assert waited and {j["status"] for j in facts["at_kill"] if j["id"] in waited} == {"queued"}, in_outage

    # after the head came back: every job ended, succeeded; the one in flight was re-run (a new attempt)
    jobs = {j["id"]: j for j in facts["jobs"]}
    assert len(jobs) == 7 and {j["status"] for j in jobs.values()} == {"succeeded"}, \
        [(j["status"], j["error"]) for j in jobs.values()]
    # `POST /v1/learn` during the outage: accepted (queued), run once the head was back
    assert facts["learn_in_outage"]["status"] == 202 and facts["learn_in_outage"]["id"] in jobs
    assert in_outage[facts["learn_in_outage"]["id"]]["status"] == "queued"
    victim = jobs[facts["in_flight"]]
    assert victim["attempts"] >= 2, victim
    assert all(jobs[i]["status"] == "succeeded" and jobs[i]["attempts"] == 1 for i in waited)
    assert all(j["worker"].startswith("ray:") for j in jobs.values())
    _one_commit_per_version(facts)
    assert {cs["job"] for cs in facts["changesets_of_versions"] if cs["job"]} <= set(jobs)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on return: nothing listens there


def test_head_answers_probes_only_what_it_can():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert head_answers(f"127.0.0.1:{server.getsockname()[1]}")
    assert not head_answers(f"127.0.0.1:{_closed_port()}")
    for unprobeable in (None, "auto", "ray://head:10001"):
        assert head_answers(unprobeable)


def test_no_head_one_error_then_quiet_retries(sqlite_home, caplog):
    """No Ray head at the address at all: the supervisor says so once (naming the address), keeps
    probing with backoff without starting a dispatcher for nothing, and closes promptly."""
    address = f"127.0.0.1:{_closed_port()}"
    with caplog.at_level(logging.DEBUG, logger="crystallise.scale"):
        sup = RaySupervisor(sqlite_home, address=address, backoff_s=(0.05, 0.1))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum(r.levelno == logging.DEBUG for r in caplog.records) < 3:
            time.sleep(0.05)
        sup.start(None)  # type: ignore[arg-type] - nothing connected: a no-op, never an error
        t0 = time.monotonic()
        sup.close()
        assert time.monotonic() - t0 < 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and address in errors[0].getMessage(), [r.getMessage() for r in errors]
    assert "nothing else is affected" in errors[0].getMessage()
    assert sum(r.levelno == logging.DEBUG and "still unreachable" in r.getMessage() for r in caplog.records) >= 3
    assert sup.state == "down" and sup.connects == 0
    assert not (sqlite_home.path / "ray-dispatch.log").exists()  # no child was started for a dead port


FAKE_CHILD = """
import json, os, sys, time
print(json.dumps({"event": "connected", "nodes": 1, "pid": os.getpid()}), flush=True)
with open(sys.argv[1], "a") as f:
    f.write(f"{os.getpid()}\\n")
time.sleep(600)  # then never a word again: a dispatcher stuck in a call into Ray
"""


def test_a_silent_dispatcher_is_killed_and_replaced(sqlite_home, caplog, tmp_path, monkeypatch):
    """The watchdog: a child that connected and then says nothing for `stall_s` (stuck in a call into
    a dead head) is killed by its pid and a new one started; one error per outage, one line when the
    next child is connected. (A stand-in child: the real one is covered by the tests above.)"""
    with socket.socket() as head:  # something answers at the address, so children are started
        head.bind(("127.0.0.1", 0))
        head.listen()
        address = f"127.0.0.1:{head.getsockname()[1]}"
        pids = tmp_path / "pids"
        script = tmp_path / "child.py"
        script.write_text(FAKE_CHILD)

        def spawn(self):
            return subprocess.Popen([sys.executable, str(script), str(pids)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)

        monkeypatch.setattr(RaySupervisor, "_spawn", spawn)
        with caplog.at_level(logging.INFO, logger="crystallise.scale"):
            sup = RaySupervisor(sqlite_home, address=address, backoff_s=(0.05,), stall_s=0.8)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and sup.connects < 3:
                time.sleep(0.05)
            sup.close(timeout=15)
    started = [int(p) for p in pids.read_text().split()]
    assert sup.connects >= 3 and len(started) >= 3
    for pid in started:  # every child ended: killed by the watchdog, or stopped by close()
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    # each stall is an outage of its own (the child had connected): one error for it, one line when over
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or "answers again" in r.getMessage()]
    errors = [m for m in said if "is unreachable" in m]
    assert errors and all("sent nothing for" in m and address in m for m in errors), errors
    assert all(("is unreachable" in a) != ("is unreachable" in b) for a, b in zip(said, said[1:])), said


def test_a_dispatcher_that_cannot_start_is_retried_slowly(sqlite_home, caplog, tmp_path, monkeypatch):
    """The head answers but the child dies before connecting (a broken home, a broken install): the
    error says why (its exit status and last log line) and the next try waits 5 s, not 1."""
    with socket.socket() as head:
        head.bind(("127.0.0.1", 0))
        head.listen()
        starts = []

        def spawn(self):
            starts.append(time.monotonic())
            with open(self.log_path, "a") as err:
                return subprocess.Popen([sys.executable, "-c", "import sys; sys.exit('boom: no home here')"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)

        monkeypatch.setattr(RaySupervisor, "_spawn", spawn)
        with caplog.at_level(logging.INFO, logger="crystallise.scale"):
            sup = RaySupervisor(sqlite_home, address=f"127.0.0.1:{head.getsockname()[1]}", backoff_s=(0.05,))
            time.sleep(3.0)
            sup.close()
    assert len(starts) == 1, f"{len(starts)} children in 3 s"
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "exited with status 1: boom: no home here" in error, error
