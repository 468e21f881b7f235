"""Task artifacts on disk, and a view of the artifact tree with a change set laid over it.

A task is a named, typed LLM function. Everything learned about it is plain text in
the artifact repository:

    tasks/<name>/spec.json       name, description, grade (G0..G5), schemas, metric
    tasks/<name>/prompt.md       instructions (learned by prompt optimisation)
    tasks/<name>/examples.jsonl  verified examples, the few-shot pool (G1)
    tasks/<name>/evals.jsonl     eval cases recorded from traces (G3)
    tasks/<name>/code.py         crystallised program `solve(...)` (G4/G5)
    tasks/<name>/program.json    how the program was made and verified

Whatever is learned from an org's runs lives in that org's namespace (DESIGN.md §5, tenancy
covers learning):

    orgs/<org>/tasks/<name>/...  the same files, learned from org <org>'s runs only
    orgs/<org>/tasks/<name>/spec.json   the org's grade (and learned output schema); name,
                                        description, input schema and metric stay shared

`View` reads that tree as it would be after a change set, without writing anything:
the gate evaluates "new" through a View and "old" through the plain repository. A View
made with `org=` reads the logical paths `tasks/<name>/...` from the org's namespace
(`physical`), so every learner, the lifecycle and the runtime work unchanged on one
namespace; the loop moves its change sets' deltas there (`place`) before gating.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from crystallise.artifacts import ArtifactRepo
from crystallise.errors import ValidationError
from crystallise.types import Delta

__all__ = ["GRADES", "ORG_SPEC_FIELDS", "TaskSpec", "View", "namespace", "task_path", "valid_task_name"]

GRADES = ("G0", "G1", "G2", "G3", "G4", "G5")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
# What an org's namespace may set in a task's spec: how far the task has got *for that org*.
ORG_SPEC_FIELDS = ("grade", "output_schema")


def valid_task_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationError(
            f"task name {name!r} is invalid: use 1-64 lower-case letters, digits, '_' or '-', starting alphanumeric"
        )
    return name


def task_path(name: str, file: str) -> str:
    return f"tasks/{valid_task_name(name)}/{file}"


def namespace(org: str | None) -> str:
    """The folder prefix of what is learned from `org`'s runs ("" for agent level, shared).

    An org id that is not a plain path segment is hashed, so no id can climb out of `orgs/`:

    >>> namespace("acme"), namespace(None), namespace("../x")[:7]
    ('orgs/acme/', '', 'orgs/x-')
    """
    if org is None:
        return ""
    seg = org if _SEGMENT.match(org) else "x-" + hashlib.sha256(org.encode()).hexdigest()[:16]
    return f"orgs/{seg}/"


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
    """Read-only artifact tree = repository files, overlaid with pending artifact deltas.

    With `org`, the task files are the org's namespace: `read("tasks/t/code.py")` reads
    `orgs/<org>/tasks/t/code.py` (nothing falls back to the shared file: the org's program, examples and
    eval cases are its own), and `read("tasks/t/spec.json")` is the shared spec with the org's grade."""

    def __init__(self, read: Callable[[str], str | None], overlay: Mapping[str, str | None] | None = None,
                 *, org: str | None = None) -> None:
        self._read = read
        self.overlay = dict(overlay or {})
        self.org = org

    @classmethod
    def of(cls, repo: ArtifactRepo, deltas: list[Delta] | None = None, *, org: str | None = None) -> View:
        overlay = {d.path: d.after for d in deltas or [] if d.target == "artifact" and d.path}
        return cls(repo.read, overlay, org=org)

    def shared(self) -> View:
        """The agent-level (shared) tree under the same overlay."""
        return View(self._read, self.overlay)

    def for_org(self, org: str | None) -> View:
        """The same tree and overlay, read in `org`'s namespace."""
        return View(self._read, self.overlay, org=org)

    def physical(self, path: str) -> str:
        """Where a logical task path lives for this view's namespace."""
        if self.org is None or not path.startswith("tasks/") or path.startswith(namespace(self.org)):
            return path
        return namespace(self.org) + path

    def _raw(self, path: str) -> str | None:
        if path in self.overlay:
            return self.overlay[path]
        return self._read(path)

    def read(self, path: str) -> str | None:
        if self.org is None or not path.startswith("tasks/"):
            return self._raw(path)
        own = self._raw(self.physical(path))
        if not path.endswith("/spec.json"):
            return own
        shared = self._raw(path)
        if shared is None or own is None:
            return shared  # defined once, for everyone; an org without a grade of its own has the shared one
        data, mine = json.loads(shared), json.loads(own)
        data.update({k: mine[k] for k in ORG_SPEC_FIELDS if k in mine})
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def place(self, deltas: list[Delta]) -> list[Delta]:
        """`deltas` with their task paths moved into this view's namespace (idempotent). A moved delta's
        `before` is the file it replaces there, so the committer's staleness check holds."""
        out = []
        for d in deltas:
            if self.org is None or d.target != "artifact" or not d.path or self.physical(d.path) == d.path:
                out.append(d)
                continue
            path = self.physical(d.path)
            out.append(replace(d, path=path, before=self._read(path)))
        return out

    def spec(self, name: str) -> TaskSpec | None:
        text = self.read(task_path(name, "spec.json"))
        return TaskSpec.from_json(text) if text else None

    def jsonl(self, path: str) -> list[dict[str, Any]]:
        text = self.read(path) or ""
        # split on "\n" only: str.splitlines() also splits at U+2028/U+2029/U+0085 inside a row's strings
        return [json.loads(line) for line in text.split("\n") if line.strip()]


def dump_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows)
