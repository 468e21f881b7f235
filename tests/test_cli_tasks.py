"""`crystallise tasks list/show` and `crystallise advise` over a home with a crystallised task."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from crystallise.backends.scripted import ScriptedBackend
from crystallise.cli import main
from crystallise.gate import score_numeric
from crystallise.harness.grades import GradePolicy
from crystallise.harness.runtime import close_sandboxes
from crystallise.harness.spec import TaskSpec
from crystallise.engine.home import Home
from crystallise.engine.loop import CachedBackend, Loop, LoopConfig
from tests.helpers import ratio_records


@pytest.fixture(scope="module")
def home_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli-tasks") / "home"
    home = Home.init(path)
    loop = Loop(home, TaskSpec(name="ratio", metric="numeric"), CachedBackend(ScriptedBackend(lambda r: "0")),
                score_numeric, LoopConfig(learners=("crystallise",), shadow="inline",
                                          grade_policy=GradePolicy(shadow_rate=0.5)))
    for i, r in enumerate(ratio_records(36)):
        ans, tid = loop.answer(r["context"])
        loop.feedback(tid, r["target"], ans.output is not None and score_numeric(ans.output, r["target"]))
        if i == 23:
            loop.learn()
    Loop(home, TaskSpec(name="fresh"), ScriptedBackend(), score_numeric, LoopConfig(shadow="off"))
    yield path
    close_sandboxes()


def run(home_path, *args, code=0):
    result = CliRunner().invoke(main, ["--home", str(home_path), *args], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def test_tasks_list_json_has_grade_evidence_and_next_moves(home_path):
    rows = {r["name"]: r for r in json.loads(run(home_path, "tasks", "list", "--json").stdout)}
    assert set(rows) == {"fresh", "ratio"}
    ratio = rows["ratio"]
    assert ratio["grade"] == "G4" and ratio["code"] is True and ratio["eval_cases"] > 0
    e = ratio["evidence"]
    assert e["window"] == 36 and e["served"]["code"] == 12 and e["coverage"] == pytest.approx(12 / 36)
    assert e["code_verified"] == 12 and e["disagreements"] == 0 and e["shadow_checks"] > 0
    assert ratio["verified_cases"] == 36
    assert ratio["next"][0] == "G4 → G5 after 500 code answers in a row with no fallback; currently 12"
    assert rows["fresh"]["grade"] == "G0" and rows["fresh"]["evidence"]["window"] == 0
    small = json.loads(run(home_path, "tasks", "list", "--window", "10", "--json").stdout)
    assert next(r for r in small if r["name"] == "ratio")["evidence"]["window"] == 10


def test_tasks_list_table(home_path):
    text = run(home_path, "tasks", "list").stdout
    assert "ratio" in text and "G4" in text and "33%" in text and "currently 12" in text


def test_tasks_show_text_and_json(home_path):
    text = run(home_path, "tasks", "show", "ratio").stdout
    for words in ("grade G4", "coverage by code 33%", "streak 12", "shadow checks", "what would move it",
                  "G4 → G5 after 500", "tasks/ratio/code.py"):
        assert words in text, words
    data = json.loads(run(home_path, "tasks", "show", "ratio", "--json").stdout)
    assert data["spec"]["grade"] == "G4" and "tasks/ratio/code.py" in data["files"] and data["history"] == []
    assert data["program"]["strategies"] == ["arith"] and data["policy"]["promote_after"] == 500
    assert "no task 'nope'" in run(home_path, "tasks", "show", "nope", code=2).output


def test_advise_json_and_table(home_path):
    advice = json.loads(run(home_path, "advise", "--json").stdout)
    by_task = {a["task"]: a for a in advice}
    assert set(by_task) == {"ratio"}  # "fresh" has no runs yet
    a = by_task["ratio"]
    assert a["layer"] in {"harness", "context", "weights", "none", "observe"} and a["reason"]
    assert a["scope"] == {"agent": "default", "org": None, "user": None}
    assert "ratio" in run(home_path, "advise", "--task", "ratio").stdout
    assert "no task" in run(home_path, "advise", "--task", "nope", code=2).output
