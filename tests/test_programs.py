"""Learned programs are data: trees the interpreter runs, renderings that only ever hold literals.

For every strategy family the property tests build programs whose data (template text, table
entries, constants, units) is arbitrary unicode — quotes, triple quotes, backslashes, CR/LF,
U+2028, U+0085, NUL, braces — and check that
  * the rendering parses, and its AST has exactly the statements the tree calls for;
  * no character of that data reaches a comment or a docstring: it appears only inside
    string constants of the AST;
  * the interpreter never compiles anything (an audit hook watches `compile`/`exec`);
  * the rendering, run on its own (the sandbox equivalence is in test_programs_sandbox.py),
    gives the interpreter's answers.
"""

from __future__ import annotations

import ast
import io
import json
import sys
import tokenize
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crystallise.gate import score_exact, score_numeric
from crystallise.harness.programs import FORMAT, ProgramError, load, render
from crystallise.harness.programs.rendering import render_body
from crystallise.harness.synth.arith import ArithStrategy, expr_tree
from crystallise.harness.synth.base import Case, Problem
from crystallise.harness.synth.lookup import LookupStrategy
from crystallise.harness.synth.numbers import extract_numbers
from crystallise.harness.synth.strategies import StringsPart

HOSTILE = ['"""', "'''", "\\", "\r", "\n", "\u2028", "\u2029", "\x85", "\x00", "{", "}", "#", "\x0c", "\t",
           "\"); import os; os.system('id') #", "\r    if d[0] == 1337: return -66666", "'''; import os #"]
text = st.lists(st.sampled_from(HOSTILE) | st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)),
                                                   max_size=6), max_size=8).map("".join)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def tree_of(strategy: str, body: dict[str, Any], hybrid: bool = False) -> dict[str, Any]:
    return {"format": FORMAT, "parts": [{"strategy": strategy, "units": None, "hybrid": hybrid, "body": body}]}


def run_rendering(source: str, value: Any) -> Any:
    """The rendering on its own (trusted here: it is what we are testing; the sandbox runs it in
    test_programs_sandbox.py)."""
    ns: dict[str, Any] = {}
    exec(compile(source, "<rendering>", "exec"), ns)  # noqa: S102 - the test's own subject
    return ns["solve"](value)


_DATA_KEYS = ("key", "unit", "prefix", "suffix")


def neutral(tree: Any) -> Any:
    """The same program with every piece of data (template text, units, table entries, string
    constants) replaced by a plain placeholder, consistently: its clean twin."""
    from crystallise.harness.synth import strings_runtime as rt

    names: dict[str, str] = {}
    tokens = {getattr(rt, n) for n in rt.TOKENS}

    def sub(v: str) -> str:
        return names.setdefault(v, f"s{len(names)}")

    def walk(node: Any, key: str = "") -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if key in ("table", "skip", "units") and isinstance(node, dict) and k not in ("kind",):
                    k = sub(k)
                if k in _DATA_KEYS and isinstance(v, str):
                    out[k] = sub(v)
                elif k == "const" and isinstance(v, str) and v not in tokens:
                    out[k] = sub(v)
                elif k == "table":
                    out[k] = {sub(tk): sub(tv) if isinstance(tv, str) else tv for tk, tv in v.items()}
                else:
                    out[k] = walk(v, k)
            return out
        if isinstance(node, list):
            return [sub(v) if key == "units" and isinstance(v, str) else walk(v) for v in node]
        return node

    return walk(tree)


def data_only_in_literals(tree: dict[str, Any]) -> None:
    """The rendering of `tree` differs from its clean twin's only inside string literals: the same
    tokens otherwise (no statement, name or operator came from data), the same comments, the same
    docstrings."""
    def shape(source: str) -> tuple[list[tuple[int, str]], list[str]]:
        toks = [(t.type, "" if t.type == tokenize.STRING else t.string)
                for t in tokenize.generate_tokens(io.StringIO(source).readline)]
        module = ast.parse(source)
        docs = [ast.get_docstring(n, clean=False) or "" for n in ast.walk(module)
                if isinstance(n, (ast.Module, ast.FunctionDef))]
        return toks, docs

    got, twin = shape(render(tree)), shape(render(neutral(tree)))
    assert got[1] == twin[1], "data reached a docstring"
    assert got[0] == twin[0], "data changed the program outside its string literals"


def top_level(source: str) -> list[str]:
    """The shape of a module: one entry per top-level statement."""
    out = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out.append(f"def {node.name}")
        elif isinstance(node, ast.Assign):
            out.append("assign " + ",".join(t.id for t in node.targets if isinstance(t, ast.Name)))
        else:
            out.append(type(node).__name__)
    return out


class NoCompile:
    """An audit hook that records every compile/exec while active (audit hooks cannot be removed:
    this one is installed once and switched on and off)."""

    events: list[tuple[str, Any]] = []
    on = False

    @classmethod
    def install(cls) -> None:
        if not getattr(sys, "_crystallise_nocompile", False):
            sys.addaudithook(cls._hook)
            sys._crystallise_nocompile = True  # type: ignore[attr-defined]

    @classmethod
    def _hook(cls, event: str, args: tuple[Any, ...]) -> None:
        if cls.on and event in ("compile", "exec"):
            cls.events.append((event, args[0] if args else None))

    def __enter__(self) -> NoCompile:
        NoCompile.install()
        NoCompile.events = []
        NoCompile.on = True
        return self

    def __exit__(self, *exc: object) -> None:
        NoCompile.on = False


# -- lookup ----------------------------------------------------------------------------------------------


@SETTINGS
@given(st.dictionaries(text, text, min_size=1, max_size=5))
def test_lookup_with_hostile_entries(table: dict[str, str]) -> None:
    cases = [(k, v) for k, v in table.items()]
    body = LookupStrategy().body(cases)
    tree = tree_of("lookup", body)
    with NoCompile():
        program = load(tree)
        answers = {k: program.solve(k) for k in table}
    assert NoCompile.events == []
    assert answers == table
    source = render(tree)
    assert top_level(source) == ["Expr", "def _part0_lookup", "assign _UNITS0", "assign _PARTS", "def _claims",
                                 "def unit", "def hybrid_unit", "def solve"]
    inner = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef))
    assert [type(n).__name__ for n in inner.body] == ["Expr", "Import", "Assign", "FunctionDef", "FunctionDef",
                                                      "Return"]
    data_only_in_literals(tree)
    for k, v in table.items():
        assert run_rendering(source, k) == v
    assert run_rendering(source, "\x00not a key\x00") is None


# -- arith -----------------------------------------------------------------------------------------------


@SETTINGS
@given(key=text.filter(lambda t: "." not in t and "?" not in t and "!" not in t and "\n" not in t))
def test_arith_with_a_hostile_template_key(key: str) -> None:
    sentence = (key.strip() + " answer.").strip()
    rule = {"key": sentence, "signature": [2, 0, 0], "expr": expr_tree("(d0 / d1)"), "places": 2,
            "rounding": "half_up"}
    skip = {k: len(v) for k, v in extract_numbers(sentence).items()}  # numbers of the template itself
    body = {"kind": "arith", "mode": "sentence", "skip": {sentence: skip}, "rules": [rule]}
    tree = tree_of("arith", body)
    question = f"{sentence} A firm has $900 and $300."
    with NoCompile():
        got = load(tree).solve(question)
    assert NoCompile.events == []
    source = render(tree)
    shape = top_level(render_body(body))
    assert shape.count("def _rule0") == 1 and not any(s.startswith("def _rule1") for s in shape)
    assert [s for s in shape if s.startswith("def ")] == ["def extract_numbers", "def named_numbers",
                                                           "def number_spans", "def fmt_number",
                                                           "def template_key", "def payload", "def encode",
                                                           "def _rule0", "def _match", "def unit", "def solve"]
    data_only_in_literals(tree)
    assert run_rendering(source, question) == got
    if sentence == key_of_sentence(question):
        assert got == "3.00"


def key_of_sentence(text: str) -> str:
    from crystallise.harness.synth.template import key_of

    return key_of(text, "sentence")


def test_arith_carriage_return_cannot_add_a_rule_line() -> None:
    """The issue's attack: a CR in the template key ended the `# key` comment of code.py."""
    evil = "Use formula X\r    if d[0] == 1337: return -66666\r to answer."
    rule = {"key": evil, "signature": [1, 0, 0], "expr": expr_tree("(d0 * 2.0)"), "places": 2,
            "rounding": "half_up"}
    tree = tree_of("arith", {"kind": "arith", "mode": "sentence", "skip": {evil: {"$": 0, "%": 0, "n": 0}},
                             "rules": [rule]})
    source = render(tree)
    assert "return -66666" not in [ln.strip() for ln in source.replace("\r", "\n").splitlines()]
    assert "-66666" not in "".join(t.string for t in tokenize.generate_tokens(io.StringIO(source).readline)
                                   if t.type in (tokenize.NUMBER, tokenize.OP, tokenize.NAME))
    assert sum(isinstance(n, ast.Return) for n in ast.walk(ast.parse(source))) == \
        sum(isinstance(n, ast.Return) for n in ast.walk(ast.parse(render(tree_of("arith", {
            "kind": "arith", "mode": "sentence", "skip": {"k.": {"$": 0, "%": 0, "n": 0}},
            "rules": [{**rule, "key": "k."}]})))))


def test_arith_learned_from_hostile_inputs_runs_without_compiling() -> None:
    head = 'Use formula """; import os #\r\u2028 Ratio to answer.'
    cases = [(f"{head} Question: A firm has ${1000 * i + 500:,} and ${250 * (i % 4 + 1):,}.",
              f"{round((1000 * i + 500) / (250 * (i % 4 + 1)), 2)}") for i in range(1, 10)]
    with NoCompile():
        found = ArithStrategy().synthesise(cases, metric=score_numeric)
        assert found is not None
        _, rules, mode = found
        program = load(tree_of("arith", ArithStrategy.body(rules, mode)))
        answers = [program.solve(x) for x, _ in cases]
    assert [e for e in NoCompile.events if "import os" in str(e[1])] == []
    assert NoCompile.events == [], NoCompile.events[:3]
    assert all(score_numeric(a, y) for a, (_, y) in zip(answers, cases))


# -- strings / template groups ----------------------------------------------------------------------------


@SETTINGS
@given(prefix=text, suffix=text)
def test_strings_groups_with_hostile_template_text(prefix: str, suffix: str) -> None:
    words = [("John Smith", "J"), ("Ann Lee", "A"), ("Bob Jones", "B"), ("Eve Stone", "E"), ("Zed Ray", "Z")]
    head = "Initial of the name. " + prefix.replace(".", "").replace("?", "").replace("!", "") + " <"
    tail = "> " + suffix
    cases = [Case(f"{head}{w}{tail}", y, f"t{i}") for i, (w, y) in enumerate(words)]
    with NoCompile():
        cand = StringsPart(min_cases=3).propose(Problem("t", cases, score_exact, budget_s=2.0))
    assert NoCompile.events == []
    if cand is None:
        return
    tree = tree_of("strings", cand.program)
    program = load(tree)
    source = render(tree)
    data_only_in_literals(tree)
    probe = f"{head}Mia Wong{tail}"
    assert run_rendering(source, probe) == program.solve(probe)
    for c in cases:
        assert run_rendering(source, c.input) == program.solve(c.input)


@SETTINGS
@given(const=text)
def test_strings_constants_are_literals(const: str) -> None:
    fn = {"kind": "strings", "arg_types": ["str"], "out_type": "str",
          "expr": {"call": "cat", "args": [{"const": const}, {"arg": 0}, {"const": const}]}}
    body = {"kind": "grouped", "mode": "none", "groups": [{
        "unit": "", "prefix": "", "suffix": "", "arg_keys": None,
        "codec": {"kind": "str", "true": "True", "false": "False"}, "fn": fn}]}
    tree = tree_of("strings", body)
    program = load(tree)
    source = render(tree)
    data_only_in_literals(tree)
    for value in ("x", "hello world", const):
        if value.strip():
            assert run_rendering(source, value) == program.solve(value)


# -- hostile trees are refused, never run ----------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    {"kind": "strings", "arg_types": ["str"], "out_type": "str", "expr": {"call": "__import__", "args": []}},
    {"kind": "strings", "arg_types": ["str"], "out_type": "str", "expr": {"call": "eval", "args": [{"arg": 0}]}},
    {"kind": "strings", "arg_types": ["str"], "out_type": "str", "expr": {"call": "isstr", "args": [{"arg": 0}]}},
    {"kind": "strings", "arg_types": ["str"], "out_type": "str", "expr": {"call": "spans", "args": [{"arg": 0}]}},
    {"kind": "strings", "arg_types": ["str"], "out_type": "str", "expr": {"arg": 3}},
    {"kind": "strings", "arg_types": ["int"], "out_type": "str",
     "expr": {"call": "fmt", "args": [{"arg": 0}, {"const": "99999999999d"}]}},
    {"kind": "strings", "arg_types": ["str"], "out_type": "str", "expr": {"const": {"a": 1}}},
    {"kind": "strings", "arg_types": ["os"], "out_type": "str", "expr": {"arg": 0}},
])
def test_hostile_strings_trees_are_refused(bad: dict[str, Any]) -> None:
    body = {"kind": "grouped", "mode": "none", "groups": [{
        "unit": "", "prefix": "", "suffix": "", "arg_keys": None,
        "codec": {"kind": "str", "true": "True", "false": "False"}, "fn": bad}]}
    with pytest.raises(ProgramError):
        load(tree_of("strings", body))


@pytest.mark.parametrize("expr", [
    {"op": "__import__", "args": []}, {"var": "__builtins__"}, {"var": "d0; import os"},
    {"const": float("nan")}, {"const": "1"}, {"op": "**", "args": [{"const": 10}]},
])
def test_hostile_arith_trees_are_refused(expr: dict[str, Any]) -> None:
    body = {"kind": "arith", "mode": "none", "skip": {"": {"$": 0, "%": 0, "n": 0}},
            "rules": [{"key": "", "signature": [1, 0, 0], "expr": expr, "places": 2, "rounding": "half_up"}]}
    with pytest.raises(ProgramError):
        load(tree_of("arith", body))


def test_deep_trees_are_refused_not_recursed() -> None:
    node: dict[str, Any] = {"var": "d0"}
    for _ in range(10_000):
        node = {"op": "neg", "args": [node]}
    body = {"kind": "arith", "mode": "none", "skip": {"": {"$": 0, "%": 0, "n": 0}},
            "rules": [{"key": "", "signature": [1, 0, 0], "expr": node, "places": 2, "rounding": "half_up"}]}
    with pytest.raises(ProgramError, match="deeper"):
        load(tree_of("arith", body))


def test_unknown_format_and_fields_are_refused() -> None:
    with pytest.raises(ProgramError):
        load({"format": "python", "parts": []})
    with pytest.raises(ProgramError):
        load({"format": FORMAT, "parts": [{"strategy": "x", "units": None, "hybrid": False,
                                           "body": {"kind": "lookup", "table": {}, "code": "import os"}}]})


def test_llm_written_parts_need_a_sandbox_and_never_run_here() -> None:
    src = "import os\ndef solve(x):\n    return os.getcwd()\n"
    body = {"kind": "grouped", "mode": "none", "groups": [{
        "unit": "", "prefix": "", "suffix": "", "arg_keys": None,
        "codec": {"kind": "any", "true": "True", "false": "False"}, "fn": {"kind": "source", "source": src}}]}
    with NoCompile():
        result = load(tree_of("coder", body)).run("x")  # no runner given: refuses, never executes
    assert result.output is None and "sandbox" in (result.error or "")
    assert NoCompile.events == []


def test_arith_powers_stay_floats() -> None:
    body = {"kind": "arith", "mode": "none", "skip": {"": {"$": 0, "%": 0, "n": 0}},
            "rules": [{"key": "", "signature": [0, 0, 1], "expr": {"op": "**", "args": [
                {"const": 10}, {"var": "n0"}]}, "places": 2, "rounding": "half_up"}]}
    program = load(tree_of("arith", body))
    assert program.solve("99999999") is None  # 10.0 ** 1e8 overflows a float: abstain, not a huge int
    assert program.solve("2") == "100.00"


def test_tree_round_trips_through_json() -> None:
    _, rules, mode = ArithStrategy().synthesise(
        [(f"Ratio. ${a} and ${b}", str(round(a / b, 2))) for a, b in [(10, 5), (9, 3), (30, 10), (8, 2), (7, 7)]],
        metric=score_numeric)
    tree = tree_of("arith", ArithStrategy.body(rules, mode))
    again = load(json.loads(json.dumps(tree)))
    assert again.solve("Ratio. $12 and $4") == "3.00"


def test_the_literal_check_catches_the_old_comment_injection(monkeypatch) -> None:
    """The check above can fail: a renderer that writes the template key into a comment, as code.py
    once did, is caught (the CR ends the comment and the rest becomes code)."""
    from crystallise.harness.programs import rendering

    real = rendering._arith

    def leaky(body: dict[str, Any]) -> str:
        return real(body).replace("def _rule0(d, p, n, D, P, N, v):\n",
                                  f"def _rule0(d, p, n, D, P, N, v):\n    # {body['rules'][0]['key']}\n")

    monkeypatch.setattr(rendering, "_arith", leaky)
    evil = "Use formula X\r    if d[0] == 1337: return -66666\r    # to answer."
    rule = {"key": evil, "signature": [1, 0, 0], "expr": expr_tree("(d0 * 2.0)"), "places": 2,
            "rounding": "half_up"}
    tree = tree_of("arith", {"kind": "arith", "mode": "sentence", "skip": {evil: {"$": 0, "%": 0, "n": 0}},
                             "rules": [rule]})
    with pytest.raises(AssertionError, match="outside its string literals"):
        data_only_in_literals(tree)
