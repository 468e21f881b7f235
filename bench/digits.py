"""`crystallise bench digits`: a mechanics check of the forgetting strategies on a classic stream.

scikit-learn's bundled digits (8x8 images, 1,797 samples) split into 5 tasks of two classes each
(0-1, 2-3, ..., 8-9), learned one after another by one MLP with a single 10-way head
(class-incremental: the model is never told which task a test image belongs to). After every
stage it is tested on every task; the same metrics as `bench weights` (accuracy matrix, average
accuracy, forgetting, BWT) come out of `crystallise.weights.forgetting`.

Strategies (the ones the weight layer offers, on a model small enough to run in seconds):

    naive     train on each task in turn                        (floor measured for the issue: .199)
    replay    + a buffer of --buffer examples, class-balanced,  (replay(100): .865)
              mixed into every batch
    l2        + lambda * ||theta - theta_previous||^2 (L2 to the weights before the task)
    ewc       + lambda * sum F (theta - theta_previous)^2, F the diagonal Fisher of earlier tasks
              (normalised to mean 1, as in the LoRA trainer, so lambda is on the l2 scale)
    joint     all tasks' data at once (the ceiling: .978)

Writes result.json and digits.png to --out.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from crystallise.weights._deps import require
from crystallise.report import pyplot
from crystallise.weights.forgetting import summarise

TASKS = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]


def _data(seed: int) -> tuple[Any, Any, Any, Any]:
    datasets, model_selection = require("sklearn.datasets", "sklearn.model_selection")
    x, y = datasets.load_digits(return_X_y=True)
    x = x / 16.0
    return model_selection.train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)


def _run(strategy: str, seed: int, epochs: int, buffer: int, lam: float, xtr: Any, xte: Any, ytr: Any, yte: Any
         ) -> list[list[float]]:
    torch = require("torch")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xt, yt = torch.tensor(xtr, dtype=torch.float32), torch.tensor(ytr)
    xs, ys = torch.tensor(xte, dtype=torch.float32), torch.tensor(yte)
    masks = [(yt == a) | (yt == b) for a, b in TASKS]
    test_masks = [(ys == a) | (ys == b) for a, b in TASKS]
    stages = [torch.ones_like(yt, dtype=torch.bool)] * 5 if strategy == "joint" else masks
    anchor: list[Any] = []
    fisher: list[Any] = []
    memory_x, memory_y = xt[:0], yt[:0]
    matrix: list[list[float]] = []
    for i, mask in enumerate(stages):
        if strategy == "joint" and i > 0:
            matrix.append(matrix[-1])
            continue
        x_task, y_task = xt[mask], yt[mask]
        for _ in range(epochs):
            order = torch.randperm(len(x_task), generator=gen)
            for s in range(0, len(order), 32):
                idx = order[s : s + 32]
                xb, yb = x_task[idx], y_task[idx]
                if strategy == "replay" and len(memory_x):
                    pick = torch.randint(0, len(memory_x), (32,), generator=gen)
                    xb, yb = torch.cat([xb, memory_x[pick]]), torch.cat([yb, memory_y[pick]])
                loss = torch.nn.functional.cross_entropy(net(xb), yb)
                if strategy in ("l2", "ewc") and anchor:
                    for k, (p, a) in enumerate(zip(net.parameters(), anchor)):
                        weight = fisher[k] if strategy == "ewc" else 1.0
                        loss = loss + lam * (weight * (p - a).pow(2)).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
        anchor = [p.detach().clone() for p in net.parameters()]
        if strategy == "ewc":  # accumulate the diagonal Fisher of this task's data
            grads = [torch.zeros_like(p) for p in net.parameters()]
            for s in range(0, len(x_task), 1):
                net.zero_grad()
                torch.nn.functional.cross_entropy(net(x_task[s : s + 1]), y_task[s : s + 1]).backward()
                for g, p in zip(grads, net.parameters()):
                    g += p.grad.detach().pow(2) / len(x_task)
            fisher = [g + (fisher[k] if fisher else 0) for k, g in enumerate(grads)]
            mean = torch.cat([f.flatten() for f in fisher]).mean().clamp_min(1e-12)
            fisher = [f / mean for f in fisher]  # mean 1: lambda means the same as for l2
        if strategy == "replay":  # class-balanced buffer of the classes seen so far
            seen = [c for a, b in TASKS[: i + 1] for c in (a, b)]
            per = max(1, buffer // len(seen))
            parts = [(xt[yt == c][:per], yt[yt == c][:per]) for c in seen]
            memory_x, memory_y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        with torch.no_grad():
            pred = net(xs).argmax(-1)
        matrix.append([float((pred[m] == ys[m]).float().mean()) for m in test_masks])
    return matrix


def _plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()  # matplotlib (the bench extra), or an ImportError that names it

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in results.items():
        curve = [sum(row[: i + 1]) / (i + 1) for i, row in enumerate(r["matrix"])]
        ax.plot(range(1, 6), curve, marker="o", label=f"{name} (final {r['average']:.3f})")
    ax.set_xlabel("stage (tasks learned)")
    ax.set_ylabel("mean accuracy on tasks seen so far")
    ax.set_xticks(range(1, 6))
    ax.set_ylim(0, 1.02)
    ax.set_title("split digits, class-incremental, MLP")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@click.command()
@click.option("--strategies", default="naive,replay,l2,ewc,joint", show_default=True)
@click.option("--epochs", default=10, show_default=True)
@click.option("--joint-epochs", default=30, show_default=True, help="Epochs of the joint ceiling (all data).")
@click.option("--buffer", default=100, show_default=True, help="Replay buffer size (examples, all classes).")
@click.option("--l2", "lam_l2", default=1.0, show_default=True, help="L2 strength.")
@click.option("--ewc", "lam_ewc", default=1.0, show_default=True, help="EWC strength.")
@click.option("--seeds", default=3, show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("reports/digits"), show_default=True)
@click.option("--json", "as_json", is_flag=True)
def command(strategies: str, epochs: int, joint_epochs: int, buffer: int, lam_l2: float, lam_ewc: float, seeds: int,
            out_dir: Path, as_json: bool) -> None:
    """Split digits (5 tasks): naive vs replay vs L2 vs EWC vs joint — average accuracy, forgetting, BWT."""
    require("torch").set_num_threads(1)
    results: dict[str, Any] = {}
    start = time.perf_counter()
    for name in [s.strip() for s in strategies.split(",") if s.strip()]:
        runs = []
        for seed in range(seeds):
            data = _data(seed)
            lam = lam_l2 if name == "l2" else lam_ewc
            runs.append(_run(name, seed, joint_epochs if name == "joint" else epochs, buffer, lam, *data))
        matrix = [[sum(r[i][j] for r in runs) / len(runs) for j in range(5)] for i in range(5)]
        per_seed = [summarise(r)["average"] for r in runs]
        results[name] = {**summarise(matrix), "matrix": matrix, "average_per_seed": per_seed}
        if not as_json:
            m = results[name]
            click.echo(f"{name:7s} average {m['average']:.3f}  forgetting {m['forgetting']:.3f}  BWT {m['bwt']:+.3f}"
                       f"  (seeds: {', '.join(f'{a:.3f}' for a in per_seed)})", err=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"strategies": results, "epochs": epochs, "joint_epochs": joint_epochs, "buffer": buffer, "seeds": seeds,
               "wall_s": round(time.perf_counter() - start, 1)}
    (out_dir / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
    _plot(results, out_dir / "digits.png")
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(f"wrote {out_dir / 'result.json'} and {out_dir / 'digits.png'} ({summary['wall_s']} s)", err=True)
