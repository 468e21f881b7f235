"""The grade lifecycle at the edges: gather a task's evidence from the store, and turn a move into a change set.

`grades.py` decides (pure); this module reads and writes plain data around it:

    ev = gather(store, view, spec, metric, policy)           # traces + shadow traces + artifacts
    move = grades.decide(ev, policy)
    cs = lifecycle_changeset(view, spec, ev, move, policy)   # None when nothing to record

A move becomes one version whose deltas are:

    tasks/<name>/spec.json        the new grade (and, when a learned schema is dropped, the old schema)
    tasks/<name>/lifecycle.jsonl  one appended line: from, to, rule, reason, the evidence figures, trace ids
    tasks/<name>/evals.jsonl      verified disagreements appended as eval cases (append-only, never edited)
    tasks/<name>/schema.json      removed when the learned schema is dropped

and whose verdict is the rule that fired (statistic `grade-policy`), with provenance =
the traces that are the evidence. Verified disagreements found while no move is due are
recorded the same way, as an append-only change set of eval cases: serving is unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from crystallise.gate.suite import Case, EvalSuite
from crystallise.harness.answers import shadow_name
from crystallise.harness.grades import (
    DEFAULT_POLICY,
    GradeMove,
    GradePolicy,
    TaskArtifacts,
    TaskEvidence,
    answer_records,
    evidence,
    shadow_records,
)
from crystallise.harness.learn import verified_cases
from crystallise.harness.runtime import code_sha, constrains_text
from crystallise.harness.spec import TaskSpec, View, dump_jsonl, task_path
from crystallise.store.base import Store
from crystallise.types import ChangeSet, Delta, Trace, Verdict, now

__all__ = ["drift_seq", "eval_suite", "gather", "lifecycle_changeset", "task_artifacts", "verifier_for"]

_MAX_IDS = 200  # trace ids kept in a lifecycle.jsonl line (the change set keeps them all)


def verifier_for(spec: TaskSpec) -> dict[str, Any]:
    return {"kind": "numeric" if spec.metric == "numeric" else "exact"}


def eval_suite(view: View, name: str) -> EvalSuite:
    return EvalSuite.from_jsonl(name, view.read(task_path(name, "evals.jsonl")) or "")


def drift_seq(view: View, name: str) -> int:
    """The trace seq from which evidence counts: where the last softening for disagreement saw drift begin.

    Cases recorded before it taught the program that drifted; after such a softening the
    learners and the gate use only cases from this point on (0: no drift recorded)."""
    entries = [e for e in view.jsonl(task_path(name, "lifecycle.jsonl")) if e.get("drift_seq") is not None]
    return int(entries[-1]["drift_seq"]) if entries else 0


def task_artifacts(view: View, name: str, verified: int = 0) -> TaskArtifacts:
    suite = eval_suite(view, name)
    return TaskArtifacts(
        examples=len(view.jsonl(task_path(name, "examples.jsonl"))),
        eval_cases=len(suite),
        eval_case_ids=frozenset(suite.ids),
        verifiers=tuple(sorted({str(c.verifier.get("kind")) for c in suite})),
        code_sha=code_sha(view.read(task_path(name, "code.py"))),
        verified_cases=verified,
        learned_schema=view.read(task_path(name, "schema.json")) is not None,
    )


def gather(store: Store, view: View, spec: TaskSpec, metric: Callable[[Any, Any], bool],
           policy: GradePolicy = DEFAULT_POLICY, *, history: list[Trace] | None = None) -> TaskEvidence:
    """The task's evidence from its stored traces (`history`, if the caller already has them).

    Evidence is per namespace: a view of org O's artifacts counts O's runs and shadow checks only,
    the shared view the runs with no org (harness/spec.py)."""
    def mine(runs: list[Trace]) -> list[Trace]:
        return [t for t in runs if t.org_id == view.org]

    traces = history if history is not None else mine(store.list_traces(name=spec.name, limit=1_000_000,
                                                                        with_children=True))
    shadows = shadow_records(mine(store.list_traces(name=shadow_name(spec.name), limit=1_000_000,
                                                    with_children=True)))
    artifacts = task_artifacts(view, spec.name, len(verified_cases(traces, spec.name)))
    check = _schema_check(spec.output_schema) if constrains_text(spec.output_schema) else None
    return evidence(spec, answer_records(traces, spec.name), shadows, artifacts, metric, policy, schema_check=check)


def _schema_check(schema: dict[str, Any]) -> Callable[[Any], bool]:
    from crystallise.schemas import validator as make_validator

    validator = make_validator(schema)
    return lambda value: validator.is_valid(value.strip() if isinstance(value, str) else value)


def lifecycle_changeset(view: View, spec: TaskSpec, ev: TaskEvidence, move: GradeMove | None,
                        policy: GradePolicy = DEFAULT_POLICY) -> ChangeSet | None:
    """The version for `move` (with the new eval cases), or an eval-cases-only one, or None."""
    deltas: list[Delta] = []
    cases_delta, case_ids = _case_delta(view, spec, ev)
    if move is None:
        if cases_delta is None or len(case_ids) < max(1, policy.min_new_cases):
            return None
        return ChangeSet(
            learner="lifecycle", layer="harness", deltas=[cases_delta],
            summary=f"{spec.name}: +{len(case_ids)} eval cases from verified disagreements",
            provenance=case_ids, evidence={"task": spec.name, "eval_cases": case_ids},
            verdict=Verdict(decision="accept", statistic="append-only", n=len(case_ids),
                            reason=f"append-only: {len(case_ids)} eval cases recorded from verified disagreements "
                                   "(serving unchanged; learners may add cases, never change them)"),
        )
    spec_path = task_path(spec.name, "spec.json")
    schema = spec.output_schema
    if move.drop_schema:
        learned = json.loads(view.read(task_path(spec.name, "schema.json")) or "{}")
        schema = learned.get("replaces") or {"type": "string"}
        deltas.append(Delta(op="set", target="artifact", path=task_path(spec.name, "schema.json"),
                            before=view.read(task_path(spec.name, "schema.json")), after=None,
                            reason="learned schema dropped: verified answers break it"))
    new = TaskSpec(**{**spec.__dict__, "grade": move.to_grade, "output_schema": schema})
    deltas.append(Delta(op="set", target="artifact", path=spec_path, before=view.read(spec_path),
                        after=new.to_json(), reason=move.reason))
    log_path = task_path(spec.name, "lifecycle.jsonl")
    before = view.read(log_path)
    entry = {"at": round(now(), 3), "from": move.from_grade, "to": move.to_grade, "kind": move.kind,
             "rule": move.rule, "reason": move.reason, "evidence": summary(ev),
             "traces": list(move.provenance[:_MAX_IDS]), "eval_cases_added": case_ids}
    if move.rule == "disagreement" and ev.first_disagreement_seq is not None:
        entry["drift_seq"] = ev.first_disagreement_seq  # learners and the gate use cases from here on
    deltas.append(Delta(op="set", target="artifact", path=log_path, before=before,
                        after=(before or "") + dump_jsonl([entry]), reason="grade history"))
    if cases_delta is not None:
        deltas.append(cases_delta)
    provenance = list(dict.fromkeys([*move.provenance, *case_ids]))
    return ChangeSet(
        learner="lifecycle", layer="harness", deltas=deltas,
        summary=f"{spec.name}: {move.reason}",
        provenance=provenance,
        evidence={"task": spec.name, "move": asdict(move), "evidence": summary(ev)},
        verdict=Verdict(decision="accept", reason=move.reason, statistic="grade-policy", n=ev.window,
                        details={"rule": move.rule, "evidence": summary(ev), "policy": asdict(policy)}),
    )


def summary(ev: TaskEvidence) -> dict[str, Any]:
    """The figures of the evidence without the id lists (what a lifecycle.jsonl line keeps)."""
    keep = ("grade", "window", "served", "coverage", "code_attempts", "fallbacks", "fallback_rate", "verified",
            "accuracy", "code_verified", "disagreements", "disagreement_rate", "shadow_checks",
            "shadow_disagreements", "recent_code_verified", "recent_disagreements", "streak", "verified_cases",
            "eval_cases", "examples", "schema_violations",
            "code_sha", "first_disagreement_seq")
    data = ev.to_dict()
    return {k: data[k] for k in keep}


def _case_delta(view: View, spec: TaskSpec, ev: TaskEvidence) -> tuple[Delta | None, list[str]]:
    """Append verified disagreements to evals.jsonl (EvalSuite.add refuses to change an existing case)."""
    if not ev.new_cases:
        return None, []
    path = task_path(spec.name, "evals.jsonl")
    before = view.read(path)
    suite = eval_suite(view, spec.name)
    fresh = []
    for c in ev.new_cases:
        if suite.get(c["id"]) is not None:
            continue
        tags = ["disagreement", "shadow"] if c.get("llm_output") is not None else ["disagreement"]
        tags.append("code-right" if c.get("code_right") else "code-wrong")
        fresh.append(Case(id=c["id"], input=c["input"], expected=c["expected"], verifier=verifier_for(spec),
                          source_trace=c["id"], tags=tags, created_by="lifecycle"))
    if not fresh:
        return None, []
    grown = suite.add(fresh)
    added = grown.cases[len(suite.cases):]
    after = (before or "") + "".join(c.to_json() + "\n" for c in added)
    return (Delta(op="set", target="artifact", path=path, before=before, after=after,
                  reason=f"+{len(added)} eval cases from verified disagreements"), [c.id for c in added])
