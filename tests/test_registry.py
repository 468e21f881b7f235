"""One artifact registry across machines (artifacts/registry.py, store/locks.py): separate clones,
separate processes, real git, real SQLite and PostgreSQL stores.

What must hold with N concurrent committers: no version lost, history linear (no merges), version
numbers unique and in the registry's order, and a read-modify-write of one shared file never loses
an update (the learner re-reads and retries when its change set went stale).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crystallise.artifacts.gitcli import git_argv, git_env, private_home
from crystallise.artifacts.registry import SharedArtifactRepo
from crystallise.engine.committer import Committer
from crystallise.engine.home import Home
from crystallise.errors import ArtifactError
from crystallise.types import ChangeSet, Delta, Verdict

WORKERS = 8


def _bare(bare: Path, *args: str) -> str:
    home = private_home()
    out = subprocess.run(git_argv(home, args), cwd=bare, env=git_env(home), capture_output=True, check=True)
    return out.stdout.decode("utf-8", "replace")


def _linear_history(bare: Path) -> list[str]:
    """The registry's commits oldest first, after checking that none is a merge."""
    assert _bare(bare, "rev-list", "--min-parents=2", "main").strip() == "", "a merge commit in the registry"
    return _bare(bare, "rev-list", "--reverse", "main").split()


def test_two_clones_share_versions_and_a_racing_push_is_rebased_or_refused(tmp_path):
    bare = tmp_path / "registry.git"
    a = SharedArtifactRepo(tmp_path / "a", str(bare), sync_s=0)
    b = SharedArtifactRepo(tmp_path / "b", str(bare), sync_s=0)
    a.init()
    b.init()  # clones the seeded registry: one README commit, not two
    assert len(_linear_history(bare)) == 1 and a.head() == b.head()

    a.commit({"notes/a.md": "from a\n"}, "a writes")
    assert b.read("notes/a.md") == "from a\n"  # b pulled on read
    assert (tmp_path / "b" / "notes" / "a.md").read_text() == "from a\n"

    # b commits on a stale HEAD (its pull skipped) while a pushes: a different path is re-made on the new tip ...
    a.commit({"notes/a2.md": "a again\n"}, "a writes again")
    b._pull = lambda: None  # type: ignore[method-assign]
    b._synced_at = float("inf")
    sha = b.commit({"notes/b.md": "from b\n"}, "b writes")
    history = _linear_history(bare)
    assert history[-1] == sha and b.head() == sha and len(history) == 4
    assert (tmp_path / "b" / "notes" / "a2.md").read_text() == "a again\n"  # the tip's files came along

    # ... the same path is refused (the caller re-reads), and b's working tree keeps the registry's text
    a.commit({"notes/b.md": "a overwrote b\n"}, "a edits b's file")
    with pytest.raises(ArtifactError, match="another machine changed notes/b.md"):
        b.commit({"notes/b.md": "b, stale\n"}, "b edits on a stale base")
    assert _bare(bare, "show", "main:notes/b.md") == "a overwrote b\n"
    del b._pull
    b._synced_at = 0.0
    assert b.read("notes/b.md") == "a overwrote b\n"


def test_a_history_rewrite_reaches_the_registry_and_every_clone(tmp_path):
    bare = tmp_path / "registry.git"
    a = SharedArtifactRepo(tmp_path / "a", str(bare), sync_s=0)
    b = SharedArtifactRepo(tmp_path / "b", str(bare), sync_s=0)
    a.init()
    b.init()
    a.commit({"notes/p.md": "secret-token-123\n"}, "learned a secret")
    assert b.read("notes/p.md") == "secret-token-123\n"
    a.rewrite_history(lambda path, text: text.replace("secret-token-123", "[deleted]"))
    assert b.read("notes/p.md") == "[deleted]\n"
    for git_dir in (bare, tmp_path / "a" / ".git", tmp_path / "b" / ".git"):  # every object, decompressed
        objects = _bare(git_dir, "cat-file", "--batch-all-objects", "--batch")
        assert "[deleted]" in objects and "secret-token-123" not in objects, git_dir


_REPO_WORKER = textwrap.dedent("""
    import sys
    from crystallise.artifacts.registry import SharedArtifactRepo
    from crystallise.errors import ArtifactError
    clone, registry, me, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    repo = SharedArtifactRepo(clone, registry, sync_s=0)
    repo.init()
    for k in range(n):
        repo.commit({f"notes/w{me}/{k}.md": f"worker {me} version {k}\\n"}, f"worker {me} version {k}")
    retries = 0
    for k in range(2):  # a read-modify-write of one file every worker shares, atomic in this clone
        while True:
            try:
                with repo.transaction():
                    text = repo.read("shared.md") or ""
                    repo.commit({"shared.md": text + f"w{me}.{k}\\n"}, f"worker {me} appends {k}")
                break
            except ArtifactError:  # another clone pushed shared.md first: re-read, try again
                retries += 1
    print(retries)
""")


def test_eight_processes_with_their_own_clones_lose_no_version(tmp_path):
    bare = tmp_path / "registry.git"
    seed = SharedArtifactRepo(tmp_path / "seed", str(bare))
    seed.init()
    per = 2
    procs = [subprocess.Popen([sys.executable, "-c", _REPO_WORKER, str(tmp_path / f"clone{i}"), str(bare), str(i),
                               str(per)], stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(WORKERS)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]
    history = _linear_history(bare)
    assert len(history) == 1 + WORKERS * per + WORKERS * 2  # README + every version, none lost
    files = _bare(bare, "ls-tree", "-r", "--name-only", "main").split()
    assert sorted(f for f in files if f.startswith("notes/")) == sorted(
        f"notes/w{i}/{k}.md" for i in range(WORKERS) for k in range(per))
    shared = _bare(bare, "show", "main:shared.md").split()
    assert sorted(shared) == sorted(f"w{i}.{k}" for i in range(WORKERS) for k in range(2))  # no lost update


_COMMITTER_WORKER = textwrap.dedent("""
    import sys
    from crystallise.engine.committer import Committer
    from crystallise.engine.home import Home
    from crystallise.errors import ArtifactError
    from crystallise.types import ChangeSet, Delta, Verdict
    home, me, n = Home.open(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    def commit(path, after_of):
        while True:
            before = home.repo.read(path)
            cs = ChangeSet(learner="test", layer="context", summary=f"worker {me} {path}",
                           deltas=[Delta(op="set", target="artifact", path=path, before=before,
                                         after=after_of(before))],
                           verdict=Verdict(decision="accept", reason="test"))
            try:
                return Committer(home).commit(cs)
            except ArtifactError:
                continue  # stale: another machine changed the file first; re-read and try again
    for k in range(n):
        commit(f"notes/w{me}/{k}.md", lambda _: f"worker {me} version {k}\\n")
        commit("shared.md", lambda text: (text or "") + f"w{me}.{k}\\n")
""")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_eight_committers_on_separate_clones_get_unique_numbers_in_registry_order(tmp_path, backend, request):
    if backend == "sqlite":
        store_url = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        store_url = request.getfixturevalue("pg_server").create_database()
    bare = tmp_path / "registry.git"
    homes = []
    for i in range(WORKERS):
        h = Home.init(tmp_path / f"home{i}", store_url=store_url, registry=str(bare))
        h.config["registry_sync_s"] = 0
        h.save_config()
        h.close()
        homes.append(tmp_path / f"home{i}")
    per = 2
    procs = [subprocess.Popen([sys.executable, "-c", _COMMITTER_WORKER, str(h), str(i), str(per)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i, h in enumerate(homes)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]

    history = _linear_history(bare)
    assert len(history) == 1 + WORKERS * per * 2
    home = Home.open(homes[0])
    try:
        versions = sorted(home.store.list_versions(limit=1000), key=lambda v: v.number)
        assert len(versions) == WORKERS * per * 2
        assert len({v.number for v in versions}) == len(versions)  # unique
        assert [v.commit for v in versions] == history[1:]  # numbers follow the registry's order
        shared = home.repo.read("shared.md").split()
        assert sorted(shared) == sorted(f"w{i}.{k}" for i in range(WORKERS) for k in range(per))
    finally:
        home.close()


def test_a_registry_home_commits_through_the_committer_and_a_second_home_sees_it(tmp_path):
    store_url = f"sqlite:///{tmp_path / 'shared.db'}"
    bare = tmp_path / "registry.git"
    one = Home.init(tmp_path / "one", store_url=store_url, registry=str(bare))
    two = Home.init(tmp_path / "two", store_url=store_url, registry=str(bare))
    try:
        cs = ChangeSet(learner="test", layer="context", summary="one learns",
                       deltas=[Delta(op="set", target="artifact", path="notes/x.md", before=None, after="x\n")],
                       verdict=Verdict(decision="accept", reason="test"))
        v = Committer(one).commit(cs)
        assert v.number == 1 and _linear_history(bare)[-1] == v.commit
        two.repo._synced_at = 0.0
        assert two.repo.read("notes/x.md") == "x\n"
        assert Committer(two).revert(v.number).number == 2  # undo from the other machine
        assert one.repo.read("notes/x.md") in (None, "x\n")  # one sees it after its sync interval ...
        one.repo._synced_at = 0.0
        assert one.repo.read("notes/x.md") is None  # ... and then it is gone
    finally:
        one.close()
        two.close()
