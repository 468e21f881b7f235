"""The git artifact repository: versions, trailers, audit trail, undo."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crystallise.artifacts import ArtifactRepo, CommitInfo
from crystallise.errors import ArtifactError, ConfigError, NotFoundError, ValidationError


def git(repo: ArtifactRepo, *args: str) -> str:
    """Plain git, as a person would run it, to check what the repository really holds."""
    return subprocess.run(
        ["git", "-C", str(repo.path), *args], capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> ArtifactRepo:
    r = ArtifactRepo(tmp_path / "artifacts")
    r.init()
    return r


def test_init_is_idempotent_and_sets_up_the_repository(tmp_path: Path) -> None:
    r = ArtifactRepo(tmp_path / "a" / "artifacts")
    assert not r.exists()
    r.init()
    first = r.head()
    r.init()
    assert r.exists() and r.head() == first and first is not None
    [c] = r.log()
    assert c.files == ["README.md"] and "tasks/<name>/" in (r.read("README.md") or "")
    assert git(r, "config", "--local", "user.name").strip() == "crystallise"
    assert git(r, "config", "--local", "user.email").strip() == "crystallise@localhost"
    assert git(r, "config", "--local", "commit.gpgsign").strip() == "false"
    assert git(r, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"


def test_init_inside_another_repository_makes_its_own(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    r = ArtifactRepo(tmp_path / "artifacts")
    assert not r.exists()  # the parent repository does not count
    r.init()
    assert (tmp_path / "artifacts" / ".git").is_dir() and len(r.log()) == 1


def test_commit_with_trailers_reads_back_from_log(repo: ArtifactRepo) -> None:
    sha = repo.commit(
        {"tasks/add/code.py": "def solve(a, b):\n    return a + b\n", "context/rules.md": "- be brief\n"},
        "Crystallise task add\n\nThe code reproduces 40/40 held-out cases.",
        {"Trace-Id": ["t1", "t2"], "Gate-Verdict": "accept: p=0.003", "Change-Set": "cs_1"},
    )
    assert sha and repo.head() == sha
    c = repo.log(1)[0]
    assert isinstance(c, CommitInfo)
    assert (c.sha, c.short, c.subject) == (sha, sha[: len(c.short)], "Crystallise task add")
    assert c.body == "The code reproduces 40/40 held-out cases."
    assert c.trailers == {"Trace-Id": ["t1", "t2"], "Gate-Verdict": ["accept: p=0.003"], "Change-Set": ["cs_1"]}
    assert c.trailer("trace-id") == ["t1", "t2"]
    assert c.files == ["context/rules.md", "tasks/add/code.py"] and c.timestamp > 1e9
    assert repo.read("tasks/add/code.py", at=sha) == "def solve(a, b):\n    return a + b\n"
    # git itself agrees: the trailers are real trailers
    parsed = git(repo, "log", "-1", "--format=%(trailers:key=Trace-Id,valueonly)").split()
    assert parsed == ["t1", "t2"]


def test_noop_commit_returns_none(repo: ArtifactRepo) -> None:
    head = repo.commit({"a.md": "x\n"}, "Add a")
    assert repo.commit({"a.md": "x\n"}, "Same again") is None
    assert repo.commit({}, "Nothing") is None
    assert repo.commit({"never-existed.md": None}, "Delete a ghost") is None
    assert repo.head() == head and len(repo.log()) == 2


def test_delete_a_file(repo: ArtifactRepo) -> None:
    repo.commit({"skills/x/SKILL.md": "# x\n", "skills/y.md": "y\n"}, "Add skills")
    sha = repo.commit({"skills/x/SKILL.md": None}, "Retire skill x", {"Reason": "superseded"})
    assert sha and repo.read("skills/x/SKILL.md") is None
    assert not (repo.path / "skills" / "x").exists()  # emptied folders go too
    assert repo.list_files("skills/") == ["skills/y.md"]
    assert repo.read("skills/x/SKILL.md", at=sha) is None
    assert repo.read("skills/x/SKILL.md", at=f"{sha}~1") == "# x\n"
    assert repo.log(1)[0].files == ["skills/x/SKILL.md"]


@pytest.mark.parametrize(
    "bad",
    ["../escape.md", "/etc/passwd", ".git/config", "a/.git/x", ".GIT/config", "a/../b", "a//b", "a/./b",
     "", "a\\b", "dir/", "x\x00y", "line\nbreak"],
)
def test_paths_are_validated(repo: ArtifactRepo, bad: str) -> None:
    with pytest.raises(ValidationError, match="bad artifact path"):
        repo.commit({bad: "x"}, "Bad")
    with pytest.raises(ValidationError):
        repo.read(bad)
    assert len(repo.log()) == 1


def test_messages_and_trailers_are_validated(repo: ArtifactRepo) -> None:
    with pytest.raises(ValidationError, match="non-empty message"):
        repo.commit({"a.md": "x"}, "  ")
    with pytest.raises(ValidationError, match="trailer key"):
        repo.commit({"a.md": "x"}, "m", {"Bad Key": "v"})
    with pytest.raises(ValidationError, match="control characters"):
        repo.commit({"a.md": "x"}, "m", {"Key": "bell\x07"})
    with pytest.raises(ValidationError, match="str or None"):
        repo.commit({"a.md": b"bytes"}, "m")  # type: ignore[dict-item]
    assert repo.read("a.md") is None and len(repo.log()) == 1
    # trailers are one line: whitespace folds, empty values are dropped
    repo.commit({"a.md": "x"}, "m", {"Reason": "two\n\tlines", "Empty": ["", " "], "Kept": ["a", ""]})
    assert repo.log(1)[0].trailers == {"Reason": ["two lines"], "Kept": ["a"]}


def test_log_by_path_and_limit(repo: ArtifactRepo) -> None:
    a = repo.commit({"tasks/a/spec.yaml": "a: 1\n"}, "Add a")
    b = repo.commit({"tasks/b/spec.yaml": "b: 1\n"}, "Add b")
    c = repo.commit({"tasks/a/spec.yaml": "a: 2\n", "context/x.md": "x\n"}, "Change a")
    assert [i.sha for i in repo.log()][:3] == [c, b, a]
    assert [i.sha for i in repo.log(2)] == [c, b]
    assert [i.sha for i in repo.log(path="tasks/a/spec.yaml")] == [c, a]
    assert [i.sha for i in repo.log(path="tasks/a")] == [c, a]
    assert [i.sha for i in repo.log(path="tasks/b/")] == [b]
    assert repo.log(path="tasks/a")[0].files == ["context/x.md", "tasks/a/spec.yaml"]  # the whole commit
    assert repo.log(path="nothing/here") == []


def test_show_and_diff(repo: ArtifactRepo) -> None:
    a = repo.commit({"context/p.md": "- one\n", "other.md": "o\n"}, "Add playbook")
    b = repo.commit({"context/p.md": "- one\n- two\n", "other.md": "p\n"}, "Grow playbook", {"Trace-Id": "t9"})
    assert a and b
    shown = repo.show(b)
    assert "Grow playbook" in shown and "Trace-Id: t9" in shown
    assert "context/p.md | 1 +" in shown and "+- two" in shown
    d = repo.diff(a, b, "context/p.md")
    assert "+- two" in d and "other.md" not in d
    assert "other.md" in repo.diff(a, b) and repo.diff(b, b) == ""


def test_unknown_versions(repo: ArtifactRepo) -> None:
    with pytest.raises(NotFoundError, match="unknown version 'deadbeef'.*git -C"):
        repo.show("deadbeef")
    with pytest.raises(ValidationError):
        repo.read("README.md", at="--output=/tmp/x")


def test_find_by_trailer(repo: ArtifactRepo) -> None:
    a = repo.commit({"a.md": "a\n"}, "A", {"Change-Set": "cs_1", "Trace-Id": ["t1", "t2"]})
    b = repo.commit({"b.md": "b\n"}, "B mentions cs_1 in passing", {"Change-Set": "cs_2", "Trace-Id": "t2"})
    assert [c.sha for c in repo.find("Change-Set", "cs_1")] == [a]
    assert [c.sha for c in repo.find("trace-id", "t2")] == [b, a]
    assert repo.find("Change-Set", "cs_3") == [] and repo.find("Nope", "cs_1") == []


def test_revert_files_and_changed_since(repo: ArtifactRepo) -> None:
    repo.commit({"tasks/t/prompt.md": "v1\n", "tasks/t/schema.json": "{}\n"}, "Add t")
    b = repo.commit(
        {"tasks/t/prompt.md": "v2\n", "tasks/t/schema.json": None, "tasks/t/code.py": "x = 1\n"}, "Change t"
    )
    assert b is not None
    undo = repo.revert_files(b)
    assert undo == {"tasks/t/prompt.md": "v1\n", "tasks/t/schema.json": "{}\n", "tasks/t/code.py": None}
    assert repo.changed_since(b, list(undo)) == []
    repo.commit({"tasks/t/prompt.md": "v3\n"}, "Later work")
    assert repo.changed_since(b, list(undo)) == ["tasks/t/prompt.md"]
    assert repo.changed_since(b, ["tasks/t", "context"]) == ["tasks/t"]
    # applying the undo set restores the old files
    safe = {p: v for p, v in undo.items() if p not in repo.changed_since(b, list(undo))}
    assert repo.commit(safe, f"Revert {b[:10]}", {"Reverts": b})
    assert repo.read("tasks/t/schema.json") == "{}\n" and repo.read("tasks/t/code.py") is None
    root = repo.log()[-1].sha
    assert repo.revert_files(root) == {"README.md": None}


def test_not_a_repository(tmp_path: Path) -> None:
    r = ArtifactRepo(tmp_path / "missing")
    for action in (r.head, r.log, lambda: r.read("a.md"), lambda: r.commit({"a.md": "x"}, "m")):
        with pytest.raises(ConfigError, match=r"no artifact repository at .*missing: run `crystallise init`"):
            action()


def test_dirty_files_outside_the_change_are_left_alone(repo: ArtifactRepo) -> None:
    (repo.path / "README.md").write_text("edited by a person\n")
    (repo.path / "staged.md").write_text("staged by a person\n")
    git(repo, "add", "staged.md")
    sha = repo.commit({"tasks/t/spec.yaml": "name: t\n"}, "Add t")
    assert sha and repo.log(1)[0].files == ["tasks/t/spec.yaml"]
    status = git(repo, "status", "--porcelain")
    assert " M README.md" in status and "A  staged.md" in status and "spec.yaml" not in status
    assert repo.list_files() == ["README.md", "staged.md", "tasks/t/spec.yaml"]
    assert repo.list_files(at=sha) == ["README.md", "tasks/t/spec.yaml"]


def test_users_git_config_env_and_hooks_do_not_interfere(
    repo: ArtifactRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tname = Someone\n[commit]\n\tgpgsign = true\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Impostor")
    hook = repo.path / ".git" / "hooks" / "reference-transaction"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text("#!/bin/sh\ntouch \"$(dirname \"$0\")/hook-ran\"\nexit 1\n")
    hook.chmod(0o755)
    sha = repo.commit({"a.md": "a\n"}, "A")
    assert sha and not (repo.path / ".git" / "hooks" / "hook-ran").exists()
    monkeypatch.delenv("GIT_DIR")
    assert git(repo, "log", "-1", "--format=%an <%ae>").strip() == "crystallise <crystallise@localhost>"


def test_concurrent_commits_all_land(repo: ArtifactRepo) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(3):
                repo.commit({f"notes/{i}-{j}.md": f"{i}.{j}\n"}, f"Note {i}.{j}")
        except BaseException as e:  # noqa: BLE001  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(repo.log(100)) == 13 and len(repo.list_files("notes/")) == 12


def test_git_failures_become_artifact_errors(repo: ArtifactRepo) -> None:
    (repo.path / "blocker").write_text("a file where a folder must be\n")
    with pytest.raises(ArtifactError, match="cannot write"):
        repo.commit({"blocker/inner.md": "x"}, "Blocked")
    with pytest.raises(ArtifactError, match="git"):
        repo._git("no-such-command")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(st.characters(blacklist_categories=["Cs"]), max_size=200),
    values=st.lists(st.text("abcdefghij-_:0123456789 ", min_size=1).filter(str.strip), min_size=1, max_size=3),
)
def test_contents_and_trailers_round_trip(repo: ArtifactRepo, text: str, values: list[str]) -> None:
    sha = repo.commit({"round/trip.txt": text}, "Round trip", {"Value": values})
    if sha is None:  # same text as the previous example
        return
    info = repo.log(1)[0]
    assert repo.read("round/trip.txt", at=sha) == text
    assert info.trailers == {"Value": [" ".join(v.split()) for v in values]} and info.subject == "Round trip"


def test_symlinks_out_of_the_repository_are_refused(repo: ArtifactRepo, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("secret\n")
    (repo.path / "linked").symlink_to(outside)
    with pytest.raises(ValidationError, match="leads out of the repository"):
        repo.read("linked/secret.md")
    with pytest.raises(ValidationError, match="leads out of the repository"):
        repo.commit({"linked/new.md": "x"}, "Write through a symlink")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.md"]
