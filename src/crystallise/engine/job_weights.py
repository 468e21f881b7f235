"""The weights jobs: export a scope's verified runs, train its adapter, distill (STaR) -- each
from the store's verified traces of one task, never from a path a caller names.

    weights-export   {"task": T}                 -> <home>/exports/<job id>/sft.jsonl, pairs.jsonl
    weights-train    {"task": T, "steps", "base"} -> train, gate, commit the scope's next adapter
    distill          {"task": T, "rounds", "steps", "base"} -> STaR rounds, gated between them

They need the `weights` extra (torch, transformers, peft); its ImportError names it.
"""

from __future__ import annotations

from typing import Any

from crystallise.engine.adapters import learn_adapter
from crystallise.engine.distill import Problem, StarConfig, star
from crystallise.engine.home import Home
from crystallise.engine.jobctx import Reporter, current_job
from crystallise.errors import ValidationError
from crystallise.types import Scope
from crystallise.weights.dataset import export_dataset
from crystallise.weights.evaluate import held_out
from crystallise.weights.train import TrainConfig

__all__ = ["distill", "run"]


def run(home: Home, scope: Scope, params: dict[str, Any], rep: Reporter, *, train: bool) -> dict[str, Any]:
    rep.progress(0.05, f"weights: exporting the verified runs of {params['task']}")
    ds = export_dataset(home.store, scope, tasks=[params["task"]])
    if not train:
        folder = home.path / "exports" / (current_job() or "export")
        info = ds.write(folder)
        return {"folder": str(folder), "sft": info["sft"], "pairs": info["pairs"], "traces": info["traces"]}
    if len(ds.sft) < 4:
        raise ValidationError(f"task {params['task']!r} has {len(ds.sft)} verified runs in this scope: an adapter "
                              "needs at least 4 (record runs with corrections first)")
    config = TrainConfig(steps=int(params.get("steps", 50)))
    outcome = learn_adapter(home, scope, ds.sft, task=params["task"], base_name=params.get("base", "smollm2-135m"),
                            config=config, progress=rep.steps(8))
    return {"decision": outcome.verdict.decision, "reason": outcome.verdict.reason,
            "versions": [outcome.version.number] if outcome.version else [],
            "adapter": outcome.manifest["weights"]["sha256"]}


def distill(home: Home, scope: Scope, params: dict[str, Any], rep: Reporter) -> dict[str, Any]:
    ds = export_dataset(home.store, scope, tasks=[params["task"]])
    probs = []
    for i, row in enumerate(ds.sft):
        messages = [m for m in row["messages"] if m.get("role") != "assistant"]
        answer = next((m["content"] for m in reversed(row["messages"]) if m.get("role") == "assistant"), None)
        if messages and answer is not None:
            probs.append(Problem(f"p{i}", messages, answer, {"kind": "exact"}))
    if len(probs) < 4:
        raise ValidationError(f"task {params['task']!r} has {len(probs)} verified runs in this scope: distilling "
                              "needs at least 4")
    rows = [{"messages": [*p.messages, {"role": "assistant", "content": str(p.expected)}], "trace_id": p.id}
            for p in probs]
    learn_rows, gate_rows = held_out(rows)
    learn_ids, gate_ids = {r["trace_id"] for r in learn_rows}, {r["trace_id"] for r in gate_rows}
    reports = star(home, scope, params["task"], [p for p in probs if p.id in learn_ids],
                   [p for p in probs if p.id in gate_ids], StarConfig(rounds=int(params.get("rounds", 2))),
                   train_config=TrainConfig(steps=int(params.get("steps", 50))),
                   base_name=params.get("base", "smollm2-135m"), progress=rep.steps(6))
    return {"versions": [r.version for r in reports if r.version],
            "rounds": [{"round": r.round, "kept": r.kept, "decision": r.decision, "reason": r.reason}
                       for r in reports]}
