"""`crystallise.learn`, `crystallise.score` and `crystallise.last_trace_id` in-process, on a real SQLite home."""

from __future__ import annotations

import threading

import pytest

import crystallise
from crystallise.engine.task_defs import define
from crystallise.errors import NotFoundError, ValidationError
from crystallise.harness.runtime import close_sandboxes
from tests.helpers import ratio_records


@pytest.fixture(autouse=True)
def _sandboxes():
    yield
    close_sandboxes()


def test_runs_named_after_a_task_scored_after_the_fact_learn_through_a_job(sqlite_home):
    home = sqlite_home
    define(home, "ratio", metric="numeric")  # the metric: answers are compared as numbers
    home.config["model"] = "scripted:0"  # an always-wrong model: what learn jobs (and the gate's "old" side) ask
    seen = []
    for rec in ratio_records(24):
        with crystallise.trace("ratio", input=rec["context"], home=home) as t:  # named after the task: evidence
            t.output = "0"
        crystallise.score(t.id, 0.0, correction=rec["target"], home=home)
        seen.append(t.id)
    (job,) = crystallise.learn("ratio", params={"learners": ["crystallise"]}, home=home)
    assert job.status == "succeeded", job.error
    assert job.result["versions"] and home.repo.read("tasks/ratio/code.py"), job.result
    assert set(home.store.get_version(job.result["versions"][0]).provenance) <= set(seen)
    (queued,) = crystallise.learn("ratio", wait=False, home=home)
    assert queued.status == "queued"


def test_last_trace_id_is_per_thread_and_score_refuses_bad_input(sqlite_home):
    home = sqlite_home

    @crystallise.task(home=home, model="scripted:x")
    def echo(text: str) -> str:
        """Echo."""

    echo("a")
    mine = crystallise.last_trace_id()
    other: dict = {}
    t = threading.Thread(target=lambda: other.setdefault("id", crystallise.last_trace_id()))
    t.start()
    t.join()
    assert mine and other["id"] is None
    with crystallise.trace("outer", home=home) as tr:
        echo("b")
    assert crystallise.last_trace_id() == tr.id
    with pytest.raises(ValidationError, match="needs a trace id"):
        crystallise.score(None, 1.0, home=home)
    with pytest.raises(ValidationError, match="between 0 and 1"):
        crystallise.score(mine, 7, home=home)
    with pytest.raises(ValidationError, match="needs a score"):
        crystallise.score(mine, home=home)
    with pytest.raises(NotFoundError):
        crystallise.score("tr_unknown", 1.0, home=home)
    with pytest.raises(ValidationError, match="name a task"):
        crystallise.learn(home=home)
