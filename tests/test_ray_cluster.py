"""Learning jobs on a REAL 2-node Ray cluster (crystallise.scale), PostgreSQL and an artifact registry,
inside a private network namespace that has only loopback (`unshare -n`; see ray_cluster_driver.py).

Covered: 20 concurrent jobs over 5 orgs all reach a terminal state, spread over both nodes, the jobs
of one org (one scope) never overlap, versions = accepted change sets and every version is one commit
of the registry's linear history; kill -9 of the Ray worker running a job mid-job: the job is retried
(or failed), never committed twice, and nothing half-committed is left.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crystallise.scale import ray_exec
from crystallise.errors import ConfigError

HERE = Path(__file__).resolve().parent


def _unshare_problem() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip (util-linux, iproute2) is not installed"
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    if probe.returncode:
        return f"cannot make a private network namespace (unshare -n needs root or user namespaces): {probe.stderr}"
    return None


def run_in_private_network(driver: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """tests/DRIVER ARGS as root in a network namespace of its own (loopback only); skips where none."""
    problem = _unshare_problem()
    if problem:
        pytest.skip(problem)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), str(HERE.parent),
                                                         os.environ.get("PYTHONPATH", "")])}
    env.pop("CRYSTALLISE_HOME", None)
    return subprocess.run(["unshare", "-n", sys.executable, str(HERE / driver), *args],
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_resources_per_kind_and_config_overrides():
    assert ray_exec.resources_for("learn", {}) == {"num_cpus": 1.0, "memory": 512.0 * (1 << 20)}
    assert ray_exec.resources_for("weights-train", {}, gpus=0)["memory"] == 4096.0 * (1 << 20)
    assert ray_exec.resources_for("weights-train", {}, gpus=2)["num_gpus"] == 1.0
    assert "num_gpus" not in ray_exec.resources_for("learn", {}, gpus=2)  # only weights jobs ask for a GPU
    cfg = {"ray": {"resources": {"learn": {"num_cpus": 2, "memory": 1 << 30}}}}
    assert ray_exec.resources_for("learn", cfg) == {"num_cpus": 2.0, "memory": float(1 << 30)}
    for bad in ({"gpu": 1}, {"num_cpus": -1}, {"num_cpus": True}, {"memory": "1G"}):
        with pytest.raises(ConfigError, match="ray.resources.learn"):
            ray_exec.resources_for("learn", {"ray": {"resources": {"learn": bad}}})


def test_without_ray_the_error_names_the_extra(monkeypatch):
    monkeypatch.setattr(ray_exec, "ray", None)
    with pytest.raises(ImportError, match=r"crystallise\[scale\]"):
        ray_exec.need_ray()


@pytest.mark.slow
@pytest.mark.postgres
def test_jobs_on_a_two_node_ray_cluster_in_a_private_network(tmp_path):
    out = tmp_path / "facts.json"
    done = run_in_private_network("ray_cluster_driver.py", str(out), timeout=900)
    assert out.exists(), f"no facts (exit {done.returncode}): {done.stdout[-3000:]}{done.stderr[-3000:]}"
    facts = json.loads(out.read_text())
    assert "error" not in facts, f"{facts['error']}\n{done.stdout[-4000:]}{done.stderr[-4000:]}"
    assert facts["nodes"] == 2

    # 20 jobs over 5 orgs: all terminal and succeeded, on both nodes, one job at a time per org
    twenty = facts["twenty"]
    assert len(twenty) == 20 and {j["status"] for j in twenty} == {"succeeded"}, [j["error"] for j in twenty]
    nodes = {j["worker"].split(":")[1] for j in twenty}
    assert len(nodes) == 2, f"all jobs ran on one node: {nodes}"
    by_org: dict[str, list[tuple[float, float]]] = {}
    for j in twenty:
        by_org.setdefault(j["scope"]["org"], []).append((j["started_at"], j["finished_at"]))
    for org, spans in by_org.items():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), f"two jobs of {org} overlapped: {spans}"
    learned = [j for j in twenty if j["result"]["versions"]]
    assert {j["scope"]["org"] for j in learned} == set(by_org)  # each org learned once; its reruns had nothing new

    # kill -9 mid-job: retried (or failed), never twice, nothing partial
    victim = facts["victim"]
    assert facts["killed_pid"], "the victim job finished before it could be killed"
    assert victim["status"] in ("succeeded", "failed") and victim["attempts"] >= 2, victim
    victim_versions = [c for c in facts["changesets_of_versions"] if c["job"] == victim["id"]]
    assert len(victim_versions) == (1 if victim["status"] == "succeeded" else 0)

    # versions = accepted change sets; each version one registry commit; the registry linear and complete
    versions = facts["versions"]
    assert len(versions) == facts["accepted_changesets"]
    assert len({v["number"] for v in versions}) == len(versions)
    registry = [r.split("\x00") for r in facts["registry"]]
    assert all(len(parents.split()) <= 1 for _, parents, _ in registry), "a merge commit in the registry"
    shas = [sha for sha, _, _ in registry]
    assert {v["commit"] for v in versions if v["commit"]} <= set(shas)
    recorded = {v["changeset"] for v in versions}
    pushed = {cs for _, _, trailer in registry for cs in trailer.split("\x1f") if cs}
    assert pushed <= recorded, f"commits in the registry with no version: {pushed - recorded}"
