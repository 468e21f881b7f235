"""The skill learner: a procedure that keeps succeeding becomes a skill, if the gate agrees.

    traces of one task ──split by a hash of the trace id──┬── fit (2/3): find procedures
                                                          └── held out (1/3): the gate's cases
    procedure = (task name, the ordered names of its tool/task spans)
    proposed when, in the fit traces, it succeeded in >= min_traces runs and in
    >= min_success of the runs that followed it, and no skill of that name exists
      -> ChangeSet: skills/<task>-procedure/SKILL.md + its record + its item (skills.py)
      -> gate: paired old/new results on the held-out traces of the task (below)
      -> accepted: committed as a version; otherwise saved as evidence

The gate's cases are an off-policy replay estimate, since the agent is not re-run here:

    held-out trace            old (no skill)     new (agent follows the skill)        cost
    followed the procedure    its outcome        its outcome                          same
    took another path         its outcome        passes (the procedure is reliable)   old: its steps, new: the
                                                                                      procedure's steps

so wins are held-out runs that failed on another path, there are no losses, and a
procedure is accepted when its alternatives fail significantly often (McNemar), or when
it is shorter than what the agent did and nothing else changes ("equal and cheaper").
Pass `runner=` to `evaluate` to gate on real re-runs instead.

A run succeeded when its explicit outcome is >= 0.5; runs without explicit feedback count
when their status is ok and no span failed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from crystallise.artifacts import ArtifactRepo
from crystallise.context.skills import Skill, list_skills, skill_changeset
from crystallise.evidence import is_revoked, outcome_of
from crystallise.gate import CaseResult, GatePolicy, decide
from crystallise.store.base import Store
from crystallise.types import ChangeSet, Trace

__all__ = ["Procedure", "SkillLearner", "procedures", "signature", "succeeded"]

STEP_KINDS = ("tool", "task")
Runner = Callable[[Trace, Skill | None], tuple[bool, float]]


def signature(trace: Trace) -> tuple[str, ...]:
    """The ordered tool/task span names of a run: what "the same procedure" compares."""
    return tuple(s.name for s in trace.spans if s.kind in STEP_KINDS)


def succeeded(trace: Trace) -> bool:
    outcome = outcome_of(trace)
    if outcome:
        return outcome > 0
    return trace.status == "ok" and not any(s.error for s in trace.spans)


def held_out(trace: Trace, share: float) -> bool:
    """Deterministic split by trace id, so re-running the learner sees the same split."""
    h = int.from_bytes(hashlib.sha256(trace.id.encode()).digest()[:4], "big")
    return (h % 1000) < share * 1000


@dataclass
class Procedure:
    task: str
    steps: tuple[str, ...]
    successes: list[Trace]
    failures: list[Trace]

    @property
    def success_rate(self) -> float:
        n = len(self.successes) + len(self.failures)
        return len(self.successes) / n if n else 0.0

    @property
    def name(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.task.lower()).strip("-") or "task"
        return f"{slug[:50].strip('-')}-procedure"


def procedures(traces: Sequence[Trace]) -> list[Procedure]:
    """Every (task, steps) seen with at least one step, with its successful and failed runs."""
    groups: dict[tuple[str, tuple[str, ...]], Procedure] = {}
    for t in traces:
        steps = signature(t)
        if not steps or is_revoked(t):  # a revoked run is no evidence (crystallise.evidence)
            continue
        p = groups.setdefault((t.name, steps), Procedure(t.name, steps, [], []))
        (p.successes if succeeded(t) else p.failures).append(t)
    return sorted(groups.values(), key=lambda p: (p.task, -len(p.successes), p.steps))


def _short(value: Any, n: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    text = " ".join(str(text).split())
    return text[: n - 1] + "…" if len(text) > n else text


def _skill(p: Procedure, scope: tuple[str, str | None]) -> Skill:
    agent, org = scope
    n, total = len(p.successes), len(p.successes) + len(p.failures)
    arrow = " → ".join(p.steps)
    example = p.successes[0]
    step_lines = []
    for i, step in enumerate(p.steps, 1):
        span = next((s for s in example.spans if s.name == step and s.kind in STEP_KINDS), None)
        shown = f" — e.g. input `{_short(span.input)}`" if span is not None and span.input is not None else ""
        step_lines.append(f"{i}. `{step}`{shown}")
    description = (f"Procedure for {p.task}: {arrow}. Use when handling a {p.task} request; it succeeded in "
                   f"{n} of {total} recorded runs that followed it.")[:1024]
    body = "\n".join([
        f"# {p.task}: learned procedure", "",
        f"Learned by crystallise from {n} successful runs ({n}/{total} runs with these steps succeeded).", "",
        "## Steps", *step_lines, "",
        "## Evidence", ", ".join(t.id for t in p.successes[:20]), "",
    ])
    return Skill(name=p.name, description=description, body=body, level="org" if org else "agent", agent=agent,
                 org=org, source="learned", trust=0.5, provenance=[t.id for t in p.successes],
                 metadata={"crystallise-learner": "skills", "crystallise-support": str(n)})


class SkillLearner:
    """Proposes skills from repeated successful procedures and gates them on held-out runs."""

    name = "skills"
    layer = "context"

    def __init__(self, *, min_traces: int = 3, min_success: float = 0.8, holdout: float = 1 / 3,
                 policy: GatePolicy | None = None) -> None:
        self.min_traces, self.min_success, self.holdout = min_traces, min_success, holdout
        self.policy = policy or GatePolicy(min_cases=5)

    def propose(self, repo: ArtifactRepo, store: Store, traces: Sequence[Trace], *, agent: str = "default",
                org: str | None = None) -> list[tuple[ChangeSet, Procedure]]:
        """Change sets (not yet gated) for new procedures found in the fit share of `traces`."""
        existing = {s.name for s in list_skills(repo)}
        fit = [t for t in traces if not held_out(t, self.holdout)]
        out = []
        for p in procedures(fit):
            if len(p.successes) < self.min_traces or p.success_rate < self.min_success or p.name in existing:
                continue
            existing.add(p.name)
            skill = _skill(p, (agent, org))
            cs = skill_changeset(repo, store, [skill], learner=self.name, summary=f"skills: learn {skill.name}",
                                 evidence={"task": p.task, "steps": list(p.steps), "successes": len(p.successes),
                                           "failures": len(p.failures)})
            out.append((cs, p))
        return out

    def evaluate(self, p: Procedure, traces: Sequence[Trace],
                 runner: Runner | None = None) -> tuple[list[CaseResult], list[CaseResult]]:
        """Paired (old, new) results on the held-out runs of the procedure's task (module docstring)."""
        cases = [t for t in traces if t.name == p.task and held_out(t, self.holdout) and signature(t)
                 and not is_revoked(t)]
        old, new = [], []
        reliable = p.success_rate >= self.min_success
        for t in cases:
            steps = signature(t)
            ok = succeeded(t)
            old.append(CaseResult(t.id, ok, None, cost=float(len(steps))))
            if runner is not None:
                passed, cost = runner(t, _skill(p, ("default", None)))
                new.append(CaseResult(t.id, passed, None, cost=cost))
            elif steps == p.steps:
                new.append(CaseResult(t.id, ok, None, cost=float(len(steps))))
            else:
                new.append(CaseResult(t.id, reliable, None, cost=float(len(p.steps))))
        return old, new

    def gated(self, repo: ArtifactRepo, store: Store, traces: Sequence[Trace], *, agent: str = "default",
              org: str | None = None, runner: Runner | None = None) -> list[ChangeSet]:
        """Propose and gate: each change set carries its verdict (`engine.skills.learn_skills` commits)."""
        out = []
        for cs, p in self.propose(repo, store, traces, agent=agent, org=org):
            old, new = self.evaluate(p, traces, runner)
            cs.verdict = decide(old, new, self.policy)
            cs.evidence["gate_cases"] = len(old)
            out.append(cs)
        return out
