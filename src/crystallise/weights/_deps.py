"""The weight layer's heavy dependencies, imported on first use with an error that names the extra.

    torch, transformers, peft = require("torch", "transformers", "peft")

The rest of crystallise never imports these: `crystallise weights export`, manifests, the
gate and the forgetting metrics run without them.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from crystallise.errors import ConfigError

__all__ = ["INSTALL_HINT", "cpu_count", "require", "pick_device"]

INSTALL_HINT = "pip install 'crystallise[weights]' (torch==2.13.0 CPU build, transformers, peft, gguf)"


def require(*names: str) -> Any:
    """Import `names` (module names); one module, or a tuple of them. ConfigError naming the extra if missing."""
    mods = []
    for name in names:
        try:
            mods.append(importlib.import_module(name))
        except ImportError as exc:
            raise ConfigError(f"the weight layer needs {name}: {INSTALL_HINT} ({exc})") from None
    return mods[0] if len(mods) == 1 else tuple(mods)


def cpu_count() -> int:
    """CPUs this process may run on (a container's quota, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def pick_device(device: str | None = None) -> str:
    """`device`, else "cuda" when a GPU is present, else "cpu" (with torch's threads set to the CPUs we have)."""
    torch = require("torch")
    if device:
        return device
    if torch.cuda.is_available():
        return "cuda"
    if torch.get_num_threads() != cpu_count():
        torch.set_num_threads(cpu_count())
    return "cpu"
