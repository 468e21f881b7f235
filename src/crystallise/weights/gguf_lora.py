"""PEFT LoRA adapter -> GGUF LoRA adapter, so llama.cpp serves it on the quantised base.

What llama.cpp's own `convert_lora_to_gguf.py` does for a llama-architecture model, written
with the `gguf` package (no third-party script is called or shipped):

    adapter_model.safetensors                         adapter.gguf
    base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight  ->  blk.{i}.attn_q.weight.lora_a
    ...                                           .lora_B.weight  ->  blk.{i}.attn_q.weight.lora_b
    metadata: general.architecture=llama, general.type=adapter, adapter.type=lora, adapter.lora.alpha

Two details matter:
* llama.cpp stores q_proj and k_proj with their rows permuted for its RoPE layout (the base GGUF
  was converted that way), so lora_B of q/k gets the same row permutation: W' = P·W = (P·B)·A.
* lora_a keeps PEFT's shape (r, in) and lora_b (out, r); llama.cpp scales by alpha / r.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from crystallise.errors import ValidationError
from crystallise.weights._deps import require

__all__ = ["peft_to_gguf"]

_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_KEY = re.compile(r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(self_attn\.\w+|mlp\.\w+)\.lora_([AB])\.weight$")


def _permute(w: Any, n_head: int) -> Any:
    """llama.cpp's q/k row permutation (convert_hf_to_gguf LlamaModel.permute) on rows of `w`."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def peft_to_gguf(adapter_dir: Path, base_config: dict[str, Any], out: Path) -> Path:
    """Write `out` (a GGUF LoRA) from the PEFT adapter in `adapter_dir`; `base_config` is the base's config.json."""
    gguf, safetensors_numpy = require("gguf", "safetensors.numpy")
    adapter_dir = Path(adapter_dir)
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ValidationError(f"only LoRA adapters convert to GGUF, not {cfg.get('peft_type')}")
    if base_config.get("model_type") != "llama":
        raise ValidationError(
            f"GGUF LoRA conversion supports llama-architecture bases, not {base_config.get('model_type')}")
    tensors = safetensors_numpy.load_file(str(adapter_dir / "adapter_model.safetensors"))
    n_head = int(base_config["num_attention_heads"])
    n_kv = int(base_config.get("num_key_value_heads") or n_head)
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(cfg["lora_alpha"]))
    written = 0
    for key in sorted(tensors):
        m = _KEY.match(key)
        if not m:
            raise ValidationError(f"cannot map adapter tensor {key!r} to llama.cpp (only attention/MLP projections)")
        layer, module, ab = m.groups()
        if module not in _NAMES:
            raise ValidationError(f"cannot map adapter module {module!r} to llama.cpp")
        w = tensors[key].astype("float32")
        if ab == "B" and module == "self_attn.q_proj":
            w = _permute(w, n_head)
        elif ab == "B" and module == "self_attn.k_proj":
            w = _permute(w, n_kv)
        writer.add_tensor(f"blk.{layer}.{_NAMES[module]}.weight.lora_{ab.lower()}", w)
        written += 1
    if not written:
        raise ValidationError(f"{adapter_dir} holds no LoRA tensors")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
