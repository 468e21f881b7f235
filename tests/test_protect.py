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
from crystallise.api.auth import Principal
from crystallise.engine.access import actor_for
from crystallise.governance import Actor, check_protected
from crystallise.harness.spec import TaskSpec
from crystallise.engine.committer import Committer
from crystallise.types import ChangeSet, Delta, Verdict
from tests.helpers import new_home, program_deltas, ratio_records
from tests.test_loop import make_loop, stream

CASE_A = {"id": "a", "input": "q1", "expected": "1.0", "verifier": {"kind": "numeric"}}
CASE_B = {"id": "b", "input": "q2", "expected": "2.0", "verifier": {"kind": "numeric"}}
CASE_C = {"id": "c", "input": "q3", "expected": "3.0"}
PY_PASS = {"kind": "python", "source": "def check(output, expected):\n    return True\n"}
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
        "append a case graded by python": Delta(op="set", target="artifact", path=EVALS, before=evals,
                                                after=evals + rows(CASE_C | {"verifier": PY_PASS})),
        "append a case graded by a judge": Delta(op="set", target="artifact", path=EVALS, before=evals,
                                                 after=evals + rows(CASE_C | {"verifier": {"kind": "judge"}})),
        "append a case with a broken grader": Delta(op="set", target="artifact", path=EVALS, before=evals,
                                                    after=evals + rows(CASE_C | {"verifier": {"kind": "regex",
                                                                                             "pattern": "("}})),
        "append a row that is no case": Delta(op="set", target="artifact", path=EVALS, before=evals,
                                              after=evals + rows({"id": "c", "input": "q3"})),
        "void an existing case": Delta(op="set", target="artifact", path=EVALS, before=evals,
                                       after=evals + rows({"id": "void:a", "voids": "a", "created_by": "undo"})),
    }


ATTACKS = [
    "rewrite a case's expected answer", "change a case's grader", "delete one case", "delete the eval file",
    "append a case under an old id", "append junk", "add a grader", "edit the shared graders", "write a log",
    "loosen the task's metric", "delete the task spec", "edit a trace", "append a case graded by python",
    "append a case graded by a judge", "append a case with a broken grader", "append a row that is no case",
    "void an existing case",
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


@pytest.mark.parametrize("verifier", [None, {"kind": "exact", "casefold": True},
                                      {"kind": "regex", "pattern": "3(\\.0)?"},
                                      {"kind": "json_schema", "schema": {"type": "string"}}])
def test_learners_may_add_cases_with_data_verifiers(home, verifier):
    evals = home.repo.read(EVALS)
    new = CASE_C if verifier is None else CASE_C | {"verifier": verifier}
    Committer(home).commit(accepted("crystallise", Delta(op="set", target="artifact", path=EVALS, before=evals,
                                                         after=evals + rows(new))))
    assert home.repo.read(EVALS).endswith(rows(new))


def test_a_learner_cannot_smuggle_in_a_grader_that_writes_a_file(home, tmp_path):
    """The attack: a learner proposes an eval case whose python verifier would write a file when graded.
    The committer refuses it from the text alone; nothing of it runs, nothing is written."""
    pwned = tmp_path / "pwned"
    grader = {"kind": "python", "source": f"def check(output, expected):\n    open({str(pwned)!r}, 'w').write('x')\n"
                                          "    return True\n"}
    evals, head, versions = home.repo.read(EVALS), home.repo.head(), len(home.store.list_versions())
    cs = accepted("crystallise", Delta(op="set", target="artifact", path=EVALS, before=evals,
                                       after=evals + rows(CASE_C | {"verifier": grader})))
    (v,) = check_protected(cs, read=home.repo.read)
    assert v.rule == "grader" and "'python' verifier" in v.detail and "data verifiers only" in v.detail
    with pytest.raises(ProtectedError, match="data verifiers only"):
        Committer(home).commit(cs)
    assert not pwned.exists()
    assert home.repo.head() == head and len(home.store.list_versions()) == versions
    assert home.repo.read(EVALS) == evals
    saved = home.store.get_changeset(cs.id)
    assert saved.status == "rejected" and "data verifiers only" in saved.verdict.reason


def test_people_may_add_cases_graded_by_python(home):
    evals = home.repo.read(EVALS)
    new = CASE_C | {"verifier": PY_PASS}
    Committer(home, actor=Actor.cli("alice")).commit(accepted("human", Delta(
        op="set", target="artifact", path=EVALS, before=evals, after=evals + rows(new))))
    assert home.repo.read(EVALS).endswith(rows(new))


def test_people_may_define_graders_but_not_rewrite_cases(home):
    grader = Delta(op="set", target="artifact", path="tasks/ratio/graders/check.py", before=None, after="X = 1\n")
    person = Committer(home, actor=Actor.cli("alice"))
    version = person.commit(accepted("human", grader))
    assert "Crystallise-Actor: cli:alice" in home.repo.show(version.commit)
    assert home.store.get_changeset(version.changeset_id).evidence["actor"] == {"name": "alice", "via": "cli"}
    evals = home.repo.read(EVALS)
    with pytest.raises(ProtectedError):  # even a person gives a corrected case a new id
        person.commit(accepted("human", Delta(op="set", target="artifact", path=EVALS, before=evals,
                                              after=rows(CASE_A | {"expected": "0"}))))


@pytest.mark.parametrize("name", ["human", "review", "define", "revert", "undo", "user", "accept"])
def test_a_change_set_calling_itself_a_person_is_a_learner(home, name):
    """Issue 15 attack: `learner="human"` added a grader, `learner="review"` changed the metric."""
    spec = home.repo.read(SPEC)
    grader = Delta(op="set", target="artifact", path="tasks/ratio/graders/check.py", before=None, after="X = 1\n")
    metric = Delta(op="set", target="artifact", path=SPEC, before=spec,
                   after=json.dumps(json.loads(spec) | {"metric": "exact"}))
    for delta in (grader, metric):
        cs = accepted(name, delta)
        cs.evidence = {"actor": {"name": "root", "via": "cli"}, "review": {"decision": "approve", "by": "root"}}
        with pytest.raises(ProtectedError):
            Committer(home).commit(cs)
        saved = home.store.get_changeset(cs.id)
        assert saved.status == "rejected" and "actor" not in saved.evidence  # a self-written actor is dropped
    assert home.repo.read("tasks/ratio/graders/check.py") is None and home.repo.read(SPEC) == spec


def test_an_actor_is_only_made_by_its_factories_and_only_admin_keys_make_admin_actors():
    with pytest.raises(TypeError):
        Actor(name="root", via="cli")
    with pytest.raises(TypeError):
        Actor.admin_key(Principal(org="evil", key_id="key_1"))
    assert Actor.admin_key(Principal(org="*", key_id="key_9")).may_protect
    assert not Actor.explicit("undo").may_protect


def test_an_org_keys_request_has_no_authority_over_graders(home):
    grader = Delta(op="set", target="artifact", path="tasks/ratio/graders/check.py", before=None, after="X = 1\n")
    with pytest.raises(ProtectedError):
        Committer(home).commit(accepted("human", grader), actor=actor_for(Principal(org="evil"), "revert"))
    Committer(home).commit(accepted("human", grader), actor=actor_for(Principal(org="*", key_id="k"), "edit"))
    assert home.repo.read("tasks/ratio/graders/check.py") == "X = 1\n"


def test_revert_keeps_the_eval_cases_a_version_recorded(tmp_path):
    home = new_home(tmp_path)
    loop = make_loop(home)
    stream(loop, ratio_records(24))
    (version,) = loop.learn().committed
    cases = home.repo.read(EVALS)
    assert cases and home.repo.read("tasks/ratio/code.py")
    Committer(home).revert(version.number, actor=Actor.cli())
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


def test_the_loop_refuses_a_learner_case_graded_by_code(tmp_path):
    """Through the gate: right answers (the gate accepts) carry a case whose python grader would
    write a file. The gate never runs it, the committer refuses it, the loop keeps it as rejected."""
    home = new_home(tmp_path)
    loop = make_loop(home)
    stream(loop, ratio_records(30))
    cases = [c for c in verified_cases(home.store.list_traces(limit=1000, with_children=True), "ratio")]
    pwned = tmp_path / "pwned"
    grader = {"kind": "python", "source": f"def check(output, expected):\n    open({str(pwned)!r}, 'w').write('x')\n"
                                          "    return True\n"}
    evals, spec, versions = home.repo.read(EVALS), home.repo.read(SPEC), len(home.store.list_versions())
    sneaky = ChangeSet(learner="adversary", layer="harness", deltas=[
        Delta(op="set", target="artifact", path=SPEC, before=spec,  # serve the code: same metric, a grade up
              after=json.dumps(json.loads(spec) | {"grade": "G4"})),
        *program_deltas(home.repo.read, "ratio",
                        "from decimal import Decimal\nimport re\n\ndef solve(value):\n"
                        "    a, b = [Decimal(x.replace(',', '')) for x in re.findall(r'\\$([\\d,]+)', value)]\n"
                        "    return str(round(a / b, 2))\n"),
        Delta(op="set", target="artifact", path=EVALS, before=evals,
              after=(evals or "") + rows(CASE_C | {"id": "sneaky", "verifier": grader}))])
    assert loop.gate_and_commit(sneaky, cases) is None
    assert sneaky.verdict.decision == "reject" and "data verifiers only" in sneaky.verdict.reason
    assert home.store.get_changeset(sneaky.id).status == "rejected"
    assert not pwned.exists()
    assert home.repo.read(EVALS) == evals and home.repo.read("tasks/ratio/code.py") is None
    assert home.repo.read(SPEC) == spec and len(home.store.list_versions()) == versions


@pytest.mark.parametrize("path, before", [
    ("orgs/acme/tasks/ratio/graders/check.py", None),
    ("orgs/acme/graders/g.py", None),
    ("orgs/acme/logs/run.log", None),
    ("orgs/acme/tasks/ratio/evals.jsonl", rows(CASE_A)),
])
def test_an_orgs_namespace_is_protected_like_the_shared_tree(home, path, before):
    """What one org's runs taught lives in orgs/<org>/ (wip/tenancy-b): its graders, logs and eval cases
    are as far outside a learner's reach as the shared ones."""
    if before is not None:
        Committer(home, actor=Actor.cli()).commit(accepted("define", Delta(op="set", target="artifact", path=path,
                                                                          before=None, after=before)))
    after = rows(CASE_A | {"expected": "9"}) if before is not None else "X = 1\n"
    with pytest.raises(ProtectedError):
        Committer(home).commit(accepted("human", Delta(op="set", target="artifact", path=path, before=before,
                                                       after=after)))
