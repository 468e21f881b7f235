"""The grade lifecycle with the real offline model (SmolLM2-135M): shadow checks and prompt optimisation, kept short."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from crystallise.backends.scripted import ScriptedBackend
from crystallise.cli import main
from crystallise.gate import score_exact, score_numeric
from crystallise.harness.grades import GradePolicy
from crystallise.harness.promptopt import PromptOptLearner
from crystallise.harness.spec import TaskSpec, View
from crystallise.engine.home import Home
from crystallise.engine.loop import CachedBackend, Loop, LoopConfig
from tests.helpers import ratio_records
from tests.test_integration_local import local_model  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow


def test_shadow_checks_and_prompt_optimisation_with_the_real_model(local_model, tmp_path):  # noqa: F811
    home = Home.init(tmp_path / "home")
    spec = TaskSpec(name="ratio", metric="numeric", max_tokens=12)
    # crystallised under the scripted double (its gate needs no model) ...
    learner = Loop(home, spec, CachedBackend(ScriptedBackend(lambda r: "0")), score_numeric,
                   LoopConfig(learners=("crystallise",), shadow="off"))
    for r in ratio_records(24):
        learner.record_labelled(r["context"], r["target"])
    learner.learn()
    assert View.of(home.repo).spec("ratio").grade == "G4"
    # ... then served with the real model behind it: code answers, the model shadow-checks in the background
    backend = CachedBackend(home.backend(local_model))
    loop = Loop(home, spec, backend, score_numeric,
                LoopConfig(learners=("crystallise",), shadow="background", grade_policy=GradePolicy(shadow_rate=1.0,
                                                                                                    min_new_cases=1)))
    ids = []
    for r in ratio_records(3, start=50):
        ans, tid = loop.answer(r["context"])
        assert ans.served_by == "code" and ans.llm_calls == 0  # the hot path did not wait for the model
        loop.feedback(tid, r["target"], True)
        ids.append(tid)
    ev = loop.evidence()  # flushes the background checks
    assert ev.shadow_checks == 3
    shadows = home.store.list_traces(name="shadow:ratio", limit=10, with_children=True)
    assert {t.metadata["shadow_of"] for t in shadows} == set(ids)
    assert all(t.spans[0].attributes["prompt_tokens"] > 0 for t in shadows)  # the real model answered
    loop.learn()
    cases = View.of(home.repo).jsonl("tasks/ratio/evals.jsonl")
    disagreed = {t.metadata["shadow_of"] for t in shadows if not t.spans[0].attributes["agree"]}
    assert disagreed == {c["id"] for c in cases if "shadow" in c.get("tags", [])}
    loop.shadow.close()

    # prompt optimisation on a task the LLM still serves: a real (tiny) search, judged by the real gate
    cap_spec = TaskSpec(name="capital", description="Answer with the capital city only.", metric="exact",
                        max_tokens=6)
    cap = Loop(home, cap_spec, backend, score_exact, LoopConfig(learners=("promptopt",), shadow="off"))
    cap.promptopt = PromptOptLearner(backend, score_exact, rounds=1, pareto_size=2, minibatch=2,
                                     example_candidates=1, max_examples=1, min_cases=2, reflect_max_tokens=40)
    for country, city in [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
                          ("Egypt", "Cairo")]:
        ans, tid = cap.answer(f"What is the capital of {country}?")
        cap.feedback(tid, city, score_exact(ans.output, city))
    report = cap.learn()
    for cs in report.proposed:
        assert cs.learner == "promptopt" and cs.verdict is not None
        assert cs.evidence["candidates"][0]["instruction"] == cap_spec.description
        assert (cs.verdict.decision == "accept") == bool(report.committed)

    out = CliRunner().invoke(main, ["--home", str(home.path), "tasks", "list", "--json"], catch_exceptions=False)
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["ratio"]["evidence"]["shadow_checks"] == 3 and rows["capital"]["grade"] in ("G0", "G1")
