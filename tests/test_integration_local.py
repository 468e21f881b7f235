"""The whole loop with the real offline model (SmolLM2-135M via llama.cpp), kept short.

`make test` pulls the model first and sets CRYSTALLISE_REQUIRE_LOCAL=1, so in CI a
missing model fails instead of skipping.
"""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from crystallise.cli import main
from crystallise.harness.runtime import close_sandboxes
from crystallise.engine.home import Home
from tests.helpers import ratio_records, write_jsonl

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m"


@pytest.fixture
def local_model(tmp_path):
    from crystallise.backends import catalog
    from crystallise.engine.home import models_dir_for

    models_dir = models_dir_for(tmp_path / "home")
    reason = None
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        reason = "llama-cpp-python is not installed (pip install 'crystallise[local]')"
    if reason is None and not any(m["name"] == MODEL for m in catalog.installed(models_dir)):
        reason = f"{MODEL} is not pulled into {models_dir} (crystallise models pull {MODEL})"
    if reason:
        if os.environ.get("CRYSTALLISE_REQUIRE_LOCAL") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    yield f"local:{MODEL}"
    close_sandboxes()


def test_offline_stream_with_the_real_local_model(local_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    runner = CliRunner()
    assert runner.invoke(main, ["--home", str(home), "init"]).exit_code == 0
    train = write_jsonl(tmp_path / "train.jsonl", ratio_records(28))
    data = write_jsonl(tmp_path / "val.jsonl", ratio_records(6, start=60))
    result = runner.invoke(main, [
        "--home", str(home), "bench", "stream", "--mode", "offline", "--model", local_model,
        "--train", str(train), "--data", str(data), "--learners", "crystallise,fewshot", "--learn-every", "100",
        "--task", "ratio", "--json", "--out", str(tmp_path / "rep"),
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout.strip().splitlines()[-1])
    assert r["versions_committed"] >= 1
    assert r["served_by_code"] > 0.5 and r["accuracy_learning"] > r["accuracy_baseline"]
    h = Home.open(home)
    llm_spans = [s for t in h.store.list_traces(name="ratio", limit=10, with_children=True) for s in t.spans
                 if s.attributes.get("served_by") == "llm"]
    assert llm_spans and all(s.attributes["prompt_tokens"] > 0 for s in llm_spans)  # a real model answered
