"""The command line over a temporary home: init, bench stream, traces, log/show/diff/revert, bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from crystallise.cli import main
from crystallise.harness.runtime import close_sandboxes
from tests.helpers import ratio_records, write_jsonl


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CRYSTALLISE_HOME", raising=False)
    runner = CliRunner()
    home = tmp_path / "home"

    def run(*args: str, ok: bool = True):
        result = runner.invoke(main, ["--home", str(home), *args], catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    yield run
    close_sandboxes()


def replay_records(n: int, start: int = 1) -> list[dict]:
    """Ratio records whose recorded 'LLM' answer is always wrong."""
    return [{**r, "llm": "0"} for r in ratio_records(n, start)]


def test_stream_bench_learns_commits_and_the_version_can_be_shown_diffed_reverted(cli, tmp_path):
    cli("init")
    data = write_jsonl(tmp_path / "stream.jsonl", replay_records(60))
    out = cli("bench", "stream", "--data", str(data), "--model", "replay:llm", "--learn-every", "20",
              "--task", "ratio", "--out", str(tmp_path / "rep"), "--json")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("n", "accuracy_learning", "accuracy_baseline", "gain", "served_by_code", "llm_calls",
                "context_tokens_mean", "versions_committed", "wall_s"):
        assert key in result
    assert result["n"] == 60 and result["accuracy_baseline"] == 0.0
    assert result["gain"] > 0.15 and result["served_by_code"] > 0.15 and result["versions_committed"] >= 1
    assert (tmp_path / "rep" / "curve.png").stat().st_size > 1000 and (tmp_path / "rep" / "report.md").exists()

    log = json.loads(cli("log", "--json").stdout)
    crystallised = next(v for v in log if "crystallise" in v["message"])
    shown = cli("show", str(crystallised["number"])).stdout
    assert "def solve" in shown and "McNemar" in shown
    assert "tasks/ratio/code.py" in cli("diff", "1", str(crystallised["number"])).stdout
    reverted = cli("revert", str(crystallised["number"])).stdout
    assert f"reverts version {crystallised['number']}" in reverted
    tasks = json.loads(cli("tasks", "list", "--json").stdout)
    assert tasks[0]["name"] == "ratio" and tasks[0]["code"] is False

    traces = json.loads(cli("traces", "list", "--limit", "5", "--json").stdout)
    assert len(traces) == 5
    shown = cli("traces", "show", traces[0]["id"]).stdout
    assert "span task" in shown and "feedback" in shown


def test_offline_mode_learns_from_train_and_freezes_on_data(cli, tmp_path):
    cli("init")
    train = write_jsonl(tmp_path / "train.jsonl", replay_records(40))
    data = write_jsonl(tmp_path / "val.jsonl", replay_records(10, start=100))
    out = cli("bench", "stream", "--mode", "offline", "--train", str(train), "--data", str(data),
              "--model", "replay:llm", "--json", "--out", str(tmp_path / "rep"))
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["n"] == 10 and result["accuracy_learning"] > result["accuracy_baseline"]


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json}\n", "line 1"), ('{"input": "x"}\n', '"target"'), ("", "no records")],
)
def test_bad_data_is_a_clear_error(cli, tmp_path, content, message):
    cli("init")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    result = cli("bench", "stream", "--data", str(bad), "--model", "replay:llm", ok=False)
    assert result.exit_code == 2 and message in result.output


def test_unknown_model_and_missing_home_are_clear_errors(cli, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", replay_records(2))
    result = cli("bench", "stream", "--data", str(data), ok=False)
    assert result.exit_code == 2 and "crystallise init" in result.output
    cli("init")
    result = cli("bench", "stream", "--data", str(data), "--model", "nosuch:thing", ok=False)
    assert result.exit_code == 2 and "nosuch" in result.output
    result = cli("show", "999", ok=False)
    assert result.exit_code == 2


def test_acknowledged_traces_survive_a_failing_run(cli, tmp_path):
    """A run that dies mid-stream (bad record after good ones) keeps what was acknowledged."""
    cli("init")
    records = replay_records(3)
    del records[2]["llm"]  # the replay backend cannot answer this one
    data = write_jsonl(tmp_path / "d.jsonl", records)
    result = cli("bench", "stream", "--data", str(data), "--model", "replay:llm", "--task", "t", ok=False)
    assert result.exit_code == 2 and "llm" in result.output
    traces = json.loads(cli("traces", "list", "--json").stdout)
    assert len(traces) >= 2
