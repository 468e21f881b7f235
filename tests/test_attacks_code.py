"""Learned code is data (issue 13): the code-path families of `crystallise bench attacks`.

A representative subset of every family runs here (hostile input in each); the whole catalogue is
`@pytest.mark.slow`. Every test asserts the four zeros — host executions, data-to-code injections,
sandbox escapes, host exceptions — as the host measured them (bench/_attacks_code_host.py). Two
negative controls show the suite does call a break-out when a defence is off, and the fixes the
suite led to are pinned by tests of their own at the end.

Families that depend on work not merged yet are expected to fail until it is, strictly (an xfail
that starts passing fails, so the marker cannot outlive the hole): the OS-level sandbox and reply
validation (wip/sandbox, detected by `crystallise.sandbox.isolation`) and sandboxed python
verifiers (wip/verifiers, detected by `crystallise.gate.python_verifier`).
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import pytest
from click.testing import CliRunner

from crystallise.cli import main

HARDENED_SANDBOX = importlib.util.find_spec("crystallise.sandbox.isolation") is not None
SANDBOXED_VERIFIERS = importlib.util.find_spec("crystallise.gate.python_verifier") is not None
needs_sandbox = pytest.mark.xfail(not HARDENED_SANDBOX, strict=True,
                                  reason="main's sandbox: language-layer breaches reach SysV/POSIX IPC and host "
                                         "metadata, forged replies raise TypeError (wip/sandbox fixes both)")
needs_verifiers = pytest.mark.xfail(not SANDBOXED_VERIFIERS, strict=True,
                                    reason="python verifiers of learner eval cases run in the host (wip/verifiers)")
ZEROS = ("host_executions", "injections", "sandbox_escapes", "host_exceptions")


def bench(*args: str) -> tuple[int, dict[str, Any]]:
    out = CliRunner().invoke(main, ["bench", "attacks", "--json", *args])
    lines = [ln for ln in out.stdout.strip().split("\n") if ln.startswith("{")]
    assert lines, out.output
    return out.exit_code, json.loads(lines[-1])


def run_ids(*ids: str) -> dict[str, Any]:
    code, result = bench(*[a for i in ids for a in ("--id", i)])
    assert {r["id"] for r in result["attacks"]} == set(ids)
    result["exit_code"] = code
    return result


def assert_zeros(result: dict[str, Any]) -> None:
    goals = result["goals"]
    found = {k: goals["code_ids"][k] for k in ZEROS if goals[k]}
    details = {r["id"]: r["why"] for r in result["attacks"] if r["outcome"] != "blocked"}
    assert found == {}, details
    assert result["exit_code"] == 0


# -- the families, a subset each --------------------------------------------------------------------------


def test_render_hostile_trace_text_stays_data_through_every_strategy() -> None:
    result = run_ids("render-arith-triple-double", "render-arith-line-separators", "render-strings-cr",
                     "render-lookup-keys-triple-double", "render-coder-form-feeds", "render-hybrid-line-separators",
                     "render-fewshot-line-separators", "render-tree-llm-source-line-breaks",
                     "render-tree-strategy-name")
    assert_zeros(result)
    learned = [r for r in result["attacks"]
               if r["vector"] == "render-learn" and r["id"] != "render-fewshot-line-separators"]
    assert all(r["reached_rendering"] for r in learned)  # the payload did reach code.py: the test is not vacuous
    assert sum(r["committed"] for r in learned) >= 4  # ... and went through the gate into the repo


@needs_sandbox
def test_sandbox_routes_and_os_effects_reach_nothing_of_the_host() -> None:
    assert_zeros(run_ids("sandbox-route-attrgetter-type", "sandbox-route-exec-dict-subclass",
                         "sandbox-route-match-instancecheck", "sandbox-os-file", "sandbox-os-network",
                         "sandbox-os-process", "sandbox-os-ipc", "sandbox-os-metadata", "sandbox-coder-channel"))


def test_sandbox_routes_the_language_layer_stops_on_main() -> None:
    """Routes main's language layer already stops (the source check, the proxies, the wrappers)."""
    result = run_ids("sandbox-route-subclasses", "sandbox-route-dunder-import", "sandbox-route-string-formatter",
                     "sandbox-route-match-keyword", "sandbox-route-attrgetter-dotted", "sandbox-os-exec")
    assert_zeros(result)


@needs_sandbox
def test_forged_worker_replies_raise_nothing_but_sandbox_errors() -> None:
    assert_zeros(run_ids("protocol-call-forged-cpu", "protocol-start-deep", "protocol-call-raised-str",
                         "protocol-worker-forged-cpu", "protocol-call-many", "protocol-call-surrogate"))


def test_bombs_are_contained_in_the_sandbox_and_in_the_host() -> None:
    assert_zeros(run_ids("bomb-mem-string", "bomb-cpu-loop", "bomb-recursion", "bomb-fork-bomb", "bomb-dsl-stretch",
                         "bomb-dsl-replace-chain", "bomb-dsl-regex-const", "bomb-program-json-deep",
                         "bomb-hybrid-json-shapes", "bomb-program-json-helpers", "bomb-serve-deep-input",
                         "bomb-tree-depth-1e4"))


def test_trees_over_the_node_budget_are_refused() -> None:
    assert_zeros(run_ids("bomb-tree-1e6-table", "bomb-tree-1e6-skip", "bomb-tree-1e6-units"))


@needs_verifiers
def test_a_learners_python_verifier_never_runs_in_the_host() -> None:
    assert_zeros(run_ids("grader-python-file", "grader-python-network", "grader-python-module-body"))


def test_a_learners_data_verifier_reaches_no_network_and_cannot_backtrack() -> None:
    assert_zeros(run_ids("grader-schema-remote-ref", "grader-regex-redos"))


def test_a_learners_verifier_too_deep_to_parse_is_refused() -> None:
    assert_zeros(run_ids("grader-schema-recursive"))


@pytest.mark.slow
def test_the_whole_code_catalogue_holds() -> None:
    code, result = bench(*[a for f in ("code-render", "code-sandbox", "code-protocol", "code-bombs", "code-graders")
                           for a in ("--family", f)])
    assert len(result["attacks"]) >= 80
    result["exit_code"] = code
    assert_zeros(result)


# -- negative controls: with a defence off, the suite calls the break-out --------------------------------


def test_the_suite_sees_an_injection_when_data_reaches_a_comment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The old renderer's bug: a template key written into a `# key` comment of code.py."""
    import crystallise.harness.programs.rendering as render

    real = render._arith

    def commented(body: dict[str, Any]) -> str:
        keys = " ".join(r["key"] for r in body["rules"]).replace("\n", " ").replace("\r", " ")
        return real(body) + "\n# rules for: " + keys + "\n"

    monkeypatch.setattr(render, "_arith", commented)
    result = run_ids("render-arith-triple-double")
    (r,) = result["attacks"]
    assert r["outcome"] == "leaked" and any("COMMENT" in i for i in r["injection"])
    assert result["goals"]["injections"] == 1 and result["exit_code"] == 1


def test_the_suite_sees_a_host_compile_of_trace_text(monkeypatch: pytest.MonkeyPatch) -> None:
    from crystallise.harness.programs import interp

    real = interp._Arith._match

    def compiling(self: Any, text: Any) -> Any:
        if isinstance(text, str):
            compile(repr(text), "<trace>", "eval")  # what the old renderer effectively did
        return real(self, text)

    monkeypatch.setattr(interp._Arith, "_match", compiling)
    result = run_ids("render-arith-cr")
    assert result["goals"]["host_executions"] == 1 and result["attacks"][0]["host_exec"]


# -- the fixes the suite led to -----------------------------------------------------------------------------


def test_jsonl_rows_holding_line_separators_read_back_whole() -> None:
    from crystallise.governance.protect import check_protected
    from crystallise.harness.spec import View, dump_jsonl
    from crystallise.types import ChangeSet, Delta

    rows = [{"id": "a", "input": "x\u2028y\x85z\u2029", "expected": "1"},
            {"id": "b", "input": "\x1c\x1d", "expected": "2"}]
    text = dump_jsonl(rows)
    assert View(lambda p: text).jsonl("tasks/t/evals.jsonl") == rows
    cs = ChangeSet(learner="crystallise", layer="harness", deltas=[
        Delta(op="set", target="artifact", path="tasks/t/evals.jsonl", before=None, after=text)])
    assert check_protected(cs, read=lambda p: None) == []
    deep = '{"id": "c", "expected": "1", "input": ' + "[" * 50_000 + "]" * 50_000 + "}\n"
    cs.deltas[0].after = text + deep
    assert [v.rule for v in check_protected(cs, read=lambda p: None)] == ["append-only"]


def test_llm_source_with_other_line_breaks_is_shown_as_text_and_part_names_are_never_data() -> None:
    from crystallise.harness.programs import FORMAT, render
    from crystallise.harness.synth.compose import nestable

    src = 'def solve(x):\n    s = "a\x0cb"  # c\x0bd\n    return x\n'
    assert not nestable(src) and nestable(src.replace("\x0c", "").replace("\x0b", ""))
    group = {"unit": "", "prefix": "", "suffix": "", "arg_keys": None,
             "codec": {"kind": "any", "true": "T", "false": "F"}, "fn": {"kind": "source", "source": src}}
    tree = {"format": FORMAT, "parts": [{"strategy": "x\nimport os", "units": None, "hybrid": False,
                                         "body": {"kind": "grouped", "mode": "none", "groups": [group]}}]}
    code = render(tree)
    assert repr(src) in code and "import os" not in code.replace(repr("x\nimport os"), "")


def test_strings_helpers_are_bounded_and_take_only_safe_regexes() -> None:
    from crystallise.harness.synth import strings_runtime as rt

    assert rt.keep("a" * 28 + "b", "(a+)+$") is None and rt.has("abc", ".") is None
    assert rt.tok("John Smith", rt.WORD, 1) == "Smith" and rt.keep("801-456", rt.DIGITS) == "801456"
    assert rt.join("a+b", r"\+", "-") == "+" and rt.ntok("a.b.c", r"\.") == 2 and rt.ntok("a.b", ".") is None
    assert rt.stretch(rt.repeat(1, 1000), 100) == [1] * 100_000
    assert rt.stretch([1] * 20_000, 100) is None
    assert rt.replace("a" * 1000, "a", "a" * 2000) is None and rt.replace("ab", "a", "xy") == "xyb"
    assert rt.cat("x" * rt.LIMIT, "y") is None and rt.lcat([1] * rt.LIMIT, [2]) is None


def test_hostile_artifacts_and_inputs_fall_back_or_are_refused() -> None:
    from crystallise.backends.scripted import ScriptedBackend
    from crystallise.errors import ValidationError
    from crystallise.harness.runtime import TaskRuntime, load_program
    from crystallise.harness.spec import TaskSpec, View
    from crystallise.harness.synth.hybrid import _specs

    deep = "[" * 100_000 + "]" * 100_000
    assert load_program(View(lambda p: deep), "t") == (None, "program.json is not a JSON object")
    assert _specs("[]") == {} and _specs('{"units": 5}') == {} and _specs(deep) == {}
    assert _specs('{"units": {"u": {"prefix": [], "suffix": "", "fields": ["a"], "instructions": ""}}}') == {}
    rt = TaskRuntime(TaskSpec(name="t"), View(lambda p: None), ScriptedBackend(lambda r: "x"))
    value: Any = "x"
    for _ in range(100_000):
        value = [value]
    with pytest.raises(ValidationError, match="nested"):
        rt.answer(value)
