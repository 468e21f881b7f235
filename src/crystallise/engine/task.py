"""`@task`: a typed Python signature + docstring becomes an LLM task.

    @crystallise.task
    def extract_date(text: str) -> DateOut:
        '''Find the date the text talks about, as ISO 8601.'''

    extract_date("Meeting moved to March 3rd 2024")   # -> DateOut(date="2024-03-03")

An `async def` function makes an async task: `await extract_date(...)` (the model runs in a
worker thread, the trace goes to the background writer: the event loop is never blocked).

Inputs are validated by a pydantic model built from the signature; the output is
requested with the return type's JSON schema, validated, and repaired once. Each call
is a task span in the active trace (or a trace of its own). What the task learns
(examples, code, prompt) lives in `tasks/<name>/` of the artifact repository, and a
task at G4 runs its crystallised code first.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any, get_type_hints

import pydantic

from crystallise.context.items import most_specific
from crystallise.engine.committer import Committer
from crystallise.engine.home import Home
from crystallise.engine.observe import trace
from crystallise.engine.tracing import default_home
from crystallise.errors import ModelOutputError, ValidationError
from crystallise.governance.protect import Actor
from crystallise.harness.runtime import TaskRuntime, constrains_text
from crystallise.harness.spec import TaskSpec, View, task_path, valid_task_name
from crystallise.traces.last import set_last_trace_id
from crystallise.traces.sdk import TraceHandle, current_trace
from crystallise.types import ChangeSet, Delta, Verdict

__all__ = ["Task", "define_task", "task"]


class Task:
    """A callable LLM task (made by `@task`)."""

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None, model: str | None = None,
                 home: Home | None = None, examples_k: int = 3) -> None:
        self.fn = fn
        self.name = valid_task_name(name or fn.__name__.replace("_", "-"))
        self.model = model
        self.home = home
        self.examples_k = examples_k
        self.signature = inspect.signature(fn)
        hints = get_type_hints(fn)
        if "return" not in hints:
            raise ValidationError(f"@task {fn.__name__} needs a return type annotation (e.g. `-> str`)")
        fields: dict[str, Any] = {}
        for p in self.signature.parameters.values():
            if p.name not in hints:
                raise ValidationError(f"@task {fn.__name__}: parameter {p.name!r} needs a type annotation")
            default = ... if p.default is inspect.Parameter.empty else p.default
            fields[p.name] = (hints[p.name], default)
        self.input_model = pydantic.create_model(f"{fn.__name__}_input", **fields)
        self.output = pydantic.TypeAdapter(hints["return"])
        self.spec = TaskSpec(
            name=self.name,
            description=inspect.getdoc(fn) or "",
            input_schema=self.input_model.model_json_schema(),
            output_schema=self.output.json_schema(),
            max_tokens=256,
        )
        self.is_async = inspect.iscoroutinefunction(fn)  # `async def`: calling the task gives a coroutine
        functools.update_wrapper(self, fn)

    def _home(self) -> Home:
        return self.home or default_home()

    def runtime(self, home: Home, org: str | None = None, *, agent: str = "default",
                user: str | None = None) -> TaskRuntime:
        """The runtime for a caller's scope: its playbook bullets only (the agent's, its org's, its own; a
        fact key from the narrowest scope), and the org's namespace of the task's artifacts."""
        spec = define_task(home, self.spec)
        items = most_specific(home.store.query_items(agent=agent, org=org, user=user, kind="bullet"))
        return TaskRuntime(spec, View.of(home.repo), home.backend(self.model), bullets=items,
                           examples_k=self.examples_k, org=org)

    def _input(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            bound = self.signature.bind(*args, **kwargs)
            return self.input_model(**bound.arguments).model_dump(mode="json")
        except (TypeError, pydantic.ValidationError) as e:
            raise ValidationError(f"bad input for task {self.name}: {e}") from e

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.is_async:
            return self._acall(*args, **kwargs)
        value = self._input(args, kwargs)
        home = self._home()
        with ExitStack() as stack:
            t = current_trace() or stack.enter_context(trace(self.name, input=value, home=home))
            return self._run(t, home, value)

    async def _acall(self, *args: Any, **kwargs: Any) -> Any:
        """An `async def` task: the model call runs in a worker thread; the trace goes to the background writer."""
        value = self._input(args, kwargs)
        home = await asyncio.to_thread(self._home)
        t = current_trace()
        if t is not None:
            set_last_trace_id(t.id)  # in the caller's thread too (`_run` runs in a worker thread)
            return await asyncio.to_thread(self._run, t, home, value)
        async with trace(self.name, input=value, home=home) as t:
            set_last_trace_id(t.id)
            return await asyncio.to_thread(self._run, t, home, value)

    def _run(self, t: TraceHandle, home: Home, value: Any) -> Any:
        set_last_trace_id(t.id)  # `crystallise.last_trace_id()`: score this call later
        with t.span(f"task:{self.name}", "task", input=value) as span:
            rt = self.runtime(home, org=t.record.org_id, agent=t.record.agent_id, user=t.record.user_id)
            ans = rt.answer(value)
            span.attributes.update(served_by=ans.served_by, llm_calls=ans.llm_calls, grade=rt.spec.grade,
                                   shown_items=ans.shown_items, prompt_tokens=ans.prompt_tokens,
                                   completion_tokens=ans.completion_tokens)
            span.attributes.update({k: v for k, v in (("code_sha", ans.code_sha),
                                                      ("fallback_reason", ans.fallback_reason)) if v})
            if ans.llm_calls > 1:
                t.signal("schema_repair", comment=f"task {self.name} needed a repair attempt")
            try:
                out = self.output.validate_python(ans.output)
            except pydantic.ValidationError as e:
                raise ModelOutputError(
                    f"task {self.name}: the answer does not match the return type ({e.error_count()} errors); "
                    "try a larger model (`--model local:qwen2.5-coder-1.5b`)", raw=str(ans.output)) from e
            span.output = self.output.dump_python(out, mode="json")
        if t.record.name == self.name and t.output is None:
            t.output = span.output
        return out


def task(fn: Callable[..., Any] | None = None, *, name: str | None = None, model: str | None = None,
         home: Home | None = None, examples_k: int = 3) -> Any:
    """Decorator: turn a typed function + docstring into an LLM task (see module docstring)."""
    def wrap(f: Callable[..., Any]) -> Task:
        return Task(f, name=name, model=model, home=home, examples_k=examples_k)

    return wrap(fn) if fn is not None else wrap


def define_task(home: Home, spec: TaskSpec, committer: Committer | None = None) -> TaskSpec:
    """The task's committed spec; commits `spec` as the task's first version if it has none."""
    current = View.of(home.repo).spec(spec.name)
    if current is not None:
        return current
    if spec.grade < "G2" and (not spec.text_output or constrains_text(spec.output_schema)):
        spec = TaskSpec(**{**spec.__dict__, "grade": "G2"})  # a typed output is validated and repaired: G2
    path = task_path(spec.name, "spec.json")
    cs = ChangeSet(
        learner="define",
        layer="harness",
        deltas=[Delta(op="set", target="artifact", path=path, before=None, after=spec.to_json(), reason="new task")],
        summary=f"{spec.name}: define task ({spec.grade})",
        verdict=Verdict(decision="accept", reason="task defined by the user"),
    )
    (committer or Committer(home)).commit(cs, actor=Actor.host("define"))  # the operator's own code defines it
    return spec
