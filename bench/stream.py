"""`crystallise bench stream`: the StreamBench protocol over a JSONL of records.

Each record is `{"context" or "input": ..., "target": ...}` (extra fields allowed; the
replay backend reads them). Two arms run side by side on the same model:

  learning   the crystallise loop: answered with the current artifacts, feedback
             recorded, learners + gate run every --learn-every records
  baseline   the same model and prompt with learning off

  --mode online    one pass over --data, learning as the stream goes
  --mode offline   learn over --train (--epochs passes), freeze, answer --data

Scoring: --metric numeric (default; the ACE Formula rule: float equality after removing
commas, string equality when either side is not a number) or exact.

Crystallisation: --strategies (default lookup,arith,strings,coder,hybrid; coder and hybrid
run only with --coder-model). `served_by_code` counts answers of code alone; `served_by_hybrid`
answers whose fields the LLM extracted and code computed; `served_by_program` both.
Writes curve.png, report.md and result.json to --out; --json prints result.json.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import click

from crystallise.errors import ValidationError
from crystallise.gate import score_exact, score_numeric
from crystallise.harness.runtime import TaskRuntime, close_sandboxes
from crystallise.harness.spec import TaskSpec, View
from crystallise.engine.home import Home
from crystallise.harness.learn import DEFAULT_STRATEGIES
from crystallise.engine.loop import KNOWN_LEARNERS, LEARNERS, CachedBackend, Loop, LoopConfig
from crystallise.report import learning_curve
from crystallise.testing import read_jsonl

METRICS = {"numeric": score_numeric, "exact": score_exact}
INSTRUCTIONS = "Answer the question. Reply with the final answer only, no explanation."


def load_records(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Records of a JSONL file; a clear error names the line of any bad one."""
    records: list[dict[str, Any]] = []
    for n, rec in read_jsonl(path):
        if not isinstance(rec, dict) or "target" not in rec or not ({"context", "input"} & rec.keys()):
            raise ValidationError(
                f'{path}, line {n}: each record needs "target" and one of "context" / "input" '
                f"(got keys {sorted(rec) if isinstance(rec, dict) else type(rec).__name__})"
            )
        records.append(rec)
        if limit and len(records) >= limit:
            break
    if not records:
        raise ValidationError(f"{path} holds no records")
    return records


def record_input(rec: dict[str, Any]) -> Any:
    return rec["context"] if "context" in rec else rec["input"]


class RecordLookup:
    """A replay backend that also answers requests without a record, by finding the record whose
    input is the request's last user message. The gate asks the task's LLM about its gate cases
    with no record attached; without this a replayed LLM would fail every one of them and the
    gate would compare new code against nothing instead of against the recorded answers."""

    def __init__(self, inner: Any, records: list[dict[str, Any]]) -> None:
        self.inner, self.name = inner, inner.name
        self.by_input = {str(record_input(r)): r for r in records}

    def complete(self, request: Any) -> Any:
        if "record" not in request.metadata:
            users = [m.content for m in request.messages if m.role == "user"]
            record = self.by_input.get(users[-1]) if users else None
            if record is not None:
                request = dataclasses.replace(request, metadata={**request.metadata, "record": record})
        return self.inner.complete(request)


class Run:
    """Both arms over one backend, with the per-record bookkeeping the report needs."""

    def __init__(self, home: Home, task: str, model: str, metric: str, config: LoopConfig,
                 reflect_model: str | None = None, records: list[dict[str, Any]] | None = None) -> None:
        self.metric = METRICS[metric]
        inner = home.backend(model)
        if model.startswith("replay:") and records:
            inner = RecordLookup(inner, records)
        self.backend = CachedBackend(inner)
        reflect = CachedBackend(home.backend(reflect_model)) if reflect_model else None
        spec = TaskSpec(name=task, description=INSTRUCTIONS, metric=metric, max_tokens=24)
        self.loop = Loop(home, spec, self.backend, self.metric, config, reflect_backend=reflect)
        self.baseline = TaskRuntime(spec, View(lambda _p: None), self.backend, examples_k=0)
        self.v0 = len(self.loop.versions())
        self.learn_flags: list[bool] = []
        self.base_flags: list[bool] = []
        self.served_code: list[bool] = []
        self.served_by: list[str] = []
        self.context_tokens: list[int] = []
        self.llm_calls = 0
        self.markers: list[int] = []

    def step(self, rec: dict[str, Any], *, learn: bool, baseline: bool, label_only: bool = False) -> None:
        x, target = record_input(rec), rec["target"]
        if label_only:  # import a labelled record as a trace with its verified answer; no model call
            self.loop.record_labelled(x, target)
            return
        ans, trace_id = self.loop.answer(x, record=rec)
        ok = ans.output is not None and bool(self.metric(ans.output, target))
        if learn:
            self.loop.feedback(trace_id, target, ok)
        self.learn_flags.append(ok)
        self.served_code.append(ans.served_by == "code")
        self.served_by.append(ans.served_by)
        self.context_tokens.append(ans.context_tokens)
        self.llm_calls += ans.llm_calls
        if baseline:
            b = self.baseline.answer(x, record=rec)
            self.base_flags.append(b.output is not None and bool(self.metric(b.output, target)))

    def learn(self, at: int, say: Any) -> None:
        report = self.loop.learn(progress=say)
        if report.committed:
            self.markers.append(at)
        say(f"learn @ {at}: {report.line()}")


@click.command()
@click.option("--data", "data_path", type=click.Path(path_type=Path), required=True, help="JSONL records to answer.")
@click.option("--model", default="local", show_default=True, help="local, local:NAME, openai:MODEL, replay:FIELD.")
@click.option("--mode", type=click.Choice(["online", "offline"]), default="online", show_default=True)
@click.option("--train", "train_path", type=click.Path(path_type=Path), default=None, help="Training JSONL (offline).")
@click.option("--limit", type=int, default=None, help="Use the first N records of --data.")
@click.option("--train-limit", type=int, default=None, help="Use the first N records of --train.")
@click.option("--epochs", type=int, default=1, show_default=True)
@click.option("--label-only", is_flag=True,
              help="Offline: import --train as labelled traces instead of answering them first (faster; "
                   "reflection then has no failures to learn from).")
@click.option("--gate-cases", type=int, default=48, show_default=True, help="Most cases the gate evaluates.")
@click.option("--metric", type=click.Choice(sorted(METRICS)), default="numeric", show_default=True)
@click.option("--learn-every", type=int, default=None,
              help="Run the learners every N records [default: 50; with --label-only, once after --train].")
@click.option("--learners", default=",".join(LEARNERS), show_default=True)
@click.option("--strategies", default=",".join(DEFAULT_STRATEGIES), show_default=True,
              help="Synthesis strategies of the crystallise learner, cheapest first (coder and hybrid need "
                   "--coder-model).")
@click.option("--coder-model", default=None,
              help="Model that writes code for the coder and hybrid strategies (e.g. local:qwen2.5-coder-1.5b).")
@click.option("--synth-budget-s", type=float, default=2.0, show_default=True,
              help="Seconds per enumerative search (per arith group, per strings group).")
@click.option("--reflect-model", default=None,
              help="Model for reflection (default: --model; required for reflection with replay:FIELD).")
@click.option("--task", "task_name", default=None, help="Task name (default: stream-<data stem>-<time>).")
@click.option("--seed", type=int, default=0, show_default=True, help="Shuffles --train when > 0.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None, help="Report folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.pass_context
def command(ctx: click.Context, data_path: Path, model: str, mode: str, train_path: Path | None, limit: int | None,
            train_limit: int | None, epochs: int, label_only: bool, gate_cases: int, metric: str,
            learn_every: int | None, learners: str, strategies: str, coder_model: str | None, synth_budget_s: float,
            reflect_model: str | None, task_name: str | None, seed: int, out_dir: Path | None, as_json: bool) -> None:
    """StreamBench: answer a stream with learning on vs off; report the gain."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if mode == "offline" and train_path is None:
        raise ValidationError("--mode offline needs --train PATH (the records to learn from)")
    if learn_every is None:
        learn_every = 10**9 if (label_only and mode == "offline") else 50
    if learn_every < 1 or epochs < 1:
        raise ValidationError("--learn-every and --epochs must be at least 1")
    chosen = [s.strip() for s in learners.split(",") if s.strip()]
    unknown = set(chosen) - set(KNOWN_LEARNERS)
    if unknown:
        raise ValidationError(f"unknown learner(s) {sorted(unknown)}: choose from {', '.join(KNOWN_LEARNERS)}")
    if model.startswith("replay:") and "reflection" in chosen and not reflect_model:
        chosen.remove("reflection")
        console.print("reflection off: a replay model only answers benchmark records (pass --reflect-model to use one)")
    data = load_records(data_path, limit)
    train = load_records(train_path, train_limit) if train_path else []
    if seed > 0:
        import random

        random.Random(seed).shuffle(train)
    home = Home.open(ctx.obj["home_path"])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    task = task_name or f"stream-{data_path.stem.replace('_', '-').lower()[:40]}-{stamp}"
    out = out_dir or Path("reports") / task
    start = time.perf_counter()
    config = LoopConfig(learners=chosen, gate_max_cases=gate_cases, strategies=_strategies(strategies),
                        coder_model=coder_model, synth_budget_s=synth_budget_s)
    run = Run(home, task, model, metric, config, reflect_model, records=train + data)
    not_run = run.loop.crystallise.refused if "crystallise" in chosen else {}
    for name, why in not_run.items():  # e.g. BBH tasks that only LLM-written code can answer
        console.print(f"strategy {name} not run: {why}")
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=not console.is_terminal) as bar:
        def say(msg: str) -> None:
            if msg.startswith("learn @") or not console.is_terminal:  # piped (make demo, CI): a line each step
                bar.console.log(msg)
            else:
                bar.update(job, description=msg)

        def advance(description: str) -> None:
            """Advance the bar; without a terminal, log a line every 5% instead."""
            bar.update(job, advance=1, description=description)
            done, total = bar.tasks[0].completed, bar.tasks[0].total or 1
            if not console.is_terminal and (int(done) % max(1, int(total) // 20) == 0 or done == total):
                console.log(f"{int(done)}/{int(total)} {description}")

        if mode == "online":
            job = bar.add_task("online", total=len(data))
            for i, rec in enumerate(data, 1):
                run.step(rec, learn=True, baseline=True)
                advance(_acc("online", run))
                if i % learn_every == 0 or i == len(data):
                    run.learn(i, say)
            eval_flags, base_flags, n_train, seen = run.learn_flags, run.base_flags, 0, 0
        else:
            job = bar.add_task("train", total=len(train) * epochs + len(data))
            seen = 0
            for _ in range(epochs):
                for rec in train:
                    run.step(rec, learn=True, baseline=False, label_only=label_only)
                    seen += 1
                    advance(_acc("train", run))
                    if seen % learn_every == 0:
                        run.learn(seen, say)
            run.learn(seen, say)
            n_train = len(run.learn_flags)
            bar.update(job, description="eval")
            for rec in data:
                run.step(rec, learn=False, baseline=True)
                advance(_acc("eval", run, n_train))
            eval_flags, base_flags = run.learn_flags[n_train:], run.base_flags
    close_sandboxes()
    result = _result(run, mode, eval_flags, base_flags, n_train, task, model, metric, time.perf_counter() - start)
    result["train_records"] = seen
    result["strategies_not_run"] = not_run
    _write(out, run, result, data_path, n_train)
    if as_json:
        click.echo(json.dumps(result))
    else:
        console.print(_summary(result, out))


def _strategies(text: str) -> list[str]:
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = set(chosen) - set(DEFAULT_STRATEGIES)
    if unknown:
        raise ValidationError(f"unknown strategies {sorted(unknown)}: choose from {', '.join(DEFAULT_STRATEGIES)}")
    return chosen


def _acc(phase: str, run: Run, skip: int = 0) -> str:
    flags = run.learn_flags[skip:]
    acc = sum(flags) / len(flags) if flags else 0.0
    code = sum(run.served_code[skip:]) / len(flags) if flags else 0.0
    base = f" baseline {sum(run.base_flags) / len(run.base_flags):.0%}" if run.base_flags else ""
    return f"{phase}: learning {acc:.0%}{base} code {code:.0%}"


def _result(run: Run, mode: str, flags: list[bool], base: list[bool], n_train: int, task: str, model: str,
            metric: str, wall_s: float) -> dict[str, Any]:
    n = len(flags)
    served = run.served_code[n_train:]
    by = run.served_by[n_train:]
    tokens = run.context_tokens[n_train:]
    acc_l = sum(flags) / n
    acc_b = sum(base) / n if base else 0.0
    program = [b in ("code", "hybrid") for b in by]
    program_right = sum(1 for p, f in zip(program, flags) if p and f)
    return {
        "n": n,
        "mode": mode,
        "n_train": n_train,
        "accuracy_learning": round(acc_l, 4),
        "accuracy_baseline": round(acc_b, 4),
        "gain": round(acc_l - acc_b, 4),
        "served_by_code": round(sum(served) / n, 4),
        "served_by_hybrid": round(by.count("hybrid") / n, 4),
        "served_by_program": round(sum(program) / n, 4),  # code + hybrid: the answer computed by code
        "program_precision": round(program_right / max(1, sum(program)), 4),
        "llm_calls": run.llm_calls,
        "llm_calls_computed": run.backend.computed,
        "context_tokens_mean": round(sum(tokens) / n, 1),
        "versions_committed": len(run.loop.versions()) - run.v0,
        "wall_s": round(wall_s, 1),
        "task": task,
        "model": model,
        "metric": metric,
    }


def _write(out: Path, run: Run, result: dict[str, Any], data_path: Path, n_train: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    title = f"{result['task']} ({result['model']}, {result['mode']})"
    held_out = {
        "learning": run.learn_flags[n_train:],
        "baseline": run.base_flags,
        "served by code": run.served_code[n_train:],
    }
    if "hybrid" in run.served_by:
        held_out["served by code or hybrid"] = [b in ("code", "hybrid") for b in run.served_by[n_train:]]
    images = ["curve.png"]
    if result["mode"] == "online":
        learning_curve(out / "curve.png", title, held_out, markers=run.markers)
    else:
        learning_curve(out / "curve.png", f"{title}: held-out, after {result['train_records']} training records",
                       held_out, xlabel="held-out records answered")
        if n_train:
            images.append("train-curve.png")
            learning_curve(out / "train-curve.png", f"{title}: training stream",
                           {"learning": run.learn_flags[:n_train], "served by code": run.served_code[:n_train]},
                           markers=run.markers)
    rows = "\n".join(f"| {k} | {v} |" for k, v in result.items())
    pictures = "\n".join(f"![{name}]({name})" for name in images)
    (out / "report.md").write_text(
        f"# Stream benchmark: {result['task']}\n\nData: `{data_path}`\n\n| field | value |\n|---|---|\n{rows}\n\n"
        f"{pictures}\n"
    )


def _summary(r: dict[str, Any], out: Path) -> str:
    return (
        f"[bold]{r['task']}[/bold] ({r['mode']}, {r['model']}, n={r['n']})\n"
        f"  accuracy  learning {r['accuracy_learning']:.1%}   baseline {r['accuracy_baseline']:.1%}   "
        f"gain {r['gain']:+.1%}\n"
        f"  served by code {r['served_by_code']:.1%}   hybrid {r['served_by_hybrid']:.1%}   "
        f"program precision {r['program_precision']:.1%}   LLM calls {r['llm_calls']}   "
        f"context tokens/answer {r['context_tokens_mean']}\n"
        f"  versions committed {r['versions_committed']}   wall {r['wall_s']} s\n"
        f"  report: {out / 'report.md'}   curve: {out / 'curve.png'}"
    )
