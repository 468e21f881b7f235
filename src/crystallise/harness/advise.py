"""The layer advisor: from evidence, which layer should learn next for a task and scope, and why.

    evidence = gather_advice(store, view, spec)          # I/O at the edge: one AdviceEvidence per scope
    [advise(e) for e in evidence]                        # pure: Advice(layer, action, reason)

The rules, first match wins (figures are `AdvicePolicy` defaults):

    no verified outcomes                          -> observe   (nothing can learn without feedback)
    G4/G5 and code answers disagree with feedback -> harness   (re-crystallise; the lifecycle softens it)
    >= 3 corrections of the same kind, one user   -> context   (a user memory / preference)
    answers structured, consistent, >= 12 verified, below G4, crystallisation not rejected 3 times
                                                  -> harness   (crystallise: outputs are a function of the input)
    >= 3 recorded synthesis attempts found no program, none accepted, below G4, the LLM fails >= 10 %
                                                  -> weights   (code cannot be found for it; the model must learn)
    failures persist with playbook bullets shown (failure rate with bullets >= without, >= 10 such runs)
        and harness prompt learners untried      -> harness   (prompt optimisation / few-shot selection)
        and harness prompt learners rejected     -> weights   (context and prompts do not fix it)
    LLM accuracy < 20 % over >= 20 verified answers, context and harness learners rejected
                                                  -> weights   (the model lacks the capability)
    failures with corrections, no bullets yet     -> context   (reflection: lessons from failures)
    otherwise                                     -> none      (doing well; keep observing)
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from crystallise.harness.grades import DEFAULT_POLICY, GradePolicy, TaskEvidence, answer_records, truth_of
from crystallise.harness.structure import infer_schema
from crystallise.store.base import Store
from crystallise.types import Trace

__all__ = ["Advice", "AdviceEvidence", "AdvicePolicy", "advise", "gather_advice", "scope_evidence"]

LAYERS = ("observe", "context", "harness", "weights", "none")
PROMPT_LEARNERS = ("fewshot", "promptopt", "schema")


@dataclass(frozen=True)
class AdvicePolicy:
    """Thresholds of the advisor's rules (see the module docstring)."""

    same_corrections: int = 3
    min_verified_to_crystallise: int = 12
    consistency: float = 0.95
    crystallise_rejections: int = 3
    min_runs_with_bullets: int = 10
    low_accuracy: float = 0.2
    min_llm_verified: int = 20
    drift_rate: float = 0.05
    synthesis_attempts: int = 3  # recorded attempts that found no program before the weights are advised
    weights_failure_rate: float = 0.1  # ... and only when the LLM fails at least this often


@dataclass
class AdviceEvidence:
    """What the advisor weighs for one task in one scope (plain data; `scope_evidence` builds it)."""

    task: str
    scope: dict[str, str | None]
    grade: str = "G0"
    runs: int = 0
    verified: int = 0
    failures: int = 0
    llm_verified: int = 0
    llm_right: int = 0
    code_verified: int = 0
    code_wrong: int = 0
    runs_with_bullets: int = 0
    failures_with_bullets: int = 0
    runs_without_bullets: int = 0
    failures_without_bullets: int = 0
    bullets: int = 0
    corrections_by_kind: dict[str, int] = field(default_factory=dict)  # per user: the most repeated kind
    structured: bool = False  # the verified outputs share a shape (a number, a few labels)
    consistency: float | None = None  # share of repeated inputs whose verified answers agree
    accepted: dict[str, int] = field(default_factory=dict)  # learner -> committed change sets for the task
    rejected: dict[str, int] = field(default_factory=dict)  # learner -> rejected change sets for the task
    synthesis_attempts: int = 0  # crystallise attempts that found no program (recorded by the loop)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Advice:
    task: str
    scope: dict[str, str | None]
    layer: str  # observe | context | harness | weights | none
    action: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rate(bad: int, n: int) -> float:
    return bad / n if n else 0.0


def advise(ev: AdviceEvidence, policy: AdvicePolicy = AdvicePolicy()) -> Advice:
    """The layer that should learn next for `ev`'s task and scope (pure; see the module docstring).

    >>> e = AdviceEvidence("t", {"agent": "a", "org": None, "user": None}, runs=40, verified=40, failures=39,
    ...                    llm_verified=40, llm_right=1, rejected={"reflection": 2, "fewshot": 1})
    >>> advise(e).layer
    'weights'
    """
    def out(layer: str, action: str, reason: str) -> Advice:
        return Advice(ev.task, ev.scope, layer, action, reason, ev.to_dict())

    if ev.verified == 0:
        return out("observe", "record feedback (scores or corrections) on this task's runs",
                   f"{ev.runs} runs, none with a verified outcome: no layer can learn without one")
    if ev.grade in ("G4", "G5") and ev.code_wrong and _rate(ev.code_wrong, ev.code_verified) > policy.drift_rate:
        return out("harness", "re-crystallise from the new evidence (the lifecycle softens drifting code)",
                   f"{ev.code_wrong} of {ev.code_verified} verified code answers were wrong: the program drifted")
    kind, count = max(ev.corrections_by_kind.items(), key=lambda kv: kv[1], default=("", 0))
    if ev.scope.get("user") and count >= policy.same_corrections:
        return out("context", "remember it for this user (a user-level memory or preference)",
                   f"{count} corrections of the same kind ({kind[:60]!r}) from one user: a preference, not a skill")
    crystallise_rejected = ev.rejected.get("crystallise", 0)
    consistent = ev.consistency is None or ev.consistency >= policy.consistency
    if (ev.grade < "G4" and ev.structured and consistent and ev.verified >= policy.min_verified_to_crystallise
            and crystallise_rejected < policy.crystallise_rejections):
        return out("harness", "crystallise (learner `crystallise`): code can answer it",
                   f"{ev.verified} verified answers of one shape"
                   + (f", repeated inputs agree {ev.consistency:.0%}" if ev.consistency is not None else "")
                   + f"; failure rate {_rate(ev.failures, ev.verified):.0%} with the LLM")
    failing = _rate(ev.failures, ev.verified)
    if (ev.synthesis_attempts >= policy.synthesis_attempts and not ev.accepted.get("crystallise")
            and ev.grade < "G4" and failing >= policy.weights_failure_rate):
        return out("weights", "fine-tune an adapter on the verified traces: no program could be found",
                   f"{ev.synthesis_attempts} synthesis attempts found no program and none was accepted, while "
                   f"the LLM fails {failing:.0%} of {ev.verified} verified answers")
    with_b = _rate(ev.failures_with_bullets, ev.runs_with_bullets)
    without_b = _rate(ev.failures_without_bullets, ev.runs_without_bullets)
    persist = (ev.runs_with_bullets >= policy.min_runs_with_bullets and ev.failures_with_bullets
               and (ev.runs_without_bullets == 0 or with_b >= without_b))
    prompt_rejected = sum(ev.rejected.get(n, 0) for n in PROMPT_LEARNERS)
    prompt_accepted = sum(ev.accepted.get(n, 0) for n in PROMPT_LEARNERS)
    if persist:
        figures = (f"failure rate {with_b:.0%} in {ev.runs_with_bullets} runs that showed playbook bullets vs "
                   f"{without_b:.0%} without")
        if prompt_rejected == 0 and prompt_accepted == 0:
            return out("harness", "optimise the prompt (learners `promptopt`, `fewshot`, `schema`)",
                       f"failures persist despite playbook bullets ({figures}); the harness is untried")
        return out("weights", "fine-tune an adapter on the verified traces",
                   f"failures persist despite playbook bullets ({figures}) and "
                   f"{prompt_rejected} prompt change sets were rejected by the gate")
    llm_acc = _rate(ev.llm_right, ev.llm_verified)
    context_tried = ev.rejected.get("reflection", 0) + ev.accepted.get("reflection", 0)
    if (ev.llm_verified >= policy.min_llm_verified and llm_acc < policy.low_accuracy and context_tried
            and (prompt_rejected or crystallise_rejected)):
        return out("weights", "fine-tune an adapter on the verified traces",
                   f"the LLM is right on {llm_acc:.0%} of {ev.llm_verified} verified answers and neither context "
                   "nor harness changes passed the gate: the model lacks the capability")
    if ev.failures and ev.bullets == 0:
        return out("context", "reflect on the failures (learner `reflection`): playbook lessons",
                   f"{ev.failures} verified failures and no playbook bullet yet")
    return out("none", "keep observing",
               f"accuracy {1 - _rate(ev.failures, ev.verified):.0%} over {ev.verified} verified runs; "
               "no rule calls for a layer")


# ---------------------------------------------------------------- gathering (plain data in, plain data out)


def _kind(correction: Any, label: str | None) -> str:
    if label:
        return label
    text = correction if isinstance(correction, str) else repr(correction)
    return " ".join(text.lower().split())[:80]


def scope_evidence(task: str, grade: TaskEvidence | str, traces: Sequence[Trace], *, bullets: int = 0,
                   accepted: dict[str, int] | None = None, rejected: dict[str, int] | None = None,
                   metric: Any = None, policy: GradePolicy = DEFAULT_POLICY) -> list[AdviceEvidence]:
    """One `AdviceEvidence` per scope (agent, org, user) that ran `task`, from its traces (oldest first)."""
    grade_name = grade if isinstance(grade, str) else grade.grade
    by_scope: dict[tuple[str, str | None, str | None], list[Trace]] = defaultdict(list)
    for t in traces:
        by_scope[(t.agent_id, t.org_id, t.user_id)].append(t)
    out = []
    for (agent, org, user), ts in sorted(by_scope.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
        ev = AdviceEvidence(task, {"agent": agent, "org": org, "user": user}, grade=grade_name, bullets=bullets,
                            accepted=dict(accepted or {}), rejected=dict(rejected or {}))
        shown_by_trace = {t.id: any(s.attributes.get("shown_items") for s in t.spans) for t in ts}
        records = answer_records(ts, task)[-policy.window:]
        records = [r for r in records if r.grade == grade_name] or records  # the current grade's record
        ev.runs = len(records)
        for r in records:
            ok = None
            if r.truth is not None:
                ok = r.output is not None and bool(metric(r.output, r.truth) if metric else r.output == r.truth)
            elif r.outcome is not None:
                ok = r.outcome >= 0.5
            if ok is None:
                continue
            ev.verified += 1
            ev.failures += int(not ok)
            if r.served_by == "code":
                ev.code_verified += 1
                ev.code_wrong += int(not ok)
            else:
                ev.llm_verified += 1
                ev.llm_right += int(ok)
            if shown_by_trace.get(r.trace_id):
                ev.runs_with_bullets += 1
                ev.failures_with_bullets += int(not ok)
            else:
                ev.runs_without_bullets += 1
                ev.failures_without_bullets += int(not ok)
        kinds: Counter[str] = Counter()
        truths: dict[str, set[str]] = defaultdict(set)
        outputs = []
        for t in ts:
            truth = truth_of(t)
            if truth is None:
                continue
            outputs.append(truth)
            truths[repr(t.input)].add(repr(truth))
            for fb in t.feedback:
                if fb.source == "explicit" and fb.correction is not None and fb.correction != t.output:
                    kinds[_kind(fb.correction, fb.label)] += 1
        ev.corrections_by_kind = dict(kinds.most_common(3))
        counts = Counter(repr(t.input) for t in ts if truth_of(t) is not None)
        dups = [k for k, n in counts.items() if n > 1]
        ev.consistency = sum(1 for k in dups if len(truths[k]) == 1) / len(dups) if dups else None
        texts = [str(o) if isinstance(o, (int, float)) and not isinstance(o, bool) else o for o in outputs]
        ev.structured = bool(texts) and infer_schema(texts, min_cases=1) is not None
        out.append(ev)
    return out


def gather_advice(store: Store, view: Any, spec: Any, metric: Any, policy: GradePolicy = DEFAULT_POLICY,
                  ) -> list[AdviceEvidence]:
    """The advisor's evidence for one task, per scope, from the store and the artifact repository."""
    traces = store.list_traces(name=spec.name, limit=1_000_000, with_children=True)
    accepted: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    attempts = 0
    for cs in store.list_changesets(limit=100_000):
        if cs.evidence.get("task") != spec.name and not (cs.summary or "").startswith(f"{spec.name}:"):
            continue
        attempts += "synthesis_attempt" in cs.evidence
        if cs.status in ("accepted", "committed"):
            accepted[cs.learner] += 1
        elif cs.status in ("rejected", "needs_review"):
            rejected[cs.learner] += 1
    out = []
    for ev in scope_evidence(spec.name, spec.grade, traces, accepted=dict(accepted), rejected=dict(rejected),
                             metric=metric, policy=policy):
        s = ev.scope
        ev.bullets = len(store.query_items(agent=s["agent"], org=s["org"], user=s["user"], kind="bullet"))
        ev.synthesis_attempts = attempts
        out.append(ev)
    return out
