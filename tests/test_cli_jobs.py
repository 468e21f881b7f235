"""`crystallise tasks define`, `learn`, `jobs list|show|cancel` on a real SQLite home."""

from __future__ import annotations

import json

from click.testing import CliRunner

from crystallise.backends.scripted import ScriptedBackend
from crystallise.cli import main
from crystallise.engine import jobs
from crystallise.engine.loop import Loop, LoopConfig
from crystallise.gate import score_numeric
from crystallise.harness.runtime import close_sandboxes
from crystallise.harness.spec import TaskSpec
from crystallise.types import Scope
from tests.helpers import ratio_records


def test_define_learn_and_inspect_jobs_from_the_command_line(sqlite_home):
    home = sqlite_home
    home.config["model"] = "scripted:0"
    home.save_config()
    cli = CliRunner()
    args = ["--home", str(home.path)]
    r = cli.invoke(main, [*args, "tasks", "define", "ratio", "--metric", "numeric", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"name": "ratio", "grade": "G0", "metric": "numeric", "created": True}
    r = cli.invoke(main, [*args, "tasks", "define", "ratio", "--metric", "exact"])
    assert r.exit_code == 2 and "already defined with a different" in r.output
    loop = Loop(home, TaskSpec(name="ratio", metric="numeric"), ScriptedBackend(lambda q: "0"), score_numeric,
                LoopConfig(scope=Scope(org="acme")))
    for rec in ratio_records(24):
        loop.record_labelled(rec["context"], rec["target"])
    try:
        r = cli.invoke(main, [*args, "learn", "ratio", "--org", "acme", "--param", 'learners=["crystallise"]'])
    finally:
        close_sandboxes()
    assert r.exit_code == 0, r.output
    assert "succeeded" in r.output
    listed = json.loads(cli.invoke(main, [*args, "jobs", "list", "--json"]).output)
    (job,) = listed
    assert job["status"] == "succeeded" and job["result"]["versions"] and job["scope"]["org"] == "acme"
    shown = cli.invoke(main, [*args, "jobs", "show", job["id"]]).output
    assert "learn: crystallise" in shown and "succeeded" in shown
    assert cli.invoke(main, [*args, "learn"]).exit_code == 2  # neither a task nor --all
    assert cli.invoke(main, [*args, "learn", "nope"]).exit_code == 2
    r = cli.invoke(main, [*args, "learn", "--kind", "dream", "--no-wait"])
    assert r.exit_code == 0 and "queued" in r.output
    queued = jobs.list_jobs(home, status="queued")[0]
    r = cli.invoke(main, [*args, "jobs", "cancel", queued.id])
    assert r.exit_code == 0 and "cancelled" in r.output
