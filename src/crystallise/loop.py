"""The loop for one task: serve -> observe -> learn -> verify -> commit.

    loop = Loop(home, spec, backend)
    ans, trace_id = loop.answer(text)              # serve (+ trace written to the store)
    loop.feedback(trace_id, truth, passed)         # observe: explicit feedback with correction
    loop.learn()                                   # learners propose -> gate -> commit / keep as evidence

`learn()` runs, in order (cheapest gate first):
  1. credit: shown items earn helpful/harmful from the outcomes of new runs;
  2. crystallise (harness, G4): code from verified cases;
  3. few-shot (harness, G1): the verified example pool;
  4. reflection (context): playbook bullets from new failures.
Each change set is gated old-vs-new on the task's gate cases (never seen by a
learner) and committed only on an accept verdict; rejected ones are saved as evidence.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from crystallise.backends.base import Backend, Completion, CompletionRequest
from crystallise.context.reflect import ReflectionLearner, credit
from crystallise.errors import ProtectedError
from crystallise.governance.review import PendingReview
from crystallise.gate import CaseResult, GatePolicy, decide
from crystallise.harness.learn import (
    CrystalliseLearner,
    FewShotLearner,
    VerifiedCase,
    is_gate_case,
    verified_cases,
)
from crystallise.harness.runtime import Answer, TaskRuntime
from crystallise.harness.spec import TaskSpec, View, dump_jsonl, task_path
from crystallise.home import Home
from crystallise.ledger import Committer
from crystallise.traces.sdk import trace
from crystallise.types import ChangeSet, Delta, Feedback, Item, Scope, Verdict, Version

__all__ = ["CachedBackend", "LearnReport", "Loop", "LoopConfig", "define_task"]

LEARNERS = ("crystallise", "fewshot", "reflection")


class CachedBackend:
    """Memoises a deterministic backend (temperature 0) by request content.

    The gate asks the same prompts again (old side = what served the stream); the
    cache makes that free. `calls` counts logical calls, `computed` real ones."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = f"cached:{inner.name}"
        self._memo: dict[str, Completion] = {}
        self.calls = 0
        self.computed = 0

    def complete(self, request: CompletionRequest) -> Completion:
        self.calls += 1
        if request.temperature > 0:
            self.computed += 1
            return self.inner.complete(request)
        key = hashlib.sha256(
            json.dumps(
                [[m.role, m.content] for m in request.messages]
                + [request.schema, request.max_tokens, request.stop, request.metadata.get("record")],
                sort_keys=True,
                default=str,
            ).encode()
        ).hexdigest()
        hit = self._memo.get(key)
        if hit is None:
            self.computed += 1
            hit = self._memo[key] = self.inner.complete(request)
        return hit


@dataclass
class LoopConfig:
    scope: Scope = field(default_factory=Scope)
    learners: Sequence[str] = LEARNERS
    policy: GatePolicy = field(default_factory=GatePolicy)
    gate_max_cases: int = 48
    examples_k: int = 3
    synth_budget_s: float = 2.0


@dataclass
class LearnReport:
    proposed: list[ChangeSet] = field(default_factory=list)
    committed: list[Version] = field(default_factory=list)

    def line(self) -> str:
        acc = sum(1 for c in self.proposed if c.verdict and c.verdict.decision == "accept")
        return f"{len(self.proposed)} proposed, {acc} accepted, {len(self.committed)} committed"


class Loop:
    """One task's learning loop over a home (see the module docstring)."""

    def __init__(
        self,
        home: Home,
        spec: TaskSpec,
        backend: Backend,
        metric: Callable[[Any, Any], bool],
        config: LoopConfig | None = None,
        *,
        reflect_backend: Backend | None = None,
    ) -> None:
        self.home = home
        self.backend = backend
        self.metric = metric
        self.config = config or LoopConfig()
        self.committer = Committer(home)
        self.store = home.store
        self.spec = self._define(spec)
        self.crystallise = CrystalliseLearner(metric, budget_s=self.config.synth_budget_s)
        self.fewshot = FewShotLearner()
        self.reflection = ReflectionLearner(reflect_backend or backend)
        self._runtime: TaskRuntime | None = None

    # -- serve + observe ----------------------------------------------------------------
    def _define(self, spec: TaskSpec) -> TaskSpec:
        return define_task(self.home, spec, self.committer)

    def bullets(self, extra: Sequence[Item] = ()) -> list[Item]:
        s = self.config.scope
        items = self.store.query_items(agent=s.agent, org=s.org, user=s.user, kind="bullet")
        return [*items, *extra]

    def runtime(self, deltas: Sequence[Delta] = ()) -> TaskRuntime:
        """Serving runtime for the current version, or as it would be after `deltas`."""
        if not deltas and self._runtime is not None:
            return self._runtime
        view = View.of(self.home.repo, list(deltas))
        spec = view.spec(self.spec.name) or self.spec
        added = [Item.from_dict(d.after) for d in deltas if d.target == "item" and d.op == "add" and d.after]
        rt = TaskRuntime(spec, view, self.backend, bullets=self.bullets(added), examples_k=self.config.examples_k)
        if not deltas:
            self._runtime = rt
        return rt

    def answer(self, value: Any, *, record: dict[str, Any] | None = None) -> tuple[Answer, str]:
        s = self.config.scope
        with trace(self.spec.name, agent=s.agent, org=s.org, user=s.user, input=value, home=self.home) as t:
            with t.span(f"task:{self.spec.name}", "task", input=value) as span:
                ans = self.runtime().answer(value, record=record)
                span.output = ans.output
                span.attributes.update(
                    served_by=ans.served_by,
                    llm_calls=ans.llm_calls,
                    prompt_tokens=ans.prompt_tokens,
                    completion_tokens=ans.completion_tokens,
                    shown_items=ans.shown_items,
                    grade=self.runtime().spec.grade,
                )
                if ans.fallback_reason:
                    span.attributes["fallback_reason"] = ans.fallback_reason
            t.output = ans.output
        if ans.shown_items:
            self.store.bump_items(ans.shown_items, shown=1)
        return ans, t.id

    def record_labelled(self, value: Any, truth: Any) -> str:
        """Import a labelled example as a trace whose verified answer is `truth` (no model call)."""
        s = self.config.scope
        with trace(self.spec.name, agent=s.agent, org=s.org, user=s.user, input=value, home=self.home,
                   metadata={"imported": True}) as t:
            t.feedback(correction=truth, comment="imported label")
        return t.id

    def feedback(self, trace_id: str, truth: Any, passed: bool) -> None:
        self.store.add_feedback(Feedback(trace_id=trace_id, score=1.0 if passed else 0.0, correction=truth))

    # -- learn -----------------------------------------------------------------------------
    def learn(self, progress: Callable[[str], None] | None = None) -> LearnReport:
        report = LearnReport()
        mark = f"loop:{self.spec.name}"
        since = self.store.get_watermark(mark)
        fresh = self.store.list_traces(name=self.spec.name, after_seq=since, limit=100_000, with_children=True)
        if not fresh:
            return report
        helpful, harmful = credit(fresh)
        for item_id in set(helpful) | set(harmful):
            self.store.bump_items([item_id], helpful=helpful[item_id], harmful=harmful[item_id])
        history = self.store.list_traces(name=self.spec.name, limit=100_000, with_children=True)
        cases = verified_cases(history, self.spec.name)
        gate_cases = [c for c in cases if is_gate_case(c.input)][-self.config.gate_max_cases:]
        steps: list[tuple[str, Callable[[], ChangeSet | None]]] = [  # each sees the version before it
            ("crystallise", lambda: self.crystallise.propose(View.of(self.home.repo), self._spec(), cases)),
            ("fewshot", lambda: self.fewshot.propose(View.of(self.home.repo), self._spec(), cases)),
            ("reflection", lambda: self._reflect(fresh)),
        ]
        for name, propose in steps:
            if name not in self.config.learners:
                continue
            if progress:
                progress(f"learn: {name}")
            cs = propose()
            if cs is None:
                continue
            report.proposed.append(cs)
            version = self.gate_and_commit(cs, gate_cases)
            if version:
                report.committed.append(version)
        self.store.set_watermark(mark, max(t.seq or 0 for t in fresh))
        return report

    def _spec(self) -> TaskSpec:
        return View.of(self.home.repo).spec(self.spec.name) or self.spec

    def _reflect(self, fresh: Sequence[Any]) -> ChangeSet | None:
        failures = []
        for c in verified_cases(fresh, self.spec.name):
            t = next(t for t in fresh if t.id == c.trace_id)
            if t.outcome is not None and t.outcome < 0.5 and not is_gate_case(c.input):
                failures.append((c, t.output))
        if not failures:
            return None
        return self.reflection.propose(failures[-4:], self.bullets(), self.config.scope)

    def gate_and_commit(self, cs: ChangeSet, cases: Sequence[VerifiedCase]) -> Version | None:
        """Old vs new on the gate cases; commit on accept, keep as evidence otherwise."""
        if cs.layer == "harness":
            cs.deltas += self._eval_case_deltas(cases)
        old_rt, new_rt = self.runtime(), self.runtime(cs.deltas)
        old = [self._run(old_rt, c) for c in cases]
        new = [self._run(new_rt, c) for c in cases]
        cs.verdict = decide(old, new, self.config.policy)
        cs.evidence["gate_cases"] = len(cases)
        if cs.verdict.decision != "accept":
            cs.status = "rejected" if cs.verdict.decision == "reject" else "needs_review"
            self.store.save_changeset(cs)
            return None
        try:
            version = self.committer.commit(cs)
        except ProtectedError:
            return None  # refused by construction; the committer kept it as rejected evidence
        except PendingReview:
            return None  # waits for a person: `crystallise review list`
        self._runtime = None
        return version

    def _run(self, rt: TaskRuntime, case: VerifiedCase) -> CaseResult:
        try:
            ans = rt.answer(case.input)
        except Exception as e:  # noqa: BLE001 - a failing candidate is a failed case, not a crash
            return CaseResult(case_id=case.trace_id, passed=False, output=None, error=f"{type(e).__name__}: {e}")
        passed = ans.output is not None and bool(self.metric(ans.output, case.output))
        return CaseResult(
            case_id=case.trace_id, passed=passed, output=ans.output, cost=float(ans.llm_calls), served_by=ans.served_by
        )

    def _eval_case_deltas(self, cases: Sequence[VerifiedCase]) -> list[Delta]:
        """Learners may add eval cases, never change them: append the new gate cases."""
        path = task_path(self.spec.name, "evals.jsonl")
        view = View.of(self.home.repo)
        before = view.read(path)
        rows = view.jsonl(path)
        have = {r["id"] for r in rows}
        verifier = {"kind": "numeric" if self.spec.metric == "numeric" else "exact"}
        added = [
            {"id": c.trace_id, "input": c.input, "expected": c.output, "verifier": verifier,
             "source_trace": c.trace_id, "created_by": "learner"}
            for c in cases
            if c.trace_id not in have
        ]
        if not added:
            return []
        return [Delta(op="set", target="artifact", path=path, before=before, after=(before or "") + dump_jsonl(added),
                      reason=f"+{len(added)} eval cases recorded from traces")]

    def versions(self) -> list[Version]:
        return self.store.list_versions(limit=10_000)


def define_task(home: Home, spec: TaskSpec, committer: Committer | None = None) -> TaskSpec:
    """The task's committed spec; commits `spec` as the task's first version if it has none."""
    current = View.of(home.repo).spec(spec.name)
    if current is not None:
        return current
    path = task_path(spec.name, "spec.json")
    cs = ChangeSet(
        learner="define",
        layer="harness",
        deltas=[Delta(op="set", target="artifact", path=path, before=None, after=spec.to_json(), reason="new task")],
        summary=f"{spec.name}: define task (G0)",
        verdict=Verdict(decision="accept", reason="task defined by the user"),
    )
    (committer or Committer(home)).commit(cs)
    return spec
