"""Task artifacts on disk, and a view of the artifact tree with a change set laid over it.

A task is a named, typed LLM function. Everything learned about it is plain text in
the artifact repository:

    tasks/<name>/spec.json       name, description, grade (G0..G5), schemas, metric
    tasks/<name>/prompt.md       instructions (learned by prompt optimisation)
    tasks/<name>/examples.jsonl  verified examples, the few-shot pool (G1)
    tasks/<name>/evals.jsonl     eval cases recorded from traces (G3)
    tasks/<name>/code.py         crystallised program `solve(...)` (G4/G5)
    tasks/<name>/program.json    how the program was made and verified

`View` reads that tree as it would be after a change set, without writing anything:
the gate evaluates "new" through a View and "old" through the plain repository.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from crystallise.artifacts import ArtifactRepo
from crystallise.errors import ValidationError
from crystallise.types import Delta

__all__ = ["GRADES", "TaskSpec", "View", "task_path", "valid_task_name"]

GRADES = ("G0", "G1", "G2", "G3", "G4", "G5")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


def valid_task_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationError(
            f"task name {name!r} is invalid: use 1-64 lower-case letters, digits, '_' or '-', starting alphanumeric"
        )
    return name


def task_path(name: str, file: str) -> str:
    return f"tasks/{valid_task_name(name)}/{file}"


@dataclass
class TaskSpec:
    """What a task is: the contract every grade of it must keep."""

    name: str
    description: str = ""
    grade: str = "G0"
    input_schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    output_schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    metric: str = "exact"  # how answers are checked against ground truth: exact | numeric
    max_tokens: int = 64

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> TaskSpec:
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def text_output(self) -> bool:
        return self.output_schema.get("type") == "string"


class View:
    """Read-only artifact tree = repository files, overlaid with pending artifact deltas."""

    def __init__(self, read: Callable[[str], str | None], overlay: Mapping[str, str | None] | None = None) -> None:
        self._read = read
        self.overlay = dict(overlay or {})

    @classmethod
    def of(cls, repo: ArtifactRepo, deltas: list[Delta] | None = None) -> View:
        overlay = {d.path: d.after for d in deltas or [] if d.target == "artifact" and d.path}
        return cls(repo.read, overlay)

    def read(self, path: str) -> str | None:
        if path in self.overlay:
            return self.overlay[path]
        return self._read(path)

    def spec(self, name: str) -> TaskSpec | None:
        text = self.read(task_path(name, "spec.json"))
        return TaskSpec.from_json(text) if text else None

    def jsonl(self, path: str) -> list[dict[str, Any]]:
        text = self.read(path) or ""
        # split on "\n" only: str.splitlines() also splits at U+2028/U+2029/U+0085 inside a row's strings
        return [json.loads(line) for line in text.split("\n") if line.strip()]


def dump_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows)
