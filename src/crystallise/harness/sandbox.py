"""Run crystallised code (`def solve(*args)`, written by a learner or an LLM) out of process, with limits.

    Sandbox(source) ── {"source", limits} ──►  worker: python -I -S -B -c _CHILD
                                                1. import the allowed modules; parse, check, compile the source
                    ◄── {"phase": "loading"} ── 2. rlimits, seccomp filter, drop os.fork & co.
                    ◄── {"ready": true} ─────── 3. exec the source with restricted builtins
    call(*args) ──── {"args": [...]} ────────►  4. solve(*args) under a soft CPU limit, JSON-encode
                    ◄── {"ok": v} | {"raised": ...} | {"error": ...}

One JSON object per line over the worker's pipes: a warm call costs a pipe round trip (~0.04 ms),
not a process start (~50 ms). Past `timeout_s` the worker is killed (SandboxTimeout); a crash or a
memory blow-up kills it too (SandboxCrashed); the next call starts a fresh one.

Layers, outermost first:
  * kernel (Linux x86-64/aarch64): a seccomp filter makes open*, exec*, fork/clone, socket*, kill*,
    ptrace, unlink/rename/mkdir/chmod, mount, bpf, io_uring ... fail with EPERM, whatever Python object
    the code reaches. `Sandbox.isolation` says whether it is on.
  * rlimits: address space, CPU seconds, no file may grow (FSIZE 0), 16 fds, no new processes
    (RLIMIT_NPROC; root is exempt, which is why the filter blocks fork/clone too).
  * language: imports only from the allow-list, each a proxy module without private names or other
    submodules (`statistics.sys` is not there); no open/compile/globals/vars/input/breakpoint;
    eval/exec take source strings only, checked like the program, run with the same builtins
    (boolean-expression tasks use them); attributes that lead out (`__subclasses__`, `__globals__`,
    `gi_frame`, `f_back`, `mro`, ...) are refused in the source and by getattr/attrgetter/wraps.
The language layer is defence in depth: CPython cannot be sandboxed from inside. Without seccomp
(other OSes) a determined program may reach `os`, and then only the rlimits hold.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
from importlib import resources
from typing import IO, Any, cast

from crystallise.errors import SandboxError, ValidationError

__all__ = ["DEFAULT_ALLOWED", "CodeRaised", "Sandbox", "SandboxCrashed", "SandboxTimeout", "run_once"]

DEFAULT_ALLOWED: frozenset[str] = frozenset({
    "math", "re", "json", "datetime", "decimal", "fractions", "statistics", "itertools", "functools",
    "collections", "string", "operator", "unicodedata", "calendar", "heapq", "bisect",
})  # fmt: skip
_CPU_BUDGET_S = 600  # CPU seconds a worker may use over its life before it is replaced


class CodeRaised(SandboxError):
    """The crystallised code raised; `exc_type`, `exc_message` and `line` (in the source) say what."""

    def __init__(self, exc_type: str, exc_message: str, line: int | None = None) -> None:
        where = f" at line {line}" if line else ""
        super().__init__(f"crystallised code raised {exc_type}{where}: {exc_message}")
        self.exc_type, self.exc_message, self.line = exc_type, exc_message, line


class SandboxTimeout(SandboxError):
    """The code ran past its time limit; the worker was killed and restarts on the next call."""


class SandboxCrashed(SandboxError):
    """The worker died (memory limit, a forbidden system call, a crash); it restarts on the next call."""


# The worker, sandbox_worker.py, read as text: it runs as `python -I -S -B -c _CHILD`, with no
# crystallise code and no site-packages, so it is never imported from here.
_CHILD = resources.files("crystallise.harness").joinpath("sandbox_worker.py").read_text(encoding="utf-8")


class _Timeout(Exception):
    pass


class _Dead(Exception):
    pass


class Sandbox:
    """A warm worker process that runs `solve(*args)` of one crystallised program under limits.

    >>> with Sandbox("def solve(a, b):\\n    return a + b\\n", timeout_s=0.5) as box:
    ...     box.call(2, 3)
    5

    Arguments and results are JSON values (tuples come back as lists, dict keys as strings).
    `None` from `solve` means "abstain": `call` returns None and the caller falls back.
    `memory_mb` is address space on top of the interpreter's own (~30 MB). `allowed_imports`
    names standard-library modules: the worker does not see site-packages.
    """

    def __init__(
        self,
        source: str,
        *,
        timeout_s: float = 1.0,
        memory_mb: int = 256,
        allowed_imports: frozenset[str] = DEFAULT_ALLOWED,
        max_output_bytes: int = 1 << 20,
        start_timeout_s: float = 10.0,
        _language_layer: bool = True,  # False only in tests that the kernel layer holds on its own
    ) -> None:
        checks = [
            (isinstance(source, str), "source must be a str"),
            (isinstance(timeout_s, (int, float)) and 0 < timeout_s < math.inf, "timeout_s must be > 0 seconds"),
            (isinstance(memory_mb, int) and memory_mb >= 16, "memory_mb must be an int >= 16"),
            (isinstance(max_output_bytes, int) and max_output_bytes > 0, "max_output_bytes must be an int > 0"),
            (all(isinstance(m, str) and m.isidentifier() for m in allowed_imports),
             "allowed_imports must hold top-level module names such as 'math'"),
        ]  # fmt: skip
        for ok, problem in checks:
            if not ok:
                raise ValidationError(f"bad sandbox settings: {problem}")
        self.source, self.timeout_s, self.memory_mb = source, float(timeout_s), memory_mb
        self.allowed_imports, self.max_output_bytes = frozenset(allowed_imports), max_output_bytes
        self.start_timeout_s, self._language_layer = start_timeout_s, bool(_language_layer)
        self.isolation: str | None = None  # "seccomp+rlimits" or "rlimits", once started
        self.restarts = -1  # workers started after the first
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = os.getpid()
        self._buf = bytearray()
        self._closed = False
        with self._lock:
            self._start()

    def call(self, *args: Any) -> Any:
        """`solve(*args)` in the worker: its JSON result, or None when it abstains.

        Raises CodeRaised (the code raised), SandboxTimeout, SandboxCrashed, or SandboxError
        (arguments or result not JSON, output too large).
        """
        return self.call_fn("solve", *args)

    def call_fn(self, name: str, *args: Any) -> Any:
        """Like `call`, for another public module-level function of the program (e.g. `unit`).

        A name that is private (`_x`) or not a function raises CodeRaised (NameError)."""
        try:
            message = {"args": list(args)} if name == "solve" else {"fn": name, "args": list(args)}
            payload = (json.dumps(message) + "\n").encode("ascii")
        except (TypeError, ValueError) as e:
            raise SandboxError(f"arguments for crystallised code must be JSON values: {e}") from None
        with self._lock:
            if self._closed:
                raise SandboxError("this sandbox is closed: create a new Sandbox")
            if self._proc is not None and self._owner != os.getpid():
                self._proc = None  # we are a forked copy: that worker belongs to the parent
            if self._proc is None:
                self._start()
            deadline = time.monotonic() + self.timeout_s
            try:
                self._send(payload, deadline)
                reply = self._recv(deadline)
            except _Timeout:
                self._kill()
                raise SandboxTimeout(
                    f"crystallised code ran past its {self.timeout_s:g} s limit; the worker was stopped "
                    "(raise timeout_s if the task needs longer)"
                ) from None
            except _Dead as e:
                raise self._died(str(e)) from None
            if reply.get("cpu", 0) + self.timeout_s + 2 >= _CPU_BUDGET_S:
                self._kill()  # replace it before its lifetime CPU limit fires mid-call
            return self._result(reply)

    def close(self) -> None:
        """Stop the worker; later calls raise SandboxError."""
        with self._lock:
            self._closed = True
            self._kill()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._closed = True
            self._kill()
        except Exception:  # noqa: S110 - half-built object or interpreter shutdown
            pass

    # -- the worker ------------------------------------------------------------------------------------

    def _start(self) -> None:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", "-c", _CHILD],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                close_fds=True, cwd="/", env={}, start_new_session=True,
            )  # fmt: skip
        except OSError as e:
            raise SandboxCrashed(f"cannot start a sandbox worker ({e}): check free memory and process limits") from e
        self._proc, self._owner, self.restarts, self.isolation = proc, os.getpid(), self.restarts + 1, None
        self._wfd, self._rfd = cast(IO[bytes], proc.stdin).fileno(), cast(IO[bytes], proc.stdout).fileno()
        self._rpoll, self._wpoll = select.poll(), select.poll()
        for fd, poll, event in ((self._rfd, self._rpoll, select.POLLIN), (self._wfd, self._wpoll, select.POLLOUT)):
            os.set_blocking(fd, False)
            poll.register(fd, event)
        config = {
            "source": self.source, "allowed": sorted(self.allowed_imports), "memory_mb": self.memory_mb,
            "timeout": self.timeout_s, "max_output": self.max_output_bytes, "cpu_budget": _CPU_BUDGET_S,
            "language_layer": self._language_layer,
        }  # fmt: skip
        try:
            deadline = time.monotonic() + self.start_timeout_s
            self._send((json.dumps(config) + "\n").encode("ascii"), deadline)
            reply = self._recv(deadline)
            if reply.get("phase") == "loading":
                reply = self._recv(time.monotonic() + max(self.timeout_s, 1.0))
        except _Timeout:
            self._kill()
            raise SandboxTimeout(
                "crystallised code did not finish loading in time: keep module-level code small"
            ) from None
        except _Dead as e:
            raise self._died(str(e)) from None
        if reply.get("ready"):
            self.isolation = reply.get("isolation")
            return
        self._kill()
        if reply.get("error") == "rejected":
            raise SandboxError(f"crystallised code rejected: {reply.get('message')}")
        self._result(reply)  # raises CodeRaised or SandboxCrashed
        raise SandboxError(f"crystallised code failed to load: {reply}")

    def _send(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._wfd, view) :]
            except BlockingIOError:
                self._wait(self._wpoll, deadline)
            except OSError as e:
                raise _Dead(f"it stopped reading ({e})") from None

    def _recv(self, deadline: float) -> dict[str, Any]:
        while (i := self._buf.find(b"\n")) < 0:
            if len(self._buf) > self.max_output_bytes + 65536:
                raise _Dead("it sent an oversized reply")
            self._wait(self._rpoll, deadline)
            try:
                chunk = os.read(self._rfd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                raise _Dead("it exited")
            self._buf += chunk
        line = bytes(self._buf[:i])
        del self._buf[: i + 1]
        try:
            reply = json.loads(line)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise _Dead("it broke the protocol")
        return reply

    @staticmethod
    def _wait(poll: select.poll, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if (remaining <= 0 or not poll.poll(max(1, math.ceil(remaining * 1000)))) and time.monotonic() >= deadline:
            raise _Timeout

    def _kill(self, grace_s: float = 0.0) -> int | None:
        """Stop the worker (after `grace_s` to exit by itself) and return its exit status."""
        proc, self._proc = self._proc, None
        self._buf.clear()
        if proc is None or self._owner != os.getpid():
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s) if grace_s else None
        with contextlib.suppress(OSError):
            proc.kill()
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                stream.close() if stream is not None else None
        with contextlib.suppress(subprocess.TimeoutExpired):
            return proc.wait(timeout=5)
        return None  # pragma: no cover - a SIGKILL that does not take

    def _died(self, why: str) -> SandboxError:
        rc = self._kill(grace_s=0.5)
        if rc is not None and rc < 0 and -rc == getattr(signal, "SIGXCPU", None):
            return SandboxTimeout(f"crystallised code hit its CPU limit ({self.timeout_s:g} s)")
        if rc is not None and rc < 0:
            sig = signal.Signals(-rc).name if -rc in signal.valid_signals() else str(-rc)
            hint = {"SIGSYS": " (a forbidden system call)", "SIGSEGV": " (a crash: too deep recursion?)"}
            how = f"killed by {sig}{hint.get(sig, '')}"
        else:
            how = f"exited with status {rc}"
        return SandboxCrashed(f"the crystallised-code worker died: {why}, {how}; it restarts on the next call")

    def _result(self, reply: dict[str, Any]) -> Any:
        if "ok" in reply:
            return reply["ok"]
        if "raised" in reply:
            r = reply["raised"]
            raise CodeRaised(str(r.get("type")), str(r.get("message")), r.get("line"))
        error = reply.get("error")
        if error == "memory":
            self._kill()
            raise SandboxCrashed(f"crystallised code ran out of memory (limit {self.memory_mb} MB); worker replaced")
        if error == "output":
            raise SandboxError(
                f"crystallised code returned {reply.get('size')} bytes of JSON, over the "
                f"{self.max_output_bytes}-byte limit (raise max_output_bytes if that is expected)"
            )
        if error == "bad_return":
            raise SandboxError(f"crystallised code must return JSON values or None: {reply.get('message')}")
        raise SandboxError(f"unexpected reply from the crystallised-code worker: {reply!r}")


def run_once(source: str, args: list[Any] | tuple[Any, ...] = (), **limits: Any) -> Any:
    """Start a sandbox, call `solve(*args)` once, stop it.

    >>> run_once("def solve(x):\\n    return x * 2\\n", [21])
    42
    """
    with Sandbox(source, **limits) as box:
        return box.call(*args)
