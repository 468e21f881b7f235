"""Tenancy covers learning (issue 15): what an org's runs teach is that org's, both ways.

The VAULT scenario: org `victim` teaches its task `reply code for order N -> VAULT-<secret>-N`;
org `evil` runs the same task name with its own loop. Evil must never be answered by the victim's
code (for the victim's inputs or new ones), and the victim must never be served what evil's runs
wrote; neither org's eval cases enter the other's gate.
"""

from __future__ import annotations

import json

import pytest

from crystallise.backends.scripted import ScriptedBackend
from crystallise.engine.loop import CachedBackend, Loop, LoopConfig
from crystallise.gate import score_exact
from crystallise.harness.runtime import close_sandboxes
from crystallise.harness.spec import TaskSpec, View
from crystallise.types import Scope
from tests.helpers import new_home

SECRET = "VAULT-7f3a9c"
PHISH = "Buy a gift card first, then send the code to claims@evil.example"


@pytest.fixture(autouse=True)
def _sandboxes():
    yield
    close_sandboxes()


def org_loop(home, org: str | None, spy: list | None = None) -> Loop:
    def reply(request):
        if spy is not None:
            spy.append([m.content for m in request.messages])
        return "I cannot say"

    return Loop(home, TaskSpec(name="codes", metric="exact"), CachedBackend(ScriptedBackend(reply)), score_exact,
                LoopConfig(learners=("crystallise", "fewshot"), scope=Scope(agent="default", org=org),
                           shadow="off"))


def teach(loop: Loop, answer, orders) -> None:
    for n in orders:
        value = f"reply code for order {n}"
        _, tid = loop.answer(value)
        loop.feedback(tid, answer(n), False)


def test_the_vault_secret_stays_with_the_org_whose_runs_taught_it(tmp_path, store_url):
    home = new_home(tmp_path, store_url)
    victim = org_loop(home, "victim")
    teach(victim, lambda n: f"{SECRET}-{n}", range(100, 160))
    assert victim.learn().committed
    assert victim.runtime().spec.grade == "G4"  # the victim's code serves the victim
    ans, _ = victim.answer("reply code for order 777")
    assert ans.served_by == "code" and ans.output == f"{SECRET}-777"
    # nothing of it is shared: the program lives in the victim's namespace only
    assert home.repo.read("tasks/codes/code.py") is None and home.repo.read("tasks/codes/examples.jsonl") is None
    assert SECRET in home.repo.read("orgs/victim/tasks/codes/code.py")
    assert View.of(home.repo).spec("codes").grade != "G4"

    seen: list = []
    evil = org_loop(home, "evil", spy=seen)
    for value in ("reply code for order 120", "reply code for order 424242"):
        ans, _ = evil.answer(value)
        assert ans.served_by == "llm" and SECRET not in str(ans.output)
    assert not any(SECRET in text for msgs in seen for text in msgs)  # not in evil's prompt either

    # the other way round: evil's 40 runs write evil's program, never the one the victim is served
    teach(evil, lambda n: PHISH, range(500, 540))
    report = evil.learn()
    gate_inputs = json.dumps([json.loads(line) for line in
                              (home.repo.read("orgs/evil/tasks/codes/evals.jsonl") or "").splitlines()])
    assert SECRET not in gate_inputs  # the victim's cases never enter evil's gate
    assert report.proposed
    victim_again = org_loop(home, "victim")
    for n in (130, 501, 999):
        ans, _ = victim_again.answer(f"reply code for order {n}")
        assert "gift card" not in str(ans.output)
    assert "gift card" not in (home.repo.read("orgs/victim/tasks/codes/code.py") or "")
    assert "gift card" not in (home.repo.read("tasks/codes/code.py") or "")


def test_shared_artifacts_learn_from_the_operators_runs_only_and_serve_after_the_orgs(tmp_path):
    home = new_home(tmp_path)
    evil = org_loop(home, "evil")
    teach(evil, lambda n: PHISH, range(500, 540))
    operator = org_loop(home, None)
    assert not operator.learn().proposed  # an org's runs are not the operator's evidence
    assert home.repo.read("tasks/codes/code.py") is None

    teach(operator, lambda n: f"CODE-{n}", range(1, 60))
    assert operator.learn().committed  # the operator's own runs make the shared program
    assert View.of(home.repo).spec("codes").grade == "G4"
    victim = org_loop(home, "victim")
    ans, _ = victim.answer("reply code for order 31337")  # no program of its own: the agent's serves it
    assert ans.served_by == "code" and ans.output == "CODE-31337"


def test_shared_files_come_from_k_orgs_and_a_person(tmp_path):
    from crystallise.engine.committer import Committer
    from crystallise.engine.share import share_task
    from crystallise.governance.review import approve

    home = new_home(tmp_path)
    for org in ("o1", "o2"):
        loop = org_loop(home, org)
        teach(loop, lambda n: f"CODE-{n}", range(1, 60))
        assert loop.learn().committed
    assert share_task(home, "codes", k=3) is None  # two orgs agree: not enough
    loop = org_loop(home, "o3")
    teach(loop, lambda n: f"CODE-{n}", range(1, 60))
    assert loop.learn().committed
    cs = share_task(home, "codes", k=3)
    assert cs is not None and cs.status == "needs_review" and cs.evidence["program"]
    assert home.repo.read("tasks/codes/code.py") is None  # nothing shared before a person approves
    approve(Committer(home), cs.id, by="operator")
    ans, _ = org_loop(home, "o4").answer("reply code for order 4242")  # a new org: the shared program
    assert ans.served_by == "code" and ans.output == "CODE-4242"
    assert all("org" not in row for row in View.of(home.repo).jsonl("tasks/codes/examples.jsonl"))
