"""`crystallise bench ingest` end to end, kept short: a real `crystallise serve` subprocess, the load
from another process, every acknowledged trace found in the store."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

pytest.importorskip("fastapi", reason="the ingest benchmark serves the API (`serve` extra)")

from crystallise.cli import main  # noqa: E402


def test_bench_ingest_reports_throughput_latency_and_durability():
    out = CliRunner().invoke(main, ["bench", "ingest", "--store", "sqlite", "--rate", "40", "--duration", "1",
                                    "--connections", "4", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout.strip().splitlines()[-1])
    sustained, peak = result["sustained"], result["max"]
    assert sustained["statuses"] == {"201": sustained["sent"]} and sustained["sent"] == 40
    assert 0 < sustained["p50_ms"] <= sustained["p99_ms"] <= sustained["max_ms"]
    assert peak["throughput_rps"] > 0 and peak["errors"] == 0 and sustained["server_cpu_ms_per_request"] > 0
    assert result["stored_traces"] == result["acknowledged"] > 40
    assert result["goal_met"] is False  # 40 req/s is below the goal's 500, whatever the latency


def test_the_load_generators_percentiles():
    from bench._ingest_load import percentile, trace_body

    assert percentile([], 99) == 0.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert percentile([5.0], 50) == 5.0
    body = json.loads(trace_body(7))
    assert body["user"] == "u7" and [s["kind"] for s in body["spans"]] == ["retrieval", "llm"]
