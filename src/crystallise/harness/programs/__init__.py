"""Learned programs as data: a JSON tree, an interpreter that runs it, a rendering for people.

    tree (program.json "program")  ──load──►  Program  ──run(value)──►  Result(output, error)
                                   ──render──► code.py (readable Python; never what the host runs)

DSL programs (lookup, arith, strings, template groups, hybrid extraction) run here, in the
host, as plain functions over the tree; no text derived from a trace is ever compiled. Parts
an LLM wrote (coder groups, hybrid `compute`) are source, and run only in the OS-isolated
sandbox (`sandbox_runner`), one warm worker per distinct source.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

from crystallise.harness.programs.interp import FORMAT, Program, ProgramError, Result, load, load_body

__all__ = ["FORMAT", "Program", "ProgramError", "Result", "close_sandboxes", "isolation_problem", "load",
           "load_body", "render", "sandbox_runner"]

# One worker process per distinct LLM-written source, shared by every program in the process:
# the gate builds many short-lived runtimes over the same code.
_SANDBOXES: OrderedDict[str, Any] = OrderedDict()
_LOCK = threading.Lock()
_MAX_SANDBOXES = 16


def sandbox_runner(source: str) -> Any:
    """The warm sandbox for `source` (started on first use; least recently used ones are stopped)."""
    from crystallise.sandbox import Sandbox

    key = hashlib.sha256(source.encode()).hexdigest()
    with _LOCK:
        box = _SANDBOXES.pop(key, None)
        if box is None:
            box = Sandbox(source, timeout_s=2.0)
        _SANDBOXES[key] = box
        while len(_SANDBOXES) > _MAX_SANDBOXES:
            _, old = _SANDBOXES.popitem(last=False)
            old.close()
        return box


_PROBLEM: list[str | None] = []


def isolation_problem() -> str | None:
    """Why LLM-written code cannot run here (no bubblewrap, no libseccomp, ...), or None.

    Asked once per process (a worker is started and stopped: ~50 ms). Learners that would write
    code skip it with this reason rather than write code nothing may run."""
    from crystallise.sandbox import Sandbox, SandboxUnavailable

    with _LOCK:
        if not _PROBLEM:
            try:
                with Sandbox("def solve():\n    return 1\n", timeout_s=5.0) as box:
                    box.call()
                _PROBLEM.append(None)
            except SandboxUnavailable as e:
                _PROBLEM.append(str(e))
            except Exception as e:  # noqa: BLE001 - any other failure to start is also a reason not to
                _PROBLEM.append(f"the sandbox did not start: {type(e).__name__}: {e}")
        return _PROBLEM[0]


def close_sandboxes() -> None:
    with _LOCK:
        while _SANDBOXES:
            _SANDBOXES.popitem()[1].close()


def render(tree: Any) -> str:
    from crystallise.harness.programs.rendering import render as _render

    return _render(tree)
