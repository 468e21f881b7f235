"""Verifiers: every kind, its edge cases, and loud errors for bad specs."""

from __future__ import annotations

import pytest

from crystallise.errors import UserError, ValidationError
from crystallise.gate import VERIFIER_KINDS, score_exact, score_numeric, validate_spec, verify


def test_kinds_listed() -> None:
    assert VERIFIER_KINDS == ("exact", "json_schema", "numeric", "python", "regex")


# ------------------------------------------------------------------ exact


@pytest.mark.parametrize(
    ("spec", "output", "expected", "ok"),
    [
        ({"kind": "exact"}, "Paris", "Paris", True),
        ({"kind": "exact"}, "  Paris\n", "Paris", True),  # strip by default
        ({"kind": "exact", "strip": False}, " Paris", "Paris", False),
        ({"kind": "exact"}, "paris", "Paris", False),  # case-sensitive by default
        ({"kind": "exact", "casefold": True}, "PARIS ", "paris", True),
        ({"kind": "exact", "casefold": True}, "Straße", "STRASSE", True),
        ({"kind": "exact"}, 4, "4", True),  # str forms
        ({"kind": "exact"}, None, "None", True),
        ({"kind": "exact"}, {"b": 2, "a": 1}, {"a": 1, "b": 2}, True),  # structured: key order ignored
        ({"kind": "exact"}, [1, 2], [2, 1], False),
        ({"kind": "exact"}, True, 1, False),
    ],
)
def test_exact(spec: dict, output: object, expected: object, ok: bool) -> None:
    assert verify(spec, output, expected) is ok


def test_score_exact_helper() -> None:
    assert score_exact(" a ", "a")
    assert not score_exact("A", "a")
    assert score_exact("A", "a", casefold=True)


# ------------------------------------------------------------------ numeric (ACE rule)


@pytest.mark.parametrize(
    ("pred", "target", "ok"),
    [
        ("1,000.50", "1000.5", True),
        ("2.0", "2", True),
        (2, "2.0", True),
        (" 42 ", "42", True),  # surrounding whitespace
        ("1e3", "1000", True),
        ("3", "4", False),
        ("0.1", "0.10000001", False),  # exact equality, like ACE
        ("$5", "5", False),  # no currency stripping
        ("50%", "50", False),  # no percent stripping
        ("abc", "abc", True),  # non-numeric: string fallback
        ("abc", "abd", False),
        ("a,b", "ab", True),  # commas removed before the fallback too
        ("N/A", "0", False),  # one side non-numeric: string compare
        ("nan", "nan", False),  # float nan != nan, as ACE
        ("inf", "inf", True),
        (None, "None", True),
    ],
)
def test_score_numeric(pred: object, target: object, ok: bool) -> None:
    assert score_numeric(pred, target) is ok
    assert verify({"kind": "numeric"}, pred, target) is ok


def test_numeric_tolerances() -> None:
    assert verify({"kind": "numeric", "abs_tol": 0.01}, "3.141", "3.14")
    assert not verify({"kind": "numeric", "abs_tol": 0.0001}, "3.141", "3.14")
    assert verify({"kind": "numeric", "rel_tol": 0.01}, "1,005", "1000")
    assert not verify({"kind": "numeric", "rel_tol": 0.001}, "1,005", "1000")
    assert score_numeric("10.4", 10, abs_tol=0.5)
    # a tolerance never rescues a non-numeric answer
    assert not verify({"kind": "numeric", "abs_tol": 1.0}, "ten", "10")


@pytest.mark.parametrize("bad", [-0.1, "0.1", True, float("nan"), float("inf")])
def test_numeric_bad_tolerance(bad: object) -> None:
    with pytest.raises(ValidationError, match="abs_tol"):
        verify({"kind": "numeric", "abs_tol": bad}, "1", "1")


# ------------------------------------------------------------------ regex


def test_regex_is_full_match() -> None:
    spec = {"kind": "regex", "pattern": "[A-D]"}
    assert verify(spec, "B", None)
    assert not verify(spec, "B)", None)  # a partial match is not enough
    assert not verify(spec, "The answer is B", None)
    assert verify({"kind": "regex", "pattern": r".*\bB\b.*"}, "The answer is B", None)
    assert verify({"kind": "regex", "pattern": r"\d+"}, 123, None)  # str(output)
    assert verify({"kind": "regex", "pattern": "(?i)yes"}, "YES", None)  # inline flags


def test_regex_bad_pattern() -> None:
    with pytest.raises(ValidationError, match="bad pattern"):
        verify({"kind": "regex", "pattern": "(unclosed"}, "x", None)
    with pytest.raises(ValidationError, match="missing"):
        verify({"kind": "regex"}, "x", None)
    with pytest.raises(ValidationError, match="pattern must be a string"):
        verify({"kind": "regex", "pattern": 5}, "x", None)


# ------------------------------------------------------------------ json_schema

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("output", "ok"),
    [
        ('{"name": "Ada", "age": 36}', True),  # a JSON string is parsed
        ({"name": "Ada"}, True),  # a value is used as-is
        (b'{"name": "Ada"}', True),
        ('{"name": "Ada", "age": -1}', False),
        ('{"age": 3}', False),
        ('{"name": "Ada", "extra": 1}', False),
        ("not json at all", False),
        ("{broken", False),
        (None, False),
        ([1, 2], False),
    ],
)
def test_json_schema(output: object, ok: bool) -> None:
    assert verify({"kind": "json_schema", "schema": SCHEMA}, output, None) is ok


def test_json_schema_non_json_text_validates_as_string() -> None:
    assert verify({"kind": "json_schema", "schema": {"type": "string"}}, "hello", None)
    assert verify({"kind": "json_schema", "schema": {"type": "array"}}, "[1, 2]", None)


def test_json_schema_bad_schema() -> None:
    with pytest.raises(ValidationError, match="not a valid JSON Schema"):
        verify({"kind": "json_schema", "schema": {"type": "nonsense"}}, "{}", None)
    with pytest.raises(ValidationError, match="schema must be"):
        verify({"kind": "json_schema", "schema": "object"}, "{}", None)


# ------------------------------------------------------------------ python


def test_python_predicate() -> None:
    spec = {"kind": "python", "source": "def check(output, expected):\n    return output.lower() == expected\n"}
    assert verify(spec, "YES", "yes")
    assert not verify(spec, "no", "yes")
    # uses the provided modules without importing
    spec2 = {"kind": "python", "source": "def check(o, e):\n    return math.isclose(float(o), e, abs_tol=0.1)"}
    assert verify(spec2, "3.14", 3.1)


def test_python_predicate_raising_counts_as_failure() -> None:
    spec = {"kind": "python", "source": "def check(output, expected):\n    return output.lower() == expected\n"}
    assert verify(spec, None, "yes") is False  # AttributeError inside check
    boom = {"kind": "python", "source": "def check(o, e):\n    raise ValueError('boom')"}
    assert verify(boom, "x", "x") is False
    imports = {"kind": "python", "source": "def check(o, e):\n    import os\n    return True"}
    assert verify(imports, "x", "x") is False  # no __import__ in the safe builtins
    opened = {"kind": "python", "source": "def check(o, e):\n    return open('/etc/passwd') is not None"}
    assert verify(opened, "x", "x") is False  # no open() either


def test_python_truthiness() -> None:
    spec = {"kind": "python", "source": "def check(o, e):\n    return [o] if o else []"}
    assert verify(spec, "x", None) is True
    assert verify(spec, "", None) is False


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("def check(o, e):\n  return (", "syntax error"),
        ("def other(o, e):\n    return True", "must define"),
        ("check = 3", "must define"),
        ("import os\ndef check(o, e):\n    return True", "defining the source failed"),
        (42, "source must be a string"),
    ],
)
def test_python_bad_source(source: object, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        verify({"kind": "python", "source": source}, "x", "x")


def test_python_compiled_once() -> None:
    # the module body runs once per source: `calls` persists across verify() calls
    source = "calls = []\ndef check(o, e):\n    calls.append(o)\n    return len(calls) == 2"
    spec = {"kind": "python", "source": source}
    assert verify(spec, "a", None) is False
    assert verify(dict(spec), "b", None) is True


# ------------------------------------------------------------------ bad specs


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"kind": "llm_judge"}, "unknown verifier kind 'llm_judge': use one of exact, json_schema, numeric"),
        ({}, "must be a dict with a 'kind'"),
        ("exact", "must be a dict with a 'kind'"),
        (None, "must be a dict with a 'kind'"),
        ({"kind": 3}, "must be a dict with a 'kind'"),
        ({"kind": "numeric", "tolerance": 0.1}, r"unknown option\(s\) \['tolerance'\]; allowed: abs_tol, rel_tol"),
        ({"kind": "exact", "strip": "yes"}, "strip must be true or false"),
        ({"kind": "json_schema"}, "missing"),
        ({"kind": "python"}, "missing"),
    ],
)
def test_bad_spec(spec: object, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        verify(spec, "x", "x")  # type: ignore[arg-type]
    with pytest.raises(UserError):
        validate_spec(spec)


def test_name_and_description_allowed() -> None:
    validate_spec({"kind": "exact", "name": "city", "description": "the capital"})
