"""Model backends: one interface, many ways to answer.

    get_backend("local")                 the default offline GGUF (`crystallise models pull` first)
    get_backend("local:smollm2-135m")    a named pulled model
    get_backend("openai:gpt-4o-mini")    any OpenAI-compatible server
    get_backend("replay:answer")         recorded answers, inside `crystallise bench`
    ScriptedBackend([...])               the test double

Structured output (schema validation + one repair) sits above every backend in
`complete_json`, so each backend only has to turn messages into text.

Example:

    >>> from crystallise.backends import CompletionRequest, Message, ScriptedBackend, complete_json
    >>> fake = ScriptedBackend(['```json\\n{"ok": true}\\n```'])
    >>> complete_json(fake, CompletionRequest([Message("user", "ok?")]), {"type": "object"})[0]
    {'ok': True}
"""

from __future__ import annotations

from crystallise.backends.base import Backend, Completion, CompletionRequest, Message
from crystallise.backends.catalog import DEFAULT_MODEL, default_models_dir
from crystallise.backends.registry import BackendFactory, BackendRegistry, get_backend, load_registry
from crystallise.backends.replay import ReplayBackend
from crystallise.backends.scripted import ScriptedBackend
from crystallise.backends.structured import complete_json, complete_text, extract_json

__all__ = [
    "Backend",
    "BackendFactory",
    "BackendRegistry",
    "Completion",
    "CompletionRequest",
    "DEFAULT_MODEL",
    "LocalBackend",
    "Message",
    "OpenAIBackend",
    "ReplayBackend",
    "ScriptedBackend",
    "complete_json",
    "complete_text",
    "default_models_dir",
    "extract_json",
    "get_backend",
    "load_registry",
]


def __getattr__(name: str) -> object:
    """`LocalBackend` and `OpenAIBackend` load on first use (their SDKs are slow to import)."""
    if name == "LocalBackend":
        from crystallise.backends.local import LocalBackend

        return LocalBackend
    if name == "OpenAIBackend":
        from crystallise.backends.openai_http import OpenAIBackend

        return OpenAIBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
