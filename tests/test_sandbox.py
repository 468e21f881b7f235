"""The sandbox for crystallised code: the happy path, abstention, and the escape suite.

Every escape must fail with a SandboxError, and the sandbox must answer the next call
(in the same worker or a fresh one). The OS layers on their own (language layer off) are in
test_sandbox_escape.py; forged worker replies in test_sandbox_protocol.py; a missing bubblewrap
or libseccomp in test_sandbox_os.py.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from crystallise.errors import SandboxError, ValidationError
from crystallise.sandbox import (
    DEFAULT_ALLOWED,
    CodeRaised,
    Sandbox,
    SandboxCrashed,
    SandboxTimeout,
    run_once,
)

HAPPY = '''
import re
import datetime
from decimal import Decimal, ROUND_HALF_UP
from collections import Counter
from functools import lru_cache, wraps


def traced(f):
    @wraps(f)
    def inner(*args):
        return f(*args)
    return inner


@traced
@lru_cache(maxsize=None)
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

_NUM = re.compile(r"-?\\d+(?:\\.\\d+)?")

class Box:
    def __init__(self, value):
        self._value = value

    def __repr__(self):
        return f"{type(self).__name__}({self._value})"

def solve(kind, value=None):
    if kind == "arith":
        return str((Decimal(value) * 3).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
    if kind == "regex":
        return [float(n) for n in _NUM.findall(value)]
    if kind == "date":
        d = datetime.datetime.strptime(value, "%Y-%m-%d")
        return [(d + datetime.timedelta(days=30)).date().isoformat(), d.strftime("%A")]
    if kind == "bool":
        return eval(value, {}, {"a": True, "b": False})
    if kind == "mixed":
        return {"count": Counter(value).most_common(1)[0], "box": repr(Box(value)), "none": None}
    if kind == "fib":
        return [fib(value), fib.__name__]
    if kind == "echo":
        return value
    if kind == "abstain":
        return None
    if kind == "raise":
        raise ValueError("cannot handle " + str(value))
    if kind == "set":
        return {1, 2}
    if kind == "print":
        print("noise" * 100000)
        return "quiet"
    return "alive"
'''

ATTACKS = '''
import functools, operator, statistics, string

def solve(kind):
    if kind == "ping":
        return "alive"
    if kind == "open":
        return open("/etc/passwd").read()
    if kind == "getattr-gadget":
        cls = getattr((), "__cl" + "ass__")
        return str(getattr(cls, "__m" + "ro__")[1])
    if kind == "getattr-globals":
        return str(getattr(solve, "__glo" + "bals__"))
    if kind == "attrgetter":
        return str(operator.attrgetter("__class__.__mro__")(()))
    if kind == "methodcaller":
        return str(operator.methodcaller("__subclasses__")(object))
    if kind == "update-wrapper":
        def w():
            pass
        functools.update_wrapper(w, statistics.NormalDist.pdf, assigned=(), updated=("__globals__",))
        return "escaped"
    if kind == "module-internals":
        return str(statistics.sys)
    if kind == "formatter":
        return str(string.Formatter().get_field("0.__class__", [()], {}))
    if kind == "eval-dunder":
        return str(eval("().__class__.__mro__[1].__subclasses__()"))
    if kind == "eval-builtins":
        return str(eval("__builtins__"))
    if kind == "exec-import":
        exec("import os")
        return "escaped"
    if kind == "exec-globals":
        g = {"__builtins__": None}
        exec("x = open", g)
        return "escaped"
    if kind == "generator-frame":
        gen = (i for i in [1])
        return str(getattr(gen, "gi_" + "frame"))
    if kind == "recursion":
        def f(n):
            return f(n + 1)
        return f(0)
    if kind == "allocate":
        return len(bytearray(2 * 1024**3))
    if kind == "grow":  # a little at a time, without bound
        chunks = []
        while True:
            chunks.append(bytearray(8 * 1024**2))
    if kind == "read-by-module":  # json imports codecs, and codecs.open reads files
        import json
        return getattr(json, "codecs").open("/etc/passwd").read()
    if kind == "read-by-linecache":  # the traceback machinery reads source files
        import functools
        return getattr(functools, "linecache", None) or getattr(statistics, "linecache").getlines("/etc/passwd")
    if kind == "loop":
        while True:
            pass
    if kind == "huge-output":
        return "x" * 10_000_000
    if kind == "attrgetter-class":  # issue 13: type() of a wrapped attrgetter was the unwrapped class
        cls = type(operator.attrgetter("real"))
        return str(cls("__class__.__mro__")(()))
    if kind == "attrgetter-dunder-class":
        return str(operator.attrgetter("real").__class__("__globals__")(solve))
    if kind == "methodcaller-class":
        return str(type(operator.methodcaller("real"))("__subclasses__")(object))
    if kind == "attrgetter-dotted":
        return str(operator.attrgetter("real.__reduce_ex__")(1))
    if kind == "format-getattr":  # "{0.attr}" is attribute access by string
        return getattr("{0.__globals__}", "format")(solve)
    if kind == "format-methodcaller":
        return operator.methodcaller("format", solve)("{0.__globals__}")
    if kind == "traceback-getattr":
        try:
            1 / 0
        except ZeroDivisionError as e:
            return str(getattr(e, "__trace" + "back__"))
    if kind == "coroutine-frame":
        async def co():
            pass
        c = co()
        try:
            return str(getattr(c, "cr_" + "frame"))
        finally:
            c.close()
    if kind == "code-object":
        return str(getattr(solve, "__co" + "de__"))
    if kind == "hasattr-globals":
        return [hasattr(solve, "__globals__"), hasattr(solve, "__name__")]
    if kind == "vars":
        return str(vars(solve))
    if kind == "json-patch":  # the worker encodes its replies with its own encoder
        import json
        json.JSONEncoder.encode = lambda self, o: '1, "cpu": "x"}\\n{"ok": 2'
        json.dumps = lambda *a, **k: "forged"
        return {"real": [1, 2]}
    if kind == "nan":
        return float("nan")
    if kind == "surrogate":
        return ["fine \u00e9", "lone \\ud800"]
    if kind == "odd-exception":
        raise type("", (Exception,), {})("lone \\udfff " + "m" * 5000)
    if kind == "deep":
        v = []
        for _ in range(5000):
            v = [v]
        return v
'''


@pytest.fixture(scope="module")
def happy() -> Iterator[Sandbox]:
    with Sandbox(HAPPY, timeout_s=2.0) as box:
        yield box


@pytest.fixture(scope="module")
def attacks() -> Iterator[Sandbox]:
    with Sandbox(ATTACKS, timeout_s=0.5, memory_mb=128) as box:
        yield box


# -- the happy path ---------------------------------------------------------------------------------


def test_arith_regex_datetime(happy: Sandbox) -> None:
    assert happy.call("arith", "1.005") == "3.02"
    assert happy.call("regex", "7 apples at -1.5 each") == [7.0, -1.5]
    assert happy.call("date", "2024-02-10") == ["2024-03-11", "Saturday"]
    assert happy.call("bool", "a and not b") is True
    assert happy.call("mixed", "aab") == {"count": ["a", 2], "box": "Box(aab)", "none": None}
    assert happy.call("echo", {"k": [1, 2.5, "s", None, True]}) == {"k": [1, 2.5, "s", None, True]}
    assert happy.call("fib", 80) == [23416728348467685, "fib"]  # decorators, functools.wraps, lru_cache
    assert happy.call("print") == "quiet"  # print output goes nowhere, not into the protocol


def test_none_means_abstain(happy: Sandbox) -> None:
    assert happy.call("abstain") is None


def test_exception_becomes_code_raised(happy: Sandbox) -> None:
    line = HAPPY.splitlines().index('        raise ValueError("cannot handle " + str(value))') + 1
    with pytest.raises(CodeRaised, match=f"ValueError at line {line}: cannot handle 3") as info:
        happy.call("raise", 3)
    assert (info.value.exc_type, info.value.exc_message, info.value.line) == ("ValueError", "cannot handle 3", line)
    assert happy.call("ping") == "alive"


def test_non_json_results_and_arguments(happy: Sandbox) -> None:
    with pytest.raises(SandboxError, match="JSON values or None") as info:
        happy.call("set")
    assert not isinstance(info.value, CodeRaised)
    with pytest.raises(SandboxError, match="arguments .* must be JSON"):
        happy.call("echo", object())
    assert happy.call("ping") == "alive"


def test_warm_calls_are_fast(happy: Sandbox) -> None:
    happy.call("ping")
    start = time.perf_counter()
    for _ in range(200):
        happy.call("echo", 1)
    assert (time.perf_counter() - start) / 200 < 0.01  # measured ~0.04 ms; generous for loaded CI


def test_thread_safe(happy: Sandbox) -> None:
    results: dict[int, list[object]] = {}

    def work(i: int) -> None:
        results[i] = [happy.call("echo", [i, j]) for j in range(30)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: [[i, j] for j in range(30)] for i in range(4)}


def test_a_forked_copy_gets_its_own_worker(happy: Sandbox) -> None:
    pid = os.fork()
    if pid == 0:  # the copy must neither use nor kill the parent's worker
        code = 2
        try:
            code = 0 if happy.call("echo", "child") == "child" else 1
            happy.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert happy.call("echo", "parent") == "parent"


def test_bad_programs_fail_at_construction() -> None:
    with pytest.raises(SandboxError, match="SyntaxError"):
        Sandbox("def solve(:\n    pass\n")
    with pytest.raises(SandboxError, match="must define a function `solve"):
        Sandbox("x = 1\n")
    with pytest.raises(CodeRaised, match="ZeroDivisionError"):
        Sandbox("x = 1 / 0\ndef solve():\n    return x\n")
    with pytest.raises(SandboxTimeout, match="loading"):
        Sandbox("while True:\n    pass\ndef solve():\n    return 1\n", timeout_s=0.2)
    with pytest.raises(ValidationError):
        Sandbox("def solve(): pass", timeout_s=0)


def test_close_context_manager_and_run_once() -> None:
    assert run_once("def solve(x):\n    return x * 2\n", [21]) == 42
    box = Sandbox("def solve():\n    return 1\n")
    with box:
        assert box.call() == 1
    with pytest.raises(SandboxError, match="closed"):
        box.call()
    box.close()  # twice is fine


# -- the escape suite: the language layer -------------------------------------------------------------


@pytest.mark.parametrize("module", ["os", "sys", "socket", "ctypes", "subprocess", "io", "pathlib", "builtins",
                                    "importlib", "multiprocessing", "threading", "shutil", "pickle", "urllib",
                                    "signal", "resource", "time", "select", "asyncio", "http", "gc", "_ctypes",
                                    "posix", "marshal", "types", "inspect", "mmap", "_io", "_string"])
def test_non_allowed_imports_are_rejected(module: str) -> None:
    with pytest.raises(SandboxError, match=f"import of '{module}' is not allowed.*allowed: bisect"):
        Sandbox(f"import {module}\ndef solve():\n    return 1\n")
    with pytest.raises(SandboxError, match="not allowed"):
        Sandbox(f"def solve():\n    from {module} import path\n    return 1\n")


def test_allow_list_is_configurable() -> None:
    assert "math" in DEFAULT_ALLOWED and "os" not in DEFAULT_ALLOWED
    with pytest.raises(SandboxError, match="'re' is not allowed"):
        Sandbox("import re\ndef solve():\n    return 1\n", allowed_imports=frozenset({"math"}))
    assert run_once("import math\ndef solve():\n    return math.sqrt(9)\n", allowed_imports=frozenset({"math"})) == 3


@pytest.mark.parametrize(
    "source",
    [
        "def solve():\n    return ().__class__.__mro__[1].__subclasses__()\n",
        "def solve():\n    return __builtins__['open']('/etc/passwd').read()\n",
        "def solve():\n    return __import__('os').system('id')\n",
        "def solve():\n    return solve.__globals__\n",
        "def solve():\n    g = (i for i in [1])\n    return g.gi_frame.f_back.f_globals\n",
        "def solve():\n    try:\n        1 / 0\n    except Exception as e:\n        return e.__traceback__.tb_frame\n",
        "def solve():\n    match solve:\n        case object(__globals__=g):\n            return g\n",
        "def solve():\n    return type.mro(type)\n",
        "from .x import y\ndef solve():\n    return y\n",
        "def solve():\n    return '{0.__globals__}'.format(solve)\n",
        "def solve():\n    return '{0:{1.__globals__}}'.format(1, solve)\n",
        "def solve():\n    return str.format('{0.__globals__}', solve)\n",
        "def solve():\n    f = '{0}'\n    return f.format(solve)\n",
        "def solve():\n    return '{x.__globals__}'.format_map({'x': solve})\n",
        "def solve():\n    return [c for c in type.__subclasses__(object)]\n",
    ],
    ids=["subclasses", "builtins", "dunder-import", "globals", "frames", "traceback", "match", "mro", "relative",
         "format-literal", "format-nested", "format-unbound", "format-variable", "format-map", "subclasses-unbound"],
)
def test_introspection_gadgets_are_rejected_in_the_source(source: str) -> None:
    with pytest.raises(SandboxError, match="not allowed"):
        Sandbox(source)


@pytest.mark.parametrize(
    "kind",
    ["open", "getattr-gadget", "getattr-globals", "attrgetter", "methodcaller", "update-wrapper",
     "module-internals", "formatter", "eval-dunder", "eval-builtins", "exec-import", "exec-globals",
     "generator-frame", "attrgetter-class", "attrgetter-dunder-class", "methodcaller-class", "attrgetter-dotted",
     "format-getattr", "format-methodcaller", "traceback-getattr", "coroutine-frame", "code-object",
     "vars"],
)
def test_runtime_gadgets_raise_and_the_worker_keeps_working(attacks: Sandbox, kind: str) -> None:
    with pytest.raises(CodeRaised):
        attacks.call(kind)
    assert attacks.call("ping") == "alive"


def test_deep_recursion(attacks: Sandbox) -> None:
    with pytest.raises(CodeRaised, match="RecursionError"):
        attacks.call("recursion")
    assert attacks.call("ping") == "alive"


def test_memory_blow_up_kills_and_restarts(attacks: Sandbox) -> None:
    restarts = attacks.restarts
    with pytest.raises(SandboxCrashed, match="ran out of memory"):
        attacks.call("allocate")
    assert attacks.call("ping") == "alive" and attacks.restarts == restarts + 1


def test_gradual_unbounded_allocation_is_stopped(attacks: Sandbox) -> None:
    with pytest.raises((SandboxCrashed, SandboxTimeout)):
        attacks.call("grow")
    assert attacks.call("ping") == "alive"


@pytest.mark.parametrize("kind", ["read-by-module", "read-by-linecache"])
def test_allowed_modules_lead_nowhere(attacks: Sandbox, kind: str) -> None:
    with pytest.raises(CodeRaised):
        attacks.call(kind)
    assert attacks.call("ping") == "alive"


def test_unit_and_other_public_functions_can_be_called_but_not_private_ones() -> None:
    src = "def unit(x):\n    return 'u'\n\ndef _secret(x):\n    return 's'\n\ndef solve(x):\n    return x\n"
    with Sandbox(src) as box:
        assert box.call_fn("unit", 1) == "u" and box.call(2) == 2
        for name in ("_secret", "__import__", "missing", "__builtins__"):
            with pytest.raises(CodeRaised, match="NameError"):
                box.call_fn(name, 1)
        assert box.call(3) == 3


def test_infinite_loop_times_out_and_restarts(attacks: Sandbox) -> None:
    start = time.monotonic()
    with pytest.raises(SandboxTimeout, match="0.5 s limit"):
        attacks.call("loop")
    assert time.monotonic() - start < 3
    assert attacks.call("ping") == "alive"


def test_huge_output_is_refused(attacks: Sandbox) -> None:
    with pytest.raises(SandboxError, match="over the 1048576-byte limit"):
        attacks.call("huge-output")
    assert attacks.call("ping") == "alive"


def test_format_on_a_literal_with_plain_fields_still_works() -> None:
    src = (
        "def solve(x):\n"
        "    return ['{:.2f}'.format(x), '{0[a]} {y.real:>{w}}'.format({'a': 1}, y=2, w=3), f'{x!r}']\n"
    )
    assert run_once(src, [3.14159]) == ["3.14", "1   2", "3.14159"]


def test_a_program_cannot_change_what_the_worker_sends(attacks: Sandbox) -> None:
    assert attacks.call("json-patch") == {"real": [1, 2]}
    assert attacks.call("ping") == "alive"


@pytest.mark.parametrize("kind, problem", [("nan", "Out of range float"), ("deep", "JSON values or None"),
                                           ("surrogate", "lone surrogate")])
def test_results_that_are_not_plain_json_are_refused(attacks: Sandbox, kind: str, problem: str) -> None:
    with pytest.raises(SandboxError, match=problem) as info:
        attacks.call(kind)
    assert not isinstance(info.value, CodeRaised)
    assert attacks.call("ping") == "alive"


def test_isolation_names_every_layer(happy: Sandbox) -> None:
    assert happy.isolation == "bwrap+seccomp+rlimits+language"


def test_an_exception_with_odd_text_still_comes_back_as_code_raised(attacks: Sandbox) -> None:
    with pytest.raises(CodeRaised) as info:
        attacks.call("odd-exception")
    assert info.value.exc_type == "Exception" and info.value.exc_message.startswith("lone ? mmm")
    assert len(info.value.exc_message) == 2000
    assert attacks.call("ping") == "alive"


@pytest.mark.parametrize("source", [
    # a dict subclass as exec's globals could keep the restricted __builtins__ from being set
    "class G(dict):\n    def __setitem__(self, k, v):\n        pass\n\ndef solve():\n"
    "    g = G()\n    exec(\"x = __import__('os')\", g)\n    return 'escaped'\n",
    # a class pattern reads the attributes __match_args__ names, chosen at run time
    "import operator\nclass M(type):\n    def __instancecheck__(cls, o):\n        return True\n"
    "C = M('C', (), {'__match_args__': ('__globals__',)})\n\ndef solve():\n    match operator.attrgetter:\n"
    "        case C(g):\n            return 'escaped'\n    return None\n",
    "from re import _compiler\n\ndef solve():\n    return 'escaped'\n",
    "import re._parser\n\ndef solve():\n    return 'escaped'\n",
])
def test_language_layer_routes_found_by_the_attack_suite_are_closed(source: str) -> None:
    try:
        with Sandbox(source) as box:
            got = box.call()
    except SandboxError:
        return
    assert got != "escaped"


def test_plain_exec_and_self_matching_class_patterns_still_work() -> None:
    src = ("def solve(x):\n    g = {}\n    exec('y = 2', g)\n    match x:\n        case int(v):\n"
           "            return v + g['y']\n    return None\n")
    with Sandbox(src) as box:
        assert box.call(3) == 5
