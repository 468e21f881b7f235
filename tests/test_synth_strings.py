"""The strings strategy on tiny hand-made cases: each operator family, held-out generalisation,
abstention, the sandbox, the time budget."""

from __future__ import annotations

import ast
import time
from typing import Any

import pytest

from crystallise.sandbox import DEFAULT_ALLOWED, Sandbox
from crystallise.harness.synth import strings_runtime as rt
from crystallise.harness.synth.strings import StringStrategy


def synth(examples: list[tuple[list[Any], Any]], budget_s: float = 3.0) -> str:
    src = StringStrategy().synthesise(examples, budget_s=budget_s)
    assert src is not None, f"no program for {examples}"
    return src


def run(source: str, *args: Any) -> Any:
    ns: dict[str, Any] = {}
    exec(compile(source, "<program>", "exec"), ns)  # our own generated code; the sandbox is tested below
    return ns["solve"](*args)


# -- one family at a time, each checked on an input it was not shown ---------------------------------


def test_first_name_by_regex_token():
    src = synth([(["John Smith"], "John"), (["Ann Lee"], "Ann"), (["Bob Jones"], "Bob")])
    assert run(src, "Mary Poppins") == "Mary"


def test_initials_by_concatenation():
    src = synth([(["John Smith"], "J.S."), (["Ann Lee"], "A.L."), (["Bob Jones"], "B.J.")])
    assert run(src, "Ada Lovelace") == "A.L."


def test_date_reformatting():
    src = synth([(["2023-01-15"], "15/01/2023"), (["1999-12-31"], "31/12/1999"), (["2010-07-04"], "04/07/2010")])
    assert run(src, "2000-02-29") == "29/02/2000"


def test_dates_with_month_names():
    src = synth([(["Jan 5, 2020"], "2020-01-05"), (["Mar 17, 1999"], "1999-03-17"), (["Dec 25, 2001"], "2001-12-25")])
    assert run(src, "Jul 4, 1776") == "1776-07-04"


def test_phone_digits():
    src = synth([(["(555) 123-4567"], "5551234567"), (["801-456-8765"], "8014568765"),
                 (["978.654.0299"], "9786540299")])
    assert run(src, "<212> 555 0100") == "2125550100"


def test_count_words_gives_an_int():
    src = synth([(["humpty dumpty"], 2), (["sat on a wall"], 4), (["all the king's men"], 4)])
    got = run(src, "one two three")
    assert got == 3 and type(got) is int


def test_contains_gives_a_bool():
    src = synth([(["apple pie", "apple"], True), (["banana split", "apple"], False),
                 (["pineapple", "pine"], True), (["grape", "fruit"], False)])
    assert run(src, "lemon tart", "tart") is True
    assert run(src, "lemon tart", "cake") is False


def test_case_change_and_substring_by_int_argument():
    assert run(synth([(["hello world"], "Hello World"), (["big red bus"], "Big Red Bus")]), "a cat") == "A Cat"
    src = synth([(["spreadsheet", 1], "s"), (["spreadsheet", 2], "p"), (["table", 3], "b")])
    assert run(src, "python", 2) == "y"


def test_int_and_str_conversion_and_arithmetic():
    assert run(synth([(["101"], 101), (["7"], 7), (["2048"], 2048)]), "55") == 55
    assert run(synth([([7], "7"), ([42], "42"), ([1000], "1000")]), 5) == "5"
    assert run(synth([(["ab", "cde"], 5), (["", "x"], 1), (["four", "five"], 8)]), "abc", "d") == 4


def test_list_operators():
    assert run(synth([([[1, 2, 3]], [3, 2, 1]), ([[5, 4]], [4, 5]), ([[7, 0, 9]], [9, 0, 7])]), [1, 2]) == [2, 1]
    assert run(synth([([[3, 1, 2]], [1, 2, 3]), ([[5, 4, 9]], [4, 5, 9]), ([[8, 0]], [0, 8])]), [2, 1]) == [1, 2]
    index = synth([([[3, 1, 2]], [1]), ([[5, 4, 9, 0]], [4]), ([[8, 6]], [6])])
    assert run(index, [7, 9, 1]) == [9]
    plus = synth([([[1, 2]], [3, 4]), ([[5]], [7]), ([[0, 9, 4]], [2, 11, 6])])
    assert run(plus, [10]) == [12]


def test_conditional_when_one_program_does_not_fit_all():
    src = synth([(["TL-18273982| 10MM"], "TL-18273982"), (["TL-288762| 76DK"], "TL-288762"),
                 (["CT-576"], "CT-576"), (["N/A"], "N/A")], budget_s=4)
    assert run(src, "AB-1| 9X") == "AB-1"
    assert run(src, "XY-77") == "XY-77"


# -- abstention and contracts -----------------------------------------------------------------------


def test_abstains_on_inputs_of_another_shape():
    src = synth([(["John Smith"], "Smith"), (["Ann Lee"], "Lee"), (["Bob Jones"], "Jones")])
    assert run(src, "Mary Poppins") == "Poppins"
    assert run(src, "1234") is None  # no word: abstain, do not raise
    assert run(src, 42) is None  # wrong type
    assert run(src, "a", "b") is None  # wrong arity


def test_no_program_for_contradictions_or_unsupported_values():
    s = StringStrategy()
    assert s.synthesise([(["a"], "x"), (["a"], "y")], budget_s=1) is None
    assert s.synthesise([([1.5], "x")], budget_s=1) is None
    assert s.synthesise([([{"a": 1}], "x")], budget_s=1) is None
    assert s.synthesise([], budget_s=1) is None


def test_runtime_helpers_are_total():
    assert rt.tok("John", rt.WORD, 1) is None
    assert rt.tok(None, rt.WORD, 0) is None
    assert rt.span("abc", 2, 1) is None and rt.span("abc", -2, 3) == "bc"
    assert rt.field("a,b", ";", 0) is None
    assert rt.cat("Dr. ", None) is None
    assert rt.only([1], 3) == [] and rt.elem([1], 3) is None


def test_generated_source_runs_in_the_sandbox_and_imports_only_allowed_modules():
    src = synth([(["Nancy FreeHafer"], "Dr. Nancy"), (["Andrew Cencici"], "Dr. Andrew"), (["Jan Kotas"], "Dr. Jan")])
    imported = {a.name.split(".")[0] for node in ast.walk(ast.parse(src)) if isinstance(node, ast.Import)
                for a in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(ast.parse(src))
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= DEFAULT_ALLOWED
    with Sandbox(src, timeout_s=2.0) as box:
        assert box.call("Grace Hopper") == "Dr. Grace"
        assert box.call("1234") is None


def test_time_budget_is_respected():
    noise = [(["qz"], "Lorem"), (["xk"], "17 ipsum"), (["pw"], "dolor sit"), (["mm"], "amet!")]
    t0 = time.monotonic()
    assert StringStrategy().synthesise(noise, budget_s=0.5) is None
    assert time.monotonic() - t0 < 2.0


@pytest.mark.parametrize("n_examples", [1, 2])
def test_few_examples_prefer_extraction_over_constants(n_examples):
    shown = [(["Sarah Jane Jones"], "Jones"), (["Bob Smithfield"], "Smithfield")][:n_examples]
    assert run(synth(shown), "Ada Mae Lovelace") == "Lovelace"  # a word of the input, not the text "Jones"
