"""Base models for the weight layer: the catalog's GGUF, converted once to a trainable torch model.

transformers can read a GGUF (`from_pretrained(dir, gguf_file=...)`) but dequantising it takes
25-150 s on 2 cores; saved as safetensors it loads in about a second. So the first use converts
and caches it beside the GGUF, shared by every home and test run:

    models_dir/smollm2-135m.gguf            (crystallise models pull smollm2-135m)
    models_dir/smollm2-135m.hf/             config.json, model.safetensors, tokenizer files,
                                            crystallise.json {"gguf_sha256": ..., "base": ...}

The base's identity everywhere (adapter manifests, serving checks) is the GGUF's sha256 from
the catalog: an adapter trained on one base is never served on another.

    base = BaseModel.open(models_dir, "smollm2-135m")      # converts on first use
    model, tok = base.load()                                # a fresh fp32 model, ~1 s
    text = generate(model, tok, [[{"role": "user", "content": "Hi"}]], max_new_tokens=8)[0]
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crystallise.backends import catalog
from crystallise.errors import ConfigError
from crystallise.weights._deps import pick_device, require

__all__ = ["BaseModel", "Messages", "encode_example", "generate", "prompt_ids"]

Messages = list[dict[str, str]]
_MARKER = "crystallise.json"
_HEAD = 32  # prompt tokens kept from the start when a long example is cut (the chat headers)
_CONVERT_LOCK = threading.Lock()
# Inference copies of base models, one per (dir, device): loading is cheap but not free.
_CACHE: dict[tuple[str, str], tuple[Any, Any]] = {}


@dataclass(frozen=True)
class BaseModel:
    """A catalog model as a transformers checkpoint (see the module docstring)."""

    name: str
    gguf: Path
    sha256: str
    path: Path  # the converted safetensors folder

    @classmethod
    def open(cls, models_dir: Path, name: str = "smollm2-135m", *, convert: bool = True) -> BaseModel:
        """The base `name`, converting the pulled GGUF on first use (ConfigError if it was never pulled)."""
        spec = catalog.CATALOG.get(name)
        if spec is None:
            raise ConfigError(f"unknown base model {name!r}: choose one of {', '.join(sorted(catalog.CATALOG))}")
        gguf = catalog.model_path(name, Path(models_dir))
        base = cls(name=name, gguf=gguf, sha256=spec.sha256, path=Path(models_dir) / f"{name}.hf")
        if convert and not base.converted():
            base.convert()
        return base

    def converted(self) -> bool:
        marker = self.path / _MARKER
        try:
            return json.loads(marker.read_text()).get("gguf_sha256") == self.sha256
        except (OSError, ValueError):
            return False

    def convert(self) -> Path:
        """GGUF -> safetensors folder, atomically (a temp folder renamed into place)."""
        torch, transformers = require("torch", "transformers")
        require("gguf")
        with _CONVERT_LOCK:
            if self.converted():
                return self.path
            tok = transformers.AutoTokenizer.from_pretrained(str(self.gguf.parent), gguf_file=self.gguf.name)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                str(self.gguf.parent), gguf_file=self.gguf.name, dtype=torch.float32
            )
            # A GGUF-loaded model carries quantizer markers that make save_pretrained refuse it.
            model.hf_quantizer = None
            model.is_quantized = False
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            tmp = Path(tempfile.mkdtemp(prefix=f".{self.name}.", dir=self.path.parent))
            try:
                model.save_pretrained(str(tmp))
                tok.save_pretrained(str(tmp))
                (tmp / _MARKER).write_text(json.dumps({"base": self.name, "gguf_sha256": self.sha256}, indent=2))
                if self.path.exists():  # a stale or half-written conversion
                    shutil.rmtree(self.path)
                os.replace(tmp, self.path)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return self.path

    def load(self, device: str | None = None) -> tuple[Any, Any]:
        """A fresh model (fp32, eval mode) and its tokenizer; training mutates, so never cached."""
        torch, transformers = require("torch", "transformers")
        dev = pick_device(device)
        tok = transformers.AutoTokenizer.from_pretrained(str(self.path))
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model = transformers.AutoModelForCausalLM.from_pretrained(str(self.path), dtype=torch.float32).to(dev)
        model.eval()
        return model, tok

    def shared(self, device: str | None = None) -> tuple[Any, Any]:
        """One inference copy per process (serving, evaluation of the base). Do not train it."""
        key = (str(self.path), pick_device(device))
        if key not in _CACHE:
            _CACHE[key] = self.load(key[1])
        return _CACHE[key]


def prompt_ids(tok: Any, messages: Messages) -> list[int]:
    """Token ids of the chat prompt up to the assistant's turn (the model's own chat template)."""
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def encode_example(tok: Any, messages: Messages, max_len: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one chat example: loss only on the last (assistant) message.

    When prompt + answer exceed `max_len` the middle of the prompt is cut: its first
    `_HEAD` tokens (the chat template's system and user headers) and its end (the question)
    stay, and the answer (what is learned) always survives; labels are -100 on prompt tokens.

    >>> ids, labels = encode_example(tok, [{"role": "user", "content": "2+2?"},
    ...                                   {"role": "assistant", "content": "4"}], 128)   # doctest: +SKIP
    """
    if not messages or messages[-1].get("role") != "assistant":
        raise ConfigError("a training example must end with an assistant message (the answer to learn)")
    prompt = prompt_ids(tok, messages[:-1])
    end = tok.convert_tokens_to_ids("<|im_end|>")
    answer = tok(messages[-1]["content"], add_special_tokens=False)["input_ids"]
    answer = answer + ([end] if isinstance(end, int) and end >= 0 else [tok.eos_token_id])
    answer = answer[:max_len]
    room = max_len - len(answer)
    if len(prompt) > room:
        head = min(_HEAD, room // 2)
        prompt = prompt[:head] + prompt[len(prompt) - (room - head) :] if room > 0 else []
    return prompt + answer, [-100] * len(prompt) + answer


def generate(
    model: Any,
    tok: Any,
    conversations: Sequence[Messages],
    *,
    max_new_tokens: int = 32,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 8,
) -> list[str]:
    """Answers to each conversation (greedy at temperature 0), batched with left padding."""
    torch = require("torch")
    outs: list[str] = []
    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    stop = [t for t in {tok.eos_token_id, end} if isinstance(t, int) and t >= 0]
    for start in range(0, len(conversations), batch_size):
        chunk = [prompt_ids(tok, m) for m in conversations[start : start + batch_size]]
        width = max(len(c) for c in chunk)
        pad = tok.pad_token_id if tok.pad_token_id is not None else stop[0]
        ids = torch.tensor([[pad] * (width - len(c)) + c for c in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in chunk], device=device)
        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "eos_token_id": stop, "pad_token_id": pad}
        if temperature > 0:
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            kwargs.update(do_sample=True, temperature=temperature, top_p=0.95)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        for row in out[:, width:]:
            outs.append(tok.decode(row, skip_special_tokens=True).strip())
    return outs
