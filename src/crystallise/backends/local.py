"""The local GGUF backend: llama-cpp-python on the CPU, no network.

    spec `local[:NAME]` ─► catalog.model_path(NAME) ─► Llama (loaded once per path, cached)
                                                          │ a lock per model: one completion at a time
    request ─► create_chat_completion(temperature, max_tokens, stop, seed,
                                      response_format={"type": "json_object", "schema": ...})
                                      # the schema becomes a llama.cpp grammar: decoding cannot leave it

Context window: a prompt that does not fit in `n_ctx` (4096 by default) is NOT
truncated — dropping the middle of a prompt silently changes what the model is
asked, which would make evals lie. It raises `ValidationError` with the token
counts and the fix instead. When the prompt fits but prompt + max_tokens does not,
llama.cpp shortens the generation to what is left.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crystallise.config import ENV_LLAMA_EXTRA_BUFTS, env
from crystallise.backends import catalog
from crystallise.backends.base import Completion, CompletionRequest
from crystallise.errors import BackendError, ConfigError, ValidationError

if TYPE_CHECKING:
    from crystallise.backends.registry import BackendRegistry

__all__ = ["DEFAULT_N_CTX", "LocalBackend", "load_llama", "register"]

DEFAULT_N_CTX = 4096
_INSTALL_HINT = "the local backend needs llama-cpp-python: pip install 'crystallise[local]'"

# Loading a GGUF costs seconds; keep one Llama per (path, n_ctx, LoRA) for the process (`load_llama`).
_MODELS: dict[tuple[str, int, str | None], tuple[Any, threading.Lock]] = {}
_MODELS_LOCK = threading.Lock()


def _close_all() -> None:
    """Free cached models before interpreter shutdown tears llama_cpp's globals down.

    Left to `Llama.__del__` at exit, freeing fails with a traceback on stderr.
    """
    with _MODELS_LOCK:
        entries = list(_MODELS.values())
        _MODELS.clear()
    for llm, _lock in entries:
        with contextlib.suppress(Exception):
            llm.close()


atexit.register(_close_all)


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise ConfigError(f"{_INSTALL_HINT} ({exc})") from None
    return llama_cpp


def _silence() -> None:
    """Drop llama.cpp's stderr chatter: its log callback prints through this logger."""
    logging.getLogger("llama-cpp-python").setLevel(logging.CRITICAL + 1)


def _cpu_count() -> int:
    """CPUs this process may run on (a container's quota, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _extra_bufts_wanted() -> bool:
    """Whether llama.cpp may use its extra CPU buffer types (AMX, weight repacking).

    ggml's AMX kernels die with a general-protection fault on some virtual machines
    whose CPUs advertise AMX (seen on Firecracker VMs with Xeon hosts): any prompt
    longer than one token kills the process. So on a CPU that advertises AMX the
    extra buffer types are off (costs ~20% decode speed there); elsewhere they stay
    on. CRYSTALLISE_LLAMA_EXTRA_BUFTS=1 / 0 forces either way.
    """
    forced = (env(ENV_LLAMA_EXTRA_BUFTS) or "").strip().lower()
    if forced in {"1", "true", "yes", "on"}:
        return True
    if forced in {"0", "false", "no", "off"}:
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return "amx_tile" not in line.split()
    except OSError:
        pass
    return True


@contextlib.contextmanager
def _model_params(llama_cpp: Any, use_extra_bufts: bool) -> Iterator[None]:
    """Set `use_extra_bufts` on the params `Llama()` builds (it has no argument for it).

    Held under `_MODELS_LOCK`, and only while one model loads.
    """
    lowlevel = llama_cpp.llama_cpp
    original = lowlevel.llama_model_default_params

    def patched() -> Any:
        params = original()
        if hasattr(params, "use_extra_bufts"):
            params.use_extra_bufts = use_extra_bufts
        return params

    lowlevel.llama_model_default_params = patched
    try:
        yield
    finally:
        lowlevel.llama_model_default_params = original


def load_llama(path: Path, *, n_ctx: int = DEFAULT_N_CTX, seed: int = 0,
               lora: Path | None = None) -> tuple[Any, threading.Lock]:
    """The one model loader: a llama.cpp `Llama` for the GGUF at `path` (with the GGUF LoRA `lora`
    applied, if given), loaded once per (path, n_ctx, lora) for the process, and the lock that
    serialises its completions.

        llm, lock = load_llama(catalog.model_path("smollm2-135m"))
        with lock:
            llm.create_chat_completion(messages=[{"role": "user", "content": "hi"}])

    The local backend and the adapter serving of `weights/serve.py` share this cache.
    """
    key = (str(path.resolve()), n_ctx, str(lora.resolve()) if lora is not None else None)
    with _MODELS_LOCK:
        cached = _MODELS.get(key)
        if cached is not None:
            return cached
        llama_cpp = _import_llama()
        kwargs: dict[str, Any] = {"model_path": str(path), "n_ctx": n_ctx, "n_threads": _cpu_count(),
                                  "seed": seed, "verbose": False}
        if lora is not None:
            kwargs["lora_path"] = str(lora)
        try:
            with _model_params(llama_cpp, _extra_bufts_wanted()):
                llm = llama_cpp.Llama(**kwargs)
        except (ValueError, RuntimeError, OSError) as exc:
            if lora is not None:
                raise BackendError(f"llama.cpp could not load {path} with adapter {lora}: {exc}") from exc
            raise BackendError(
                f"llama.cpp could not load {path} ({exc}): the file may be damaged — delete it and "
                f"run `crystallise models pull {path.stem}` again"
            ) from exc
        finally:
            _silence()
        entry = (llm, threading.Lock())
        _MODELS[key] = entry
        return entry


class LocalBackend:
    """Runs a GGUF model in-process with llama-cpp-python.

    The model loads on the first `complete` (seconds) and stays cached for the
    process, shared by every `LocalBackend` on the same file.

    Example:

        >>> backend = LocalBackend(Path(".crystallise/models/smollm2-135m.gguf"))  # doctest: +SKIP
        >>> from crystallise.backends import CompletionRequest, Message
        >>> backend.complete(CompletionRequest([Message("user", "Say hi")])).text   # doctest: +SKIP
        'Hi! How can I help you today?'
    """

    def __init__(
        self,
        model_path: Path,
        *,
        name: str | None = None,
        n_ctx: int = DEFAULT_N_CTX,
        seed: int = 0,
    ) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ConfigError(
                f"model file {self.model_path} does not exist: run `crystallise models pull "
                f"{self.model_path.stem}` or pass the path of a .gguf file"
            )
        self.model = name or self.model_path.stem
        self.name = f"local:{self.model}"
        self.n_ctx = n_ctx
        self.seed = seed

    def complete(self, request: CompletionRequest) -> Completion:
        """Generate one chat completion; the schema, when given, constrains decoding."""
        llm, lock = load_llama(self.model_path, n_ctx=self.n_ctx, seed=self.seed)
        kwargs: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "stop": list(request.stop or []),
            "seed": request.seed if request.seed is not None else self.seed,
        }
        if request.schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": request.schema}
        start = time.perf_counter()
        with lock:
            try:
                response = llm.create_chat_completion(**kwargs)
            except ValueError as exc:
                if "exceed context window" in str(exc):
                    raise ValidationError(
                        f"the prompt does not fit {self.name}'s context window: {exc}. Shorten the "
                        "prompt (fewer examples or context items), or use a model with a larger window"
                    ) from None
                raise BackendError(f"{self.name} failed: {exc}") from exc
            except RuntimeError as exc:
                raise BackendError(f"{self.name} failed inside llama.cpp: {exc}") from exc
        latency_ms = (time.perf_counter() - start) * 1000
        choice = response["choices"][0]
        usage = response.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            model=self.model,
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            latency_ms=latency_ms,
        )


def register(registry: BackendRegistry) -> None:
    """Entry point: `local` (the default model) and `local:NAME` (a pulled model or a .gguf path)."""

    def factory(arg: str | None, models_dir: Path) -> LocalBackend:
        name = arg or catalog.DEFAULT_MODEL
        path = catalog.model_path(name, models_dir)
        if _llama_missing():
            raise ConfigError(_INSTALL_HINT)
        return LocalBackend(path, name=path.stem if name.endswith(".gguf") else name)

    usage = f"local[:NAME] — a pulled GGUF model (default {catalog.DEFAULT_MODEL})"
    registry.register("local", factory, help=usage)


def _llama_missing() -> bool:
    return importlib.util.find_spec("llama_cpp") is None
