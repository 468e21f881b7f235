"""Run generated code (`def solve(*args)`, written by an LLM, or a python grader) out of process, isolated.

    Sandbox(source) ── {"source", limits, bpf} ──►  bwrap ─► worker: python -I -S -B -c _CHILD
                                                    1. import the allowed modules, move the pipes
                                                    2. rlimits, install the seccomp allowlist (bpf)
                    ◄── {"phase": "loading"} ────── 3. parse and check the source (filter on)
                    ◄── {"ready": true} ─────────── 4. run its module code with restricted builtins
    call(*args) ──── {"id": n, "args": [...]} ───►  5. solve(*args) under a soft CPU limit, JSON-encode
                    ◄── {"ok": v | "raised": {...} | "error": ..., "cpu": s, "id": n}

One JSON object per line over the worker's pipes: a warm call costs a pipe round trip plus the
validation of the reply (docs/reliability.md has the numbers), not a process start. Past `timeout_s`
the worker is killed (SandboxTimeout); a crash, a memory blow-up or a reply that breaks the protocol
kills it too (SandboxCrashed); the next call starts a fresh one.

Layers, outermost first (the OS layers are what must hold; the language layer is defence in depth):
  * bubblewrap (`_bwrap_argv`): new user, mount, PID, IPC, network, UTS and cgroup namespaces, all
    capabilities dropped, a new session, an empty environment, and a read-only filesystem holding
    only the interpreter, its standard library (site-packages masked) and the system's shared
    libraries, plus /dev/null and a private /tmp. No /proc, no /etc, no /home, /root or /work,
    no network but an unconfigured loopback.
  * seccomp (`crystallise.sandbox.seccomp`): an allowlist compiled here with libseccomp and
    installed by the worker after it loaded its modules; everything else fails with EPERM.
  * rlimits: address space, CPU seconds, no file may grow (FSIZE 0), 16 fds, no new processes.
  * language: imports only from the allow-list, each a proxy module without private names or other
    submodules; no open/compile/globals/vars/input/breakpoint; eval/exec take source strings only,
    checked like the program; attributes that lead out (`__subclasses__`, `__globals__`, `gi_frame`,
    `mro`, `str.format` fields ...) are refused in the source and by getattr/attrgetter/wraps.
Where bubblewrap or libseccomp is missing or cannot start, `Sandbox(...)` raises SandboxUnavailable
naming the fix: never a silently weaker sandbox.

The host trusts nothing from the worker: each reply must be one ASCII JSON line under the size limit,
of exactly the shape the protocol allows (`_check_reply`), answering the request just sent; anything
else kills the worker and raises SandboxCrashed. `call`/`call_fn` raise only SandboxError subclasses.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import signal
import subprocess
import threading
import time
from importlib import resources
from typing import IO, Any, cast

from crystallise.errors import SandboxError, ValidationError
from crystallise.sandbox import isolation as sandbox_os
from crystallise.sandbox.isolation import SandboxUnavailable
from crystallise.sandbox.reply import ProtocolError, check_ready, check_reply, check_start

__all__ = [
    "DEFAULT_ALLOWED",
    "CodeRaised",
    "Sandbox",
    "SandboxCrashed",
    "SandboxTimeout",
    "SandboxUnavailable",
    "run_once",
]

DEFAULT_ALLOWED: frozenset[str] = frozenset({
    "math", "re", "json", "datetime", "decimal", "fractions", "statistics", "itertools", "functools",
    "collections", "string", "operator", "unicodedata", "calendar", "heapq", "bisect",
})  # fmt: skip
_CPU_BUDGET_S = 600  # CPU seconds a worker may use over its life before it is replaced
_FDS = (3, 4)  # the worker's request and reply pipes (the seccomp filter allows read/write on these only)


class CodeRaised(SandboxError):
    """The crystallised code raised; `exc_type`, `exc_message` and `line` (in the source) say what."""

    def __init__(self, exc_type: str, exc_message: str, line: int | None = None) -> None:
        where = f" at line {line}" if line else ""
        super().__init__(f"crystallised code raised {exc_type}{where}: {exc_message}")
        self.exc_type, self.exc_message, self.line = exc_type, exc_message, line


class SandboxTimeout(SandboxError):
    """The code ran past its time limit; the worker was killed and restarts on the next call."""


class SandboxCrashed(SandboxError):
    """The worker died or broke the protocol (memory limit, a crash, a forged reply); it restarts on the next call."""


# The worker, worker.py, read as text: it runs as `python -I -S -B -c _CHILD`, with no
# crystallise code and no site-packages, so it is never imported from here.
_CHILD = resources.files("crystallise.sandbox").joinpath("worker.py").read_text(encoding="utf-8")


class _Timeout(Exception):
    pass


class _Dead(Exception):
    pass


class Sandbox:
    """A warm, isolated worker process that runs `solve(*args)` of one generated program under limits.

    >>> with Sandbox("def solve(a, b):\\n    return a + b\\n", timeout_s=0.5) as box:
    ...     box.call(2, 3)
    5

    Arguments and results are JSON values (tuples come back as lists, dict keys as strings; NaN and
    the infinities are not JSON and are refused). `None` from `solve` means "abstain": `call` returns
    None and the caller falls back. `memory_mb` is address space on top of the interpreter's own
    (~20 MB). `allowed_imports` names standard-library modules: the worker does not see site-packages.
    `isolation` says which layers hold, e.g. "bwrap+seccomp+rlimits+language".

    The underscored arguments exist for the tests that show each layer holding on its own; they
    switch layers off and are never read from the environment.
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
        _language_layer: bool = True,
        _bwrap: bool = True,
        _seccomp: bool = True,
    ) -> None:
        checks = [
            (isinstance(source, str), "source must be a str"),
            (isinstance(timeout_s, (int, float)) and 0 < timeout_s < math.inf, "timeout_s must be > 0 seconds"),
            (isinstance(memory_mb, int) and memory_mb >= 16, "memory_mb must be an int >= 16"),
            (isinstance(max_output_bytes, int) and max_output_bytes > 0, "max_output_bytes must be an int > 0"),
            (isinstance(start_timeout_s, (int, float)) and 0 < start_timeout_s < math.inf,
             "start_timeout_s must be > 0 seconds"),
            (all(isinstance(m, str) and m.isidentifier() for m in allowed_imports),
             "allowed_imports must hold top-level module names such as 'math'"),
        ]  # fmt: skip
        for ok, problem in checks:
            if not ok:
                raise ValidationError(f"bad sandbox settings: {problem}")
        self.source, self.timeout_s, self.memory_mb = source, float(timeout_s), memory_mb
        self.allowed_imports, self.max_output_bytes = frozenset(allowed_imports), max_output_bytes
        self.start_timeout_s, self._language_layer = float(start_timeout_s), bool(_language_layer)
        self._use_bwrap, self._use_seccomp = bool(_bwrap), bool(_seccomp)
        self.isolation: str | None = None  # e.g. "bwrap+seccomp+rlimits+language", once started
        self.restarts = -1  # workers started after the first
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = os.getpid()
        self._buf = bytearray()
        self._seq = 0  # the id of the last request: a reply must carry it
        self._closed = False
        # Everything the OS layers need is prepared before the first start, and fails loudly.
        self._bpf = sandbox_os.seccomp_filter(_FDS) if self._use_seccomp else None
        self._argv = sandbox_os.worker_argv(_CHILD, bwrap=self._use_bwrap)
        with self._lock:
            self._start()

    def call(self, *args: Any) -> Any:
        """`solve(*args)` in the worker: its JSON result, or None when it abstains.

        Raises CodeRaised (the code raised), SandboxTimeout, SandboxCrashed (the worker died or broke
        the protocol), or SandboxError (arguments or result not JSON, output too large); never anything
        that is not a SandboxError, whatever the worker sends.
        """
        return self.call_fn("solve", *args)

    def call_fn(self, name: str, *args: Any) -> Any:
        """Like `call`, for another public module-level function of the program (e.g. `unit`).

        A name that is private (`_x`) or not a function raises CodeRaised (NameError)."""
        try:
            message = {"args": list(args)} if name == "solve" else {"fn": name, "args": list(args)}
            body = json.dumps(message, allow_nan=False)[1:]
        except (TypeError, ValueError, RecursionError) as e:
            raise SandboxError(f"arguments for crystallised code must be JSON values: {e}") from None
        with self._lock:
            self._seq += 1
            payload = f'{{"id":{self._seq},{body}\n'.encode("ascii")
            if self._closed:
                raise SandboxError("this sandbox is closed: create a new Sandbox")
            if self._proc is not None and self._owner != os.getpid():
                self._proc = None  # we are a forked copy: that worker belongs to the parent
            if self._proc is None:
                self._start()
            deadline = time.monotonic() + self.timeout_s
            try:
                self._expect_silence()
                self._send(payload, deadline)
                reply = check_reply(self._recv(deadline), self.max_output_bytes, self._seq)
                if self._buf:
                    raise ProtocolError("it sent more than one reply")
            except _Timeout:
                self._kill()
                raise SandboxTimeout(
                    f"crystallised code ran past its {self.timeout_s:g} s limit; the worker was stopped "
                    "(raise timeout_s if the task needs longer)"
                ) from None
            except _Dead as e:
                raise self._died(str(e)) from None
            except ProtocolError as e:
                self._kill()
                raise SandboxCrashed(
                    f"the crystallised-code worker broke the protocol ({e}); it was stopped and "
                    "restarts on the next call"
                ) from None
            if reply["cpu"] + self.timeout_s + 2 >= _CPU_BUDGET_S:
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
                self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                close_fds=True, cwd="/", env={}, start_new_session=True,
            )  # fmt: skip
        except OSError as e:
            raise SandboxCrashed(f"cannot start a sandbox worker ({e}): check free memory and process limits") from e
        self._proc, self._owner, self.restarts, self.isolation = proc, os.getpid(), self.restarts + 1, None
        self._buf.clear()
        self._wfd, self._rfd = cast(IO[bytes], proc.stdin).fileno(), cast(IO[bytes], proc.stdout).fileno()
        self._efd = cast(IO[bytes], proc.stderr).fileno()
        self._rpoll, self._wpoll = select.poll(), select.poll()
        for fd, poll, event in ((self._rfd, self._rpoll, select.POLLIN), (self._wfd, self._wpoll, select.POLLOUT)):
            os.set_blocking(fd, False)
            poll.register(fd, event)
        os.set_blocking(self._efd, False)
        config = {
            "source": self.source, "allowed": sorted(self.allowed_imports), "memory_mb": self.memory_mb,
            "timeout": self.timeout_s, "max_output": self.max_output_bytes, "cpu_budget": _CPU_BUDGET_S,
            "language_layer": self._language_layer, "fds": list(_FDS),
            "bpf": self._bpf.hex() if self._bpf is not None else None,
        }  # fmt: skip
        try:
            deadline = time.monotonic() + self.start_timeout_s
            self._send((json.dumps(config) + "\n").encode("ascii"), deadline)
            first = check_start(self._recv(deadline))
            if first.get("phase") == "loading":
                reply = check_ready(self._recv(time.monotonic() + max(self.timeout_s, 1.0)))
                if self._buf:
                    raise ProtocolError("it sent more than one reply")
            else:
                reply = first
        except _Timeout:
            self._kill()
            raise SandboxTimeout(
                "crystallised code did not finish loading in time: keep module-level code small"
            ) from None
        except _Dead as e:
            raise self._start_failed(str(e)) from None
        except ProtocolError as e:
            self._kill()
            raise SandboxCrashed(f"the crystallised-code worker broke the protocol while loading ({e})") from None
        if reply.get("ready"):
            layers = ["bwrap"] * self._use_bwrap + ["seccomp"] * self._use_seccomp
            self.isolation = "+".join([*layers, "rlimits"] + ["language"] * self._language_layer)
            return
        self._kill()
        if reply.get("error") == "rejected":
            raise SandboxError(f"crystallised code rejected: {reply['message']}")
        if reply.get("error") == "unavailable":
            raise SandboxUnavailable(
                f"the sandbox worker could not install its seccomp filter ({reply['message']}): the kernel "
                "needs seccomp filters (CONFIG_SECCOMP_FILTER); a container may need its seccomp profile relaxed"
            )
        self._result(reply)  # raises CodeRaised or SandboxCrashed
        raise SandboxError("crystallised code failed to load")  # pragma: no cover - check_ready forbids it

    def _start_failed(self, why: str) -> SandboxError:
        """The worker died before it answered: bwrap could not set up the sandbox, or the worker crashed."""
        err = b""
        with contextlib.suppress(OSError):
            err = os.read(self._efd, 4096)
        died = self._died(why)
        text = err.decode("utf-8", "replace").strip()
        if self._use_bwrap and text.startswith("bwrap:"):
            return SandboxUnavailable(sandbox_os.bwrap_failed(text))
        return died

    def _expect_silence(self) -> None:
        """Between calls the worker says nothing: data now is a reply nobody asked for, EOF a death."""
        if self._buf or self._rpoll.poll(0):
            try:
                chunk = os.read(self._rfd, 1)
            except BlockingIOError:
                return
            except OSError as e:
                raise _Dead(f"its pipe failed ({e})") from None
            if not chunk:
                raise _Dead("it exited between calls")
            raise ProtocolError("it sent a reply before the request")

    def _send(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._wfd, view) :]
            except BlockingIOError:
                self._wait(self._wpoll, deadline)
            except OSError as e:
                raise _Dead(f"it stopped reading ({e})") from None

    def _recv(self, deadline: float) -> Any:
        """The next line from the worker, parsed (not yet checked); ProtocolError if it is not JSON."""
        limit = self.max_output_bytes + 65536
        while (i := self._buf.find(b"\n")) < 0:
            if len(self._buf) > limit:
                raise ProtocolError(f"it sent a line over {limit} bytes")
            self._wait(self._rpoll, deadline)
            try:
                chunk = os.read(self._rfd, 1 << 16)
            except BlockingIOError:
                continue
            except OSError as e:
                raise _Dead(f"its pipe failed ({e})") from None
            if not chunk:
                raise _Dead("it exited")
            self._buf += chunk
        if i > limit:
            raise ProtocolError(f"it sent a line over {limit} bytes")
        line = bytes(self._buf[:i])
        del self._buf[: i + 1]
        try:
            return json.loads(line.decode("ascii"), parse_constant=_no_constant)
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
            raise ProtocolError(f"it sent a line that is not ASCII JSON ({type(e).__name__})") from None

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
        if proc.returncode is None and self._use_bwrap:
            # Kill the sandbox's init (bwrap's child) first: the kernel then kills everything in its PID
            # namespace, and bwrap reaps it and exits. Killing bwrap first would orphan that init to the
            # host's pid 1, which in a container may never reap it (a zombie per restart).
            for pid in _children(proc.pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)
        with contextlib.suppress(OSError):
            proc.kill()  # bwrap's --die-with-parent takes the sandboxed processes with it
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                stream.close() if stream is not None else None
        with contextlib.suppress(subprocess.TimeoutExpired):
            return proc.wait(timeout=5)
        return None  # pragma: no cover - a SIGKILL that does not take

    def _died(self, why: str) -> SandboxError:
        rc = self._kill(grace_s=0.5)
        sig = None
        if rc is not None and rc < 0:
            sig = -rc
        elif rc is not None and self._use_bwrap and 128 < rc < 128 + 65:
            sig = rc - 128  # bwrap exits with 128 + the signal that killed the worker
        if sig is not None and sig == getattr(signal, "SIGXCPU", None):
            return SandboxTimeout(f"crystallised code hit its CPU limit ({self.timeout_s:g} s)")
        if sig is not None:
            name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
            hint = {"SIGSYS": " (a forbidden system call)", "SIGSEGV": " (a crash: too deep recursion?)"}
            how = f"killed by {name}{hint.get(name, '')}"
        else:
            how = f"exited with status {rc}"
        return SandboxCrashed(f"the crystallised-code worker died: {why}, {how}; it restarts on the next call")

    def _result(self, reply: dict[str, Any]) -> Any:
        """The checked reply as a value or an exception (the shapes are `check_reply`'s)."""
        if "ok" in reply:
            return reply["ok"]
        if "raised" in reply:
            r = reply["raised"]
            raise CodeRaised(r["type"], r["message"], r["line"])
        error = reply["error"]
        if error == "memory":
            self._kill()
            raise SandboxCrashed(f"crystallised code ran out of memory (limit {self.memory_mb} MB); worker replaced")
        if error == "output":
            raise SandboxError(
                f"crystallised code returned {reply['size']} bytes of JSON, over the "
                f"{self.max_output_bytes}-byte limit (raise max_output_bytes if that is expected)"
            )
        raise SandboxError(f"crystallised code must return JSON values or None: {reply['message']}")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as fh:
            return [int(c) for c in fh.read().split()]
    except (OSError, ValueError):
        return []


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def run_once(source: str, args: list[Any] | tuple[Any, ...] = (), **limits: Any) -> Any:
    """Start a sandbox, call `solve(*args)` once, stop it.

    >>> run_once("def solve(x):\\n    return x * 2\\n", [21])
    42
    """
    with Sandbox(source, **limits) as box:
        return box.call(*args)
