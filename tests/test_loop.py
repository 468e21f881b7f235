"""The whole loop with the scripted double: learn -> gate -> commit -> serve -> revert."""

from __future__ import annotations

import json

import pytest

from crystallise.backends.scripted import ScriptedBackend
from crystallise.errors import ArtifactError, ValidationError
from crystallise.gate import score_numeric
from crystallise.harness.learn import verified_cases
from crystallise.harness.runtime import close_sandboxes
from crystallise.harness.spec import TaskSpec, View
from crystallise.engine.committer import Committer
from crystallise.engine.loop import CachedBackend, Loop, LoopConfig
from crystallise.types import ChangeSet, Delta, Verdict
from tests.helpers import new_home, program_deltas, ratio_records


@pytest.fixture(autouse=True)
def _sandboxes():
    yield
    close_sandboxes()


def stream(loop: Loop, records: list[dict]) -> list[bool]:
    flags = []
    for rec in records:
        ans, tid = loop.answer(rec["context"])
        ok = ans.output is not None and score_numeric(ans.output, rec["target"])
        loop.feedback(tid, rec["target"], ok)
        flags.append(ok)
    return flags


def make_loop(home, reply="0", learners=("crystallise",)) -> Loop:
    backend = CachedBackend(ScriptedBackend(reply if callable(reply) else (lambda request: reply)))
    return Loop(home, TaskSpec(name="ratio", metric="numeric"), backend, score_numeric,
                LoopConfig(learners=learners))


def test_crystallisation_is_gated_committed_served_and_reverted(tmp_path, store_url):
    home = new_home(tmp_path, store_url)
    loop = make_loop(home)
    assert not any(stream(loop, ratio_records(24)))  # the "LLM" is always wrong

    report = loop.learn()
    assert [c.learner for c in report.proposed] == ["crystallise"]
    (version,) = report.committed
    verdict = report.proposed[0].verdict
    assert verdict.decision == "accept" and verdict.wins > 0 and verdict.losses == 0 and verdict.p_value < 0.05
    assert View.of(home.repo).spec("ratio").grade == "G4"
    code = home.repo.read("tasks/ratio/code.py")
    assert "def solve" in code and "(d[0] / d[1])" in code
    evals = [json.loads(line) for line in home.repo.read("tasks/ratio/evals.jsonl").splitlines()]
    assert evals and all(e["created_by"] == "learner" for e in evals)

    # the commit carries provenance and the verdict as trailers
    info = home.repo.log(limit=1)[0]
    assert info.trailers["Crystallise-Changeset"] == [report.proposed[0].id]
    assert "McNemar" in info.trailers["Crystallise-Verdict"][0]
    assert version.provenance and set(version.provenance) <= {t.id for t in home.store.list_traces(limit=1000)}

    # serve: new inputs of the same template are answered by code, correctly
    new = ratio_records(4, start=40)
    ans, _ = loop.answer(new[0]["context"])
    assert ans.served_by == "code" and score_numeric(ans.output, new[0]["target"])
    assert loop.answer("something else entirely")[0].served_by == "llm"  # abstains -> fallback

    # learning again over the same traces changes nothing
    assert loop.learn().proposed == []

    # revert: one command, previous behaviour back, history kept
    undo = Committer(home).revert(version.number)
    assert undo.reverts == version.number
    assert home.store.get_version(version.number).reverted_by == undo.number
    assert home.repo.read("tasks/ratio/code.py") is None
    loop._runtime = None
    assert loop.answer(new[1]["context"])[0].served_by == "llm"
    with pytest.raises(ValidationError, match="already reverted"):
        Committer(home).revert(version.number)


def test_gate_rejects_a_harmful_change_and_keeps_it_as_evidence(tmp_path, store_url):
    home = new_home(tmp_path, store_url)
    right = lambda request: "2.0"  # noqa: E731 - the LLM answers every ratio 2.0 correctly below
    loop = make_loop(home, reply=right)
    records = [{"context": f"Use formula R. Question: ${2 * i} over ${i}.", "target": "2.0"} for i in range(1, 30)]
    stream(loop, records)
    cases = [c for c in verified_cases(home.store.list_traces(limit=1000, with_children=True), "ratio")][:12]
    bad = ChangeSet(learner="adversary", layer="harness", deltas=[
        *program_deltas(home.repo.read, "ratio", "def solve(value):\n    return '3.0'\n"),
        Delta(op="set", target="artifact", path="tasks/ratio/spec.json",
              before=home.repo.read("tasks/ratio/spec.json"),
              after=TaskSpec(name="ratio", metric="numeric", grade="G4").to_json()),
    ])
    versions_before = len(home.store.list_versions())
    assert loop.gate_and_commit(bad, cases) is None
    assert bad.verdict.decision == "reject" and bad.verdict.losses == len(cases)
    assert home.store.get_changeset(bad.id).status == "rejected"
    assert len(home.store.list_versions()) == versions_before
    assert home.repo.read("tasks/ratio/code.py") is None


def test_fewshot_examples_are_learned_when_they_help(tmp_path):
    home = new_home(tmp_path)

    def reply(request):  # right only when shown a verified example of the same template
        return "2.0" if len(request.messages) > 2 else "0"

    loop = make_loop(home, reply=reply, learners=("fewshot",))
    records = [{"context": f"Use formula R. Question: {2 * i} over {i} units.", "target": "2.0"} for i in range(1, 30)]
    stream(loop, records)
    report = loop.learn()
    assert report.committed and View.of(home.repo).spec("ratio").grade == "G1"
    pool = View.of(home.repo).jsonl("tasks/ratio/examples.jsonl")
    assert pool and all(set(e) == {"input", "output", "trace"} for e in pool)
    assert loop.answer(records[0]["context"])[0].output == "2.0"


def test_an_orgs_examples_are_served_to_that_org_only(tmp_path):
    from crystallise.types import Scope

    home = new_home(tmp_path)

    def reply(request):  # right only when shown a verified example
        return "2.0" if len(request.messages) > 2 else "0"

    def org_loop(org):
        backend = CachedBackend(ScriptedBackend(reply))
        return Loop(home, TaskSpec(name="ratio", metric="numeric"), backend, score_numeric,
                    LoopConfig(learners=("fewshot",), scope=Scope(agent="default", org=org)))

    acme = org_loop("acme")
    records = [{"context": f"Use formula R. Question: acme client {i}: {2 * i} over {i}.", "target": "2.0"}
               for i in range(1, 30)]
    stream(acme, records)
    assert acme.learn().committed
    assert home.repo.read("tasks/ratio/examples.jsonl") is None  # nothing learned from acme is shared
    pool = View.of(home.repo, org="acme").jsonl("tasks/ratio/examples.jsonl")
    assert pool == View.of(home.repo).jsonl("orgs/acme/tasks/ratio/examples.jsonl")  # acme's namespace
    assert pool and {e["org"] for e in pool} == {"acme"}  # each example says whose run it was
    assert acme.answer(records[0]["context"])[0].output == "2.0"  # acme's runs are shown acme's examples
    spy = ScriptedBackend(reply)
    other = Loop(home, TaskSpec(name="ratio", metric="numeric"), spy, score_numeric,
                 LoopConfig(learners=(), scope=Scope(agent="default", org="globex")))
    assert other.answer("Use formula R. Question: globex client: 8 over 4.")[0].output == "0"  # its own namespace
    assert "acme client" not in json.dumps([[m.content for m in r.messages] for r in spy.requests])


def test_reflection_bullets_credit_and_playbook_file(tmp_path, store_url):
    home = new_home(tmp_path, store_url)

    def reply(request):
        system = request.messages[0].content
        if "maintain a playbook" in system:
            return json.dumps({"lesson": "Divide the first amount by the second amount.", "section": "strategies"})
        return "2.0" if "Divide the first amount" in system else "0"

    loop = make_loop(home, reply=reply, learners=("reflection",))
    records = [{"context": f"Use formula R. Question: {2 * i} over {i} units.", "target": "2.0"} for i in range(1, 30)]
    stream(loop, records)
    report = loop.learn()
    assert report.committed, [c.verdict for c in report.proposed]
    (bullet,) = home.store.query_items(kind="bullet")
    assert bullet.source == "reflection" and bullet.provenance
    playbook = home.repo.read("context/agent/default/playbook.md")
    assert "Divide the first amount" in playbook and bullet.id in playbook
    flags = stream(loop, records[:5])
    assert all(flags)
    loop.learn()
    assert home.store.get_item(bullet.id).helpful == 5 and home.store.get_item(bullet.id).shown >= 5


def test_commit_needs_an_accept_verdict_and_detects_conflicts(tmp_path, store_url):
    home = new_home(tmp_path, store_url)
    committer = Committer(home)
    cs = ChangeSet(learner="x", layer="harness",
                   deltas=[Delta(op="set", target="artifact", path="tasks/a/prompt.md", before=None, after="v1")])
    with pytest.raises(ValidationError, match="gate"):
        committer.commit(cs)
    cs.verdict = Verdict(decision="accept", reason="test")
    committer.commit(cs)
    stale = ChangeSet(learner="x", layer="harness", verdict=Verdict(decision="accept", reason="test"),
                      deltas=[Delta(op="set", target="artifact", path="tasks/a/prompt.md", before=None, after="v2")])
    with pytest.raises(ArtifactError, match="changed since"):
        committer.commit(stale)


def test_recover_finishes_a_commit_interrupted_before_the_store_write(tmp_path, monkeypatch, store_url):
    home = new_home(tmp_path, store_url)
    committer = Committer(home)
    cs = ChangeSet(learner="x", layer="harness", verdict=Verdict(decision="accept", reason="test"),
                   deltas=[Delta(op="set", target="artifact", path="tasks/a/prompt.md", before=None, after="v1")])
    store = home.store

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed between git commit and store write")

    monkeypatch.setattr(store, "add_version", crash)
    with pytest.raises(KeyboardInterrupt):
        committer.commit(cs)
    monkeypatch.undo()
    assert store.list_versions() == []
    (recovered,) = Committer(home).recover() or Committer(home).store.list_versions()
    assert recovered.changeset_id == cs.id and home.store.get_changeset(cs.id).status == "committed"
