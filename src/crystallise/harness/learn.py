"""Harness learners: verified traces -> few-shot examples (G1) and crystallised code (G4).

Both read the *verified cases* of a task — inputs whose right answer is known from
feedback (a correction, or a score of 1 for the answer given) — and return a change
set of artifact deltas. They never write; the loop gates and commits.

Cases are split by a hash of the input: a quarter are *gate cases* (the eval suite
the verdict is computed on), never shown to a synthesiser; the rest are *learning
cases*. The arith strategy further holds out a third of its learning cases itself.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from crystallise.harness.spec import TaskSpec, View, dump_jsonl, task_path
from crystallise.harness.synth.arith import ArithRule, ArithStrategy
from crystallise.harness.synth.lookup import LookupStrategy
from crystallise.types import ChangeSet, Delta, Trace

__all__ = ["CrystalliseLearner", "FewShotLearner", "VerifiedCase", "is_gate_case", "verified_cases"]


@dataclass
class VerifiedCase:
    trace_id: str
    input: Any
    output: Any  # the verified right answer


def verified_cases(traces: Sequence[Trace], task: str) -> list[VerifiedCase]:
    """Cases with a known right answer, from traces of `task` (latest feedback wins)."""
    out: list[VerifiedCase] = []
    for t in traces:
        if t.name != task or t.status != "ok" or any(fb.kind == "revoked" for fb in t.feedback):
            continue  # a revoked trace (undone by `crystallise revert --trace/--user`) is no evidence
        truth: Any = None
        for fb in t.feedback:
            if fb.source != "explicit":
                continue
            if fb.correction is not None:
                truth = fb.correction
            elif fb.score is not None and fb.score >= 1.0 and t.output is not None:
                truth = t.output
        if truth is not None:
            out.append(VerifiedCase(t.id, t.input, truth))
    return out


def is_gate_case(value: Any) -> bool:
    """One input in four is kept for the gate only."""
    key = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return int(hashlib.sha256(key.encode()).hexdigest()[8:16], 16) % 4 == 0


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
                added.append({"input": c.input, "output": c.output, "trace": c.trace_id})
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


class CrystalliseLearner:
    """G4: synthesise a deterministic program from verified cases, cheapest strategy first."""

    name = "crystallise"
    layer = "harness"

    def __init__(self, metric: Callable[[Any, Any], bool], *, budget_s: float = 2.0) -> None:
        self.metric = metric
        self.arith = ArithStrategy(budget_s=budget_s)
        self.lookup = LookupStrategy()

    def propose(
        self,
        view: View,
        spec: TaskSpec,
        cases: Sequence[VerifiedCase],
        progress: Callable[[int, int], None] | None = None,
    ) -> ChangeSet | None:
        learn = [c for c in cases if not is_gate_case(c.input)]
        if not learn:
            return None
        parts: list[tuple[str, str]] = []
        inputs = [json.dumps(c.input, sort_keys=True) for c in learn]
        if len(set(inputs)) < len(inputs):  # inputs repeat: a table pays
            src = self.lookup.synthesise([(c.input, c.output) for c in learn])
            if src:
                parts.append(("lookup", src))
        meta: dict[str, Any] = {"strategies": [], "learning_cases": len(learn)}
        texts = [(c.input, str(c.output)) for c in learn if isinstance(c.input, str)]
        current = json.loads(view.read(task_path(spec.name, "program.json")) or "{}")
        previous = [ArithRule.from_dict(r) for r in current.get("arith_rules", [])]
        found = self.arith.synthesise(texts, metric=lambda p, t: bool(self.metric(p, t)), progress=progress,
                                      previous=previous, previous_mode=current.get("arith_mode"))
        if found:
            src, rules, mode = found
            parts.append(("arith", src))
            meta["arith_mode"] = mode
            meta["arith_rules"] = [r.to_dict() for r in sorted(rules, key=lambda r: (r.key, r.signature))]
        if not parts:
            return None
        meta["strategies"] = [n for n, _ in parts]
        code = compose(parts)
        if code == view.read(task_path(spec.name, "code.py")):
            return None  # nothing new was learned: no change set, no gate run
        deltas = [
            d
            for d in (
                _set(view, task_path(spec.name, "code.py"), code, "crystallised program"),
                _set(view, task_path(spec.name, "program.json"), json.dumps(meta, indent=1, sort_keys=True) + "\n",
                     "how the program was made"),
                _with_grade(view, spec, "G4", "code reproduces held-out verified cases"),
            )
            if d
        ]
        if not deltas:
            return None
        n_rules = len(meta.get("arith_rules", []))
        return ChangeSet(
            learner=self.name,
            layer="harness",
            deltas=deltas,
            summary=f"{spec.name}: crystallise ({'+'.join(meta['strategies'])}, {n_rules} verified rules)",
            provenance=[c.trace_id for c in learn],
            evidence={"task": spec.name, "rules": n_rules,
                      **{k: v for k, v in meta.items() if k not in ("arith_rules", "arith_mode")}},
        )


def compose(parts: Sequence[tuple[str, str]]) -> str:
    """One module from several strategies' modules: the first that answers wins."""
    if len(parts) == 1:
        return parts[0][1]
    chunks, names = [], []
    for name, src in parts:
        fn = f"_solve_{name}"
        chunks.append(f"# ---- strategy: {name} ----\n" + re.sub(r"^def solve\(", f"def {fn}(", src, flags=re.M))
        names.append(fn)
    tail = "\n\ndef solve(value):\n"
    for fn in names:
        tail += f"    out = {fn}(value)\n    if out is not None:\n        return out\n"
    tail += "    return None\n"
    return "\n\n".join(chunks) + tail
