"""The grade lifecycle: serving with fallback, shadow checks, softening after drift, promotion, G2/G3."""

from __future__ import annotations

import json
import re

import pytest

from crystallise.backends.scripted import ScriptedBackend
from crystallise.gate import score_exact, score_numeric
from crystallise.harness import grades
from crystallise.harness.grades import AnswerRecord, GradePolicy, TaskArtifacts, TaskEvidence
from crystallise.harness.runtime import TaskRuntime, close_sandboxes, fallback_kind
from crystallise.engine.shadow import ShadowChecker
from crystallise.harness.spec import TaskSpec, View
from crystallise.harness.structure import NUMBER_PATTERN, infer_schema
from crystallise.engine.loop import CachedBackend, Loop, LoopConfig
from crystallise.types import Scope
from tests.helpers import new_home, program_deltas, program_files, ratio_records


@pytest.fixture(autouse=True)
def _sandboxes():
    yield
    close_sandboxes()


CODE = '''def solve(x):
    if x == "abstain":
        return None
    if x == "boom":
        raise ValueError("no")
    if x == "bad":
        return ["not", "a", "string"]
    if x == "num":
        return 3.5
    return "code:" + x
'''


def runtime(grade: str, reply="llm", schema=None) -> tuple[TaskRuntime, ScriptedBackend]:
    spec = TaskSpec(name="t", grade=grade, output_schema=schema or {"type": "string"})
    files = {**program_files("t", CODE), "tasks/t/spec.json": spec.to_json()}
    backend = ScriptedBackend(reply if callable(reply) else (lambda r: reply))
    return TaskRuntime(spec, View(files.get), backend), backend


# ---------------------------------------------------------------- serving (part 5)


def test_g4_code_first_and_the_llm_answers_on_abstention_exception_and_schema_violation():
    rt, backend = runtime("G4")
    assert (rt.answer("hi").output, rt.answer("hi").served_by) == ("code:hi", "code")
    assert rt.answer("num").output == "3.5"  # a number from code is the text answer "3.5"
    assert backend.requests == []
    for value, kind in (("abstain", "abstain"), ("boom", "exception"), ("bad", "schema")):
        ans = rt.answer(value)
        assert ans.served_by == "llm" and ans.output == "llm" and ans.llm_calls == 1
        assert fallback_kind(ans.fallback_reason) == kind, ans.fallback_reason
        assert ans.code_sha == rt.code_sha
    assert "ValueError" in rt.answer("boom").fallback_reason
    assert len(backend.requests) == 4


def test_g5_is_code_only_and_below_g4_code_is_not_served():
    rt, backend = runtime("G5")
    assert rt.answer("hi").served_by == "code"
    ans = rt.answer("abstain")
    assert ans.served_by == "none" and ans.output is None and fallback_kind(ans.fallback_reason) == "abstain"
    assert backend.requests == []
    rt3, _ = runtime("G3")
    assert rt3.code is None and rt3.answer("hi").served_by == "llm"


def test_a_constrained_text_schema_checks_code_and_repairs_the_llm_once():
    replies = iter(["Maybe!", "no"])
    rt, backend = runtime("G4", reply=lambda r: next(replies), schema={"type": "string", "enum": ["yes", "no"]})
    ans = rt.answer("hi")  # code says "code:hi": not in the enum -> the LLM, whose first reply is repaired
    assert fallback_kind(ans.fallback_reason) == "schema" and "is not one of" in ans.fallback_reason
    assert ans.output == "no" and ans.llm_calls == 2 and ans.schema_error is None
    assert "required form" in backend.requests[1].messages[-1].content


# ---------------------------------------------------------------- the pure core


def rec(i, served="code", truth="1", output="1", grade="G4", fallback=None, sha="c"):
    return AnswerRecord(f"t{i}", i, grade, served, output=output, fallback=fallback, code_sha=sha, truth=truth,
                        input=f"x{i}")


def ev_of(records, grade="G4", policy=grades.DEFAULT_POLICY, **art):
    spec = TaskSpec("x", grade=grade)
    return grades.evidence(spec, records, {}, TaskArtifacts(code_sha="c", **art), score_exact, policy)


def test_evidence_counts_coverage_fallbacks_disagreements_and_the_streak():
    records = [rec(0, served="llm", fallback="abstain"), rec(1, output="2"), *[rec(i) for i in range(2, 6)],
               rec(6, sha="old")]  # another program's answer does not count for this one
    ev = ev_of(records)
    assert ev.window == 7 and ev.served == {"code": 6, "llm": 1, "none": 0}
    assert ev.code_attempts == 6 and ev.fallbacks["abstain"] == 1
    assert ev.disagreements == 1 and ev.disagreement_ids == ["t1"] and ev.code_verified == 5
    assert ev.streak == 0  # the newest answer is another program's
    assert ev_of(records[:-1]).streak == 4
    assert [c["id"] for c in ev.new_cases] == ["t1"] and ev.new_cases[0]["expected"] == "1"
    assert ev_of(records, policy=GradePolicy(window=3)).window == 3


def test_decide_softens_promotes_and_waits():
    policy = GradePolicy(min_disagreements=3, max_disagreement_rate=0.1, promote_after=5, min_eval_cases=4)
    drift = ev_of([*[rec(i) for i in range(10)], *[rec(i, output="0") for i in range(10, 13)]], policy=policy)
    move = grades.decide(drift, policy)
    assert (move.from_grade, move.to_grade, move.kind, move.rule) == ("G4", "G0", "soften", "disagreement")
    assert set(move.provenance) == {"t10", "t11", "t12"} and "3 of the 13 most recent verified" in move.reason
    with_suite = ev_of([*[rec(i) for i in range(10)], *[rec(i, output="0") for i in range(10, 13)]],
                       policy=policy, eval_cases=4)
    assert grades.decide(with_suite, policy).to_grade == "G3"  # softening lands on the best LLM grade
    two = ev_of([*[rec(i) for i in range(10)], rec(10, output="0"), rec(11, output="0")], policy=policy)
    assert grades.decide(two, policy) is None  # 2 < min_disagreements: no drift yet
    long = [*[rec(i) for i in range(100)], *[rec(i, output="0") for i in range(100, 104)]]
    assert grades.decide(ev_of(long, policy=GradePolicy(recent=0)), policy) is None  # 4 of 104 over the window
    recent = grades.decide(ev_of(long, policy=policy), policy)
    assert recent is not None and "4 of the 20 most recent" in recent.reason and "up from 0 of 84" in recent.reason
    # a steady 20 % error rate is no drift; it softens only while nothing shows the LLM doing better
    steady = [rec(i, output="0" if i % 5 == 0 else "1") for i in range(120)]
    ev = ev_of(steady, policy=policy)
    assert ev.recent_disagreements == 4 and grades.decide(ev, policy).reason.startswith("soften G4 → G3: 24 of the 120")
    ev.shadow_verified, ev.shadow_llm_right, ev.shadow_code_right = 10, 1, 8
    assert grades.decide(ev, policy) is None
    abstains = ev_of([rec(i, served="llm", fallback="abstain") for i in range(30)], policy=policy)
    assert grades.decide(abstains, policy) is None  # abstaining is what G4 is for
    steady = ev_of([rec(i) for i in range(6)], policy=policy)
    up = grades.decide(steady, policy)
    assert (up.to_grade, up.rule) == ("G5", "streak") and len(up.provenance) == 6
    g5 = ev_of([rec(i, grade="G5") for i in range(6)] + [rec(6, grade="G5", output="0")], grade="G5", policy=policy)
    assert grades.decide(g5, policy).to_grade == "G4"
    falls = ev_of([rec(i, served="llm", fallback="exception") for i in range(30)], policy=policy)
    assert grades.decide(falls, policy).rule == "fallback"
    g1 = TaskEvidence("x", "G1", eval_cases=4)
    assert grades.decide(g1, policy).to_grade == "G3"


def test_next_moves_say_what_would_move_the_task():
    ev = TaskEvidence("x", "G4", code=True, streak=212)
    lines = grades.next_moves(ev)
    assert lines[0] == "G4 → G5 after 500 code answers in a row with no fallback; currently 212"
    assert any("soften" in line for line in lines)
    assert "G0 → G4" in grades.next_moves(TaskEvidence("x", "G0"))[0]


def test_policy_rejects_bad_values():
    with pytest.raises(Exception, match="max_disagreement_rate"):
        GradePolicy(max_disagreement_rate=2)
    with pytest.raises(Exception, match="window"):
        GradePolicy(window=0)


def test_infer_schema():
    assert infer_schema(["1.5", "-2", "1,000"] * 4)["pattern"] == NUMBER_PATTERN
    assert infer_schema(["(A)", "(B)", "(A)", "(C)"] * 3) == {"type": "string", "enum": ["(A)", "(B)", "(C)"]}
    assert infer_schema(["1.5"] * 5) is None  # too few


# ---------------------------------------------------------------- the lifecycle in the loop


def drifted(n: int, start: int) -> list[dict]:
    """The same inputs as ratio_records, but the world changed: the right answer is now twice the ratio."""
    out = []
    for r in ratio_records(n, start):
        a, b = (float(x.replace(",", "")) for x in re.findall(r"\$([\d,]+)", r["context"]))
        out.append({"context": r["context"], "target": f"{round(2 * a / b, 2)}"})
    return out


def make_loop(home, policy: GradePolicy, shadow="inline", reply="0") -> Loop:
    backend = CachedBackend(ScriptedBackend(reply if callable(reply) else (lambda r: reply)))
    return Loop(home, TaskSpec(name="ratio", metric="numeric"), backend, score_numeric,
                LoopConfig(learners=("crystallise",), shadow=shadow, grade_policy=policy))


def stream(loop: Loop, records: list[dict]) -> list[str]:
    served = []
    for r in records:
        ans, tid = loop.answer(r["context"])
        loop.feedback(tid, r["target"], ans.output is not None and score_numeric(ans.output, r["target"]))
        served.append(ans.served_by)
    return served


def test_drift_softens_the_task_as_a_version_with_evidence_and_it_recrystallises(tmp_path, store_url):
    home = new_home(tmp_path, store_url)
    loop = make_loop(home, GradePolicy(window=60, min_disagreements=3, promote_after=1000, shadow_rate=0.0))
    stream(loop, ratio_records(24))
    loop.learn()
    assert View.of(home.repo).spec("ratio").grade == "G4"
    old_code = home.repo.read("tasks/ratio/code.py")
    assert set(stream(loop, ratio_records(40, start=40))) == {"code"}

    # inject drift: the code keeps answering the old ratio, feedback says otherwise
    bad = drifted(6, start=80)
    assert set(stream(loop, bad)) == {"code"}
    evals_before = home.repo.read("tasks/ratio/evals.jsonl")
    report = loop.learn()
    soften = next(c for c in report.proposed if c.learner == "lifecycle")
    assert soften.verdict.decision == "accept" and soften.verdict.statistic == "grade-policy"
    assert soften.summary.startswith("ratio: soften G4 → G0: 6 of the 20 most recent verified code answers")
    assert "up from 0 of 26 before (drift, Fisher exact p=" in soften.summary
    disagreeing = {t.id for t in home.store.list_traces(name="ratio", limit=1000)[-6:]}
    assert disagreeing <= set(soften.provenance)
    version = next(v for v in report.committed if v.changeset_id == soften.id)
    info = next(i for i in home.repo.log(limit=10) if i.trailers.get("Crystallise-Changeset") == [soften.id])
    assert "soften G4" in info.trailers["Crystallise-Verdict"][0] and version.provenance
    (entry,) = View.of(home.repo).jsonl("tasks/ratio/lifecycle.jsonl")
    assert entry["rule"] == "disagreement" and entry["evidence"]["recent_disagreements"] == 6
    assert entry["drift_seq"] == min(t.seq for t in home.store.list_traces(name="ratio", limit=1000)
                                     if t.id in disagreeing)
    # the disagreements became eval cases: appended, the old lines untouched
    evals = home.repo.read("tasks/ratio/evals.jsonl")
    assert evals.startswith(evals_before or "")
    added = [json.loads(line) for line in evals[len(evals_before or ""):].splitlines()]
    assert {c["id"] for c in added} == disagreeing and all("disagreement" in c["tags"] for c in added)
    assert {c["expected"] for c in added} == {r["target"] for r in bad}
    # the code is kept (revertible evidence) but no longer served first ...
    assert home.repo.read("tasks/ratio/code.py") == old_code and View.of(home.repo).spec("ratio").grade == "G0"
    assert loop.answer(bad[0]["context"])[0].served_by == "llm"
    # ... and, learning from the cases after the drift point, a new program is crystallised
    stream(loop, drifted(20, start=120))
    loop.learn()
    assert View.of(home.repo).spec("ratio").grade == "G4" and home.repo.read("tasks/ratio/code.py") != old_code
    fresh = drifted(3, start=300)
    for r in fresh:
        ans, _ = loop.answer(r["context"])
        assert ans.served_by == "code" and score_numeric(ans.output, r["target"])


def test_sustained_success_promotes_to_g5_and_a_disagreement_softens_it_back(tmp_path):
    home = new_home(tmp_path)
    loop = make_loop(home, GradePolicy(promote_after=10, shadow_rate=0.0))
    stream(loop, ratio_records(24))
    loop.learn()
    stream(loop, ratio_records(9, start=40))
    assert not [c for c in loop.learn().proposed if c.learner == "lifecycle"]  # 9 < 10: not yet
    stream(loop, ratio_records(1, start=49))  # only fresh traces make learn() run; their seq is the watermark
    report = loop.learn()
    (up,) = [c for c in report.proposed if c.learner == "lifecycle"]
    assert up.verdict.decision == "accept" and "no gate case lost" in up.verdict.reason
    assert up.summary == ("ratio: crystallise G4 → G5: 10 code answers in a row with no fallback and no verified "
                          "disagreement (policy: 10)")
    assert View.of(home.repo).spec("ratio").grade == "G5" and len(up.provenance) == 10
    assert loop.answer("not a ratio question")[0].served_by == "none"  # G5: code only
    stream(loop, drifted(1, start=90))
    down = [c for c in loop.learn().proposed if c.learner == "lifecycle"]
    assert down[0].summary.startswith("ratio: soften G5 → G4")


def test_promotion_is_refused_when_g5_would_lose_a_gate_case(tmp_path):
    home = new_home(tmp_path)
    right = lambda r: "right"  # noqa: E731 - the LLM gets the inputs the code abstains on right
    spec = TaskSpec(name="mix", metric="exact")
    loop = Loop(home, spec, CachedBackend(ScriptedBackend(right)), score_exact,
                LoopConfig(learners=(), shadow="off", grade_policy=GradePolicy(promote_after=3)))
    code = 'def solve(x):\n    return "code" if x.startswith("c") else None\n'
    from crystallise.engine.committer import Committer
    from crystallise.types import ChangeSet, Delta, Verdict
    Committer(home).commit(ChangeSet(learner="test", layer="harness", verdict=Verdict("accept", "test"), deltas=[
        *program_deltas(home.repo.read, "mix", code),
        Delta(op="set", target="artifact", path="tasks/mix/spec.json", before=home.repo.read("tasks/mix/spec.json"),
              after=TaskSpec(name="mix", metric="exact", grade="G4").to_json())]))
    loop._runtime = None
    inputs = [f"o{i}" for i in range(16)]  # answered by the LLM (fallback), right; 19 attempts < 20: no softening
    for x in inputs:
        _, tid = loop.answer(x)
        loop.feedback(tid, "right", True)
    for i in range(3):
        _, tid = loop.answer(f"c{i}")
        loop.feedback(tid, "code", True)
    report = loop.learn()
    (up,) = [c for c in report.proposed if c.learner == "lifecycle"]
    assert up.verdict.decision == "reject" and "would lose" in up.verdict.reason
    assert View.of(home.repo).spec("mix").grade == "G4"
    assert home.store.get_changeset(up.id).status == "rejected"
    _, tid = loop.answer("c9")
    loop.feedback(tid, "code", True)
    assert not [c for c in loop.learn().proposed if c.learner == "lifecycle"]  # refused once: not asked again


def test_shadow_disagreement_with_verified_feedback_becomes_an_eval_case(tmp_path):
    home = new_home(tmp_path)
    loop = make_loop(home, GradePolicy(shadow_rate=1.0, promote_after=1000, min_new_cases=4), shadow="inline")
    stream(loop, ratio_records(24))
    loop.learn()
    n_before = len(View.of(home.repo).jsonl("tasks/ratio/evals.jsonl"))
    recs = ratio_records(4, start=40)
    ans, tid = loop.answer(recs[0]["context"])
    loop.feedback(tid, recs[0]["target"], True)
    assert not [c for c in loop.learn().proposed if c.learner == "lifecycle"]  # 1 < min_new_cases: it waits
    recs = ratio_records(3, start=41)
    ids = [tid]
    for r in recs:  # the code answers; the LLM ("0") disagrees; feedback confirms the code
        ans, tid = loop.answer(r["context"])
        assert ans.served_by == "code"
        loop.feedback(tid, r["target"], True)
        ids.append(tid)
    shadows = home.store.list_traces(name="shadow:ratio", limit=100, with_children=True)
    assert {t.metadata["shadow_of"] for t in shadows} == set(ids)
    span = shadows[0].spans[0]
    assert span.kind == "llm" and span.attributes["agree"] is False and span.output == "0"
    ev = loop.evidence()
    assert ev.shadow_checks == 4 and ev.shadow_disagreements == 4 and ev.disagreements == 0
    report = loop.learn()
    (cs,) = [c for c in report.proposed if c.learner == "lifecycle"]
    assert cs.verdict.reason.startswith("append-only") and set(cs.provenance) == set(ids)
    cases = View.of(home.repo).jsonl("tasks/ratio/evals.jsonl")
    assert len(cases) == n_before + 4
    assert all({"disagreement", "shadow", "code-right"} <= set(c["tags"]) for c in cases[n_before:])
    assert not [c for c in loop.learn().proposed if c.learner == "lifecycle"]  # recorded once


def test_background_shadow_checks_run_off_the_hot_path(tmp_path):
    home = new_home(tmp_path)
    import threading

    gate = threading.Event()

    class Slow:
        def llm_answer(self, value, record=None):
            gate.wait(5)
            from crystallise.harness.runtime import Answer
            return Answer(output="x", served_by="llm", llm_calls=1)

    checker = ShadowChecker(home, "t", score_exact, rate=1.0, background=True, max_pending=1)
    assert checker.wanted("tr_1") and not ShadowChecker(home, "t", score_exact, rate=0.0).wanted("tr_1")
    assert checker.submit(trace_id="tr_1", value="v", code_output="x", runtime=Slow(), scope=Scope())
    assert not checker.submit(trace_id="tr_2", value="v", code_output="y", runtime=Slow(), scope=Scope())
    assert checker.dropped == 1 and home.store.list_traces(name="shadow:t", limit=10) == []  # still waiting
    gate.set()
    checker.close()
    (t,) = home.store.list_traces(name="shadow:t", limit=10, with_children=True)
    assert t.metadata["shadow_of"] == "tr_1" and t.spans[0].attributes["agree"] is True


def test_learned_schema_is_g2_and_is_dropped_when_verified_answers_break_it(tmp_path):
    home = new_home(tmp_path)

    def reply(request):  # wordy first, the bare number after a repair turn
        if "required form" in request.messages[-1].content:
            return "7"
        return "The answer is 7"

    backend = CachedBackend(ScriptedBackend(reply))
    spec = TaskSpec(name="num", metric="exact")
    loop = Loop(home, spec, backend, score_exact, LoopConfig(learners=("schema",), shadow="off",
                                                             grade_policy=GradePolicy(min_eval_cases=1000)))
    inputs = [f"how many {i}?" for i in range(40)]
    for x in inputs:
        ans, tid = loop.answer(x)
        loop.feedback(tid, "7", ans.output == "7")
    report = loop.learn()
    (cs,) = [c for c in report.proposed if c.learner == "schema"]
    assert cs.verdict.decision == "accept", cs.verdict.reason
    learned = View.of(home.repo).spec("num")
    assert learned.grade == "G2" and learned.output_schema["pattern"] == NUMBER_PATTERN
    assert json.loads(home.repo.read("tasks/num/schema.json"))["replaces"] == {"type": "string"}
    ans, tid = loop.answer("how many now?")
    assert ans.output == "7" and ans.llm_calls == 2
    loop.feedback(tid, "seven", False)  # the world needs words now: the schema rejects a verified answer
    report = loop.learn()
    (soft,) = [c for c in report.proposed if c.learner == "lifecycle"]
    assert "schema dropped" in soft.summary and soft.summary.startswith("num: soften G2 → G0")
    assert soft.deltas[0].path == "tasks/num/schema.json" and soft.deltas[0].after is None
    (entry,) = View.of(home.repo).jsonl("tasks/num/lifecycle.jsonl")
    assert entry["rule"] == "schema" and entry["traces"] == [tid]
    # the schema learner, seeing the new need, proposes a schema that holds it (gated like any change)
    assert "seven" in View.of(home.repo).spec("num").output_schema.get("enum", ["seven"])


def test_an_eval_suite_makes_a_task_g3_and_its_cases_join_the_gate(tmp_path):
    from crystallise.engine.committer import Committer
    from crystallise.types import ChangeSet, Delta, Verdict

    home = new_home(tmp_path)
    loop = make_loop(home, GradePolicy(min_eval_cases=5, shadow_rate=0.0))
    loop.config.learners = ()
    rows = "".join(json.dumps({"id": f"h{i}", "input": f"q{i}", "expected": "2.0", "verifier": {"kind": "numeric"},
                               "tags": [], "created_by": "human"}) + "\n" for i in range(6))
    Committer(home).commit(ChangeSet(learner="test", layer="harness", verdict=Verdict("accept", "test"), deltas=[
        Delta(op="set", target="artifact", path="tasks/ratio/evals.jsonl", before=None, after=rows)]))
    records = [{"context": f"Use formula R. Question: {2 * i} over {i} units.", "target": "2.0"} for i in range(1, 20)]
    stream(loop, records)
    history = home.store.list_traces(name="ratio", limit=1000, with_children=True)
    assert loop.gate_cases(loop._trace_gate(history)) == loop._trace_gate(history)  # below G3: traces only
    report = loop.learn()
    (up,) = [c for c in report.proposed if c.learner == "lifecycle"]
    assert up.summary.startswith("ratio: crystallise G0 → G3: an eval suite of 6 recorded cases")
    assert View.of(home.repo).spec("ratio").grade == "G3"
    gate = loop.gate_cases(loop._trace_gate(history))
    assert {f"h{i}" for i in range(6)} <= {c.trace_id for c in gate}
    assert loop._verifiers["h0"] == {"kind": "numeric"}


def test_a_new_program_for_a_g5_task_starts_at_g4(tmp_path):
    from crystallise.engine.committer import Committer
    from crystallise.types import ChangeSet, Delta, Verdict

    home = new_home(tmp_path)
    loop = make_loop(home, GradePolicy(shadow_rate=0.0))
    Committer(home).commit(ChangeSet(learner="test", layer="harness", verdict=Verdict("accept", "test"), deltas=[
        *program_deltas(home.repo.read, "ratio", "def solve(x):\n    return None\n"),
        Delta(op="set", target="artifact", path="tasks/ratio/spec.json", before=home.repo.read("tasks/ratio/spec.json"),
              after=TaskSpec(name="ratio", metric="numeric", grade="G5").to_json())]))
    cs = ChangeSet(learner="crystallise", layer="harness", deltas=[
        Delta(op="set", target="artifact", path="tasks/ratio/code.py", before=home.repo.read("tasks/ratio/code.py"),
              after="def solve(x):\n    return '1'\n")])
    loop._new_program_starts_at_g4(cs)
    assert TaskSpec.from_json(cs.deltas[-1].after).grade == "G4" and cs.deltas[-1].path == "tasks/ratio/spec.json"
