"""The replay backend: answers with an output recorded in the benchmark record.

`crystallise bench` puts the record being answered in `request.metadata["record"]`;
`replay:FIELD` answers with `record[FIELD]`. It turns recorded outputs (another
system's answers, a gold column) into a "model" so they go through the same
scoring and gate as a live one, at no cost.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crystallise.backends.base import Completion, CompletionRequest
from crystallise.errors import ConfigError, ValidationError

if TYPE_CHECKING:
    from crystallise.backends.registry import BackendRegistry

__all__ = ["ReplayBackend", "register"]


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


class ReplayBackend:
    """Answers `request.metadata["record"][field]` (strings as is, dicts/lists as JSON, None as "").

    Example:

        >>> from crystallise.backends import CompletionRequest, Message
        >>> req = CompletionRequest([Message("user", "q")], metadata={"record": {"answer": 42}})
        >>> ReplayBackend("answer").complete(req).text
        '42'
    """

    def __init__(self, field: str) -> None:
        self.field = field
        self.name = f"replay:{field}"

    def complete(self, request: CompletionRequest) -> Completion:
        """Look the answer up in the record; no model runs, so latency and tokens are ~0."""
        start = time.perf_counter()
        record = request.metadata.get("record")
        if record is None:
            raise ValidationError(
                "replay backend needs the benchmark record: it answers from recorded outputs and "
                "can only run inside `crystallise bench`"
            )
        if not isinstance(record, dict):
            raise ValidationError(
                f"replay backend needs the benchmark record as a mapping, got {type(record).__name__}"
            )
        if self.field not in record:
            fields = ", ".join(sorted(map(str, record))) or "(none)"
            raise ValidationError(
                f"the benchmark record has no field {self.field!r}: it has {fields}; "
                f"use replay:FIELD with one of those"
            )
        return Completion(
            text=_as_text(record[self.field]),
            model=self.name,
            latency_ms=(time.perf_counter() - start) * 1000,
        )


def register(registry: BackendRegistry) -> None:
    """Entry point: `replay:FIELD`."""

    def factory(arg: str | None, models_dir: Path) -> ReplayBackend:
        if not arg:
            raise ConfigError(
                "replay backend needs a field to answer from: use replay:FIELD (e.g. replay:answer)"
            )
        return ReplayBackend(arg)

    registry.register("replay", factory, help="replay:FIELD — answer with the benchmark record's FIELD")
