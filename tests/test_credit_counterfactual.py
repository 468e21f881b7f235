"""Credit by counterfactual: a failed run blames only the item whose absence fixes it; people's items stay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crystallise.backends import ScriptedBackend
from crystallise.context import deltas as build
from crystallise.context.credit import counterfactual_blame, usage_rows
from crystallise.context.curate import DreamPolicy, Plan
from crystallise.engine.home import Home
from crystallise.engine.loop import Loop, LoopConfig
from crystallise.engine.memory import commit_explicit
from crystallise.gate import score_numeric
from crystallise.harness.spec import TaskSpec
from crystallise.types import Feedback, Item, Scope, Span, Trace

AGENT = Scope(agent="fin")
HARMFUL = "Always round every answer down to a whole number."
INNOCENT = ["Read the question twice.", "State the formula before you compute."]


def model(request: Any) -> str:
    """A scripted model that answers right unless the harmful bullet is in its prompt."""
    prompt = "\n".join(m.content for m in request.messages)
    return "12" if HARMFUL in prompt else "12.5"


def add(home: Home, text: str, source: str) -> Item:
    item = Item(text=text, kind="bullet", level="agent", agent_id="fin", section="strategies", source=source)
    commit_explicit(home, AGENT, [build.add(item)], what=f"seed {text[:20]}", provenance=[])
    return home.store.get_item(item.id)


def test_a_failed_run_blames_only_the_item_whose_removal_fixes_it(tmp_path: Path):
    home = Home.init(tmp_path / "home")
    bad = add(home, HARMFUL, "reflection")
    good = [add(home, text, "reflection") for text in INNOCENT]
    loop = Loop(home, TaskSpec(name="ratio", metric="numeric", max_tokens=24), ScriptedBackend(model), score_numeric,
                LoopConfig(scope=AGENT, learners=(), lifecycle=False, shadow="off"))
    for i in range(3):
        ans, tid = loop.answer(f"What is 25 over 2? (case {i})")
        assert set(ans.shown_items) == {bad.id, *(g.id for g in good)} and ans.output == "12"
        loop.feedback(tid, "12.5", False)
    loop.learn()
    assert home.store.get_item(bad.id).harmful == 3
    assert [home.store.get_item(g.id).harmful for g in good] == [0, 0]  # shown in the failures, not blamed
    # blame-all (no counterfactual) would have made every shown item harmful; the innocent are logged as 0
    traces = home.store.list_traces(name="ratio", limit=10, with_children=True)
    assert {r[2] for r in usage_rows(traces, lambda t, shown: {bad.id}) if r[1] != bad.id} == {0}


def test_a_failure_that_does_not_reproduce_blames_nobody():
    t = Trace(id="t1", input="x", spans=[Span("task", "task", attributes={"shown_items": ["a", "b"]})],
              feedback=[Feedback(trace_id="t1", score=0.0, correction="1")])
    flaky = counterfactual_blame({"t1": ("x", "1")}, lambda value, drop: "1", lambda p, t: p == t)
    assert flaky(t, ["a", "b"]) is None and {r[2] for r in usage_rows([t], flaky)} == {0}
    unknown = counterfactual_blame({}, lambda value, drop: "1", lambda p, t: p == t)  # no right answer known
    assert unknown(t, ["a", "b"]) is None
    exact = counterfactual_blame({"t1": ("x", "1")}, lambda value, drop: "1" if drop == "b" else "0",
                                 lambda p, t: p == t)
    assert exact(t, ["a", "b"]) == {"b"}
    assert sorted((r[1], r[2]) for r in usage_rows([t], exact)) == [("a", 0), ("b", -1)]


def test_the_harm_rule_never_retires_what_a_person_wrote():
    items = [Item(text=f"rule {i}", kind="bullet", level="agent", agent_id="fin", section="strategies",
                  source=source, helpful=0, harmful=9, id=f"it_{i}")
             for i, source in enumerate(["user", "import", "reflection", "review"])]
    plan = Plan(AGENT, items, DreamPolicy())
    plan.forget({}, at=0.0)
    assert [r["item"] for r in plan.retirements] == ["it_2"]  # only the learned one
    assert sorted(r["item"] for r in plan.review) == ["it_0", "it_1", "it_3"]
    assert any("a person wrote it" in why for why in plan.rejected)
