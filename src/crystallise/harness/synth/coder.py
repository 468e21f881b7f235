"""LLM-written code: a coder model writes `solve(x)`, the sandbox runs it, failures go back to it.

    for each template group not covered by a cheaper strategy (largest first):
      1. prompt = the task's description + the constant template text + verified examples
                  written as `assert solve(<payload>) == <answer>`
      2. the model replies with a function; it is cleaned (top-level tests and prints dropped)
         and run *in the sandbox* on every fit case of the group
      3. all right -> done; else the exact failing inputs, expected and got values (or the
         exception) go back to the model for another round (`rounds` in all); a small model
         often answers feedback with the same code again, and then it is asked once more with
         sampling (temperature 0.8, seeded by the round, so runs repeat)
      4. the best round is kept if it reproduces >= `min_fit` of the fit cases; the learner
         then verifies it on held-out cases the model never saw

Two things make a small coder model useful here (measured on BIG-Bench-Hard): the constant
instruction text is factored out of the inputs (`template.py`), so `x` is only the varying
part, and answers are normalised to the task's string form by the program, not by the model.

>>> from crystallise.backends.scripted import ScriptedBackend
>>> from crystallise.gate import score_exact
>>> from crystallise.harness.synth.base import Case, Problem
>>> fake = ScriptedBackend(["```python\\ndef solve(x):\\n    return str(eval(x))\\n```"])
>>> cases = [Case(f"{a} and {b} is", str(a and b)) for a in (True, False) for b in (True, False)]
>>> CoderStrategy(fake, min_cases=3).propose(Problem("t", cases, score_exact)).notes["groups"]
1
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from typing import Any

from crystallise.backends.base import Backend, CompletionRequest, Message
from crystallise.errors import CrystalliseError, SandboxError
from crystallise.sandbox import DEFAULT_ALLOWED
from crystallise.harness.synth.base import Candidate, Case, Problem
from crystallise.harness.synth.strategies import group_cases, retry, unit_hash
from crystallise.harness.programs import sandbox_runner
from crystallise.harness.synth.template import GroupProgram, OutputCodec, Template, grouped
from crystallise.harness.synth.verify import Outcome, replay

__all__ = ["CoderStrategy", "clean_code", "extract_code"]

SYSTEM = ("You write small, correct Python functions. Reply with one ```python code block that holds the "
          "complete function and nothing else.")
_FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\r?\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(text: str) -> str | None:
    """The code of a model reply: the fenced block defining a function, else the text from `def`."""
    blocks = [b for b in _FENCE.findall(text) if "def " in b]
    if blocks:
        return next((b for b in blocks if "def solve" in b or "def compute" in b), blocks[0])
    i = text.find("def ")
    if i < 0:
        return None
    j = text.rfind("\nimport ", 0, i)
    return text[j + 1 if j >= 0 else i:]


def clean_code(code: str, name: str = "solve") -> str | None:
    """Keep imports, functions, classes and assignments; drop top-level tests, prints, loops.

    A lone function under another name is aliased to `name`. None when it does not parse
    or defines no function."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    lines = code.splitlines()
    keep: list[str] = []
    funcs: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom, ast.Assign, ast.AnnAssign)):
            start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            keep.append("\n".join(lines[start - 1:node.end_lineno]))
            if isinstance(node, ast.FunctionDef):
                funcs.append(node.name)
    if not funcs:
        return None
    out = "\n\n".join(keep).rstrip() + "\n"
    if name not in funcs:
        out += f"\n\n{name} = {funcs[-1]}\n"
    return out


def _show(value: Any, n: int = 600) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n] + "…"


class CoderStrategy:
    """A coder model writes one function per template group (see the module docstring)."""

    name = "coder"

    def __init__(self, backend: Backend, *, rounds: int = 3, examples: int = 6, max_groups: int = 6,
                 min_cases: int = 8, min_fit: float = 0.95, max_tokens: int = 400, feedback: int = 3,
                 example_chars: int = 2400, max_payload_chars: int = 600, sample_repeats: bool = True) -> None:
        self.backend = backend
        self.rounds = rounds
        self.examples = examples
        self.max_groups = max_groups
        self.min_cases = min_cases  # fit cases a group needs: fewer rarely pin the function down
        self.min_fit = min_fit
        self.max_tokens = max_tokens
        self.feedback = feedback
        self.example_chars = example_chars  # the examples' share of the prompt (at least 3 are shown)
        self.max_payload_chars = max_payload_chars  # groups with longer inputs (median) are left to the LLM
        self.sample_repeats = sample_repeats  # a repair that repeats earlier code is asked again, sampled
        self.tried: dict[str, int] = {}
        self.calls = 0

    def propose(self, problem: Problem) -> Candidate | None:
        mode, tpls, groups = group_cases(problem.fit, self.min_cases)
        self.tried = {**problem.previous.get("state", {}).get("tried", {}), **self.tried}
        found: list[GroupProgram] = []
        log: dict[str, Any] = {}
        todo = [(u, cs) for u, cs in sorted(groups.items(), key=lambda kv: -len(kv[1]))
                if retry(self.tried, u, len(cs)) and self._short(u, cs, tpls)][: self.max_groups]
        calls0 = self.calls
        for i, (unit, cases) in enumerate(todo):
            problem.say(f"coder: group {i + 1}/{len(todo)} ({len(cases)} cases)")
            template = Template(unit, "", "") if unit.startswith("args:") else tpls[unit]
            program, info = self.write(problem, template, cases)
            log[unit[:80] or "(inputs)"] = info
            if program is None:
                self.tried[unit] = len(cases)
            else:
                self.tried.pop(unit, None)
                found.append(program)
        if not found:  # what was tried stays as evidence (program.json "tried"): groups, rounds, scores
            return Candidate(self.name, {}, state={"tried": dict(self.tried), "rounds": log,
                                                   "groups_eligible": len(groups), "groups_tried": len(todo),
                                                   "llm_calls": self.calls - calls0,
                                                   "why": _why(todo, self.min_cases, self.min_fit)})
        return Candidate(self.name, grouped(mode, found), state={"tried": dict(self.tried)},
                         notes={"groups": len(found), "written_by": self.backend.name,
                                "llm_calls": self.calls - calls0, "rounds": log})

    def _short(self, unit: str, cases: Sequence[Case], tpls: dict[str, Template]) -> bool:
        """Inputs short enough for a small model to read six of them and write code."""
        if unit.startswith("args:"):
            return True
        sizes = sorted(len(tpls[unit].payload(c.input) or "") for c in cases)
        return sizes[len(sizes) // 2] <= self.max_payload_chars

    # -- one group ---------------------------------------------------------------------------------

    def write(self, problem: Problem, template: Template, cases: Sequence[Case]) -> tuple[GroupProgram | None,
                                                                                             dict[str, Any]]:
        """The best verified-on-fit program for one group, and a log of the rounds."""
        codec = OutputCodec.infer([c.output for c in cases])
        keys = tuple(sorted(cases[0].input)) if template.key.startswith("args:") else None
        messages = [Message("system", SYSTEM), Message("user", self._prompt(problem, template, cases, keys))]
        best: tuple[int, GroupProgram] | None = None
        scores: list[int] = []
        seen: set[str] = set()
        for round_ in range(self.rounds):
            try:
                reply = self._complete(messages, round_, seen)
            except CrystalliseError as e:
                scores.append(-1)
                return None, {"scores": scores, "error": str(e)[:200]}
            code = extract_code(reply.text)
            code = clean_code(code) if code else None
            if code:
                seen.add(_normal(code))
            messages.append(Message("assistant", reply.text))
            if code is None:
                scores.append(0)
                messages.append(Message("user", "Reply with the complete function `def solve(x):` in one "
                                                "```python code block."))
                continue
            fn = {"kind": "source", "source": code}  # LLM-written: runs in the sandbox only
            program = GroupProgram(template, fn, codec, keys)
            alone = GroupProgram(Template("" if keys is None else template.key, template.prefix, template.suffix),
                                 fn, codec, keys)  # one group: no key needed
            try:
                sandbox_runner(code)  # loads it (and says why it cannot) before any case runs
                outcomes = replay(grouped("none", [alone]), cases, problem.metric)
            except SandboxError as e:
                scores.append(0)
                messages.append(Message("user", f"Your code could not run: {_plain(str(e))}\n"
                                                "Fix it; reply with the complete function in one ```python block."))
                continue
            right = sum(o.correct for o in outcomes)
            scores.append(right)
            if best is None or right > best[0]:
                best = (right, program)
            if right == len(cases):
                break
            messages.append(Message("user", self._feedback(outcomes, template, keys)))
        info = {"scores": scores, "cases": len(cases)}
        if best is None or best[0] < self.min_fit * len(cases):
            return None, info
        return best[1], info

    def _complete(self, messages: list[Message], round_: int, seen: set[str]) -> Any:
        """The model's reply; if it only repeats code it already wrote, one sampled retry (seeded)."""
        reply = self.backend.complete(CompletionRequest(messages=list(messages), max_tokens=self.max_tokens))
        self.calls += 1
        code = extract_code(reply.text)
        if code and clean_code(code) and _normal(clean_code(code) or "") in seen and self.sample_repeats:
            reply = self.backend.complete(CompletionRequest(messages=list(messages), max_tokens=self.max_tokens,
                                                            temperature=0.8, seed=round_))
            self.calls += 1
        return reply

    def _prompt(self, problem: Problem, template: Template, cases: Sequence[Case], keys: tuple[str, ...] | None) -> str:
        shown = self._examples(template, cases, keys)
        if keys:
            head = f"Write a Python function `solve({', '.join(keys)})` for this task."
        else:
            head = "Write a Python function `solve(x)` for this task. `x` is a str."
        parts = [head]
        if problem.description:
            parts.append(f"Task: {problem.description.strip()[:800]}")
        if template.prefix.strip() or template.suffix.strip():
            parts.append("Every input has the form below; only the part <x> is passed to solve:\n"
                         f"{template.prefix[-1500:]}<x>{template.suffix[:300]}")
        parts.append("Examples:\n" + "\n".join(shown))
        rules = (f"Use only these standard-library modules if any: {', '.join(sorted(DEFAULT_ALLOWED))}. "
                 "No input(), print(), files, network or global statements. ")
        if OutputCodec.infer([c.output for c in cases]).kind == "option":
            rules += "Return the letter of the right option, like '(B)', or the text of that option."
        else:
            rules += "Return the answer exactly as in the examples."
        parts.append(rules)
        return "\n\n".join(parts)

    def _examples(self, template: Template, cases: Sequence[Case], keys: tuple[str, ...] | None) -> list[str]:
        """Short examples first, one per distinct answer in turn (so every class is shown)."""
        ranked = sorted(cases, key=lambda c: (len(str(c.input)), unit_hash(c.input)))
        ranked = ranked[: max(self.examples, len(ranked) // 2)]
        by_out: dict[str, list[Case]] = {}
        for c in ranked:
            by_out.setdefault(repr(c.output), []).append(c)
        chosen: list[Case] = []
        used = 0
        while len(chosen) < self.examples and any(by_out.values()):
            for bucket in by_out.values():
                if not bucket or len(chosen) >= self.examples:
                    continue
                size = len(str(bucket[0].input))
                if len(chosen) >= 3 and used + size > self.example_chars:
                    bucket.clear()  # over the budget: no more of this answer
                    continue
                chosen.append(bucket.pop(0))
                used += size
        return [f"assert {self._call(c, template, keys)} == {_show(c.output)}" for c in chosen]

    @staticmethod
    def _call(c: Case, template: Template, keys: tuple[str, ...] | None) -> str:
        if keys:
            return f"solve({', '.join(_show(c.input[k]) for k in keys)})"
        return f"solve({_show(template.payload(c.input))})"

    def _feedback(self, outcomes: Sequence[Outcome], template: Template, keys: tuple[str, ...] | None) -> str:
        wrong = [o for o in outcomes if not o.correct]
        lines = []
        for o in wrong[: self.feedback]:
            call = self._call(o.case, template, keys)
            if o.error:
                lines.append(f"{call} raised {_plain(o.error)} (expected {_show(o.case.output, 300)})")
            else:
                lines.append(f"{call} returned {_show(o.output, 300)} (expected {_show(o.case.output, 300)})")
        return (f"Your function is wrong on {len(wrong)} of {len(outcomes)} examples, for instance:\n"
                + "\n".join(lines)
                + "\nFix the function so that it works for all inputs like these. Reply with the complete "
                  "corrected function in one ```python block.")


def _why(todo: Sequence[Any], min_cases: int, min_fit: float) -> str:
    if not todo:
        return (f"no group to write code for: none has {min_cases} or more fit cases not covered by a cheaper "
                "strategy, short inputs, and no earlier failure on the same cases")
    return f"no function reproduced {min_fit:.0%} of its group's fit cases"


def _normal(code: str) -> str:
    """Code without comments and blank space, to spot a reply that repeats an earlier one."""
    return re.sub(r"\s+", "", re.sub(r"#[^\n]*", "", code))


def _plain(error: str) -> str:
    """A sandbox error as a Python programmer would read it."""
    error = re.sub(r"^\w+: ", "", error)
    error = error.replace("crystallised code raised ", "")
    return re.sub(r" at line \d+", "", error)[:300]
