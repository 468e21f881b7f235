"""Undo by cause: `revert --trace` / `--user` undoes what was learned from them, and only that."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from crystallise.cli import main
from crystallise.errors import ArtifactError, NotFoundError, ValidationError
from crystallise.gate.suite import EvalSuite
from crystallise.governance import Actor
from crystallise.governance.undo import is_revoked
from crystallise.engine.undo import plan_undo, undo
from crystallise.harness.learn import verified_cases
from crystallise.engine.committer import Committer
from crystallise.types import ChangeSet, Delta, Feedback, Item, Scope, Trace, Verdict
from tests.helpers import new_home, ratio_records
from tests.test_loop import make_loop, stream


def _trace(store, user: str, name: str = "t") -> str:
    t = Trace(name=name, user_id=user, input=f"from {user}", output="x")
    t.feedback.append(Feedback(trace_id=t.id, score=1.0, correction="x"))
    return store.write_trace(t).id


def _commit(home, learner: str, provenance: list[str], *deltas: Delta, scope: Scope | None = None):
    cs = ChangeSet(learner=learner, layer="context", deltas=list(deltas), provenance=provenance,
                   scope=scope or Scope(), summary=f"{learner} {provenance}",
                   verdict=Verdict(decision="accept", reason="test"))
    return Committer(home).commit(cs)


def _add(item: Item) -> Delta:
    return Delta(op="add", target="item", item_id=item.id, after=item.to_dict())


def _file(home, path: str, text: str | None) -> Delta:
    return Delta(op="set", target="artifact", path=path, before=home.repo.read(path), after=text)


@pytest.fixture
def world(tmp_path, store_url):
    """Versions learned from user A, from user B, and from both."""
    home = new_home(tmp_path, store_url)
    a1, a2, b1 = _trace(home.store, "A"), _trace(home.store, "A"), _trace(home.store, "B")
    x = Item(text="lesson from A", provenance=[a1])
    y = Item(text="lesson from B", provenance=[b1])
    z = Item(text="lesson from both", provenance=[a2, b1])
    mine = Item(text="A likes tea", kind="memory", level="user", user_id="A", provenance=[])
    evals = [{"id": "c1", "input": "1", "expected": "1", "source_trace": a1},
             {"id": "c2", "input": "2", "expected": "2", "source_trace": b1}]
    shared = "B header\nkeep 1\nkeep 2\nkeep 3\n"
    v = {
        "b0": _commit(home, "reflection", [b1], _file(home, "shared.md", shared)),
        "a": _commit(home, "reflection", [a1], _add(x), _file(home, "notes/a.md", "from A\n"),
                     _file(home, "shared.md", "B header\nline from A\nkeep 1\nkeep 2\nkeep 3\n")),
        "b": _commit(home, "reflection", [b1], _add(y), _file(home, "notes/b.md", "from B\n")),
        "ab": _commit(home, "reflection", [a2, b1], _add(z)),
        "evals": _commit(home, "crystallise", [a1, b1], _file(home, "tasks/t/evals.jsonl",
                                                            "".join(json.dumps(r) + "\n" for r in evals))),
        "mine": _commit(home, "user", [], _add(mine), scope=Scope(user="A")),
    }
    v["b2"] = _commit(home, "reflection", [b1], _file(home, "shared.md", home.repo.read("shared.md") + "B footer\n"))
    return home, v, {"a1": a1, "a2": a2, "b1": b1, "x": x, "y": y, "z": z, "mine": mine}


def test_undo_a_user_reverts_what_they_taught_and_nothing_else(world):
    home, v, w = world
    before = len(home.store.list_versions())
    plan, version = undo(home, user="A", reason="poisoning", actor=Actor.cli())
    assert len(home.store.list_versions()) == before + 1  # one new version
    assert v["mine"].number == 0  # a user-level change: the store's user ledger, not a version
    assert set(plan.versions) == {v["a"].number, v["ab"].number, v["evals"].number}
    status = {k: home.store.get_item(w[k].id).status for k in ("x", "y", "z", "mine")}
    assert status == {"x": "retired", "y": "active", "z": "active", "mine": "retired"}
    assert home.store.get_item(w["z"].id).provenance == [w["b1"]]  # still supported by B: kept, trimmed
    assert home.repo.read("notes/a.md") is None and home.repo.read("notes/b.md") == "from B\n"
    assert home.repo.read("shared.md") == "B header\nkeep 1\nkeep 2\nkeep 3\nB footer\n"  # a 3-way merge
    suite = EvalSuite.from_jsonl("t", home.repo.read("tasks/t/evals.jsonl"))
    assert suite.ids == ["c2"]
    assert all(is_revoked(home.store.get_trace(t)) for t in (w["a1"], w["a2"]))
    assert not is_revoked(home.store.get_trace(w["b1"]))
    assert verified_cases(home.store.list_traces(limit=100, with_children=True), "t") == [
        c for c in verified_cases(home.store.list_traces(limit=100, with_children=True), "t") if c.trace_id == w["b1"]]
    assert home.store.get_version(v["a"].number).reverted_by == version.number
    assert home.store.get_version(v["ab"].number).reverted_by is None  # only partly undone (z kept for B)
    assert home.store.get_version(v["b"].number).reverted_by is None
    shown = home.store.get_changeset(version.changeset_id)
    assert shown.learner == "undo" and shown.evidence["undo"]["cause"] == "user A"
    assert "Undo user A" in home.repo.log(limit=1)[0].subject
    # doing it again finds nothing left to undo
    assert undo(home, user="A")[1] is None


def test_undo_one_trace(world):
    home, v, w = world
    plan, version = undo(home, traces=[w["a2"]], actor=Actor.cli())
    assert plan.versions == [v["ab"].number] and plan.trimmed == [w["z"].id] and plan.retired == []
    assert home.store.get_item(w["x"].id).status == "active"  # learned from another trace of A


def test_a_conflicting_later_edit_refuses_the_whole_undo(world):
    home, v, w = world
    edited = home.repo.read("shared.md").replace("line from A", "line from A, edited by B")
    _commit(home, "reflection", [w["b1"]], _file(home, "shared.md", edited))
    head, versions = home.repo.head(), len(home.store.list_versions())
    with pytest.raises(ArtifactError, match="shared.md"):
        undo(home, user="A")
    assert home.repo.head() == head and len(home.store.list_versions()) == versions
    assert home.store.get_item(w["x"].id).status == "active"


def test_bad_input_and_nothing_learned(world):
    home, _, _ = world
    with pytest.raises(ValidationError, match="--trace ID"):
        plan_undo(home)
    with pytest.raises(NotFoundError):
        plan_undo(home, traces=["tr_nope"])
    lonely = _trace(home.store, "C")
    plan, version = undo(home, traces=[lonely], actor=Actor.cli())
    assert version is None and is_revoked(home.store.get_trace(lonely))


def test_undo_a_crystallisation_from_one_trace_and_relearn_without_it(tmp_path):
    home = new_home(tmp_path)
    loop = make_loop(home)
    stream(loop, ratio_records(24))
    (version,) = loop.learn().committed
    some = version.provenance[0]
    runner = CliRunner()
    dry = runner.invoke(main, ["--home", str(home.path), "revert", "--trace", some, "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["versions"] == [version.number]
    assert home.repo.read("tasks/ratio/code.py")  # a dry run changes nothing
    done = runner.invoke(main, ["--home", str(home.path), "revert", "--trace", some])
    assert done.exit_code == 0 and "undoes" in done.output, done.output
    assert home.repo.read("tasks/ratio/code.py") is None
    loop._runtime = None
    stream(loop, ratio_records(2, start=30))  # new evidence arrives: the loop learns again, from all
    relearned = loop.learn()                   # verified traces but the revoked one
    (cs,) = [c for c in relearned.proposed if c.learner == "crystallise"]
    assert some not in cs.provenance and len(cs.provenance) >= len(version.provenance) - 1
    assert relearned.committed and home.repo.read("tasks/ratio/code.py")
    both = runner.invoke(main, ["--home", str(home.path), "revert", "3", "--user", "x"])
    assert both.exit_code == 2 and "not both" in both.output
