"""The weight layer's heavy dependencies, imported on first use with an error that names the extra.

    torch, transformers, peft = require("torch", "transformers", "peft")

The rest of crystallise never imports these: `crystallise weights export`, manifests, the
gate and the forgetting metrics run without them.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from crystallise.config import ENV_TORCH_THREADS, env
from crystallise.errors import ConfigError

__all__ = ["INSTALL_HINT", "cpu_count", "pick_device", "require", "torch_threads"]

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


def torch_threads() -> int:
    """Threads for torch on the CPU: $CRYSTALLISE_TORCH_THREADS, else the CPUs we may run on — or 1
    when the machine is already busy (load average above the CPU count).

    On a machine shared with other busy processes one thread is much faster than several: torch's
    OpenMP threads spin at every barrier while a sibling is descheduled (measured here on 2 cores at
    load 20: a batch of 8 x 16 generated tokens took 77 s with 2 threads, 9.8 s with 1).
    """
    raw = (env(ENV_TORCH_THREADS) or "").strip()
    if raw:
        try:
            return max(1, int(raw))
        except ValueError:
            raise ConfigError(f"CRYSTALLISE_TORCH_THREADS must be a whole number, got {raw!r}") from None
    n = cpu_count()
    try:
        busy = os.getloadavg()[0] > n
    except OSError:  # pragma: no cover - no load average on this platform
        busy = False
    return 1 if busy else n


def pick_device(device: str | None = None) -> str:
    """`device`, else "cuda" when a GPU is present, else "cpu" (with torch's threads set, see `torch_threads`)."""
    torch = require("torch")
    if device:
        return device
    if torch.cuda.is_available():
        return "cuda"
    if torch.get_num_threads() != torch_threads():
        torch.set_num_threads(torch_threads())
    return "cpu"
