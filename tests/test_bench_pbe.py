"""`crystallise bench pbe` on a tiny JSONL: keys, scoring, deduplication, report files, bad input."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from crystallise.cli import main


def _task(name: str, pairs: list[tuple[list, object]], same: list[str] | None = None) -> dict:
    return {"task": name, "signature": {"args": ["String"], "returns": "String"},
            "same_examples_as": same or [], "examples": [{"inputs": i, "output": o} for i, o in pairs]}


FIRST = [(["John Smith"], "John"), (["Ann Lee"], "Ann"), (["Bob Jones"], "Bob"), (["Mary Poppins"], "Mary"),
         (["Ada Lovelace"], "Ada")]
NOISE = [(["qz"], "Lorem"), (["xk"], "17 ipsum"), (["pw"], "dolor sit"), (["mm"], "amet!"), (["rr"], "zz top")]


def test_bench_pbe_scores_held_out_examples_in_the_sandbox(tmp_path: Path):
    data = tmp_path / "tiny.jsonl"
    tasks = [_task("first", FIRST, ["first-copy"]), _task("noise", NOISE), _task("first-copy", FIRST, ["first"])]
    data.write_text("\n".join(json.dumps(t) for t in tasks) + "\n")
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["--home", str(tmp_path / "home"), "bench", "pbe", "--data", str(data),
                                       "--budget-s", "0.5", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("tasks", "tasks_distinct", "solved_fraction", "solved_fraction_distinct", "example_accuracy",
                "abstain_rate", "synthesis_s_mean", "cache", "train_k"):
        assert key in summary
    assert summary["tasks"] == 3 and summary["tasks_distinct"] == 2 and summary["train_k"] == 3
    assert summary["solved_fraction"] == round(2 / 3, 4) and summary["solved_fraction_distinct"] == 0.5
    assert summary["cache"]["solved_fraction"] == 0.0  # held-out inputs were never shown
    per_task = {r["task"]: r for r in json.loads((out / "results.json").read_text())["tasks"]}
    assert per_task["first"]["solved"] and per_task["first"]["outcomes"] == ["ok", "ok"]
    assert per_task["first"]["n_shown"] == 3 and per_task["first"]["n_heldout"] == 2
    assert not per_task["noise"]["solved"]
    assert "| first |" in (out / "report.md").read_text()


def test_bench_pbe_small_tasks_keep_one_held_out_example(tmp_path: Path):
    data = tmp_path / "two.jsonl"
    data.write_text(json.dumps(_task("pair", [(["x y"], "x"), (["p q"], "p")])) + "\n")
    result = CliRunner().invoke(main, ["--home", str(tmp_path / "home"), "bench", "pbe", "--data", str(data),
                                       "--budget-s", "0.5", "--out", str(tmp_path / "r"), "--json"])
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["tasks_scored"] == 1 and summary["heldout_examples"] == 1


def test_bench_pbe_bad_data_names_the_line(tmp_path: Path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"task": "t", "examples": [{"inputs": "not a list", "output": 1}]}\n')
    result = CliRunner().invoke(main, ["--home", str(tmp_path / "home"), "bench", "pbe", "--data", str(data)])
    assert result.exit_code == 2
    assert "bad.jsonl:1" in result.output
