"""Protected graders: an adversarial learner tries every way to change what grades it; all fail.

The adversary's change sets carry an *accept* verdict (as if it had fooled the gate): the
committer must still refuse them, keep them as rejected evidence, and leave the artifact
repository and the store exactly as they were.
"""

from __future__ import annotations

import json

import pytest

from crystallise.errors import ProtectedError
from crystallise.harness.learn import verified_cases
from crystallise.governance import check_protected
from crystallise.harness.spec import TaskSpec
from crystallise.ledger import Committer
from crystallise.types import ChangeSet, Delta, Verdict
from tests.helpers import new_home, program_deltas, ratio_records
from tests.test_loop import make_loop, stream

CASE_A = {"id": "a", "input": "q1", "expected": "1.0", "verifier": {"kind": "numeric"}}
CASE_B = {"id": "b", "input": "q2", "expected": "2.0", "verifier": {"kind": "numeric"}}
EVALS = "tasks/ratio/evals.jsonl"
SPEC = "tasks/ratio/spec.json"


def rows(*cases: dict) -> str:
    return "".join(json.dumps(c, sort_keys=True) + "\n" for c in cases)


def accepted(learner: str, *deltas: Delta) -> ChangeSet:
    return ChangeSet(learner=learner, layer="harness", deltas=list(deltas),
                     verdict=Verdict(decision="accept", reason="the adversary fooled the gate"))


@pytest.fixture
def home(tmp_path):  # the rules live in the committer, not the store: SQLite is enough here
    home = new_home(tmp_path)
    c = Committer(home)
    c.commit(accepted("define", Delta(op="set", target="artifact", path=SPEC, before=None,
                                      after=TaskSpec(name="ratio", metric="numeric").to_json())))
    c.commit(accepted("crystallise", Delta(op="set", target="artifact", path=EVALS, before=None,
                                           after=rows(CASE_A, CASE_B))))
    return home


def attacks(home) -> dict[str, Delta]:
    evals, spec = home.repo.read(EVALS), home.repo.read(SPEC)
    lenient = json.loads(spec) | {"metric": "exact"}
    return {
        "rewrite a case's expected answer": Delta(op="set", target="artifact", path=EVALS, before=evals,
                                                  after=rows(CASE_A | {"expected": "9.9"}, CASE_B)),
        "change a case's grader": Delta(op="set", target="artifact", path=EVALS, before=evals,
                                        after=rows(CASE_A | {"verifier": {"kind": "regex", "pattern": ".*"}}, CASE_B)),
        "delete one case": Delta(op="set", target="artifact", path=EVALS, before=evals, after=rows(CASE_B)),
        "delete the eval file": Delta(op="set", target="artifact", path=EVALS, before=evals, after=None),
        "append a case under an old id": Delta(op="set", target="artifact", path=EVALS, before=evals,
                                               after=evals + rows(CASE_A | {"expected": "9.9"})),
        "append junk": Delta(op="set", target="artifact", path=EVALS, before=evals, after=evals + "not json\n"),
        "add a grader": Delta(op="set", target="artifact", path="tasks/ratio/graders/check.py", before=None,
                              after="def check(out, expected):\n    return True\n"),
        "edit the shared graders": Delta(op="set", target="artifact", path="graders/numeric.py", before=None,
                                         after="PASS = True\n"),
        "write a log": Delta(op="set", target="artifact", path="logs/gate.log", before=None, after="all good\n"),
        "loosen the task's metric": Delta(op="set", target="artifact", path=SPEC, before=spec,
                                          after=json.dumps(lenient)),
        "delete the task spec": Delta(op="set", target="artifact", path=SPEC, before=spec, after=None),
        "edit a trace": Delta(op="update", target="trace", item_id="tr_1", after={"output": "right"}),  # type: ignore[arg-type]
    }


ATTACKS = [
    "rewrite a case's expected answer", "change a case's grader", "delete one case", "delete the eval file",
    "append a case under an old id", "append junk", "add a grader", "edit the shared graders", "write a log",
    "loosen the task's metric", "delete the task spec", "edit a trace",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_every_attack_is_refused_and_kept_as_evidence(home, attack):
    delta = attacks(home)[attack]
    head, versions = home.repo.head(), len(home.store.list_versions())
    cs = accepted("adversary", delta)
    assert check_protected(cs, read=home.repo.read), attack
    with pytest.raises(ProtectedError):
        Committer(home).commit(cs)
    assert home.repo.head() == head and len(home.store.list_versions()) == versions
    saved = home.store.get_changeset(cs.id)
    assert saved.status == "rejected" and saved.verdict.decision == "reject"
    assert saved.verdict.details["protected"]


def test_attack_list_matches_the_parametrisation(home):
    assert sorted(attacks(home)) == sorted(ATTACKS)


def test_learners_may_add_new_cases(home):
    evals = home.repo.read(EVALS)
    new = CASE_B | {"id": "c", "input": "q3"}
    Committer(home).commit(accepted("crystallise", Delta(op="set", target="artifact", path=EVALS, before=evals,
                                                         after=evals + rows(new))))
    assert home.repo.read(EVALS).endswith(rows(new))


def test_people_may_define_graders_but_not_rewrite_cases(home):
    grader = Delta(op="set", target="artifact", path="tasks/ratio/graders/check.py", before=None, after="X = 1\n")
    Committer(home).commit(accepted("human", grader))
    evals = home.repo.read(EVALS)
    with pytest.raises(ProtectedError):  # even a person gives a corrected case a new id
        Committer(home).commit(accepted("human", Delta(op="set", target="artifact", path=EVALS, before=evals,
                                                       after=rows(CASE_A | {"expected": "0"}))))


def test_revert_keeps_the_eval_cases_a_version_recorded(tmp_path):
    home = new_home(tmp_path)
    loop = make_loop(home)
    stream(loop, ratio_records(24))
    (version,) = loop.learn().committed
    cases = home.repo.read(EVALS)
    assert cases and home.repo.read("tasks/ratio/code.py")
    Committer(home).revert(version.number)
    assert home.repo.read("tasks/ratio/code.py") is None
    assert home.repo.read(EVALS) == cases  # evidence about the task outlives the change


def test_the_loop_treats_a_protected_violation_as_a_rejection(tmp_path, store_url):
    home = new_home(tmp_path, store_url)
    loop = make_loop(home)
    stream(loop, ratio_records(30))
    cases = [c for c in verified_cases(home.store.list_traces(limit=1000, with_children=True), "ratio")]
    spec, versions = home.repo.read(SPEC), len(home.store.list_versions())
    # right answers (the gate accepts) smuggled in with a looser metric
    sneaky = ChangeSet(learner="adversary", layer="harness", deltas=[
        *program_deltas(home.repo.read, "ratio",
                        "from decimal import Decimal\nimport re\n\ndef solve(value):\n"
                        "    a, b = [Decimal(x.replace(',', '')) for x in re.findall(r'\\$([\\d,]+)', value)]\n"
                        "    return str(round(a / b, 2))\n"),
        Delta(op="set", target="artifact", path=SPEC, before=spec,
              after=TaskSpec(name="ratio", metric="exact", grade="G4").to_json())])
    assert loop.gate_and_commit(sneaky, cases) is None
    assert sneaky.verdict.decision == "reject" and "metric" in sneaky.verdict.reason
    assert home.store.get_changeset(sneaky.id).status == "rejected"
    assert home.repo.read(SPEC) == spec and home.repo.read("tasks/ratio/code.py") is None
    assert len(home.store.list_versions()) == versions
