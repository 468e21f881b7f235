"""The weights learner: verified data -> LoRA adapter -> forgetting measured -> gate -> commit.

    outcome = learn_adapter(home, Scope(agent="support"), rows, task="triage")
    outcome.verdict.reason    'accept: 9 wins / 0 losses of 12 cases, ...; retention kept (max forgetting 0.0 points)'
    outcome.version           the committed version (None when the gate said no)

Steps:
  1. split the SFT rows by trace id: 3/4 train, 1/4 the target suite (never trained on)
  2. the scope's current adapter is the parent: training continues it (sequential learning)
  3. retention: suites of the scope's earlier adapters + the base-probes suite (the base's answers);
     replay pool: the parent chain's training data + the base's answers to the replay probes
  4. train (TrainConfig: replay share, regulariser) -> evaluate parent and candidate on the target
     and every retention suite -> `decide_adapter` (the forgetting rule, then the usual gate)
  5. the weights go to $HOME/adapters/<sha256>/ either way (a rejected adapter is evidence); the
     manifest (metrics, verdict, provenance) is committed only on accept
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crystallise.errors import ValidationError
from crystallise.gate import EvalSuite, WeightsPolicy, decide_adapter, suite_accuracy
from crystallise.engine.home import Home
from crystallise.engine.committer import Committer
from crystallise.types import ChangeSet, Scope, Verdict, Version, now
from crystallise.weights.base import BaseModel
from crystallise.weights.dataset import dump_jsonl, read_jsonl
from crystallise.weights.evaluate import (
    PROBE_SUITE,
    PROBE_TOKENS,
    evaluate,
    held_out,
    load_with_adapter,
    probe_replay,
    probe_suite,
    suite_from_rows,
)
from crystallise.weights.modules import (
    adapter_changeset,
    current_manifest,
    dataset_path,
    scope_key,
    store_dataset,
    store_weights,
    suite_path,
    weights_dir,
)
from crystallise.weights.train import TrainConfig, train_adapter

__all__ = ["LearnOutcome", "learn_adapter"]


@dataclass
class LearnOutcome:
    changeset: ChangeSet
    manifest: dict[str, Any]
    verdict: Verdict
    version: Version | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _say(progress: Callable[[str], None] | None, msg: str) -> None:
    if progress:
        progress(msg)


def _earlier_suites(home: Home, level: str, owner: str, task: str) -> dict[str, EvalSuite]:
    prefix = f"adapters/{level}/{owner}/suites/"
    out: dict[str, EvalSuite] = {}
    for path in home.repo.list_files(prefix):
        name = path[len(prefix):].removesuffix(".jsonl")
        if name not in (task, PROBE_SUITE):
            out[name] = EvalSuite.from_jsonl(name, home.repo.read(path) or "")
    return out


def _replay_pool(home: Home, parent: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for digest in (parent or {}).get("data", {}).get("lineage", []):
        path = dataset_path(home, digest)
        if path.is_file():  # SFT rows only: a DPO adapter's preference pairs are not replayable as-is
            rows += [r for r in read_jsonl(path) if isinstance(r.get("messages"), list)]
    return rows


def learn_adapter(
    home: Home,
    scope: Scope,
    rows: Sequence[dict[str, Any]],
    *,
    task: str,
    base_name: str = "smollm2-135m",
    config: TrainConfig | None = None,
    policy: WeightsPolicy | None = None,
    verifier: dict[str, Any] | None = None,
    name: str | None = None,
    gate_rows: Sequence[dict[str, Any]] | None = None,
    max_new_tokens: int = 16,
    replay_limit: int = 256,
    commit: bool = True,
    progress: Callable[[str], None] | None = None,
) -> LearnOutcome:
    """Train, measure, gate and (on accept) commit the scope's next adapter (see the module docstring)."""
    config = config or TrainConfig()
    policy = policy or WeightsPolicy()
    level, owner = scope_key(scope)
    if not task or "/" in task:
        raise ValidationError(f"task must be a plain name for the target suite, got {task!r}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    base = BaseModel.open(home.models_dir, base_name)
    timings["base_s"] = time.perf_counter() - t0

    # 1. split
    if gate_rows is None:
        train_rows, gate_rows = held_out(rows)
    else:
        train_rows = list(rows)
    if not train_rows or not gate_rows:
        raise ValidationError(
            f"{len(rows)} verified example(s) are too few to train and gate an adapter (1 in 4 is held out "
            "for the gate): record more verified runs, or pass a separate gate set")
    # 2. parent
    parent = current_manifest(home, level, owner)
    if parent and parent.get("base", {}).get("sha256") != base.sha256:
        parent = None  # another base: start afresh (its suites still count as retention)
    parent_dir = weights_dir(home, parent["weights"]["sha256"]) if parent else None
    # 3. retention suites and replay
    base_model, tok = base.shared(config.device)
    probes_text = home.repo.read(suite_path(level, owner, PROBE_SUITE))
    probes = EvalSuite.from_jsonl(PROBE_SUITE, probes_text) if probes_text else probe_suite(base_model, tok)
    retention_suites = {PROBE_SUITE: probes, **_earlier_suites(home, level, owner, task)}
    existing_target = home.repo.read(suite_path(level, owner, task))
    target = suite_from_rows(task, gate_rows, verifier)
    if existing_target:
        target = EvalSuite.from_jsonl(task, existing_target).add(
            c for c in target.cases if c.id not in set(EvalSuite.from_jsonl(task, existing_target).ids))
    replay = probe_replay(base_model, tok) + _replay_pool(home, parent)
    if len(replay) > replay_limit:
        step = len(replay) / replay_limit
        replay = [replay[int(i * step)] for i in range(replay_limit)]
    if config.replay_share == 0:
        replay = []
    # 4. train and measure
    _say(progress, f"train: {len(train_rows)} examples, {len(replay)} replay, {config.steps} steps")
    with tempfile.TemporaryDirectory(prefix="crystallise-adapter-") as tmp:
        t1 = time.perf_counter()
        result = train_adapter(base, train_rows, config, Path(tmp) / "adapter", retention=replay,
                               init_from=parent_dir,
                               progress=(lambda s, n, loss: _say(progress, f"step {s}/{n} loss {loss:.3f}")))
        timings["train_s"] = time.perf_counter() - t1
        digest, files = store_weights(home, result.adapter_dir)
    t2 = time.perf_counter()
    _say(progress, "evaluate: parent vs candidate on the target and retention suites")
    old_model, old_tok = load_with_adapter(base, parent_dir, config.device)
    new_model, new_tok = load_with_adapter(base, weights_dir(home, digest), config.device)
    def ev(m: Any, t: Any, s: EvalSuite) -> list[Any]:  # probes: as many tokens as their expected answers
        return evaluate(m, t, s, max_new_tokens=PROBE_TOKENS if s.name == PROBE_SUITE else max_new_tokens)

    t_old, t_new = ev(old_model, old_tok, target), ev(new_model, new_tok, target)
    retention = {n: (ev(old_model, old_tok, s), ev(new_model, new_tok, s)) for n, s in retention_suites.items()}
    timings["eval_s"] = time.perf_counter() - t2
    verdict = decide_adapter(t_old, t_new, retention, policy)
    # 5. manifest and change set
    learned = dict((parent or {}).get("metrics", {}).get("learned", {}))
    bwt_terms = [suite_accuracy(new) - learned[n] for n, (_, new) in retention.items() if n in learned]
    metrics = {
        "target": {"suite": task, "n": len(t_new), "old": suite_accuracy(t_old), "new": suite_accuracy(t_new),
                   "gain": suite_accuracy(t_new) - suite_accuracy(t_old)},
        "retention": verdict.details["retention"],
        "forgetting": verdict.details["forgetting"],
        "bwt": sum(bwt_terms) / len(bwt_terms) if bwt_terms else None,
        "learned": {**learned, task: suite_accuracy(t_new)},
    }
    data_text = dump_jsonl(train_rows)
    data_sha = store_dataset(home, data_text)
    provenance = sorted({str(r["trace_id"]) for r in [*train_rows, *gate_rows] if r.get("trace_id")})
    manifest = {
        "name": name or f"{owner}-{task}-{digest[:8]}",
        "scope": {"level": level, "owner": owner},
        "base": {"name": base.name, "sha256": base.sha256},
        "weights": {"sha256": digest, "files": files, "format": "peft-lora"},
        "data": {"sha256": data_sha, "examples": len(train_rows), "gate_examples": len(gate_rows),
                 "replay_examples": len(replay), "tasks": sorted({str(r.get("task") or task) for r in train_rows}),
                 "lineage": [*(parent or {}).get("data", {}).get("lineage", []), data_sha]},
        "hyperparameters": config.to_dict(),
        "training": result.summary(),
        "metrics": metrics,
        "provenance": provenance,
        "parent": parent["weights"]["sha256"] if parent else None,
        "created_at": round(now(), 3),
    }
    suites = {task: target.to_jsonl()}
    if not probes_text:
        suites[PROBE_SUITE] = probes.to_jsonl()
    cs = adapter_changeset(home, scope, manifest, verdict, suites=suites, provenance=provenance)
    cs.evidence["manifest"] = json.loads(json.dumps(manifest))
    outcome = LearnOutcome(cs, manifest, verdict, timings=timings)
    if verdict.decision == "accept" and commit:
        outcome.version = Committer(home).commit(cs)
    else:  # kept as evidence (an accepted one that was not committed stays "proposed")
        cs.status = {"reject": "rejected", "needs_review": "needs_review"}.get(verdict.decision, "proposed")
        home.store.save_changeset(cs)
    return outcome
