"""Pure helpers for `ArtifactRepo` over the git CLI: paths, messages, log parsing, files, environment.

Nothing here runs git; `repo.py` does, with what these build:
  * validate_path      a repository-relative path, or ValidationError
  * compose_message    message + `Key: value` trailer lines, as `git commit-tree` takes them
  * parse_log          `git log --format=LOG_FORMAT --name-only -z` output -> LogEntry tuples
  * atomic_write       temp file + fsync + rename, so a reader never sees half a file
  * private_home, git_env, git_argv
                       a private HOME (no user or system config, template or hook) and the
                       environment and `-c` options every git call runs with
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from crystallise.errors import ValidationError

__all__ = [
    "IDENTITY", "LOG_FORMAT", "ZERO_SHA", "LogEntry", "atomic_write", "compose_message", "decode", "git_argv",
    "git_env", "parse_log", "private_home", "validate_path",
]  # fmt: skip

IDENTITY = ("crystallise", "crystallise@localhost")
LOG_FORMAT = "%x1e%H%x00%h%x00%s%x00%b%x00%(trailers:only,unfold,separator=%x1f)%x00%ct%x00"
ZERO_SHA = "0" * 40
_TRAILER_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")

# One commit as parse_log reads it: sha, short sha, subject, body, trailers, timestamp, files.
LogEntry = tuple[str, str, str, str, dict[str, list[str]], float, list[str]]


def decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


# -- a private HOME so that no user or system config, template or hook can interfere ------------

_HOME_LOCK = threading.Lock()
_HOME: Path | None = None


def private_home() -> Path:
    global _HOME
    with _HOME_LOCK:
        if _HOME is None or not (_HOME / ".gitconfig").is_file():
            home = Path(tempfile.mkdtemp(prefix="crystallise-git-home-"))
            (home / "hooks").mkdir()
            (home / "templates").mkdir()
            name, email = IDENTITY
            (home / ".gitconfig").write_text(
                f"[user]\n\tname = {name}\n\temail = {email}\n[commit]\n\tgpgsign = false\n"
                "[init]\n\tdefaultBranch = main\n",
                encoding="utf-8",
            )
            atexit.register(shutil.rmtree, home, True)
            _HOME = home
        return _HOME


def git_env(home: Path, work_tree: Path | None = None, index: Path | None = None) -> dict[str, str]:
    """The environment for one git call: ours minus GIT_*, plus isolation; GIT_DIR/WORK_TREE if `work_tree`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=str(home / ".gitconfig"), HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"), LC_ALL="C", LANG="C", GIT_TERMINAL_PROMPT="0",
        GIT_LITERAL_PATHSPECS="1", GIT_NO_REPLACE_OBJECTS="1", GIT_PAGER="cat", PAGER="cat",
    )  # fmt: skip
    if work_tree is not None:
        env.update(GIT_DIR=str(work_tree / ".git"), GIT_WORK_TREE=str(work_tree))
    if index is not None:
        env["GIT_INDEX_FILE"] = str(index)
    return env


def git_argv(home: Path, args: Sequence[str]) -> list[str]:
    """`git` with no hooks, no fsmonitor, unquoted paths and no colour, then `args`."""
    cmd = ["git", "-c", f"core.hooksPath={home / 'hooks'}", "-c", "core.fsmonitor=false"]
    cmd += ["-c", "core.quotepath=false", "-c", "color.ui=false", *args]
    return cmd


def validate_path(path: str) -> str:
    """Check that `path` names a file inside the repository and return it.

    >>> validate_path("tasks/add/code.py")
    'tasks/add/code.py'
    >>> validate_path("../etc/passwd")
    Traceback (most recent call last):
    ...
    crystallise.errors.ValidationError: bad artifact path '../etc/passwd': ...
    """
    problem = None
    if not isinstance(path, str) or not path:
        problem = "it must be a non-empty string"
    elif any(c in path for c in "\x00\n\r\\"):
        problem = "it must not contain NUL, newlines or backslashes"
    elif path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        problem = "it must be relative to the repository root"
    else:
        for part in path.split("/"):
            if part in ("", ".", ".."):
                problem = "it must not contain empty, '.' or '..' components"
            elif part.casefold() == ".git":
                problem = "it must not point inside .git"
    if problem:
        raise ValidationError(f"bad artifact path {path!r}: {problem}; use a path like 'tasks/<name>/code.py'")
    return path


def atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def compose_message(message: str, trailers: Mapping[str, str | Sequence[str]]) -> str:
    """`message` + a blank line + one `Key: value` line per trailer value.

    Trailers are one line by definition: whitespace runs (newlines, tabs) in a value fold to one
    space, and values that are empty after that are dropped.
    """
    if not isinstance(message, str) or not message.strip():
        raise ValidationError("a commit needs a non-empty message: say what changed and why")
    if any(c in message for c in "\x00\x1e\x1f"):
        raise ValidationError("the commit message must not contain NUL or ASCII separator characters")
    lines = []
    for key, values in trailers.items():
        if not isinstance(key, str) or not _TRAILER_KEY.match(key):
            raise ValidationError(f"bad trailer key {key!r}: use letters, digits and '-', like 'Trace-Id'")
        for value in [values] if isinstance(values, str) else list(values):
            if not isinstance(value, str):
                raise ValidationError(f"trailer {key!r} values must be strings, not {type(value).__name__}")
            value = " ".join(value.split())
            if re.search(r"[\x00-\x1f\x7f]", value):
                raise ValidationError(f"bad value {value!r} for trailer {key!r}: remove control characters")
            if value:
                lines.append(f"{key}: {value}")
    text = "\n".join(line.rstrip() for line in message.strip().splitlines())
    return text + ("\n\n" + "\n".join(lines) if lines else "") + "\n"


def parse_log(raw: bytes) -> list[LogEntry]:
    """Parse `git log --format=LOG_FORMAT --name-only -z` output, newest first as git gives it."""
    commits: list[LogEntry] = []
    for record in decode(raw).split("\x1e"):
        if not record.strip("\x00\n"):
            continue
        sha, short, subject, body, trailer_text, ts, rest = record.split("\x00", 6)
        trailers: dict[str, list[str]] = {}
        for item in trailer_text.split("\x1f"):
            key, sep, value = item.partition(":")
            if sep and key.strip():
                trailers.setdefault(key.strip(), []).append(value.strip())
        body = body.rstrip("\n")
        if trailers:  # git parses trailers from the last paragraph: drop it from the body
            body = body.rpartition("\n\n")[0] if "\n\n" in body else ""
        files = [f.strip("\n") for f in rest.split("\x00") if f.strip("\n")]
        commits.append((sha, short, subject, body.strip("\n"), trailers, float(ts), files))
    return commits
