"""Hybrid programs: the LLM fills a typed schema, code computes the answer.

Some tasks are arithmetic the small model cannot do over values only a model can pick out
(which number is the risk-free rate when the question states three percentages in any order).
A hybrid part splits the two:

    learn, per template group (e.g. one financial formula):
      1. the coder model writes `compute(<one parameter per input value>)` from the template's
         constant text (the formula and its explanation) and a few questions with answers;
         its parameters are the fields of the extraction schema
      2. the extraction model (the task's own LLM) fills {field: number} for each fit case, as
         schema-constrained JSON; the code *snaps* each value to a number written in the text
         and types it there (5% -> 0.05, $1.2 million -> 1200000), so the model only has to say
         which number plays which role
      3. compute -> format (the rounding that reproduces the answers) -> compare; fit cases that
         come out right become few-shot examples for the extraction prompt; failures go back
         to the coder (exact values, expected, got) or are extracted again with the examples
    serve (`answer`): code abstains -> hybrid_unit(value) -> one extraction call -> solve(value, fields)

The extraction schema, instructions and examples are plain JSON in `tasks/<name>/hybrid.json`;
the part itself is a tree in program.json (run by the interpreter) whose `compute` functions,
being LLM-written, run only in the sandbox; `code.py` shows it to people. A unit
verified before is kept as it was when its group comes up again (no new coder call); it is
replayed on the new held-out cases like every candidate.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from typing import Any

from crystallise.backends.base import Backend, CompletionRequest, Message
from crystallise.errors import CrystalliseError, SandboxError
from crystallise.harness.programs import ProgramError, load_body, sandbox_runner
from crystallise.harness.synth.base import Candidate, Case, Problem
from crystallise.harness.synth.coder import SYSTEM, clean_code, extract_code
from crystallise.harness.synth.strategies import group_cases, retry
from crystallise.harness.synth.template import Template

__all__ = ["HybridStrategy", "answer", "body", "extraction_request"]

FORMATS = [(2, "half_up"), (2, "half_even"), (0, "half_up"), (1, "half_up"), (3, "half_up"), (4, "half_up"),
           (-1, "")]

def params(code: str, name: str = "compute") -> list[str] | None:
    """The positional parameter names of `name` in `code`."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            a = node.args
            if a.vararg or a.kwarg or a.kwonlyargs:
                return None
            return [p.arg for p in a.posonlyargs + a.args]
    return None


def body(mode: str, units: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The part's body as data (`harness/programs`, kind "hybrid"): template matching, snapping and
    formatting run in the interpreter; each unit's LLM-written `compute` runs in the sandbox."""
    return {"kind": "hybrid", "mode": mode, "units": {
        key: {"prefix": u["prefix"], "suffix": u["suffix"], "fields": list(u["fields"]),
              "places": u.get("places", -1), "rounding": u.get("rounding", ""),
              "compute": {"kind": "source", "source": u["code"]}}
        for key, u in sorted(units.items())}}


def extraction_request(spec: dict[str, Any], text: str) -> tuple[CompletionRequest, dict[str, Any]]:
    """The chat request and JSON schema that make the LLM fill one unit's fields for `text`."""
    fields = spec["fields"]
    schema = {"type": "object", "properties": {f: {"type": "number"} for f in fields}, "required": list(fields),
              "additionalProperties": False}
    system = (f"{spec['instructions']}\n\nRead the question and give each field's value as a JSON number, "
              "copied as written in the question (5% -> 5, $1.2 million -> 1.2). Fields: " + ", ".join(fields)
              + ". Reply with one JSON object.")
    messages = [Message("system", system)]
    for shot in spec.get("shots", []):
        messages += [Message("user", shot["x"]), Message("assistant", json.dumps(shot["fields"]))]
    messages.append(Message("user", text))
    return CompletionRequest(messages=messages, schema=schema, max_tokens=24 + 16 * len(fields)), schema


class HybridStrategy:
    """Coder-written compute + LLM-extracted fields, per template group (module docstring)."""

    name = "hybrid"

    def __init__(self, coder: Backend, extractor: Backend, *, rounds: int = 2, min_cases: int = 3,
                 max_groups: int = 25, shots: int = 3, max_fields: int = 8, min_fit: float = 0.6,
                 examples: int = 4) -> None:
        self.coder = coder
        self.extractor = extractor
        self.rounds = rounds
        self.min_cases = min_cases
        self.max_groups = max_groups
        self.shots = shots
        self.max_fields = max_fields
        self.min_fit = min_fit
        self.examples = examples
        self.tried: dict[str, int] = {}
        self.calls = {"coder": 0, "extract": 0}
        self.metric: Any = None
        self._memo: dict[tuple[str, str, str], dict[str, Any] | None] = {}
        self._last: dict[tuple[tuple[str, ...], str], dict[str, Any]] = {}  # latest fields per (schema, text)

    def propose(self, problem: Problem) -> Candidate | None:
        self.metric = problem.metric
        cases = [c for c in problem.fit if isinstance(c.input, str) and _number(c.output) is not None]
        mode, tpls, groups = group_cases(cases, self.min_cases)
        self.tried = {**problem.previous.get("state", {}).get("tried", {}), **self.tried}
        todo = [(u, cs) for u, cs in sorted(groups.items(), key=lambda kv: -len(kv[1]))
                if not u.startswith("args:") and retry(self.tried, u, len(cs))][: self.max_groups]
        units: dict[str, dict[str, Any]] = {}
        log: dict[str, Any] = {}
        before = dict(self.calls)
        kept = {k: u for k, u in problem.previous.get("state", {}).get("units", {}).items()
                if k in set(problem.previous.get("units") or [])}  # verified last time: no new coder call
        for i, (key, group) in enumerate(todo):
            problem.say(f"hybrid: group {i + 1}/{len(todo)} ({len(group)} cases)")
            if key in kept and kept[key].get("prefix") == tpls[key].prefix:
                units[key], log[key[:80]] = kept[key], {"kept": True}
                continue
            spec, info = self._unit(problem, tpls[key], group)
            log[key[:80]] = info
            if spec is None:
                self.tried[key] = len(group)
            else:
                self.tried.pop(key, None)
                units[key] = spec
        if not units:  # what was tried stays as evidence (program.json "tried")
            return Candidate(self.name, {}, state={"tried": dict(self.tried), "groups": log,
                                                   "coder_calls": self.calls["coder"] - before["coder"],
                                                   "extract_calls": self.calls["extract"] - before["extract"]})
        specs = {k: _public(u) for k, u in units.items()}
        memo_specs = dict(specs)

        def extract(value: Any, unit: str) -> dict[str, Any] | None:
            """Fit cases: the fields measured while scoring; new (held-out) cases: one call, with shots."""
            spec = memo_specs.get(unit)
            text = Template(unit, spec["prefix"], spec["suffix"]).payload(value) if spec else None
            if text is None:
                return None
            seen = self._last.get((tuple(spec["fields"]), text))
            return seen if seen is not None else self._extract(spec, text)

        return Candidate(self.name, body(mode, units), state={"tried": dict(self.tried), "units": units},
                         notes={"units": len(units), "coder_calls": self.calls["coder"] - before["coder"],
                                "extract_calls": self.calls["extract"] - before["extract"], "groups": log},
                         extraction={"mode": mode, "units": specs}, extract=extract)

    # -- one unit ------------------------------------------------------------------------------------

    def _unit(self, problem: Problem, template: Template, cases: Sequence[Case]) -> tuple[dict[str, Any] | None,
                                                                                             dict[str, Any]]:
        texts = [template.payload(c.input) or "" for c in cases]
        instructions = _instructions(template)
        messages = [Message("system", SYSTEM), Message("user", self._prompt(template, cases, texts))]
        best: tuple[int, dict[str, Any]] | None = None
        scores: list[int] = []
        shots: list[dict[str, Any]] = []
        for _ in range(self.rounds):
            code = self._ask(messages)
            fields = params(code, "compute") if code else None
            if code is None or not fields or len(fields) > self.max_fields:
                scores.append(-1)
                messages.append(Message("user", "Reply with one ```python block defining `def compute(...)` with "
                                                "one parameter per input value."))
                continue
            if shots and sorted(shots[0]["fields"]) != sorted(fields):
                shots = []  # examples of other fields than this compute takes
            spec = {"prefix": template.prefix, "suffix": template.suffix, "fields": fields, "code": code,
                    "instructions": instructions, "shots": list(shots)}
            results = self._score(spec, cases, texts)
            if results is None:
                scores.append(-1)
                messages.append(Message("user", "The function failed to run. Reply with a corrected `compute` in "
                                                "one ```python block, using only the math module."))
                continue
            right, spec, shots, wrong = results
            scores.append(right)
            if best is None or right > best[0]:
                best = (right, spec)
            if right == len(cases):
                break
            messages += [Message("user", self._feedback(spec, wrong, len(cases)))]
        info = {"scores": scores, "cases": len(cases)}
        if best is None or best[0] < self.min_fit * len(cases):
            return None, info
        return best[1], info

    def _ask(self, messages: list[Message]) -> str | None:
        try:
            reply = self.coder.complete(CompletionRequest(messages=list(messages), max_tokens=400))
        except CrystalliseError:
            return None
        self.calls["coder"] += 1
        messages.append(Message("assistant", reply.text))
        code = extract_code(reply.text)
        return clean_code(code, "compute") if code else None

    def _score(self, spec: dict[str, Any], cases: Sequence[Case], texts: list[str]):
        """Extract (twice for failures, the second time with verified examples), compute, pick the format."""
        try:
            part = load_body(body("none", {"": {**spec, "places": -1, "rounding": ""}}), sandbox_runner)
            sandbox_runner(part.units[""][3].run_source)  # loads the LLM's code (or says why it cannot)
        except (ProgramError, SandboxError):
            return None

        def values(i: int, shots: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, float | None]:
            fields = self._extract({**spec, "shots": shots}, texts[i])
            if fields is None:
                return None, None
            try:
                raw = part.solve(cases[i].input, fields)
            except SandboxError:
                return fields, None
            return fields, _number(raw)

        got = [values(i, spec["shots"]) for i in range(len(cases))]
        places, rounding = _best_format([g[1] for g in got], cases, self.metric)
        ok = [self._right(g[1], c, places, rounding) for g, c in zip(got, cases)]
        shots = [{"x": texts[i], "fields": got[i][0]} for i in range(len(cases)) if ok[i]][: self.shots]
        if shots and not all(ok) and not spec["shots"]:
            for i in range(len(cases)):  # again, with the verified examples in the prompt
                if not ok[i]:
                    got[i] = values(i, shots)
                    ok[i] = self._right(got[i][1], cases[i], places, rounding)
        spec = {**spec, "places": places, "rounding": rounding, "shots": shots}
        wrong = [(texts[i], got[i][0], got[i][1], cases[i].output) for i in range(len(cases)) if not ok[i]]
        return sum(ok), spec, shots, wrong

    def _right(self, value: float | None, case: Case, places: int, rounding: str) -> bool:
        from crystallise.harness.synth.numbers import fmt_number

        return value is not None and bool(self.metric(fmt_number(value, places, rounding) or "", case.output))

    def _extract(self, spec: dict[str, Any], text: str) -> dict[str, Any] | None:
        key = (json.dumps(spec["fields"]), json.dumps(spec.get("shots", []), sort_keys=True), text)
        if key in self._memo:
            return self._memo[key]
        from crystallise.backends.structured import complete_json

        request, schema = extraction_request(spec, text)
        try:
            value, _, _ = complete_json(self.extractor, request, schema)
        except CrystalliseError:
            value = None
        self.calls["extract"] += 1
        self._memo[key] = value if isinstance(value, dict) else None
        if self._memo[key] is not None:
            self._last[(tuple(spec["fields"]), text)] = self._memo[key]
        return self._memo[key]

    def _prompt(self, template: Template, cases: Sequence[Case], texts: list[str]) -> str:
        shown = "\n".join(f"Q: {t[:400]}\nA: {c.output}" for t, c in list(zip(texts, cases))[: self.examples])
        return (
            "Write a Python function `compute(...)` for this calculation.\n\n"
            f"{_instructions(template)}\n\nQuestions of this kind, with their answers:\n{shown}\n\n"
            "compute takes one parameter per number it needs, named in snake_case after what the number is "
            "(for example net_credit_sales), and returns the answer as a number, unrounded. Percentages arrive "
            "as fractions (5% is 0.05) and amounts in full ($1.2 million is 1200000). Use only the math module "
            "if you need one. No print(), no input()."
        )

    @staticmethod
    def _feedback(spec: dict[str, Any], wrong: list[tuple[str, Any, Any, Any]], n: int) -> str:
        lines = []
        for text, fields, got, want in wrong[:3]:
            call = ", ".join(f"{k}={v!r}" for k, v in (fields or {}).items())
            lines.append(f"Q: {text[:300]}\ncompute({call}) returned {got!r}; the answer is {want}")
        return (f"compute is wrong on {len(wrong)} of {n} questions, for instance:\n" + "\n".join(lines)
                + "\nFix compute (keep one parameter per input value) and reply with it in one ```python block.")


def _instructions(template: Template) -> str:
    """The constant text of the template, which states what is to be computed."""
    return template.prefix.strip()[:1200] or "Compute the answer to the question."


def _public(spec: dict[str, Any]) -> dict[str, Any]:
    """What the runtime needs to ask for a unit's fields (hybrid.json)."""
    return {k: spec[k] for k in ("prefix", "suffix", "fields", "instructions", "shots")}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(str(value).replace(",", "").strip())
    except (TypeError, ValueError):
        return None


def _best_format(values: list[float | None], cases: Sequence[Case], metric: Any) -> tuple[int, str]:
    from crystallise.harness.synth.numbers import fmt_number

    def hits(fmt: tuple[int, str]) -> int:
        return sum(1 for v, c in zip(values, cases) if v is not None and metric(fmt_number(v, *fmt) or "", c.output))

    return max(FORMATS, key=hits)


# -- serving ----------------------------------------------------------------------------------------


def _specs(text: str | None) -> dict[str, dict[str, Any]]:
    """hybrid.json's units, only those of the shape `extraction_request` needs (the file is an artifact
    anyone with the repository can write: a malformed one means no hybrid answers, never an exception)."""
    try:
        units = json.loads(text).get("units") if text else None
    except (ValueError, AttributeError, RecursionError):
        return {}
    if not isinstance(units, dict):
        return {}

    def ok(u: Any) -> bool:
        return (isinstance(u, dict) and all(isinstance(u.get(k), str) for k in ("prefix", "suffix", "instructions"))
                and isinstance(u.get("fields"), list) and all(isinstance(f, str) for f in u["fields"])
                and isinstance(u.get("shots", []), list)
                and all(isinstance(s, dict) and isinstance(s.get("x"), str) and isinstance(s.get("fields"), dict)
                        for s in u.get("shots", [])))

    return {k: u for k, u in units.items() if ok(u)}


def answer(runtime: Any, value: Any, record: dict[str, Any] | None = None) -> Any:
    """For `TaskRuntime`: the hybrid answer to `value`, or None (then the LLM answers).

    Reads `tasks/<name>/hybrid.json` once per runtime; one extraction call to the runtime's
    backend, then the program's hybrid part on (value, fields): the interpreter snaps and
    formats, the unit's LLM-written `compute` runs in the sandbox."""
    from crystallise.backends.structured import complete_json
    from crystallise.harness.runtime import Answer
    from crystallise.harness.spec import task_path

    specs = getattr(runtime, "_hybrid_specs", None)
    if specs is None:
        specs = runtime._hybrid_specs = _specs(runtime.view.read(task_path(runtime.spec.name, "hybrid.json")))
    program = runtime.program
    if not specs or program is None:
        return None
    unit = program.hybrid_unit(value)
    spec = specs.get(unit) if isinstance(unit, str) else None
    text = Template(unit, spec["prefix"], spec["suffix"]).payload(value) if spec else None
    if text is None:
        return None
    request, schema = extraction_request(spec, text)
    if record:
        request.metadata["record"] = record
    try:
        fields, completion, repaired = complete_json(runtime.backend, request, schema)
    except CrystalliseError:
        return None
    out = program.run(value, fields).output if isinstance(fields, dict) else None
    if out is None:
        return None
    return Answer(output=out, served_by="hybrid", llm_calls=2 if repaired else 1,
                  prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens)
