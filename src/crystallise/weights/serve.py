"""Serving with adapters: the scope's adapter on the base model, or the base alone.

    backend, why = serving_backend(home, Scope(agent="support", org="acme"))
    backend.complete(CompletionRequest([Message("user", "...")])).text
    why.reason    "org acme's adapter acme-triage-5e0d1c2a"   or   "base model (no adapter for this scope)"

Two runtimes, one `Backend` interface:

* `llama` (default): llama.cpp on the quantised GGUF with the adapter converted once to a GGUF
  LoRA (`gguf_lora.peft_to_gguf`, cached as $HOME/adapters/<sha256>.lora.gguf). Fast decode.
* `transformers`: the fp32 torch model with the PEFT adapter (what training produced, exactly).

The adapter is chosen per request scope by `modules.resolve` (org, then agent, then the base),
reading the manifest from the artifact repository, so `crystallise revert` of an adapter version
changes what is served on the next `serving_backend` call.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from crystallise.backends import catalog
from crystallise.backends.base import Completion, CompletionRequest
from crystallise.backends.local import load_llama
from crystallise.errors import BackendError, ConfigError
from crystallise.types import Scope
from crystallise.weights.base import BaseModel, generate
from crystallise.weights.evaluate import load_with_adapter
from crystallise.weights.gguf_lora import peft_to_gguf
from crystallise.weights.modules import Resolution, WeightsHome, resolve, weights_dir

__all__ = ["LlamaAdapterBackend", "TransformersAdapterBackend", "gguf_adapter", "serving_backend"]


def _cut(text: str, stop: list[str] | None) -> str:
    for s in stop or []:
        if s and s in text:
            text = text[: text.index(s)]
    return text


class TransformersAdapterBackend:
    """The torch base model with a PEFT adapter (or none): exactly what training saw."""

    def __init__(self, base: BaseModel, adapter_dir: Path | None, *, name: str | None = None,
                 device: str | None = None) -> None:
        self.base, self.adapter_dir = base, adapter_dir
        self.model, self.tok = load_with_adapter(base, adapter_dir, device)
        self.name = name or f"transformers:{base.name}{'+' + Path(adapter_dir).name[:12] if adapter_dir else ''}"

    def complete(self, request: CompletionRequest) -> Completion:
        start = time.perf_counter()
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        text = generate(self.model, self.tok, [messages], max_new_tokens=request.max_tokens,
                        temperature=request.temperature, seed=request.seed or 0)[0]
        return Completion(text=_cut(text, request.stop), model=self.name,
                          latency_ms=(time.perf_counter() - start) * 1000)


def gguf_adapter(home: WeightsHome, digest: str, base: BaseModel) -> Path:
    """The GGUF LoRA of adapter `digest`, converted on first use (beside its folder, not inside it)."""
    src = weights_dir(home, digest)
    out = src.parent / f"{digest}.lora.gguf"
    if not out.is_file():
        tmp = out.with_suffix(f".tmp{threading.get_ident()}")
        peft_to_gguf(src, json.loads((base.path / "config.json").read_text()), tmp)
        tmp.replace(out)
    return out


class LlamaAdapterBackend:
    """llama.cpp on the GGUF base with a GGUF LoRA applied (or none)."""

    def __init__(self, model_path: Path, lora: Path | None, *, name: str | None = None, n_ctx: int = 4096,
                 seed: int = 0) -> None:
        self.model_path, self.lora, self.n_ctx, self.seed = Path(model_path), lora, n_ctx, seed
        self.name = name or f"local:{self.model_path.stem}{'+lora' if lora else ''}"

    def complete(self, request: CompletionRequest) -> Completion:
        llm, lock = load_llama(self.model_path, n_ctx=self.n_ctx, seed=self.seed, lora=self.lora)
        start = time.perf_counter()
        with lock:
            try:
                response = llm.create_chat_completion(
                    messages=[{"role": m.role, "content": m.content} for m in request.messages],
                    temperature=request.temperature, max_tokens=request.max_tokens, stop=list(request.stop or []),
                    seed=request.seed if request.seed is not None else self.seed)
            except (ValueError, RuntimeError) as exc:
                raise BackendError(f"{self.name} failed: {exc}") from exc
        usage = response.get("usage") or {}
        return Completion(text=response["choices"][0]["message"].get("content") or "", model=self.name,
                          prompt_tokens=int(usage.get("prompt_tokens", 0)),
                          completion_tokens=int(usage.get("completion_tokens", 0)),
                          latency_ms=(time.perf_counter() - start) * 1000)


def serving_backend(home: WeightsHome, scope: Scope, *, base_name: str = "smollm2-135m", runtime: str = "llama",
                    device: str | None = None) -> tuple[Any, Resolution]:
    """The backend that serves `scope`: its adapter on the base, else the base (see the module docstring)."""
    if runtime not in ("llama", "transformers"):
        raise ConfigError(f"runtime must be 'llama' or 'transformers', got {runtime!r}")
    spec = catalog.CATALOG.get(base_name)
    if spec is None:
        raise ConfigError(f"unknown base model {base_name!r}: choose one of {', '.join(sorted(catalog.CATALOG))}")
    choice = resolve(home, Scope(agent=scope.agent, org=scope.org), spec.sha256)
    if runtime == "llama":
        gguf = catalog.model_path(base_name, home.models_dir)
        lora = None
        if choice.digest:
            base = BaseModel.open(home.models_dir, base_name)
            lora = gguf_adapter(home, choice.digest, base)
        return LlamaAdapterBackend(gguf, lora, name=f"local:{base_name}+{choice.digest[:12]}" if lora else None), choice
    base = BaseModel.open(home.models_dir, base_name)
    adapter = weights_dir(home, choice.digest) if choice.digest else None
    return TransformersAdapterBackend(base, adapter, device=device), choice
