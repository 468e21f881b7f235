"""Eval suites: recorded or hand-written cases, stored as JSONL, run against a function.

    EvalSuite(name, cases=[Case, ...])
      Case        id, input, expected, verifier spec, source_trace, tags, created_by
      .to_jsonl() one JSON object per line, fixed key order  -> tasks/<name>/evals.jsonl
      .add(cases) a NEW suite; existing cases are protected (learners may only add)
    run_suite(suite, fn) -> [CaseResult, ...]   one per case, in suite order
    learner_may_add(verifier)                   may a learner add a case graded by it? (data verifiers only)

A suite file looks like (one line per case, nested keys sorted so git diffs are clean):

    {"id": "c1", "input": "2+2", "expected": "4", "verifier": {"kind": "numeric"}, ...}
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from crystallise.errors import ValidationError
from crystallise.gate.verifiers import DATA_VERIFIER_KINDS, validate_spec, verify_detail

__all__ = ["Case", "CaseResult", "EvalSuite", "learner_may_add", "run_suite"]


def _sorted_keys(value: Any) -> Any:
    """Recursively rebuild dicts with sorted keys so JSON output is stable."""
    if isinstance(value, dict):
        return {k: _sorted_keys(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [_sorted_keys(v) for v in value]
    return value


@dataclass(frozen=True)
class Case:
    """One eval case: `fn(input)` should pass `verifier` against `expected`.

    Frozen: graders and existing cases are protected; learners add new cases only.

    >>> Case("c1", "2+2", "4", verifier={"kind": "numeric"}).verifier["kind"]
    'numeric'
    """

    id: str
    input: Any
    expected: Any
    verifier: dict[str, Any] = field(default_factory=lambda: {"kind": "exact"})
    source_trace: str | None = None  # trace id the case was recorded from
    tags: list[str] = field(default_factory=list)
    created_by: str = "human"  # "human" | a learner name

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValidationError(f"a case id must be a non-empty string, got {self.id!r}")
        if self.source_trace is not None and not isinstance(self.source_trace, str):
            raise ValidationError(f"case {self.id!r}: source_trace must be a trace id string or null")
        if not isinstance(self.tags, list) or not all(isinstance(t, str) for t in self.tags):
            raise ValidationError(f"case {self.id!r}: tags must be a list of strings, got {self.tags!r}")
        if not isinstance(self.created_by, str):
            raise ValidationError(f"case {self.id!r}: created_by must be a string")
        try:
            validate_spec(self.verifier)
        except ValidationError as exc:
            raise ValidationError(f"case {self.id!r}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """Field order kept, nested dict keys sorted: `{"id", "input", "expected", "verifier", ...}`."""
        return {f.name: _sorted_keys(getattr(self, f.name)) for f in fields(self)}

    def to_json(self) -> str:
        """One JSONL line (no newline). Non-finite floats are rejected: JSON has none."""
        data = self.to_dict()
        try:
            line = json.dumps(data, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValidationError(
                f"case {self.id!r} is not JSON-able ({exc}); use str/int/float/bool/None/list/dict values"
            ) from None
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: keep the file valid UTF-8
            line = json.dumps(data, ensure_ascii=True, allow_nan=False)
        return line

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Case:
        """Build a case from a dict; unknown or missing keys raise `ValidationError`."""
        names = [f.name for f in fields(cls)]
        if not isinstance(data, dict):
            raise ValidationError(f"a case must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValidationError(f"unknown case key(s) {unknown}; allowed: {', '.join(names)}")
        missing = [k for k in ("id", "input", "expected") if k not in data]
        if missing:
            raise ValidationError(f"case is missing {', '.join(missing)}")
        return cls(**data)


@dataclass(frozen=True)
class CaseResult:
    """The outcome of running one case. `cost` is any numeric cost (LLM calls, ms, $)."""

    case_id: str
    passed: bool
    output: Any
    error: str | None = None
    cost: float = 0.0
    served_by: str | None = None  # "code" | "llm" for a crystallised task, else None


@dataclass(frozen=True)
class EvalSuite:
    """A named, ordered set of cases with unique ids. Never mutated: `add` returns a new suite.

    >>> s = EvalSuite("math", [Case("c1", "2+2", "4")])
    >>> len(s.add([Case("c2", "3+3", "6")])), len(s)
    (2, 1)
    """

    name: str
    cases: list[Case] = field(default_factory=list)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for case in self.cases:
            if not isinstance(case, Case):
                raise ValidationError(f"suite {self.name!r}: cases must be Case objects, got {type(case).__name__}")
            if case.id in seen:
                raise ValidationError(f"suite {self.name!r}: duplicate case id {case.id!r}; ids must be unique")
            seen.add(case.id)

    def __len__(self) -> int:
        return len(self.cases)

    def __iter__(self) -> Iterator[Case]:
        return iter(self.cases)

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.cases]

    def get(self, case_id: str) -> Case | None:
        return next((c for c in self.cases if c.id == case_id), None)

    def add(self, cases: Iterable[Case]) -> EvalSuite:
        """A new suite with `cases` appended. Re-adding an identical case is a no-op;
        a case whose id exists with different content raises `ValidationError`
        (existing cases and their graders are protected: give the new case a new id)."""
        existing = {c.id: c.to_json() for c in self.cases}
        added: list[Case] = []
        for case in cases:
            if not isinstance(case, Case):
                raise ValidationError(f"suite {self.name!r}: can only add Case objects, got {type(case).__name__}")
            line = case.to_json()
            if case.id in existing:
                if existing[case.id] != line:
                    raise ValidationError(
                        f"suite {self.name!r}: case {case.id!r} already exists with different content; "
                        "existing cases and graders are protected — add it under a new id"
                    )
                continue
            existing[case.id] = line
            added.append(case)
        return EvalSuite(self.name, [*self.cases, *added])

    def to_jsonl(self) -> str:
        """One case per line, newline-terminated; empty suite -> ""."""
        return "".join(c.to_json() + "\n" for c in self.cases)

    @classmethod
    def from_jsonl(cls, name: str, text: str) -> EvalSuite:
        """Parse `to_jsonl` output. Blank lines are skipped; a bad line raises
        `ValidationError` naming its 1-based line number. A row `{"id": ..., "voids": CASE_ID}`
        (appended by an undo: the file stays append-only) drops that case from the suite."""
        cases: list[Case] = []
        seen: dict[str, int] = {}
        voided: set[str] = set()
        # split on "\n" only: str.splitlines() would also split on U+2028 inside strings
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if isinstance(row, dict) and "voids" in row:  # a void row: the case it names no longer counts
                    voided.add(str(row["voids"]))
                    seen[str(row.get("id"))] = number
                    continue
                case = Case.from_dict(row)
            except json.JSONDecodeError as exc:
                raise ValidationError(f"suite {name!r} line {number}: not valid JSON ({exc.msg})") from None
            except (ValidationError, TypeError) as exc:
                raise ValidationError(f"suite {name!r} line {number}: {exc}") from None
            if case.id in seen:
                raise ValidationError(
                    f"suite {name!r} line {number}: duplicate case id {case.id!r} (first on line {seen[case.id]})"
                )
            seen[case.id] = number
            cases.append(case)
        return cls(name, [c for c in cases if c.id not in voided])


def learner_may_add(verifier: Any) -> bool:
    """Whether a learner may add an eval case graded by `verifier`: data verifiers only.

    Python and judge verifiers are grader code; only a person adds them (governance/protect.py
    asks this for every case a learner's change set appends).

    >>> learner_may_add({"kind": "regex", "pattern": "[A-D]"}), learner_may_add({"kind": "python", "source": ""})
    (True, False)
    """
    return isinstance(verifier, dict) and verifier.get("kind") in DATA_VERIFIER_KINDS


def _unpack(returned: Any) -> tuple[Any, float, str | None]:
    """fn may return `output`, `(output, cost)` or `(output, cost, served_by)`."""
    if isinstance(returned, tuple) and len(returned) in (2, 3):
        cost = returned[1]
        served = returned[2] if len(returned) == 3 else None
        numeric = isinstance(cost, numbers.Real) and not isinstance(cost, bool)
        if numeric and (served is None or isinstance(served, str)):
            return returned[0], float(cost), served
    return returned, 0.0, None


def run_suite(
    suite: EvalSuite,
    fn: Callable[[Any], Any],
    *,
    progress: Callable[[int, int], None] | None = None,
    judge: Callable[[Any, Any, Any], tuple[bool, str | None]] | None = None,
) -> list[CaseResult]:
    """Run `fn(case.input)` on every case and verify the output.

    `fn` returns the output, or `(output, cost)`, or `(output, cost, served_by)`; a
    function whose real output is a 2-tuple should return `(output, 0.0)`. An exception
    from `fn` becomes a failed result with the error text, and so does a grader that failed
    (a python check that timed out, say: `error` says why). Every verifier spec is checked
    before anything runs, so a broken grader fails fast. `progress(done, total)` is
    called after each case. `judge` grades the cases whose verifier is `{"kind": "judge"}` (gate/judge.py:
    a calibrated judge; without one those cases fail, saying why).

    >>> suite = EvalSuite("add", [Case("c1", [2, 2], "4")])
    >>> [r.passed for r in run_suite(suite, lambda xs: str(sum(xs)))]
    [True]
    """
    for case in suite.cases:
        validate_spec(case.verifier)
    results: list[CaseResult] = []
    total = len(suite.cases)
    for done, case in enumerate(suite.cases, start=1):
        try:
            output, cost, served_by = _unpack(fn(case.input))
        except Exception as exc:  # noqa: BLE001 - the function under test failed: a failed case, not a failed run
            results.append(CaseResult(case.id, False, None, error=f"{type(exc).__name__}: {exc}"))
        else:
            passed, why = verify_detail(case.verifier, output, case.expected, judge=judge, input=case.input)
            results.append(CaseResult(case.id, passed, output, error=why, cost=cost, served_by=served_by))
        if progress is not None:
            progress(done, total)
    return results
