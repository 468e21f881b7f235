"""The artifact store: a git repository of plain-text learned knowledge (DESIGN.md §4).

One commit is one version. Commit trailers carry provenance and the gate verdict, so
`git log` is the audit trail and an undo is just another commit. The layout (`context/`,
`tasks/<name>/`, `skills/`, `adapters/`) is described in the README that `init()` commits.

    repo.commit({"tasks/add/code.py": src}, "Crystallise add", {"Trace-Id": ["t1", "t2"]})
      1. write each file atomically (temp + rename) in the working tree
      2. stage exactly those paths into a private index built from HEAD
         (other dirty or staged files are left alone)
      3. write-tree; same tree as HEAD -> None (no empty commits)
      4. commit-tree + compare-and-swap of HEAD -> the new sha

A journal (`.git/crystallise-journal.json`: HEAD before and each path's old content) is
written, synced, before step 1 and removed after step 4. A process killed in between
leaves it behind; the next use of the repository (under the same lock) finishes the job:
HEAD unmoved -> the old files are put back; HEAD moved -> the working tree is made to
agree with the commit. Either way the working tree never shows a half-made version.

git runs with a controlled environment: no system or user config, a private HOME,
no hooks, no fsmonitor, literal pathspecs, LC_ALL=C (gitcli.py builds it, with the other pure helpers).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from crystallise.artifacts.gitcli import (
    IDENTITY,
    LOG_FORMAT,
    ZERO_SHA,
    atomic_write,
    compose_message,
    decode,
    git_argv,
    git_env,
    parse_log,
    private_home,
    validate_path,
)
from crystallise.errors import ArtifactError, ConfigError, NotFoundError, ValidationError

try:  # POSIX: serialise committers across processes too
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["ArtifactRepo", "CommitInfo", "GitCommandError", "validate_path"]

README = """\
# crystallise artifacts

Learned agent- and org-level knowledge, one commit per version. Every commit made by
crystallise carries trailers with its provenance (the traces that caused it) and the
gate's verdict, so `git log` is the audit trail and any version can be reverted.

| path | what |
|---|---|
| `context/` | playbook sections: strategies, rules, pitfalls (Markdown) |
| `tasks/<name>/` | one task: `spec.json`, `prompt.md`, `examples.jsonl`, `evals.jsonl`, `code.py`, `program.json` |
| `skills/<name>/SKILL.md` | skills the agent can load |
| `adapters/` | LoRA adapter manifests (the weights themselves live outside git) |

User-level memories never enter this repository; they live in the store, where they can be deleted.
"""


@dataclass
class CommitInfo:
    """One version of the artifact repository, as `git log` sees it.

    `trailers` maps each trailer key (as written) to all its values, in order:
    `{"Trace-Id": ["t1", "t2"], "Gate-Verdict": ["accept"]}`. `body` is the message
    body without the trailer block; `files` every path the commit touched.
    """

    sha: str
    short: str
    subject: str
    body: str
    trailers: dict[str, list[str]] = field(default_factory=dict)
    timestamp: float = 0.0
    files: list[str] = field(default_factory=list)

    def trailer(self, key: str) -> list[str]:
        """All values of `key`, compared case-insensitively as git does: `info.trailer("trace-id")`."""
        k = key.casefold()
        return [v for name, vals in self.trailers.items() if name.casefold() == k for v in vals]


class GitCommandError(ArtifactError):
    """A git command failed; `command`, `returncode` and `stderr` say how."""

    def __init__(self, message: str, command: Sequence[str] = (), returncode: int = 0, stderr: str = "") -> None:
        super().__init__(message)
        self.command, self.returncode, self.stderr = list(command), returncode, stderr


class ArtifactRepo:
    """A git repository of versioned plain-text artifacts.

    >>> repo = ArtifactRepo(tmp_path / "artifacts")
    >>> repo.init()
    >>> sha = repo.commit({"context/rules.md": "- be brief\\n"}, "Add rule", {"Trace-Id": "t1"})
    >>> repo.log(1)[0].trailers
    {'Trace-Id': ['t1']}
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).absolute()
        self._lock = threading.RLock()
        self._flock_depth = 0  # guarded by _lock: nested transactions take the file lock once
        self._known = False

    def __repr__(self) -> str:
        return f"ArtifactRepo({str(self.path)!r})"

    # -- running git ---------------------------------------------------------------------------------

    def _git(
        self,
        *args: str,
        input: bytes | None = None,
        index: Path | None = None,
        git_dir: bool = True,
        ok: Sequence[int] = (0,),
    ) -> bytes:
        """Run `git args...` in the repository, isolated from the user's set-up; stdout, or GitCommandError."""
        home = private_home()
        env = git_env(home, self.path if git_dir else None, index)
        cmd = git_argv(home, args)
        cwd = self.path if self.path.is_dir() else self.path.parent
        try:
            proc = subprocess.run(cmd, cwd=cwd, env=env, input=input, capture_output=True)
        except FileNotFoundError as e:
            raise ConfigError("git is not installed or not on PATH: install git (2.30 or newer)") from e
        if proc.returncode not in ok:
            err = decode(proc.stderr).strip()
            shown = " ".join(["git", *args])
            msg = f"`{shown}` failed in {self.path} (exit {proc.returncode}): {err or 'no message'}"
            raise GitCommandError(msg, cmd, proc.returncode, err)
        return proc.stdout

    def _require(self) -> None:
        if self._known:
            return
        if not self.exists():
            raise ConfigError(f"no artifact repository at {self.path}: run `crystallise init`")
        self._known = True
        if self._journal.exists():
            with self.transaction():
                self._finish_interrupted()

    @property
    def _journal(self) -> Path:
        return self.path / ".git" / "crystallise-journal.json"

    def _write_journal(self, head: str | None, before: Mapping[str, bytes | None]) -> None:
        entry = {"head": head, "pid": os.getpid(),
                 "files": {p: None if b is None else base64.b64encode(b).decode("ascii") for p, b in before.items()}}
        atomic_write(self._journal, json.dumps(entry, sort_keys=True).encode("utf-8"))

    def _finish_interrupted(self) -> bool:
        """Finish a commit whose process died (call with the file lock held); True if there was one."""
        try:
            entry = json.loads(self._journal.read_bytes())
        except FileNotFoundError:
            return False
        except (OSError, ValueError):
            entry = None  # torn journal: it was being written, so no file had been touched yet
        if entry is not None:
            paths = [validate_path(p) for p in entry["files"]]
            for p in paths:  # a writer killed inside atomic_write leaves its temp file beside the target
                target = self.path / p
                if target.parent.is_dir():
                    for tmp in target.parent.glob(f".{target.name}.*.tmp"):
                        tmp.unlink(missing_ok=True)
            if self.head() == entry["head"]:  # the commit never landed: put the old files back
                for p in paths:
                    old = entry["files"][p]
                    self._restore(p, None if old is None else base64.b64decode(old))
            else:  # it landed: the working tree must show exactly the committed files
                now = self._blobs(self.head(), paths)
                for p in paths:
                    self._write(p, now[p])
                self._git("reset", "-q", "HEAD", "--", *paths)
        self._journal.unlink(missing_ok=True)
        for tmp in self._journal.parent.glob(f".{self._journal.name}.*.tmp"):
            tmp.unlink(missing_ok=True)
        return True

    def _resolve(self, rev: str) -> str:
        """The full sha of commit `rev`, or NotFoundError."""
        self._require()
        if not isinstance(rev, str) or not rev or rev.startswith("-") or "\x00" in rev:
            raise ValidationError(f"bad version {rev!r}: give a commit sha or a ref such as 'HEAD'")
        out = self._git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", ok=(0, 1, 128))
        sha = decode(out).strip()
        if not sha:
            raise NotFoundError(
                f"unknown version {rev!r} in the artifact repository at {self.path}: "
                f"list versions with `git -C {self.path} log --oneline`"
            )
        return sha

    # -- set-up --------------------------------------------------------------------------------------

    def exists(self) -> bool:
        """True if `path` is the top of a git repository (a parent repository does not count)."""
        return (self.path / ".git").exists()

    def init(self) -> None:
        """Create the repository with its README commit; safe to call again.

        Sets repo-local `user.name`/`user.email` (unless already set) and `commit.gpgsign=false`.
        """
        with self._lock:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigError(f"cannot create the artifact repository at {self.path}: {e}") from e
            if not self.exists():
                templates = private_home() / "templates"
                self._git("init", "-q", "-b", "main", f"--template={templates}", str(self.path), git_dir=False)
            for key, value in (("user.name", IDENTITY[0]), ("user.email", IDENTITY[1])):
                if not self._git("config", "--local", "--get", key, ok=(0, 1)).strip():
                    self._git("config", "--local", key, value)
            self._git("config", "--local", "commit.gpgsign", "false")
            self._git("config", "--local", "core.autocrlf", "false")
            self._known = True
            if self.head() is None:
                readme = self.read("README.md") or README
                self.commit({"README.md": readme}, "Initialise the crystallise artifact repository")

    def head(self) -> str | None:
        """The sha of the current version, or None before the first commit."""
        self._require()
        sha = decode(self._git("rev-parse", "--verify", "--quiet", "HEAD^{commit}", ok=(0, 1, 128))).strip()
        return sha or None

    # -- reading -------------------------------------------------------------------------------------

    def read(self, path: str, at: str | None = None) -> str | None:
        """The text of `path` in the working tree, or at version `at` (a sha or ref); None if absent.

        >>> repo.read("tasks/add/code.py", at="HEAD~1") is None  # added by the last commit
        True
        """
        self._require()
        if at is None:
            p = self._file(path)
            try:
                return decode(p.read_bytes()) if p.is_file() else None
            except OSError as e:
                raise ArtifactError(f"cannot read {p}: {e}") from e
        return self._blobs(self._resolve(at), [validate_path(path)])[path]

    def _file(self, path: str) -> Path:
        """The working-tree file for `path`, refusing symlinks that lead out of the repository."""
        p = self.path / validate_path(path)
        if not p.resolve().is_relative_to(self.path.resolve()):
            raise ValidationError(f"bad artifact path {path!r}: it leads out of the repository through a symlink")
        return p

    def _blobs(self, sha: str | None, paths: Sequence[str]) -> dict[str, str | None]:
        """Contents of `paths` at commit `sha` (None: absent, a directory, or sha is None)."""
        out: dict[str, str | None] = {p: None for p in paths}
        if sha is None or not paths:
            return out
        data = self._git("cat-file", "--batch", input="".join(f"{sha}:{p}\n" for p in paths).encode())
        pos = 0
        for p in paths:
            nl = data.index(b"\n", pos)
            header = data[pos:nl].split()
            pos = nl + 1
            if len(header) == 3 and header[1] in (b"blob", b"tree", b"commit", b"tag"):
                size = int(header[2])
                if header[1] == b"blob":
                    out[p] = decode(data[pos : pos + size])
                pos += size + 1
        return out

    def list_files(self, prefix: str = "", at: str | None = None) -> list[str]:
        """Sorted paths of files starting with `prefix` (a string prefix: use "tasks/x/" for a folder).

        Without `at`: the files git sees in the working tree (tracked and untracked, not ignored).
        """
        self._require()
        if at is None:
            raw = self._git("ls-files", "-z", "--cached", "--others", "--exclude-standard")
            names = {n for n in decode(raw).split("\x00") if n and (self.path / n).is_file()}
        else:
            raw = self._git("ls-tree", "-r", "-z", "--name-only", self._resolve(at))
            names = {n for n in decode(raw).split("\x00") if n}
        return sorted(n for n in names if n.startswith(prefix))

    def log(self, limit: int = 50, path: str | None = None) -> list[CommitInfo]:
        """The newest `limit` versions, newest first; only those touching `path` (a file or folder) if given."""
        self._require()
        if self.head() is None:
            return []
        args = ["log", f"--max-count={int(limit)}", "--full-diff", *self._log_args(), "HEAD"]
        if path is not None:
            args += ["--", validate_path(path.rstrip("/") or path)]
        return _commits(self._git(*args))

    @staticmethod
    def _log_args() -> list[str]:
        return [f"--format={LOG_FORMAT}", "--name-only", "-z", "--no-renames", "--no-color"]

    def show(self, rev: str) -> str:
        """The version `rev` as a person reads it: header, diffstat and patch."""
        sha = self._resolve(rev)
        return decode(self._git("show", "--no-ext-diff", "--no-textconv", "--stat", "--patch", "--format=fuller", sha))

    def diff(self, a: str, b: str, path: str | None = None) -> str:
        """The patch from version `a` to version `b`, limited to `path` if given."""
        args = ["diff", "--no-ext-diff", "--no-textconv", self._resolve(a), self._resolve(b)]
        if path is not None:
            args += ["--", validate_path(path.rstrip("/") or path)]
        return decode(self._git(*args))

    def find(self, trailer: str, value: str) -> list[CommitInfo]:
        """Versions (newest first) whose trailer `trailer` has `value`, e.g. find("Change-Set", "cs_1").

        Used to reconcile the store with the repository after a crash: did this change set land?
        """
        self._require()
        if self.head() is None:
            return []
        grep = ["--fixed-strings", f"--grep={value}"] if value else []  # a cheap pre-filter
        commits = _commits(self._git("log", *self._log_args(), *grep, "HEAD"))
        return [c for c in commits if value in c.trailer(trailer)]

    def revert_files(self, rev: str) -> dict[str, str | None]:
        """For every path version `rev` touched, its content just before `rev` (None: did not exist).

        Committing the result undoes `rev`:
        >>> repo.commit(repo.revert_files(sha), f"Revert {sha[:10]}", {"Reverts": sha})
        """
        sha = self._resolve(rev)
        parents = decode(self._git("rev-list", "--parents", "-n", "1", sha)).split()[1:]
        parent = parents[0] if parents else None
        if parent is None:
            raw = self._git("diff-tree", "-r", "--root", "--no-commit-id", "--name-only", "-z", "--no-renames", sha)
        else:
            raw = self._git("diff-tree", "-r", "--name-only", "-z", "--no-renames", parent, sha)
        paths = [n for n in decode(raw).split("\x00") if n]
        return self._blobs(parent, paths)

    def changed_since(self, rev: str, paths: Sequence[str]) -> list[str]:
        """Which of `paths` (files or folders) later versions (after `rev`, up to HEAD) changed.

        A non-empty answer means reverting `rev` would clobber later work.
        """
        sha = self._resolve(rev)
        wanted = [validate_path(p.rstrip("/") or p) for p in paths]
        if not wanted:
            return []
        raw = self._git("log", "--format=", "--name-only", "-z", "--no-renames", f"{sha}..HEAD", "--", *wanted)
        changed = {n.strip("\n") for n in decode(raw).split("\x00") if n.strip("\n")}
        return [p for p in wanted if any(n == p or n.startswith(p + "/") for n in changed)]

    # -- writing -------------------------------------------------------------------------------------

    def commit(
        self,
        files: Mapping[str, str | None],
        message: str,
        trailers: Mapping[str, str | Sequence[str]] | None = None,
    ) -> str | None:
        """Write `files` (None deletes) and commit exactly those paths; the new sha, or None if nothing changed.

        Trailer values may be lists for repeated keys. Other dirty or staged files are not committed.

        >>> repo.commit({"skills/x/SKILL.md": "# x\\n", "old.md": None}, "Add skill x",
        ...             {"Trace-Id": ["t1", "t2"], "Gate-Verdict": "accept"})
        """
        paths = [validate_path(p) for p in files]
        for p, text in files.items():
            if text is not None and not isinstance(text, str):
                raise ValidationError(f"content of {p!r} must be str or None (delete), not {type(text).__name__}")
        text_message = compose_message(message, trailers or {})
        self._require()
        with self.transaction():
            self._finish_interrupted()  # a writer that died holding nothing but its journal
            head = self.head()
            before = {p: self._snapshot(p) for p in paths}
            index = self.path / ".git" / f"crystallise-index-{os.getpid()}-{threading.get_ident()}"
            self._write_journal(head, before)
            keep_journal = False
            try:
                for p in paths:
                    self._write(p, files[p])
                self._git("read-tree", *([head] if head else ["--empty"]), index=index)
                writes = [p for p in paths if files[p] is not None]
                deletes = [p for p in paths if files[p] is None]
                if writes:
                    self._git("add", "-f", "--", *writes, index=index)
                if deletes:
                    self._git("rm", "--cached", "-q", "--ignore-unmatch", "--", *deletes, index=index)
                tree = decode(self._git("write-tree", index=index)).strip()
                old_tree = decode(self._git("rev-parse", f"{head}^{{tree}}")).strip() if head else None
                if tree == old_tree or (head is None and not self._git("ls-tree", tree).strip()):
                    return None
                parent = ["-p", head] if head else []
                sha = decode(self._git("commit-tree", tree, *parent, input=text_message.encode("utf-8"))).strip()
                sha = self._land(sha, head, paths, text_message)
                self._git("reset", "-q", "HEAD", "--", *paths)  # the real index agrees with HEAD for these paths
            except BaseException:
                try:
                    landed = self.head() != head
                except Exception:  # noqa: BLE001 - cannot tell: keep the journal, the next use finishes it
                    keep_journal = True
                    raise
                if not landed:  # failed before the commit landed: nothing happened
                    for p, content in before.items():
                        self._restore(p, content)
                raise
            finally:
                index.unlink(missing_ok=True)
                if not keep_journal:
                    self._journal.unlink(missing_ok=True)
            return sha

    def _land(self, sha: str, head: str | None, paths: Sequence[str], message: str) -> str:
        """Move HEAD from `head` to the new commit `sha` (compare-and-swap); the sha HEAD now names.

        A shared registry (artifacts/registry.py) publishes the commit first, re-made on a newer
        parent if another machine pushed meanwhile."""
        subject = message.split("\n", 1)[0]
        try:
            self._git("update-ref", "-m", f"crystallise: {subject}", "HEAD", sha, head or ZERO_SHA)
        except GitCommandError as e:
            raise ArtifactError(
                f"the artifact repository at {self.path} moved while committing (another writer?): "
                f"retry the commit; git said: {e.stderr}"
            ) from e
        return sha

    def rewrite_history(self, transform: Callable[[str, str], str | None]) -> dict[str, str]:
        """Rewrite every commit with `transform(path, text)` applied to each file (return None to keep a file
        as it is); old objects are pruned. For a data deletion that must reach the audit trail too.

        Each commit object is re-written byte for byte but for its tree and parent (author, dates, message
        and trailers stay), so `git log` reads as before; every sha changes. Returns old sha -> new sha."""
        self._require()
        with self.transaction():
            head = self.head()
            if head is None:
                return {}
            commits = decode(self._git("rev-list", "--reverse", "--topo-order", head)).split()
            blobs: dict[str, str] = {}
            mapping: dict[str, str] = {}
            index = self.path / ".git" / f"crystallise-rewrite-{os.getpid()}"
            try:
                for sha in commits:
                    entries = []
                    for entry in self._git("ls-tree", "-r", "-z", sha).split(b"\0"):
                        if not entry:
                            continue
                        meta, path = entry.split(b"\t", 1)
                        mode, kind, blob = meta.decode().split()
                        name = path.decode("utf-8", "surrogateescape")
                        key = f"{blob}:{name}"
                        if kind == "blob" and key not in blobs:
                            text = decode(self._git("cat-file", "blob", blob))
                            new = transform(name, text)
                            blobs[key] = blob if new is None or new == text else decode(
                                self._git("hash-object", "-w", "--stdin", input=new.encode("utf-8"))).strip()
                        entries.append(f"{mode} {blobs.get(key, blob)}\t{name}")
                    self._git("read-tree", "--empty", index=index)
                    if entries:
                        self._git("update-index", "--add", "--index-info", index=index,
                                  input=("\n".join(entries) + "\n").encode("utf-8"))
                    tree = decode(self._git("write-tree", index=index)).strip()
                    raw = decode(self._git("cat-file", "commit", sha))
                    header, _, body = raw.partition("\n\n")
                    lines = [f"tree {tree}"]
                    for line in header.splitlines():
                        if line.startswith("parent "):
                            lines.append("parent " + mapping.get(line.split()[1], line.split()[1]))
                        elif not line.startswith("tree "):
                            lines.append(line)
                    obj = "\n".join(lines) + "\n\n" + body
                    mapping[sha] = decode(self._git("hash-object", "-t", "commit", "-w", "--stdin",
                                                    input=obj.encode("utf-8"))).strip()
            finally:
                index.unlink(missing_ok=True)
            self._git("update-ref", "-m", "crystallise: history rewritten for a data deletion", "HEAD",
                      mapping[head], head)
            self._git("reset", "-q")
            self._git("reflog", "expire", "--expire=now", "--all")
            self._git("gc", "--prune=now", "-q")
            return mapping

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the repository's writer lock (this thread and, through flock, other processes).

        Re-entrant: `commit()` takes it too, so a caller can make a read-decide-commit
        sequence atomic against other committers (the ledger does, to keep rendered files
        and the store's version order in step with git's):

            with repo.transaction():
                text = repo.read("context/agent/x/playbook.md")
                repo.commit({"context/agent/x/playbook.md": text + "- new\\n"}, "Add a bullet")
        """
        with self._lock:
            if self._flock_depth:
                self._flock_depth += 1
                try:
                    yield
                finally:
                    self._flock_depth -= 1
                return
            with self._file_lock():
                self._flock_depth = 1
                try:
                    yield
                finally:
                    self._flock_depth = 0

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover
            yield
            return
        with open(self.path / ".git" / "crystallise.lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _snapshot(self, path: str) -> bytes | None:
        p = self._file(path)
        with suppress(OSError):
            return p.read_bytes() if p.is_file() else None
        return None

    def _restore(self, path: str, content: bytes | None) -> None:
        with suppress(OSError):  # best effort: the caller is already failing with the original error
            (self.path / path).unlink(missing_ok=True) if content is None else atomic_write(self.path / path, content)

    def _write(self, path: str, text: str | None) -> None:
        p = self._file(path)
        try:
            if text is None:
                p.unlink(missing_ok=True)
                parent = p.parent
                while parent != self.path and parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()
                    parent = parent.parent
            else:
                p.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(p, text.encode("utf-8"))
        except OSError as e:
            raise ArtifactError(f"cannot write {p}: {e}; check that no file stands where a folder must be") from e


def _commits(raw: bytes) -> list[CommitInfo]:
    """`git log --format=LOG_FORMAT --name-only -z` output as CommitInfo, newest first."""
    return [CommitInfo(*entry) for entry in parse_log(raw)]
