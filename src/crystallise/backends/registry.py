"""Backend specs → backends, through one registry that built-ins and plugins share.

A spec is `PREFIX` or `PREFIX:ARG`:

    local                       the default local GGUF (qwen2.5-coder-0.5b)
    local:NAME                  a pulled model, or a path to a .gguf file
    openai:MODEL                any OpenAI-compatible server (CRYSTALLISE_OPENAI_BASE_URL)
    anthropic:MODEL             Claude via the Messages API (extra `anthropic`; ANTHROPIC_API_KEY)
    replay:FIELD                answers from the benchmark record's FIELD
    scripted[:TEXT]             the test double (echoes, or always answers TEXT)

Every module that provides backends has a `register(registry)` function exposed
through the `crystallise.backends` entry-point group; the built-in modules are
registered the same way a third-party plugin is:

    # in a plugin's pyproject.toml
    [project.entry-points."crystallise.backends"]
    mine = "my_plugin:register"

    # my_plugin.py
    def register(registry):
        registry.register("mine", lambda arg, models_dir: MyBackend(arg), help="mine:MODEL")
"""

from __future__ import annotations

import importlib
import importlib.metadata
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from crystallise.backends.base import Backend
from crystallise.backends.catalog import default_models_dir
from crystallise.errors import ConfigError

__all__ = ["BackendFactory", "BackendRegistry", "ENTRY_POINT_GROUP", "get_backend", "load_registry"]

ENTRY_POINT_GROUP = "crystallise.backends"

BackendFactory = Callable[[str | None, Path], Backend]
"""`factory(arg, models_dir) -> Backend`; `arg` is what follows `PREFIX:` (None when absent)."""

# Registered even when crystallise is not installed as a distribution (no entry points).
_BUILTIN_MODULES = (
    "crystallise.backends.anthropic_http",
    "crystallise.backends.local",
    "crystallise.backends.openai_http",
    "crystallise.backends.replay",
    "crystallise.backends.scripted",
)


@dataclass(frozen=True)
class _Entry:
    factory: BackendFactory
    help: str


class BackendRegistry:
    """Maps spec prefixes to backend factories.

    Example:

        >>> from crystallise.backends import BackendRegistry, ScriptedBackend
        >>> reg = BackendRegistry()
        >>> reg.register("fake", lambda arg, models_dir: ScriptedBackend([arg or "hi"]))
        >>> reg.prefixes()
        ['fake']
        >>> reg.create("fake:hello").name
        'scripted'
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def register(self, prefix: str, factory: BackendFactory, *, help: str = "") -> None:
        """Make `prefix` (and `prefix:ARG`) resolve through `factory`; a later registration wins."""
        if not prefix or ":" in prefix or prefix != prefix.strip():
            raise ConfigError(f"invalid backend prefix {prefix!r}: use a plain word such as 'mybackend'")
        self._entries[prefix] = _Entry(factory, help or prefix)

    def prefixes(self) -> list[str]:
        """The registered prefixes, sorted."""
        return sorted(self._entries)

    def describe(self) -> dict[str, str]:
        """Prefix → one-line usage, for `crystallise backends list`-style listings."""
        return {p: self._entries[p].help for p in self.prefixes()}

    def create(self, spec: str, *, models_dir: Path | None = None) -> Backend:
        """Build the backend `spec` names (`PREFIX` or `PREFIX:ARG`)."""
        prefix, sep, arg = spec.strip().partition(":")
        entry = self._entries.get(prefix)
        if entry is None:
            known = ", ".join(self.prefixes()) or "(none)"
            raise ConfigError(
                f"unknown backend {spec!r}: known prefixes are {known} "
                "(e.g. `local`, `local:smollm2-135m`, `openai:gpt-4o-mini`); install a plugin for others"
            )
        resolved_dir = Path(models_dir) if models_dir is not None else default_models_dir()
        return entry.factory(arg if sep and arg else None, resolved_dir)


def _register_module(registry: BackendRegistry, module_name: str) -> None:
    module = importlib.import_module(module_name)
    module.register(registry)


def load_registry() -> BackendRegistry:
    """A registry holding the built-in backends and every installed plugin.

    Plugins come from the `crystallise.backends` entry-point group and load after
    the built-ins, so a plugin may replace a built-in prefix. A plugin that fails to
    load is skipped with a warning naming it, rather than breaking every backend.
    """
    registry = BackendRegistry()
    for module_name in _BUILTIN_MODULES:
        _register_module(registry, module_name)
    builtin_targets = {f"{m}:register" for m in _BUILTIN_MODULES}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.value.replace(" ", "") in builtin_targets:
            continue
        try:
            ep.load()(registry)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the built-ins down with it
            warnings.warn(
                f"backend plugin {ep.name!r} ({ep.value}) failed to load: {exc!r}; "
                "reinstall or uninstall it",
                RuntimeWarning,
                stacklevel=2,
            )
    return registry


def get_backend(
    spec: str, *, models_dir: Path | None = None, registry: BackendRegistry | None = None
) -> Backend:
    """Resolve a backend spec such as `local`, `local:smollm2-135m`, `openai:gpt-4o-mini`.

    `models_dir` defaults to `$CRYSTALLISE_HOME/models` (read now, not at import).
    Pass `registry` to resolve against one you built (tests, embedding apps).

    Example:

        >>> backend = get_backend("scripted:ok")
        >>> from crystallise.backends import CompletionRequest, Message
        >>> backend.complete(CompletionRequest([Message("user", "hi")])).text
        'ok'
    """
    return (registry or load_registry()).create(spec, models_dir=models_dir)
