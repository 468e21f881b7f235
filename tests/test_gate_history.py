"""The gate sees the task's history: every verified input shape is sampled, and losing one is refused."""

from __future__ import annotations

from pathlib import Path

from crystallise.backends.scripted import ScriptedBackend
from crystallise.engine.home import Home
from crystallise.engine.loop import Loop, LoopConfig
from crystallise.evidence import VerifiedCase, is_gate_case
from crystallise.gate import CaseResult, GatePolicy, decide, score_numeric
from crystallise.harness.history import current_cases, formats_conflict, gate_sample, lost_shapes, \
    refuse_lost_shapes, shape_of, shape_tally
from crystallise.harness.runtime import close_sandboxes
from crystallise.harness.spec import TaskSpec

OLD = "Use formula Asset Ratio to answer. Question: a firm holds ${a:,} of assets against ${b:,} of debt. Answer:"
NEW = "Use formula Asset Ratio to answer. Question: a firm owes ${d:,} of debt and has ${e:,} of equity. Answer:"


def old_case(i: int) -> tuple[str, str]:
    a, b = 5_000 + 37 * i, 700 + 11 * i
    return OLD.format(a=a, b=b), f"{round(a / b, 2)}"


def new_case(i: int) -> tuple[str, str]:
    d, e = 900 + 13 * i, 4_000 + 41 * i
    return NEW.format(d=d, e=e), f"{round((d + e) / d, 2)}"


def vc(i: int, text: str) -> VerifiedCase:
    return VerifiedCase(f"t{i}", text, "1")


def test_shape_masks_numbers_and_current_cases_keep_unseen_old_shapes():
    assert shape_of(old_case(1)[0]) == shape_of(old_case(2)[0]) != shape_of(new_case(1)[0])
    old = [vc(i, old_case(i)[0]) for i in range(10)]
    new = [vc(100 + i, new_case(i)[0]) for i in range(5)]
    same_shape_after = [vc(200 + i, old_case(50 + i)[0]) for i in range(3)]
    seq = {c.trace_id: int(c.trace_id[1:]) for c in old + new + same_shape_after}
    # a new format after the drift point: the old format, not seen since, still counts
    assert current_cases(old + new, seq, since=100) == old + new
    # the old shape seen again after the drift point: its older cases are superseded (their answers changed)
    assert current_cases(old + new + same_shape_after, seq, since=100) == new + same_shape_after
    assert current_cases(old, seq, since=0) == old


def test_gate_sample_represents_every_recurring_shape_beside_the_recent_window():
    old = [vc(i, old_case(i)[0]) for i in range(200)]
    new = [vc(1000 + i, new_case(i)[0]) for i in range(60)]
    once = [vc(5000, "a one-off question of its own")]
    sample = gate_sample(old + new + once, window=10, per_shape=4)
    shapes = [shape_of(c.input) for c in sample]
    recent = [c for c in new if is_gate_case(c.input)][-10:]
    assert sample[:len(recent)] == recent  # the recent window first, as before
    assert shapes.count(shape_of(old[0].input)) == 4  # the old format is represented, though not recent
    assert shape_of(once[0].input) not in shapes  # a one-off input is not a shape
    assert len(gate_sample(old + new, window=10, per_shape=4, max_history=2)) == len(recent) + 2


def test_one_rule_per_shape_only_when_formats_of_one_question_conflict():
    cases = [vc(i, old_case(i)[0]) for i in range(10)] + [vc(100 + i, new_case(i)[0]) for i in range(10)]
    new_shape = shape_of(cases[-1].input)
    assert formats_conflict({new_shape: 10}, cases)  # two formats of one question, one unanswered
    other = [vc(200 + i, f"Use formula Other to answer. Question: {i} and {i + 1}.") for i in range(10)]
    assert not formats_conflict({shape_of(other[0].input): 10}, cases[:10] + other)  # another question
    assert not formats_conflict({}, cases)
    assert not formats_conflict({new_shape: 10}, cases, max_shapes=1)  # too many shapes: free text


def test_losing_a_verified_shape_is_refused_with_the_shape_in_the_reason():
    cases = [vc(i, old_case(i)[0]) for i in range(6)] + [vc(10 + i, new_case(i)[0]) for i in range(20)]
    old = [CaseResult(c.trace_id, i < 6, "x") for i, c in enumerate(cases)]   # old shape only
    new = [CaseResult(c.trace_id, i >= 6, "x") for i, c in enumerate(cases)]  # new shape only
    tally = shape_tally(old, new, {c.trace_id: shape_of(c.input) for c in cases})
    assert lost_shapes(tally) == [shape_of(cases[0].input)]
    verdict = decide(old, new, GatePolicy(max_regression_rate=0.5))  # 20 wins / 6 losses: the test accepts
    assert verdict.decision == "accept"
    refuse_lost_shapes(verdict, old, new, cases)
    assert verdict.decision == "reject" and "loses 1 verified input shape" in verdict.reason
    assert "6/6 -> 0/6" in verdict.reason and verdict.details["lost_shapes"] == [shape_of(cases[0].input)[:120]]
    keeps = decide(old, old, GatePolicy())
    refuse_lost_shapes(keeps, old, old, cases)
    assert "loses" not in keeps.reason


def test_loop_refuses_a_program_that_forgets_the_old_format(tmp_path: Path):
    """Old format learned; then a program learned from the new format alone is proposed. The gate samples the
    old format from the history and refuses it; learn() over the whole history ends with one program for both."""
    home = Home.init(tmp_path / "home")
    loop = Loop(home, TaskSpec(name="ratio", metric="numeric", max_tokens=24), ScriptedBackend(lambda r: "0"),
                score_numeric, LoopConfig(learners=("crystallise",), shadow="off",
                                          policy=GatePolicy(max_regression_rate=0.5)))
    for i in range(60):
        loop.record_labelled(*old_case(i))
    first = loop.learn()
    assert first.committed, first.proposed[0].verdict
    for i in range(60):
        loop.record_labelled(*new_case(i))
    history = loop._traces()
    loop._seq = {t.id: t.seq or 0 for t in history}
    only_new = [c for c in loop._cases(history) if shape_of(c.input) == shape_of(new_case(0)[0])]
    cs = loop.crystallise.propose(loop._view(), loop._spec(), only_new)
    assert cs is not None
    assert loop.gate_and_commit(cs, loop.gate_cases(loop._trace_gate(history))) is None
    assert cs.verdict.decision == "reject" and "verified input shape" in cs.verdict.reason, cs.verdict.reason
    report = loop.learn()  # the whole history: one rule per input shape
    assert report.committed, [c.verdict.reason for c in report.proposed if c.verdict]
    rt = loop.runtime()
    for text, truth in [old_case(500), new_case(500)]:
        ans = rt.answer(text)
        assert ans.served_by == "code" and score_numeric(ans.output, truth), (text, ans.output, truth)
    close_sandboxes()
