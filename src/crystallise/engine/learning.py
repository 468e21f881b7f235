"""The SDK's learning calls: `crystallise.learn(...)` and `crystallise.score(trace_id, ...)`.

    @crystallise.task
    def ratio(text: str) -> float: ...

    ratio("a firm has $2,500 of assets and $500 of debt")
    crystallise.score(crystallise.last_trace_id(), correction=5.0)    # the verified answer, after the fact
    jobs = crystallise.learn("ratio")             # a learn job, run here; returns when it is done
    jobs[0].status, jobs[0].result["versions"]    # ('succeeded', [3])

`learn` queues jobs in the home's store (engine/jobs.py) and runs them in this process, or with
`wait=False` only queues them for `crystallise serve` / `crystallise worker`. `score` attaches
feedback to a recorded trace: a `correction` is the verified answer the learners learn from,
`score` (0..1) the outcome. The library in-process acts as the operator (no API key).
"""

from __future__ import annotations

from typing import Any

from crystallise.engine import jobs, tracing
from crystallise.engine.home import Home
from crystallise.engine.task_defs import task_names
from crystallise.errors import NotFoundError, ValidationError
from crystallise.traces.last import last_trace_id
from crystallise.types import Feedback, Scope

__all__ = ["last_trace_id", "learn", "score"]


def learn(task: str | None = None, *, all: bool = False, kind: str = "learn",  # noqa: A002 - the CLI's --all
          agent: str = "default", org: str | None = None, user: str | None = None,
          params: dict[str, Any] | None = None, wait: bool = True, home: Home | None = None) -> list[jobs.Job]:
    """Queue learning jobs -- one task, every task (`all=True`), or another `kind` (dream, extract,
    skills, ...) -- for a scope, and with `wait` run them here to the end. Returns the jobs."""
    h = home or Home.from_env()
    scope = Scope(agent=agent, org=org, user=user)
    if kind == "learn":
        if all == (task is not None):
            raise ValidationError("crystallise.learn: name a task, or pass all=True for every task")
        names = task_names(h) if all else [task]
        if not names:
            raise NotFoundError("no task is defined yet: use @crystallise.task or `crystallise tasks define`")
        queued = [jobs.submit(h, "learn", scope=scope, params={**(params or {}), "task": n}) for n in names]
    else:
        if task is not None or all:
            raise ValidationError(f"crystallise.learn: a task or all=True is for learn jobs, not {kind}")
        queued = [jobs.submit(h, kind, scope=scope, params=params)]
    if not wait:
        return queued
    return [jobs.run(h, j.id) for j in queued]


def score(trace_id: str | None, score: float | None = None, *, correction: Any = None, label: str | None = None,
          comment: str | None = None, home: Home | None = None) -> Feedback:
    """Feedback on a recorded trace, after the fact: `score` in 0..1, a `correction` (the verified
    answer), a `label` or a `comment`. NotFoundError when the trace is unknown."""
    if not trace_id:
        raise ValidationError("crystallise.score needs a trace id: `crystallise.last_trace_id()` after an @task "
                              "call, or `t.id` of `with crystallise.trace(...) as t`")
    if score is not None and not 0.0 <= float(score) <= 1.0:
        raise ValidationError(f"score must be between 0 and 1, not {score!r}")
    if score is None and correction is None and label is None and comment is None:
        raise ValidationError("crystallise.score needs a score, a correction, a label or a comment")
    h = home or Home.from_env()
    try:
        h.store.get_trace(trace_id)
    except NotFoundError:  # recorded a moment ago, still in the background writer's buffer? wait for it once
        tracing.flush(timeout=5.0)
        h.store.get_trace(trace_id)  # NotFoundError naming the trace
    fb = Feedback(trace_id=trace_id, score=None if score is None else float(score), correction=correction,
                  label=label, comment=comment)
    h.store.add_feedback(fb)
    return fb
