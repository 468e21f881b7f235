"""The rendering of a program, run in the sandbox, gives the interpreter's answers.

code.py is never what the host runs, but it is what people read: it must mean exactly what
the tree means. Every strategy family, with hostile data in it, through the real sandbox.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crystallise.gate import score_exact, score_numeric
from crystallise.harness.programs import FORMAT, load, render
from crystallise.sandbox import Sandbox
from crystallise.harness.synth.arith import ArithStrategy
from crystallise.harness.synth.base import Case, Problem
from crystallise.harness.synth.lookup import LookupStrategy
from crystallise.harness.synth.strategies import StringsPart
from tests.test_programs import HOSTILE

piece = st.sampled_from(HOSTILE) | st.text(max_size=5)
text = st.lists(piece, max_size=6).map("".join)
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def tree_of(*parts: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {"format": FORMAT, "parts": [{"strategy": s, "units": None, "hybrid": False, "body": b}
                                        for s, b in parts]}


def same_in_sandbox(tree: dict[str, Any], probes: list[Any]) -> None:
    program = load(tree)
    with Sandbox(render(tree), timeout_s=5.0) as box:
        for value in probes:
            assert box.call(value) == program.solve(value), value
            assert box.call_fn("unit", value) == program.unit(value), value


@SETTINGS
@given(st.dictionaries(text, text, min_size=1, max_size=4))
def test_lookup_rendering_equals_interpreter(table: dict[str, str]) -> None:
    body = LookupStrategy().body(list(table.items()))
    same_in_sandbox(tree_of(("lookup", body)), [*table, "absent"])


@SETTINGS
@given(head=text)
def test_arith_rendering_equals_interpreter(head: str) -> None:
    head = "".join(ch for ch in head if ch not in ".?!\n\r\x85\u2028\u2029" and not ch.isdigit())
    sentence = f"Use formula {head} Ratio to answer."
    cases = [(f"{sentence} Question: ${1000 * i + 500:,} and ${250 * (i % 4 + 1):,}.",
              f"{round((1000 * i + 500) / (250 * (i % 4 + 1)), 2)}") for i in range(1, 10)]
    found = ArithStrategy(budget_s=1.0).synthesise(cases, metric=score_numeric)
    assert found is not None
    _, rules, mode = found
    probes = [x for x, _ in cases] + [f"{sentence} Question: $900 and $300.", "no template", f"{sentence} $1"]
    same_in_sandbox(tree_of(("arith", ArithStrategy.body(rules, mode))), probes)


@SETTINGS
@given(tail=text)
def test_strings_rendering_equals_interpreter(tail: str) -> None:
    names = [("John Smith", "J.S."), ("Ann Lee", "A.L."), ("Bob Jones", "B.J."), ("Eve Stone", "E.S.")]
    head = "Initials of the name."
    cases = [Case(f"{head} <{n}> {tail}", y, f"t{i}") for i, (n, y) in enumerate(names)]
    cand = StringsPart(min_cases=3).propose(Problem("t", cases, score_exact, budget_s=2.0))
    if cand is None:
        return
    probes = [c.input for c in cases] + [f"{head} <Mia Wong> {tail}", f"{head} nothing", 42, {"a": 1}]
    same_in_sandbox(tree_of(("strings", cand.program)), probes)


def test_composed_parts_rendering_equals_interpreter() -> None:
    lookup = LookupStrategy().body([("x", "1"), ("\"\"\"", "'''")])
    found = ArithStrategy(budget_s=1.0).synthesise(
        [(f"Ratio. ${a} and ${b}", str(round(a / b, 2))) for a, b in [(10, 5), (9, 3), (30, 10), (8, 2), (7, 7)]],
        metric=score_numeric)
    assert found is not None
    tree = tree_of(("lookup", lookup), ("arith", ArithStrategy.body(found[1], found[2])))
    same_in_sandbox(tree, ["x", "\"\"\"", "Ratio. $12 and $4", "Ratio. $1", None, [1, 2]])


@SETTINGS
@given(prefix=text, suffix=text)
def test_hybrid_rendering_equals_interpreter(prefix: str, suffix: str) -> None:
    """The hybrid part: template, snapping and formatting in the tree; `compute` LLM-written (sandbox)."""
    from crystallise.harness.programs import sandbox_runner
    from crystallise.harness.synth.hybrid import body

    head = "Ratio of two amounts. " + "".join(c for c in prefix if c not in ".?!\n\r\x85\u2028\u2029")
    unit = {"prefix": head, "suffix": suffix, "fields": ["assets", "debt"], "places": 2, "rounding": "half_up",
            "code": "def compute(assets, debt):\n    return assets / debt\n"}
    tree = {"format": FORMAT, "parts": [{"strategy": "hybrid", "units": None, "hybrid": True,
                                         "body": body("sentence", {"Ratio of two amounts.": unit})}]}
    program = load(tree, sandbox_runner)
    value = f"{head} A firm has $1.2 million and $300,000.{suffix}"
    fields = {"assets": 1.2, "debt": 300000}
    with Sandbox(render(tree), timeout_s=5.0) as box:
        assert box.call(value, fields) == program.solve(value, fields)
        assert box.call_fn("hybrid_unit", value) == program.hybrid_unit(value)
        assert box.call(value, {"assets": "x"}) == program.solve(value, {"assets": "x"})


def test_llm_code_that_would_escape_its_nesting_is_shown_as_text() -> None:
    from crystallise.harness.programs.rendering import render_body

    sneaky = 'def solve(x):\n    return x\nsolve = solve\n"""\n'  # an unbalanced string: does not parse
    body = {"kind": "grouped", "mode": "none", "groups": [{
        "unit": "", "prefix": "", "suffix": "", "arg_keys": None,
        "codec": {"kind": "any", "true": "True", "false": "False"}, "fn": {"kind": "source", "source": sneaky}}]}
    import ast

    src = render_body(body)
    names = [n.targets[0].id if isinstance(n, ast.Assign) else getattr(n, "name", type(n).__name__)
             for n in ast.parse(src).body]
    assert "_group0_SOURCE" in names and "solve" in names  # shown as a string constant, the module intact


def test_without_os_isolation_llm_code_is_refused_and_dsl_programs_keep_working(monkeypatch) -> None:
    from crystallise.backends.scripted import ScriptedBackend
    from crystallise.harness import programs
    from crystallise.harness.learn import CrystalliseLearner

    monkeypatch.setattr(programs, "_PROBLEM", ["bubblewrap is not installed: apt-get install bubblewrap"])
    monkeypatch.setattr("crystallise.harness.learn.isolation_problem", programs.isolation_problem)
    coder = ScriptedBackend(lambda r: "```python\ndef solve(x):\n    return x\n```")
    learner = CrystalliseLearner(score_numeric, strategies=("lookup", "arith", "coder", "hybrid"), coder=coder,
                                 extractor=coder)
    assert [s.name for s in learner.strategies] == ["lookup", "arith"]
    assert "apt-get install bubblewrap" in learner.refused["coder"] and "hybrid" in learner.refused
    cases = [(f"Ratio. ${a} and ${b}", str(round(a / b, 2))) for a, b in [(10, 5), (9, 3), (30, 10), (8, 2), (7, 7)]]
    found = ArithStrategy(budget_s=1.0).synthesise(cases, metric=score_numeric)
    assert found is not None  # the DSL strategies need no sandbox at all
    assert coder.requests == []  # no LLM call for code nothing may run


def test_named_symbols_and_frequency_words_rendering_equals_interpreter() -> None:
    """The rendering carries named_numbers with its symbol and frequency-word tables: a rule over a
    defined symbol and "compounded quarterly" answers the same in the sandbox as in the host."""
    import random

    from tests.test_synth_formula import _grown_case

    r = random.Random(3)
    cases = [_grown_case(r) for _ in range(12)]
    found = ArithStrategy(budget_s=1.0).synthesise(cases, metric=score_numeric)
    assert found is not None and any(rule.names for rule in found[1])
    _, rules, mode = found
    probes = [x for x, _ in cases] + [_grown_case(r)[0] for _ in range(5)]
    probes += [cases[0][0].replace("quarterly", "every five months"), cases[1][0] + " (R_x) 5% daily"]
    same_in_sandbox(tree_of(("arith", ArithStrategy.body(rules, mode))), probes)
