"""`code-render`: hostile trace data through every strategy's real learner, then served.

    scenario = SCENARIOS["arith"](payload)          # verified traces whose data carries the payload
    result = learn_and_serve(lab, name, scenario)    # Loop.learn() (the real learner, gate, committer)
    judge_rendering(result, marker)                  # code.py: the payload only inside string literals

Per attack: a task in the shared home, its verified traces (`Loop.record_labelled`, the path an
imported label takes), `Loop.learn()` with the crystallise learner (model-backed strategies get a
scripted coder and extractor), then `TaskRuntime.answer` on inputs carrying the payload, through
the proposed version (and the committed one when the gate accepted). Judged:

  * host executions: the audit hook saw a compile/exec/system/spawn/connect/write carrying the marker;
  * injections: code.py does not parse, or a token holding the marker is not a string literal (a
    comment, a name, a docstring), or its statements differ from its clean twin's (the same tree with
    the payload replaced by plain words, rendered), or the rendering, run in the sandbox, answers
    otherwise than the interpreter, or the interpreter answers otherwise than on the clean twin;
  * host exceptions: learn or serve raised.
"""

from __future__ import annotations

import ast
import io
import json
import time
import tokenize
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crystallise.backends.scripted import ScriptedBackend
from crystallise.gate import score_exact, score_numeric
from crystallise.harness.learn import CrystalliseLearner
from crystallise.harness.programs import load, render, sandbox_runner
from crystallise.harness.spec import TaskSpec
from crystallise.harness.synth.numbers import extract_numbers
from crystallise.loop import CachedBackend, Loop, LoopConfig

__all__ = ["SCENARIOS", "Scenario", "judge_source", "learn_and_serve", "render_tree", "twin"]

NEUTRAL = "plain words here"


@dataclass
class Scenario:
    strategy: str
    metric: str  # numeric | exact
    cases: list[tuple[Any, Any]]  # verified (input, answer)
    serve: list[tuple[Any, Any]]  # (input, right answer) served after learning
    coder: Callable[[Any], str] | None = None  # scripted coder replies (request -> text)
    strategies: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def _ratio(p: str, n: int, start: int = 1, where: str = "head") -> list[tuple[str, str]]:
    out = []
    for i in range(start, start + n):
        a, b = 1000 * i + 500, 250 * (i % 4 + 1)
        q = f"a firm has ${a:,} of assets and ${b:,} of debt"
        text = (f"{p} Use formula Asset Ratio to answer. Question: {q}. Answer:" if where == "head"
                else f"Use formula Asset Ratio to answer. Question: {q}. {p} Answer:")
        out.append((text, f"{round(a / b, 2)}"))
    return out


_FIRST = ["John", "Mary", "Alan", "Grace", "Ada", "Linus", "Barbara", "Edsger", "Donald", "Margaret", "Ken",
          "Dennis", "Frances", "Niklaus", "Radia", "Tim", "Guido", "Bjarne", "Anita", "Leslie", "Shafi", "Judea",
          "Yoshua", "Fei", "Jeff", "Sanjay", "Hedy", "Alonzo", "Kurt", "Emmy", "Sophie", "Carl", "Rosalind",
          "Katherine", "Dorothy", "Mae", "Annie", "Evelyn", "Jean", "Betty"]
_LAST = ["Smith", "Jones", "Turing", "Hopper", "Lovelace", "Torvalds", "Liskov", "Dijkstra", "Knuth", "Hamilton",
         "Thompson", "Ritchie", "Allen", "Wirth", "Perlman", "Berners", "Rossum", "Stroustrup", "Borg", "Lamport",
         "Goldwasser", "Pearl", "Bengio", "Li", "Dean", "Ghemawat", "Lamarr", "Church", "Godel", "Noether",
         "Wilson", "Gauss", "Franklin", "Johnson", "Vaughan", "Jemison", "Easley", "Boyd", "Bartik", "Holberton"]


def arith(p: str) -> Scenario:
    cases = _ratio(p, 44)
    return Scenario("arith", "numeric", cases, _ratio(p, 4, start=60), strategies=("arith",))


def arith_tail(p: str) -> Scenario:
    cases = _ratio(p, 44, where="tail")
    return Scenario("arith", "numeric", cases, _ratio(p, 4, start=60, where="tail"), strategies=("arith",))


def lookup(p: str) -> Scenario:
    cases = [(f"{p} key {i % 9}", f"{p} value {i % 9}") for i in range(36)]
    return Scenario("lookup", "exact", cases, cases[:4], strategies=("lookup",))


def lookup_keys(p: str) -> Scenario:
    cases = [({p: i % 9, "n": i % 9}, f"{p} {i % 9}") for i in range(36)]
    return Scenario("lookup", "exact", cases, cases[:4], strategies=("lookup",))


def strings(p: str) -> Scenario:
    names = list(zip(_FIRST, _LAST))
    cases = [(f"{p} Name: {f} {last}", last) for f, last in names[:36]]
    return Scenario("strings", "exact", cases, [(f"{p} Name: {f} {last}", last) for f, last in names[36:]],
                    strategies=("strings",))


def strings_keys(p: str) -> Scenario:
    names = list(zip(_FIRST, _LAST))
    cases = [({"first": f, p: last}, f"{last}, {f}") for f, last in names[:36]]
    return Scenario("strings", "exact", cases, [({"first": f, p: last}, f"{last}, {f}") for f, last in names[36:]],
                    strategies=("strings",))


_EVEN = "```python\ndef solve(x):\n    # written by the model: {m}\n    return int(x.strip()) % 2 == 0\n```"


def coder(p: str) -> Scenario:
    cases = [(f"{p} Is this number even: {n}", "yes" if n % 2 == 0 else "no") for n in range(3, 43)]
    return Scenario("coder", "exact", cases, [(f"{p} Is this number even: {n}", "yes" if n % 2 == 0 else "no")
                                             for n in (101, 202, 303)],
                    coder=lambda request: _EVEN.format(m="LLM-NOTE"), strategies=("coder",))


_COMPUTE = "```python\ndef compute(assets, debt):\n    return assets / debt\n```"


def hybrid(p: str) -> Scenario:
    def q(a: int, b: int) -> str:
        return f"{p} Find the asset ratio. The company reports {a} dollars of assets against {b} of debt."

    cases = [(q(a, b), f"{a / b:.2f}") for a, b in ((1000 * i + 500, 250 * (i % 4 + 1)) for i in range(1, 40))]
    serve = [(q(a, b), f"{a / b:.2f}") for a, b in ((77_500, 500), (9_000, 750))]
    return Scenario("hybrid", "numeric", cases, serve, coder=lambda request: _COMPUTE, strategies=("hybrid",))


def fewshot(p: str) -> Scenario:
    cases = [(f"{p} Name: {f} {last}", last) for f, last in zip(_FIRST, _LAST)]
    return Scenario("fewshot", "exact", cases, cases[:2], extra={"learners": ("fewshot",)})


SCENARIOS: dict[str, Callable[[str], Scenario]] = {
    "fewshot": fewshot,
    "arith": arith, "arith-tail": arith_tail, "lookup": lookup, "lookup-keys": lookup_keys, "strings": strings,
    "strings-keys": strings_keys, "coder": coder, "hybrid": hybrid,
}


def _extractor(request: Any) -> str:
    """The task's model: for an extraction request, the numbers of the question in field order;
    otherwise a wrong answer (so code wins the gate)."""
    if request.schema and request.schema.get("properties"):
        fields = list(request.schema["properties"])
        text = request.messages[-1].content
        nums = extract_numbers(text)
        values = nums["$"] + nums["n"]
        return json.dumps(dict(zip(fields, values)))
    return "0"


# -- learn, serve ----------------------------------------------------------------------------------------


def learn_and_serve(home: Any, name: str, sc: Scenario) -> dict[str, Any]:
    """Learn `sc` with the real loop in `home`, serve its inputs; what a judge needs."""
    metric = score_numeric if sc.metric == "numeric" else score_exact
    backend = CachedBackend(ScriptedBackend(_extractor))
    objects = any(isinstance(x, dict) for x, _ in sc.cases)
    spec = TaskSpec(name=name, metric=sc.metric, input_schema={"type": "object"} if objects else {"type": "string"})
    loop = Loop(home, spec, backend, metric,
                LoopConfig(learners=sc.extra.get("learners", ("crystallise",)), shadow="off", synth_budget_s=0.5))
    coder = ScriptedBackend(sc.coder) if sc.coder else None
    loop.crystallise = CrystalliseLearner(metric, budget_s=0.5, strategies=sc.strategies, coder=coder,
                                          extractor=backend if coder else None)
    if coder is not None:  # small groups are enough for a scripted model
        for s in loop.crystallise.strategies:
            if hasattr(s, "min_cases"):
                s.min_cases = 3
    for x, y in sc.cases:
        loop.record_labelled(x, y)
    t0 = time.perf_counter()
    report = loop.learn()
    out: dict[str, Any] = {"learn_s": round(time.perf_counter() - t0, 2), "proposed": len(report.proposed),
                           "committed": len(report.committed), "answers": [], "served": []}
    cs = report.proposed[0] if report.proposed else None
    if cs is None:
        out["note"] = "the learner proposed nothing"
        return out
    out["verdict"] = cs.verdict.reason if cs.verdict else None
    files = {d.path.rsplit("/", 1)[-1]: d.after for d in cs.deltas if d.path and d.path.startswith(f"tasks/{name}/")}
    out["code"], out["program_json"] = files.get("code.py"), files.get("program.json")
    runtime = loop.runtime(cs.deltas)
    for x, want in sc.serve:
        ans = runtime.answer(x)
        out["answers"].append({"output": ans.output, "served_by": ans.served_by, "fallback": ans.fallback_reason,
                               "right": ans.output is not None and bool(metric(ans.output, want))})
        if "fewshot" in sc.extra.get("learners", ()):  # the examples reach the prompt as data
            out.setdefault("prompt_messages", len(runtime.prompt(x)[0]))
    if report.committed:
        loop._runtime = None
        for x, _ in sc.serve[:2]:
            ans, _ = loop.answer(x)
            out["served"].append({"output": ans.output, "served_by": ans.served_by})
    return out


# -- judging a rendering -------------------------------------------------------------------------------


def _shape(source: str) -> str:
    """The module's statements with every constant blanked (what the program *does*, not its data)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant):
            node.value = "<c>"
    return ast.dump(tree, annotate_fields=False)


def _docstrings(tree: ast.AST) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            value = first.value if isinstance(first, ast.Expr) else None
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                out.append(value.value)
    return out


def twin(value: Any, marker: str, _n: list[int] | None = None) -> Any:
    """`value` with every string that holds the marker replaced by plain words (distinct, keys too):
    the same program without the hostile text. Rendered, it must have the same statements."""
    n = [0] if _n is None else _n
    if isinstance(value, str):
        if marker not in value:
            return value
        n[0] += 1
        return f"{NEUTRAL} {n[0]}"
    if isinstance(value, list):
        return [twin(v, marker, n) for v in value]
    if isinstance(value, dict):
        return {twin(k, marker, n): twin(v, marker, n) for k, v in value.items()}
    return value


def judge_source(code: str | None, marker: str, tree: dict[str, Any] | None) -> tuple[list[str], bool]:
    """Injections found in a rendering (and whether the marker reached it at all)."""
    if not code:
        return [], False
    found: list[str] = []
    try:
        parsed = ast.parse(code)
    except SyntaxError as e:
        return [f"code.py does not parse: {e.msg} at line {e.lineno}"], marker in code
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if marker in tok.string and tok.type != tokenize.STRING:
                found.append(f"the payload is in a {tokenize.tok_name[tok.type]} token at line {tok.start[0]}")
    except (tokenize.TokenError, IndentationError) as e:
        found.append(f"code.py does not tokenize: {e}")
    if any(marker in d for d in _docstrings(parsed)):
        found.append("the payload is in a docstring")
    if tree is not None:
        try:
            clean = render(twin(tree, marker))
            if _shape(clean) != _shape(code):
                found.append("code.py has other statements than its clean twin's rendering")
        except Exception as e:  # noqa: BLE001 - a twin that does not render is a finding of its own
            found.append(f"the clean twin does not render: {type(e).__name__}: {e}")
    return found, marker in code


def compare_answers(tree: dict[str, Any], code: str, serve: list[tuple[Any, Any]], metric: str) -> list[str]:
    """The interpreter against the right answers, and the rendering (run in the sandbox) against the
    interpreter, on the served inputs."""
    from crystallise.sandbox import Sandbox

    right = score_numeric if metric == "numeric" else score_exact
    found = []
    program = load(tree, sandbox_runner)
    box = None
    try:
        box = Sandbox(code, timeout_s=3.0)
    except Exception as e:  # noqa: BLE001
        found.append(f"the rendering does not load in the sandbox: {type(e).__name__}: {str(e)[:160]}")
    try:
        for x, want in serve:
            mine = program.solve(x)
            if mine is not None and not right(mine, want):
                found.append(f"the interpreter answers {mine!r} where the answer is {want!r}")
            if box is not None:
                try:
                    shown = box.call(x)
                except Exception as e:  # noqa: BLE001
                    shown = f"{type(e).__name__}"
                if shown != mine:
                    found.append(f"the rendering answers {shown!r}, the interpreter {mine!r}")
    finally:
        if box is not None:
            box.close()
    return found


def render_tree(tree: dict[str, Any]) -> str:
    return render(tree)
