"""`crystallise bench bbh`: the stream benchmark over every BIG-Bench-Hard file, one table.

For each `<task>.jsonl` in --data-dir (`shared/data/bbh/`, records with the recorded LLM answers
`llm_direct` / `llm_cot`):

  1. split by position: the first half is the training stream, the second half is evaluated
     (`--train-share`, default 0.5; the files are in upstream order, which is not sorted by answer);
  2. the training half is imported as labelled traces and the crystallise learner runs once
     (offline, label-only): lookup, arith, strings and — with --coder-model — LLM-written code;
     a quarter of the training half (by hash) are the gate's cases, on which the candidate must
     beat or match the *recorded* LLM with no regression;
  3. the evaluation half is answered with learning on (crystallised code first, the recorded LLM
     when the code abstains) and off (the recorded LLM alone), scored by exact match.

Reported per task: accuracy of the recorded LLM and of the learning arm, the lift, the share of
answers served by code and how many of those were right. Writes results.json, report.md and
bbh.png to --out; --json prints the summary.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import click

from crystallise.errors import ValidationError
from crystallise.report import pyplot
from crystallise.harness.runtime import close_sandboxes
from crystallise.engine.home import Home
from crystallise.engine.loop import LoopConfig

from . import stream


class DiskCache:
    """A coder backend whose repeatable replies (temperature 0, or sampled with a seed) are kept in
    a JSON file, so a second run (the same training halves with another recorded LLM) gets the
    same code without the model. The file is a plain map of request hash -> reply text."""

    def __init__(self, inner: Any, path: Path) -> None:
        self.inner, self.name, self.path = inner, inner.name, path
        self.memo: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
        self.hits = 0

    def complete(self, request: Any) -> Any:
        from crystallise.backends.base import Completion

        extra = [] if request.temperature == 0 else [request.temperature, request.seed]
        key = hashlib.sha256(json.dumps([self.name, [[m.role, m.content] for m in request.messages],
                                         request.schema, request.max_tokens, *extra], sort_keys=True).encode()
                             ).hexdigest()
        repeatable = request.temperature == 0 or request.seed is not None
        if repeatable and key in self.memo:
            self.hits += 1
            return Completion(text=self.memo[key], model=self.name)
        completion = self.inner.complete(request)
        if repeatable:
            self.memo[key] = completion.text
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.memo, indent=0, sort_keys=True))
        return completion


def run_task(home: Home, path: Path, model: str, config: LoopConfig, train_share: float, limit: int | None,
             stamp: str, coder: Any = None) -> dict[str, Any]:
    from crystallise.harness.learn import CrystalliseLearner

    records = stream.load_records(path, limit)
    cut = max(1, int(len(records) * train_share))
    train, test = records[:cut], records[cut:]
    task = f"bbh-{path.stem.replace('_', '-')[:40]}-{stamp}"
    start = time.perf_counter()
    run = stream.Run(home, task, model, "exact", config, records=records)
    if coder is not None:  # the cached coder in place of the one the loop made from config.coder_model
        run.loop.crystallise = CrystalliseLearner(run.metric, budget_s=config.synth_budget_s,
                                                  strategies=config.strategies, coder=coder, extractor=run.backend)
    for rec in train:
        run.step(rec, learn=True, baseline=False, label_only=True)
    report = run.loop.learn()
    learn_s = time.perf_counter() - start
    for rec in test:
        run.step(rec, learn=False, baseline=True)
    close_sandboxes()
    result = stream._result(run, "offline", run.learn_flags, run.base_flags, 0, task, model, "exact",
                            time.perf_counter() - start)
    code_right = sum(1 for f, s in zip(run.learn_flags, run.served_by) if f and s == "code")
    proposed = report.proposed[0] if report.proposed else None
    return {
        "task": path.stem,
        "n_train": len(train),
        "n_eval": len(test),
        "accuracy_llm": result["accuracy_baseline"],
        "accuracy_learning": result["accuracy_learning"],
        "lift": result["gain"],
        "served_by_code": result["served_by_code"],
        "code_answers": run.served_by.count("code"),
        "code_correct": code_right,
        "committed": bool(report.committed),
        "verdict": proposed.verdict.reason if proposed and proposed.verdict else None,
        "strategies": proposed.evidence.get("strategies") if proposed else [],
        "learn_s": round(learn_s, 1),
        "wall_s": result["wall_s"],
        "home_task": task,
    }


@click.command()
@click.option("--data-dir", type=click.Path(path_type=Path), required=True, help="Folder of BBH JSONL files.")
@click.option("--model", default="replay:llm_direct", show_default=True,
              help="The LLM: replay:llm_direct or replay:llm_cot (recorded answers), or any model spec.")
@click.option("--coder-model", default=None, help="Model for LLM-written code (e.g. local:qwen2.5-coder-1.5b).")
@click.option("--coder-cache", type=click.Path(path_type=Path), default=None,
              help="JSON file of the coder's replies (temperature 0), reused by a later run.")
@click.option("--strategies", default="lookup,arith,strings,coder", show_default=True)
@click.option("--tasks", default=None, help="Comma-separated task names (file stems); default all.")
@click.option("--train-share", type=float, default=0.5, show_default=True,
              help="Leading share of each file used as the training stream.")
@click.option("--limit", type=int, default=None, help="Use the first N records of each file.")
@click.option("--gate-cases", type=int, default=48, show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("reports/bbh"), show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.pass_context
def command(ctx: click.Context, data_dir: Path, model: str, coder_model: str | None, coder_cache: Path | None,
            strategies: str, tasks: str | None, train_share: float, limit: int | None, gate_cases: int, out_dir: Path,
            as_json: bool) -> None:
    """BIG-Bench-Hard: per task, how far crystallisation lifts accuracy above the recorded LLM."""
    from rich.console import Console

    console = Console(stderr=True)
    files = sorted(data_dir.glob("*.jsonl")) if data_dir.is_dir() else []
    if tasks:
        wanted = {t.strip() for t in tasks.split(",") if t.strip()}
        files = [f for f in files if f.stem in wanted]
        missing = wanted - {f.stem for f in files}
        if missing:
            raise ValidationError(f"no BBH file for {sorted(missing)} in {data_dir}")
    if not files:
        raise ValidationError(f"no *.jsonl files in {data_dir} (pass --data-dir to shared/data/bbh)")
    if not 0 < train_share < 1:
        raise ValidationError("--train-share must be between 0 and 1")
    chosen = stream._strategies(strategies)
    config = LoopConfig(learners=("crystallise",), gate_max_cases=gate_cases, strategies=chosen,
                        coder_model=coder_model)
    home = Home.open(ctx.obj["home_path"])
    coder = DiskCache(home.backend(coder_model), coder_cache) if coder_model and coder_cache else None
    stamp = time.strftime("%H%M%S")
    rows = []
    for f in files:
        console.log(f"bbh: {f.stem} ...")
        rows.append(run_task(home, f, model, config, train_share, limit, stamp, coder))
        r = rows[-1]
        console.log(f"bbh: {f.stem}: LLM {r['accuracy_llm']:.1%} -> {r['accuracy_learning']:.1%} "
                    f"(code {r['served_by_code']:.0%}, {r['strategies'] or '-'}, learn {r['learn_s']} s)")
    n = sum(r["n_eval"] for r in rows)
    summary = {
        "model": model,
        "coder_model": coder_model,
        "strategies": chosen,
        "train_share": train_share,
        "tasks": len(rows),
        "eval_examples": n,
        "accuracy_llm": round(sum(r["accuracy_llm"] * r["n_eval"] for r in rows) / n, 4),
        "accuracy_learning": round(sum(r["accuracy_learning"] * r["n_eval"] for r in rows) / n, 4),
        "served_by_code": round(sum(r["code_answers"] for r in rows) / n, 4),
        "code_precision": round(sum(r["code_correct"] for r in rows) / max(1, sum(r["code_answers"] for r in rows)),
                                4),
        "tasks_lifted": sum(1 for r in rows if r["lift"] > 0),
        "tasks_hurt": sum(1 for r in rows if r["lift"] < 0),
        "coder_cache_hits": coder.hits if coder else None,
        "per_task": rows,
    }
    summary["lift"] = round(summary["accuracy_learning"] - summary["accuracy_llm"], 4)
    _write(out_dir, summary)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        console.print(_table(summary) + f"\nreport: {out_dir / 'report.md'}")


def _table(s: dict[str, Any]) -> str:
    head = "| task | eval | recorded LLM | crystallised | lift | served by code | code right | strategies |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in s["per_task"]:
        how = "+".join(r["strategies"] or []) or "-"
        if r["strategies"] and not r["committed"]:
            how += " (gate rejected)"
        lines.append(f"| {r['task']} | {r['n_eval']} | {r['accuracy_llm']:.1%} | {r['accuracy_learning']:.1%} | "
                     f"{r['lift']:+.1%} | {r['served_by_code']:.1%} | {r['code_correct']}/{r['code_answers']} | "
                     f"{how} |")
    lines.append(f"| **all** | {s['eval_examples']} | {s['accuracy_llm']:.1%} | {s['accuracy_learning']:.1%} | "
                 f"{s['lift']:+.1%} | {s['served_by_code']:.1%} | {s['code_precision']:.1%} precision | |")
    return "\n".join(lines)


def _write(out: Path, s: dict[str, Any]) -> None:
    plt = pyplot()  # matplotlib (the bench extra), or an ImportError that names it

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(s, indent=1) + "\n")
    rows = s["per_task"]
    fig, ax = plt.subplots(figsize=(11, 5.5))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["accuracy_llm"] for r in rows], 0.4, label=f"recorded LLM ({s['model']})")
    ax.bar([x + 0.2 for x in xs], [r["accuracy_learning"] for r in rows], 0.4, label="crystallised (code first)")
    ax.scatter(list(xs), [r["served_by_code"] for r in rows], color="black", marker="x", zorder=3,
               label="share served by code")
    ax.set_xticks(list(xs), [r["task"].replace("_", " ") for r in rows], fontsize=8, rotation=35, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("exact-match accuracy (second half of each file)")
    ax.set_title("BIG-Bench-Hard: crystallisation over recorded LLM answers")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "bbh.png", dpi=120)
    plt.close(fig)
    (out / "report.md").write_text(
        f"# BIG-Bench-Hard stream benchmark\n\nLLM `{s['model']}`, coder `{s['coder_model']}`, strategies "
        f"{', '.join(s['strategies'])}; first {s['train_share']:.0%} of each file trains, the rest is scored.\n\n"
        f"{_table(s)}\n\n![per task](bbh.png)\n")
