"""Canary: a new harness version serves a share of traffic first; regressions roll back on their own."""

from __future__ import annotations

import pytest

from crystallise.backends.scripted import ScriptedBackend
from crystallise.errors import ValidationError
from crystallise.gate import score_numeric
from crystallise.governance.canary import ArmStats, CanaryPolicy, arm_for, canary_path, decide_canary
from crystallise.harness.learn import VerifiedCase
from crystallise.harness.runtime import close_sandboxes
from crystallise.harness.spec import TaskSpec
from crystallise.engine.loop import CachedBackend, Loop, LoopConfig
from crystallise.types import ChangeSet, Delta
from tests.helpers import new_home, program_deltas, ratio_records
from tests.test_loop import stream

POLICY = CanaryPolicy(share=0.5, min_per_arm=8, graduate_after=16)


@pytest.fixture(autouse=True)
def _sandboxes():
    yield
    close_sandboxes()


def loop_with(home, reply, learners=("crystallise",)) -> Loop:
    backend = CachedBackend(ScriptedBackend(reply))
    return Loop(home, TaskSpec(name="ratio", metric="numeric"), backend, score_numeric,
                LoopConfig(learners=learners, canary=POLICY, shadow="off"))


def test_decisions_are_a_pure_function_of_the_arms():
    p = CanaryPolicy(min_per_arm=10, graduate_after=40)
    assert decide_canary({"candidate": ArmStats(5, 5, 0, 5), "control": ArmStats(50, 10, 0, 50)}, p)[0] == "continue"
    assert decide_canary({"candidate": ArmStats(20, 4, 0, 20), "control": ArmStats(80, 70, 0, 80)}, p)[0] == "rollback"
    failing = decide_canary({"candidate": ArmStats(20, 18, 12, 20), "control": ArmStats(80, 70, 0, 80)}, p)
    assert failing[0] == "rollback" and "failures rose" in failing[1]
    assert decide_canary({"candidate": ArmStats(40, 36, 0, 40), "control": ArmStats(80, 70, 0, 80)}, p)[0] == "graduate"
    assert decide_canary({"candidate": ArmStats(20, 17, 0, 20), "control": ArmStats(80, 70, 0, 80)}, p)[0] == "continue"
    share = sum(arm_for(f"input {i}", 0.2) == "candidate" for i in range(2000)) / 2000
    assert 0.17 < share < 0.23 and arm_for("x", 0.2) == arm_for("x", 0.2)
    with pytest.raises(ValidationError, match="share"):
        CanaryPolicy(share=1.5)


def test_a_good_version_serves_a_share_first_then_graduates(tmp_path):
    home = new_home(tmp_path)
    loop = loop_with(home, lambda request: "0")  # the LLM is always wrong: the program is better
    stream(loop, ratio_records(24))
    (version,) = loop.learn().committed
    assert home.repo.read(canary_path("ratio"))  # the canary is part of the version
    flags = stream(loop, ratio_records(40, start=100))
    arms = [t.spans[0].attributes["canary"]["arm"] for t in home.store.list_traces(limit=1000, with_children=True)
            if t.spans and "canary" in t.spans[0].attributes]
    assert {"candidate", "control"} == set(arms)
    assert 0 < sum(flags) < len(flags)  # only the candidate arm answers right
    report = loop.learn()
    (graduated,) = report.committed
    assert "canary graduated" in graduated.verdict["reason"]
    assert home.repo.read(canary_path("ratio")) is None and home.repo.read("tasks/ratio/code.py")
    assert all(stream(loop, ratio_records(5, start=300)))  # all traffic on the new version
    assert home.store.get_version(version.number).reverted_by is None


def test_a_regression_the_gate_missed_rolls_back_automatically(tmp_path):
    home = new_home(tmp_path)
    loop = loop_with(home, lambda request: "2.0", learners=())  # the LLM answers these right
    records = [{"context": f"Use formula R. Question: ${2 * i} over ${i}.", "target": "2.0"} for i in range(1, 80)]
    # a program that is wrong on live traffic, accepted on cases that did not show it
    fooled = [VerifiedCase(f"tr_fake{i}", f"Use formula Q. Question: case {i}.", "1.0") for i in range(12)]
    bad = ChangeSet(learner="crystallise", layer="harness", deltas=[
        *program_deltas(home.repo.read, "ratio", "def solve(value):\n    return '1.0'\n"),
        Delta(op="set", target="artifact", path="tasks/ratio/spec.json", before=home.repo.read("tasks/ratio/spec.json"),
              after=TaskSpec(name="ratio", metric="numeric", grade="G4").to_json())])
    version = loop.gate_and_commit(bad, fooled)
    assert version is not None and home.repo.read(canary_path("ratio"))
    flags = stream(loop, records[:40])
    assert 0 < sum(flags) < len(flags)  # the control arm still answers right
    (rollback,) = loop.learn().committed
    assert rollback.reverts == version.number and "canary regression" in rollback.verdict["reason"]
    assert home.store.get_version(version.number).reverted_by == rollback.number
    assert home.repo.read("tasks/ratio/code.py") is None and home.repo.read(canary_path("ratio")) is None
    assert all(stream(loop, records[40:45]))
