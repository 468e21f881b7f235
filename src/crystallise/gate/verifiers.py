"""Verifiers: does one output pass one case? Functions of (spec, output, expected).

A verifier spec is a small JSON-able dict stored with each case, so graders are plain
text a person can diff and no learner can quietly change:

    {"kind": "exact"}                                   str forms equal after strip()
    {"kind": "exact", "casefold": true}                 ... and case-insensitive
    {"kind": "numeric"}                                 ACE rule: drop commas, float ==
    {"kind": "numeric", "abs_tol": 0.01}                ... within a tolerance
    {"kind": "regex", "pattern": "[A-D]"}               regex fullmatch on str(output), 50 ms at most
    {"kind": "json_schema", "schema": {...}}            output validates against schema
    {"kind": "python", "source": "def check(output, expected): ..."}   run in the sandbox
    {"kind": "judge"}                                   the task's calibrated LLM judge (gate/judge.py)

The first four are *data verifiers*: plain data read by this module, the only kinds a learner
may attach to a case it adds (`DATA_VERIFIER_KINDS`, enforced in governance/protect.py). A
python verifier is grader code: a person writes it, the host only parses it, and `check` runs
in the out-of-process sandbox on JSON values; only a `True` result passes (python_verifier.py).
A judge verifier is grader code too: its prompt is the task's protected `graders/judge.json`, and a
case graded by it passes only through a judge that passed calibration (`verify_detail(..., judge=)`).

Every spec may also carry `name` and `description` for people. A bad spec raises
`ValidationError` (a grader bug must be loud); a bad *output* just fails, and so does a
python check that raises, times out or answers anything but `True` (`verify_detail` says why).
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Any

import jsonschema
import regex

from crystallise.errors import ValidationError
from crystallise.gate.python_verifier import run_check, validate_source
from crystallise.schemas import validator

__all__ = [
    "DATA_VERIFIER_KINDS",
    "VERIFIER_KINDS",
    "score_exact",
    "score_numeric",
    "validate_spec",
    "verify",
    "verify_detail",
]

# kind -> option keys it accepts besides "kind" (and the free-text "name"/"description")
_OPTIONS: dict[str, frozenset[str]] = {
    "exact": frozenset({"strip", "casefold"}),
    "json_schema": frozenset({"schema"}),
    "numeric": frozenset({"abs_tol", "rel_tol"}),
    "python": frozenset({"source"}),
    "judge": frozenset(),
    "regex": frozenset({"pattern"}),
}
_REQUIRED: dict[str, str] = {"json_schema": "schema", "python": "source", "regex": "pattern"}
_COMMON = frozenset({"kind", "name", "description"})

VERIFIER_KINDS: tuple[str, ...] = tuple(sorted(_OPTIONS))
# Verifiers that are data, not code: what a learner may grade the cases it adds with.
DATA_VERIFIER_KINDS: frozenset[str] = frozenset({"exact", "json_schema", "numeric", "regex"})


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


# ---------------------------------------------------------------- compiled patterns and schemas (cached)

REGEX_TIMEOUT_S = 0.05


@lru_cache(maxsize=512)
def _regex(pattern: str) -> Any:
    """The `regex` module (re-compatible syntax, V0) because it can stop a match: `re` cannot."""
    return regex.compile(pattern, flags=regex.V0)


@lru_cache(maxsize=512)
def _schema_validator(schema_json: str) -> Any:
    schema = json.loads(schema_json)
    try:
        return validator(schema, check=True)  # never fetches a remote $ref
    except jsonschema.SchemaError as exc:
        raise ValidationError(
            f"json_schema verifier: the schema is not a valid JSON Schema ({exc.message}); fix spec['schema']"
        ) from None


# ---------------------------------------------------------------- spec validation + dispatch


def _tolerance(spec: dict[str, Any], key: str) -> float:
    value = spec.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValidationError(f"numeric verifier: {key} must be a finite number >= 0, got {value!r}")
    return float(value)


def validate_spec(spec: Any) -> None:
    """Raise `ValidationError` saying what to fix if `spec` is not a usable verifier spec.

    Compiles patterns and schemas and parses python sources (cached), so a spec that
    validates never raises inside `verify`. A python source is never run here.

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
            _regex(spec["pattern"])
        except regex.error as exc:
            raise ValidationError(f"regex verifier: bad pattern {spec['pattern']!r} ({exc})") from None
    elif kind == "json_schema":
        if not isinstance(spec["schema"], (dict, bool)):
            raise ValidationError("json_schema verifier: schema must be a JSON object (or true/false)")
        _schema_validator(json.dumps(spec["schema"], sort_keys=True))
    elif kind == "python":
        if not isinstance(spec["source"], str):
            raise ValidationError("python verifier: source must be a string of Python code")
        validate_source(spec["source"])  # parsed, never run here


def verify(spec: dict[str, Any], output: Any, expected: Any) -> bool:
    """Does `output` pass against `expected` under the verifier `spec`?

    Raises `ValidationError` for a bad spec (unknown kind, bad pattern/schema/source);
    a wrong, malformed or crashing output is simply `False`.

    >>> verify({"kind": "numeric"}, "1,000.50", "1000.5")
    True
    >>> verify({"kind": "regex", "pattern": "[A-D]"}, "B)", None)
    False
    """
    return verify_detail(spec, output, expected)[0]


def verify_detail(spec: dict[str, Any], output: Any, expected: Any, *, judge: Any = None,
                  input: Any = None) -> tuple[bool, str | None]:
    """`verify`, plus why the grader itself failed (a python check that raised, timed out or
    returned a non-bool; the sandbox unavailable), else None: what a gate run records.

    >>> verify_detail({"kind": "exact"}, "a", "b")
    (False, None)
    """
    validate_spec(spec)
    kind = spec["kind"]
    if kind == "exact":
        return score_exact(output, expected, strip=spec.get("strip", True), casefold=spec.get("casefold", False)), None
    if kind == "numeric":
        tol = {"abs_tol": _tolerance(spec, "abs_tol"), "rel_tol": _tolerance(spec, "rel_tol")}
        return score_numeric(output, expected, **tol), None
    if kind == "regex":
        try:  # a pattern that backtracks without end on an answer fails that case, it never stalls the gate
            return _regex(spec["pattern"]).fullmatch(_text(output), timeout=REGEX_TIMEOUT_S) is not None, None
        except TimeoutError:
            return False, f"regex verifier: the pattern took over {REGEX_TIMEOUT_S} s on this answer"
    if kind == "json_schema":
        value = output
        if isinstance(output, (str, bytes)):
            # a JSON string is parsed; text that is not JSON is validated as the string itself
            try:
                value = json.loads(output)
            except ValueError:
                value = output if isinstance(output, str) else output.decode("utf-8", "replace")
        try:
            return bool(_schema_validator(json.dumps(spec["schema"], sort_keys=True)).is_valid(value)), None
        except Exception:  # noqa: BLE001 - e.g. a value jsonschema cannot handle
            return False, None
    if kind == "judge":  # a calibrated judge (gate/judge.py), or the case fails saying why
        if judge is None:
            return False, "judge verifier: no calibrated judge was given (crystallise evals run calibrates it)"
        return judge(input, output, expected)
    # python: grader code, run only in the sandbox; a failing check is a failed case, never a crashed gate
    return run_check(spec["source"], output, expected)
