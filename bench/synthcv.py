"""`crystallise bench synthcv`: does crystallisation generalise? Cross-validation inside a training file.

The records of --data (`{"context" or "input", "target"}`, e.g. ACE Formula's train split) are
shuffled with each --seeds value and cut in two halves; the model-free strategies (lookup, arith,
strings: no LLM) learn from one half through the same pipeline the crystallise learner runs
(`harness/synth/pipeline.py`: strategies cheapest first, each verified on held-out cases it never
saw), and the program answers the other half; then the halves swap. Reported: accuracy, share
answered by code, precision of those answers, and the templates (the leading sentence) that were
missed most. A score here is on records no learner saw and no choice was tuned on: the check the
issue asks for before trusting a val figure. Prints one JSON object with --json.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click

from crystallise.gate import score_exact, score_numeric
from crystallise.harness.programs import load
from crystallise.harness.synth.base import Case
from crystallise.harness.synth.lookup import LookupStrategy
from crystallise.harness.synth.pipeline import synthesise
from crystallise.harness.synth.strategies import ArithPart, StringsPart
from crystallise.harness.synth.template import key_of

from . import stream

METRICS = {"numeric": score_numeric, "exact": score_exact}


def one_fold(train: list[dict[str, Any]], test: list[dict[str, Any]], metric: Any, budget_s: float,
             missed: Counter) -> dict[str, Any]:
    cases = [Case(stream.record_input(r), r["target"], f"r{i}") for i, r in enumerate(train)]
    start = time.perf_counter()
    found = synthesise("cv", cases, [LookupStrategy(), ArithPart(), StringsPart()], metric,
                       numeric=metric is score_numeric, budget_s=budget_s)
    program = load(found.program) if found else None
    answered = right = 0
    for r in test:
        x = stream.record_input(r)
        out = program.solve(x) if program else None
        ok = out is not None and bool(metric(out, r["target"]))
        answered += out is not None
        right += ok
        if not ok:
            template = str(key_of(x, "sentence"))[:80] if isinstance(x, str) else "-"
            missed[(template, "abstain" if out is None else "wrong")] += 1
    return {"n": len(test), "right": right, "answered": answered, "learn_s": round(time.perf_counter() - start, 1)}


@click.command()
@click.option("--data", "data_path", type=click.Path(path_type=Path), required=True, help="Training JSONL.")
@click.option("--seeds", default="1,2,3", show_default=True, help="Comma-separated shuffle seeds (2 folds each).")
@click.option("--metric", type=click.Choice(sorted(METRICS)), default="numeric", show_default=True)
@click.option("--synth-budget-s", type=float, default=2.0, show_default=True)
@click.option("--limit", type=int, default=None, help="Use the first N records.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def command(data_path: Path, seeds: str, metric: str, synth_budget_s: float, limit: int | None, as_json: bool) -> None:
    """Two-fold cross-validation of model-free crystallisation within one file."""
    from rich.console import Console

    console = Console(stderr=True)
    records = stream.load_records(data_path, limit)
    fn = METRICS[metric]
    missed: Counter = Counter()
    folds = []
    for seed in [int(s) for s in seeds.split(",") if s.strip()]:
        order = list(range(len(records)))
        random.Random(seed).shuffle(order)
        halves = [[records[i] for i in order[: len(order) // 2]], [records[i] for i in order[len(order) // 2:]]]
        for a in (0, 1):
            fold = {"seed": seed, "learn_half": a, **one_fold(halves[a], halves[1 - a], fn, synth_budget_s, missed)}
            folds.append(fold)
            console.log(f"seed {seed}, learn on half {a}: {fold['right']}/{fold['n']} right, "
                        f"{fold['answered']} answered by code ({fold['learn_s']} s)")
    n = sum(f["n"] for f in folds)
    right, answered = sum(f["right"] for f in folds), sum(f["answered"] for f in folds)
    result = {"data": str(data_path), "records": len(records), "folds": folds,
              "accuracy": round(right / max(1, n), 4), "served_by_code": round(answered / max(1, n), 4),
              "precision": round(right / max(1, answered), 4),
              "missed": [{"template": k[0], "how": k[1], "n": v} for k, v in missed.most_common(15)]}
    if as_json:
        click.echo(json.dumps(result))
    else:
        console.print(f"accuracy {result['accuracy']:.1%}, served by code {result['served_by_code']:.1%}, "
                      f"precision {result['precision']:.1%} over {n} held-out answers ({len(folds)} folds)")
