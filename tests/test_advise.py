"""The layer advisor on constructed evidence, and the evidence it gathers from traces."""

from __future__ import annotations

import doctest

import pytest

from crystallise.gate import score_exact
from crystallise.harness import advise as advise_mod
from crystallise.harness import grades, promptopt, runtime, structure
from crystallise.harness.advise import AdviceEvidence, advise, scope_evidence
from crystallise.types import Feedback, Span, Trace

AGENT = {"agent": "a", "org": None, "user": None}


def ev(**kw) -> AdviceEvidence:
    return AdviceEvidence("t", kw.pop("scope", AGENT), **kw)


@pytest.mark.parametrize(
    ("evidence", "layer", "words"),
    [
        (ev(runs=30), "observe", "no layer can learn"),
        (ev(grade="G4", runs=50, verified=50, failures=10, code_verified=40, code_wrong=10), "harness", "drifted"),
        (ev(scope={"agent": "a", "org": None, "user": "u1"}, runs=10, verified=10, failures=4,
            corrections_by_kind={"use metric units": 4}), "context", "preference"),
        (ev(runs=30, verified=30, failures=20, structured=True, consistency=1.0), "harness", "crystallise"),
        (ev(runs=30, verified=30, failures=20, structured=True, rejected={"crystallise": 3}, bullets=0), "context",
         "reflect"),
        (ev(runs=40, verified=40, failures=30, runs_with_bullets=30, failures_with_bullets=24,
            runs_without_bullets=10, failures_without_bullets=6, bullets=3), "harness", "optimise the prompt"),
        (ev(runs=40, verified=40, failures=30, runs_with_bullets=30, failures_with_bullets=24,
            runs_without_bullets=10, failures_without_bullets=6, bullets=3, rejected={"promptopt": 2}),
         "weights", "persist despite playbook bullets"),
        (ev(runs=40, verified=40, failures=39, llm_verified=40, llm_right=1, bullets=2,
            rejected={"reflection": 2, "crystallise": 4}), "weights", "lacks the capability"),
        (ev(runs=40, verified=40, failures=2, llm_verified=40, llm_right=38, bullets=1), "none", "keep observing"),
    ],
)
def test_advice_on_constructed_evidence(evidence, layer, words):
    a = advise(evidence)
    assert a.layer == layer, a
    assert words in a.action + " " + a.reason
    assert a.evidence["task"] == "t" and a.scope == evidence.scope


def test_consistency_stops_crystallisation_advice():
    noisy = ev(runs=30, verified=30, failures=20, structured=True, consistency=0.5)
    assert advise(noisy).action != advise(ev(runs=30, verified=30, failures=20, structured=True)).action


def trace(i: int, user: str | None, output: str, truth: str, *, bullets: bool = False, label: str | None = None):
    t = Trace(name="t", id=f"tr{i}", user_id=user, input=f"q{i % 7}", output=output, seq=i)
    t.spans.append(Span(name="task:t", kind="task", input=f"q{i % 7}", output=output,
                        attributes={"served_by": "llm", "grade": "G0", "shown_items": ["it1"] if bullets else []}))
    t.feedback.append(Feedback(trace_id=t.id, score=float(output == truth), correction=truth, label=label))
    return t


def test_scope_evidence_from_traces_per_scope():
    traces = [trace(i, None, "1", "2" if i % 2 else "1", bullets=i >= 10) for i in range(20)]
    traces += [trace(100 + i, "u1", "x", "metric", label="units") for i in range(4)]
    out = scope_evidence("t", "G0", traces, metric=score_exact)
    assert [e.scope["user"] for e in out] == [None, "u1"]
    agent, user = out
    assert agent.runs == 20 and agent.verified == 20 and agent.failures == 10
    assert agent.runs_with_bullets == 10 and agent.failures_with_bullets == 5
    assert agent.structured and agent.consistency is not None and agent.consistency < 1.0  # q1 -> "2", q1 -> "1"
    assert user.corrections_by_kind == {"units": 4}
    assert advise(user).layer == "context"


def test_docstring_examples_hold():
    for module in (grades, promptopt, structure, advise_mod, runtime):
        result = doctest.testmod(module)
        assert result.failed == 0, module.__name__
