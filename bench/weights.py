"""`crystallise bench weights`: three small tasks learned one after another by LoRA; forgetting measured.

Tasks built from ../shared/data (never the BIG-bench/BBH files, whose canary forbids training on them):

    formula-name    ACE Formula question (the formula's name and definition cut out) -> the formula's name
                    (50 names; train from formula_train, test on formula_val)
    finer-tag       one FiNER entity + its sentence -> its US-GAAP tag, among the --finer-tags most
                    frequent tags (listed in the prompt); train and test from different rows
    locomo-speaker  one LoCoMo chat message -> which of the two speakers wrote it (CC BY-NC data,
                    used here for a benchmark only); train and test turns split by a hash

Each strategy starts from the base (smollm2-135m) and learns the tasks in that order, each
stage continuing the previous stage's adapter for --steps steps; after every stage the adapter
is tested on all three tasks and on the base-probes retention suite (the base's own answers to
general prompts). Strategies:

    naive       sequential LoRA, nothing against forgetting
    replay      --replay-share of every batch from earlier tasks' training data + the base's answers
                to the replay probes (the default of `crystallise weights train`)
    l2          no replay, L2 to the base on ΔW (--reg-weight)
    replay+l2   both
    ewc         no replay, Fisher-weighted L2 (the Fisher of the base on the retention data)

Reports the accuracy matrix, average accuracy, forgetting, BWT and new-task gain per strategy
(crystallise.weights.forgetting), the weights gate's verdict at every stage, result.json,
report.md and weights.png in --out. On 2 shared CPU cores the default run takes about an hour.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click

from crystallise.gate import WeightsPolicy, decide_adapter, suite_accuracy
from crystallise.report import pyplot
from crystallise.engine.home import models_dir_for, default_home_path
from crystallise.weights.base import BaseModel
from crystallise.weights.evaluate import (
    PROBE_TOKENS,
    evaluate,
    load_with_adapter,
    probe_replay,
    probe_suite,
    suite_from_rows,
)
from crystallise.weights.forgetting import summarise
from crystallise.weights.train import TrainConfig, train_adapter
from crystallise.testing import read_jsonl

STRATEGIES = {
    "naive": {"replay_share": 0.0, "regulariser": "none"},
    "replay": {"replay_share": 0.25, "regulariser": "none"},
    "l2": {"replay_share": 0.0, "regulariser": "l2"},
    "replay+l2": {"replay_share": 0.25, "regulariser": "l2"},
    "ewc": {"replay_share": 0.0, "regulariser": "ewc"},
}
VERIFIER = {"kind": "exact", "casefold": True}


def _hash(s: str) -> int:
    return int(hashlib.sha256(s.encode()).hexdigest()[:8], 16)


def _row(prompt: str, answer: str, rid: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
            "trace_id": rid}


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [row for _, row in read_jsonl(path)]


def formula_task(data: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    def rows(file: str) -> list[dict[str, Any]]:
        out = []
        for i, r in enumerate(_jsonl(data / "finance" / file)):
            name = re.search(r"Use formula (.+?) to answer", r["context"])
            q = re.search(r'Question: "(.+?)"\. Answer', r["context"], re.S)
            if name and q:
                prompt = f"Which financial formula answers this question?\n{q.group(1)}\nAnswer with the formula name."
                out.append(_row(prompt, name.group(1).strip(), f"formula-{file}-{i}"))
        return out

    return rows("formula_train.jsonl"), rows("formula_val.jsonl")


_FINER_Q = re.compile(r'\d+\. What is best tag for entity "(.+?)" in sentence: "(.+?)\?"\s*$', re.M)


def finer_task(data: Path, n_tags: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    items = []
    for i, r in enumerate(_jsonl(data / "finance" / "finer_val.jsonl")):
        tags = [t.strip() for t in r["target"].split(",")]
        qs = _FINER_Q.findall(r["context"])
        if len(qs) == len(tags):
            items += [(i, e, s.strip(), t) for (e, s), t in zip(qs, tags)]
    top = sorted(t for t, _ in Counter(t for *_, t in items).most_common(n_tags))
    options = ", ".join(top)
    train, test = [], []
    for i, entity, sentence, tag in items:
        if tag not in top:
            continue
        prompt = (f"Sentence: {sentence}\nWhich US-GAAP tag fits the entity \"{entity}\"? "
                  f"Options: {options}.\nAnswer with the tag.")
        (test if i % 5 == 0 else train).append(_row(prompt, tag, f"finer-{i}-{entity}"))
    return train, test


def locomo_task(data: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    train, test = [], []
    for sample in json.loads((data / "locomo" / "locomo_dev.json").read_text(encoding="utf-8")):
        conv = sample["conversation"]
        a, b = conv["speaker_a"], conv["speaker_b"]
        for key, turns in conv.items():
            if not key.startswith("session_") or not isinstance(turns, list):
                continue
            for t in turns:
                text = t.get("text", "")
                if not 40 <= len(text) <= 240:
                    continue
                prompt = f"In a chat between {a} and {b}, who wrote this message?\n\"{text}\"\nAnswer {a} or {b}."
                (test if _hash(t["dia_id"] + sample["sample_id"]) % 5 == 0 else train).append(
                    _row(prompt, t["speaker"], f"locomo-{sample['sample_id']}-{t['dia_id']}"))
    return train, test


def _sample(rows: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:n]


def _plot(results: dict[str, Any], tasks: list[str], path: Path) -> None:
    plt = pyplot()  # matplotlib (the bench extra), or an ImportError that names it

    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(4 * (len(tasks) + 1), 3.6), sharey=True)
    stages = range(0, len(tasks) + 1)
    for name, r in results.items():
        for j in range(len(tasks)):
            axes[j].plot(stages, [r["before"][j]] + [row[j] for row in r["matrix"]], marker="o", label=name)
        axes[-1].plot(stages, [r["probes_before"]] + r["probes"], marker="o", label=name)
    for j, task in enumerate(tasks):
        axes[j].set_title(task)
    axes[-1].set_title("base-probes (retention)")
    for ax in axes:
        ax.set_xticks(list(stages))
        ax.set_xlabel("stage (tasks learned)")
        ax.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("accuracy")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@click.command()
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=Path("../shared/data"),
              show_default=True)
@click.option("--strategies", default="naive,replay,l2", show_default=True,
              help=f"Comma-separated, of {', '.join(STRATEGIES)}.")
@click.option("--steps", default=24, show_default=True, help="Training steps per task.")
@click.option("--batch-size", default=4, show_default=True)
@click.option("--max-len", default=192, show_default=True, help="Tokens per training example (finer-tag: ~165).")
@click.option("--max-new-tokens", default=32, show_default=True, help="Generated tokens per test answer (tags: <= 27).")
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--replay-share", default=0.25, show_default=True)
@click.option("--reg-weight", default=0.05, show_default=True)
@click.option("--train-n", default=160, show_default=True, help="Training examples per task.")
@click.option("--test-n", default=32, show_default=True, help="Test cases per task.")
@click.option("--finer-tags", default=6, show_default=True)
@click.option("--base", "base_name", default="smollm2-135m", show_default=True)
@click.option("--device", default=None)
@click.option("--seed", default=0, show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("reports/weights"), show_default=True)
@click.option("--combine", "combine", multiple=True, type=click.Path(path_type=Path),
              help="Merge the result.json of earlier runs (e.g. one strategy per process) into --out; trains nothing.")
@click.option("--json", "as_json", is_flag=True)
def command(data_dir: Path, strategies: str, steps: int, batch_size: int, max_len: int, max_new_tokens: int,
            lr: float, replay_share: float, reg_weight: float, train_n: int, test_n: int, finer_tags: int,
            base_name: str,
            device: str | None, seed: int, out_dir: Path, combine: tuple[Path, ...], as_json: bool) -> None:
    """Sequential LoRA on 3 tasks: per-task accuracy after each stage, average, forgetting, BWT per strategy."""
    if combine:
        runs = [json.loads(Path(p).read_text()) for p in combine]
        merged = {**runs[0], "strategies": {k: v for r in runs for k, v in r["strategies"].items()},
                  "wall_s": max(r["wall_s"] for r in runs), "combined_from": [str(p) for p in combine]}
        _write(merged, out_dir, as_json)
        return
    start = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - start:7.1f}s] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    built = {"formula-name": formula_task(data_dir), "finer-tag": finer_task(data_dir, finer_tags),
             "locomo-speaker": locomo_task(data_dir)}
    tasks = list(built)
    train = {t: _sample(tr, train_n, seed) for t, (tr, _) in built.items()}
    suites = {t: suite_from_rows(t, _sample(te, test_n, seed + 1), VERIFIER) for t, (_, te) in built.items()}
    base = BaseModel.open(models_dir_for(default_home_path()), base_name)
    bm, btok = base.shared(device)
    probes = probe_suite(bm, btok)
    replay_probes = probe_replay(bm, btok)
    log(f"tasks: {', '.join(f'{t} ({len(train[t])} train / {len(suites[t])} test)' for t in tasks)}")
    before_results = {t: evaluate(bm, btok, suites[t], max_new_tokens=max_new_tokens) for t in tasks}
    before = [suite_accuracy(before_results[t]) for t in tasks]
    probes_base = evaluate(bm, btok, probes, max_new_tokens=PROBE_TOKENS)
    log("base: " + ", ".join(f"{t} {a:.3f}" for t, a in zip(tasks, before)))
    results: dict[str, Any] = {}
    for name in [s.strip() for s in strategies.split(",") if s.strip()]:
        opts = dict(STRATEGIES[name])
        if opts["replay_share"]:
            opts["replay_share"] = replay_share
        config = TrainConfig(steps=steps, batch_size=batch_size, max_len=max_len, lr=lr, reg_weight=reg_weight,
                             seed=seed, device=device, **opts)  # type: ignore[arg-type]
        matrix, probes_acc, verdicts, train_s = [], [], [], []
        prev_dir: Path | None = None
        prev_results = {**before_results, "base-probes": probes_base}
        with tempfile.TemporaryDirectory(prefix="crystallise-bench-weights-") as tmp:
            for i, task in enumerate(tasks):
                replay = list(replay_probes) + [r for t in tasks[:i] for r in train[t]]
                t0 = time.perf_counter()
                result = train_adapter(
                    base, train[task], config, Path(tmp) / f"stage{i}", retention=replay if config.replay_share else (),
                    init_from=prev_dir,
                    progress=lambda s, n, loss, task=task, name=name: log(f"{name} {task} step {s}/{n} loss {loss:.3f}")
                    if s % 8 == 0 or s == n else None)
                train_s.append(time.perf_counter() - t0)
                model, tok = load_with_adapter(base, result.adapter_dir, device)
                now = {t: evaluate(model, tok, suites[t], max_new_tokens=max_new_tokens) for t in tasks}
                now["base-probes"] = evaluate(model, tok, probes, max_new_tokens=PROBE_TOKENS)
                matrix.append([suite_accuracy(now[t]) for t in tasks])
                probes_acc.append(suite_accuracy(now["base-probes"]))
                retention = {t: (prev_results[t], now[t]) for t in [*tasks[:i], "base-probes"]}
                v = decide_adapter(prev_results[task], now[task], retention, WeightsPolicy())
                verdicts.append(v.reason)
                log(f"{name} after {task}: " + ", ".join(f"{t} {a:.3f}" for t, a in zip(tasks, matrix[-1]))
                    + f", probes {probes_acc[-1]:.3f}; gate {v.decision}")
                prev_dir, prev_results = result.adapter_dir, now
                del model
        summary = summarise(matrix, before)
        results[name] = {**summary, "matrix": matrix, "before": before, "probes": probes_acc,
                         "probes_before": suite_accuracy(probes_base), "gate": verdicts,
                         "train_s": train_s, "config": config.to_dict()}
        out_dir.mkdir(parents=True, exist_ok=True)  # partial results survive an interrupted run
        (out_dir / "partial.json").write_text(json.dumps({"tasks": tasks, "strategies": results}, indent=2) + "\n")
    wall = time.perf_counter() - start
    report = {"tasks": tasks, "strategies": results, "steps": steps, "train_n": train_n, "test_n": test_n,
              "wall_s": round(wall, 1), "base": base_name}
    _write(report, out_dir, as_json)


def _write(report: dict[str, Any], out_dir: Path, as_json: bool) -> None:
    tasks, results = report["tasks"], report["strategies"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "result.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(results, tasks, out_dir / "weights.png")
    lines = ["| strategy | " + " | ".join(f"{t} (before → after its stage → final)" for t in tasks)
             + " | probes final | average | forgetting | BWT | gain |", "|---" * (len(tasks) + 6) + "|"]
    for name, r in results.items():
        cells = [f"{r['before'][j]:.3f} → {r['matrix'][j][j]:.3f} → {r['matrix'][-1][j]:.3f}"
                 for j in range(len(tasks))]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['probes'][-1]:.3f} | {r['average']:.3f} | "
                     f"{r['forgetting']:.3f} | {r['bwt']:+.3f} | {r['gain']:+.3f} |")
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo("\n".join(lines))
        click.echo(f"wall {report['wall_s']:.0f} s; wrote {out_dir}/result.json, report.md, weights.png", err=True)
