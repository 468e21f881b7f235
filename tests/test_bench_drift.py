"""`crystallise bench drift` on a short stream: drift is softened and re-learned; the frozen arm is not."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from crystallise.cli import main
from crystallise.harness.runtime import close_sandboxes


def test_bench_drift_reports_softening_and_both_arms(tmp_path: Path):
    home = str(tmp_path / "home")
    runner = CliRunner()
    assert runner.invoke(main, ["--home", home, "init"]).exit_code == 0
    result = runner.invoke(main, ["--home", home, "bench", "drift", "--records", "150", "--drift-at", "90",
                                  "--learn-every", "15", "--json"], catch_exceptions=False)
    close_sandboxes()
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout.strip().splitlines()[-1])
    assert r["records_until_softened"] is not None and r["records_until_softened"] <= 30
    assert any("soften G4" in m["summary"] for m in r["moves"])
    before = r["phases"]["crystallised, before drift"]
    assert before["lifecycle"]["accuracy"] == before["frozen"]["accuracy"] == 1.0
    after = r["accuracy_drifted_template_after"]
    assert after["frozen"] == 0.0 and after["lifecycle"] > 0.3
    bad = runner.invoke(main, ["--home", home, "bench", "drift", "--records", "10", "--drift-at", "20"])
    assert bad.exit_code == 2 and "--drift-at" in bad.output


def test_bench_drift_format_ends_with_one_program_for_both_shapes(tmp_path: Path):
    """A template's input format changes: re-learning sees the old shape too (harness/history.py), so the
    final program answers both formats by code and the old one does not regress (on main it flipped)."""
    home = str(tmp_path / "home")
    runner = CliRunner()
    assert runner.invoke(main, ["--home", home, "init"]).exit_code == 0
    result = runner.invoke(main, ["--home", home, "bench", "drift", "--drift", "format", "--records", "180",
                                  "--drift-at", "105", "--learn-every", "15", "--json"], catch_exceptions=False)
    close_sandboxes()
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout.strip().splitlines()[-1])
    final = r["final_program"]["lifecycle"]
    assert final["old shape"] >= 0.95 and final["new shape"] >= 0.95, final
    assert r["phases"]["after re-crystallisation"]["lifecycle"]["accuracy"] >= 0.95
    bad = runner.invoke(main, ["--home", home, "bench", "drift", "--drift", "format", "--data", __file__])
    assert bad.exit_code == 2 and "no second format" in bad.output
