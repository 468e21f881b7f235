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
from crystallise.types import ChangeSet, Delta

__all__ = ["DEFAULT_STRATEGIES", "CrystalliseLearner", "FewShotLearner", "VerifiedCase", "is_gate_case",
           "verified_cases"]


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
            self.refused = {n: "no coder model (LoopConfig.coder_model, --coder-model): model-free strategies only"
                            for n in ("coder", "hybrid") if n in strategies}
        if coder is not None:
            made["coder"] = CoderStrategy(coder)
            if extractor is not None:
                made["hybrid"] = HybridStrategy(coder, extractor)
        self.strategies: list[Strategy] = [made[n] for n in DEFAULT_STRATEGIES if n in strategies and n in made]

    def propose(
        self,
        view: View,
        spec: TaskSpec,
        cases: Sequence[VerifiedCase],
        progress: Callable[[str], None] | None = None,
    ) -> ChangeSet | None:
        learn = [Case(c.input, c.output, c.trace_id) for c in cases if not is_gate_case(c.input)]
        if not learn:
            return None
        current = _program(view.read(task_path(spec.name, "program.json")))
        if progress is not None:
            for name, why in self.refused.items():
                progress(f"{name}: {why}")
        policies = {s.name: self.policies.get(s.name, self.default_policy) for s in self.strategies}
        found = synthesise(spec.name, learn, self.strategies, lambda p, t: bool(self.metric(p, t)),
                           previous=current, policies=policies, description=spec.description,
                           numeric=spec.metric == "numeric", budget_s=self.budget_s, progress=progress)
        if found is None:
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


def _program(text: str | None) -> dict[str, Any]:
    """program.json of the current version, in the pipeline's form (older arith-only files too)."""
    data = json.loads(text) if text else {}
    if "parts" not in data and data.get("arith_rules"):
        rules = [ArithRule.from_dict(r) for r in data["arith_rules"]]
        data = {"parts": {"arith": {"units": [r.unit for r in rules],
                                    "state": {"mode": data.get("arith_mode"), "rules": data["arith_rules"]}}}}
    return data
