"""Durable waiting room for spans whose trace is not complete yet.

Exporters send spans as they *end*, so the children of a run usually arrive before its
root span, often in other requests (always, with a SimpleSpanProcessor). crystallise traces
are immutable once written, so spans wait here until their root arrives, and the whole
trace is then written at once:

    HOME/otlp-pending/<32 hex trace id>.jsonl     one raw span per line (+ "_org": the sender's org)

An acknowledged span is on disk (appended and fsynced) before the exporter hears "ok", so a
crash loses nothing. A trace whose root never comes (the root lives in another service, or
the process died) is written anyway once its file has been quiet for `flush_after_s`.
Files that could not be written as a trace are renamed `*.jsonl.failed` and kept.

Several server processes of one home (`serve --workers N`, one machine) share the spool: each
trace id's read-modify cycle holds a byte-range lock (`locked`) on `.lock` in the directory, so
two processes never both write or both drop one trace. Processes on different machines have
different spools: route an exporter's requests to one machine (docs/deploy.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:  # POSIX record locks: per process, so callers also hold a thread lock (the Ingestor does)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["Spool"]

_LOCK_SLOTS = 1 << 16  # trace ids hash onto this many one-byte ranges of the lock file

_HEX32 = re.compile(r"^[0-9a-f]{32}$")


class Spool:
    """Pending spans by OTLP trace id (callers hold their own lock around a read-modify cycle)."""

    def __init__(self, directory: Path, flush_after_s: float = 300.0) -> None:
        self.dir = Path(directory)
        self.flush_after_s = flush_after_s

    def _file(self, trace_hex: str) -> Path:
        if not _HEX32.match(trace_hex):
            raise ValueError(f"not a trace id: {trace_hex!r}")
        return self.dir / f"{trace_hex}.jsonl"

    @contextmanager
    def locked(self, trace_hex: str) -> Iterator[None]:
        """Hold trace `trace_hex`'s lock against other processes of this home (see the module docstring)."""
        if fcntl is None:  # pragma: no cover
            yield
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        slot = int.from_bytes(hashlib.blake2b(trace_hex.encode(), digest_size=4).digest(), "big") % _LOCK_SLOTS
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, slot)
            try:
                yield
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, slot)
        finally:
            os.close(fd)

    def org(self, trace_hex: str) -> tuple[bool, str | None]:
        """(whether spans are waiting, the org of the key that sent the first of them)."""
        f = self._file(trace_hex)
        if not f.exists():
            return False, None
        with f.open() as fh:
            first = fh.readline()
        try:
            return True, json.loads(first).get("_org")
        except (ValueError, AttributeError):
            return True, None

    def add(self, trace_hex: str, spans: list[dict[str, Any]], org: str | None) -> None:
        """Append spans durably (fsync) before the request is acknowledged."""
        self.dir.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps({**s, "_org": org}, ensure_ascii=False, separators=(",", ":")) + "\n"
                        for s in spans)
        with self._file(trace_hex).open("a", encoding="utf-8") as fh:
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())

    def read(self, trace_hex: str) -> list[dict[str, Any]]:
        """The waiting spans (without `_org`); a torn last line from a crash is skipped."""
        f = self._file(trace_hex)
        if not f.exists():
            return []
        spans = []
        for line in f.read_text(encoding="utf-8").split("\n"):  # not splitlines(): U+2028 may be in a span
            try:
                data = json.loads(line)
            except ValueError:
                continue
            data.pop("_org", None)
            spans.append(data)
        return spans

    def drop(self, trace_hex: str) -> None:
        self._file(trace_hex).unlink(missing_ok=True)

    def fail(self, trace_hex: str) -> Path:
        """Keep the spans of a trace that cannot be written, out of the way, for a person to look at."""
        f = self._file(trace_hex)
        target = f.with_suffix(".jsonl.failed")
        if f.exists():
            os.replace(f, target)
        return target

    def stale(self, now: float | None = None) -> list[str]:
        """Trace ids whose spans have waited `flush_after_s` since the last one arrived."""
        if not self.dir.is_dir():
            return []
        cutoff = (time.time() if now is None else now) - self.flush_after_s
        out = []
        for f in self.dir.glob("*.jsonl"):
            try:
                if f.stat().st_mtime <= cutoff and _HEX32.match(f.stem):
                    out.append(f.stem)
            except FileNotFoundError:
                continue
        return sorted(out)
