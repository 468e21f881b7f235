"""What a hosted model accepts, learned from its 400s: per model, and never for good.

APIs drift: reasoning models (o-series, gpt-5*) refuse `temperature` and `max_tokens`, older
OpenAI-compatible servers refuse `max_completion_tokens` or `response_format`, and a schema the
server cannot compile is a 400 that says `response_format` without meaning "no structured output".
A backend asks `read_400` what a rejection was about, adapts the one request, and notes in
`ParamMemory` what to leave out for that model next time. A note expires (`ttl_s`, 15 minutes
by default): a server that is upgraded, or a 400 that was about something else, costs one retried
request later, not structured output forever.

    >>> read_400("Unsupported parameter: 'max_tokens' is not supported with this model. "
    ...          "Use 'max_completion_tokens' instead.", "max_tokens")
    'max_completion_tokens'
    >>> read_400("Invalid schema for response_format 'output': 'required' is required", "response_format")
    'schema_invalid'
    >>> read_400("response_format json_schema is not supported by this server", None)
    'schema_unsupported'
    >>> read_400("messages: too long", None) is None
    True
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

__all__ = ["ParamMemory", "is_reasoning_model", "read_400"]

_UNSUPPORTED = re.compile(r"unsupported|not supported|unknown|unrecogni[sz]ed|not allowed|extra (inputs|fields)|"
                          r"not permitted|does not support|no such", re.IGNORECASE)
_REASONING = re.compile(r"^(o\d|gpt-5)", re.IGNORECASE)


def is_reasoning_model(model: str) -> bool:
    """o1/o3/o4-mini/gpt-5*: models that take `max_completion_tokens` and only the default temperature.

    >>> is_reasoning_model("o3-mini"), is_reasoning_model("gpt-5.1"), is_reasoning_model("gpt-4o-mini")
    (True, True, False)
    """
    return bool(_REASONING.match(model.rsplit("/", 1)[-1]))


def read_400(message: str, param: str | None) -> str | None:
    """What a 400 was about, as an adaptation the caller can make, or None (a real error).

    `temperature`                 leave temperature out
    `max_completion_tokens`       send max_completion_tokens, not max_tokens
    `max_tokens`                  send max_tokens, not max_completion_tokens (an older server)
    `schema_unsupported`          the server has no structured output: leave the schema out
    `schema_invalid`              the server refused *this* schema: leave it out of this request only
    """
    text = f"{param or ''} {message}".lower()
    if "temperature" in text:
        return "temperature"
    if "max_tokens" in text and "max_completion_tokens" in text:
        # "'max_tokens' is not supported ... use 'max_completion_tokens'" -> the new name; the reverse -> old
        return "max_completion_tokens" if (param or "") == "max_tokens" or text.find("max_tokens") < text.find(
            "max_completion_tokens") else "max_tokens"
    if "max_completion_tokens" in text and _UNSUPPORTED.search(text):
        return "max_tokens"
    if any(w in text for w in ("response_format", "json_schema", "output_config", "output_format", "schema")):
        return "schema_unsupported" if _UNSUPPORTED.search(text) else "schema_invalid"
    return None


class ParamMemory:
    """Per model: which adaptations `read_400` found, each until it expires.

    >>> t = [0.0]
    >>> mem = ParamMemory(ttl_s=60, clock=lambda: t[0])
    >>> mem.note("gpt-x", "schema_unsupported")
    >>> mem.has("gpt-x", "schema_unsupported"), mem.has("gpt-y", "schema_unsupported")
    (True, False)
    >>> t[0] = 61.0; mem.has("gpt-x", "schema_unsupported")
    False
    """

    def __init__(self, ttl_s: float = 900.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self._clock = ttl_s, clock
        self._notes: dict[tuple[str, str], float] = {}

    def note(self, model: str, what: str) -> None:
        self._notes[(model, what)] = self._clock() + self.ttl_s

    def has(self, model: str, what: str) -> bool:
        until = self._notes.get((model, what))
        if until is None:
            return False
        if self._clock() >= until:
            del self._notes[(model, what)]
            return False
        return True
