"""Review mode: learned change sets wait as proposals; people approve or reject them."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from crystallise.cli import main
from crystallise.errors import ArtifactError, ProtectedError, ValidationError
from crystallise.governance import Actor
from crystallise.governance import review as rv
from crystallise.harness.spec import View
from crystallise.engine.committer import Committer
from crystallise.types import ChangeSet, Delta, Scope, Verdict
from tests.helpers import new_home, ratio_records
from tests.test_loop import make_loop, stream


def cs(layer="harness", **scope) -> ChangeSet:
    return ChangeSet(learner="crystallise", layer=layer, scope=Scope(**scope))


def test_rules_match_by_layer_level_and_owner():
    harness, acme = rv.ReviewRule(layer="harness"), rv.ReviewRule(level="org", owner="acme")
    assert harness.matches(cs()) and not harness.matches(cs("context"))
    assert acme.matches(cs("context", org="acme")) and not acme.matches(cs("context", org="other"))
    assert not acme.matches(cs("context", org="acme", user="u1"))  # a user-level change is not org-level
    assert rv.requires_review(ChangeSet(learner="define", layer="harness"), [harness],
                              Actor.host("define")) is None  # people's own acts
    assert rv.requires_review(ChangeSet(learner="define", layer="harness"), [harness]) == harness  # a name is not
    approved = cs()
    approved.evidence["review"] = {"decision": "approve"}  # self-written: counts for nothing
    assert rv.requires_review(approved, [harness]) == harness


@pytest.mark.parametrize("config, fix", [
    ({"review": {"layer": "harness"}}, "must be a list"),
    ({"review": [{"layer": "harnes"}]}, "is not one of"),
    ({"review": [{"scope": "x"}]}, "use keys"),
    ({"review": [{"owner": "acme"}]}, "needs a level"),
])
def test_bad_rules_say_the_fix(config, fix):
    with pytest.raises(ValidationError, match=fix):
        rv.load_rules(config)


def _learn_under_review(tmp_path, store_url=None):
    home = new_home(tmp_path, store_url)
    home.config["review"] = [{"layer": "harness"}]
    home.save_config()
    loop = make_loop(home)
    stream(loop, ratio_records(24))
    report = loop.learn()
    return home, loop, report


def test_a_learned_change_waits_then_goes_live_when_approved(tmp_path, store_url):
    home, loop, report = _learn_under_review(tmp_path, store_url)
    (proposal,) = report.proposed
    assert proposal.verdict.decision == "accept" and report.committed == []
    assert home.repo.read("tasks/ratio/code.py") is None  # not live
    (waiting,) = rv.pending(home.store)
    assert waiting.id == proposal.id and "layer harness" in waiting.evidence["review"]["required_by"]
    diff = rv.diff_text(waiting, home.repo.read)
    assert "+++ b/tasks/ratio/code.py" in diff and "def solve" in diff

    version = rv.approve(Committer(home), waiting.id, by="alice", note="checked the rules")
    assert home.repo.read("tasks/ratio/code.py") and View.of(home.repo).spec("ratio").grade == "G4"
    stored = home.store.get_changeset(waiting.id)
    assert stored.status == "committed" and stored.evidence["review"]["by"] == "alice"
    assert "approved by alice" in version.verdict["reason"] and "McNemar" in version.verdict["reason"]
    assert "approved by alice" in home.repo.log(limit=1)[0].trailers["Crystallise-Verdict"][0]
    assert rv.pending(home.store) == []
    loop._runtime = None
    assert loop.answer(ratio_records(1, start=50)[0]["context"])[0].served_by == "code"


def test_a_rejected_proposal_is_kept_as_evidence_and_cannot_be_approved(tmp_path):
    home, _, report = _learn_under_review(tmp_path)
    rv.reject(home.store, report.proposed[0].id, by="bob", note="not convinced")
    stored = home.store.get_changeset(report.proposed[0].id)
    assert stored.status == "rejected" and stored.evidence["review"] == {
        "decision": "reject", "by": "bob", "note": "not convinced", "at": stored.evidence["review"]["at"]}
    with pytest.raises(ValidationError, match="not waiting for review"):
        rv.approve(Committer(home), stored.id, by="bob")
    assert home.repo.read("tasks/ratio/code.py") is None


def test_approval_never_bypasses_protection_or_staleness(tmp_path):
    home, _, report = _learn_under_review(tmp_path)
    sneaky = ChangeSet(learner="adversary", layer="harness", status="needs_review",
                       verdict=Verdict(decision="needs_review", reason="too few cases"),
                       deltas=[Delta(op="set", target="artifact", path="tasks/ratio/graders/check.py",
                                     before=None, after="def check(*_):\n    return True\n")])
    home.store.save_changeset(sneaky)
    with pytest.raises(ProtectedError):
        rv.approve(Committer(home), sneaky.id, by="alice")
    # the real proposal goes stale when the file it changes moves on
    Committer(home, actor=Actor.cli()).commit(ChangeSet(
        learner="human", layer="harness", verdict=Verdict("accept", "by hand"),
        deltas=[Delta(op="set", target="artifact", path="tasks/ratio/code.py",
                      before=None, after="def solve(value):\n    return None\n")]))
    assert "changed since this was proposed" in rv.diff_text(report.proposed[0], home.repo.read)
    with pytest.raises(ArtifactError, match="changed since"):
        rv.approve(Committer(home), report.proposed[0].id, by="alice")


def test_a_gate_needs_review_verdict_becomes_accept_on_approval(tmp_path):
    home = new_home(tmp_path)
    proposal = ChangeSet(learner="reflection", layer="context", status="needs_review",
                         verdict=Verdict(decision="needs_review", reason="3 paired cases, fewer than 10"),
                         deltas=[Delta(op="set", target="artifact", path="notes/a.md", before=None, after="a\n")])
    home.store.save_changeset(proposal)
    version = rv.approve(Committer(home), proposal.id, by="carol")
    assert version.verdict["decision"] == "accept"
    assert "approved by carol in review (the gate said: 3 paired cases" in version.verdict["reason"]
    assert home.store.get_changeset(proposal.id).evidence["review"]["gate"]["decision"] == "needs_review"


def test_the_review_commands(tmp_path, monkeypatch):
    monkeypatch.delenv("CRYSTALLISE_HOME", raising=False)
    home, _, report = _learn_under_review(tmp_path)
    runner = CliRunner()

    def run(*args, code=0):
        result = runner.invoke(main, ["--home", str(home.path), *args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    run("review", "require", "--layer", "context", "--level", "org", "--owner", "acme")
    rules = json.loads(run("review", "rules", "--json"))
    assert rules == [{"layer": "harness", "level": "*"}, {"layer": "context", "level": "org", "owner": "acme"}]
    listed = json.loads(run("review", "list", "--json"))
    assert [r["id"] for r in listed] == [report.proposed[0].id]
    assert "+++ b/tasks/ratio/code.py" in run("review", "show", report.proposed[0].id)
    assert "version" in run("review", "approve", report.proposed[0].id, "--by", "alice")
    assert "nothing waits" in run("review", "list")
    assert json.loads(run("changesets", "list", "--status", "committed", "--json"))
    run("review", "drop", "2")
    assert "error" in run("review", "drop", "7", code=2)
    assert "Missing option '--by'" in run("review", "approve", "cs_x", code=2)
