"""Harness learners: verified traces -> few-shot examples (G1) and crystallised code (G4).

Both read the *verified cases* of a task — inputs whose right answer is known from
feedback (a correction, or a score of 1 for the answer given) — and return a change
set of artifact deltas. They never write; the loop gates and commits.

Cases are split by a hash of the input: a quarter are *gate cases* (the eval suite
the verdict is computed on), never shown to a synthesiser; the rest are *learning
cases*. The crystallise learner holds out a third of those again (`synth/base.split`):
strategies see only the rest, and a program part is kept only if it reproduces the
held-out cases (`synth/verify.py`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from crystallise.errors import ValidationError
from crystallise.evidence import VerifiedCase, is_gate_case, verified_cases
from crystallise.harness.history import formats_conflict, shape_of, uncovered_shapes
from crystallise.harness.programs import isolation_problem
from crystallise.harness.spec import TaskSpec, View, dump_jsonl, task_path
from crystallise.harness.synth.arith import ArithRule
from crystallise.harness.synth.base import Case, Strategy
from crystallise.harness.synth.coder import CoderStrategy
from crystallise.harness.synth.hybrid import HybridStrategy
from crystallise.harness.synth.lookup import LookupStrategy
from crystallise.harness.synth.pipeline import synthesise
from crystallise.harness.synth.strategies import ArithPart, StringsPart
from crystallise.harness.synth.verify import Policy
from crystallise.types import ChangeSet, Delta, Scope, Verdict

__all__ = ["DEFAULT_STRATEGIES", "CrystalliseLearner", "FewShotLearner", "VerifiedCase", "is_gate_case",
           "eval_case_deltas", "synthesis_attempt", "verified_cases"]


def _set(view: View, path: str, after: str | None, reason: str) -> Delta | None:
    before = view.read(path)
    if before == after:
        return None
    return Delta(op="set", target="artifact", path=path, before=before, after=after, reason=reason)


def _with_grade(view: View, spec: TaskSpec, grade: str, reason: str) -> Delta | None:
    if spec.grade >= grade:
        return None
    new = TaskSpec(**{**spec.__dict__, "grade": grade})
    return _set(view, task_path(spec.name, "spec.json"), new.to_json(), reason)


class FewShotLearner:
    """G1: keep a pool of verified examples; serving picks the k most similar to the input."""

    name = "fewshot"
    layer = "harness"

    def __init__(self, pool_size: int = 64, min_new: int = 8) -> None:
        self.pool_size = pool_size
        self.min_new = min_new  # fewer new examples than this are not worth a gate run

    def propose(self, view: View, spec: TaskSpec, cases: Sequence[VerifiedCase]) -> ChangeSet | None:
        path = task_path(spec.name, "examples.jsonl")
        pool = view.jsonl(path)
        seen = {json.dumps(e["input"], sort_keys=True) for e in pool}
        fresh = [c for c in cases if not is_gate_case(c.input)]
        added = []
        for c in fresh:
            key = json.dumps(c.input, sort_keys=True)
            if key not in seen:
                seen.add(key)
                example = {"input": c.input, "output": c.output, "trace": c.trace_id}
                if c.org is not None:  # an org's inputs and answers are served to that org's runs only
                    example["org"] = c.org
                added.append(example)
        if not added or (pool and len(added) < self.min_new):
            return None
        pool = (pool + added)[-self.pool_size:]
        deltas = [
            d
            for d in (
                _set(view, path, dump_jsonl(pool), f"{len(added)} verified examples"),
                _with_grade(view, spec, "G1", "verified examples exist"),
            )
            if d
        ]
        return ChangeSet(
            learner=self.name,
            layer="harness",
            deltas=deltas,
            summary=f"{spec.name}: few-shot pool +{len(added)} verified examples",
            provenance=[a["trace"] for a in added],
            evidence={"task": spec.name, "pool": len(pool)},
        )


DEFAULT_STRATEGIES = ("lookup", "arith", "strings", "coder", "hybrid")


class CrystalliseLearner:
    """G4: a deterministic program from verified cases — strategies cheapest first, each verified
    by replay on held-out cases, composed into one program (`synth/pipeline.py`).

    `coder` (a model backend) enables LLM-written code; `coder` and `extractor` (the task's own
    model) together enable hybrid programs. Without them only the model-free strategies run.

    >>> from crystallise.gate import score_numeric
    >>> [s.name for s in CrystalliseLearner(score_numeric).strategies]
    ['lookup', 'arith', 'strings']
    """

    name = "crystallise"
    layer = "harness"

    def __init__(
        self,
        metric: Callable[[Any, Any], bool],
        *,
        budget_s: float = 2.0,
        strategies: Sequence[str] = DEFAULT_STRATEGIES,
        coder: Any = None,
        extractor: Any = None,
        precision: float = 0.95,
        hybrid_precision: float = 0.5,
        coder_problem: str | None = None,
    ) -> None:
        unknown = set(strategies) - set(DEFAULT_STRATEGIES)
        if unknown:
            raise ValidationError(f"unknown strategies {sorted(unknown)}: choose from {', '.join(DEFAULT_STRATEGIES)}")
        self.metric = metric
        self.budget_s = budget_s
        self.policies = {"hybrid": Policy(precision=hybrid_precision)}
        self.default_policy = Policy(precision=precision)
        made: dict[str, Strategy] = {"lookup": LookupStrategy(), "arith": ArithPart(), "strings": StringsPart()}
        self.refused: dict[str, str] = {}  # strategy -> why it was not run
        if coder is not None and set(strategies) & {"coder", "hybrid"}:
            problem = isolation_problem()
            if problem is not None:  # LLM-written code needs the OS sandbox: refused, never run weaker
                self.refused = {n: f"LLM-written code is refused here: {problem}"
                                for n in ("coder", "hybrid") if n in strategies}
                coder = None
        elif coder is None and not self.refused:  # say so: a task that needs code must not just show 0 %
            why = coder_problem or "no coder model (LoopConfig.coder_model, --coder-model)"
            self.refused = {n: f"{why}: model-free strategies only" for n in ("coder", "hybrid") if n in strategies}
        if coder is not None:
            made["coder"] = CoderStrategy(coder)
            if extractor is not None:
                made["hybrid"] = HybridStrategy(coder, extractor)
        self.strategies: list[Strategy] = [made[n] for n in DEFAULT_STRATEGIES if n in strategies and n in made]
        self.attempt: dict[str, Any] | None = None  # the last propose() that found nothing: what it tried, why

    def propose(
        self,
        view: View,
        spec: TaskSpec,
        cases: Sequence[VerifiedCase],
        progress: Callable[[str], None] | None = None,
    ) -> ChangeSet | None:
        learn = [Case(c.input, c.output, c.trace_id) for c in cases if not is_gate_case(c.input)]
        self.attempt = None
        if not learn:
            return None
        current = _program(view.read(task_path(spec.name, "program.json")))
        said: list[str] = []  # what the strategies reported trying: the attempt's evidence when nothing verifies
        outer = progress

        def progress(message: str) -> None:  # type: ignore[no-redef]
            if message not in said:
                said.append(message)
            if outer is not None:
                outer(message)

        for name, why in self.refused.items():
            progress(f"{name}: {why}")
        policies = {s.name: self.policies.get(s.name, self.default_policy) for s in self.strategies}
        metric = lambda p, t: bool(self.metric(p, t))  # noqa: E731
        tried: dict[str, Any] = {}
        found = synthesise(spec.name, learn, self.strategies, metric,
                           previous=current, policies=policies, description=spec.description,
                           numeric=spec.metric == "numeric", budget_s=self.budget_s, progress=progress, tried=tried)
        # hybrid parts answer through the task's model (not replayable here); its extraction reads any format
        missed = {} if found and "hybrid" in found.parts else uncovered_shapes(found.program if found else None,
                                                                               learn, metric)
        if formats_conflict(missed, learn) and any(s.name == "arith" for s in self.strategies):
            # input formats the program does not answer: one arithmetic rule per shape instead of per template
            if progress is not None:
                progress(f"synthesis: {len(missed)} input shape(s) unanswered; one rule per shape")
            per_shape = [ArithPart(modes=("shape",)) if s.name == "arith" else s for s in self.strategies]
            again = synthesise(spec.name, learn, per_shape, metric, previous=current, policies=policies,
                               description=spec.description, numeric=spec.metric == "numeric",
                               budget_s=self.budget_s, progress=progress)
            if again is not None and len(uncovered_shapes(again.program, learn, metric)) < len(missed):
                found = again
        if found is None:
            self.attempt = {"task": spec.name, "learning_cases": len(learn), "shapes": len({shape_of(c.input)
                            for c in learn}), "strategies": [s.name for s in self.strategies],
                            "refused": dict(self.refused), "tried": said[-30:],
                            "strategies_tried": _short_json(tried),
                            "why": "no strategy's program reproduced the held-out learning cases"}
            return None
        if found.code == view.read(task_path(spec.name, "code.py")) and current.get("program") == found.program:
            return None  # nothing new was learned: no change set, no gate run
        meta = {**found.meta, **({"refused": self.refused} if self.refused else {}), "program": found.program,
                "policy": {"precision": self.default_policy.precision,
                                         "hybrid_precision": self.policies["hybrid"].precision}}
        hybrid = json.dumps(found.hybrid, indent=1, sort_keys=True, ensure_ascii=False) + "\n" if found.hybrid else None
        deltas = [
            d
            for d in (
                _set(view, task_path(spec.name, "code.py"), found.code, "crystallised program"),
                _set(view, task_path(spec.name, "program.json"),
                     json.dumps(meta, indent=1, sort_keys=True, ensure_ascii=False) + "\n", "how the program was made"),
                _set(view, task_path(spec.name, "hybrid.json"), hybrid, "what the LLM extracts for hybrid parts"),
                _with_grade(view, spec, "G4", "code reproduces held-out verified cases"),
            )
            if d
        ]
        if not deltas:
            return None
        return ChangeSet(
            learner=self.name,
            layer="harness",
            deltas=deltas,
            summary=f"{spec.name}: crystallise ({'+'.join(found.parts)}, {found.units} verified units)",
            provenance=[c.id for c in learn],
            evidence={"task": spec.name, "units": found.units, "strategies": found.parts,
                      "learning_cases": len(learn)},
        )


def eval_case_deltas(view: View, spec: TaskSpec, cases: Sequence[VerifiedCase]) -> list[Delta]:
    """Learners may add eval cases, never change them: append the gate cases not in the suite yet."""
    path = task_path(spec.name, "evals.jsonl")
    before = view.read(path)
    have = {r["id"] for r in view.jsonl(path)}
    verifier = {"kind": "numeric" if spec.metric == "numeric" else "exact"}
    added = [{"id": c.trace_id, "input": c.input, "expected": c.output, "verifier": verifier,
              "source_trace": c.trace_id, "created_by": "learner"} for c in cases if c.trace_id not in have]
    if not added:
        return []
    return [Delta(op="set", target="artifact", path=path, before=before, after=(before or "") + dump_jsonl(added),
                  reason=f"+{len(added)} eval cases recorded from traces")]


def synthesis_attempt(attempt: dict[str, Any], scope: Scope) -> ChangeSet:
    """A synthesis attempt that found nothing, as evidence: a change set with no deltas, rejected, whose
    verdict says why (the layer advisor counts them: synthesis that keeps failing points to the weights)."""
    why = f"no program: {attempt['why']} ({attempt['learning_cases']} learning cases, {attempt['shapes']} shapes)"
    # scoped like the loop's own change sets (engine/loop.Loop._own): an org's attempt is shown to that org only
    return ChangeSet(learner="crystallise", layer="harness", deltas=[], scope=Scope(agent=scope.agent, org=scope.org),
                     summary=f"{attempt['task']}: crystallise attempt found nothing"[:200],
                     evidence={"task": attempt["task"], "synthesis_attempt": attempt},
                     verdict=Verdict(decision="reject", reason=why), status="rejected")


def _program(text: str | None) -> dict[str, Any]:
    """program.json of the current version, in the pipeline's form (older arith-only files too)."""
    data = json.loads(text) if text else {}
    if "parts" not in data and data.get("arith_rules"):
        rules = [ArithRule.from_dict(r) for r in data["arith_rules"]]
        data = {"parts": {"arith": {"units": [r.unit for r in rules],
                                    "state": {"mode": data.get("arith_mode"), "rules": data["arith_rules"]}}}}
    return data


def _short_json(value: Any, limit: int = 20_000) -> Any:
    """`value` if its JSON is at most `limit` characters, else a note of its size (evidence stays small)."""
    text = json.dumps(value, default=str, sort_keys=True)
    return value if len(text) <= limit else {"truncated": True, "chars": len(text), "head": text[:limit]}
