"""Prompt optimisation for tasks still served by the LLM: reflective instruction evolution + few-shot selection.

The instruction search follows GEPA (Agrawal et al., "GEPA: Reflective Prompt Evolution Can
Outperform Reinforcement Learning", arXiv 2507.19457), in a small form:

    learning cases ─┬─ pareto set P   (each candidate is scored per case on P)
                    └─ feedback set F (minibatches the reflection reads)
    pool = [seed instruction]                           scores[c] = [pass?, ...] over P
    for round in 1..R:
        parent = a candidate on the Pareto front        best on at least one case of P,
                                                        drawn by how many cases it is best on
        batch  = the next k cases of F; run the parent; keep its failures (input, answer, right answer)
        child  = the reflection LLM's rewrite of the parent's instruction from those failures
        keep child only if it beats the parent on the batch; then score it on P and add it to the pool
    instruction = the candidate with the best mean on P (the seed on ties)

Few-shot selection then picks, for that instruction, the subset of verified examples (from
F, never P) that maximises the score on P — greedy forward selection, one example at a time
while the score rises — rather than the examples most similar to each input.

The learner returns one change set (`tasks/<name>/prompt.md`, `examples.jsonl`) and writes
nothing: the loop gates it old-vs-new on the held-out gate cases, so a candidate that
looked better on the learning cases and regresses there is rejected and kept as evidence.
Search and gate never share cases.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from crystallise.backends.base import Backend, CompletionRequest, Message
from crystallise.harness.learn import VerifiedCase, is_gate_case
from crystallise.harness.runtime import DEFAULT_INSTRUCTIONS, TaskRuntime
from crystallise.harness.spec import TaskSpec, View, dump_jsonl, task_path
from crystallise.types import ChangeSet, Delta

__all__ = ["Candidate", "PromptOptLearner", "pareto_front", "parse_instruction"]

RuntimeFor = Callable[[Sequence[Delta]], TaskRuntime]
Result = tuple[bool, Any]  # (passed, the output given)
Run = Callable[[str, list[dict[str, Any]], Sequence[VerifiedCase]], list[Result]]
_FENCE = re.compile(r"```[a-zA-Z]*\n?(.*?)```", re.DOTALL)
_MAX_INSTRUCTION = 2000

REFLECT_SYSTEM = (
    "You improve the instructions of an LLM task. You are shown the current instructions and examples the "
    "model got wrong under them (the input, the model's answer and the right answer). Work out what the "
    "failures have in common and rewrite the instructions so the model gets such inputs right: state the "
    "rule, the method or the output format it missed. Keep what works; keep it general (do not list the "
    "examples' answers). Reply with the complete new instructions inside ``` ```, nothing else."
)


@dataclass
class Candidate:
    """One instruction in the pool, with its per-case results on the Pareto set."""

    id: int
    instruction: str
    parent: int | None
    scores: list[bool] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else 0.0


def pareto_front(pool: Sequence[Candidate]) -> dict[int, int]:
    """candidate id -> on how many Pareto cases it is among the best, for the non-dominated candidates.

    A candidate is on the front if it passes some case and no other candidate passes a strict
    superset of its cases (of two with the same pass set, the older stays). A case every
    candidate fails counts for nobody.

    >>> a, b = Candidate(0, "a", None, [True, False]), Candidate(1, "b", 0, [False, True])
    >>> pareto_front([a, b, Candidate(2, "c", 0, [True, False, ])])
    {0: 1, 1: 1}
    """
    sets = {c.id: frozenset(i for i, ok in enumerate(c.scores) if ok) for c in pool}
    front = {}
    for c in pool:
        mine = sets[c.id]
        if not mine:
            continue
        dominated = any(other > mine or (other == mine and o < c.id) for o, other in sets.items() if o != c.id)
        if not dominated:
            front[c.id] = len(mine)
    return front


def parse_instruction(text: str) -> str:
    """The instruction in a reflection reply: inside the first ``` block, else the whole reply.

    >>> parse_instruction("Here:\\n```\\nDivide a by b.\\n```")
    'Divide a by b.'
    """
    m = _FENCE.search(text)
    return (m.group(1) if m else text).strip()


def _flags(results: Sequence[Result]) -> list[bool]:
    return [ok for ok, _ in results]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _h(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


class PromptOptLearner:
    """GEPA-style instruction evolution + few-shot subset selection (see the module docstring)."""

    name = "promptopt"
    layer = "harness"

    def __init__(self, reflect: Backend, metric: Callable[[Any, Any], bool], *, rounds: int = 3, minibatch: int = 4,
                 pareto_size: int = 12, max_examples: int = 3, example_candidates: int = 4, min_cases: int = 8,
                 budget_calls: int = 400, reflect_max_tokens: int = 300, seed: int = 0) -> None:
        self.reflect = reflect
        self.metric = metric
        self.rounds = rounds
        self.minibatch = minibatch
        self.pareto_size = pareto_size
        self.max_examples = max_examples
        self.example_candidates = example_candidates
        self.min_cases = min_cases
        self.budget_calls = budget_calls
        self.reflect_max_tokens = reflect_max_tokens
        self.seed = seed
        self._tried: set[str] = set()  # inputs already searched from: the same search is not run twice
        self.calls = 0

    # -- the learner interface ------------------------------------------------------------------
    def propose(self, view: View, spec: TaskSpec, cases: Sequence[VerifiedCase],
                runtime_for: RuntimeFor) -> ChangeSet | None:
        if spec.grade >= "G4":
            return None  # code serves the task: its prompt only matters on fallback
        learn = [c for c in cases if not is_gate_case(c.input)]
        if len(learn) < self.min_cases:
            return None
        prompt_path, ex_path = task_path(spec.name, "prompt.md"), task_path(spec.name, "examples.jsonl")
        seed_instruction = (view.read(prompt_path) or spec.description or DEFAULT_INSTRUCTIONS).strip()
        current_examples = view.jsonl(ex_path)
        key = _h([seed_instruction, current_examples, sorted(c.trace_id for c in learn)])
        if key in self._tried:
            return None
        self._tried.add(key)
        self.calls = 0
        pareto, feedback = self._split(learn)

        def run(instruction: str, examples: list[dict[str, Any]], batch: Sequence[VerifiedCase]) -> list[Result]:
            deltas = [Delta(op="set", target="artifact", path=prompt_path, before=view.read(prompt_path),
                            after=instruction + "\n"),
                      Delta(op="set", target="artifact", path=ex_path, before=view.read(ex_path),
                            after=dump_jsonl(examples))]
            rt = runtime_for(deltas)
            out: list[Result] = []
            for c in batch:
                self.calls += 1
                try:
                    ans = rt.answer(c.input)
                except Exception as e:  # noqa: BLE001 - a candidate that breaks fails the case
                    out.append((False, f"(error: {type(e).__name__})"))
                    continue
                out.append((ans.output is not None and bool(self.metric(ans.output, c.output)), ans.output))
            return out

        pool, lineage = self._evolve(seed_instruction, current_examples, pareto, feedback, run)
        best = max(pool, key=lambda c: (c.mean, -c.id))
        examples, ex_score, selection = self._select_examples(best, current_examples, pareto, feedback, run)
        deltas = []
        if best.instruction != seed_instruction:
            deltas.append(Delta(op="set", target="artifact", path=prompt_path, before=view.read(prompt_path),
                                after=best.instruction + "\n", reason="instruction evolved from failed cases"))
        if examples != current_examples:
            deltas.append(Delta(op="set", target="artifact", path=ex_path, before=view.read(ex_path),
                                after=dump_jsonl(examples), reason="few-shot examples chosen by suite score"))
            if examples and spec.grade < "G1":
                new = TaskSpec(**{**spec.__dict__, "grade": "G1"})
                deltas.append(Delta(op="set", target="artifact", path=task_path(spec.name, "spec.json"),
                                    before=view.read(task_path(spec.name, "spec.json")), after=new.to_json(),
                                    reason="verified examples chosen"))
        if not deltas:
            return None
        seed_mean = pool[0].mean
        what = []
        if best.instruction != seed_instruction:
            what.append(f"instruction (candidate {best.id} of {len(pool)})")
        if examples != current_examples:
            what.append(f"{len(examples)} few-shot examples")
        return ChangeSet(
            learner=self.name,
            layer="harness",
            deltas=deltas,
            summary=f"{spec.name}: prompt optimisation: {' + '.join(what)}, "
                    f"search score {seed_mean:.0%} → {ex_score:.0%} on {len(pareto)} cases",
            provenance=sorted({c.trace_id for c in pareto} | {c.trace_id for c in feedback}),
            evidence={
                "task": spec.name, "pareto_cases": len(pareto), "feedback_cases": len(feedback),
                "seed_score": seed_mean, "best_instruction_score": best.mean, "search_score": ex_score,
                "candidates": [{"id": c.id, "parent": c.parent, "score": c.mean, "instruction": c.instruction[:300]}
                               for c in pool],
                "front": pareto_front(pool), "rejected_children": lineage, "example_selection": selection,
                "calls": self.calls,
            },
        )

    # -- the instruction search -----------------------------------------------------------------
    def _split(self, learn: list[VerifiedCase]) -> tuple[list[VerifiedCase], list[VerifiedCase]]:
        ordered = sorted(learn, key=lambda c: _h(c.input))
        size = min(self.pareto_size, max(1, len(ordered) // 2))
        pareto, feedback = ordered[:size], ordered[size:]
        return pareto, feedback or pareto

    def _evolve(self, seed: str, examples: list[dict[str, Any]], pareto: list[VerifiedCase],
                feedback: list[VerifiedCase], run: Run) -> tuple[list[Candidate], list[dict[str, Any]]]:
        rng = random.Random(self.seed)
        pool = [Candidate(0, seed, None, _flags(run(seed, examples, pareto)))]
        rejected: list[dict[str, Any]] = []
        cursor = 0
        for _ in range(self.rounds):
            if self.calls >= self.budget_calls:
                break
            front = pareto_front(pool)
            ids = sorted(front) or [pool[0].id]
            parent = next(c for c in pool if c.id == rng.choices(ids, weights=[front.get(i, 1) for i in ids])[0])
            batch, failures = [], []
            for _try in range(3):  # a batch the parent gets wholly right teaches nothing: take the next one
                batch = [feedback[(cursor + j) % len(feedback)] for j in range(min(self.minibatch, len(feedback)))]
                cursor += len(batch)
                got = run(parent.instruction, examples, batch)
                failures = [(c, out) for c, (ok, out) in zip(batch, got) if not ok]
                if failures:
                    break
            if not failures:
                break
            child_text = self._reflect(parent.instruction, failures)
            if not child_text or child_text == parent.instruction or any(c.instruction == child_text for c in pool):
                rejected.append({"parent": parent.id, "why": "no new instruction"})
                continue
            parent_batch = sum(ok for ok, _ in got)
            child_batch = sum(_flags(run(child_text, examples, batch)))
            if child_batch <= parent_batch:
                rejected.append({"parent": parent.id, "why": f"not better on the batch ({child_batch} vs "
                                 f"{parent_batch} of {len(batch)})", "instruction": child_text[:300]})
                continue
            pool.append(Candidate(len(pool), child_text, parent.id, _flags(run(child_text, examples, pareto))))
        return pool, rejected

    def _reflect(self, instruction: str, failures: list[tuple[VerifiedCase, Any]]) -> str:
        shown = []
        for c, got in failures[:6]:
            shown.append(f"Input:\n{_text(c.input)[:1500]}\nModel answer: {_text(got)[:200]}\n"
                         f"Right answer: {_text(c.output)[:200]}")
        user = ("Current instructions:\n```\n" + instruction + "\n```\n\nFailed examples:\n\n"
                + "\n\n".join(shown) + "\n\nWrite the improved instructions.")
        try:
            reply = self.reflect.complete(CompletionRequest(
                messages=[Message("system", REFLECT_SYSTEM), Message("user", user)],
                max_tokens=self.reflect_max_tokens)).text
        except Exception:  # noqa: BLE001 - a failed reflection proposes nothing this round
            return ""
        text = parse_instruction(reply)
        return text if 0 < len(text) <= _MAX_INSTRUCTION else ""

    # -- few-shot selection ---------------------------------------------------------------------
    def _select_examples(self, best: Candidate, current: list[dict[str, Any]], pareto: list[VerifiedCase],
                         feedback: list[VerifiedCase], run: Run) -> tuple[list[dict[str, Any]], float, dict[str, Any]]:
        """The example set (current pool or a chosen subset) that scores best on P with `best`'s instruction."""
        pareto_ids = {_h(c.input) for c in pareto}
        pool = [c for c in feedback if _h(c.input) not in pareto_ids]
        pool = sorted(pool, key=lambda c: _h([c.input, "ex"]))[: self.example_candidates]
        base = best.mean
        chosen: list[dict[str, Any]] = []
        score, steps = -1.0, []
        while pool and len(chosen) < self.max_examples and self.calls < self.budget_calls:
            trials = []
            for c in pool:
                ex = [*chosen, {"input": c.input, "output": c.output, "trace": c.trace_id,
                                **({"org": c.org} if c.org is not None else {})}]
                flags = _flags(run(best.instruction, ex, pareto))
                trials.append((sum(flags) / len(flags), c, ex))
            top, c, ex = max(trials, key=lambda t: t[0])  # the first best: ties keep the earlier candidate
            if chosen and top <= score:
                break
            chosen, score = ex, top
            steps.append({"added": c.trace_id, "score": top})
            pool = [p for p in pool if p is not c]
        selection = {"current_pool_score": base, "steps": steps}
        if chosen and score > base:
            return chosen, score, selection
        return current, base, selection
