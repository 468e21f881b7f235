"""Verifiers: does one output pass one case? Pure functions of (spec, output, expected).

A verifier spec is a small JSON-able dict stored with each case, so graders are plain
text a person can diff and no learner can quietly change:

    {"kind": "exact"}                                   str forms equal after strip()
    {"kind": "exact", "casefold": true}                 ... and case-insensitive
    {"kind": "numeric"}                                 ACE rule: drop commas, float ==
    {"kind": "numeric", "abs_tol": 0.01}                ... within a tolerance
    {"kind": "regex", "pattern": "[A-D]"}               re.fullmatch on str(output)
    {"kind": "json_schema", "schema": {...}}            output validates against schema
    {"kind": "python", "source": "def check(output, expected): ..."}

Every spec may also carry `name` and `description` for people. A bad spec raises
`ValidationError` (a grader bug must be loud); a bad *output* just fails.
"""

from __future__ import annotations

import builtins
import json
import math
import re
from functools import lru_cache
from collections.abc import Callable
from typing import Any

import jsonschema

from crystallise.errors import ValidationError

__all__ = ["VERIFIER_KINDS", "score_exact", "score_numeric", "validate_spec", "verify"]

# kind -> option keys it accepts besides "kind" (and the free-text "name"/"description")
_OPTIONS: dict[str, frozenset[str]] = {
    "exact": frozenset({"strip", "casefold"}),
    "json_schema": frozenset({"schema"}),
    "numeric": frozenset({"abs_tol", "rel_tol"}),
    "python": frozenset({"source"}),
    "regex": frozenset({"pattern"}),
}
_REQUIRED: dict[str, str] = {"json_schema": "schema", "python": "source", "regex": "pattern"}
_COMMON = frozenset({"kind", "name", "description"})

VERIFIER_KINDS: tuple[str, ...] = tuple(sorted(_OPTIONS))


# ---------------------------------------------------------------- scoring helpers


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def score_exact(pred: Any, target: Any, *, strip: bool = True, casefold: bool = False) -> bool:
    """Exact match of the str forms (stripped by default). Metric name: `exact`.

    Two non-string values (dicts, lists) are compared as canonical JSON, so key order
    does not matter.

    >>> score_exact(" Paris\\n", "Paris"), score_exact("paris", "Paris", casefold=True)
    (True, True)
    """
    if not isinstance(pred, str) and not isinstance(target, str):
        try:
            a = json.dumps(pred, sort_keys=True)
            b = json.dumps(target, sort_keys=True)
        except (TypeError, ValueError):
            a, b = str(pred), str(target)
    else:
        a, b = _text(pred), _text(target)
    if strip:
        a, b = a.strip(), b.strip()
    if casefold:
        a, b = a.casefold(), b.casefold()
    return a == b


def score_numeric(pred: Any, target: Any, *, abs_tol: float = 0.0, rel_tol: float = 0.0) -> bool:
    """The ACE Formula rule. Metric name: `numeric`.

    Remove commas and surrounding whitespace from both, then `float(pred) == float(target)`;
    if either does not parse as a float, fall back to string equality. With `abs_tol` /
    `rel_tol` > 0 the floats are compared with `math.isclose` instead. No `$` or `%`
    stripping: the rule is kept exactly as ACE scores it.

    >>> score_numeric("1,000.50", "1000.5"), score_numeric("2.0", 2), score_numeric("$5", "5")
    (True, True, False)
    """
    p = _text(pred).replace(",", "").strip()
    t = _text(target).replace(",", "").strip()
    try:
        a, b = float(p), float(t)
    except (ValueError, OverflowError):
        return p == t
    if abs_tol or rel_tol:
        return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)
    return a == b


# ---------------------------------------------------------------- compiled graders (cached)


@lru_cache(maxsize=512)
def _schema_validator(schema_json: str) -> Any:
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValidationError(
            f"json_schema verifier: the schema is not a valid JSON Schema ({exc.message}); fix spec['schema']"
        ) from None
    return cls(schema)


_SAFE_BUILTINS: dict[str, Any] = {
    name: getattr(builtins, name)
    for name in (
        "abs all any bool chr dict divmod enumerate filter float frozenset int isinstance len list "
        "map max min ord pow range repr reversed round set sorted str sum tuple zip "
        "Exception ValueError TypeError KeyError IndexError ZeroDivisionError"
    ).split()
}


@lru_cache(maxsize=512)
def _compile_check(source: str) -> Callable[[Any, Any], Any]:
    """Run `source` once in a namespace with small builtins (+ json, math, re) and
    return its `check`. This is a convenience, not a security sandbox: graders are
    protected, human-reviewed text."""
    namespace: dict[str, Any] = {"__builtins__": dict(_SAFE_BUILTINS), "json": json, "math": math, "re": re}
    try:
        exec(compile(source, "<python verifier>", "exec"), namespace)  # noqa: S102 - reviewed grader text
    except SyntaxError as exc:
        raise ValidationError(f"python verifier: syntax error on line {exc.lineno}: {exc.msg}") from None
    except Exception as exc:  # the module body itself failed (e.g. an import)
        raise ValidationError(
            f"python verifier: defining the source failed ({type(exc).__name__}: {exc}); "
            "only builtins plus json, math and re are available, with no imports"
        ) from None
    check = namespace.get("check")
    if not callable(check):
        raise ValidationError("python verifier: the source must define `def check(output, expected) -> bool`")
    return check


# ---------------------------------------------------------------- spec validation + dispatch


def _tolerance(spec: dict[str, Any], key: str) -> float:
    value = spec.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValidationError(f"numeric verifier: {key} must be a finite number >= 0, got {value!r}")
    return float(value)


def validate_spec(spec: Any) -> None:
    """Raise `ValidationError` saying what to fix if `spec` is not a usable verifier spec.

    Compiles patterns, schemas and python sources (cached), so a spec that validates
    never raises inside `verify`.

    >>> validate_spec({"kind": "regex", "pattern": "[0-9]+"})
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("kind"), str):
        raise ValidationError(
            f"a verifier spec must be a dict with a 'kind' (one of {', '.join(VERIFIER_KINDS)}), got {spec!r}"
        )
    kind = spec["kind"]
    if kind not in _OPTIONS:
        raise ValidationError(f"unknown verifier kind {kind!r}: use one of {', '.join(VERIFIER_KINDS)}")
    unknown = set(spec) - _COMMON - _OPTIONS[kind]
    if unknown:
        allowed = ", ".join(sorted(_OPTIONS[kind])) or "none"
        raise ValidationError(f"{kind} verifier: unknown option(s) {sorted(unknown)}; allowed: {allowed}")
    required = _REQUIRED.get(kind)
    if required and required not in spec:
        raise ValidationError(f"{kind} verifier: missing spec[{required!r}]")
    if kind == "exact":
        for key in ("strip", "casefold"):
            if key in spec and not isinstance(spec[key], bool):
                raise ValidationError(f"exact verifier: {key} must be true or false, got {spec[key]!r}")
    elif kind == "numeric":
        _tolerance(spec, "abs_tol")
        _tolerance(spec, "rel_tol")
    elif kind == "regex":
        if not isinstance(spec["pattern"], str):
            raise ValidationError(f"regex verifier: pattern must be a string, got {spec['pattern']!r}")
        try:
            re.compile(spec["pattern"])
        except re.error as exc:
            raise ValidationError(f"regex verifier: bad pattern {spec['pattern']!r} ({exc})") from None
    elif kind == "json_schema":
        if not isinstance(spec["schema"], (dict, bool)):
            raise ValidationError("json_schema verifier: schema must be a JSON object (or true/false)")
        _schema_validator(json.dumps(spec["schema"], sort_keys=True))
    elif kind == "python":
        if not isinstance(spec["source"], str):
            raise ValidationError("python verifier: source must be a string of Python code")
        _compile_check(spec["source"])


def verify(spec: dict[str, Any], output: Any, expected: Any) -> bool:
    """Does `output` pass against `expected` under the verifier `spec`?

    Raises `ValidationError` for a bad spec (unknown kind, bad pattern/schema/source);
    a wrong, malformed or crashing output is simply `False`.

    >>> verify({"kind": "numeric"}, "1,000.50", "1000.5")
    True
    >>> verify({"kind": "regex", "pattern": "[A-D]"}, "B)", None)
    False
    """
    validate_spec(spec)
    kind = spec["kind"]
    if kind == "exact":
        return score_exact(output, expected, strip=spec.get("strip", True), casefold=spec.get("casefold", False))
    if kind == "numeric":
        return score_numeric(output, expected, abs_tol=_tolerance(spec, "abs_tol"), rel_tol=_tolerance(spec, "rel_tol"))
    if kind == "regex":
        return re.fullmatch(spec["pattern"], _text(output)) is not None
    if kind == "json_schema":
        value = output
        if isinstance(output, (str, bytes)):
            # a JSON string is parsed; text that is not JSON is validated as the string itself
            try:
                value = json.loads(output)
            except ValueError:
                value = output if isinstance(output, str) else output.decode("utf-8", "replace")
        try:
            return bool(_schema_validator(json.dumps(spec["schema"], sort_keys=True)).is_valid(value))
        except Exception:  # e.g. a value jsonschema cannot handle
            return False
    # python
    check = _compile_check(spec["source"])
    try:
        return bool(check(output, expected))
    except Exception:  # a crashing predicate is a failed case, never a crashed gate
        return False
