"""Python verifiers: grader source checked by parsing in the host, run only in the sandbox.

A python verifier is `{"kind": "python", "source": "def check(output, expected): ..."}`. Its
source is code, and code that is not ours never runs in a process that holds the store, the
keys or the artifact repository (DESIGN.md §5). So:

    validate_source(source)        host: ast.parse only -- `check` is a module-level function taking
                                   (output, expected); imports are from the sandbox's allow-list
    run_check(source, out, exp)    sandbox: a warm worker per source (bounded cache) runs
                                   check(out, exp) on JSON values; only a JSON `true` passes

    >>> run_check("def check(output, expected):\\n    return output.lower() == expected\\n", "YES", "yes")
    (True, None)
    >>> run_check("def check(o, e):\\n    return 1\\n", "x", "x")
    (False, 'python verifier returned 1, not true or false: counted as a fail')

Anything but `True` fails the case: False, a truthy 1 or "yes", a raise, a timeout, a crash, an
oversized reply, arguments that are not JSON. The second item says why (None for a plain False),
so a gate run records the reason instead of crashing. Where the sandbox cannot run (no OS
isolation), every python-verified case fails closed, and the reason names the fix.
"""

from __future__ import annotations

import ast
import hashlib
import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Any

from crystallise.errors import SandboxError, ValidationError
from crystallise.sandbox import DEFAULT_ALLOWED, Sandbox

__all__ = ["close_sandboxes", "run_check", "validate_source"]

FILENAME = "<python verifier>"
TIMEOUT_S = 2.0  # per check() call; past it the worker is killed and the case fails
_MAX_SANDBOXES = 16  # warm workers kept, least recently used first out
# The old in-process verifier handed `json`, `math` and `re` to the source without an import; keep
# that working, then give the worker the `solve` entry point it loads programs by (never called).
_SUFFIX = "\n\n" + "".join(f"try:\n    {m}\nexcept NameError:\n    import {m}\n" for m in ("json", "math", "re")) + (
    "def solve(*args):\n    return None\n"
)
_UNAVAILABLE_FIX = (
    "python verifiers run only in the OS sandbox: install its isolation (bubblewrap, seccomp) on this host, "
    "or grade these cases with a data verifier (exact, numeric, regex, json_schema)"
)

_BOXES: OrderedDict[str, Sandbox] = OrderedDict()
_LOCK = threading.Lock()


# ---------------------------------------------------------------- host side: parse, never run


def _takes_two(fn: ast.FunctionDef) -> bool:
    a = fn.args
    positional = len(a.posonlyargs) + len(a.args)
    required = positional - len(a.defaults)
    kw_required = any(d is None for d in a.kw_defaults)
    return required <= 2 and (positional >= 2 or a.vararg is not None) and not kw_required


@lru_cache(maxsize=512)
def validate_source(source: str) -> None:
    """Raise `ValidationError` naming the fix unless `source` parses and defines `check(output, expected)`.

    Parsing only: nothing in the source runs here. Imports outside the sandbox's allow-list are
    refused now rather than failing every case later.

    >>> validate_source("def check(output, expected):\\n    return output == expected\\n")
    """
    try:
        tree = ast.parse(source, FILENAME)
    except SyntaxError as exc:
        raise ValidationError(f"python verifier: syntax error on line {exc.lineno}: {exc.msg}") from None
    except ValueError as exc:  # e.g. a NUL byte in the source
        raise ValidationError(f"python verifier: the source cannot be parsed ({exc})") from None
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom):
            names = [("." * node.level) + (node.module or "")]
        bad = [n for n in names if n.partition(".")[0] not in DEFAULT_ALLOWED]
        if bad:
            raise ValidationError(
                f"python verifier: line {node.lineno} imports {bad[0]!r}; a verifier runs in the sandbox and may "
                f"import only {', '.join(sorted(DEFAULT_ALLOWED))}"
            )
    checks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if not checks:
        raise ValidationError("python verifier: the source must define `def check(output, expected) -> bool`")
    if not _takes_two(checks[-1]):
        raise ValidationError(
            "python verifier: `check` must take exactly two arguments, (output, expected) -- both JSON values"
        )


# ---------------------------------------------------------------- sandbox side: run


def _sandbox_for(source: str) -> Sandbox:
    key = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
    with _LOCK:
        box = _BOXES.pop(key, None)
        if box is None:
            box = Sandbox(source + _SUFFIX, timeout_s=TIMEOUT_S)  # a load failure raises and is not cached
        _BOXES[key] = box
        while len(_BOXES) > _MAX_SANDBOXES:
            _, old = _BOXES.popitem(last=False)
            old.close()
        return box


def close_sandboxes() -> None:
    """Stop every cached verifier worker (tests, shutdown); the next check starts a fresh one."""
    with _LOCK:
        while _BOXES:
            _BOXES.popitem()[1].close()


def _unavailable(exc: SandboxError) -> bool:
    # Keyed on the name so it holds wherever the hardened sandbox defines SandboxUnavailable.
    return any(cls.__name__ == "SandboxUnavailable" for cls in type(exc).__mro__)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_check(source: str, output: Any, expected: Any) -> tuple[bool, str | None]:
    """`check(output, expected)` of `source` in the sandbox: (passed, why it failed or None).

    `source` must have passed `validate_source`. Never raises for what the source does."""
    try:
        result = _sandbox_for(source).call_fn("check", output, expected)
    except SandboxError as exc:
        if _unavailable(exc):
            return False, f"python verifier not run, counted as a fail ({exc}): {_UNAVAILABLE_FIX}"
        return False, f"python verifier failed: {type(exc).__name__}: {exc}"
    if result is True:
        return True, None
    if result is False:
        return False, None
    return False, f"python verifier returned {_short(result)}, not true or false: counted as a fail"
