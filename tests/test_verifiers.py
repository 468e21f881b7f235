"""Verifiers: every kind, its edge cases, loud errors for bad specs, and python graders that never run in the host."""

from __future__ import annotations

import ast
import socket
import sys
import threading
import types
from pathlib import Path

import pytest

from crystallise.errors import SandboxError, UserError, ValidationError
from crystallise.gate import (
    DATA_VERIFIER_KINDS,
    VERIFIER_KINDS,
    Case,
    EvalSuite,
    learner_may_add,
    run_suite,
    score_exact,
    score_numeric,
    validate_spec,
    verify,
    verify_detail,
)
from crystallise.gate import python_verifier


@pytest.fixture(autouse=True)
def _stop_verifier_workers():
    yield
    python_verifier.close_sandboxes()


def test_kinds_listed() -> None:
    assert VERIFIER_KINDS == ("exact", "json_schema", "judge", "numeric", "python", "regex")


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


# ------------------------------------------------------------------ python (grader code, run in the sandbox)


def test_python_predicate() -> None:
    spec = {"kind": "python", "source": "def check(output, expected):\n    return output.lower() == expected\n"}
    assert verify(spec, "YES", "yes")
    assert not verify(spec, "no", "yes")
    # uses the provided modules without importing
    spec2 = {"kind": "python", "source": "def check(o, e):\n    return math.isclose(float(o), e, abs_tol=0.1)"}
    assert verify(spec2, "3.14", 3.1)
    spec3 = {"kind": "python", "source": "import statistics\ndef check(o, e):\n    return statistics.mean(o) == e"}
    assert verify(spec3, [1, 2, 3], 2)


def test_python_check_sees_json_values() -> None:
    spec = {"kind": "python", "source": "def check(o, e):\n    return o == e and type(o).__name__ == 'list'"}
    assert verify(spec, (1, 2), [1, 2])  # a tuple arrives as a JSON array
    passed, why = verify_detail(spec, {1, 2}, [1, 2])  # not a JSON value: a fail that says so
    assert passed is False and "JSON" in (why or "")


def test_python_predicate_raising_counts_as_failure() -> None:
    spec = {"kind": "python", "source": "def check(output, expected):\n    return output.lower() == expected\n"}
    assert verify(spec, None, "yes") is False  # AttributeError inside check
    passed, why = verify_detail(spec, None, "yes")
    assert passed is False and "AttributeError" in (why or "")
    boom = {"kind": "python", "source": "def check(o, e):\n    raise ValueError('boom')"}
    assert verify(boom, "x", "x") is False
    opened = {"kind": "python", "source": "def check(o, e):\n    return open('/etc/passwd') is not None"}
    assert verify(opened, "x", "x") is False  # no open() either


@pytest.mark.parametrize("value", ["1", "'yes'", "[1]", "{'a': 1}", "1.0", "'True'", "None", "False", "[True]"])
def test_python_only_true_passes(value: str) -> None:
    spec = {"kind": "python", "source": f"def check(o, e):\n    return {value}"}
    assert verify(spec, "x", "x") is False
    passed, why = verify_detail(spec, "x", "x")
    assert passed is False
    assert (why is None) == (value == "False")  # a plain False needs no reason; anything else says what came back
    assert verify({"kind": "python", "source": "def check(o, e):\n    return True"}, "x", "x") is True


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("def check(o, e):\n  return (", "syntax error"),
        ("def other(o, e):\n    return True", "must define"),
        ("check = 3", "must define"),
        ("check = lambda o, e: True", "must define"),
        ("def check(o):\n    return True", "two arguments"),
        ("def check(o, e, f):\n    return True", "two arguments"),
        ("def check(o, e, *, strict):\n    return True", "two arguments"),
        ("import os\ndef check(o, e):\n    return True", "imports 'os'"),
        ("def check(o, e):\n    import socket\n    return True", "imports 'socket'"),
        ("from . import x\ndef check(o, e):\n    return True", "imports '.'"),
        ("def check(o, e):\n    return '\0'\0", "cannot be parsed|syntax error"),
        (42, "source must be a string"),
    ],
)
def test_python_bad_source(source: object, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        verify({"kind": "python", "source": source}, "x", "x")


def test_python_flexible_signatures_validate() -> None:
    for sig in ("o, e", "o, e, strict=True", "*args", "o, *rest", "o, e, /"):
        validate_spec({"kind": "python", "source": f"def check({sig}):\n    return True"})


def test_python_compiled_once() -> None:
    # the module body runs once per warm worker: `calls` persists across verify() calls
    source = "calls = []\ndef check(o, e):\n    calls.append(o)\n    return len(calls) == 2"
    spec = {"kind": "python", "source": source}
    assert verify(spec, "a", None) is False
    assert verify(dict(spec), "b", None) is True


def test_python_sandboxes_are_cached_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(python_verifier, "_MAX_SANDBOXES", 2)
    python_verifier.close_sandboxes()
    specs = [{"kind": "python", "source": f"def check(o, e):\n    return o == {i}"} for i in range(3)]
    for i, spec in enumerate(specs):
        assert verify(spec, i, None) is True
    assert len(python_verifier._BOXES) == 2  # the least recently used one was stopped
    assert verify(specs[0], 0, None) is True  # and starts again when needed
    python_verifier.close_sandboxes()
    assert not python_verifier._BOXES


# ------------------------------------------------------------------ hostile python verifiers
#
# A grader a person wrote may still be wrong or hostile (copied from the internet, say). None of
# it may touch the host: every one of these fails the case and leaves no trace outside the worker.


def _hostile(tmp: Path, port: int) -> dict[str, str]:
    target = tmp / "pwned"
    return {
        "read a file": "def check(o, e):\n    return len(open('/etc/passwd').read()) > 0",
        "write a file": f"def check(o, e):\n    open({str(target)!r}, 'w').write('x')\n    return True",
        "os.system": f"def check(o, e):\n    __import__('os').system('touch {target}')\n    return True",
        "eval an import": f"def check(o, e):\n    eval(\"__import__('os')\").system('touch {target}')\n    return True",
        "socket": f"def check(o, e):\n    __import__('socket').create_connection(('127.0.0.1', {port}))\n"
                  "    return True",
        "escape via subclasses": "def check(o, e):\n    return [c for c in ().__class__.__base__.__subclasses__()"
                                 " if c.__name__ == 'Popen'][0](['true']) is not None",
        "builtins via a frame": "def check(o, e):\n    g = (x for x in [1])\n"
                                "    return g.gi_frame.f_globals is not None",
        "infinite loop": "def check(o, e):\n    while True:\n        pass",
        "infinite loop at load": "while True:\n    pass\ndef check(o, e):\n    return True",
        "huge output": "def check(o, e):\n    return 'x' * (1 << 27)",
        "huge truthy output": "def check(o, e):\n    return [1] * (1 << 19)",
        "memory bomb": "def check(o, e):\n    a = []\n    while True:\n        a.append('x' * (1 << 20))",
        "exit the worker": "def check(o, e):\n    raise SystemExit(0)",
        "deep recursion": "def check(o, e):\n    return check(o, e)",
        "print spam, then not a bool": "def check(o, e):\n    print('x' * 10**6)\n    return 'yes'",
    }


HOSTILE = ["read a file", "write a file", "os.system", "eval an import", "socket", "escape via subclasses",
           "builtins via a frame", "infinite loop", "infinite loop at load", "huge output", "huge truthy output",
           "memory bomb", "exit the worker", "deep recursion", "print spam, then not a bool"]


@pytest.fixture
def listener():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        sock.setblocking(False)
        yield sock


@pytest.mark.parametrize("attack", HOSTILE)
def test_hostile_python_verifier_fails_with_no_host_effect(attack, tmp_path, listener, monkeypatch) -> None:
    monkeypatch.setattr(python_verifier, "TIMEOUT_S", 0.5)  # the loops need not burn 2 s each
    source = _hostile(tmp_path, listener.getsockname()[1])[attack]
    spec = {"kind": "python", "source": source}
    validate_spec(spec)  # every one of them is well-formed Python: only running it tells
    passed, why = verify_detail(spec, "x", "x")
    assert passed is False, attack
    assert why, attack  # the gate records why the grader failed
    assert verify(spec, "x", "x") is False  # and a second call (maybe a fresh worker) fails the same way
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected


def test_hostile_list_matches_the_parametrisation(tmp_path) -> None:
    assert sorted(_hostile(tmp_path, 1)) == sorted(HOSTILE)


def test_a_hostile_grader_fails_its_cases_without_crashing_the_run(monkeypatch) -> None:
    monkeypatch.setattr(python_verifier, "TIMEOUT_S", 0.5)
    slow = {"kind": "python", "source": "def check(o, e):\n    while o == 'spin':\n        pass\n    return o == e"}
    suite = EvalSuite("t", [Case("ok", "4", "4", verifier=slow), Case("spin", "spin", "x", verifier=slow),
                            Case("after", "5", "5", verifier=slow)])
    results = run_suite(suite, lambda x: x)
    assert [r.passed for r in results] == [True, False, True]  # the worker restarts after the timeout
    assert results[0].error is None and "SandboxTimeout" in (results[1].error or "")


_MARK = "verifier-canary-5b1e0c"


def test_the_host_never_compiles_or_execs_verifier_source() -> None:
    """An audit hook watches every compile and exec in this process while python verifiers run:
    none may carry the verifier's source (it is parsed once at validation, then only sent away)."""
    source = f"MARK = {_MARK!r}\ndef check(output, expected):\n    return output == expected and MARK.startswith('v')\n"
    spec = {"kind": "python", "source": source}
    seen: list[str] = []
    recording = threading.Event()

    def carries(value: object, depth: int = 0) -> bool:
        if isinstance(value, (str, bytes)):
            return _MARK in (value if isinstance(value, str) else value.decode("latin-1"))
        if isinstance(value, types.CodeType) and depth < 20:
            return any(carries(c, depth + 1) for c in value.co_consts)
        return False

    def hook(event: str, args: tuple) -> None:
        if recording.is_set() and event in ("compile", "exec") and any(carries(a) for a in args):
            seen.append(event)

    sys.addaudithook(hook)  # cannot be removed: it records only while `recording` is set
    # the detector works: parsing the source in the host is seen ...
    recording.set()
    ast.parse(source)
    recording.clear()
    assert seen == ["compile"]
    seen.clear()
    validate_spec(spec)  # ... as validation does, once; then verification must not
    recording.set()
    try:
        results = [verify(spec, out, "yes") for out in ("yes", "no", "yes")]
        suite = EvalSuite("t", [Case("a", "yes", "yes", verifier=spec), Case("b", "no", "yes", verifier=spec)])
        results += [r.passed for r in run_suite(suite, lambda x: x)]
    finally:
        recording.clear()
    assert results == [True, False, True, True, False]  # it did run (in the worker)
    assert seen == []


def test_unavailable_sandbox_fails_closed_and_names_the_fix(monkeypatch) -> None:
    class SandboxUnavailable(SandboxError):
        pass

    def no_sandbox(*args: object, **kwargs: object) -> None:
        raise SandboxUnavailable("bubblewrap not found")

    python_verifier.close_sandboxes()
    monkeypatch.setattr(python_verifier, "Sandbox", no_sandbox)
    spec = {"kind": "python", "source": "def check(o, e):\n    return True"}
    passed, why = verify_detail(spec, "x", "x")
    assert passed is False
    assert "bubblewrap not found" in why and "data verifier" in why and "install" in why
    results = run_suite(EvalSuite("t", [Case("a", "x", "x", verifier=spec)]), lambda x: x)
    assert results[0].passed is False and results[0].error == why


def test_learners_may_add_data_verifiers_only() -> None:
    assert DATA_VERIFIER_KINDS == {"exact", "numeric", "regex", "json_schema"}
    assert all(learner_may_add({"kind": k}) for k in DATA_VERIFIER_KINDS)
    code = {"kind": "python", "source": "def check(o, e):\n    return True"}
    for spec in (code, {"kind": "judge"}, {"kind": "llm_judge"}, {}, None, "exact"):
        assert not learner_may_add(spec)


# ------------------------------------------------------------------ bad specs


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"kind": "llm_judge"}, "unknown verifier kind 'llm_judge': use one of exact, json_schema, judge, numeric"),
        ({"kind": "judge", "prompt": "x"}, r"judge verifier: unknown option\(s\) \['prompt'\]; allowed: none"),
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


def test_a_backtracking_regex_fails_the_case_in_bounded_time() -> None:
    import time

    from crystallise.gate.verifiers import verify_detail

    t0 = time.monotonic()
    for pattern in ("(a+)+$", "(a|aa)+$", "(a|a?)+$", "(.*a){20}$"):
        passed, reason = verify_detail({"kind": "regex", "pattern": pattern}, "a" * 60 + "!", None)
        assert not passed, pattern  # fails: by no match, or by the time limit (then the reason says so)
        assert reason is None or "took over" in reason
    assert time.monotonic() - t0 < 2.0
    assert verify_detail({"kind": "regex", "pattern": "[A-D]"}, "B", None)[0]


def test_a_schema_never_fetches_a_remote_reference() -> None:
    import socket
    import threading

    from crystallise.gate.verifiers import verify

    hits: list[bytes] = []
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(1.0)

    def serve() -> None:
        try:
            conn, _ = srv.accept()
            hits.append(conn.recv(100))
            conn.close()
        except OSError:
            pass

    t = threading.Thread(target=serve)
    t.start()
    port = srv.getsockname()[1]
    assert not verify({"kind": "json_schema", "schema": {"$ref": f"http://127.0.0.1:{port}/x.json"}}, "1", None)
    t.join()
    srv.close()
    assert hits == []
