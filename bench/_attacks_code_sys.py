"""`code-protocol` and `code-bombs`: the worker's side of the pipe, and resource bombs on both sides.

    forged_worker(start=b'...', reply=b'...')  # a fake worker program (replaces sandbox._CHILD)
    in_child(fn, memory_mb=1024, timeout_s=10) # a host-side bomb, run in a forked copy of the host

Protocol: the worker is attacker-controlled, so `Sandbox.call` may raise nothing but SandboxError,
and `TaskRuntime.answer` of a task whose program has an LLM-written part must still answer (it
falls back to the LLM). Two ways to own the pipe: a fake worker program (`_CHILD` patched), and the
real worker with the language layer off, writing forged lines to its reply fd during a call.

Bombs: sandboxed code that exhausts memory, CPU, recursion, output, processes; and the host's own
interpreter fed hostile trees, hostile artifacts and hostile inputs. A host-side bomb runs in a
fork of the bench process under an address-space limit and a wall-clock bound, so a bomb that
works is measured (peak memory, seconds) instead of taking the bench down with it.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

__all__ = ["FAKE", "forged_worker", "in_child"]

_FAKE = r'''
import json, os, sys, time
def out(b):
    while b:
        b = b[os.write(1, b):]
def line():
    buf = b""
    while not buf.endswith(b"\n"):
        c = os.read(0, 65536)
        if not c:
            os._exit(0)
        buf += c
    return buf
line()
START
while True:
    req = line()
    try:
        rid = json.loads(req).get("id")
    except Exception:
        rid = None
    REPLY
'''

_HANDSHAKE = 'out(b\'{"phase": "loading"}\\n{"ready": true}\\n\')'


def forged_worker(start: str | None = None, reply: str = "out(b'{}\\n')") -> str:
    """A worker program: after the config line, `start` (default: a correct handshake), then for
    every request `reply` (Python statements; `rid` is the request's id, `out(bytes)` writes)."""
    return _FAKE.replace("START", start if start is not None else _HANDSHAKE).replace("REPLY", reply)


def _ok(value: str) -> str:
    """A reply statement writing {"ok": value, "cpu": 0.0, "id": rid} (rid echoed when the host sent one)."""
    return ("out((json.dumps({'ok': " + value + ", 'cpu': 0.0, **({'id': rid} if rid is not None else {})})"
            " + '\\n').encode())")


# name: (note, start statements or None, reply statements)
FAKE: dict[str, tuple[str, str | None, str]] = {
    "start-not-json": ("the first line is not JSON", "out(b'hello host\\n')", ""),
    "start-forged-ok": ('{"ok": "forged", "cpu": "x"} instead of the handshake',
                        'out(b\'{"ok": "forged", "cpu": "x"}\\n\')', ""),
    "start-raised-str": ('{"phase": "loading"} then {"raised": "x"}',
                         'out(b\'{"phase": "loading"}\\n{"raised": "x"}\\n\')', ""),
    "start-raised-types": ('{"raised": {"type": [1], "message": {}, "line": "x"}} while loading',
                           'out(b\'{"phase": "loading"}\\n\'\n'
                           'b\'{"raised": {"type": [1], "message": {}, "line": "x"}}\\n\')', ""),
    "start-deep": ("the handshake nested 100,000 deep", "out(b'[' * 100000 + b']' * 100000 + b'\\n')", ""),
    "start-huge-line": ("a 100 MB line with no newline", "out(b'x' * (100 << 20))", ""),
    "start-exit": ("the worker exits before the handshake", "os._exit(3)", ""),
    "start-close-stdout": ("stdout closed, the process stays", "os.close(1); time.sleep(30)", ""),
    "start-hang": ("the worker never answers", "time.sleep(30)", ""),
    "start-ready-junk": ('{"ready": true, "isolation": {"x": [1]}} with extra fields',
                        'out(b\'{"phase": "loading"}\\n{"ready": true, "isolation": {"x": [1]}, "ok": 1}\\n\')', ""),
    "call-forged-cpu": ('{"ok": "forged", "cpu": "x"} (the reply that raised TypeError in the host)', None,
                        'out(b\'{"ok": "forged", "cpu": "x"}\\n\')'),
    "call-cpu-types": ('"cpu": [], {}, null, true in turn', None,
                       'out((json.dumps({"ok": 1, "cpu": [[], {}, None, True][(rid or 1) % 4], "id": rid})'
                       ' + "\\n").encode())'),
    "call-nan": ('{"ok": NaN, "cpu": NaN}', None, "out(b'{\"ok\": NaN, \"cpu\": NaN}\\n')"),
    "call-raised-str": ('{"raised": "x"}', None, "out(b'{\"raised\": \"x\", \"cpu\": 0}\\n')"),
    "call-raised-types": ('{"raised": {"type": {}, "message": [], "line": {}}}', None,
                          "out(b'{\"raised\": {\"type\": {}, \"message\": [], \"line\": {}}, \"cpu\": 0}\\n')"),
    "call-raised-huge": ("a 900 kB exception message", None,
                         "out((json.dumps({'raised': {'type': 'E' * 300, 'message': 'm' * 900000, 'line': 1}, "
                         "'cpu': 0, 'id': rid}) + '\\n').encode())"),
    "call-deep": ('{"ok": [[[...]]]} nested 100,000 deep', None,
                  "out(b'{\"ok\": ' + b'[' * 100000 + b']' * 100000 + b', \"cpu\": 0}\\n')"),
    "call-deep-900": ('{"ok": ...} nested 900 deep (parses; do callers recurse over it?)', None,
                      "out(b'{\"ok\": ' + b'[' * 900 + b']' * 900 + b', \"cpu\": 0, \"id\": '"
                      " + str(rid).encode() + b'}\\n')"),
    "call-surrogate": ('{"ok": "\\ud800"}: a lone surrogate, not Unicode text', None,
                       _ok("'\\ud800 lone'")),
    "call-many": ("three replies to one request (the next call would read a stale one)", None,
                  "[out((json.dumps({'ok': 'reply %d' % i, 'cpu': 0, 'id': rid}) + '\\n').encode())"
                  " for i in range(3)]"),
    "call-early": ("a reply before the request: written with the handshake",
                   _HANDSHAKE + "; out(b'{\"ok\": \"early\", \"cpu\": 0}\\n')",
                   _ok("'late'")),
    "call-huge-line": ("a 100 MB reply line", None, "out(b'{\"ok\": \"' + b'x' * (100 << 20) + b'\"}\\n')"),
    "call-exit": ("the worker exits mid-call", None, "os._exit(0)"),
    "call-close-stdout": ("stdout closed mid-call", None, "os.close(1); time.sleep(30)"),
    "call-hang": ("no reply to a call", None, "time.sleep(30)"),
    "call-wrong-shape": ("a JSON list, a number, a string as the reply", None,
                         "out([b'[1, 2]\\n', b'7\\n', b'\"ok\"\\n'][(rid or 0) % 3])"),
    "call-error-types": ('{"error": ["memory"], "size": {}} and {"error": "output", "size": "x"}', None,
                         "out([b'{\"error\": [\"memory\"], \"cpu\": 0}\\n',"
                         " b'{\"error\": \"output\", \"size\": \"x\", \"cpu\": 0}\\n'][(rid or 0) % 2])"),
    "call-binary": ("invalid UTF-8 and NUL bytes in the line", None,
                    "out(b'{\"ok\": \"\\xff\\xfe\\x00\", \"cpu\": 0}\\n')"),
}

# The real worker, language layer off: code that writes forged lines to every fd during a call.
WORKER_FORGE: dict[str, tuple[str, str]] = {
    "worker-forged-cpu": ("the code writes {\"ok\": \"forged\", \"cpu\": \"x\"} to the reply pipe itself", '''
import os
def solve(x):
    for fd in range(3, 12):
        try:
            os.write(fd, b'{"ok": "forged", "cpu": "x"}\\n')
        except OSError:
            pass
    return x
'''),
    "worker-extra-replies": ("the code writes two extra well-formed replies before its own", '''
import os, json
def solve(x):
    for fd in range(3, 12):
        try:
            os.write(fd, (json.dumps({"ok": "stale", "cpu": 0.0, "id": 1}) + "\\n") * 2)
        except OSError:
            pass
    return x
'''),
    "worker-load-reply": ("module code writes a reply while loading (before ready)", '''
import os
for fd in range(3, 12):
    try:
        os.write(fd, b'{"ready": true}\\n{"ok": "early", "cpu": 0}\\n')
    except OSError:
        pass
def solve(x):
    return x
'''),
    "worker-stdout-fill": ("the code writes 4 MB to stdout/stderr and its reply pipe without a newline", '''
import os
def solve(x):
    for fd in range(1, 12):
        try:
            os.write(fd, b"y" * (4 << 20))
        except OSError:
            pass
    return x
'''),
}


def _vm(pid: int | str, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def in_child(fn: Callable[[], Any], *, memory_mb: int = 1536, timeout_s: float = 15.0) -> dict[str, Any]:
    """Run `fn()` in a fork of this process, allowed `memory_mb` of address space more than the bench
    has now: its result (JSON), seconds, how much its peak RSS grew (`grew_mb`), and how it ended
    ("ok" | "raised: ..." | "killed by ..." | "timeout")."""
    r, w = os.pipe()
    base_size = _vm("self", "VmSize")
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(r)
        try:
            limit = (base_size + memory_mb) << 20
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            t = time.perf_counter()
            value = fn()
            out = {"end": "ok", "value": value, "seconds": round(time.perf_counter() - t, 3)}
        except BaseException as e:  # noqa: BLE001 - the finding is what it raised
            out = {"end": f"raised: {type(e).__name__}: {str(e)[:200]}", "traceback": traceback.format_exc(limit=4)}
        out["hwm_mb"] = _vm("self", "VmHWM")
        try:
            data = json.dumps(out, default=repr).encode()
        except Exception:  # noqa: BLE001
            data = b'{"end": "unserialisable result"}'
        os.write(w, data[: 1 << 16])
        os._exit(0)
    os.close(w)
    base = peak = _vm(pid, "VmRSS")
    deadline = time.monotonic() + timeout_s
    status = None
    while time.monotonic() < deadline:
        peak = max(peak, _vm(pid, "VmHWM"))
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.005)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
        return {"end": "timeout", "seconds": round(time.perf_counter() - t0, 2), "grew_mb": peak - base}
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    try:
        out = json.loads(data) if data else {}
    except ValueError:
        out = {"end": "garbled"}
    if status is not None and os.WIFSIGNALED(status):
        out["end"] = f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    out.setdefault("seconds", round(time.perf_counter() - t0, 3))
    out["grew_mb"] = max(0, max(peak, int(out.pop("hwm_mb", 0) or 0)) - base)
    return out
