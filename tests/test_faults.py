"""Faults: kill -9 during ingest and commit, interrupted git commits, 16 concurrent writers.

The long version is `crystallise bench faults` (50 kills per scenario and store); these
are a few real kills of each kind, so `make test` proves the same invariants.
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import pytest

from crystallise.artifacts import ArtifactRepo
from crystallise.engine.home import Home

from bench import faults


def _home(tmp_path: Path, store_url: str | None = None) -> Path:
    Home.init(tmp_path / "home", store_url=store_url).close()
    return tmp_path / "home"


# -- an interrupted git commit, simulated exactly -------------------------------------------------------


def _journal(repo: ArtifactRepo, head: str | None, files: dict[str, str | None]) -> None:
    entry = {"head": head, "pid": 1, "files": {p: None if t is None else base64.b64encode(t.encode()).decode()
                                               for p, t in files.items()}}
    (repo.path / ".git" / "crystallise-journal.json").write_text(json.dumps(entry))


def test_a_commit_killed_before_it_landed_leaves_the_old_files(tmp_path):
    repo = ArtifactRepo(tmp_path / "a")
    repo.init()
    repo.commit({"tasks/t/code.py": "old\n"}, "v1")
    head = repo.head()
    _journal(repo, head, {"tasks/t/code.py": "old\n", "tasks/t/new.md": None})
    (repo.path / "tasks/t/code.py").write_text("half-made\n")  # what the killed writer had written
    (repo.path / "tasks/t/new.md").write_text("half-made\n")
    (repo.path / "tasks/t/.code.py.k2j4.tmp").write_text("killed inside atomic_write\n")
    fresh = ArtifactRepo(repo.path)  # the next process to use the repository
    assert fresh.read("tasks/t/code.py") == "old\n" and fresh.read("tasks/t/new.md") is None
    assert not fresh._git("status", "--porcelain", "--untracked-files=all").strip()
    assert fresh.head() == head and not (repo.path / ".git" / "crystallise-journal.json").exists()


def test_a_commit_killed_after_it_landed_shows_the_commit(tmp_path):
    repo = ArtifactRepo(tmp_path / "a")
    repo.init()
    head = repo.head()
    repo.commit({"x.md": "new\n"}, "v1")
    _journal(repo, head, {"x.md": None})  # killed after update-ref, before cleaning up
    (repo.path / "x.md").unlink()
    fresh = ArtifactRepo(repo.path)
    assert fresh.read("x.md") == "new\n"
    assert not fresh._git("status", "--porcelain").strip()


def test_a_torn_journal_is_discarded(tmp_path):
    repo = ArtifactRepo(tmp_path / "a")
    repo.init()
    (repo.path / ".git" / "crystallise-journal.json").write_text('{"head": ')
    fresh = ArtifactRepo(repo.path)
    assert fresh.commit({"y.md": "y\n"}, "after a torn journal")
    assert fresh.read("y.md") == "y\n"


# -- the checker finds what it must ------------------------------------------------------------------


def test_the_checker_sees_a_dirty_tree_and_lost_work(tmp_path):
    home = _home(tmp_path)
    faults.child("commit", str(home), 3)
    assert faults.check("commit", home, {0, 1, 2}) == []
    (home / "artifacts" / "notes" / "w0" / "k0.md").write_text("tampered\n")
    problems = faults.check("commit", home, {0, 1, 2, 7})
    assert any("working tree differs" in p for p in problems)
    assert any("w0k7 acknowledged but not committed" in p for p in problems)


# -- real kills --------------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [0, 1])
@pytest.mark.parametrize("scenario", ["ingest", "commit"])
def test_kill_minus_nine_loses_nothing_acknowledged(tmp_path, store_url, scenario, attempt):
    run = faults.kill_run(scenario, _home(tmp_path, store_url), random.Random(attempt), window_s=1.2, min_s=0.5)
    assert run["problems"] == []
    assert run["in_flight"] or run["acked"], run  # the kill landed while the work went on


def test_sixteen_concurrent_writers_lose_and_duplicate_nothing(tmp_path, store_url):
    result = faults.concurrent_run(_home(tmp_path, store_url), writers=16, per_writer=2)
    assert result["problems"] == []
