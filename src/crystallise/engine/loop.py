"""The loop for one task: serve -> observe -> learn -> verify -> commit.

    loop = Loop(home, spec, backend)
    ans, trace_id = loop.answer(text)              # serve (+ trace written to the store)
    loop.feedback(trace_id, truth, passed)         # observe: explicit feedback with correction
    loop.learn()                                   # learners propose -> gate -> commit / keep as evidence

`learn()` runs, in order (cheapest gate first):
  1. credit: shown items earn helpful/harmful from the outcomes of new runs;
  2. lifecycle (harness, always): the grade's evidence from the stored answers and shadow
     checks -> soften (G5 -> G4, G4 -> the LLM grade), crystallise (G4 -> G5, -> G3) or
     record verified disagreements as eval cases (`harness/grades.py`, `harness/lifecycle.py`);
  3. crystallise (harness, G4): code from verified cases;
  4. schema (harness, G2, opt-in): a learned output schema for text answers;
  5. few-shot (harness, G1): the verified example pool;
  6. promptopt (harness, opt-in): reflective instruction evolution + few-shot selection;
  7. reflection (context): playbook bullets from new failures.
Each learner's change set is gated old-vs-new on the task's gate cases (never seen by a
learner; at G3 and above the eval suite's cases too) and committed only on an accept
verdict; rejected ones are saved as evidence. Lifecycle moves carry the verdict of the
grade rule that fired; a promotion to G5 must also lose no gate case.

Shadow checks (`harness/shadow.py`): a share (`GradePolicy.shadow_rate`) of code answers is
answered by the LLM as well, after the answer has been returned, in a background thread
(`LoopConfig.shadow="background"`; "inline" for a fixed order, "off" for none).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from crystallise.backends.base import Backend, Completion, CompletionRequest
from crystallise.context.credit import counterfactual_blame, record_credit
from crystallise.context.items import most_specific
from crystallise.context.reflect import ReflectionLearner
from crystallise.errors import ProtectedError, ValidationError
from crystallise.governance import canary as canary_mod
from crystallise.governance.canary import CanaryPolicy
from crystallise.governance.review import PendingReview
from crystallise.gate import CaseResult, GatePolicy, decide
from crystallise.gate.judge import JudgeCache, judge_path
from crystallise.gate.verifiers import verify_detail
from crystallise.harness import grades, lifecycle
from crystallise.harness.history import current_cases, gate_sample, refuse_lost_shapes
from crystallise.harness.learn import (
    DEFAULT_STRATEGIES,
    eval_case_deltas,
    synthesis_attempt,
    CrystalliseLearner,
    FewShotLearner,
    VerifiedCase,
    is_gate_case,
    verified_cases,
)
from crystallise.harness.promptopt import PromptOptLearner
from crystallise.harness.runtime import Answer, TaskRuntime
from crystallise.engine.shadow import ShadowChecker
from crystallise.harness.spec import TaskSpec, View, task_path
from crystallise.harness.structure import SchemaLearner
from crystallise.engine.home import Home
from crystallise.engine.committer import Committer
from crystallise.engine.task import define_task
from crystallise.traces.sdk import recording
from crystallise.engine.scope import teaches
from crystallise.types import ChangeSet, Delta, Feedback, Item, Scope, Verdict, Version

__all__ = ["KNOWN_LEARNERS", "LEARNERS", "CachedBackend", "LearnReport", "Loop", "LoopConfig", "define_task",
           "learn_watermark"]


LEARNERS = ("crystallise", "fewshot", "reflection")  # the default set
KNOWN_LEARNERS = ("crystallise", "schema", "fewshot", "promptopt", "reflection")  # in the order learn() runs them


def learn_watermark(task: str, org: str | None) -> str:
    """The watermark of a task's loop: per org, so one org's learn never skips another org's runs."""
    return f"loop:{task}" if org is None else f"loop:{task}@{org}"


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
    gate_per_shape: int = 4  # held-out cases of every verified input shape, on top of the recent window
    examples_k: int = 3
    synth_budget_s: float = 2.0
    strategies: Sequence[str] = DEFAULT_STRATEGIES  # crystallise's synthesis strategies, cheapest first
    coder_model: str | None = None  # model spec for LLM-written code and hybrids (None: model-free only)
    coder_problem: str | None = None  # why there is no coder model (said in the learner's refusals)
    grade_policy: grades.GradePolicy = field(default_factory=grades.GradePolicy)
    lifecycle: bool = True  # run the grade rules in learn()
    shadow: str = "background"  # background | inline | off
    promptopt_rounds: int = 3
    canary: CanaryPolicy | None = None  # serve new harness versions to a share of traffic first


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
        coder = home.backend(self.config.coder_model) if self.config.coder_model else None
        self.crystallise = CrystalliseLearner(metric, budget_s=self.config.synth_budget_s,
                                              strategies=self.config.strategies, coder=coder, extractor=backend,
                                              coder_problem=self.config.coder_problem)
        self.fewshot = FewShotLearner()
        self.schema = SchemaLearner()
        self.reflection = ReflectionLearner(reflect_backend or backend)
        self.promptopt = PromptOptLearner(reflect_backend or backend, metric, rounds=self.config.promptopt_rounds)
        if self.config.shadow not in ("background", "inline", "off"):
            raise ValidationError(f"LoopConfig.shadow must be background, inline or off; got {self.config.shadow!r}")
        rate = 0.0 if self.config.shadow == "off" else self.config.grade_policy.shadow_rate
        self.shadow = ShadowChecker(home, self.spec.name, metric, rate=rate,
                                    background=self.config.shadow == "background")
        self._runtime: TaskRuntime | None = None
        self._control: tuple[str, TaskRuntime] | None = None  # (sha, runtime) of a canary's control arm
        self._verifiers: dict[str, dict[str, Any]] = {}  # gate case id -> its eval-suite verifier
        self._judges, self._judge = JudgeCache(), None  # the task's LLM judge for judge-graded cases (gate/judge.py)
        self._seq: dict[str, int] = {}  # trace id -> seq, of the history learn() read
        self._answered = 0  # answers served by this loop (the shadow sample is drawn from it)

    # -- serve + observe ----------------------------------------------------------------
    def _define(self, spec: TaskSpec) -> TaskSpec:
        return define_task(self.home, spec, self.committer)

    def _view(self, deltas: Sequence[Delta] = ()) -> View:
        """The task's artifacts in this loop's namespace: an org's loop reads and writes `orgs/<org>/tasks/<name>/`
        (harness/spec.py), the operator's loop (no org) the shared `tasks/<name>/`."""
        return View.of(self.home.repo, list(deltas), org=self.config.scope.org)

    def bullets(self, extra: Sequence[Item] = ()) -> list[Item]:
        s = self.config.scope
        items = self.store.query_items(agent=s.agent, org=s.org, user=s.user, kind="bullet")
        return most_specific([*items, *extra])

    def runtime(self, deltas: Sequence[Delta] = ()) -> TaskRuntime:
        """Serving runtime for the current version, or as it would be after `deltas`."""
        if not deltas and self._runtime is not None:
            return self._runtime
        view = self._view(deltas)
        spec = view.spec(self.spec.name) or self.spec
        added = [Item.from_dict(d.after) for d in deltas if d.target == "item" and d.op == "add" and d.after]
        rt = TaskRuntime(spec, view, self.backend, bullets=self.bullets(added), examples_k=self.config.examples_k,
                         org=self.config.scope.org)
        if not deltas:
            self._runtime = rt
        return rt

    def answer(self, value: Any, *, record: dict[str, Any] | None = None) -> tuple[Answer, str]:
        s = self.config.scope
        rt, arm = self._serving(value)
        # Written before the block exits (not in the background): the loop reads and scores it next.
        with recording(self.store, self.spec.name, agent=s.agent, org=s.org, user=s.user, input=value) as t:
            with t.span(f"task:{self.spec.name}", "task", input=value) as span:
                ans = rt.answer(value, record=record)
                if arm is not None:
                    span.attributes["canary"] = arm
                span.output = ans.output
                span.attributes.update(
                    served_by=ans.served_by,
                    llm_calls=ans.llm_calls,
                    prompt_tokens=ans.prompt_tokens,
                    completion_tokens=ans.completion_tokens,
                    shown_items=ans.shown_items,
                    grade=rt.spec.grade,
                )
                if ans.code_sha:
                    span.attributes["code_sha"] = ans.code_sha
                if ans.fallback_reason:
                    span.attributes["fallback_reason"] = ans.fallback_reason
                if ans.schema_error:
                    span.attributes["schema_error"] = ans.schema_error
            t.output = ans.output
        if ans.shown_items:
            self.store.bump_items(ans.shown_items, shown=1)
        self._answered += 1
        key = f"{self._answered}:{json.dumps(value, sort_keys=True, default=str)}"  # stable across runs of a stream
        if ans.served_by == "code" and self.shadow.wanted(key):
            self.shadow.submit(trace_id=t.id, value=value, code_output=ans.output, runtime=rt, scope=s,
                               record=record)
        return ans, t.id

    # -- canary (governance/canary.py) ----------------------------------------------------
    def _canary_state(self) -> dict[str, Any] | None:
        path = self._view().physical(canary_mod.canary_path(self.spec.name))
        return canary_mod.read_state(self.home.repo.read(path))

    def _serving(self, value: Any) -> tuple[TaskRuntime, dict[str, str] | None]:
        """The runtime that answers `value`: the current version, or during a canary the arm it hashes to."""
        state = self._canary_state()
        if state is None:
            return self.runtime(), None
        arm = canary_mod.arm_for(json.dumps(value, sort_keys=True, default=str), float(state["share"]))
        info = {"changeset": state["changeset"], "arm": arm}
        if arm == "candidate" or not state.get("control"):
            return self.runtime(), info
        if self._control is None or self._control[0] != state["control"]:
            sha, repo = state["control"], self.home.repo
            memo: dict[str, str | None] = {}

            def read(path: str) -> str | None:
                if path not in memo:
                    memo[path] = repo.read(path, at=sha)
                return memo[path]

            view = View(read, org=self.config.scope.org)
            self._control = (sha, TaskRuntime(view.spec(self.spec.name) or self.spec, view, self.backend,
                                              bullets=self.bullets(), examples_k=self.config.examples_k,
                                              org=self.config.scope.org))
        return self._control[1], info

    def _canary_step(self, history: list[Any], report: LearnReport) -> bool:
        """Decide a running canary; True while it goes on (harness learners then wait)."""
        state = self._canary_state()
        policy = self.config.canary
        if state is None or policy is None:
            return False
        stats = canary_mod.collect(history, state["changeset"])
        decision, reason, details = canary_mod.decide_canary(stats, policy)
        if decision == "continue":
            return True
        number = next((v.number for v in self.store.list_versions(limit=10_000)
                       if v.changeset_id == state["changeset"]), None)
        provenance = [t.id for t in history for sp in t.spans
                      if isinstance(sp.attributes.get("canary"), dict)
                      and sp.attributes["canary"].get("changeset") == state["changeset"]]
        if decision == "rollback" and number is not None:
            report.committed.append(self.committer.revert(number, reason=reason))
        else:
            path = self._view().physical(canary_mod.canary_path(self.spec.name))
            cs = ChangeSet(learner="canary", layer="harness", summary=f"{self.spec.name}: {reason}"[:200],
                           deltas=[Delta(op="set", target="artifact", path=path, before=self.home.repo.read(path),
                                         after=None, reason=reason)],
                           provenance=provenance, evidence={"canary": details, "version": number},
                           verdict=Verdict(decision="accept", reason=reason, details=details))
            report.committed.append(self.committer.commit(cs))
        self._runtime, self._control = None, None
        return False

    def record_labelled(self, value: Any, truth: Any) -> str:
        """Import a labelled example as a trace whose verified answer is `truth` (no model call)."""
        s = self.config.scope
        with recording(self.store, self.spec.name, agent=s.agent, org=s.org, user=s.user, input=value,
                       metadata={"imported": True}) as t:
            t.feedback(correction=truth, comment="imported label")
        return t.id

    def feedback(self, trace_id: str, truth: Any, passed: bool) -> None:
        self.store.add_feedback(Feedback(trace_id=trace_id, score=1.0 if passed else 0.0, correction=truth))

    # -- learn -----------------------------------------------------------------------------
    def learn(self, progress: Callable[[str], None] | None = None) -> LearnReport:
        report = LearnReport()
        mark = learn_watermark(self.spec.name, self.config.scope.org)
        since = self.store.get_watermark(mark)
        fresh = self._traces(after_seq=since)
        if not fresh:
            return report
        self.shadow.flush()
        record_credit(self.store, fresh, blame=self._blame(fresh))  # once per (trace, item), by counterfactual
        history = self._traces()
        self._seq = {t.id: t.seq or 0 for t in history}
        canary_running = self._canary_step(history, report)
        if self.config.lifecycle and not canary_running:
            if progress:
                progress("learn: lifecycle")
            for _ in range(3):  # G5 -> G4 -> G3 may all be due at once (drifted code is wrong at G4 too)
                if not self._lifecycle(history, self._trace_gate(history), report):
                    break
        cases = self._cases(history)
        trace_gate = self._trace_gate(history)
        steps: list[tuple[str, Callable[[], ChangeSet | None]]] = [  # each sees the version before it
            ("crystallise", lambda: self.crystallise.propose(self._view(), self._spec(), cases)),
            ("schema", lambda: self.schema.propose(self._view(), self._spec(), cases)),
            ("fewshot", lambda: self.fewshot.propose(self._view(), self._spec(), cases)),
            ("promptopt", lambda: self.promptopt.propose(self._view(), self._spec(), cases,
                                                         self._candidate_runtime)),
            ("reflection", lambda: self._reflect(fresh)),
        ]
        for name, propose in steps:
            if name not in self.config.learners or (canary_running and name != "reflection"):
                continue  # while a canary runs, the harness waits for its verdict
            if progress:
                progress(f"learn: {name}")
            cs = propose()
            if cs is None:
                if name == "crystallise" and self.crystallise.attempt is not None:
                    self.store.save_changeset(synthesis_attempt(self.crystallise.attempt, self.config.scope))
                continue
            self._new_program_starts_at_g4(cs)
            self._own(cs)
            report.proposed.append(cs)
            gate = self.gate_cases(trace_gate)
            if progress:
                progress(f"learn: {name}: gating old vs new on {len(gate)} cases")
            version = self.gate_and_commit(cs, gate)
            if version:
                report.committed.append(version)
        self.store.set_watermark(mark, max(t.seq or 0 for t in fresh))
        return report

    def _blame(self, fresh: Sequence[Any]) -> Any:
        """Harm by counterfactual (context/credit.py): a failed case is re-run with this task's model, once
        with every item and once without each item it showed; harmful is what its absence fixes."""
        cases = {c.trace_id: (c.input, c.output) for c in verified_cases(fresh, self.spec.name)}
        shown = self.bullets()

        def answer_without(value: Any, drop: str | None) -> Any:
            rt = TaskRuntime(self._spec(), self._view(), self.backend, bullets=[b for b in shown if b.id != drop],
                             examples_k=self.config.examples_k, org=self.config.scope.org)
            try:
                return rt.answer(value).output
            except Exception:  # noqa: BLE001 - a run that fails answers nothing
                return None

        return counterfactual_blame(cases, answer_without, self.metric)

    def _traces(self, after_seq: int | None = None) -> list[Any]:
        """The runs this loop learns from: an org's loop, that org's runs; the operator's loop (no org), the
        runs with no org only -- shared artifacts are never learned from a tenant's data (DESIGN.md §5)."""
        org = self.config.scope.org
        kwargs: dict[str, Any] = {"after_seq": after_seq} if after_seq is not None else {}
        runs = self.store.list_traces(name=self.spec.name, org=org, limit=100_000, with_children=True, **kwargs)
        return [t for t in runs if teaches(t, org=org)]

    def _own(self, cs: ChangeSet) -> None:
        """An org's loop learned `cs` from that org's runs: the change set says so (its scope), so the API
        shows it, and its evidence (inputs, answers), to that org's keys only (engine/access.py); and its
        task files go to the org's namespace (`orgs/<org>/tasks/<name>/`), served to that org only."""
        s = self.config.scope
        if s.org is not None and cs.scope == Scope():
            cs.scope = Scope(agent=s.agent, org=s.org)
        cs.deltas = self._view().place(cs.deltas)

    def _new_program_starts_at_g4(self, cs: ChangeSet) -> None:
        """A change set that replaces the program of a G5 task puts it back to G4: the new code earns
        "code only" with its own streak, like the first one did."""
        spec_path, code_path = task_path(self.spec.name, "spec.json"), task_path(self.spec.name, "code.py")
        spec = self._spec()
        if spec.grade != "G5" or not any(d.path == code_path and d.after for d in cs.deltas):
            return
        if any(d.path == spec_path for d in cs.deltas):
            return
        after = TaskSpec(**{**spec.__dict__, "grade": "G4"}).to_json()
        cs.deltas.append(Delta(op="set", target="artifact", path=spec_path, before=self.home.repo.read(spec_path),
                               after=after, reason="a new program starts at G4"))

    def evidence(self, history: list[Any] | None = None) -> grades.TaskEvidence:
        """The current grade's evidence (`crystallise tasks show` prints the same)."""
        self.shadow.flush()
        return lifecycle.gather(self.store, self._view(), self._spec(), self.metric,
                                self.config.grade_policy, history=history)

    def _cases(self, history: list[Any]) -> list[VerifiedCase]:
        """Verified cases from the drift point on, and the older ones of shapes not seen since (harness/history.py)."""
        since = lifecycle.drift_seq(self._view(), self.spec.name)
        return current_cases(verified_cases(history, self.spec.name), {t.id: t.seq or 0 for t in history}, since)

    def _trace_gate(self, history: list[Any]) -> list[VerifiedCase]:
        """The recent held-out window plus a stratified sample of every verified input shape."""
        return gate_sample(self._cases(history), window=self.config.gate_max_cases,
                           per_shape=self.config.gate_per_shape)

    def _lifecycle(self, history: list[Any], trace_gate: list[VerifiedCase], report: LearnReport) -> bool:
        """Soften, crystallise or record disagreements, by the grade rules over the stored evidence.
        True when the grade moved (the rules are then asked again)."""
        view, spec = self._view(), self._spec()
        ev = self.evidence(history)
        move = grades.decide(ev, self.config.grade_policy)
        cs = lifecycle.lifecycle_changeset(view, spec, ev, move, self.config.grade_policy)
        if cs is None or self._waiting(cs):
            return False
        self._own(cs)
        if move is not None and move.to_grade == "G5":
            if self._promotion_refused(ev.code_sha):
                return False  # this program was refused G5 before: the gate cases it would lose are still there
            report.proposed.append(cs)
            self._no_loss_check(cs, self.gate_cases(trace_gate))
        else:
            report.proposed.append(cs)
        if cs.verdict is None or cs.verdict.decision != "accept":
            self.store.save_changeset(cs)
            return False
        try:
            report.committed.append(self.committer.commit(cs))
        except (ProtectedError, PendingReview):
            return False  # refused (kept as evidence) or waiting for a person: `crystallise review list`
        self._runtime = None
        return move is not None

    def _waiting(self, cs: ChangeSet) -> bool:
        """A lifecycle change set of this task already waits for review: do not propose it again."""
        pending = self.store.list_changesets(status="needs_review", limit=1000)
        return any(p.learner == "lifecycle" and p.evidence.get("task") == self.spec.name and p.summary == cs.summary
                   and p.scope.org == self.config.scope.org for p in pending)

    def _promotion_refused(self, sha: str | None) -> bool:
        for cs in self.store.list_changesets(status="rejected", limit=1000):
            move = cs.evidence.get("move") or {}
            if (cs.learner == "lifecycle" and cs.evidence.get("task") == self.spec.name and move.get("to_grade") == "G5"
                    and cs.scope.org == self.config.scope.org
                    and (cs.evidence.get("evidence") or {}).get("code_sha") == sha):
                return True
        return False

    def _no_loss_check(self, cs: ChangeSet, cases: Sequence[VerifiedCase]) -> None:
        """G5 drops the LLM fallback: it must not lose a gate case G4 passes."""
        old_rt, new_rt = self.runtime(), self.runtime(cs.deltas)
        old = [self._run(old_rt, c) for c in cases]
        new = [self._run(new_rt, c) for c in cases]
        lost = [o.case_id for o, n in zip(old, new) if o.passed and not n.passed]
        if cs.verdict is None:
            return
        cs.evidence["gate_cases"] = len(cases)
        cs.verdict.details["gate_losses"] = lost[:20]
        if lost:
            cs.verdict.decision = "reject"
            cs.status = "rejected"
            cs.verdict.reason = (f"reject: G5 would lose {len(lost)} of {len(cases)} gate cases the LLM fallback "
                                 f"answers at G4 ({cs.verdict.reason})")
        else:
            cs.verdict.reason += f"; no gate case lost ({len(cases)} cases)"

    def gate_cases(self, trace_gate: Sequence[VerifiedCase]) -> list[VerifiedCase]:
        """The cases a change set is gated on: held-out verified traces, plus, at G3 and above, the eval
        suite (its most recent cases and every recorded disagreement), each checked by its own verifier."""
        spec = self._spec()
        out = list(trace_gate)
        seen = {c.trace_id for c in out}
        self._verifiers = {}
        if spec.grade < "G3":
            return out
        view = self._view()
        since = lifecycle.drift_seq(view, spec.name)
        suite = [c for c in lifecycle.eval_suite(view, spec.name)
                 if c.source_trace is None or self._seq.get(c.source_trace, since) >= since]
        regression = [c for c in suite if "disagreement" in c.tags][-2 * self.config.gate_max_cases:]
        recent = [c for c in suite if "disagreement" not in c.tags][-self.config.gate_max_cases:]
        for c in [*recent, *regression]:
            if c.id in seen:
                continue
            seen.add(c.id)
            out.append(VerifiedCase(c.id, c.input, c.expected))
            self._verifiers[c.id] = c.verifier
        wanted = any(v.get("kind") == "judge" for v in self._verifiers.values())  # a calibrated judge, or none
        self._judge = self._judges.get(view.read(judge_path(spec.name)), self.backend) if wanted else None
        return out

    def _candidate_runtime(self, deltas: Sequence[Delta]) -> TaskRuntime:
        return self.runtime(deltas)

    def _spec(self) -> TaskSpec:
        return self._view().spec(self.spec.name) or self.spec

    def _reflect(self, fresh: Sequence[Any]) -> ChangeSet | None:
        failures = []
        for c in verified_cases(fresh, self.spec.name):
            t = next(t for t in fresh if t.id == c.trace_id)
            if t.outcome is not None and t.outcome < 0.5 and not is_gate_case(c.input):
                failures.append((c, t.output))
        if not failures:
            return None
        cs = self.reflection.propose(failures[-4:], self.bullets(), self.config.scope)
        if cs is not None:
            cs.evidence.setdefault("task", self.spec.name)  # which task's failures taught it (the advisor reads it)
        return cs

    def _eval_case_deltas(self, cases: Sequence[VerifiedCase]) -> list[Delta]:
        return eval_case_deltas(self._view(), self.spec, cases)  # (a seam the code-path attacks replace)

    def gate_and_commit(self, cs: ChangeSet, cases: Sequence[VerifiedCase]) -> Version | None:
        """Old vs new on the gate cases; commit on accept, keep as evidence otherwise.

        On top of the paired test, a program may not answer (by code) a recorded disagreement
        wrongly: once code has been caught wrong on an input, no code goes live that repeats it."""
        if cs.layer == "harness":
            cs.deltas += self._eval_case_deltas(cases)
        cs.deltas = self._view().place(cs.deltas)
        old_rt, new_rt = self.runtime(), self.runtime(cs.deltas)
        old = [self._run(old_rt, c) for c in cases]
        new = [self._run(new_rt, c) for c in cases]
        cs.verdict = decide(old, new, self.config.policy)
        cs.evidence["gate_cases"] = len(cases)
        refuse_lost_shapes(cs.verdict, old, new, cases)  # losing a verified input shape is a regression
        repeated = [r.case_id for r in new if r.served_by == "code" and not r.passed and r.case_id in self._regression]
        if repeated and cs.verdict.decision == "accept":
            cs.verdict.decision = "reject"
            cs.verdict.details["repeated_disagreements"] = repeated[:20]
            cs.verdict.reason = (f"reject: the new program repeats {len(repeated)} recorded disagreement(s) "
                                 f"({', '.join(repeated[:3])}); {cs.verdict.reason}")
        if cs.verdict.decision != "accept":
            cs.status = "rejected" if cs.verdict.decision == "reject" else "needs_review"
            self.store.save_changeset(cs)
            return None
        if (self.config.canary is not None and cs.layer == "harness" and cs.learner not in ("lifecycle", "canary")
                and self._canary_state() is None):
            path = self._view().physical(canary_mod.canary_path(self.spec.name))
            state = canary_mod.start_delta(self.spec.name, cs.id, self.home.repo.head(), self.config.canary)
            cs.deltas.append(Delta(op="set", target="artifact", path=path, before=self.home.repo.read(path),
                                   after=json.dumps(state, indent=1, sort_keys=True) + "\n",
                                   reason=f"canary: {self.config.canary.share:.0%} of traffic first"))
        try:
            version = self.committer.commit(cs)
        except ProtectedError:
            return None  # refused by construction; the committer kept it as rejected evidence
        except PendingReview:
            return None  # waits for a person: `crystallise review list`
        self._runtime = None
        return version

    @property
    def _regression(self) -> set[str]:
        """Recorded disagreements from the drift point on: no new program may answer one wrongly by code."""
        view = self._view()
        since = lifecycle.drift_seq(view, self.spec.name)
        return {c.id for c in lifecycle.eval_suite(view, self.spec.name) if "disagreement" in c.tags
                and (c.source_trace is None or self._seq.get(c.source_trace, since) >= since)}

    def _run(self, rt: TaskRuntime, case: VerifiedCase) -> CaseResult:
        try:
            ans = rt.answer(case.input)
        except Exception as e:  # noqa: BLE001 - a failing candidate is a failed case, not a crash
            return CaseResult(case_id=case.trace_id, passed=False, output=None, error=f"{type(e).__name__}: {e}")
        verifier = self._verifiers.get(case.trace_id)
        why = None
        if verifier is not None:
            passed, why = (verify_detail(verifier, ans.output, case.output, judge=self._judge, input=case.input)
                           if ans.output is not None else (False, None))
        else:
            passed = ans.output is not None and bool(self.metric(ans.output, case.output))
        return CaseResult(case_id=case.trace_id, passed=passed, output=ans.output, error=why,
                          cost=float(ans.llm_calls), served_by=ans.served_by)

    def versions(self) -> list[Version]:
        return self.store.list_versions(limit=10_000)
