"""One evidence rule (crystallise.evidence), and a revoked run counts nowhere.

A run taken back by `crystallise revert --trace/--user` is revoked (feedback of kind "revoked").
Before the evidence module, `harness/answers.truth_of` still counted such a run as verified truth
(the grades and the advisor read it) while `harness/learn.verified_cases` did not.
"""

from __future__ import annotations

import pathlib
import re

import crystallise
from crystallise import evidence
from crystallise.context.credit import usage_rows
from crystallise.context.reflect import credit
from crystallise.context.skill_learner import procedures
from crystallise.harness.advise import scope_evidence
from crystallise.harness.answers import answer_records
from crystallise.types import Feedback, Span, Trace
from crystallise.weights.dataset import verified_answer


def _run(*feedback: Feedback, output: str = "3", status: str = "ok") -> Trace:
    span = Span(name="task:add", kind="task", input="1+1", output=output,
                attributes={"served_by": "code", "grade": "G4", "shown_items": ["it_a"]})
    tool = Span(name="calc", kind="tool")
    return Trace(name="add", input="1+1", output=output, status=status, spans=[span, tool],  # type: ignore[arg-type]
                 feedback=list(feedback))


def _fb(**kw) -> Feedback:
    return Feedback(trace_id="", **kw)


def test_the_verified_rule():
    assert evidence.verified(_run(_fb(score=0.0, correction="2"))) == ("2", "correction")
    assert evidence.verified(_run(_fb(score=1.0))) == ("3", "accepted")
    assert evidence.verified(_run(_fb(score=0.0))) is None
    assert evidence.verified(_run(_fb(score=1.0, kind="implicit", source="implicit"))) is None
    # the latest feedback that speaks wins; a failing score takes back an acceptance, not a correction
    assert evidence.verified(_run(_fb(score=1.0, created_at=1), _fb(score=0.0, created_at=2))) is None
    assert evidence.verified(_run(_fb(correction="2", created_at=1), _fb(score=0.0, created_at=2))) == (
        "2", "correction")
    assert evidence.verified(_run(_fb(correction="2"), status="error")) is None
    assert evidence.outcome_of(_run(_fb(score=0.4))) == -1 and evidence.outcome_of(_run()) == 0


def test_a_revoked_run_counts_nowhere():
    live = _run(_fb(score=0.0, correction="2"))
    revoked = _run(_fb(score=0.0, correction="2"), _fb(kind=evidence.REVOKED, comment="undo trace"))
    assert evidence.is_revoked(revoked) and not evidence.is_revoked(live)

    # evidence itself
    assert evidence.truth_of(live) == "2" and evidence.truth_of(revoked) is None
    assert evidence.verified(revoked) is None and evidence.score_of(revoked) is None
    assert evidence.outcome_of(revoked) is None
    assert [c.trace_id for c in evidence.verified_cases([live, revoked], "add")] == [live.id]

    # the grade rules' answer records (and through them the grades and the advisor)
    recs = {r.trace_id: r for r in answer_records([live, revoked], "add")}
    assert recs[live.id].truth == "2" and recs[live.id].outcome == 0.0
    assert recs[revoked.id].truth is None and recs[revoked.id].outcome is None
    (adv,) = scope_evidence("add", "G4", [revoked])
    assert adv.verified == 0 and adv.failures == 0
    (adv,) = scope_evidence("add", "G4", [live])
    assert adv.verified == 1

    # context credit (reflect's counts and the credit log), skill procedures
    assert credit([revoked]) == credit([]) and credit([live])[1]["it_a"] == 1
    blame_all = lambda t, shown: set(shown)  # noqa: E731 - the failed live run blames its item; revoked: nothing
    assert usage_rows([revoked], blame_all) == [] and [r[2] for r in usage_rows([live], blame_all)] == [-1]
    assert procedures([revoked]) == [] and procedures([live])

    # training data for the weights layer
    assert verified_answer(revoked) is None and verified_answer(live) == ("2", "correction")


def test_no_module_but_evidence_reads_the_revoked_mark():
    """The rule is in one place: nobody else compares a feedback kind to "revoked"."""
    root = pathlib.Path(crystallise.__file__).parent
    pattern = re.compile(r"""kind\s*==\s*(["']revoked["']|REVOKED)""")
    offenders = [str(f.relative_to(root)) for f in root.rglob("*.py")
                 if f.name != "evidence.py" and pattern.search(f.read_text())]
    assert offenders == []
