"""`crystallise bench latency`: a crystallised call against an LLM call, same task, same inputs.

  1. learn the task from --train (labelled, offline; the model-free strategies — lookup, arith,
     strings — so no model runs while learning), gate it and commit it as usual;
  2. take the --data records the committed program answers (the first --n of them);
  3. answer each through `TaskRuntime.answer` twice: at the task's grade (G4: the program tree run
     by the interpreter; LLM-written parts, if any, in their warm sandbox worker) and at G0 (the
     LLM, --model, no cache), after one warm-up call each;
  4. report per-call latency (median, p95) of both, their accuracy on those same records, and
     the speed-up (median LLM / median code);
  5. the same records through a program whose one part is LLM-written source (it returns the
     number the arith rule would, computed by Python in the sandbox): the warm cost of sandboxed
     code — process isolation, the pipe round trip, the host's checks of the reply — over the
     calls that program answered (on the others it abstains and the LLM answers: not timed).

The code path is the serving path — runtime, program dispatch, interpreter, output schema — not
a bare function call; the LLM path includes prompt building and parsing.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import click

from crystallise.errors import ValidationError
from crystallise.gate import score_exact, score_numeric
from crystallise.harness.runtime import TaskRuntime, close_sandboxes
from crystallise.harness.spec import TaskSpec, View
from crystallise.engine.home import Home
from crystallise.engine.loop import Loop, LoopConfig
from crystallise.testing import read_jsonl

METRICS = {"numeric": score_numeric, "exact": score_exact}


def _load(path: Path) -> list[dict[str, Any]]:
    rows = [row for _, row in read_jsonl(path)]
    return [r for r in rows if "target" in r and ("context" in r or "input" in r)]


def _x(rec: dict[str, Any]) -> Any:
    return rec["context"] if "context" in rec else rec["input"]


def _timed(rt: TaskRuntime, records: list[dict[str, Any]], metric: Any, repeat: int = 1) -> tuple[list[float],
                                                                                                   list[bool], list]:
    times, right, served = [], [], []
    for _ in range(repeat):
        for rec in records:
            t0 = time.perf_counter()
            ans = rt.answer(_x(rec), record=rec)
            times.append(time.perf_counter() - t0)
            right.append(ans.output is not None and bool(metric(ans.output, rec["target"])))
            served.append(ans.served_by)
    return times, right[: len(records)], served


_SANDBOXED = """import re


def solve(x):
    amounts = [float(a.replace(",", "")) for a in re.findall(r"\\$([0-9][0-9,]*(?:\\.[0-9]+)?)", x)]
    return str(round(amounts[0] / amounts[-1], 2)) if len(amounts) >= 2 and amounts[-1] else None
"""


def _sandboxed_runtime(task: str, spec: TaskSpec, llm: Any) -> TaskRuntime:
    """A runtime whose program is one LLM-written part (runs in the sandbox) over every input."""
    from crystallise.harness.programs import FORMAT, render

    tree = {"format": FORMAT, "parts": [{"strategy": "coder", "units": None, "hybrid": False, "body": {
        "kind": "grouped", "mode": "none", "groups": [{
            "unit": "", "prefix": "", "suffix": "", "arg_keys": None,
            "codec": {"kind": "str", "true": "True", "false": "False"},
            "fn": {"kind": "source", "source": _SANDBOXED}}]}}]}
    g4 = TaskSpec(**{**spec.__dict__, "name": task, "grade": "G4"})
    files = {f"tasks/{task}/code.py": render(tree), f"tasks/{task}/program.json": json.dumps({"program": tree})}
    return TaskRuntime(g4, View(files.get), llm, examples_k=0)


def _stats(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"median_ms": round(statistics.median(ordered) * 1000, 4),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000, 4),
            "calls": len(ordered)}


@click.command()
@click.option("--train", "train_path", type=click.Path(path_type=Path), required=True)
@click.option("--data", "data_path", type=click.Path(path_type=Path), required=True)
@click.option("--model", default="local", show_default=True, help="The LLM to compare against.")
@click.option("--metric", type=click.Choice(sorted(METRICS)), default="numeric", show_default=True)
@click.option("--n", "n_records", type=int, default=20, show_default=True,
              help="Records answered by both (the first the program answers).")
@click.option("--code-repeat", type=int, default=20, show_default=True, help="Passes of the code path over them.")
@click.option("--task", "task_name", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def command(ctx: click.Context, train_path: Path, data_path: Path, model: str, metric: str, n_records: int,
            code_repeat: int, task_name: str | None, as_json: bool) -> None:
    """Latency and accuracy of the crystallised program vs the LLM on the same records."""
    from rich.console import Console

    console = Console(stderr=True)
    score = METRICS[metric]
    home = Home.open(ctx.obj["home_path"])
    task = task_name or f"latency-{time.strftime('%H%M%S')}"
    llm = home.backend(model)
    spec = TaskSpec(name=task, description="Answer the question. Reply with the final answer only, no explanation.",
                    metric=metric, max_tokens=24)
    loop = Loop(home, spec, llm, score, LoopConfig(learners=("crystallise",), strategies=("lookup", "arith",
                                                                                              "strings")))
    for rec in _load(train_path):
        loop.record_labelled(_x(rec), rec["target"])
    console.log("learning from the training records ...")
    report = loop.learn()
    if not report.committed:
        raise ValidationError("nothing was crystallised from --train: no program to time")
    code_rt = loop.runtime()
    chosen = []
    for rec in _load(data_path):
        if code_rt.answer(_x(rec), record=rec).served_by == "code":
            chosen.append(rec)
        if len(chosen) >= n_records:
            break
    if not chosen:
        raise ValidationError("the program answers none of the --data records")
    console.log(f"timing {len(chosen)} records: code x{code_repeat}, LLM x1 ...")
    code_t, code_ok, code_by = _timed(code_rt, chosen, score, repeat=code_repeat)
    llm_rt = TaskRuntime(View(lambda _p: None).spec(task) or spec, View(lambda _p: None), llm, examples_k=0)
    llm_rt.answer(_x(chosen[0]), record=chosen[0])  # warm-up: loads the model
    llm_t, llm_ok, _ = _timed(llm_rt, chosen, score)
    box_rt = _sandboxed_runtime(task, spec, llm)
    box_rt.answer(_x(chosen[0]), record=chosen[0])  # warm-up: starts the worker
    box_t, _, box_by = _timed(box_rt, chosen, score, repeat=code_repeat)
    close_sandboxes()
    # the sandboxed path's latency is that of the calls its program answered (the others fell back to the LLM)
    code_s, llm_s = _stats(code_t), _stats(llm_t)
    box_s = _stats([t for t, by in zip(box_t, box_by) if by == "code"] or [float("nan")])
    result = {
        "task": task, "model": model, "records": len(chosen),
        "code": {**code_s, "accuracy": round(sum(code_ok) / len(chosen), 4), "served_by_code": code_by.count("code")},
        "llm": {**llm_s, "accuracy": round(sum(llm_ok) / len(chosen), 4)},
        "speedup_median": round(llm_s["median_ms"] / max(code_s["median_ms"], 1e-9), 1),
        "speedup_p95": round(llm_s["p95_ms"] / max(code_s["p95_ms"], 1e-9), 1),
        "sandboxed": {**box_s, "served_by_code": box_by.count("code")},
    }
    if as_json:
        click.echo(json.dumps(result))
    else:
        console.print(
            f"[bold]{task}[/bold]: {len(chosen)} records\n"
            f"  code: median {code_s['median_ms']} ms, p95 {code_s['p95_ms']} ms, accuracy "
            f"{result['code']['accuracy']:.1%}\n"
            f"  LLM ({model}): median {llm_s['median_ms']:.0f} ms, p95 {llm_s['p95_ms']:.0f} ms, accuracy "
            f"{result['llm']['accuracy']:.1%}\n"
            f"  speed-up (median) {result['speedup_median']:,}x\n"
            f"  sandboxed LLM-written code: median {box_s['median_ms']} ms, p95 {box_s['p95_ms']} ms "
            f"({box_by.count('code')}/{len(box_by)} served by code)")
