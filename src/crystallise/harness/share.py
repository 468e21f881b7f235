"""Sharing what orgs learned: agent-level task files by an explicit rule, never by default.

An org's task files are its own (`orgs/<org>/tasks/<name>/`, harness/spec.py). What becomes shared
(`tasks/<name>/`, served to every org after its own) is proposed only when **k distinct orgs**
learned it independently, and then only for review (engine/share.py saves it as `needs_review`):

    examples   an (input, output) pair in the examples of >= k orgs joins the shared pool, without
               the org tags or trace ids that said whose run it was
    program    the same program tree (canonical JSON) learned by >= k orgs becomes the shared program;
               the shared grade becomes G4 (the loop's lifecycle then takes it from there)

Eval cases are never shared: each namespace is gated on its own cases.

    >>> rows = {"a": [{"input": "x", "output": "1", "org": "a"}], "b": [{"input": "x", "output": "1", "org": "b"}]}
    >>> agreed_examples(rows, k=2)
    [{'input': 'x', 'output': '1'}]
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from crystallise.harness.spec import TaskSpec, View, dump_jsonl, task_path
from crystallise.types import Delta

__all__ = ["agreed_examples", "agreed_program", "plan_share"]


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def agreed_examples(rows_by_org: Mapping[str, list[dict[str, Any]]], k: int) -> list[dict[str, Any]]:
    """Examples whose (input, output) at least `k` orgs hold, stripped of whose run they were."""
    orgs: dict[str, set[str]] = {}
    first: dict[str, dict[str, Any]] = {}
    for org, rows in rows_by_org.items():
        for row in rows:
            key = _key([row.get("input"), row.get("output")])
            orgs.setdefault(key, set()).add(org)
            first.setdefault(key, {"input": row.get("input"), "output": row.get("output")})
    return [first[key] for key in sorted(first) if len(orgs[key]) >= k]


def agreed_program(programs_by_org: Mapping[str, str | None], k: int) -> str | None:
    """The program.json text whose program tree at least `k` orgs hold (the first such), else None."""
    orgs: dict[str, set[str]] = {}
    text_of: dict[str, str] = {}
    for org, text in programs_by_org.items():
        try:
            tree = json.loads(text).get("program") if text else None
        except (ValueError, AttributeError):
            continue
        if tree is None:
            continue
        key = _key(tree)
        orgs.setdefault(key, set()).add(org)
        text_of.setdefault(key, text)  # type: ignore[arg-type]
    agreed = sorted(key for key, who in orgs.items() if len(who) >= k)
    return text_of[agreed[0]] if agreed else None


def plan_share(view: View, name: str, orgs: list[str], k: int) -> tuple[list[Delta], dict[str, Any]]:
    """Deltas that put what >= k of `orgs` agree on into the shared files of task `name`, and the evidence."""
    shared = view.shared()
    deltas: list[Delta] = []
    evidence: dict[str, Any] = {"task": name, "orgs": len(orgs), "k": k}
    per_org = {org: view.for_org(org) for org in orgs}
    rows = agreed_examples({o: v.jsonl(task_path(name, "examples.jsonl")) for o, v in per_org.items()}, k)
    path = task_path(name, "examples.jsonl")
    have = {_key([r.get("input"), r.get("output")]) for r in shared.jsonl(path)}
    new = [r for r in rows if _key([r["input"], r["output"]]) not in have]
    if new:
        before = shared.read(path)
        deltas.append(Delta(op="set", target="artifact", path=path, before=before,
                            after=(before or "") + dump_jsonl(new), reason=f"+{len(new)} examples {k}+ orgs agree on"))
        evidence["examples"] = len(new)
    program = agreed_program({o: v.read(task_path(name, "program.json")) for o, v in per_org.items()}, k)
    if program is not None and program != shared.read(task_path(name, "program.json")):
        owner = next(o for o, v in per_org.items() if v.read(task_path(name, "program.json")) == program)
        for file in ("program.json", "code.py", "hybrid.json"):
            after = per_org[owner].read(task_path(name, file))
            p = task_path(name, file)
            if after != shared.read(p):
                deltas.append(Delta(op="set", target="artifact", path=p, before=shared.read(p), after=after,
                                    reason=f"a program {k}+ orgs learned independently"))
        spec = shared.spec(name)
        if spec is not None and spec.grade < "G4":
            p = task_path(name, "spec.json")
            deltas.append(Delta(op="set", target="artifact", path=p, before=shared.read(p),
                                after=TaskSpec(**{**spec.__dict__, "grade": "G4"}).to_json(),
                                reason="the shared program serves at G4"))
        evidence["program"] = True
    return deltas, evidence
