"""`crystallise bench bbh` and `bench latency` on tiny data with doubles: wiring, figures, files."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from crystallise.cli import main
from crystallise.harness.runtime import close_sandboxes
from tests.helpers import new_home, ratio_records, write_jsonl

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima"]


def _bbh_records() -> list[dict]:
    out = []
    for i, a in enumerate(WORDS):
        for j, b in enumerate(WORDS):
            target = a
            out.append({"input": f"Say the first word of: {a} {b} {WORDS[(i + j) % 12]}\nAnswer:", "target": target,
                        "llm_direct": target if (i + j) % 3 else "no idea"})  # the recorded LLM: right 2 in 3
    return out


def test_bench_bbh_lifts_above_the_recorded_llm_and_reports_per_task(tmp_path: Path):
    data = tmp_path / "bbh"
    data.mkdir()
    write_jsonl(data / "first_word.jsonl", _bbh_records())
    out = tmp_path / "report"
    new_home(tmp_path)
    result = CliRunner().invoke(main, ["--home", str(tmp_path / "home"), "bench", "bbh", "--data-dir", str(data),
                                       "--strategies", "lookup,arith,strings", "--out", str(out), "--json"])
    close_sandboxes()
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    (row,) = summary["per_task"]
    assert row["n_train"] == row["n_eval"] == 72
    assert abs(row["accuracy_llm"] - 2 / 3) < 0.03  # the baseline is the recorded answers
    assert row["committed"] and row["strategies"] == ["strings"] and "wins" in row["verdict"]
    assert row["accuracy_learning"] == 1.0 and row["served_by_code"] == 1.0 and row["lift"] > 0.3
    assert summary["tasks_lifted"] == 1 and summary["code_precision"] == 1.0
    assert (out / "bbh.png").stat().st_size > 0 and "| first_word |" in (out / "report.md").read_text()


def test_bench_latency_times_code_against_the_llm(tmp_path: Path):
    train = write_jsonl(tmp_path / "train.jsonl", ratio_records(40))
    data = write_jsonl(tmp_path / "data.jsonl", ratio_records(10, start=60))
    new_home(tmp_path)
    result = CliRunner().invoke(main, ["--home", str(tmp_path / "home"), "bench", "latency", "--train", str(train),
                                       "--data", str(data), "--model", "scripted:0", "--n", "5", "--code-repeat", "3",
                                       "--json"])
    close_sandboxes()
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout.strip().splitlines()[-1])
    assert r["records"] == 5 and r["code"]["calls"] == 15 and r["llm"]["calls"] == 5
    assert r["code"]["accuracy"] == 1.0 and r["llm"]["accuracy"] == 0.0 and r["code"]["served_by_code"] == 15
    assert r["code"]["median_ms"] > 0  # the serving path: runtime + sandbox round trip
    assert r["speedup_median"] == round(r["llm"]["median_ms"] / r["code"]["median_ms"], 1)  # the double is instant
