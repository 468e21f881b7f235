"""Reading an OpenAI chat stream as it passes through, without changing a byte of it.

    rec = SseRecorder(t0=time.perf_counter())
    for event, done in rec.feed(b'data: {"choices":[{"delta":{"content":"4"}}]}\\n\\ndata: [DONE]\\n\\n'):
        ...                         # event: the exact bytes of one event, separator included
    rec.output, rec.finish, rec.usage, rec.ttft_ms

Events are split on the blank line that ends them (`\\n\\n`, `\\r\\n\\r\\n` or `\\r\\r`, as the
SSE specification allows); `done` is True for the `data: [DONE]` event, which the proxy holds
back until the trace is written. A `data:` line that is not JSON is passed on and ignored.

    >>> rec = SseRecorder(0.0)
    >>> [d for _, d in rec.feed(b'data: {"model":"m","choices":[{"index":0,"delta":{"content":"hi"}}]}\\n\\n')]
    [False]
    >>> rec.output, rec.model
    ('hi', 'm')
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

__all__ = ["SseRecorder"]

_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class SseRecorder:
    """Accumulates the first choice's text, tool calls, finish reason, usage and model of a stream."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self._buf = b""
        self._parts: list[str] = []
        self._tools: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.error: str | None = None
        self.ttft_ms: float | None = None
        self.done = False

    @property
    def output(self) -> Any:
        text = "".join(self._parts)
        if not text and self._tools:
            return {"tool_calls": [self._tools[i] for i in sorted(self._tools)]}
        return text

    def feed(self, chunk: bytes) -> list[tuple[bytes, bool]]:
        """The complete events in the bytes seen so far, each with whether it is `[DONE]`."""
        self._buf += chunk
        events: list[tuple[bytes, bool]] = []
        while True:
            m = _END.search(self._buf)
            if m is None:
                return events
            raw, self._buf = self._buf[: m.end()], self._buf[m.end():]
            events.append((raw, self._read(raw)))

    def flush(self) -> bytes:
        """Whatever trailing bytes never ended an event (read once more, then passed on)."""
        tail, self._buf = self._buf, b""
        if tail.strip():
            self._read(tail)
        return tail

    def _read(self, raw: bytes) -> bool:
        data = [line[5:].lstrip() for line in raw.splitlines() if line.startswith(b"data:")]
        if not data:
            return False
        payload = b"\n".join(data)
        if payload.strip() == b"[DONE]":
            self.done = True
            return True
        try:
            doc = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return False
        if not isinstance(doc, dict):
            return False
        if isinstance(doc.get("error"), dict):
            self.error = str(doc["error"].get("message") or doc["error"])
        self.model = doc.get("model") or self.model
        if isinstance(doc.get("usage"), dict):
            self.usage = doc["usage"]
        for choice in doc.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                if self.ttft_ms is None:
                    self.ttft_ms = round((time.perf_counter() - self.t0) * 1000, 3)
                self._parts.append(content)
            for call in delta.get("tool_calls") or []:
                if isinstance(call, dict):
                    self._merge_tool(call)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return False

    def _merge_tool(self, call: dict[str, Any]) -> None:
        """Tool calls stream as fragments keyed by index: name once, arguments in pieces."""
        slot = self._tools.setdefault(int(call.get("index", 0)), {"id": None, "type": "function",
                                                                   "function": {"name": "", "arguments": ""}})
        slot["id"] = call.get("id") or slot["id"]
        fn = call.get("function") or {}
        slot["function"]["name"] += fn.get("name") or ""
        slot["function"]["arguments"] += fn.get("arguments") or ""
