"""One artifact registry for many machines: a local clone per worker, a central bare repository.

Workers on different nodes commit learned versions without a shared filesystem. Each home keeps
its own clone (`<home>/artifacts`); the home's `registry` (config.json, or CRYSTALLISE_REGISTRY)
names the central repository every clone fetches from and pushes to: a path or `file://` URL (a
bare repository made on first use) or any URL git can push to (`ssh://git@host/crystallise.git`).

    with repo.transaction():            # thread lock + flock of this clone + the cross-machine lock
        (pull)                          # fetch; fast-forward HEAD and the working tree to the registry
        ... read, decide ...
        repo.commit(files, message)     # commit-tree on HEAD, then `git push <sha>:main` (fast-forward
                                        # only: a push never drops another machine's version); HEAD
                                        # moves only once the registry has the commit

The cross-machine lock (`lock`, a context-manager factory: the store's, see store/locks.py) makes
the committer's read-decide-commit atomic across machines, so the store's version numbers follow
the registry's order. Without it, or if someone pushes past it, a rejected push is retried: fetch,
and if none of this commit's paths changed upstream, the same file writes are committed again on the
new tip and pushed (a rebase that cannot conflict); if one did, the commit fails with ArtifactError
(the caller re-reads and retries, as after any stale change set). Either way history stays linear
(no merge commits) and no pushed version is lost.

A history rewrite (a data deletion, `rewrite_history`) is force-pushed with a lease; the other
clones notice that the registry is no longer a descendant of what they had, adopt it and prune the
old objects. A registry on a local path is pruned too; a remote one must be garbage-collected by
whoever hosts it (docs/deploy.md).
"""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from crystallise.artifacts.gitcli import decode, git_argv, git_env, private_home, validate_path
from crystallise.artifacts.repo import ArtifactRepo, GitCommandError
from crystallise.errors import ArtifactError, ConfigError

__all__ = ["SharedArtifactRepo", "local_registry_path"]

REMOTE = "origin"
BRANCH = "main"
TRACKING = f"refs/remotes/{REMOTE}/{BRANCH}"
PUSH_TRIES = 60  # with backoff up to 1 s: a minute of contention before giving up


def local_registry_path(url: str) -> Path | None:
    """The folder of a registry on this machine's filesystem (a path or file:// URL), else None."""
    if url.startswith("file://"):
        return Path(url[len("file://"):])
    if url.startswith("/"):
        return Path(url)
    return None


class SharedArtifactRepo(ArtifactRepo):
    """An `ArtifactRepo` whose versions live in a central registry (see the module docstring).

    >>> repo = SharedArtifactRepo(home / "artifacts", "/srv/crystallise/registry.git")
    >>> repo.init()                      # clones (or creates and seeds) the registry
    >>> repo.commit({"context/rules.md": "- be brief\\n"}, "Add rule")   # committed and pushed
    """

    def __init__(
        self,
        path: Path | str,
        registry: str,
        *,
        lock: Callable[[], AbstractContextManager[object]] | None = None,
        sync_s: float = 2.0,
    ) -> None:
        super().__init__(path)
        if not isinstance(registry, str) or not registry.strip() or registry.startswith("-"):
            raise ConfigError(f"bad registry {registry!r}: give a path, file:// or ssh:// URL of a git repository")
        self.registry = registry.strip()
        self._cross = lock
        self._sync_s = float(sync_s)
        self._synced_at = 0.0

    def __repr__(self) -> str:
        return f"SharedArtifactRepo({str(self.path)!r}, registry={self.registry!r})"

    # -- set-up --------------------------------------------------------------------------------------

    def init(self) -> None:
        """Clone the registry into `path` (creating a bare registry on a local path), seed it if empty."""
        with self._lock:
            bare = local_registry_path(self.registry)
            if bare is not None and not (bare / "HEAD").exists():
                bare.mkdir(parents=True, exist_ok=True)
                self._run_git(bare.parent, "init", "-q", "--bare", "-b", BRANCH, str(bare), ok=(0,))
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigError(f"cannot create the artifact clone at {self.path}: {e}") from e
            if not self.exists():
                templates = private_home() / "templates"
                self._git("init", "-q", "-b", BRANCH, f"--template={templates}", str(self.path), git_dir=False)
            urls = decode(self._git("remote", ok=(0,))).split()
            self._git("remote", "set-url" if REMOTE in urls else "add", REMOTE, self.registry)
            try:
                super().init()  # the README commit, pushed, unless the registry already has versions
            except ArtifactError:  # another machine seeded it first: take theirs
                with self.transaction():
                    pass
                if self.head() is None:
                    raise

    def _run_git(self, cwd: Path, *args: str, ok: Sequence[int]) -> bytes:
        home = private_home()
        proc = subprocess.run(git_argv(home, args), cwd=cwd, env=git_env(home), capture_output=True)
        if proc.returncode not in ok:
            raise GitCommandError(f"`git {' '.join(args)}` failed: {decode(proc.stderr).strip()}",
                                  args, proc.returncode, decode(proc.stderr))
        return proc.stdout

    def _require(self) -> None:
        super()._require()
        if time.monotonic() - self._synced_at >= self._sync_s:  # readers see other machines' versions too
            with ArtifactRepo.transaction(self):
                if self._flock_depth == 1:
                    self._pull()

    # -- the lock and the pull -----------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """This clone's writer lock, then the cross-machine lock; on entry the clone is up to date."""
        with super().transaction():
            if self._flock_depth > 1:  # nested: the outermost holds everything already
                yield
                return
            with self._cross() if self._cross is not None else _nothing():
                self._pull()
                yield

    def _remote_head(self) -> str | None:
        out = self._git("rev-parse", "--verify", "--quiet", f"{TRACKING}^{{commit}}", ok=(0, 1, 128))
        return decode(out).strip() or None

    def _fetch(self) -> str | None:
        """Fetch the registry's main; its sha (None while the registry is empty)."""
        try:
            self._git("fetch", "-q", "--no-tags", REMOTE, f"+refs/heads/{BRANCH}:{TRACKING}")
        except GitCommandError as e:
            if "couldn't find remote ref" in e.stderr:  # an empty registry: nothing pushed yet
                return None
            raise ArtifactError(f"cannot fetch from the registry {self.registry}: {e.stderr}") from e
        return self._remote_head()

    def _pull(self) -> None:
        """Bring HEAD and the working tree to the registry's main (call with the clone's lock held)."""
        seen = self._remote_head()  # what we last knew of the registry: HEAD never runs ahead of it
        remote = self._fetch()
        self._synced_at = time.monotonic()
        local = self.head()
        if remote is None or remote == local:
            return
        if local is not None and local != seen and not self._is_ancestor(local, remote):
            raise ArtifactError(
                f"the artifact clone at {self.path} has commits the registry {self.registry} lacks "
                f"(committed by hand?): push or drop them (`git -C {self.path} reset --hard {TRACKING}`)"
            )
        rewritten = local is not None and not self._is_ancestor(local, remote)
        self._move_head(local, remote)
        if rewritten:  # the registry's history was rewritten (a data deletion): drop the old objects here too
            self._git("reflog", "expire", "--expire=now", "--all")
            self._git("gc", "--prune=now", "-q")

    def _is_ancestor(self, a: str, b: str) -> bool:
        home = private_home()
        proc = subprocess.run(git_argv(home, ["merge-base", "--is-ancestor", a, b]), cwd=self.path,
                              env=git_env(home, self.path), capture_output=True)
        if proc.returncode not in (0, 1):
            raise GitCommandError(f"`git merge-base` failed in {self.path}: {decode(proc.stderr).strip()}",
                                  proc.args, proc.returncode, decode(proc.stderr))
        return proc.returncode == 0

    def _changed(self, a: str | None, b: str) -> list[str]:
        """Files that differ between commits `a` (None: empty) and `b`."""
        if a is None:
            raw = self._git("ls-tree", "-r", "-z", "--name-only", b)
        else:
            raw = self._git("diff-tree", "-r", "-z", "--name-only", "--no-renames", a, b)
        return [validate_path(n) for n in decode(raw).split("\x00") if n]

    def _move_head(self, old: str | None, new: str, skip: Sequence[str] = ()) -> None:
        """HEAD old -> new with the working tree and index following, files first (a crash in between
        leaves files a later pull rewrites anyway). `skip`: paths already written by the caller."""
        paths = [p for p in self._changed(old, new) if p not in skip]
        for p, text in self._blobs(new, paths).items():
            self._write(p, text)
        self._git("update-ref", "-m", "crystallise: pull from the registry", "HEAD", new)
        for start in range(0, len(paths), 500):
            self._git("reset", "-q", "HEAD", "--", *paths[start : start + 500])

    # -- publishing ----------------------------------------------------------------------------------

    def _land(self, sha: str, head: str | None, paths: Sequence[str], message: str) -> str:
        """Push `sha` (parent `head`) to the registry, re-made on the registry's tip while that moves."""
        orig = head
        for attempt in range(PUSH_TRIES):
            if self._push(sha):
                self._move_head(orig, sha, skip=paths)
                self._git("update-ref", f"{TRACKING}", sha)
                return sha
            tip = self._fetch()
            if tip is None:
                raise ArtifactError(f"the registry {self.registry} refused the push and has no main branch")
            clash = sorted(set(paths) & set(self._changed(head, tip)))
            if clash:
                raise ArtifactError(
                    f"another machine changed {', '.join(clash[:5])} in the registry {self.registry} "
                    "while this commit was made: re-run the learner on the current version"
                )
            sha, head = self._recommit(tip, paths, message), tip
            time.sleep(random.uniform(0, min(1.0, 0.02 * 2 ** attempt)))  # noqa: S311 - backoff jitter, not security
        raise ArtifactError(f"could not push to the registry {self.registry} after {PUSH_TRIES} tries: retry later")

    def _push(self, sha: str) -> bool:
        """True if the registry's main now is `sha`; False if it was not a fast-forward."""
        try:
            self._git("push", "-q", REMOTE, f"{sha}:refs/heads/{BRANCH}")
        except GitCommandError as e:
            if any(s in e.stderr for s in ("rejected", "cannot lock ref", "failed to update ref")):
                return False
            raise ArtifactError(f"cannot push to the registry {self.registry}: {e.stderr}") from e
        return True

    def _recommit(self, parent: str, paths: Sequence[str], message: str) -> str:
        """The same file writes (already in the working tree) as a commit on `parent`."""
        index = self.path / ".git" / f"crystallise-rebase-{id(self)}"
        try:
            self._git("read-tree", parent, index=index)
            writes = [p for p in paths if (self.path / p).is_file()]
            deletes = [p for p in paths if p not in writes]
            if writes:
                self._git("add", "-f", "--", *writes, index=index)
            if deletes:
                self._git("rm", "--cached", "-q", "--ignore-unmatch", "--", *deletes, index=index)
            tree = decode(self._git("write-tree", index=index)).strip()
        finally:
            index.unlink(missing_ok=True)
        return decode(self._git("commit-tree", tree, "-p", parent, input=message.encode("utf-8"))).strip()

    def rewrite_history(self, transform: Callable[[str, str], str | None]) -> dict[str, str]:
        """As `ArtifactRepo.rewrite_history`, then force-pushed (with a lease) and pruned in a local registry."""
        with self.transaction():
            before = self._remote_head()
            mapping = super().rewrite_history(transform)
            new = self.head()
            if not mapping or new is None:
                return mapping
            lease = f"--force-with-lease=refs/heads/{BRANCH}:{before}" if before else "--force"
            self._git("push", "-q", lease, REMOTE, f"{new}:refs/heads/{BRANCH}")
            self._git("update-ref", TRACKING, new)
            self._git("reflog", "expire", "--expire=now", "--all")  # the tracking ref held the old history
            self._git("gc", "--prune=now", "-q")
            bare = local_registry_path(self.registry)
            if bare is not None:
                self._run_git(bare, "reflog", "expire", "--expire=now", "--all", ok=(0,))
                self._run_git(bare, "gc", "--prune=now", "-q", ok=(0,))
            return mapping


@contextmanager
def _nothing() -> Iterator[None]:
    yield
