"""Tasks on the verifiability gradient: `tasks list`, `tasks show NAME`, and the layer advisor `advise`.

    crystallise tasks list [--json]              every task: grade, evidence, what would move it
    crystallise tasks show NAME [--json]         one task: spec, evidence, grade history, files
    crystallise tasks share NAME [--k 3]         propose for the shared task what k+ orgs learned alike (review)
    crystallise advise [--task NAME] [--json]    which layer should learn next, per task and scope

The evidence is computed from the stored traces (`harness.lifecycle.gather`) with the
default `GradePolicy`; `--window N` changes how many recent answers the rates cover.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from crystallise.engine.share import share_task
from crystallise.errors import NotFoundError
from crystallise.gate import score_exact, score_numeric
from crystallise.harness import grades, lifecycle
from crystallise.harness.spec import TaskSpec, View, task_path

METRICS = {"numeric": score_numeric, "exact": score_exact}


def metric_for(spec: TaskSpec) -> Any:
    return METRICS.get(spec.metric, score_exact)


def task_names(home: Any) -> list[str]:
    return sorted({p.split("/")[1] for p in home.repo.list_files("tasks/") if p.count("/") >= 2})


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def task_row(home: Any, view: View, spec: TaskSpec, policy: grades.GradePolicy) -> dict[str, Any]:
    """One task's grade, evidence and next moves as plain data (what `tasks list --json` prints)."""
    ev = lifecycle.gather(home.store, view, spec, metric_for(spec), policy)
    data = ev.to_dict()
    for k in ("disagreement_ids", "fallback_ids", "streak_ids", "schema_violation_ids", "new_cases"):
        data.pop(k, None)
    return {
        "name": spec.name, "grade": spec.grade, "metric": spec.metric,
        "examples": ev.examples, "eval_cases": ev.eval_cases, "code": ev.code,
        "verified_cases": ev.verified_cases,
        "evidence": data,
        "next": grades.next_moves(ev, policy),
    }


def register(main: click.Group) -> None:
    from crystallise.cli import emit, open_home, out

    @main.group()
    def tasks() -> None:
        """Tasks and their grade on the verifiability gradient."""

    @tasks.command("list")
    @click.option("--window", type=int, default=None, help="Recent answers the rates cover (default 200).")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def tasks_list(ctx: click.Context, window: int | None, as_json: bool) -> None:
        """Every task with its grade, evidence and what would move it."""
        home = open_home(ctx)
        view = View.of(home.repo)
        policy = grades.GradePolicy(window=window) if window else grades.GradePolicy()
        rows = [task_row(home, view, spec, policy) for n in task_names(home) if (spec := view.spec(n)) is not None]
        if emit(rows, as_json):
            return
        table = Table("task", "grade", "verified", "eval cases", "coverage", "fallback", "disagree", "shadow",
                      "what would move it")
        for r in rows:
            e = r["evidence"]
            shadow = f"{e['shadow_checks']} ({e['shadow_disagreements']} differ)" if e["shadow_checks"] else "0"
            table.add_row(r["name"], r["grade"], str(r["verified_cases"]), str(r["eval_cases"]),
                          _pct(e["coverage"]) if e["window"] else "—",
                          _pct(e["fallback_rate"]) if e["code_attempts"] else "—",
                          _pct(e["disagreement_rate"]) if e["code_verified"] else "—", shadow,
                          r["next"][0] if r["next"] else "")
        out.print(table)
        if not rows:
            out.print("no tasks yet: define one with `@crystallise.task` or run `crystallise bench stream`")

    @tasks.command("show")
    @click.argument("name")
    @click.option("--window", type=int, default=None, help="Recent answers the rates cover (default 200).")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def tasks_show(ctx: click.Context, name: str, window: int | None, as_json: bool) -> None:
        """A task's spec, evidence, grade history, how its program was made, and its files."""
        home = open_home(ctx)
        view = View.of(home.repo)
        spec = view.spec(name)
        if spec is None:
            raise NotFoundError(f"no task {name!r}: run `crystallise tasks list`")
        policy = grades.GradePolicy(window=window) if window else grades.GradePolicy()
        row = task_row(home, view, spec, policy)
        history = view.jsonl(task_path(name, "lifecycle.jsonl"))
        program = view.read(task_path(name, "program.json"))
        files = home.repo.list_files(f"tasks/{name}/")
        if emit({**row, "spec": json.loads(spec.to_json()), "history": history,
                 "program": json.loads(program) if program else None, "files": files,
                 "policy": policy.__dict__}, as_json):
            return
        e = row["evidence"]
        out.print(f"[bold]{spec.name}[/bold] grade {spec.grade}, metric {spec.metric}")
        out.print(spec.description or "(no description)")
        out.print(f"evidence over the last {e['window']} answers (policy window {policy.window}):")
        served = ", ".join(f"{k} {v}" for k, v in e["served"].items())
        out.print(f"  served: {served}; coverage by code {_pct(e['coverage'])}")
        out.print(f"  verified answers {e['verified']}, accuracy {_pct(e['accuracy'])}; "
                  f"verified cases in all {e['verified_cases']}")
        if e["code"]:
            fb = ", ".join(f"{k} {v}" for k, v in e["fallbacks"].items())
            out.print(f"  program {e['code_sha']}: tried on {e['code_attempts']}, fallbacks {fb} "
                      f"({_pct(e['fallback_rate'])}); verified code answers {e['code_verified']}, "
                      f"disagreements {e['disagreements']} ({_pct(e['disagreement_rate'])}); streak {e['streak']}")
        out.print(f"  shadow checks {e['shadow_checks']}, disagreed {e['shadow_disagreements']}")
        verifiers = ", ".join(e["verifiers"]) or "-"
        out.print(f"  eval cases {e['eval_cases']} (verifiers: {verifiers}); few-shot examples {e['examples']}; "
                  f"output schema {'learned' if e['learned_schema'] else 'given' if e['schema'] else 'none'}")
        out.print("what would move it:")
        for line in row["next"]:
            out.print(f"  {line}")
        if history:
            out.print("grade history:")
            for h in history:
                out.print(f"  {h['from']} → {h['to']} ({h['rule']}): {h['reason']}")
        if program:
            out.print("program: " + program.strip())
        out.print("files:")
        for f in files:
            out.print(f"  {f}")

    @tasks.command("share")
    @click.argument("name")
    @click.option("--k", "k", type=int, default=3, show_default=True,
                  help="How many distinct orgs must agree on an example (and the program) before it is proposed.")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def tasks_share(ctx: click.Context, name: str, k: int, as_json: bool) -> None:
        """Propose for the shared (agent-level) task what k+ orgs learned alike; a person decides in review."""
        if k < 2:
            raise click.BadParameter("one org's data is that org's: use --k 2 or more", param_hint="--k")
        cs = share_task(open_home(ctx), name, k=k)
        if emit({"changeset": cs.to_dict() if cs else None}, as_json):
            return
        if cs is None:
            out.print(f"nothing to share for {name!r}: no example or program is held by {k}+ orgs alike")
            return
        out.print(f"proposed {cs.id}: {cs.summary}")
        out.print(f"waiting for review: crystallise review show {cs.id}  |  "
                  f"crystallise review approve {cs.id} --by NAME")

    @main.command("advise")
    @click.option("--task", "task_name", default=None, help="Only this task (default: every task).")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def advise_cmd(ctx: click.Context, task_name: str | None, as_json: bool) -> None:
        """Which layer (context, harness, weights) should learn next, per task and scope, and why."""
        from crystallise.harness.advise import advise, gather_advice

        home = open_home(ctx)
        view = View.of(home.repo)
        names = [task_name] if task_name else task_names(home)
        advice = []
        for n in names:
            spec = view.spec(n)
            if spec is None:
                raise NotFoundError(f"no task {n!r}: run `crystallise tasks list`")
            advice += [advise(e) for e in gather_advice(home.store, view, spec, metric_for(spec))]
        if emit([a.to_dict() for a in advice], as_json):
            return
        table = Table("task", "scope", "layer", "next", "why")
        for a in advice:
            scope = "/".join(v for v in (a.scope["agent"], a.scope["org"], a.scope["user"]) if v)
            table.add_row(a.task, scope, a.layer, a.action, a.reason)
        out.print(table)
        if not advice:
            out.print("no task has runs yet: nothing to advise")


__all__ = ["metric_for", "register", "task_names", "task_row"]
