"""LoRA training for the weight layer: SFT on verified examples, with replay and a drift regulariser.

    result = train_adapter(base, examples, config, retention=replay_examples, out_dir=tmp)

One step (batch of `batch_size` chat examples, each cut to `max_len` tokens):

    batch = (1 - replay_share) x target examples  +  replay_share x retention examples
    loss  = mean token cross-entropy on the assistant turns
          + reg_weight * drift                       (regulariser, see below)
    AdamW on the LoRA matrices only (the base stays frozen)

Against forgetting there are two levers, and they combine:

* **replay** (`replay_share`, default 0.25): a share of every batch comes from retention data —
  earlier adapters' training sets and the base model's own answers to general prompts — so the
  gradient keeps seeing what must not change. It needs data, and it works (see
  docs/benchmarks.md: it is the only strategy that holds the earlier tasks).
* **regulariser** (`regulariser`): `l2` penalises ||ΔW||² = ||scale·B·A||² summed over the adapted
  layers (L2 to the base: the adapter starts at ΔW=0, so this is the distance from the base);
  `ewc` weights each entry of ΔW² by the base's diagonal Fisher information on the retention data
  (the entries the retention data is sensitive to move least); `none`. L2 (weight 0.05) is the
  default on top of replay: it needs no data and no extra pass and bounds how far a small dataset
  drags the base; EWC costs a Fisher pass and did no better than L2 in the digits check, so it is
  an option, not the default (docs/weights.md gives the figures).

`objective="dpo"` trains on preference pairs (`{"prompt", "chosen", "rejected"}`) with the DPO loss
against the base (the adapter switched off is the reference model), same replay and regulariser.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from crystallise.errors import ValidationError
from crystallise.weights._deps import pick_device, require
from crystallise.weights.base import BaseModel, Messages, encode_example

__all__ = ["TrainConfig", "TrainResult", "attach_lora", "train_adapter"]

Regulariser = Literal["none", "l2", "ewc"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters; all of them land in the adapter's manifest.

    >>> TrainConfig(steps=40, replay_share=0.5).batch_size
    4
    """

    steps: int = 50
    batch_size: int = 4
    max_len: int = 128
    lr: float = 1e-3
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    replay_share: float = 0.25
    regulariser: Regulariser = "l2"
    reg_weight: float = 0.05
    objective: Literal["sft", "dpo"] = "sft"
    dpo_beta: float = 0.1
    fisher_batches: int = 4
    seed: int = 0
    device: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValidationError(f"steps must be an integer >= 1, got {self.steps!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValidationError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not 0 <= self.replay_share < 1:
            raise ValidationError(f"replay_share must be in [0, 1), e.g. 0.25; got {self.replay_share!r}")
        if self.regulariser not in ("none", "l2", "ewc"):
            raise ValidationError(f"regulariser must be none, l2 or ewc; got {self.regulariser!r}")
        if self.objective not in ("sft", "dpo"):
            raise ValidationError(f"objective must be sft or dpo; got {self.objective!r}")
        if self.lr <= 0 or self.rank < 1 or self.max_len < 8:
            raise ValidationError("lr must be > 0, rank >= 1 and max_len >= 8")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        d.pop("device")
        return d


@dataclass
class TrainResult:
    adapter_dir: Path
    steps: int
    wall_s: float
    device: str
    losses: list[float] = field(default_factory=list)
    drift: float = 0.0  # the final ||ΔW||² (or Fisher-weighted) penalty, unweighted
    model: Any = None  # the trained PEFT model (eval mode) when asked for with keep_model=True

    def summary(self) -> dict[str, Any]:
        tail = self.losses[-5:] or [math.nan]
        return {"steps": self.steps, "wall_s": round(self.wall_s, 2), "device": self.device,
                "loss_first": round(self.losses[0], 4) if self.losses else None,
                "loss_last5": round(sum(tail) / len(tail), 4), "drift": round(self.drift, 6)}


def attach_lora(model: Any, config: TrainConfig) -> Any:
    """Wrap `model` in a fresh PEFT LoRA adapter named "default" (B=0: outputs unchanged)."""
    peft = require("peft")
    lora = peft.LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                           target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM")
    return peft.get_peft_model(model, lora)


def _batches(n_target: int, n_replay: int, config: TrainConfig) -> list[list[tuple[str, int]]]:
    """Per step, which examples: ("t", i) target, ("r", j) replay. Epoch-wise shuffles, seeded."""
    rng = random.Random(config.seed)
    n_r = round(config.batch_size * config.replay_share) if n_replay else 0
    n_t = config.batch_size - n_r if n_target else 0
    order_t: list[int] = []
    order_r: list[int] = []
    plan = []
    for _ in range(config.steps):
        step: list[tuple[str, int]] = []
        for kind, need, order, size in (("t", n_t, order_t, n_target), ("r", n_r, order_r, n_replay)):
            for _ in range(need):
                if not order:
                    order.extend(rng.sample(range(size), size))
                step.append((kind, order.pop()))
        plan.append(step)
    return plan


def _collate(torch: Any, rows: Sequence[tuple[list[int], list[int]]], pad: int, device: str) -> dict[str, Any]:
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in rows], device=device)
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows], device=device)
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in rows], device=device)
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _lora_pairs(model: Any) -> list[tuple[str, Any, Any, float]]:
    """(module name, A, B, scale) of every LoRA layer of the "default" adapter."""
    pairs = []
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            pairs.append((name, module.lora_A["default"].weight, module.lora_B["default"].weight,
                          float(module.scaling["default"])))
    return pairs


def _drift(torch: Any, pairs: list[tuple[str, Any, Any, float]], fisher: dict[str, Any] | None) -> Any:
    """Σ ||scale·B·A||² (L2 to the base), or Σ F ⊙ (scale·B·A)² with the base's diagonal Fisher (EWC)."""
    total = torch.zeros((), device=pairs[0][1].device) if pairs else torch.zeros(())
    for name, a, b, scale in pairs:
        delta = scale * (b @ a)
        total = total + ((fisher[name] * delta.pow(2)).sum() if fisher is not None else delta.pow(2).sum())
    return total


def _fisher(torch: Any, model: Any, batches: list[dict[str, Any]], pairs: list[tuple[str, Any, Any, float]]
            ) -> dict[str, Any]:
    """Diagonal Fisher of the adapted base weights on retention batches, normalised to mean 1."""
    modules = dict(model.named_modules())
    weights = {name: modules[name].base_layer.weight for name, *_ in pairs}
    for w in weights.values():
        w.requires_grad_(True)
    fisher = {name: torch.zeros_like(w) for name, w in weights.items()}
    for batch in batches:
        model.zero_grad(set_to_none=True)
        with model.disable_adapter():
            model(**batch).loss.backward()
        for name, w in weights.items():
            fisher[name] += w.grad.detach().pow(2) / len(batches)
    for w in weights.values():
        w.grad = None
        w.requires_grad_(False)
    mean = torch.stack([f.mean() for f in fisher.values()]).mean().clamp_min(1e-12)
    return {name: f / mean for name, f in fisher.items()}


def _seq_logp(torch: Any, model: Any, batch: dict[str, Any]) -> Any:
    """Sum of the log-probabilities of the labelled tokens, per row."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return (logp * mask).sum(-1)


def train_adapter(
    base: BaseModel,
    examples: Sequence[dict[str, Any]],
    config: TrainConfig,
    out_dir: Path,
    *,
    retention: Sequence[dict[str, Any]] = (),
    init_from: Path | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    keep_model: bool = False,
) -> TrainResult:
    """Train a LoRA adapter on `examples` and save it (PEFT format) in `out_dir`.

    `examples` and `retention` are SFT records `{"messages": [...]}` (the last message is the
    assistant's answer), or for `objective="dpo"` preference records `{"prompt": [...messages],
    "chosen": str, "rejected": str}` (retention stays SFT). `progress(step, steps, loss)` is
    called after every step. `init_from` continues a saved adapter (sequential learning: the
    scope's current adapter) instead of starting from ΔW=0. The base model on disk is never changed.
    """
    torch = require("torch")
    if not examples:
        raise ValidationError("no training examples: export some with `crystallise weights export` first")
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    model, tok = base.load(device)
    if init_from is not None:
        peft = require("peft")
        model = peft.PeftModel.from_pretrained(model, str(init_from), is_trainable=True)
    else:
        model = attach_lora(model, config)
    model.train()
    pad = tok.pad_token_id
    enc = lambda m: encode_example(tok, m, config.max_len)  # noqa: E731
    if config.objective == "sft":
        target = [enc(_messages(e)) for e in examples]
    else:
        target = [(enc([*_prompt(e), {"role": "assistant", "content": str(e["chosen"])}]),
                   enc([*_prompt(e), {"role": "assistant", "content": str(e["rejected"])}])) for e in examples]
    replay = [enc(_messages(e)) for e in retention]
    pairs = _lora_pairs(model)
    fisher = None
    if config.regulariser == "ewc":
        source = replay or (target if config.objective == "sft" else [])
        fisher_batches = [_collate(torch, source[i : i + config.batch_size], pad, device)
                          for i in range(0, min(len(source), config.fisher_batches * config.batch_size),
                                         config.batch_size)]
        fisher = _fisher(torch, model, fisher_batches, pairs) if fisher_batches else None
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    plan = _batches(len(target), len(replay), config)
    losses: list[float] = []
    start = time.perf_counter()
    drift_value = 0.0
    for step, picks in enumerate(plan, start=1):
        t_rows = [target[i] for kind, i in picks if kind == "t"]
        r_rows = [replay[i] for kind, i in picks if kind == "r"]
        loss = torch.zeros((), device=device)
        if config.objective == "sft" or not t_rows:
            rows = (t_rows if config.objective == "sft" else []) + r_rows
            loss = model(**_collate(torch, rows, pad, device)).loss
        else:
            loss = _dpo_loss(torch, model, t_rows, pad, device, config.dpo_beta)
            if r_rows:
                loss = loss + model(**_collate(torch, r_rows, pad, device)).loss * (len(r_rows) / len(picks))
        if config.regulariser != "none" and config.reg_weight > 0 and pairs:
            drift = _drift(torch, pairs, fisher)
            drift_value = float(drift.detach())
            loss = loss + config.reg_weight * drift
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if progress:
            progress(step, config.steps, losses[-1])
    if pairs and config.regulariser == "none":
        drift_value = float(_drift(torch, pairs, None).detach())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    model.eval()
    return TrainResult(out_dir, config.steps, time.perf_counter() - start, device, losses, drift_value,
                       model=model if keep_model else None)


def _dpo_loss(torch: Any, model: Any, rows: list[Any], pad: int, device: str, beta: float) -> Any:
    """-log σ(β[(log π(c) - log π_ref(c)) - (log π(r) - log π_ref(r))]), the reference = the adapter off."""
    chosen = _collate(torch, [c for c, _ in rows], pad, device)
    rejected = _collate(torch, [r for _, r in rows], pad, device)
    with torch.no_grad(), model.disable_adapter():
        ref = _seq_logp(torch, model, chosen) - _seq_logp(torch, model, rejected)
    pol = _seq_logp(torch, model, chosen) - _seq_logp(torch, model, rejected)
    return -torch.nn.functional.logsigmoid(beta * (pol - ref)).mean()


def _messages(e: dict[str, Any]) -> Messages:
    msgs = e.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ValidationError(f'an SFT record needs "messages": [{{"role", "content"}}, ...]; got keys {sorted(e)}')
    return msgs


def _prompt(e: dict[str, Any]) -> Messages:
    if not {"prompt", "chosen", "rejected"} <= e.keys():
        raise ValidationError(f'a preference record needs "prompt", "chosen" and "rejected"; got keys {sorted(e)}')
    p = e["prompt"]
    return p if isinstance(p, list) else [{"role": "user", "content": str(p)}]
