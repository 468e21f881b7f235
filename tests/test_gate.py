"""The gate: statistics, eval suites, run_suite and decide (with hypothesis properties)."""

from __future__ import annotations

import dataclasses
import json
from math import comb
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crystallise.errors import ValidationError
from crystallise.gate import (
    Case,
    CaseResult,
    EvalSuite,
    GatePolicy,
    decide,
    mcnemar_exact,
    paired_bootstrap,
    run_suite,
)
from crystallise.types import Verdict


def results(passes: list[bool], costs: list[float] | None = None, prefix: str = "c") -> list[CaseResult]:
    costs = costs if costs is not None else [0.0] * len(passes)
    return [CaseResult(f"{prefix}{i}", p, None, cost=c) for i, (p, c) in enumerate(zip(passes, costs))]


# ------------------------------------------------------------------ stats


def binom_tail(wins: int, losses: int) -> float:
    n = wins + losses
    return sum(comb(n, k) for k in range(wins, n + 1)) / 2**n


@pytest.mark.parametrize(
    ("wins", "losses", "expected"),
    [(5, 0, 1 / 32), (1, 0, 0.5), (0, 3, 1.0), (3, 1, 5 / 16), (12, 0, 1 / 4096), (6, 2, 37 / 256)],
)
def test_mcnemar_hand_computed(wins: int, losses: int, expected: float) -> None:
    assert mcnemar_exact(wins, losses) == pytest.approx(expected, rel=1e-12)


@given(st.integers(0, 40), st.integers(0, 40))
@settings(max_examples=40, deadline=None)
def test_mcnemar_matches_binomial_tail(wins: int, losses: int) -> None:
    expected = 1.0 if wins + losses == 0 else binom_tail(wins, losses)
    assert mcnemar_exact(wins, losses) == pytest.approx(expected, rel=1e-9)


def test_mcnemar_no_discordant_pairs_and_bad_input() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    for bad in [(-1, 0), (1.5, 0), (True, 0), ("3", 1)]:
        with pytest.raises(ValidationError, match="integer >= 0"):
            mcnemar_exact(*bad)  # type: ignore[arg-type]


def test_bootstrap_deterministic_and_signed() -> None:
    old = [0, 1, 0, 1, 0, 0, 1, 0, 0, 1] * 3
    new = [1, 1, 1, 1, 0, 1, 1, 0, 1, 1] * 3
    a = paired_bootstrap(old, new, seed=7)
    assert a == paired_bootstrap(old, new, seed=7)
    assert set(a) == {"mean_diff", "ci_low", "ci_high", "p_value"}
    assert a["mean_diff"] == pytest.approx(0.4)
    assert 0 < a["ci_low"] <= a["mean_diff"] <= a["ci_high"]
    assert a["p_value"] < 0.01
    worse = paired_bootstrap(new, old, seed=7)
    assert worse["mean_diff"] == pytest.approx(-0.4)
    assert worse["ci_high"] < 0 and worse["p_value"] > 0.99
    same = paired_bootstrap(old, old)
    assert same == {"mean_diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0}


def test_bootstrap_bad_input() -> None:
    with pytest.raises(ValidationError, match="same length"):
        paired_bootstrap([1, 0], [1])
    with pytest.raises(ValidationError, match="at least one"):
        paired_bootstrap([], [])
    with pytest.raises(ValidationError, match="finite"):
        paired_bootstrap([float("nan")], [1.0])
    with pytest.raises(ValidationError, match="n_resamples"):
        paired_bootstrap([1], [1], n_resamples=0)


def test_bootstrap_large_suite_is_chunked() -> None:
    r = paired_bootstrap([0.0] * 5000, [1.0] * 2500 + [0.0] * 2500, n_resamples=1000)
    assert r["mean_diff"] == pytest.approx(0.5) and r["p_value"] == 0.0


# ------------------------------------------------------------------ decide


def test_accept_on_clear_improvement() -> None:
    old = results([False] * 12 + [True] * 28)
    new = results([True] * 40)
    v = decide(old, new)
    assert isinstance(v, Verdict)
    assert v.decision == "accept"
    assert (v.n, v.old_passed, v.new_passed, v.wins, v.losses) == (40, 28, 40, 12, 0)
    assert v.statistic == "mcnemar_exact" and v.p_value == pytest.approx(1 / 4096)
    assert v.reason == "accept: 12 wins / 0 losses of 40 cases, McNemar exact p=0.00024"
    assert v.details["win_ids"] == [f"c{i}" for i in range(12)] and v.details["loss_ids"] == []
    json.dumps(v.to_dict())  # JSON-able for the commit trailer / ledger


def test_reject_on_single_regression_by_default() -> None:
    old = results([False] * 12 + [True] * 28)
    new = results([True] * 39 + [False])
    v = decide(old, new)
    assert v.decision == "reject"
    assert (v.wins, v.losses) == (12, 1)
    assert v.reason.startswith("reject: no-regression rule: 1 case that passed now fails (2.5% > allowed 0.0%)")
    assert v.details["loss_ids"] == ["c39"]


def test_accept_with_regression_tolerance() -> None:
    old = results([False] * 12 + [True] * 28)
    new = results([True] * 39 + [False])
    v = decide(old, new, GatePolicy(max_regression_rate=0.05))
    assert v.decision == "accept"
    assert v.p_value == pytest.approx(binom_tail(12, 1))
    assert v.reason == "accept: 12 wins / 1 loss of 40 cases, McNemar exact p=0.0017"


def test_equal_and_cheaper() -> None:
    passes = [True] * 30 + [False] * 10
    v = decide(results(passes, [2.0] * 40), results(passes, [0.5] * 40))
    assert v.decision == "accept"
    assert (v.old_cost, v.new_cost) == (2.0, 0.5)
    assert v.reason == "accept: equal and cheaper: same 30/40 cases pass, mean cost 2 -> 0.5"
    off = decide(results(passes, [2.0] * 40), results(passes, [0.5] * 40), GatePolicy(prefer_cheaper=False))
    assert off.decision == "reject" and "prefer_cheaper is off" in off.reason
    dearer = decide(results(passes, [1.0] * 40), results(passes, [1.0] * 40))
    assert dearer.decision == "reject" and "not cheaper" in dearer.reason


def test_not_significant_reject() -> None:
    old = results([False] * 3 + [True] * 37)
    new = results([True] * 40)
    v = decide(old, new)
    assert v.decision == "reject"
    assert v.p_value == pytest.approx(1 / 8)
    assert v.reason == "reject: not better: 3 wins / 0 losses of 40 cases, McNemar exact p=0.12 > alpha 0.05"


def test_no_case_worse_and_cheaper_accepts_without_significance() -> None:
    # crystallised code that passes a superset of what the LLM passed, at no model cost
    old = results([False] * 3 + [True] * 22, [1.0] * 25)
    new = results([True] * 25, [0.0] * 25)
    v = decide(old, new)
    assert v.decision == "accept" and v.p_value == pytest.approx(1 / 8)
    assert v.reason == "accept: no case worse and cheaper: 3 wins / 0 losses of 25 cases, McNemar exact p=0.12, " \
                       "mean cost 1 -> 0"
    assert decide(old, results([True] * 24 + [False], [0.0] * 25)).decision == "reject"  # one loss: no
    assert decide(old, new, GatePolicy(prefer_cheaper=False)).decision == "reject"
    assert decide(old, new, GatePolicy(dominance_min_cases=0)).decision == "reject"
    few = decide(results([False, True], [1.0] * 2), results([True, True], [0.0] * 2), GatePolicy(min_cases=1))
    assert few.decision == "reject" and "not better" in few.reason  # two cases are too thin for it


def test_min_cases_default_is_where_the_exact_test_can_reach_alpha() -> None:
    # 4 wins of 4 cases: the best the exact test can do is p = 1/16 > 0.05 -- the default asks a person
    v = decide(results([False] * 4), results([True] * 4))
    assert GatePolicy().min_cases == 5 and v.decision == "needs_review" and "at least 5" in v.reason
    assert decide(results([False] * 5), results([True] * 5)).decision == "accept"  # p = 1/32
    assert GatePolicy(alpha=0.01).min_cases == 7 and GatePolicy(min_cases=1).min_cases == 1


def test_min_cases_needs_review() -> None:
    v = decide(results([False] * 6), results([True] * 6), GatePolicy(min_cases=10))
    assert v.decision == "needs_review"
    assert "only 6 paired cases, the policy needs at least 10" in v.reason
    assert v.wins == 6  # numbers are still filled in


def test_mismatched_ids_error() -> None:
    with pytest.raises(ValidationError, match=r"only in old: \['c2'\].*only in new: \['x2'\]"):
        decide(results([True] * 3), results([True] * 2) + [CaseResult("x2", True, None)])
    with pytest.raises(ValidationError, match="duplicate case id 'c0'"):
        decide(results([True]) * 2, results([True]) * 2)


def test_pairing_ignores_order() -> None:
    old = results([False] * 6 + [True] * 4)
    new = list(reversed(results([True] * 10)))
    assert decide(old, new).decision == "accept"


def test_bootstrap_policy() -> None:
    old = results([False] * 10 + [True] * 30)
    new = results([True] * 40)
    v = decide(old, new, GatePolicy(test="bootstrap"))
    assert v.decision == "accept" and v.statistic == "paired_bootstrap"
    assert v.reason.startswith("accept: 10 wins / 0 losses of 40 cases, paired bootstrap p=")
    assert v.details["bootstrap"]["mean_diff"] == pytest.approx(0.25)
    assert v == decide(old, new, GatePolicy(test="bootstrap"))  # deterministic


@pytest.mark.parametrize(
    "kwargs",
    [{"alpha": 0}, {"alpha": 1.0}, {"max_regression_rate": -0.1}, {"min_cases": -1}, {"test": "ttest"}],
)
def test_bad_policy(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="GatePolicy"):
        GatePolicy(**kwargs)


pair_lists = st.lists(
    st.tuples(st.booleans(), st.booleans(), st.sampled_from([0.0, 0.5, 1.0, 3.0]), st.sampled_from([0.0, 0.5, 1.0])),
    min_size=0,
    max_size=60,
)
policies = st.builds(
    GatePolicy,
    alpha=st.sampled_from([0.01, 0.05, 0.2, 0.5, 0.99]),
    max_regression_rate=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    min_cases=st.integers(0, 5),
    test=st.sampled_from(["mcnemar", "bootstrap"]),
    prefer_cheaper=st.booleans(),
    bootstrap_resamples=st.just(300),
)


@given(pair_lists, policies)
@settings(max_examples=150, deadline=None)
def test_swapping_never_accepts_both_ways(rows: list[tuple[bool, bool, float, float]], policy: GatePolicy) -> None:
    old = [CaseResult(f"c{i}", a, None, cost=ca) for i, (a, _, ca, _) in enumerate(rows)]
    new = [CaseResult(f"c{i}", b, None, cost=cb) for i, (_, b, _, cb) in enumerate(rows)]
    forward, backward = decide(old, new, policy), decide(new, old, policy)
    assert not (forward.decision == "accept" and backward.decision == "accept")
    assert (forward.wins, forward.losses) == (backward.losses, backward.wins)


@given(st.lists(st.booleans(), max_size=50), st.floats(0, 10), st.floats(0, 10), policies)
@settings(max_examples=100, deadline=None)
def test_identical_results_accept_only_if_cheaper(
    passes: list[bool], old_cost: float, new_cost: float, policy: GatePolicy
) -> None:
    v = decide(results(passes, [old_cost] * len(passes)), results(passes, [new_cost] * len(passes)), policy)
    if passes:
        assert (v.old_cost, v.new_cost) == (pytest.approx(old_cost), pytest.approx(new_cost))
    cheaper = v.new_cost < v.old_cost
    assert (v.decision == "accept") == (len(passes) >= policy.min_cases and policy.prefer_cheaper and cheaper)
    assert v.wins == v.losses == 0


# ------------------------------------------------------------------ suites

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
cases = st.builds(
    Case,
    id=st.text(min_size=1, max_size=12),
    input=json_values,
    expected=json_values,
    verifier=st.sampled_from(
        [{"kind": "exact"}, {"kind": "numeric", "abs_tol": 0.5}, {"kind": "regex", "pattern": "a+"}]
    ),
    source_trace=st.none() | st.text(max_size=8),
    tags=st.lists(st.text(max_size=5), max_size=3),
    created_by=st.sampled_from(["human", "crystalliser"]),
)


@given(st.lists(cases, max_size=6, unique_by=lambda c: c.id))
@settings(max_examples=100, deadline=None)
def test_suite_jsonl_round_trip(items: list[Case]) -> None:
    suite = EvalSuite("s", items)
    text = suite.to_jsonl()
    assert text.count("\n") == len(items)
    back = EvalSuite.from_jsonl("s", text)
    assert back == suite
    assert back.to_jsonl() == text  # stable: a second write is byte-identical


def test_jsonl_key_order_is_stable() -> None:
    a = Case("c1", {"b": 1, "a": {"y": 2, "x": 1}}, "ok")
    b = Case("c1", {"a": {"x": 1, "y": 2}, "b": 1}, "ok")
    assert a.to_json() == b.to_json()
    assert a.to_json().startswith('{"id": "c1", "input": {"a": {"x": 1, "y": 2}, "b": 1}, "expected": "ok"')
    assert Case("u", "\u2028 é", "x").to_json().count("\n") == 0
    text = EvalSuite("s", [Case("u", "\u2028 é", "x")]).to_jsonl()
    assert EvalSuite.from_jsonl("s", text).cases[0].input == "\u2028 é"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"id": "a", "input": 1, "expected": 1}\n{not json}\n', "line 2: not valid JSON"),
        ('\n[1, 2]\n', "line 2: a case must be a JSON object"),
        ('{"id": "a", "input": 1}', "line 1: case is missing expected"),
        ('{"id": "a", "input": 1, "expected": 1, "grader": "x"}', r"line 1: unknown case key\(s\) \['grader'\]"),
        ('{"id": "", "input": 1, "expected": 1}', "line 1: a case id must be a non-empty string"),
        ('{"id": "a", "input": 1, "expected": 1, "verifier": {"kind": "fuzzy"}}', "line 1: case 'a': unknown verifier"),
        (
            '{"id": "a", "input": 1, "expected": 1}\n\n{"id": "a", "input": 2, "expected": 2}',
            "line 3: duplicate case id 'a' .first on line 1",
        ),
    ],
)
def test_from_jsonl_errors_name_the_line(text: str, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        EvalSuite.from_jsonl("math", text)


def test_non_json_case_rejected() -> None:
    with pytest.raises(ValidationError, match="not JSON-able"):
        Case("c", float("nan"), 1).to_json()


def test_add_returns_new_suite_and_protects_existing() -> None:
    base = EvalSuite("math", [Case("c1", "2+2", "4", verifier={"kind": "numeric"})])
    grown = base.add([Case("c2", "3+3", "6")])
    assert base.ids == ["c1"] and grown.ids == ["c1", "c2"]  # never mutated
    assert grown.add([Case("c1", "2+2", "4", verifier={"kind": "numeric"})]) == grown  # identical: no-op
    for changed in (
        Case("c1", "2+2", "5", verifier={"kind": "numeric"}),  # different expected
        Case("c1", "2+2", "4"),  # grader changed to exact
        Case("c1", "2+2", "4", verifier={"kind": "numeric", "abs_tol": 1}),  # grader loosened
    ):
        with pytest.raises(ValidationError, match="already exists with different content"):
            grown.add([changed])
    with pytest.raises(ValidationError, match="already exists"):
        base.add([Case("c9", 1, 1), Case("c9", 1, 2)])
    with pytest.raises(dataclasses.FrozenInstanceError):  # frozen: no in-place edits
        base.cases[0].expected = "5"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="duplicate case id"):
        EvalSuite("x", [Case("a", 1, 1), Case("a", 1, 1)])


# ------------------------------------------------------------------ run_suite


def test_run_suite() -> None:
    suite = EvalSuite(
        "math",
        [
            Case("ok", [2, 2], "4", verifier={"kind": "numeric"}),
            Case("wrong", [2, 3], "6", verifier={"kind": "numeric"}),
            Case("boom", None, "0"),
            Case("costly", [1, 1], "2"),
        ],
    )

    def fn(xs: Any) -> Any:
        if xs is None:
            raise ZeroDivisionError("division by zero")
        total = str(sum(xs))
        return (total, 3, "code") if xs == [1, 1] else (total, 1.5)

    seen: list[tuple[int, int]] = []
    out = run_suite(suite, fn, progress=lambda done, total: seen.append((done, total)))
    assert [r.case_id for r in out] == ["ok", "wrong", "boom", "costly"]
    assert [r.passed for r in out] == [True, False, False, True]
    assert out[0].output == "4" and out[0].cost == 1.5 and out[0].served_by is None
    assert out[2].error == "ZeroDivisionError: division by zero" and out[2].output is None
    assert out[3].cost == 3.0 and out[3].served_by == "code"
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_run_suite_plain_outputs_have_zero_cost() -> None:
    suite = EvalSuite("s", [Case("a", "x", ["x", "y"]), Case("b", "x", "('x', 'y')")])
    out = run_suite(suite, lambda x: (x, "y"))
    # ("x", "y"): second element is not a number, so the tuple is the output itself
    assert out[0].cost == 0.0 and out[0].output == ("x", "y")
    assert out[1].passed
