"""`crystallise bench pbe`: programming by example on the normalised PBE files.

Each line of --data is `{"task", "examples": [{"inputs": [...], "output": ...}], ...}`
(`shared/data/pbe/`). Per task:

  1. the first K examples are *shown* (K = --train-k, default 3; a task with K or fewer
     examples shows all but its last one, so every task keeps at least one held-out example);
  2. the strings strategy synthesises a program from the shown examples only, within
     --budget-s seconds;
  3. the program (its tree, by the interpreter of `crystallise.harness.programs`) runs on each held-out
     example; an answer counts when it equals the expected output as a JSON value (an Int
     output must be that int, not "3" or 3.0). None from the program, or no program, is an
     abstention; an exception or a sandbox limit is an error.

Reported: `solved_fraction` (tasks whose held-out examples are all exact), `example_accuracy`,
`abstain_rate`, `error_rate`, `synthesis_s_mean`, and the same for an exact-input cache of the
shown examples (the floor: it answers only inputs it was shown). SyGuS files list tasks with
identical examples in `same_examples_as`; `*_distinct` figures count each such group once.
No LLM is called. Writes report.md and results.json to --out; --json prints the summary.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import click

from crystallise.errors import ValidationError
from crystallise.harness.programs.interp import strings_fn
from crystallise.harness.synth.strings import StringStrategy
from crystallise.testing import read_jsonl

OUTCOMES = ("ok", "wrong", "abstain", "error")


def load_tasks(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Task records of a PBE JSONL file; a clear error names the line of a bad one."""
    tasks: list[dict[str, Any]] = []
    for n, rec in read_jsonl(path, what="task", hint="pass --data PATH to a PBE JSONL file"):
        examples = rec.get("examples") if isinstance(rec, dict) else None
        if not isinstance(examples, list) or not all(
            isinstance(x, dict) and isinstance(x.get("inputs"), list) and "output" in x for x in examples
        ):
            raise ValidationError(f'{path}:{n}: a task needs "examples": [{{"inputs": [...], "output": ...}}]')
        rec.setdefault("task", f"line{n}")
        tasks.append(rec)
        if limit and len(tasks) >= limit:
            break
    if not tasks:
        raise ValidationError(f"{path} holds no tasks")
    return tasks


def split(examples: list[dict[str, Any]], train_k: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(shown, held-out): the first K, but never all of them."""
    k = max(1, min(train_k, len(examples) - 1)) if len(examples) > 1 else len(examples)
    return examples[:k], examples[k:]


def same(a: Any, b: Any) -> bool:
    """Exact match as JSON values: 3 != "3" != 3.0 != True."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def run_task(task: dict[str, Any], train_k: int, budget_s: float, strategy: StringStrategy) -> dict[str, Any]:
    """Synthesise from the shown examples, then score program and cache on the held-out ones."""
    shown, held = split(task["examples"], train_k)
    t0 = time.perf_counter()
    program = strategy.search([(x["inputs"], x["output"]) for x in shown], budget_s=budget_s)
    seconds = time.perf_counter() - t0
    outcomes: list[str] = []
    if program is None:
        outcomes = ["abstain"] * len(held)
    elif held:
        fn = strings_fn(program.tree)
        for x in held:  # the program as served: its tree, run by the interpreter
            try:
                got = fn(*x["inputs"])
            except Exception:  # noqa: BLE001 - counted, never fatal to the benchmark
                outcomes.append("error")
                continue
            outcomes.append("abstain" if got is None else "ok" if same(got, x["output"]) else "wrong")
    table = {json.dumps(x["inputs"], sort_keys=True): x["output"] for x in shown}
    cache = []
    for x in held:
        hit = table.get(json.dumps(x["inputs"], sort_keys=True), None)
        cache.append("abstain" if hit is None else "ok" if same(hit, x["output"]) else "wrong")
    return {
        "task": task["task"],
        "signature": task.get("signature"),
        "n_shown": len(shown),
        "n_heldout": len(held),
        "program": program.expr.render() if program else None,
        "cost": program.expr.cost if program else None,
        "synthesis_s": round(seconds, 3),
        "outcomes": outcomes,
        "solved": bool(held) and all(o == "ok" for o in outcomes),
        "cache_outcomes": cache,
        "cache_solved": bool(held) and all(o == "ok" for o in cache),
    }


def distinct(tasks: list[dict[str, Any]]) -> set[str]:
    """Names of one representative per group of tasks with identical examples (`same_examples_as`)."""
    names = [t["task"] for t in tasks]
    parent = {n: n for n in names}

    def root(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for t in tasks:
        for other in t.get("same_examples_as") or []:
            if other in parent:
                a, b = root(t["task"]), root(other)
                if a != b:
                    parent[max(a, b, key=names.index)] = min(a, b, key=names.index)
    return {n for n in names if root(n) == n}


def summarise(results: list[dict[str, Any]], reps: set[str], prefix: str = "") -> dict[str, Any]:
    """Task- and example-level figures for program (`outcomes`) or cache (`cache_outcomes`)."""
    key, solved = f"{prefix}outcomes", f"{prefix}solved"
    scored = [r for r in results if r["n_heldout"]]
    scored_d = [r for r in scored if r["task"] in reps]
    flat = [o for r in scored for o in r[key]]
    n = max(1, len(flat))
    return {
        "solved_fraction": round(sum(r[solved] for r in scored) / max(1, len(scored)), 4),
        "solved_fraction_distinct": round(sum(r[solved] for r in scored_d) / max(1, len(scored_d)), 4),
        "example_accuracy": round(flat.count("ok") / n, 4),
        "abstain_rate": round(flat.count("abstain") / n, 4),
        "error_rate": round(flat.count("error") / n, 4),
        "solved": sum(r[solved] for r in scored),
    }


@click.command()
@click.option("--data", "data_path", type=click.Path(path_type=Path), required=True, help="PBE JSONL file.")
@click.option("--train-k", type=int, default=3, show_default=True,
              help="Examples shown to the synthesiser (a task with <= K examples shows all but one).")
@click.option("--budget-s", type=float, default=5.0, show_default=True, help="Synthesis time per task.")
@click.option("--limit", type=int, default=None, help="Use the first N tasks.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Report folder [default: reports/pbe-<data stem>].")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.pass_context
def command(ctx: click.Context, data_path: Path, train_k: int, budget_s: float, limit: int | None,
            out_dir: Path | None, as_json: bool) -> None:
    """Synthesise a program per task from K examples; score it on the rest in the sandbox."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if train_k < 1 or budget_s <= 0:
        raise ValidationError("--train-k must be at least 1 and --budget-s above 0")
    console = Console(stderr=True)
    tasks = load_tasks(data_path, limit)
    strategy = StringStrategy()
    out = out_dir or Path("reports") / f"pbe-{data_path.stem}"
    start = time.perf_counter()
    results: list[dict[str, Any]] = []
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=not console.is_terminal) as bar:
        job = bar.add_task("pbe", total=len(tasks))
        step = max(1, len(tasks) // 20)
        for i, task in enumerate(tasks, 1):
            results.append(run_task(task, train_k, budget_s, strategy))
            solved = sum(r["solved"] for r in results)
            line = f"pbe: solved {solved}/{i} ({task['task']})"
            bar.update(job, advance=1, description=line)
            if not console.is_terminal and (i % step == 0 or i == len(tasks)):
                console.log(f"{i}/{len(tasks)} {line}")
    reps = distinct(tasks)
    summary: dict[str, Any] = {
        "data": str(data_path),
        "tasks": len(tasks),
        "tasks_distinct": len(reps),
        "tasks_scored": sum(1 for r in results if r["n_heldout"]),
        "heldout_examples": sum(r["n_heldout"] for r in results),
        "train_k": train_k,
        "budget_s": budget_s,
        **summarise(results, reps),
        "programs_found": round(sum(r["program"] is not None for r in results) / len(results), 4),
        "synthesis_s_mean": round(sum(r["synthesis_s"] for r in results) / len(results), 3),
        "llm_calls": 0,
        "cache": summarise(results, reps, "cache_"),
        "wall_s": round(time.perf_counter() - start, 1),
        "cpus": os.cpu_count(),
    }
    _write(out, summary, results)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        console.print(_line(summary, out))


def _write(out: Path, summary: dict[str, Any], results: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"summary": summary, "tasks": results}, indent=1) + "\n")
    rows = "\n".join(f"| {k} | {v} |" for k, v in summary.items() if k != "cache")
    cache = "\n".join(f"| cache {k} | {v} |" for k, v in summary["cache"].items())
    per_task = "\n".join(
        f"| {r['task']} | {r['n_shown']}/{r['n_heldout']} | {'yes' if r['solved'] else 'no'} | "
        f"{' '.join(o[0] for o in r['outcomes'])} | `{(r['program'] or '-').replace('|', '/')[:120]}` |"
        for r in results
    )
    (out / "report.md").write_text(
        f"# PBE benchmark: `{summary['data']}`\n\n"
        f"Synthesis from the first {summary['train_k']} examples of each task (all but one where a task has\n"
        f"no more), scored by exact match in the sandbox on the rest. Budget {summary['budget_s']} s per task.\n\n"
        f"| field | value |\n|---|---|\n{rows}\n{cache}\n\n"
        "## Tasks\n\nOutcomes per held-out example: o = ok, w = wrong, a = abstain, e = error.\n\n"
        f"| task | shown/held-out | solved | outcomes | program |\n|---|---|---|---|---|\n{per_task}\n"
    )


def _line(s: dict[str, Any], out: Path) -> str:
    c = s["cache"]
    return (
        f"[bold]pbe[/bold] {s['data']}: {s['tasks']} tasks ({s['tasks_distinct']} distinct), K={s['train_k']}\n"
        f"  solved {s['solved_fraction']:.1%} (distinct {s['solved_fraction_distinct']:.1%})   "
        f"example accuracy {s['example_accuracy']:.1%}   abstain {s['abstain_rate']:.1%}   "
        f"synthesis {s['synthesis_s_mean']:.2f} s/task\n"
        f"  exact-input cache: solved {c['solved_fraction']:.1%}   example accuracy {c['example_accuracy']:.1%}\n"
        f"  report: {out / 'report.md'}"
    )
