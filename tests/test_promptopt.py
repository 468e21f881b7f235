"""Prompt optimisation: reflective instruction evolution and few-shot selection, each through the gate."""

from __future__ import annotations

import re

import pytest

from crystallise.backends.scripted import ScriptedBackend
from crystallise.gate import score_exact, score_numeric
from crystallise.harness.learn import is_gate_case, verified_cases
from crystallise.harness.promptopt import REFLECT_SYSTEM, Candidate, PromptOptLearner, pareto_front, parse_instruction
from crystallise.harness.runtime import close_sandboxes
from crystallise.harness.spec import TaskSpec, View
from crystallise.engine.loop import CachedBackend, Loop, LoopConfig
from tests.helpers import new_home


@pytest.fixture(autouse=True)
def _sandboxes():
    yield
    close_sandboxes()


def is_reflection(request) -> bool:
    return request.messages[0].content == REFLECT_SYSTEM


def make_loop(home, reply, metric=score_numeric, name="ratio") -> Loop:
    backend = CachedBackend(ScriptedBackend(reply))
    return Loop(home, TaskSpec(name=name, metric="numeric" if metric is score_numeric else "exact"), backend, metric,
                LoopConfig(learners=("promptopt",), shadow="off"))


def stream(loop: Loop, records: list[dict], metric=score_numeric) -> None:
    for r in records:
        ans, tid = loop.answer(r["context"])
        loop.feedback(tid, r["target"], ans.output is not None and metric(ans.output, r["target"]))


RECORDS = [{"context": f"Use formula R. Question: {2 * i} over {i} units.", "target": "2.0"} for i in range(1, 41)]


def test_a_winning_instruction_is_committed_as_a_version(tmp_path, store_url):
    home = new_home(tmp_path, store_url)

    def reply(request):
        if is_reflection(request):
            assert "Right answer: 2.0" in request.messages[1].content  # the failures are shown to the reflection
            return "Better:\n```\nDivide the first number by the second and answer with one decimal.\n```"
        return "2.0" if "Divide the first number" in request.messages[0].content else "0"

    loop = make_loop(home, reply)
    stream(loop, RECORDS)
    report = loop.learn()
    (cs,) = report.proposed
    assert cs.learner == "promptopt" and cs.verdict.decision == "accept", cs.verdict.reason
    assert report.committed and home.repo.read("tasks/ratio/prompt.md").startswith("Divide the first number")
    ev = cs.evidence
    assert ev["seed_score"] == 0.0 and ev["best_instruction_score"] == 1.0 and len(ev["candidates"]) >= 2
    assert ev["front"] == {1: ev["pareto_cases"]}
    gate_ids = {c.trace_id for c in verified_cases(home.store.list_traces(limit=1000, with_children=True), "ratio")
                if is_gate_case(c.input)}
    assert gate_ids and not gate_ids & set(cs.provenance)  # the search never saw a gate case
    info = home.repo.log(limit=1)[0]
    assert info.trailers["Crystallise-Learner"] == ["promptopt"]
    assert "McNemar" in info.trailers["Crystallise-Verdict"][0]
    ans, _ = loop.answer("Use formula R. Question: 90 over 45 units.")
    assert ans.output == "2.0"
    assert loop.learn().proposed == []  # nothing new: the same search is not run again


def test_a_candidate_that_regresses_on_the_gate_cases_is_rejected_and_kept_as_evidence(tmp_path):
    home = new_home(tmp_path)
    # the learning cases want "2.0", the held-out gate cases "3.0": an instruction tuned to the first is worse
    records = [{"context": r["context"], "target": "3.0" if is_gate_case(r["context"]) else "2.0"} for r in RECORDS]

    def reply(request):
        if is_reflection(request):
            return "```\nAlways answer 2.0.\n```"
        return "2.0" if "Always answer 2.0" in request.messages[0].content else "3.0"

    loop = make_loop(home, reply)
    stream(loop, records)
    report = loop.learn()
    (cs,) = report.proposed
    assert cs.evidence["best_instruction_score"] == 1.0  # it looked better on the learning cases ...
    assert cs.verdict.decision == "reject" and "no-regression" in cs.verdict.reason  # ... the gate says otherwise
    assert report.committed == [] and home.repo.read("tasks/ratio/prompt.md") is None
    assert home.store.get_changeset(cs.id).status == "rejected"


def test_a_worse_child_is_dropped_inside_the_search(tmp_path):
    home = new_home(tmp_path)

    def reply(request):
        if is_reflection(request):
            return "```\nAnswer with the word banana.\n```"
        return "banana" if "banana" in request.messages[0].content else ("2.0" if "12 over" in
                                                                         request.messages[-1].content else "0")

    loop = make_loop(home, reply)
    stream(loop, RECORDS)
    learner = PromptOptLearner(loop.backend, score_numeric, rounds=2)
    cases = verified_cases(home.store.list_traces(limit=1000, with_children=True), "ratio")
    assert learner.propose(View.of(home.repo), loop._spec(), cases, loop.runtime) is None


def test_fewshot_selection_picks_the_subset_that_scores_not_the_most_similar(tmp_path):
    home = new_home(tmp_path)
    records = [{"context": f"item {i}: compute", "target": "ok"} for i in range(40)]

    def reply(request):
        if is_reflection(request):
            return "```\nCompute the item.\n```"
        shown = [m.content for m in request.messages[1:-1] if m.role == "user"]
        numbers = [int(re.search(r"\d+", s).group()) for s in shown]
        return "ok" if numbers and all(n % 2 == 0 for n in numbers) else "bad"  # odd examples mislead the model

    loop = make_loop(home, reply, metric=score_exact, name="items")
    stream(loop, records, metric=score_exact)
    report = loop.learn()
    (cs,) = report.proposed
    assert cs.verdict.decision == "accept", cs.verdict.reason
    chosen = View.of(home.repo).jsonl("tasks/items/examples.jsonl")
    assert chosen and all(int(re.search(r"\d+", e["input"]).group()) % 2 == 0 for e in chosen)
    assert View.of(home.repo).spec("items").grade == "G1"
    assert cs.evidence["example_selection"]["steps"][0]["score"] == 1.0


def test_helpers():
    assert parse_instruction("no fence here") == "no fence here"
    a, b = Candidate(0, "a", None, [True, True, False]), Candidate(1, "b", 0, [True, False, False])
    assert pareto_front([a, b]) == {0: 2}  # b's passes are a subset of a's: dominated
    c = Candidate(2, "c", 0, [False, False, True])
    assert pareto_front([a, b, c]) == {0: 2, 2: 1}
    assert PromptOptLearner(ScriptedBackend(), score_exact).propose(
        View(lambda p: None), TaskSpec("x", grade="G4"), [], lambda d: None) is None  # code serves it
