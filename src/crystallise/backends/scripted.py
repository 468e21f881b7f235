"""A scripted backend: the test double shipped with the library.

Like httpx's `MockTransport`, it lets users test code that calls a model without
a model: give it the replies in order, or a function of the request, and assert
on the `requests` it recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from crystallise.backends.base import Completion, CompletionRequest
from crystallise.errors import BackendError

if TYPE_CHECKING:
    from crystallise.backends.registry import BackendRegistry

__all__ = ["ScriptedBackend", "register"]


class ScriptedBackend:
    """Answers from a script instead of a model.

    `replies` may be a list (answered in order; one more call is a `BackendError`
    saying how many were scripted), a callable `request -> str`, or None (echo the
    last user message). Every request is kept in `requests`.

    Example:

        >>> from crystallise.backends import CompletionRequest, Message
        >>> fake = ScriptedBackend(['{"a": 1}'])
        >>> fake.complete(CompletionRequest([Message("user", "give me a")])).text
        '{"a": 1}'
        >>> fake.requests[0].messages[0].content
        'give me a'
    """

    def __init__(
        self,
        replies: list[str] | Callable[[CompletionRequest], str] | None = None,
        name: str = "scripted",
    ) -> None:
        self.name = name
        self.requests: list[CompletionRequest] = []
        self._replies = list(replies) if isinstance(replies, (list, tuple)) else replies
        self._next = 0

    def complete(self, request: CompletionRequest) -> Completion:
        """Record `request` and answer it from the script."""
        self.requests.append(request)
        text = self._reply(request)
        return Completion(
            text=text,
            model=self.name,
            prompt_tokens=sum(len(m.content.split()) for m in request.messages),
            completion_tokens=len(text.split()),
            latency_ms=0.0,
        )

    def _reply(self, request: CompletionRequest) -> str:
        if self._replies is None:
            users = [m.content for m in request.messages if m.role == "user"]
            return users[-1] if users else ""
        if callable(self._replies):
            return str(self._replies(request))
        if self._next >= len(self._replies):
            raise BackendError(
                f"{self.name}: script exhausted — {len(self._replies)} repl"
                f"{'y was' if len(self._replies) == 1 else 'ies were'} scripted and call "
                f"{self._next + 1} asked for another; add replies to the ScriptedBackend"
            )
        reply = self._replies[self._next]
        self._next += 1
        return reply


def register(registry: BackendRegistry) -> None:
    """Entry point: `scripted` echoes the last user message, `scripted:TEXT` always answers TEXT."""

    def factory(arg: str | None, models_dir: Path) -> ScriptedBackend:
        if arg is None:
            return ScriptedBackend()
        return ScriptedBackend(lambda _request: arg, name="scripted")

    registry.register("scripted", factory, help="scripted[:TEXT] — test double (echo, or always TEXT)")
