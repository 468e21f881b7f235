"""Tasks defined without writing Python: a name, a metric, an optional output schema and instruction.

    spec, created = define(home, "ratio", metric="numeric", instruction="Answer with the ratio, 2 decimals.")

`crystallise tasks define NAME` and `POST /v1/tasks` call `define`. The spec is committed as the
task's first version (`engine/task.define_task`), the same as an `@task` function's; a trace
whose `name` is the task's name is evidence for it (its feedback's correction is the verified
answer), so a task defined here learns from runs recorded by any client -- the SDK, the API,
OTLP spans or the OpenAI-compatible proxy -- once they are named after it.

`metric_for(spec)` is the one mapping from a spec's metric to the function the loop and the
gate score answers with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crystallise.engine.home import Home
from crystallise.engine.task import define_task
from crystallise.errors import ValidationError
from crystallise.gate import score_exact, score_numeric
from crystallise.harness.spec import TaskSpec, View, valid_task_name

__all__ = ["METRICS", "define", "metric_for", "task_names"]

METRICS: dict[str, Callable[[Any, Any], bool]] = {"exact": score_exact, "numeric": score_numeric}
MAX_INSTRUCTION = 4000


def metric_for(spec: TaskSpec) -> Callable[[Any, Any], bool]:
    """The scoring function of the spec's metric (exact when unknown)."""
    return METRICS.get(spec.metric, score_exact)


def task_names(home: Home) -> list[str]:
    """Every task with a shared spec (`tasks/<name>/spec.json`)."""
    return sorted({p.split("/")[1] for p in home.repo.list_files("tasks/") if p.count("/") >= 2})


def define(home: Home, name: str, *, metric: str = "exact", output_schema: dict[str, Any] | None = None,
           input_schema: dict[str, Any] | None = None, instruction: str = "") -> tuple[TaskSpec, bool]:
    """Commit a new task's spec; (spec, True). Defining it again with the same fields: (spec, False);
    with different ones: ValidationError (a task's contract is changed by learning, not redefinition)."""
    name = valid_task_name(name)
    if metric not in METRICS:
        raise ValidationError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    if not isinstance(instruction, str) or len(instruction) > MAX_INSTRUCTION:
        raise ValidationError(f"the instruction must be text of at most {MAX_INSTRUCTION} characters")
    for label, schema in (("output schema", output_schema), ("input schema", input_schema)):
        if schema is not None and (not isinstance(schema, dict) or not isinstance(schema.get("type", "object"), str)):
            raise ValidationError(f"the {label} must be a JSON Schema object, e.g. {{\"type\": \"string\"}}")
    wanted = TaskSpec(name=name, description=instruction, metric=metric,
                      output_schema=output_schema or {"type": "string"},
                      input_schema=input_schema or {"type": "string"})
    current = View.of(home.repo).spec(name)
    if current is not None:
        same = (current.metric, current.description, current.input_schema) == \
               (wanted.metric, wanted.description, wanted.input_schema) and \
               (output_schema is None or current.output_schema == wanted.output_schema)
        if not same:
            raise ValidationError(f"task {name!r} is already defined with a different metric, instruction or schema: "
                                  "choose another name (`crystallise tasks show NAME` shows its definition)")
        return current, False
    return define_task(home, wanted), True
