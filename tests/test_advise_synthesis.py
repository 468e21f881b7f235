"""Every synthesis attempt is evidence; when synthesis keeps finding nothing, the advisor moves to the weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

from crystallise.backends import ScriptedBackend
from crystallise.engine.home import Home
from crystallise.engine.loop import Loop, LoopConfig
from crystallise.gate import score_numeric
from crystallise.harness.advise import advise, gather_advice
from crystallise.harness.runtime import close_sandboxes
from crystallise.harness.spec import TaskSpec, View


def secret(i: int) -> str:
    """A number no program can compute from the input: a hash of it."""
    return str(int(hashlib.sha256(f"s{i}".encode()).hexdigest()[:6], 16) % 9973)


def test_failed_synthesis_is_recorded_and_the_advisor_turns_to_weights(tmp_path: Path):
    home = Home.init(tmp_path / "home")
    spec = TaskSpec(name="code", metric="numeric", max_tokens=8)
    loop = Loop(home, spec, ScriptedBackend(lambda r: "1"), score_numeric,
                LoopConfig(learners=("crystallise",), shadow="off"))
    advice = []
    for round_ in range(4):
        for i in range(20 * round_, 20 * round_ + 20):
            ans, tid = loop.answer(f"Which code unlocks door {i} of block {i % 7}?")
            loop.feedback(tid, secret(i), ans.output == secret(i))
        report = loop.learn()
        assert not report.committed
        view = View.of(home.repo)
        (ev,) = gather_advice(home.store, view, view.spec("code") or spec, score_numeric)
        advice.append(advise(ev))
    attempts = [cs for cs in home.store.list_changesets(limit=100) if "synthesis_attempt" in cs.evidence]
    assert len(attempts) == 4 and all(cs.status == "rejected" and not cs.deltas for cs in attempts)
    tried = attempts[0].evidence["synthesis_attempt"]
    assert tried["learning_cases"] > 0 and "arith" in tried["strategies"] and tried["tried"]
    assert attempts[0].verdict.reason.startswith("no program:")
    assert [a.layer for a in advice[:2]] == ["harness", "harness"]  # crystallise: not tried enough yet
    assert advice[-1].layer == "weights" and "synthesis attempts found no program" in advice[-1].reason
    close_sandboxes()


def test_a_coder_that_writes_nothing_useful_leaves_its_rounds_as_evidence(tmp_path: Path):
    """The coder model was asked, wrote functions, none reproduced the cases: the attempt says so
    (groups, rounds, scores, why), instead of an empty record that looks as if nothing ran."""
    home = Home.init(tmp_path / "home")
    spec = TaskSpec(name="code", metric="numeric", max_tokens=8)
    coder = ScriptedBackend(lambda r: "```python\ndef solve(x):\n    return '7'\n```")
    home.backend = lambda s=None: coder if s == "scripted:coder" else ScriptedBackend(lambda r: "1")  # type: ignore
    loop = Loop(home, spec, ScriptedBackend(lambda r: "1"), score_numeric,
                LoopConfig(learners=("crystallise",), shadow="off", coder_model="scripted:coder",
                           strategies=("arith", "coder")))
    for i in range(40):
        ans, tid = loop.answer(f"Which code unlocks door {i} of block {i % 7}?")
        loop.feedback(tid, secret(i), ans.output == secret(i))
    assert not loop.learn().committed
    (cs,) = [cs for cs in home.store.list_changesets(limit=100) if "synthesis_attempt" in cs.evidence]
    coder_tried = cs.evidence["synthesis_attempt"]["strategies_tried"]["coder"]
    assert coder_tried["llm_calls"] >= 1 and coder_tried["groups_tried"] >= 1
    (rounds,) = coder_tried["rounds"].values()
    assert rounds["scores"] and max(rounds["scores"]) < rounds["cases"]
    assert coder_tried["why"].startswith("no function reproduced")
    close_sandboxes()
