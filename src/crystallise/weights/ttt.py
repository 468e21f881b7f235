"""Test-time training: fit a short-lived adapter on a session's own document, answer, throw it away.

Opt-in, for a document too long (or too costly) to put in every prompt. The model reads the
document by training on it — next-token loss on overlapping windows — instead of attending to it:

    ttt = TestTimeTrainer(base, TTTConfig(steps=20))
    result = ttt.answer(document, ["When did Caroline go to the support group?"])
    result.answers, result.train_s, result.answer_s

1. tokenise the document, cut windows of `window` tokens (stride `window - overlap`)
2. attach a fresh LoRA (ΔW = 0) to the trainer's private copy of the base; `steps` AdamW steps
   on batches of windows
3. answer the questions with the adapter on (the document is *not* in the prompt)
4. `unload()` the LoRA layers: the base is exactly the base again (nothing is saved, nothing is
   versioned — the adapter lived for one session)

`in_context(...)` answers the same questions with the document in the prompt, for comparison
(`crystallise bench ttt`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from crystallise.errors import ValidationError
from crystallise.weights._deps import pick_device, require
from crystallise.weights.base import BaseModel, generate
from crystallise.weights.train import TrainConfig, attach_lora

__all__ = ["TTTConfig", "TTTResult", "TestTimeTrainer", "in_context"]


@dataclass(frozen=True)
class TTTConfig:
    steps: int = 20
    window: int = 128
    overlap: int = 32
    batch_size: int = 4
    lr: float = 1e-3
    rank: int = 8
    alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    seed: int = 0
    device: str | None = None

    def __post_init__(self) -> None:
        if self.steps < 1 or self.window < 16 or not 0 <= self.overlap < self.window:
            raise ValidationError("TTTConfig needs steps >= 1, window >= 16 and 0 <= overlap < window")


@dataclass
class TTTResult:
    answers: list[str]
    train_s: float
    answer_s: float
    windows: int
    losses: list[float] = field(default_factory=list)


def _windows(ids: list[int], window: int, overlap: int) -> list[list[int]]:
    stride = window - overlap
    return [ids[i : i + window] for i in range(0, max(1, len(ids) - overlap), stride) if ids[i : i + window]]


class TestTimeTrainer:
    """Holds a private base copy; each `answer` call trains, answers and discards its own adapter."""

    def __init__(self, base: BaseModel, config: TTTConfig | None = None) -> None:
        self.config = config or TTTConfig()
        self.device = pick_device(self.config.device)
        self.model, self.tok = base.load(self.device)

    def answer(self, document: str, questions: Sequence[str], *, max_new_tokens: int = 24,
               system: str | None = None) -> TTTResult:
        torch = require("torch")
        cfg = self.config
        if not document.strip():
            raise ValidationError("test-time training needs a non-empty document")
        start = time.perf_counter()
        torch.manual_seed(cfg.seed)
        ids = self.tok(document, add_special_tokens=False)["input_ids"]
        windows = _windows(ids, cfg.window, cfg.overlap)
        lora = TrainConfig(rank=cfg.rank, alpha=cfg.alpha, target_modules=cfg.target_modules, lr=cfg.lr)
        model = attach_lora(self.model, lora)
        losses: list[float] = []
        try:
            model.train()
            params = [p for p in model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
            rng = random.Random(cfg.seed)
            order: list[int] = []
            pad = self.tok.pad_token_id
            for _ in range(cfg.steps):
                batch = []
                for _ in range(min(cfg.batch_size, len(windows))):
                    if not order:
                        order = rng.sample(range(len(windows)), len(windows))
                    batch.append(windows[order.pop()])
                width = max(len(w) for w in batch)
                x = torch.tensor([w + [pad] * (width - len(w)) for w in batch], device=self.device)
                y = torch.tensor([w + [-100] * (width - len(w)) for w in batch], device=self.device)
                m = torch.tensor([[1] * len(w) + [0] * (width - len(w)) for w in batch], device=self.device)
                loss = model(input_ids=x, labels=y, attention_mask=m).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                losses.append(float(loss.detach()))
            model.eval()
            train_s = time.perf_counter() - start
            t1 = time.perf_counter()
            answers = generate(model, self.tok, [_ask(q, system) for q in questions], max_new_tokens=max_new_tokens)
            answer_s = time.perf_counter() - t1
        finally:
            self.model = model.unload()  # the LoRA layers go; the base weights were never touched
            self.model.eval()
        return TTTResult(answers, train_s, answer_s, len(windows), losses)


def _ask(question: str, system: str | None, document: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system}] if system else []
    content = f"{document}\n\nQuestion: {question}" if document else question
    return [*msgs, {"role": "user", "content": content}]


def in_context(model: Any, tok: Any, document: str, questions: Sequence[str], *, max_new_tokens: int = 24,
               system: str | None = None) -> tuple[list[str], float]:
    """The same questions with the document in the prompt; (answers, seconds)."""
    start = time.perf_counter()
    answers = generate(model, tok, [_ask(q, system, document) for q in questions], max_new_tokens=max_new_tokens,
                       batch_size=1)
    return answers, time.perf_counter() - start
