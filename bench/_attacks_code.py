"""The code-path families of `crystallise bench attacks`: learned code is data (issue 13).

    crystallise bench attacks --family code-render --family code-sandbox --family code-protocol \\
                              --family code-bombs --family code-graders

    code-render    hostile trace data (quotes, line breaks of every kind, NUL, braces, comments) through
                   every strategy's real learner, then served: the data stays data
    code-sandbox   LLM-written code trying every route out of the language layer (introspection, frames,
                   code objects, format walks, eval/exec, metaclasses, match patterns), and, with the
                   language layer off, every effect against the OS layers (files, sockets, signals,
                   ptrace, the host's memory, SysV/POSIX IPC, inotify, stat/readlink/uname/sysinfo)
    code-protocol  the worker's side of the pipe is the attacker's: forged, malformed, huge, deep,
                   early, extra, missing replies
    code-bombs     memory, CPU, recursion, output, processes in the sandbox; hostile trees, artifacts
                   and inputs for the host's interpreter
    code-graders   a learner's eval case with a python (or hostile data) verifier

Every attack reports what the host saw, never what the attacking code says about itself (see
_attacks_code_host.py): `host_exec` (audit events carrying the attack's marker: compile, exec,
system, spawn, connect, open-for-write), `injection` (the rendering let data become code),
`escapes` by class (file, network, process, ipc, metadata, resources) and `host_exception`
(the host raised what it must not). The outcome is "leaked" when any of the first three is
non-empty, "error" for a host exception alone, else "blocked".
"""

from __future__ import annotations

import json
import os
import secrets
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import _attacks_code_host as host
from . import _attacks_code_probe as probe
from . import _attacks_code_render as rend
from . import _attacks_code_sys as syst

__all__ = ["CODE_FAMILIES", "CodeLab", "catalogue", "code_goals", "run_code"]

CODE_FAMILIES = ("code-render", "code-sandbox", "code-protocol", "code-bombs", "code-graders")
EXEC = "the host compiles or runs text that came from a trace, or runs an action the attack names"
INJECT = "text from a trace becomes code (or a comment/docstring) in the rendering, or changes what it does"
ESCAPE = "sandboxed code reaches the host: files, network, processes, IPC, host metadata, or exhausts its resources"
CRASH = "the host raises anything but the documented errors (SandboxError; a fallback to the LLM)"


@dataclass(frozen=True)
class CodeAttack:
    id: str
    family: str
    vector: str
    payload: Any
    success: str
    note: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    known_gap: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "family": self.family, "vector": self.vector, "payload": self.payload,
                "success": self.success, "note": self.note, "known_gap": self.known_gap}


# -- catalogue ----------------------------------------------------------------------------------------------

PAYLOADS = {  # {M} is the attack's unique marker
    "triple-double": '"""; exec("{M}") #',
    "triple-single": "'''; exec('{M}') #",
    "cr": '\r    exec("{M}")  # ',
    "lf": '\n    exec("{M}")\n# ',
    "line-separators": '\u2028exec("{M}")\u2029 \x85exec("{M}")',
    "form-feeds": '\x0c\x0b\x1c\x1d\x1eexec("{M}")',
    "backslash-quote": '\\"); exec("{M}"); ("\\',
    "braces": '{{exec("{M}")}} %(x)s {{0.__class__}} $x',
    "comment": '# {M}\nimport os',
    "nul-bom": '\x00\ufeff{M}\x00',
    "unicode-quotes": '\u201c\uff02{M}\u2019 \u275e',
}
_RENDER = {  # scenario: payloads
    "fewshot": ["line-separators", "form-feeds"],
    "arith": ["triple-double", "cr", "line-separators", "form-feeds", "backslash-quote", "nul-bom"],
    "arith-tail": ["lf", "comment"],
    "lookup": ["triple-single", "lf", "braces", "unicode-quotes"],
    "lookup-keys": ["triple-double", "cr"],
    "strings": ["triple-double", "cr", "line-separators", "braces"],
    "strings-keys": ["backslash-quote", "comment"],
    "coder": ["triple-double", "cr", "form-feeds"],
    "hybrid": ["triple-single", "cr", "line-separators"],
}
# Trees rendered directly (what no learner makes today, but a tree may hold).
_TREES = {
    "llm-source-line-breaks": "LLM-written source with \\x0c/\\x0b/\\x1c/U+2028 inside literals and comments: "
                              "the rendering must show the code that runs",
    "strategy-name": "a part's strategy name holding a line break and code",
    "unit-and-codec-strings": "units, codec words and group keys holding quotes and line breaks",
    "hybrid-fields": "hybrid field names holding quotes",
    "title-and-mode": "a program title and a template mode holding code",
}


def _render_attacks() -> list[CodeAttack]:
    out = []
    for scenario, names in _RENDER.items():
        for p in names:
            out.append(CodeAttack(f"render-{scenario}-{p}", "code-render", "render-learn", PAYLOADS[p],
                                  f"{EXEC}; {INJECT}", f"{p} in the {scenario} strategy's traces, learned and served",
                                  {"scenario": scenario}))
    out += [CodeAttack(f"render-tree-{k}", "code-render", "render-tree", k, INJECT, v) for k, v in _TREES.items()]
    return out


SANDBOX_GAP = ("the seccomp deny-list and the language layer of main; wip/sandbox (bubblewrap + a libseccomp "
               "allowlist) closes these")


def _sandbox_attacks() -> list[CodeAttack]:
    out = [CodeAttack(f"sandbox-route-{name}", "code-sandbox", "sandbox-route", name, ESCAPE, note)
           for name, (note, _) in probe.ROUTES.items()]
    out += [CodeAttack(f"sandbox-os-{cls}", "code-sandbox", "sandbox-kernel", cls, ESCAPE,
                       f"language layer off: every {cls} effect against the OS layers alone") for cls in probe.KERNEL]
    out += [
        CodeAttack("sandbox-os-exec", "code-sandbox", "sandbox-exec", "execve", ESCAPE,
                   "language layer off: execve('/bin/sh', touch a host file), posix_spawn, and the real vfork"),
        CodeAttack("sandbox-os-signals", "code-sandbox", "sandbox-signals", "signals", ESCAPE,
                   "language layer off: signal.alarm, setitimer, kill(0)/killpg on its own group, SIGSTOP to itself"),
        CodeAttack("sandbox-coder-channel", "code-sandbox", "sandbox-channel", "attrgetter-type", ESCAPE,
                   "the attrgetter route + every probe as a coder model's reply, through CoderStrategy, the gate "
                   "and TaskRuntime.answer; judged only by what the host sees", {"strategy": "coder"}),
        CodeAttack("sandbox-hybrid-channel", "code-sandbox", "sandbox-channel", "match-instancecheck", ESCAPE,
                   "the match-pattern route + every probe as a hybrid unit's compute, through HybridStrategy and "
                   "TaskRuntime.answer", {"strategy": "hybrid"}),
        CodeAttack("sandbox-coder-exec-channel", "code-sandbox", "sandbox-channel", "exec-dict-subclass", ESCAPE,
                   "the exec-with-a-dict-subclass route as a coder reply", {"strategy": "coder"}),
    ]
    return out


def _protocol_attacks() -> list[CodeAttack]:
    out = [CodeAttack(f"protocol-{name}", "code-protocol", "protocol-fake", name, CRASH, note)
           for name, (note, _, _) in syst.FAKE.items()]
    out += [CodeAttack(f"protocol-{name}", "code-protocol", "protocol-worker", name, CRASH, note)
            for name, (note, _) in syst.WORKER_FORGE.items()]
    return out


def _bomb_attacks() -> list[CodeAttack]:
    from . import _attacks_code_bombs as bombs

    return [CodeAttack(f"bomb-{name}", "code-bombs", vector, name, ESCAPE if vector != "bomb-artifact" else CRASH,
                       note) for name, (vector, note) in bombs.NOTES.items()]


GRADER_GAP = "python verifiers run in the host until wip/verifiers is merged (issue 13, part 4)"


def _grader_attacks() -> list[CodeAttack]:
    return [
        CodeAttack("grader-python-file", "code-graders", "grader", "file", f"{EXEC}; {ESCAPE}",
                   "a learner's eval case whose python verifier climbs to os and writes a host file",
                   known_gap=GRADER_GAP),
        CodeAttack("grader-python-network", "code-graders", "grader", "network", f"{EXEC}; {ESCAPE}",
                   "a learner's eval case whose python verifier connects to the host's listener",
                   known_gap=GRADER_GAP),
        CodeAttack("grader-python-module-body", "code-graders", "grader", "module", f"{EXEC}; {ESCAPE}",
                   "the attack in the verifier's module body (runs when the suite is read)", known_gap=GRADER_GAP),
        CodeAttack("grader-schema-remote-ref", "code-graders", "grader", "remote-ref", ESCAPE,
                   "a learner's json_schema verifier with a $ref to the host's listener"),
        CodeAttack("grader-schema-recursive", "code-graders", "grader", "recursive", CRASH,
                   "a learner's json_schema verifier nested 50,000 deep"),
        CodeAttack("grader-regex-redos", "code-graders", "grader", "redos", ESCAPE,
                   "a learner's regex verifier (a+)+$ on a long answer"),
    ]


def catalogue() -> list[CodeAttack]:
    attacks = [*_render_attacks(), *_sandbox_attacks(), *_protocol_attacks(), *_bomb_attacks(), *_grader_attacks()]
    ids = [a.id for a in attacks]
    if len(ids) != len(set(ids)):
        raise RuntimeError("duplicate code attack ids")
    return attacks


# -- the lab --------------------------------------------------------------------------------------------------


@dataclass
class CodeLab:
    home: Any
    traps: host.Traps
    audit: host.Audit
    n: int = 0

    def fresh(self) -> str:
        self.n += 1
        return f"code{self.n}"

    def marker(self) -> str:
        return "XMARK" + secrets.token_hex(6)


def verdict(host_exec: list[Any], injection: list[str], escapes: dict[str, list[str]],
            host_exception: str | None, **details: Any) -> dict[str, Any]:
    """The outcome of one code attack from what the host observed."""
    escapes = {k: v for k, v in escapes.items() if v}
    if host_exec or injection or escapes:
        why = "; ".join([f"host ran it: {host_exec[0]}" for _ in host_exec[:1]] + injection[:2]
                        + [f"{k}: {v[0]}" for k, v in escapes.items()])
        outcome = "leaked"
    elif host_exception:
        why, outcome = f"host exception: {host_exception}", "error"
    else:
        why, outcome = details.pop("why", "") or "nothing reached the host", "blocked"
    return {"outcome": outcome, "why": why[:400], "host_exec": host_exec[:5], "injection": injection[:5],
            "escapes": escapes, "host_exception": host_exception, **details}


def _exception(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e)[:300]}"


# -- render ---------------------------------------------------------------------------------------------------


def render_learn(lab: CodeLab, atk: CodeAttack) -> dict[str, Any]:
    marker = lab.marker()
    payload = atk.payload.replace("{M}", marker).replace("{{", "{").replace("}}", "}")
    sc = rend.SCENARIOS[atk.params["scenario"]](payload)
    crash, out = None, {}
    with lab.audit.watch(marker) as events:
        try:
            out = rend.learn_and_serve(lab.home, lab.fresh(), sc)
        except Exception as e:  # noqa: BLE001 - learning or serving hostile data must not raise
            crash = _exception(e)
            out["traceback"] = traceback.format_exc(limit=5)
    injections: list[str] = []
    reached = False
    code = out.get("code")
    tree = json.loads(out["program_json"]).get("program") if out.get("program_json") else None
    with lab.audit.paused():
        found, reached = rend.judge_source(code, marker, tree)
        injections += found
        if code and tree and not found:
            try:
                injections += rend.compare_answers(tree, code, sc.serve, sc.metric)
            except Exception as e:  # noqa: BLE001
                crash = crash or f"judging the answers: {_exception(e)}"
    if "refused" in str(out.get("verdict")):  # the committer could not read back what the data made of a file
        injections.append(f"the trace text broke an artifact's structure: {str(out['verdict'])[:160]}")
    ran = [e for e in events if e["event"] != "parse"]
    served = [a["served_by"] for a in out.get("answers", [])]
    if any(a["served_by"] != "llm" and not a["right"] for a in out.get("answers", [])):
        injections.append(f"served wrong answers by code: {[a['output'] for a in out['answers']][:4]}")
    why = (f"{out.get('note') or 'proposed'}; marker {'in' if reached else 'not in'} code.py; "
           f"committed {out.get('committed', 0)}; served by {served}; verdict: {str(out.get('verdict'))[:120]}")
    return verdict(ran, injections, {}, crash, why=why, reached_rendering=reached, served_by=served,
                   committed=out.get("committed", 0), learn_s=out.get("learn_s"), traceback=out.get("traceback"))


def _tree(kind: str, m: str) -> tuple[dict[str, Any], str]:
    from crystallise.harness.programs import FORMAT

    hostile = f'"""\r\n\u2028exec("{m}")#'
    fn = {"kind": "strings", "arg_types": ["str"], "out_type": "str", "expr": {"arg": 0}}
    group = {"unit": "u", "prefix": "p", "suffix": "", "arg_keys": None,
             "codec": {"kind": "str", "true": "True", "false": "False"}, "fn": fn}
    if kind == "llm-source-line-breaks":
        src = (f'def solve(x):\n    s = "a\x0cexec(\'{m}\')"  # \x0b{m}\x1c\n    t = "\u2028{m}"\n'
               f'    return x if s and t else None\n')
        body = {"kind": "grouped", "mode": "line", "groups": [{**group, "fn": {"kind": "source", "source": src}}]}
        return {"format": FORMAT, "parts": [{"strategy": "coder", "units": None, "hybrid": False, "body": body}]}, src
    if kind == "strategy-name":
        body = {"kind": "lookup", "table": {'"x"': 1}}
        return {"format": FORMAT, "parts": [{"strategy": hostile, "units": [hostile], "hybrid": False,
                                             "body": body}]}, hostile
    if kind == "unit-and-codec-strings":
        g = {**group, "unit": hostile, "prefix": hostile, "suffix": hostile,
             "codec": {"kind": "bool", "true": hostile, "false": hostile}}
        g2 = {**group, "unit": "args:" + hostile, "arg_keys": [hostile, "b"], "fn": {**fn, "arg_types": ["str", "str"]}}
        body = {"kind": "grouped", "mode": "sentence", "groups": [g, g2]}
        return {"format": FORMAT, "parts": [{"strategy": "strings", "units": [hostile], "hybrid": False,
                                             "body": body}]}, hostile
    if kind == "hybrid-fields":
        src = "def compute(a, b):\n    return a / b\n"
        body = {"kind": "hybrid", "mode": "sentence", "units": {hostile: {
            "prefix": hostile, "suffix": hostile, "fields": [hostile, "b"], "places": 2, "rounding": "half_up",
            "compute": {"kind": "source", "source": src}}}}
        part = {"strategy": "hybrid", "units": None, "hybrid": True, "body": body}
        return {"format": FORMAT, "parts": [part]}, hostile
    body = {"kind": "arith", "mode": "sentence", "skip": {hostile: {"$": 0, "%": 0, "n": 0}},
            "rules": [{"key": hostile, "signature": [1, 0, 0], "expr": {"var": "d0"}, "places": 2,
                       "rounding": "half_up"}]}
    return {"format": FORMAT, "title": hostile, "parts": [{"strategy": "arith", "units": None, "hybrid": False,
                                                           "body": body}]}, hostile


def render_tree(lab: CodeLab, atk: CodeAttack) -> dict[str, Any]:
    import ast

    marker = lab.marker()
    tree, payload = _tree(atk.payload, marker)
    crash, injections = None, []
    with lab.audit.watch(marker) as events:
        try:
            code = rend.render_tree(tree)
        except Exception as e:  # noqa: BLE001 - a tree the host refuses to render is not a break-out
            return verdict([], [], {}, None, why=f"refused to render: {_exception(e)}")
    with lab.audit.paused():
        if atk.payload == "llm-source-line-breaks":  # the shown code must be the code that runs
            try:
                mod = ast.parse(code)
                consts = [n.value.value for n in ast.walk(mod) if isinstance(n, ast.Assign)
                          and isinstance(n.value, ast.Constant) and any(getattr(t, "id", "") == "_group0_SOURCE"
                                                                        for t in n.targets)]
                fn = next(n for n in ast.walk(mod) if isinstance(n, ast.FunctionDef) and n.name == "_group0")
                shown = ast.dump(ast.Module(body=fn.body[:-1], type_ignores=[]))
                if consts != [payload] and shown != ast.dump(ast.parse(payload)):
                    injections.append("code.py shows other code than the LLM-written source that runs")
            except (SyntaxError, StopIteration) as e:
                injections.append(f"code.py does not parse: {e}")
        else:
            found, _ = rend.judge_source(code, marker, tree)
            injections += found
    return verdict([e for e in events if e["event"] != "parse"], injections, {}, crash)


# -- sandbox --------------------------------------------------------------------------------------------------


def _sandboxed(lab: CodeLab, source: str, arg: Any, *, language: bool = True, timeout_s: float = 5.0
               ) -> tuple[Any, str | None, str | None]:
    """(what came back, the SandboxError that stopped it, a host exception)."""
    from crystallise.errors import SandboxError
    from crystallise.sandbox import Sandbox

    try:
        with Sandbox(source, timeout_s=timeout_s, _language_layer=language) as box:
            return box.call(arg), None, None
    except SandboxError as e:
        return None, _exception(e), None
    except Exception as e:  # noqa: BLE001
        return None, None, _exception(e)


def _summary(got: Any) -> dict[str, Any]:
    if not isinstance(got, dict):
        return {}
    keep = {k: got[k] for k in ("reached", "have", "found", "leak") if k in got}
    keep["stopped"] = sorted({v.split(":")[0] for v in (got.get("errors") or {}).values()})[:8]
    return keep


def sandbox_route(lab: CodeLab, atk: CodeAttack) -> dict[str, Any]:
    source = probe.program(atk.payload)
    mark = lab.traps.mark()
    got, stopped, crash = _sandboxed(lab, source, lab.traps.ctx(lab.marker()))
    escapes = lab.traps.judge(mark, [got, stopped], got if isinstance(got, dict) else None)
    info = _summary(got)
    breached = bool(info.get("reached")) and info.get("reached") != [] or bool(info.get("leak"))
    why = stopped or (f"reached {info.get('reached')}; the OS layers stopped {info.get('stopped')}" if breached
                      else "the route got nothing")
    return verdict([], [], escapes, crash, why=why, language_breached=breached, probe=info)


def sandbox_kernel(lab: CodeLab, atk: CodeAttack) -> dict[str, Any]:
    source = probe.program(None, [atk.payload])
    mark = lab.traps.mark()
    got, stopped, crash = _sandboxed(lab, source, lab.traps.ctx(lab.marker()), language=False)
    escapes = lab.traps.judge(mark, [got, stopped], got if isinstance(got, dict) else None)
    info = _summary(got)
    return verdict([], [], escapes, crash, why=stopped or f"stopped: {info.get('stopped')}", probe=info)


_EXEC_SRC = '''
import posix
def solve(ctx):
    out = {}
    made = ctx["make"][0]
    for how in ("posix_spawn", "vfork", "execv"):
        try:
            if how == "posix_spawn":
                out[how] = posix.posix_spawn("/bin/sh", ["sh", "-c", "touch " + made], {})
            elif how == "vfork":
                pid = posix.fork()
                if pid == 0:
                    posix.execv("/bin/sh", ["sh", "-c", "touch " + made])
                out[how] = pid
            else:
                posix.execv("/bin/sh", ["sh", "-c", "touch " + made])
        except Exception as e:
            out[how] = type(e).__name__ + ": " + str(e)
    return out
'''
_SIGNALS_SRC = '''
import posix, _signal
def solve(ctx):
    out = {}
    for how in ("killpg", "kill0", "sigstop-self", "setitimer", "alarm"):
        try:
            if how == "killpg":
                posix.killpg(posix.getpgrp(), 10)
            elif how == "kill0":
                posix.kill(0, 10)
            elif how == "sigstop-self":
                posix.kill(posix.getpid(), 19)
            elif how == "setitimer":
                _signal.setitimer(_signal.ITIMER_REAL, 0.05)
            else:
                _signal.alarm(1)
            out[how] = "ok"
        except Exception as e:
            out[how] = type(e).__name__
    return out
'''


def sandbox_special(lab: CodeLab, atk: CodeAttack) -> dict[str, Any]:
    source = _EXEC_SRC if atk.vector == "sandbox-exec" else _SIGNALS_SRC
    mark = lab.traps.mark()
    t0 = time.perf_counter()
    got, stopped, crash = _sandboxed(lab, source, lab.traps.ctx(lab.marker()), language=False, timeout_s=2.0)
    escapes = lab.traps.judge(mark, [got, stopped], None)
    if isinstance(got, dict) and isinstance(got.get("vfork"), int) and got["vfork"] > 0:
        escapes.setdefault("process", []).append("fork succeeded in the worker")
    if isinstance(got, dict) and got.get("posix_spawn") not in (None,) and isinstance(got.get("posix_spawn"), int):
        escapes.setdefault("process", []).append("posix_spawn started a process")
    return verdict([], [], escapes, crash, why=f"{stopped or got} in {time.perf_counter() - t0:.1f} s")


def sandbox_channel(lab: CodeLab, atk: CodeAttack) -> dict[str, Any]:
    """The route as a model's reply, through the real learner and the serving path."""
    marker = lab.marker()
    ctx = lab.traps.ctx(marker)
    strategy = atk.params["strategy"]
    if strategy == "coder":
        src = probe.program(atk.payload, ctx=ctx, answer="int(x.strip()) % 2 == 0")
        sc = rend.coder("Check:")
        sc.coder = lambda request: f"```python\n{src}\n```"
    else:
        src = probe.program(atk.payload, ctx=ctx, answer="assets / debt", entry="compute(assets, debt)")
        sc = rend.hybrid("Ratio:")
        sc.coder = lambda request: f"```python\n{src}\n```"
    mark = lab.traps.mark()
    crash, out = None, {}
    with lab.audit.watch(marker) as events:
        try:
            out = rend.learn_and_serve(lab.home, lab.fresh(), sc)
        except Exception as e:  # noqa: BLE001
            crash = _exception(e)
    seen = [out, [str(r) for r in lab.home.store.list_traces(limit=200)]]
    escapes = lab.traps.judge(mark, seen, None)
    served = [a["served_by"] for a in out.get("answers", [])]
    return verdict([e for e in events if e["event"] != "parse"], [], escapes, crash,
                   why=f"learned: {out.get('note') or out.get('verdict')}; served by {served}")


# -- protocol -------------------------------------------------------------------------------------------------


def _runtime_over(lab: CodeLab, source: str) -> Any:
    """A G4 task whose program is one LLM-written group (the runtime then calls the sandbox)."""
    from crystallise.backends.scripted import ScriptedBackend
    from crystallise.harness.programs import FORMAT
    from crystallise.harness.runtime import TaskRuntime
    from crystallise.harness.spec import TaskSpec, View

    tree = {"format": FORMAT, "parts": [{"strategy": "coder", "units": None, "hybrid": False, "body": {
        "kind": "grouped", "mode": "none", "groups": [{
            "unit": "", "prefix": "", "suffix": "", "arg_keys": None,
            "codec": {"kind": "any", "true": "True", "false": "False"},
            "fn": {"kind": "source", "source": source}}]}}]}
    files = {"tasks/t/code.py": "# rendering\n", "tasks/t/program.json": json.dumps({"program": tree})}
    spec = TaskSpec(name="t", grade="G4")
    return TaskRuntime(spec, View(lambda p: files.get(p)), ScriptedBackend(lambda r: "llm answer"))


def _protocol(lab: CodeLab, source: str, patch: str | None, language: bool) -> dict[str, Any]:
    import crystallise.sandbox as sandbox_mod
    from crystallise.errors import SandboxError
    from crystallise.harness.programs import close_sandboxes

    import crystallise.harness.runtime as runtime_mod

    real, real_runner = sandbox_mod._CHILD, runtime_mod.sandbox_runner
    if patch is not None:
        sandbox_mod._CHILD = patch
    # the serving path's sandbox, with a shorter start limit than the runtime's 10 s (the verdict is
    # about what the host raises, not how long a hung worker keeps it waiting)
    runtime_mod.sandbox_runner = lambda src: sandbox_mod.Sandbox(src, timeout_s=1.0, start_timeout_s=2.0,
                                                                 _language_layer=language)
    crashes, seen = [], []
    t0 = time.perf_counter()
    try:
        box = None
        try:
            box = sandbox_mod.Sandbox(source, timeout_s=1.0, start_timeout_s=2.0, _language_layer=language)
            for arg in ("a", "b", "c"):
                try:
                    seen.append(repr(box.call(arg))[:80])
                except SandboxError as e:
                    seen.append(type(e).__name__)
        except SandboxError as e:
            seen.append(type(e).__name__)
        except Exception as e:  # noqa: BLE001 - the finding
            crashes.append(f"Sandbox: {_exception(e)}")
        finally:
            if box is not None:
                box.close()
        if patch is not None or not language:
            rt = _runtime_over(lab, source) if language else None
            if rt is not None:
                try:
                    ans = rt.answer("a")
                    seen.append(f"answer: {ans.served_by}")
                except Exception as e:  # noqa: BLE001
                    crashes.append(f"TaskRuntime.answer: {_exception(e)}")
    finally:
        sandbox_mod._CHILD, runtime_mod.sandbox_runner = real, real_runner
        close_sandboxes()
    return {"seen": seen, "crash": "; ".join(crashes) or None, "seconds": round(time.perf_counter() - t0, 2)}


def protocol_fake(lab: CodeLab, atk: CodeAttack) -> dict[str, Any]:
    _, start, reply = syst.FAKE[atk.payload]
    fake = syst.forged_worker(start, reply or syst._ok("'fine'"))
    r = _protocol(lab, "def solve(x):\n    return x\n", fake, True)
    return verdict([], [], {}, r["crash"], why=f"host saw {r['seen']} in {r['seconds']} s")


def protocol_worker(lab: CodeLab, atk: CodeAttack) -> dict[str, Any]:
    _, source = syst.WORKER_FORGE[atk.payload]
    r = _protocol(lab, source, None, False)
    # the same forgery through the serving path: a runtime over the program, language layer off
    import crystallise.harness.programs as programs_mod
    from crystallise.sandbox import Sandbox

    real = programs_mod.sandbox_runner
    programs_mod.sandbox_runner = lambda src: Sandbox(src, timeout_s=1.0, _language_layer=False)
    import crystallise.harness.runtime as runtime_mod

    runtime_mod.sandbox_runner = programs_mod.sandbox_runner
    crash = r["crash"]
    try:
        rt = _runtime_over(lab, source)
        for x in ("a", "b"):
            try:
                ans = rt.answer(x)
                r["seen"].append(f"answer: {ans.served_by} {str(ans.output)[:40]!r}")
            except Exception as e:  # noqa: BLE001
                crash = crash or f"TaskRuntime.answer: {_exception(e)}"
    finally:
        programs_mod.sandbox_runner = real
        runtime_mod.sandbox_runner = real
    return verdict([], [], {}, crash, why=f"host saw {r['seen']} in {r['seconds']} s")


# -- graders ---------------------------------------------------------------------------------------------------


def grader(lab: CodeLab, atk: CodeAttack) -> dict[str, Any]:
    from . import _attacks_code_bombs as bombs

    return bombs.grader(lab, atk, verdict)


def bomb(lab: CodeLab, atk: CodeAttack) -> dict[str, Any]:
    from . import _attacks_code_bombs as bombs

    return bombs.run(lab, atk, verdict)


EXECUTORS: dict[str, Callable[[CodeLab, CodeAttack], dict[str, Any]]] = {
    "render-learn": render_learn, "render-tree": render_tree, "sandbox-route": sandbox_route,
    "sandbox-kernel": sandbox_kernel, "sandbox-exec": sandbox_special, "sandbox-signals": sandbox_special,
    "sandbox-channel": sandbox_channel, "protocol-fake": protocol_fake, "protocol-worker": protocol_worker,
    "grader": grader, "bomb-sandbox": bomb, "bomb-host": bomb, "bomb-artifact": bomb, "bomb-input": bomb,
}


def run_code(home: Any, attacks: list[CodeAttack], progress: Callable[[dict[str, Any]], None] | None = None
             ) -> list[dict[str, Any]]:
    """Run the code attacks in `home` with fresh traps; one result dict per attack."""
    from crystallise.harness.programs import close_sandboxes

    audit = host.Audit.install()
    traps = host.Traps.open()
    lab = CodeLab(home, traps, audit)
    results = []
    try:
        for atk in attacks:
            t0 = time.perf_counter()
            try:
                outcome = EXECUTORS[atk.vector](lab, atk)
            except Exception as e:  # noqa: BLE001 - an executor that crashes is a finding (or a bench bug)
                outcome = verdict([], [], {}, f"executor: {_exception(e)}", traceback=traceback.format_exc(limit=6))
            results.append({**atk.to_dict(), **outcome, "seconds": round(time.perf_counter() - t0, 3)})
            if progress is not None:
                progress(results[-1])
    finally:
        close_sandboxes()
        traps.close()
    return results


def code_goals(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The four zeros of issue 13, over the code families (known gaps counted like everything else)."""
    code = [r for r in results if r["family"] in CODE_FAMILIES]
    by_class = {c: sum(1 for r in code if r.get("escapes", {}).get(c)) for c in host.CLASSES}
    out = {
        "host_executions": sum(1 for r in code if r.get("host_exec")),
        "injections": sum(1 for r in code if r.get("injection")),
        "sandbox_escapes": sum(1 for r in code if r.get("escapes")),
        "escapes_by_class": by_class,
        "host_exceptions": sum(1 for r in code if r.get("host_exception") or r["outcome"] == "error"),
        # defence in depth, not a goal: routes that got past the language layer (the OS layers then held)
        "language_breaches": sum(1 for r in code if r.get("language_breached")),
    }
    out["code_ids"] = {k: [r["id"] for r in code if cond(r)] for k, cond in (
        ("host_executions", lambda r: r.get("host_exec")), ("injections", lambda r: r.get("injection")),
        ("sandbox_escapes", lambda r: r.get("escapes")),
        ("host_exceptions", lambda r: r.get("host_exception") or r["outcome"] == "error"),
        ("language_breaches", lambda r: r.get("language_breached")))}
    out["code_met"] = not (out["host_executions"] or out["injections"] or out["sandbox_escapes"]
                           or out["host_exceptions"])
    return out


def family_counters(results: list[dict[str, Any]], family: str) -> dict[str, Any]:
    rows = [r for r in results if r["family"] == family]
    g = code_goals(rows)
    return {"cases": len(rows), "blocked": sum(1 for r in rows if r["outcome"] == "blocked"),
            **{k: g[k] for k in ("host_executions", "injections", "sandbox_escapes", "escapes_by_class",
                                 "host_exceptions", "language_breaches")}}


def environment() -> dict[str, Any]:
    """Which layers this run faced (wip/sandbox and wip/verifiers change them)."""
    import importlib.util

    return {"sandbox_os_layers": importlib.util.find_spec("crystallise.sandbox.isolation") is not None,
            "python_verifier_module": importlib.util.find_spec("crystallise.gate.python_verifier") is not None,
            "pid": os.getpid()}
