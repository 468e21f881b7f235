"""What `forget --user` takes out of the task files: a pure plan over the artifact tree.

    files = plan(read, paths, trace_ids, strings, derived)    # path -> new text (None: delete)

A deleted user's runs reach task files three ways, and each is undone:

    examples.jsonl, evals.jsonl,     rows whose trace (`trace`, `source_trace`, `id`) is one of the
    lifecycle.jsonl                  user's, or that quote one of the user's strings, are dropped
    program.json, code.py,           a program that quotes the user's strings, or was learned from the
    hybrid.json                      user's runs (`derived`: the namespaces whose program a change set
                                     with the user's traces in its provenance wrote), is *retired*: the
                                     files go and the namespace's grade drops below G4, so the LLM
                                     answers until the loop learns a program again without the user
    prompt.md, schema.json           removed when they quote the user's strings (the spec's text serves)

`strings` are the user's inputs, answers and corrections (`user_strings`), at least
`MIN_CHARS` long: a "yes" or a "2.0" is nobody's personal data, and scrubbing it would take
every other user's rows with it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from crystallise.harness.spec import TaskSpec
from crystallise.types import Trace

__all__ = ["MIN_CHARS", "PROGRAM_FILES", "plan", "user_strings"]

MIN_CHARS = 6
PROGRAM_FILES = ("program.json", "code.py", "hybrid.json")
_ROWS = ("examples.jsonl", "evals.jsonl", "lifecycle.jsonl")
_TEXTS = ("prompt.md", "schema.json")


def _leaves(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)


def user_strings(traces: Sequence[Trace]) -> list[str]:
    """The strings a user's runs carried: inputs, outputs, span inputs and outputs, feedback."""
    found: set[str] = set()
    for t in traces:
        values: list[Any] = [t.input, t.output]
        values += [v for s in t.spans for v in (s.input, s.output)]
        values += [v for f in t.feedback for v in (f.correction, f.comment)]
        for v in values:
            found.update(s.strip() for s in _leaves(v) if len(s.strip()) >= MIN_CHARS)
            if v is not None and not isinstance(v, str):
                dumped = json.dumps(v, ensure_ascii=False, sort_keys=True)
                if len(dumped) >= MIN_CHARS:
                    found.add(dumped)
    return sorted(found, key=lambda s: (-len(s), s))


def _quotes(text: str, strings: Sequence[str]) -> bool:
    return any(s in text or json.dumps(s, ensure_ascii=False)[1:-1] in text for s in strings)


def _row_is_users(line: str, trace_ids: set[str], strings: Sequence[str]) -> bool:
    try:
        row = json.loads(line)
    except ValueError:
        return _quotes(line, strings)
    if isinstance(row, dict) and any(row.get(k) in trace_ids for k in ("trace", "source_trace", "id")
                                     if isinstance(row.get(k), str)):
        return True
    return _quotes(line, strings)


def plan(read: Callable[[str], str | None], paths: Sequence[str], trace_ids: set[str], strings: Sequence[str],
         derived: set[str] = frozenset()) -> dict[str, str | None]:  # type: ignore[assignment]
    """The files to write (None: delete) so that no task file holds the user's rows or strings.

    `paths` are the tree's files; `derived` the task folders (`tasks/t/`, `orgs/o/tasks/t/`) whose
    program was learned from the user's runs."""
    files: dict[str, str | None] = {}
    retire: set[str] = set(derived)
    for path in paths:
        folder, _, name = path.rpartition("/")
        folder += "/"
        text = read(path)
        if text is None:
            continue
        if name in _ROWS:
            kept = [ln for ln in text.splitlines(keepends=True) if ln.strip()
                    and not _row_is_users(ln, trace_ids, strings)]
            if len(kept) != len([ln for ln in text.splitlines() if ln.strip()]):
                files[path] = "".join(kept) or None
        elif name in PROGRAM_FILES and _quotes(text, strings):
            retire.add(folder)
        elif name in _TEXTS and _quotes(text, strings):
            files[path] = None
    for folder in sorted(retire):
        for name in PROGRAM_FILES:
            if folder + name in paths:
                files[folder + name] = None
        spec_text = read(folder + "spec.json")
        if spec_text is not None:
            spec = TaskSpec.from_json(spec_text)
            if spec.grade in ("G4", "G5"):
                examples = files.get(folder + "examples.jsonl", read(folder + "examples.jsonl"))
                grade = "G1" if examples else ("G2" if not spec.text_output else "G0")
                files[folder + "spec.json"] = TaskSpec(**{**spec.__dict__, "grade": grade}).to_json()
        elif folder.startswith("orgs/"):  # an org without a spec of its own has the shared grade: give it one
            shared = read(folder.split("/", 2)[2] + "spec.json")
            if shared is not None:
                spec = TaskSpec.from_json(shared)
                files[folder + "spec.json"] = TaskSpec(**{**spec.__dict__, "grade": "G0"}).to_json()
    return files
