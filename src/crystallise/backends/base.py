"""The model interface: one required method, `complete`.

A backend turns a `CompletionRequest` (chat messages, optional JSON schema for
structured output) into a `Completion` (text + usage). Parsing and schema repair
live above it (`crystallise.backends.structured`), so every backend gets them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["Backend", "Completion", "CompletionRequest", "Message", "approx_tokens"]


def approx_tokens(text: str) -> int:
    """~4 characters a token: good enough for budgets and reports, and model-independent."""
    return (len(text) + 3) // 4


@dataclass
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass
class CompletionRequest:
    """What to ask a model.

    `schema`: a JSON schema the reply must satisfy (backends that can constrain
    decoding do so; the rest are validated and repaired above them).
    `metadata["record"]`: the benchmark record being answered, which the replay
    backend reads its recorded answer from.
    """

    messages: list[Message]
    schema: dict[str, Any] | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    stop: list[str] | None = None
    seed: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Completion:
    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0


@runtime_checkable
class Backend(Protocol):
    """Anything that can answer a `CompletionRequest`."""

    name: str

    def complete(self, request: CompletionRequest) -> Completion: ...
