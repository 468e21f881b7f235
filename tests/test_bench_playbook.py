"""bench/playbook.py: the three arms run, and dreaming keeps a smaller playbook than add-only.

A scripted model that answers right only when a lesson about the question's formula is in its
prompt, and a scripted critic that words each lesson one of two ways (near-duplicates): the
add-only playbook keeps both wordings of every lesson, the dream arm merges them and is served
only the relevant ones.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from crystallise.backends import ScriptedBackend
from bench import playbook
from crystallise.engine.home import Home


FORMULAS = ["Current Ratio", "Quick Ratio", "Debt Ratio", "Gross Margin", "Asset Turnover", "Payout Ratio"]


def records() -> list[dict[str, Any]]:
    return [{"context": f"Use formula {FORMULAS[i % 6]} to answer the question. Question: case {i}. Answer:",
             "target": str(float(i))} for i in range(36)]


def model(request: Any) -> str:
    """Right when the prompt holds a lesson about the formula, except on every third case (two formulas)."""
    system, question = request.messages[0].content, request.messages[-1].content
    name = re.search(r"Use formula (.+?) to answer", question).group(1)
    hard = int(re.search(r"case (\d+)", question).group(1)) % 3 == 0
    return request.metadata["record"]["target"] if f"lesson for {name.lower()}" in system.lower() and not hard else "-1"


def critic(request: Any) -> str:
    """The same lesson, worded one of two ways (by the case)."""
    prompt = request.messages[-1].content
    name = re.search(r"Use formula (.+?) to answer", prompt).group(1)
    case = int(re.search(r"case (\d+)", prompt).group(1))
    text = (f"Lesson for {name}: apply the {name} formula to the figures given" if case // 6 % 2 == 0 else
            f"Lesson for {name}: apply {name} formula to the given figures")
    return json.dumps({"critique": "did not know the formula", "deltas": [{"op": "add", "text": text,
                                                                             "section": "strategies"}]})


def test_dreaming_matches_add_only_at_a_fraction_of_the_tokens(tmp_path: Path) -> None:
    home = Home.init(tmp_path / "home")
    try:
        series = playbook.run_arms(records(), ScriptedBackend(model), ScriptedBackend(critic), home, learn_every=6,
                                   budget=400, context_tokens=25)
    finally:
        home.close()
    result = playbook.summarise(series)
    assert result["accuracy"]["none"] == 0.0
    assert result["gain"]["dream"] >= result["gain"]["add_only"] > 0
    assert result["playbook_tokens_final"]["dream"] < result["playbook_tokens_final"]["add_only"]
    assert result["context_token_ratio"] <= 0.5 and result["goal_met"]
    # two formulas keep failing (hard cases), so both wordings of their lessons reach the add-only playbook;
    # the dream arm holds each lesson once. Credit is by counterfactual (issue 17): the lessons of the two
    # hard formulas were shown in failure after failure, but removing them fixes nothing, so they are kept
    # (blame-all credit used to forget them)
    assert len(series["add_only_playbook"]) == 8
    assert sorted(t.split(":")[0] for t in series["dream_playbook"]) == [f"Lesson for {n}" for n in sorted(FORMULAS)]
    playbook.write(tmp_path / "out", series, result, "scripted")
    assert (tmp_path / "out" / "tokens.png").stat().st_size > 1000


def test_the_cli_scores_by_the_metric_asked_for(tmp_path: Path) -> None:
    """`--metric` decides what counts: "1" answers a target of "1.0" as a number, not as the exact text."""
    from click.testing import CliRunner

    from crystallise.cli import main

    data = tmp_path / "ones.jsonl"
    data.write_text("".join(json.dumps({"input": f"How many {i}?", "target": "1.0" if i % 2 == 0 else "2.0"}) + "\n"
                            for i in range(4)))
    runs = {}
    for metric in ("numeric", "exact"):
        out = CliRunner().invoke(main, ["bench", "playbook", "--data", str(data), "--model", "scripted:1",
                                        "--learn-every", "2", "--metric", metric, "--out", str(tmp_path / metric),
                                        "--json"])
        assert out.exit_code == 0, out.output
        runs[metric] = json.loads(out.output.strip().splitlines()[-1])
    assert runs["numeric"]["accuracy"]["none"] == 0.5 and runs["exact"]["accuracy"]["none"] == 0.0
    assert runs["exact"]["metric"] == "exact"
