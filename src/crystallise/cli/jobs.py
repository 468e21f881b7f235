"""Learning as jobs from the command line.

    crystallise tasks define NAME [--metric exact|numeric] [--instruction TEXT] [--schema FILE]
    crystallise learn [TASK | --all] [--agent A] [--org O] [--kind dream|extract|...] [--no-wait]
    crystallise jobs list [--status S] [--kind K] [--json]
    crystallise jobs show ID [--json]        status, progress, log, result
    crystallise jobs watch ID                a progress bar until the job ends
    crystallise jobs cancel ID
    crystallise worker [--threads N] [--no-learn]   run queued jobs (+ the scheduler) until Ctrl-C

`learn` queues the jobs and, unless `--no-wait`, runs them here with a progress bar (a job of a
scope another worker is running waits for it). Everything is in the store, so `jobs list` shows
jobs that `crystallise serve` or a `crystallise worker` on another machine runs.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from crystallise.engine import jobs
from crystallise.engine.scheduler import LearnPolicy, Scheduler
from crystallise.engine.task_defs import define, task_names
from crystallise.scale.supervisor import RaySupervisor
from crystallise.errors import NotFoundError, ValidationError
from crystallise.types import Scope

__all__ = ["register"]


def _line(job: jobs.Job) -> str:
    scope = "/".join(v for v in (job.scope.agent, job.scope.org, job.scope.user) if v)
    what = job.params.get("task") or ""
    return f"{job.id} {job.kind} {what} [{scope}]".replace("  ", " ")


def _follow(home: Any, job_ids: list[str], console: Any, *, run_here: bool) -> list[jobs.Job]:
    """A progress bar per job until every one ends (running them on threads here when `run_here`)."""
    threads = [threading.Thread(target=jobs.run, args=(home, i), daemon=True) for i in job_ids] if run_here else []
    for t in threads:
        t.start()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), TextColumn("{task.fields[msg]}"), console=console) as bar:
        rows = {i: bar.add_task(_line(jobs.get(home, i)), total=1.0, msg="queued") for i in job_ids}
        while True:
            current = [jobs.get(home, i) for i in job_ids]
            for job in current:
                bar.update(rows[job.id], completed=job.progress, msg=(job.message or job.status)[:70])
            if all(j.done for j in current):
                break
            time.sleep(0.3)
    for t in threads:
        t.join()
    return [jobs.get(home, i) for i in job_ids]


def _report(jobs_done: list[jobs.Job], out: Any) -> None:
    for job in jobs_done:
        colour = {"succeeded": "green", "failed": "red"}.get(job.status, "yellow")
        detail = job.error if job.status == "failed" else job.message
        out.print(f"[{colour}]{job.status}[/{colour}] {_line(job)}: {detail}", highlight=False)


def register(main: click.Group) -> None:
    from crystallise.cli import console, emit, open_home, out

    tasks_group = main.commands["tasks"]
    assert isinstance(tasks_group, click.Group)  # noqa: S101 - registered by cli/tasks.py first

    @tasks_group.command("define")
    @click.argument("name")
    @click.option("--metric", type=click.Choice(["exact", "numeric"]), default="exact", show_default=True,
                  help="How an answer is checked against its correction.")
    @click.option("--instruction", default="", help="What the task does, for the model.")
    @click.option("--schema", "schema_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  default=None, help="A JSON Schema file for the output (default: text).")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def tasks_define(ctx: click.Context, name: str, metric: str, instruction: str, schema_file: Path | None,
                     as_json: bool) -> None:
        """Define a task without writing Python; traces named NAME are its evidence."""
        schema = None
        if schema_file is not None:
            try:
                schema = json.loads(schema_file.read_text())
            except json.JSONDecodeError as e:
                raise ValidationError(f"{schema_file} is not JSON ({e}): pass a JSON Schema file") from e
        spec, created = define(open_home(ctx), name, metric=metric, output_schema=schema, instruction=instruction)
        if emit({"name": spec.name, "grade": spec.grade, "metric": spec.metric, "created": created}, as_json):
            return
        out.print(f"task {spec.name} {'defined' if created else 'already defined'} ({spec.grade}, metric "
                  f"{spec.metric}); record runs named {spec.name!r} with corrections, then `crystallise learn "
                  f"{spec.name}` (or let `crystallise serve` learn it)", highlight=False)

    @main.command("learn")
    @click.argument("task", required=False)
    @click.option("--all", "all_tasks", is_flag=True, help="Every task.")
    @click.option("--kind", default="learn", show_default=True,
                  help="learn, dream, extract, skills, promote, weights-export, weights-train, distill.")
    @click.option("--agent", default="default", show_default=True)
    @click.option("--org", default=None, help="Learn from (and for) this org's runs.")
    @click.option("--user", default=None, help="A user's scope (dream only).")
    @click.option("--param", "params", multiple=True, metavar="KEY=JSON", help="A job parameter (repeatable).")
    @click.option("--no-wait", is_flag=True, help="Queue only: a `crystallise worker` or `serve` runs them.")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def learn_cmd(ctx: click.Context, task: str | None, all_tasks: bool, kind: str, agent: str, org: str | None,
                  user: str | None, params: tuple[str, ...], no_wait: bool, as_json: bool) -> None:
        """Queue learning jobs and (unless --no-wait) run them here with progress."""
        home = open_home(ctx)
        extra: dict[str, Any] = {}
        for p in params:
            key, sep, raw = p.partition("=")
            if not sep:
                raise ValidationError(f"--param {p!r}: use KEY=JSON, e.g. --param steps=20")
            try:
                extra[key] = json.loads(raw)
            except json.JSONDecodeError:
                extra[key] = raw
        scope = Scope(agent=agent, org=org, user=user)
        if kind == "learn":
            if all_tasks == (task is not None):
                raise ValidationError("name a TASK or pass --all")
            names = task_names(home) if all_tasks else [task]
            if not names:
                raise NotFoundError("no task is defined yet: `crystallise tasks define NAME`")
            queued = [jobs.submit(home, "learn", scope=scope, params={**extra, "task": n}) for n in names]
        else:
            if task is not None or all_tasks:
                raise ValidationError(f"TASK and --all are for learn jobs; pass a {kind} job's options with --param")
            queued = [jobs.submit(home, kind, scope=scope, params=extra)]
        if no_wait:
            if not emit([j.to_dict() for j in queued], as_json):
                for j in queued:
                    out.print(f"queued {_line(j)}", highlight=False)
            return
        done = _follow(home, [j.id for j in queued], console, run_here=True) if not as_json else \
            [jobs.run(home, j.id) for j in queued]
        if emit([j.to_dict() for j in done], as_json):
            return
        _report(done, out)
        if any(j.status == "failed" for j in done):
            ctx.exit(1)

    @main.group("jobs")
    def jobs_group() -> None:
        """Learning jobs: what runs, what ran, what it committed."""

    @jobs_group.command("list")
    @click.option("--status", default=None, help="queued, running, succeeded, failed, cancelled")
    @click.option("--kind", default=None)
    @click.option("--limit", default=50, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def jobs_list(ctx: click.Context, status: str | None, kind: str | None, limit: int, as_json: bool) -> None:
        """Jobs, newest first."""
        found = jobs.list_jobs(open_home(ctx), status=status, kind=kind, limit=limit)
        if emit([j.to_dict() for j in found], as_json):
            return
        table = Table("id", "kind", "scope", "task", "status", "progress", "message", "attempts")
        for j in found:
            scope = "/".join(v for v in (j.scope.agent, j.scope.org, j.scope.user) if v)
            table.add_row(j.id, j.kind, scope, str(j.params.get("task", "")), j.status, f"{j.progress:.0%}",
                          (j.error or j.message)[:60], str(j.attempts))
        out.print(table)
        if not found:
            out.print("no jobs yet: `crystallise learn TASK` queues one")

    @jobs_group.command("show")
    @click.argument("job_id")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def jobs_show(ctx: click.Context, job_id: str, as_json: bool) -> None:
        """A job's status, progress, log lines and result."""
        job = jobs.get(open_home(ctx), job_id)
        if emit(job.to_dict(), as_json):
            return
        out.print(f"[bold]{_line(job)}[/bold] {job.status} {job.progress:.0%} (attempts {job.attempts}, "
                  f"worker {job.worker or '-'})", highlight=False)
        for entry in job.log:
            out.print(f"  {time.strftime('%H:%M:%S', time.localtime(entry['at']))} {entry['line']}", highlight=False)
        if job.error:
            out.print(f"error: {job.error}", highlight=False)
        if job.result is not None:
            out.print("result: " + json.dumps(job.result, default=str), highlight=False)

    @jobs_group.command("watch")
    @click.argument("job_id")
    @click.pass_context
    def jobs_watch(ctx: click.Context, job_id: str) -> None:
        """A progress bar until the job ends (it runs elsewhere: serve or a worker)."""
        home = open_home(ctx)
        _report(_follow(home, [jobs.get(home, job_id).id], console, run_here=False), out)

    @jobs_group.command("cancel")
    @click.argument("job_id")
    @click.pass_context
    def jobs_cancel(ctx: click.Context, job_id: str) -> None:
        """Cancel a queued job, or ask a running one to stop at its next progress report."""
        job = jobs.cancel(open_home(ctx), job_id)
        out.print(f"{_line(job)}: {job.status}" + (" (stop requested)" if job.cancel_requested and not job.done
                                                   else ""), highlight=False)

    @main.command("worker")
    @click.option("--threads", default=1, show_default=True, help="Jobs run at once (one per scope).")
    @click.option("--no-learn", is_flag=True, help="Run queued jobs only; do not queue jobs on evidence.")
    @click.option("--engine", type=click.Choice(["inprocess", "ray"]), default="inprocess", show_default=True,
                  help="Where jobs run: threads of this process, or tasks on a Ray cluster (the `scale` extra).")
    @click.option("--address", default=None, metavar="HOST:PORT",
                  help="With --engine ray: the Ray head's address (default: Ray's own, e.g. RAY_ADDRESS).")
    @click.pass_context
    def worker_cmd(ctx: click.Context, threads: int, no_learn: bool, engine: str, address: str | None) -> None:
        """Run queued learning jobs and the scheduler (config.json "learn") until Ctrl-C."""
        home = open_home(ctx)
        policy = LearnPolicy.from_config(home.config)
        learn = policy.enabled and not no_learn
        where = f"Ray cluster {address or '(default address)'}" if engine == "ray" else f"{threads} thread(s)"
        console.print(f"crystallise worker on {home.path}: {where}, scheduler "
                      f"{'on' if learn else 'off'}; Ctrl-C stops", highlight=False)
        try:
            executor = RaySupervisor(home, address=address) if engine == "ray" else \
                jobs.InProcessExecutor(home, threads=threads)
        except ImportError as e:
            raise click.ClickException(str(e)) from e
        with executor as ex:
            scheduler = Scheduler(home, policy if learn else LearnPolicy(enabled=False))
            with scheduler.running(ex):
                try:
                    while True:
                        time.sleep(1)
                except KeyboardInterrupt:
                    console.print("stopping after the running jobs finish")
