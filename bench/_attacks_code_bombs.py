"""`code-bombs` and `code-graders` executors (catalogue rows in NOTES; see _attacks_code.py).

Sandbox bombs pass when the call ends in a SandboxError within its limit plus a margin, the host's
memory does not grow, and a new sandbox still works. Host bombs (trees for `load`, hostile artifacts
for `TaskRuntime`, hostile inputs for learned programs) run in a fork of the bench under an
address-space limit (`in_child`): they pass when they end in the documented refusal (ProgramError,
a fallback) within a bound, without the host's memory growing past a bound.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any
from collections.abc import Callable

from . import _attacks_code_probe as probe
from . import _attacks_code_render as rend
from ._attacks_code_sys import in_child

__all__ = ["NOTES", "grader", "run"]

HOST_MB = 256  # a host-side bomb that grows the host by more than this got through
HOST_S = 3.0  # ... or that keeps one host call busy longer than this
P99_MS = 150.0  # serving a learned program a hostile 100 kB input: p99 per call (linear scans are ~1 us/char)
SCALING = 8.0  # ... and the slowest of them, 4x as long, may take at most this many times longer (no backtracking)

_BREACH = probe.ROUTES["attrgetter-type"][1]
SANDBOX: dict[str, tuple[str, str, bool]] = {  # name: (note, source, language layer)
    "mem-string": ('"a" * 10**10', 'def solve(x):\n    return len("a" * 10**10)\n', True),
    "mem-list": ("a list that grows by 1 MB strings forever",
                 'def solve(x):\n    out = []\n    while True:\n'
                 '        out.append("x" * 10**6 + str(len(out)))\n', True),
    "cpu-loop": ("while True: pass", "def solve(x):\n    while True:\n        pass\n", True),
    "recursion": ("unbounded recursion", "def solve(x):\n    return solve(x + 1)\n", True),
    "recursion-limit": ("sys.setrecursionlimit(10**6) through the attrgetter route, then recursion",
                        _BREACH + "\ndef f(n):\n    return f(n + 1)\n\ndef solve(x):\n"
                        "    g = type(operator.attrgetter('x'))('__globals__')(operator.attrgetter)\n"
                        "    g['sys'].setrecursionlimit(10**6)\n    return f(0)\n", True),
    "output-string": ("a 50 MB return value", 'def solve(x):\n    return "x" * (50 << 20)\n', True),
    "output-items": ("ten million list items", "def solve(x):\n    return list(range(10**7))\n", True),
    "huge-int": ("10**10**8 at run time", "def solve(x):\n    n = 10\n    return len(bin(n ** n ** 8))\n", True),
    "int-str": ("str(10**100000)", "def solve(x):\n    return str(10 ** 100000)\n", True),
    "load-loop": ("an endless loop in module code", "while True:\n    pass\n\ndef solve(x):\n    return x\n", True),
    "regex": ("(a+)+$ on 40 a's and a b",
              'import re\ndef solve(x):\n    return bool(re.match("(a+)+$", "a" * 40 + "b"))\n', True),
    "deep-return": ("a return value nested 100,000 deep",
                    "def solve(x):\n    v = []\n    for _ in range(100000):\n        v = [v]\n    return v\n", True),
    "huge-exception": ("raise ValueError('x' * 10**7)", 'def solve(x):\n    raise ValueError("x" * 10**7)\n', True),
    "fork-bomb": ("language layer off: posix.fork() in a loop",
                  "import posix\ndef solve(x):\n    n = 0\n    while n < 10000:\n        posix.fork()\n        n += 1\n"
                  "    return n\n", False),
    "threads": ("language layer off: 1000 threads",
                "import _thread, time\ndef solve(x):\n    for _ in range(1000):\n"
                "        _thread.start_new_thread(time.sleep, (5,))\n    return 1\n", False),
    "fd-flood": ("language layer off: dup() until the fd limit, then pipes",
                 "import posix\ndef solve(x):\n    fds = []\n    try:\n        while True:\n"
                 "            fds.append(posix.dup(0))\n    except OSError:\n        pass\n"
                 "    return len(fds)\n", False),
}

NOTES: dict[str, tuple[str, str]] = {name: ("bomb-sandbox", f"sandbox: {note}")
                                     for name, (note, _, _) in SANDBOX.items()}
NOTES.update({
    "tree-1e6-table": ("bomb-host", "load(): a lookup table of 10^6 entries (must be refused: ProgramError)"),
    "tree-1e6-rules": ("bomb-host", "load(): 10^6 arith expression nodes"),
    "tree-1e6-skip": ("bomb-host", "load(): an arith skip table of 10^6 templates"),
    "tree-1e6-units": ("bomb-host", "load(): 250,000 hybrid units (more than the 200,000 nodes a tree may have)"),
    "tree-depth-1e4": ("bomb-host", "load(): a strings expression nested 10^4 deep"),
    "tree-json-depth-1e4": ("bomb-host", "load(): a lookup answer nested 10^4 deep"),
    "dsl-stretch": ("bomb-host", "a strings program stretch(stretch(stretch(repeat(1, 1000), 100), 100), 100) "
                                 "served by the host's interpreter: 10^9 list items"),
    "dsl-join-sep": ("bomb-host", "join(x, 'a', <200 kB separator>) on a 4 kB input: 400 MB"),
    "dsl-replace-chain": ("bomb-host", "eight nested replace(x, 'a', 'aaaaaaaaaa') on 1,000 a's"),
    "dsl-regex-const": ("bomb-host", "keep(x, '(a+)+$') on 28 a's and a b: a catastrophic regex in a tree"),
    "arith-power": ("bomb-host", "d0 ** d1 on $1e300 amounts"),
    "program-json-deep": ("bomb-artifact", "program.json nested 100,000 deep in the artifact repo"),
    "program-json-shapes": ("bomb-artifact", "program.json as [], a string, {\"program\": []}, {\"program\": null}"),
    "program-json-kinds": ("bomb-artifact", "unknown part kinds and fn kinds ('python', 'eval', 'source' in arith)"),
    "program-json-helpers": ("bomb-artifact", "strings helpers named __import__, eval, exec, getattr, open"),
    "program-json-ranges": ("bomb-artifact", "out-of-range args: arg 99, places 10^9, var d99999, fmt '{0.__class__}'"),
    "program-json-source": ("bomb-artifact", "an LLM-written group committed straight into program.json calls "
                                            "os.system: it may only ever run in the sandbox"),
    "hybrid-json-shapes": ("bomb-artifact", "hybrid.json as [], {\"units\": 5}, units without prefix, nested deep"),
    "serve-redos-arith": ("bomb-input", f"a learned arith program served 100 kB hostile inputs (p99 < {P99_MS:g} ms)"),
    "serve-redos-strings": ("bomb-input",
                            f"a learned strings program served 100 kB hostile inputs (p99 < {P99_MS:g} ms)"),
    "serve-deep-input": ("bomb-input", "inputs nested 900 deep and 100,000 deep, served to a G4 task"),
})


# -- sandbox bombs ------------------------------------------------------------------------------------------


def _rss_mb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


def _sandbox_bomb(lab: Any, atk: Any, verdict: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    from crystallise.errors import SandboxError
    from crystallise.sandbox import Sandbox

    _, source, language = SANDBOX[atk.payload]
    timeout = 1.0
    rss0, t0 = _rss_mb(), time.perf_counter()
    crash, got = None, None
    mark = lab.traps.mark()
    try:
        box = Sandbox(source, timeout_s=timeout, start_timeout_s=5.0, _language_layer=language)
        try:
            got = repr(box.call(1))[:80]
        finally:
            box.close()
    except SandboxError as e:
        got = type(e).__name__ + ": " + str(e)[:100]
    except Exception as e:  # noqa: BLE001
        crash = f"{type(e).__name__}: {str(e)[:200]}"
    took, grew = time.perf_counter() - t0, _rss_mb() - rss0
    escapes: dict[str, list[str]] = lab.traps.judge(mark, got, None)
    if took > timeout + 4:
        escapes.setdefault("resources", []).append(f"the host waited {took:.1f} s for a {timeout:g} s limit")
    if grew > 100:
        escapes.setdefault("resources", []).append(f"the host's memory grew by {grew} MB")
    try:
        with Sandbox("def solve(x):\n    return x + 1\n", timeout_s=2.0) as box:
            if box.call(1) != 2:
                crash = crash or "a fresh sandbox answers wrongly after the bomb"
    except Exception as e:  # noqa: BLE001
        crash = crash or f"a fresh sandbox fails after the bomb: {type(e).__name__}: {e}"
    return verdict([], [], escapes, crash, why=f"{got} after {took:.1f} s; host grew {grew} MB")


# -- host bombs: trees, artifacts, inputs --------------------------------------------------------------------


def _part(body: dict[str, Any], hybrid: bool = False) -> dict[str, Any]:
    from crystallise.harness.programs import FORMAT

    return {"format": FORMAT, "parts": [{"strategy": "x", "units": None, "hybrid": hybrid, "body": body}]}


def _strings(expr: dict[str, Any], arg_types: list[str] | None = None, out_type: str = "str") -> dict[str, Any]:
    fn = {"kind": "strings", "arg_types": arg_types or ["str"], "out_type": out_type, "expr": expr}
    return _part({"kind": "grouped", "mode": "none", "groups": [{
        "unit": "", "prefix": "", "suffix": "", "arg_keys": None,
        "codec": {"kind": "any", "true": "True", "false": "False"}, "fn": fn}]})


def _c(v: Any) -> dict[str, Any]:
    return {"const": v}


def _call(name: str, *args: dict[str, Any]) -> dict[str, Any]:
    return {"call": name, "args": list(args)}


def _arith(rules: list[dict[str, Any]], skip: dict[str, Any] | None = None) -> dict[str, Any]:
    return _part({"kind": "arith", "mode": "sentence", "skip": skip or {"k.": {"$": 0, "%": 0, "n": 0}},
                  "rules": rules})


def _host_tree(name: str) -> tuple[dict[str, Any], Any]:
    """(tree, input to serve once loaded)."""
    if name == "tree-1e6-table":
        return _part({"kind": "lookup", "table": {str(i): i for i in range(10**6)}}), "1"
    if name == "tree-1e6-rules":
        return _arith([{"key": f"k{i}.", "signature": [1, 0, 0], "expr": {"var": "d0"}, "places": 2,
                        "rounding": "half_up"} for i in range(10**6 // 2)]), "k1. $1"
    if name == "tree-1e6-skip":
        return _arith([], {f"k{i}.": {"$": 0, "%": 0, "n": 0} for i in range(10**6)}), "k1. $1"
    if name == "tree-1e6-units":
        src = {"kind": "source", "source": "def compute(a):\n    return a\n"}
        return _part({"kind": "hybrid", "mode": "sentence", "units": {
            f"u{i}.": {"prefix": "", "suffix": "", "fields": ["a"], "places": 2, "rounding": "", "compute": src}
            for i in range(250_000)}}, hybrid=True), "u1. 5"
    if name == "tree-depth-1e4":
        expr: dict[str, Any] = {"arg": 0}
        for _ in range(10**4):
            expr = _call("lower", expr)
        return _strings(expr), "x"
    if name == "tree-json-depth-1e4":
        v: Any = 1
        for _ in range(10**4):
            v = [v]
        return _part({"kind": "lookup", "table": {'"x"': v}}), "x"
    if name == "dsl-stretch":
        e = _call("repeat", _c(1), _c(1000))
        for _ in range(3):
            e = _call("stretch", e, _c(100))
        return _strings(_call("length", e), out_type="int"), "x"
    if name == "dsl-join-sep":
        return _strings(_call("join", {"arg": 0}, _c("a"), _c("s" * 200_000))), "ab" * 2_000
    if name == "dsl-replace-chain":
        e = {"arg": 0}
        for _ in range(8):
            e = _call("replace", e, _c("a"), _c("a" * 10))
        return _strings(_call("length", e), out_type="int"), "a" * 1000
    if name == "dsl-regex-const":
        return _strings(_call("keep", {"arg": 0}, _c("(a+)+$"))), "a" * 28 + "b"
    if name == "arith-power":
        return _arith([{"key": "k.", "signature": [2, 0, 0], "places": -1, "rounding": "",
                        "expr": {"op": "**", "args": [{"var": "d0"}, {"var": "d1"}]}}]), \
            "k. $" + "9" * 300 + " and $" + "9" * 300
    raise KeyError(name)


def _host_bomb(lab: Any, atk: Any, verdict: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    from crystallise.harness.programs import ProgramError, load

    name = atk.payload

    def go() -> dict[str, Any]:
        from ._attacks_code_sys import _vm

        tree, value = _host_tree(name)
        before = _vm("self", "VmRSS")  # what reading program.json costs is not load()'s doing
        t = time.perf_counter()
        try:
            program = load(tree, lambda src: None)
        except ProgramError as e:
            return {"loaded": False, "refused": str(e)[:160], "load_s": round(time.perf_counter() - t, 3),
                    "load_mb": _vm("self", "VmHWM") - before}
        load_s = time.perf_counter() - t
        load_mb = _vm("self", "VmHWM") - before
        t = time.perf_counter()
        out = program.run(value)
        return {"loaded": True, "load_s": round(load_s, 3), "run_s": round(time.perf_counter() - t, 3),
                "load_mb": load_mb, "run_mb": _vm("self", "VmHWM") - before - load_mb,
                "output": repr(out.output)[:60], "error": (out.error or "")[:160]}

    r = in_child(go, memory_mb=1536, timeout_s=12 if name.startswith("tree-") else 2 * HOST_S)
    v = r.get("value") or {}
    escapes: dict[str, list[str]] = {}
    crash = None
    if r["end"] == "timeout" or float(v.get("run_s", 0)) > HOST_S or float(v.get("load_s", 0)) > 2 * HOST_S:
        escapes["resources"] = [f"the host was busy {v.get('load_s')} s loading, {v.get('run_s')} s running "
                                f"({r['end']})"]
    grew = (max(int(v.get("load_mb") or 0), int(v.get("run_mb") or 0)) if name.startswith("tree-")
            else r.get("grew_mb", 0))
    if grew > HOST_MB:
        escapes.setdefault("resources", []).append(f"the host's memory grew by {grew} MB")
    if r["end"] not in ("ok", "timeout"):
        crash = f"the host {r['end']}"
    elif name.startswith("tree-") and v.get("loaded"):
        escapes.setdefault("resources", []).append("load() accepted the tree (ProgramError expected: it is over "
                                                   "the node budget)")
    return verdict([], [], escapes, crash, why=f"{r['end']}: {json.dumps(v)[:200]}; grew {r.get('grew_mb')} MB",
                   measured=r)


# -- hostile artifacts: TaskRuntime over a view of them -------------------------------------------------------


def _runtime(files: dict[str, str]) -> Any:
    from crystallise.backends.scripted import ScriptedBackend
    from crystallise.harness.runtime import TaskRuntime
    from crystallise.harness.spec import TaskSpec, View

    files = {"tasks/t/code.py": "# rendering\n", **files}
    return TaskRuntime(TaskSpec(name="t", grade="G4"), View(lambda p: files.get(p)),
                       ScriptedBackend(lambda r: json.dumps({"a": 2}) if r.schema else "llm answer"))


def _artifacts(name: str, marker: str, ctx: dict[str, Any]) -> list[dict[str, str]]:
    from crystallise.harness.programs import FORMAT

    def prog(tree: Any) -> dict[str, str]:
        return {"tasks/t/program.json": json.dumps({"program": tree})}

    if name == "program-json-deep":
        return [{"tasks/t/program.json": "[" * 100_000 + "]" * 100_000},
                {"tasks/t/program.json": '{"program": ' + "[" * 100_000 + "]" * 100_000 + "}"}]
    if name == "program-json-shapes":
        return [{"tasks/t/program.json": t} for t in ("[]", '"x"', '{"program": []}', '{"program": null}', "nan", "{")]
    if name == "program-json-kinds":
        bad = [{"kind": "python", "source": f"exec('{marker}')"}, {"kind": "eval", "expr": marker},
               {"kind": "arith", "mode": "sentence", "skip": {}, "rules": [], "source": marker}]
        return [prog(_part(b)) for b in bad] + [prog({"format": FORMAT, "parts": [{"strategy": "x", "units": None,
                                                   "hybrid": False, "body": b, "code": marker}]}) for b in bad[:1]]
    if name == "program-json-helpers":
        return [prog(_strings(_call(h, _c(f"exec('{marker}')")))) for h in
                ("__import__", "eval", "exec", "getattr", "open", "compile", "isstr", "spans", "re", "functools")]
    if name == "program-json-ranges":
        return [prog(_strings({"arg": 99})), prog(_strings(_call("fmt", {"arg": 0}, _c("{0.__class__}")))),
                prog(_arith([{"key": "k.", "signature": [1, 0, 0], "expr": {"var": "d99999"}, "places": 10**9,
                              "rounding": "half_up"}])),
                prog(_arith([{"key": "k.", "signature": [-1, 0, 0], "expr": {"var": "x0"}, "places": 2,
                              "rounding": "__import__"}])),
                prog(_strings(_c(f"exec('{marker}')"), out_type="nope"))]
    if name == "program-json-source":
        src = (f"import os\ndef solve(x):\n    os.system('touch {ctx['make'][0]}; echo {marker}')\n"
               f"    return __import__('os').system('touch {ctx['make'][1]}')\n")
        return [prog(_part({"kind": "grouped", "mode": "none", "groups": [{
            "unit": "", "prefix": "", "suffix": "", "arg_keys": None,
            "codec": {"kind": "any", "true": "T", "false": "F"}, "fn": {"kind": "source", "source": src}}]}))]
    if name == "hybrid-json-shapes":
        src = {"kind": "source", "source": "def compute(a):\n    return a\n"}
        tree = _part({"kind": "hybrid", "mode": "none", "units": {"": {
            "prefix": "", "suffix": "", "fields": ["a"], "places": 2, "rounding": "half_up", "compute": src}}},
            hybrid=True)
        return [{**prog(tree), "tasks/t/hybrid.json": t} for t in (
            "[]", '{"units": 5}', '{"units": {"": {"fields": ["a"]}}}', '{"units": {"": 7}}',
            '{"units": {"": {"prefix": [], "suffix": 3, "fields": "a", "instructions": null}}}',
            "[" * 100_000 + "]" * 100_000)]
    raise KeyError(name)


def _artifact_bomb(lab: Any, atk: Any, verdict: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    marker = lab.marker()
    variants = _artifacts(atk.payload, marker, lab.traps.ctx(marker))
    crashes, seen = [], []
    mark = lab.traps.mark()
    with lab.audit.watch(marker) as events:
        for files in variants:
            try:
                rt = _runtime(files)
                ans = rt.answer("a")
                seen.append(f"{ans.served_by}: {(ans.fallback_reason or '')[:60]}")
            except Exception as e:  # noqa: BLE001 - the host must fall back, not raise
                crashes.append(f"{type(e).__name__}: {str(e)[:120]}")
    from crystallise.harness.programs import close_sandboxes

    close_sandboxes()
    escapes = lab.traps.judge(mark, seen, None)
    return verdict([e for e in events if e["event"] != "parse"], [], escapes,
                   f"{len(crashes)} of {len(variants)} raised: {crashes[0]}" if crashes else None,
                   why=f"served by {seen[:4]}")


# -- hostile inputs served to learned programs ----------------------------------------------------------------


def _hostile_inputs(prefix: str, n: int = 100_000) -> list[Any]:
    bodies = ["1" * n, "1," * (n // 2), "$" * n, "$1" * (n // 2), "." * n, "1." * (n // 2), " " * n,
              "a" * n, "A " * (n // 2), "%" * n, "1 %" * (n // 3), "-" * n, "-1" * (n // 2), "\n" * n,
              "€1,000,000" * (n // 10), "1" * n + "x", "Ab1_" * (n // 4), "(A) x\n" * (n // 6),
              "million " * (n // 8), "\u2028" * n]
    return [prefix + b for b in bodies] + bodies


def _serve_bomb(lab: Any, atk: Any, verdict: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    name = atk.payload
    crash = None
    if name == "serve-deep-input":
        sc = rend.lookup("deep")
        inputs: list[Any] = []
        for depth in (900, 100_000):
            v: Any = "x"
            for _ in range(depth):
                v = [v]
            inputs.append(v)
    else:
        sc = rend.arith("Plain") if name == "serve-redos-arith" else rend.strings("Plain")
        prefix = sc.cases[0][0].split(" Question:")[0] + " Question: " if "arith" in name else "Plain Name: "
        inputs = _hostile_inputs(prefix)
    from crystallise.backends.scripted import ScriptedBackend
    from crystallise.errors import CrystalliseError
    from crystallise.harness.runtime import TaskRuntime
    from crystallise.harness.spec import View

    out = rend.learn_and_serve(lab.home, lab.fresh(), sc)
    if not out.get("code"):
        return verdict([], [], {}, None, why=f"nothing learned to serve ({out.get('note')})")
    program_json, code = out["program_json"], out["code"]
    files = {"tasks/t/code.py": code, "tasks/t/program.json": program_json}
    from crystallise.harness.spec import TaskSpec

    spec = TaskSpec(name="t", grade="G4", metric=sc.metric,
                    input_schema={"type": "object"} if isinstance(sc.cases[0][0], dict) else {"type": "string"})

    def go() -> dict[str, Any]:
        rt = TaskRuntime(spec, View(lambda p: files.get(p)), ScriptedBackend(lambda r: "0"))
        times, raised, documented = [], [], 0
        for x in inputs * (3 if len(inputs) > 2 else 1):  # the first len(inputs) times: one per input
            t = time.perf_counter()
            try:
                rt.answer(x)
            except CrystalliseError:
                documented += 1  # a documented refusal (ValidationError for an input it cannot encode)
            except Exception as e:  # noqa: BLE001
                raised.append(f"{type(e).__name__}: {str(e)[:100]}")
            times.append((time.perf_counter() - t) * 1000)
        best = [min(times[i::len(inputs)]) for i in range(len(inputs))]  # each input's fastest of its runs
        slowest = max(range(len(inputs)), key=lambda i: best[i])
        ratio = None
        if isinstance(inputs[slowest], str) and name != "serve-deep-input":
            long = _hostile_inputs(prefix, 400_000)[slowest]
            runs = []
            for _ in range(3):
                t = time.perf_counter()
                rt.answer(long)
                runs.append((time.perf_counter() - t) * 1000)
            ratio = round(min(runs) / max(best[slowest], 1e-3), 2)
        times.sort()
        p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
        return {"calls": len(times), "p50_ms": round(statistics.median(times), 2), "p99_ms": round(p99, 2),
                "max_ms": round(times[-1], 2), "raised": raised[:3], "refused": documented, "x4_slowdown": ratio}

    r = in_child(go, memory_mb=1536, timeout_s=60)
    v = r.get("value") or {}
    escapes: dict[str, list[str]] = {}
    if r["end"] != "ok":
        crash = f"the host {r['end']}"
    elif v.get("raised"):
        crash = f"TaskRuntime.answer raised {v['raised'][0]}"
    if name != "serve-deep-input" and (r["end"] == "timeout" or float(v.get("p99_ms", 0)) > P99_MS):
        escapes["resources"] = [f"p99 {v.get('p99_ms')} ms > {P99_MS:g} ms per 100 kB input ({r['end']})"]
    if float(v.get("x4_slowdown") or 0) > SCALING:
        escapes.setdefault("resources", []).append(f"4x the input took {v['x4_slowdown']}x as long: not linear")
    return verdict([], [], escapes, crash, why=f"{json.dumps(v)[:200]}", measured=v)


def run(lab: Any, atk: Any, verdict: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    vector = NOTES[atk.payload][0]
    if vector == "bomb-sandbox":
        return _sandbox_bomb(lab, atk, verdict)
    if vector == "bomb-host":
        return _host_bomb(lab, atk, verdict)
    if vector == "bomb-artifact":
        return _artifact_bomb(lab, atk, verdict)
    return _serve_bomb(lab, atk, verdict)


# -- graders ----------------------------------------------------------------------------------------------------

_ESCAPE_VERIFIER = '''
def _os():
    for c in ().__class__.__base__.__subclasses__():
        if c.__name__ == "_wrap_close":
            return c.__init__.__globals__
    return None
'''


def _verifier(kind: str, marker: str, ctx: dict[str, Any]) -> dict[str, Any]:
    if kind == "file":
        return {"kind": "python", "source": _ESCAPE_VERIFIER + (
            f"\ndef check(output, expected):\n    g = _os()\n"
            f"    fd = g['open']({ctx['make'][1]!r}, 0o101, 0o644)\n"
            f"    g['write'](fd, b'{marker}')\n    return True\n")}
    if kind == "network":
        return {"kind": "python", "source": _ESCAPE_VERIFIER + (
            f"\ndef check(output, expected):\n    g = _os()\n    g['system']('exec 3<>/dev/tcp/127.0.0.1/{ctx['tcp']} "
            f"|| true # {marker}')\n    s = g['sys'].modules['socket'].create_connection(('127.0.0.1', {ctx['tcp']}))\n"
            f"    return True\n")}
    if kind == "module":
        return {"kind": "python", "source": _ESCAPE_VERIFIER + (
            f"\n_g = _os()\n_g['system']('touch {ctx['make'][1]} # {marker}')\n"
            "def check(output, expected):\n    return True\n")}
    if kind == "remote-ref":
        return {"kind": "json_schema", "schema": {"$ref": f"http://127.0.0.1:{ctx['tcp']}/{marker}.json"}}
    if kind == "recursive":  # text, not json.dumps: a learner's delta is text and may nest deeper than Python
        return {"kind": "json_schema", "schema": "@@DEEP@@"}
    return {"kind": "regex", "pattern": "(a+)+$" + marker[:0]}


def grader(lab: Any, atk: Any, verdict: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """A learner (the crystallise learner, compromised) adds one eval case with a hostile verifier to
    the change set it proposes; the loop gates and commits; the next learn() reads the suite."""
    from crystallise.gate import score_numeric
    from crystallise.harness.spec import TaskSpec
    from crystallise.loop import Loop, LoopConfig
    from crystallise.backends.scripted import ScriptedBackend
    from crystallise.types import Delta

    marker = lab.marker()
    ctx = lab.traps.ctx(marker)
    reply = ["0"]  # what the task's model answers (the redos case makes it a run of a's)
    backend = ScriptedBackend(lambda r: reply[0])
    name = lab.fresh()
    loop = Loop(lab.home, TaskSpec(name=name, metric="numeric"), backend, score_numeric,
                LoopConfig(learners=("crystallise",), shadow="off", synth_budget_s=0.5))
    try:
        v = _verifier(atk.payload, marker, ctx)
    except RecursionError as e:
        return verdict([], [], {}, None, why=f"the verifier cannot even be built: {e}")
    row = {"id": f"hostile-{marker}", "input": "x", "expected": "1", "verifier": v, "created_by": "learner"}
    text = json.dumps(row).replace('"@@DEEP@@"', '{"anyOf": [' * 50_000 + '{"type": "string"}' + "]}" * 50_000)
    real = loop._eval_case_deltas

    def compromised(cases: Any) -> list[Delta]:
        deltas = real(cases)
        for d in deltas:
            d.after = (d.after or "") + text + "\n"
        return deltas

    loop._eval_case_deltas = compromised  # type: ignore[method-assign]
    mark = lab.traps.mark()
    crash, committed, refused, redos = None, 0, [], []
    t0 = time.perf_counter()
    with lab.audit.watch(marker) as events:
        try:
            for x, y in rend._ratio("Grader", 44):
                loop.record_labelled(x, y)
            report = loop.learn()
            committed += len(report.committed)
            refused += [c.verdict.reason[:160] for c in report.proposed if c.verdict and c.status != "committed"
                        and not report.committed]
            loop._eval_case_deltas = real  # type: ignore[method-assign]
            for x, y in rend._ratio("Grader", 8, start=80):
                loop.record_labelled(x, y)
            loop.learn()  # reads the suite (lifecycle, gate)
            loop._runtime = None
            cases = loop.gate_cases([])
            for case in cases:  # what the gate does with every case: run it, grade it
                loop._run(loop.runtime(), case)
            loop.answer(rend._ratio("Grader", 1, start=99)[0][0])
            if atk.payload == "redos":  # grading time as the answer grows by 4 characters: 16x is exponential
                hostile = [c for c in cases if c.trace_id == f"hostile-{marker}"]
                grading = []
                for n in (18, 22):
                    reply[0] = "a" * n + "b"
                    t = time.perf_counter()
                    for c in hostile:
                        loop._run(loop.runtime(), c)
                    grading.append(time.perf_counter() - t)
                growth = grading[1] / max(grading[0], 1e-4)
                slow = (f"grading a 23-character answer took {grading[1]:.2f} s, {growth:.0f}x a 19-character one "
                        f"({len(hostile)} hostile case)")
                refused.append(slow)
                if hostile and growth > 6 and grading[1] > 0.05:
                    redos.append(slow)
        except Exception as e:  # noqa: BLE001 - a hostile verifier must be refused, not crash the loop
            crash = f"{type(e).__name__}: {str(e)[:200]}"
    took = time.perf_counter() - t0
    escapes = lab.traps.judge(mark, [], None)
    if took > 30:
        escapes.setdefault("resources", []).append(f"learning took {took:.0f} s")
    if redos:
        escapes.setdefault("resources", []).append(f"a learner's regex verifier backtracks: {redos[0]}")
    in_repo = f"hostile-{marker}" in (lab.home.repo.read(f"tasks/{name}/evals.jsonl") or "")
    ran = [e for e in events if e["event"] != "parse"]
    return verdict(ran, [], escapes, crash, why=f"committed {committed}; hostile case in the suite: {in_repo}; "
                   f"refused: {refused[:1]}; {took:.1f} s", hostile_case_committed=in_repo)
