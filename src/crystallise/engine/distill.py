"""Self-distillation (STaR-style): sample answers, keep the verified ones, train on them, gate, repeat.

    reports = star(home, scope, "formula", problems, gate_problems, StarConfig(rounds=3, samples=4))

A *problem* is a prompt with a checkable answer: `Problem(id, messages, expected, verifier)` (a
task's eval cases, or benchmark records). Each round:

    1. the scope's current model (base + its adapter) answers every learning problem `samples`
       times at `temperature`
    2. answers the verifier accepts are kept (one per distinct answer); nothing kept -> stop
    3. `learn_adapter` trains the next adapter on them (replay, regulariser), measures the target
       suite (the gate problems, never trained on) and the retention suites, and gates it
    4. rejected -> stop (the gate sits between rounds: a round that does not help ends the loop);
       accepted -> committed, and the next round samples from the improved model

The kept answers are the model's own, so the method can only sharpen what the model sometimes
gets right (Zelikman et al. 2022); rationalisation (hinting the answer) is not done.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from crystallise.gate import WeightsPolicy, verify
from crystallise.engine.home import Home
from crystallise.types import Scope
from crystallise.weights.base import BaseModel, generate
from crystallise.weights.evaluate import load_with_adapter
from crystallise.engine.adapters import LearnOutcome, learn_adapter
from crystallise.weights.modules import resolve, weights_dir
from crystallise.weights.train import TrainConfig

__all__ = ["Problem", "RoundReport", "StarConfig", "sample_verified", "star"]


@dataclass(frozen=True)
class Problem:
    id: str
    messages: list[dict[str, str]]
    expected: Any
    verifier: dict[str, Any] = field(default_factory=lambda: {"kind": "exact"})


@dataclass(frozen=True)
class StarConfig:
    rounds: int = 3
    samples: int = 4
    temperature: float = 0.8
    max_new_tokens: int = 16
    seed: int = 0


@dataclass
class RoundReport:
    round: int
    sampled: int
    kept: int
    solved: int  # learning problems with at least one verified sample
    decision: str
    reason: str
    version: int | None = None
    outcome: LearnOutcome | None = None


def sample_verified(model: Any, tok: Any, problems: Sequence[Problem], config: StarConfig, round_no: int
                    ) -> tuple[list[dict[str, Any]], int, int]:
    """SFT rows of the verified samples (distinct answers per problem), #sampled, #problems solved."""
    convs = [p.messages for p in problems for _ in range(config.samples)]
    outs = generate(model, tok, convs, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                    seed=config.seed + round_no)
    rows: list[dict[str, Any]] = []
    solved: set[str] = set()
    for i, out in enumerate(outs):
        p = problems[i // config.samples]
        if not out.strip() or not verify(p.verifier, out, p.expected):
            continue
        key = hashlib.sha256(f"{p.id}\0{out.strip()}".encode()).hexdigest()[:16]
        if any(r["sample_id"] == key for r in rows):
            continue
        solved.add(p.id)
        rows.append({"messages": [*p.messages, {"role": "assistant", "content": out.strip()}],
                     "trace_id": p.id, "sample_id": key, "source": f"star-round-{round_no}", "task": None})
    return rows, len(outs), len(solved)


def star(
    home: Home,
    scope: Scope,
    task: str,
    problems: Sequence[Problem],
    gate_problems: Sequence[Problem],
    config: StarConfig | None = None,
    *,
    train_config: TrainConfig | None = None,
    policy: WeightsPolicy | None = None,
    base_name: str = "smollm2-135m",
    progress: Callable[[str], None] | None = None,
) -> list[RoundReport]:
    """Run up to `config.rounds` rounds (see the module docstring); one report per round run."""
    config = config or StarConfig()
    base = BaseModel.open(home.models_dir, base_name)
    verifier = gate_problems[0].verifier if gate_problems else {"kind": "exact"}
    gate_rows = [{"messages": [*p.messages, {"role": "assistant", "content": str(p.expected)}], "trace_id": p.id}
                 for p in gate_problems]
    reports: list[RoundReport] = []
    for r in range(1, config.rounds + 1):
        choice = resolve(home, scope, base.sha256)
        adapter = weights_dir(home, choice.digest) if choice.digest else None
        model, tok = load_with_adapter(base, adapter, (train_config or TrainConfig()).device)
        rows, sampled, solved = sample_verified(model, tok, problems, config, r)
        if progress:
            progress(f"round {r}: {len(rows)} verified of {sampled} samples ({solved}/{len(problems)} problems)")
        if not rows:
            reports.append(RoundReport(r, sampled, 0, 0, "stop", "no verified sample to learn from"))
            break
        for row in rows:
            row["task"] = task
        outcome = learn_adapter(home, scope, rows, task=task, base_name=base_name, config=train_config,
                                policy=policy, verifier=verifier, gate_rows=gate_rows,
                                max_new_tokens=config.max_new_tokens, name=f"{task}-star-{r}", progress=progress)
        v = outcome.verdict
        reports.append(RoundReport(r, sampled, len(rows), solved, v.decision, v.reason,
                                   outcome.version.number if outcome.version else None, outcome))
        if v.decision != "accept":
            break
    return reports
