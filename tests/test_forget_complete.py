"""`forget --user` is complete (issue 15, part 6): after it, a grep for the user's strings finds nothing in
the store (change-set deltas and evidence included), the artifact tree, the OTLP spool or the access log."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa

from crystallise.backends.scripted import ScriptedBackend
from crystallise.engine.forget_user import forget_user, rewrite_history
from crystallise.engine.loop import CachedBackend, Loop, LoopConfig
from crystallise.gate import score_exact
from crystallise.harness.runtime import close_sandboxes
from crystallise.harness.spec import TaskSpec
from crystallise.types import Scope
from tests.helpers import new_home


@pytest.fixture(autouse=True)
def _sandboxes():
    yield
    close_sandboxes()


def loop_for(home, user: str) -> Loop:
    return Loop(home, TaskSpec(name="codes", metric="exact"), CachedBackend(ScriptedBackend(lambda r: "?")),
                score_exact, LoopConfig(learners=("crystallise", "fewshot"), scope=Scope(org="acme", user=user),
                                        shadow="off"))


def store_text(home) -> str:
    """Every row of every table, as text (what a grep over a dump would see)."""
    engine = home.store.engine
    meta = sa.MetaData()
    meta.reflect(bind=engine)
    with engine.connect() as conn:
        return "\n".join(repr(tuple(row)) for t in meta.sorted_tables for row in conn.execute(sa.select(t)))


def tree_text(home) -> str:
    return "\n".join(home.repo.read(p) or "" for p in home.repo.list_files())


def zed(n: int) -> tuple[str, str]:
    return f"reply code for order {n}", f"VAULT-zed-{n}"


def test_forget_leaves_no_trace_of_the_users_strings(tmp_path, store_url):
    home = new_home(tmp_path, store_url)
    mine = loop_for(home, "zed")
    for n in range(100, 150):
        value, truth = zed(n)
        _, tid = mine.answer(value)
        mine.feedback(tid, truth, False)
    assert mine.learn().committed
    ann = loop_for(home, "ann")
    for n in range(1, 30):
        _, tid = ann.answer(f"ann ticket {n}")
        ann.feedback(tid, f"ANN-{n}", False)
    assert "order 12" in tree_text(home) and "VAULT-zed" in store_text(home)
    spool = Path(home.path) / "otlp-pending"
    spool.mkdir(parents=True, exist_ok=True)
    (spool / ("a" * 32 + ".jsonl")).write_text(json.dumps(
        {"name": "llm", "attributes": {"crystallise.user": "zed", "input.value": "reply code for order 999"},
         "_org": "acme"}) + "\n")
    (spool / ("b" * 32 + ".jsonl")).write_text(json.dumps(
        {"name": "llm", "attributes": {"crystallise.user": "ann"}, "_org": "acme"}) + "\n")

    [report] = forget_user(home, "zed", org="acme")
    assert report.counts["task_files"] > 0 and report.counts["spool_files"] == 1
    strings = ["VAULT-zed", "reply code for order 1"]
    for where, text in (("store", store_text(home)), ("tree", tree_text(home)),
                        ("spool", "".join(f.read_text() for f in spool.iterdir()))):
        assert not [s for s in strings if s in text], where
    assert "ANN-" in store_text(home)  # another user's data stays
    assert home.repo.read("orgs/acme/tasks/codes/code.py") is None  # the program learned from zed is retired

    # git history keeps the audit trail unless the user asks: then it is rewritten
    history = home.repo._git("log", "-p", "--all").decode()
    assert "VAULT-zed" in history
    rewrite_history(home, report)
    history = home.repo._git("log", "-p", "--all").decode()
    assert not [s for s in strings if s in history]
    assert home.repo.read("tasks/codes/spec.json")  # the tree is still there, and usable


def test_the_access_log_holds_no_query_strings(caplog):
    from crystallise.cli.serve import QueryStringFilter

    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/v1/context?user=zed&query=passport+ZX1Q", "1.1", 200), None)
    assert QueryStringFilter().filter(record)
    assert "zed" not in record.getMessage() and "ZX1Q" not in record.getMessage()
    assert "/v1/context" in record.getMessage()


def test_forget_on_the_command_line_rewrites_history_when_asked(tmp_path):
    from click.testing import CliRunner

    from crystallise.cli import main

    home = new_home(tmp_path)
    mine = loop_for(home, "zed")
    for n in range(100, 150):
        value, truth = zed(n)
        _, tid = mine.answer(value)
        mine.feedback(tid, truth, False)
    assert mine.learn().committed
    result = CliRunner().invoke(main, ["--home", str(home.path), "forget", "--user", "zed", "--org", "acme", "--yes",
                                       "--rewrite-history", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert row["commits_rewritten"] > 0 and row["counts"]["task_files"] > 0
    history = home.repo._git("log", "-p", "--all").decode()
    assert "VAULT-zed" not in history and "reply code for order 1" not in history
