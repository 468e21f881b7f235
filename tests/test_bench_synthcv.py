"""bench synthcv: two-fold cross-validation of model-free crystallisation, on an invented task."""

from __future__ import annotations

import json
import random

from click.testing import CliRunner

from bench import synthcv
from crystallise.harness.synth.numbers import fmt_number


def test_synthcv_scores_the_half_no_learner_saw(tmp_path) -> None:
    r = random.Random(7)
    path = tmp_path / "task.jsonl"
    lines = []
    for _ in range(40):  # a stated formula, two phrasings that order the numbers differently
        hours, rate = r.randint(2, 60), r.randint(10, 90)
        q = [f"A worker logs {hours} hours at a rate of {rate}.", f"At a rate of {rate}, {hours} hours were logged."]
        lines.append({"input": "Use formula Pay to answer. Formula: Pay = Hours × Rate, Explanation: x. Question: "
                               + q[r.randrange(2)], "target": fmt_number(hours * rate, 2, "half_up")})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    res = CliRunner().invoke(synthcv.command, ["--data", str(path), "--seeds", "1", "--json",
                                               "--synth-budget-s", "0.5"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert len(out["folds"]) == 2 and sum(f["n"] for f in out["folds"]) == 40
    assert out["accuracy"] >= 0.9 and out["precision"] >= 0.95
