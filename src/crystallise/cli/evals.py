"""A task's eval suite from the command line: `crystallise evals list|show|add|run`.

    crystallise evals list [--json]                          every task's suite: cases, verifier kinds, judge
    crystallise evals show TASK [--limit N] [--json]         the cases (id, input, expected, verifier, who)
    crystallise evals add TASK --input X --expected Y [--verifier JSON] [--id ID] [--tag T]
                                                             a person adds a case: a version in the log
    crystallise evals run TASK [--model SPEC] [--judge-model SPEC] [--json]
                                                             the current version on the suite; judge cases
                                                             only through a judge that passes calibration

The suite is `tasks/<name>/evals.jsonl` in the artifact repository (append-only: a case is never
rewritten; give a corrected case a new id). `add` is a human action: it is committed with the
CLI user as the actor (governance/protect.py), so any verifier kind may be used, and `crystallise
log` records who added what. The judge is `tasks/<name>/graders/judge.json` (gate/judge.py).
"""

from __future__ import annotations

import json
import re
from typing import Any

import click
from rich.table import Table

from crystallise.engine.committer import Committer
from crystallise.errors import NotFoundError, ValidationError
from crystallise.gate import Case, EvalSuite, run_suite
from crystallise.gate.judge import Judge, JudgeSpec, calibrate, judge_path
from crystallise.governance.protect import Actor
from crystallise.harness import lifecycle
from crystallise.harness.runtime import TaskRuntime, close_sandboxes
from crystallise.harness.spec import TaskSpec, View, task_path
from crystallise.types import ChangeSet, Delta, Verdict

_ID = re.compile(r"[A-Za-z0-9_.:-]{1,80}")


def _spec(view: View, name: str) -> TaskSpec:
    spec = view.spec(name)
    if spec is None:
        raise NotFoundError(f"no task {name!r}: run `crystallise tasks list`")
    return spec


def _short(value: Any, n: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def suite_row(view: View, name: str) -> dict[str, Any]:
    suite = lifecycle.eval_suite(view, name)
    kinds: dict[str, int] = {}
    for c in suite:
        kinds[str(c.verifier.get("kind"))] = kinds.get(str(c.verifier.get("kind")), 0) + 1
    return {"task": name, "cases": len(suite), "verifiers": kinds,
            "by_person": sum(1 for c in suite if c.created_by != "learner"),
            "judge": view.read(judge_path(name)) is not None}


def register(main: click.Group) -> None:
    from crystallise.cli import emit, open_home, out
    from crystallise.cli.tasks import task_names

    @main.group()
    def evals() -> None:
        """A task's eval suite: list, show, add (a person's case), run."""

    @evals.command("list")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def evals_list(ctx: click.Context, as_json: bool) -> None:
        """Every task's eval suite: how many cases, graded how, whether it has a judge."""
        home = open_home(ctx)
        view = View.of(home.repo)
        rows = [suite_row(view, n) for n in task_names(home) if view.spec(n) is not None]
        if emit(rows, as_json):
            return
        table = Table("task", "cases", "added by people", "verifiers", "judge")
        for r in rows:
            table.add_row(r["task"], str(r["cases"]), str(r["by_person"]),
                          ", ".join(f"{k} {v}" for k, v in sorted(r["verifiers"].items())) or "—",
                          "yes" if r["judge"] else "—")
        out.print(table)

    @evals.command("show")
    @click.argument("task")
    @click.option("--limit", type=int, default=50, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def evals_show(ctx: click.Context, task: str, limit: int, as_json: bool) -> None:
        """The cases of TASK's suite (the most recent --limit)."""
        home = open_home(ctx)
        view = View.of(home.repo)
        _spec(view, task)
        cases = lifecycle.eval_suite(view, task).cases[-limit:] if limit > 0 else []
        if emit({**suite_row(view, task), "shown": [c.to_dict() for c in cases]}, as_json):
            return
        table = Table("id", "input", "expected", "verifier", "added by", "tags")
        for c in cases:
            table.add_row(c.id, _short(c.input), _short(c.expected, 30), str(c.verifier.get("kind")), c.created_by,
                          ",".join(c.tags))
        out.print(table)

    @evals.command("add")
    @click.argument("task")
    @click.option("--input", "value", required=True, help="The case's input (text).")
    @click.option("--expected", required=True, help="The right answer.")
    @click.option("--verifier", default=None, help='JSON verifier spec, e.g. \'{"kind": "numeric"}\' '
                  "(default: the task's metric).")
    @click.option("--id", "case_id", default=None, help="Case id (default: human-N).")
    @click.option("--tag", "tags", multiple=True)
    @click.pass_context
    def evals_add(ctx: click.Context, task: str, value: str, expected: str, verifier: str | None,
                  case_id: str | None, tags: tuple[str, ...]) -> None:
        """Add a case to TASK's suite, as the person at this terminal (recorded as a version)."""
        home = open_home(ctx)
        view = View.of(home.repo)
        spec = _spec(view, task)
        try:
            grader = json.loads(verifier) if verifier else {"kind": "numeric" if spec.metric == "numeric"
                                                                    else "exact"}
        except ValueError as exc:
            raise ValidationError(f"--verifier is not JSON ({exc}); e.g. '{{\"kind\": \"exact\"}}'") from None
        path = task_path(task, "evals.jsonl")
        suite = lifecycle.eval_suite(view, task)
        case_id = case_id or f"human-{len(suite) + 1}"
        if not _ID.fullmatch(case_id):
            raise ValidationError(f"--id {case_id!r}: use 1-80 letters, digits, '_', '.', ':' or '-'")
        if suite.get(case_id) is not None:
            raise ValidationError(f"case {case_id!r} exists already (cases are never rewritten): choose a new --id")
        actor = Actor.cli()
        case = Case(case_id, value, expected, verifier=grader, tags=list(tags), created_by=actor.name)
        EvalSuite(task, [case])  # validates the case
        before = view.read(path)
        cs = ChangeSet(learner="human", layer="harness", summary=f"{task}: eval case {case_id} added by {actor.name}",
                       deltas=[Delta(op="set", target="artifact", path=path, before=before,
                                     after=(before or "") + case.to_json() + "\n",
                                     reason=f"eval case added by {actor.name}")],
                       evidence={"task": task, "case": case_id},
                       verdict=Verdict(decision="accept", reason=f"human: eval case added by {actor.name}"))
        version = Committer(home).commit(cs, actor=actor)
        out.print(f"added case {case_id} to {task} (version {version.number})")

    @evals.command("run")
    @click.argument("task")
    @click.option("--model", default=None, help="Model for the task's LLM answers (default: the home's).")
    @click.option("--judge-model", default=None, help="Model for judge cases (default: --model).")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def evals_run(ctx: click.Context, task: str, model: str | None, judge_model: str | None, as_json: bool) -> None:
        """Run TASK's current version on its suite; judge cases only through a calibrated judge."""
        home = open_home(ctx)
        view = View.of(home.repo)
        spec = _spec(view, task)
        suite = lifecycle.eval_suite(view, task)
        backend = home.backend(model)
        judge, calibration = None, None
        if any(c.verifier.get("kind") == "judge" for c in suite):
            text = view.read(judge_path(task))
            if text is None:
                raise ValidationError(f"{task}: judge cases need {judge_path(task)} (a person writes it)")
            judge_spec = JudgeSpec.from_json(text)
            judge_backend = home.backend(judge_model) if judge_model else backend
            cal = calibrate(judge_backend, judge_spec)
            calibration = cal.to_dict()
            if not cal.usable:
                raise ValidationError(f"{task}: judge {cal.reason}")
            judge = Judge(judge_backend, judge_spec, cal)
        rt = TaskRuntime(spec, view, backend)

        def answer(value: Any) -> tuple[Any, float, str | None]:
            ans = rt.answer(value)
            return ans.output, float(ans.llm_calls), ans.served_by

        try:
            results = run_suite(suite, answer, judge=judge)
        finally:
            close_sandboxes()
        passed = sum(r.passed for r in results)
        report = {"task": task, "cases": len(results), "passed": passed,
                  "accuracy": round(passed / len(results), 4) if results else None,
                  "served_by_code": sum(r.served_by == "code" for r in results), "judge": calibration,
                  "metric": spec.metric, "failed": [{"id": r.case_id, "output": r.output, "error": r.error}
                                                    for r in results if not r.passed][:20]}
        if emit(report, as_json):
            return
        acc = "—" if report["accuracy"] is None else f"{report['accuracy']:.1%}"
        out.print(f"{task}: {passed}/{len(results)} cases pass ({acc}), {report['served_by_code']} by code")
        if calibration:
            out.print(f"judge: {calibration['reason']}")
        for f in report["failed"]:
            out.print(f"  fail {f['id']}: {_short(f['output'], 40)}" + (f" ({f['error']})" if f["error"] else ""))
