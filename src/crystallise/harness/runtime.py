"""Serving a task at its grade: code first where it has earned it, else the LLM.

    answer(input)
      1. G4/G5 with a program (tasks/<name>/program.json "program", a tree): the interpreter
         runs it (LLM-written parts of it in the sandbox; code.py is only its rendering)
         -> a value that fits the output schema: served by code (no LLM call)
         -> None, and a hybrid unit claims the input (tasks/<name>/hybrid.json): one
            extraction call fills its fields, the hybrid part computes: served by "hybrid"
         -> None (abstain), a sandbox failure or malformed reply, a program that does not
            load, or a value that breaks the output schema: fall through to the LLM (G4) /
            return None (G5), with the reason in `Answer.fallback_reason` (`fallback_kind`
            names its class); the task span records it
      2. LLM: system = instructions + playbook bullets, few-shot = the k verified
         examples most similar to the input, user = the input; JSON schema for
         non-text outputs (validated, repaired once). A text task whose schema
         constrains the string (a `pattern` or an `enum`, learned at G2) has its reply
         checked the same way and repaired once.

Code outputs of a text task are normalised first: a number or a bool becomes its
string (`3.5` -> `"3.5"`), since programs compute values and the task answers text.

Serving follows scope. A runtime for an org reads the org's namespace (`View(org=…)`,
`orgs/<org>/tasks/<name>/`): its program, prompt and examples first, then the agent-level
(shared) ones, then the LLM. Nothing another org's runs taught is ever in that order: an
org's artifacts live only in its own namespace, and the shared ones are learned from the
operator's own runs (no org) or promoted by review.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from crystallise.backends.base import Backend, Completion, CompletionRequest, Message, approx_tokens
from crystallise.errors import SandboxError, ValidationError
from crystallise.harness.programs import Program, ProgramError, load, sandbox_runner
from crystallise.harness.programs import close_sandboxes as close_sandboxes
from crystallise.harness.spec import TaskSpec, View, task_path
from crystallise.types import Item

__all__ = [
    "ABSTAINED",
    "Answer",
    "TaskRuntime",
    "close_sandboxes",
    "code_sha",
    "constrains_text",
    "fallback_kind",
    "render_bullets",
]

DEFAULT_INSTRUCTIONS = "Answer the request. Reply with the answer only, no explanation."
_TOKEN = re.compile(r"\w+")

# Fallback reasons (their first words name the class; `fallback_kind` reads them back).
ABSTAINED = "code abstained"
_FAILED = "code failed"
_SCHEMA = "code broke the output schema"


def fallback_kind(reason: str | None) -> str | None:
    """The class of a fallback reason: "abstain" | "exception" | "schema" (None for none).

    >>> fallback_kind("code failed: CodeRaised: crystallised code raised ZeroDivisionError")
    'exception'
    """
    if not reason:
        return None
    if reason.startswith(_SCHEMA):
        return "schema"
    if reason.startswith(_FAILED):
        return "exception"
    return "abstain"


def code_sha(source: str | None) -> str | None:
    """A short content hash of a program: which code answered is recorded on every task span."""
    return hashlib.sha256(source.encode()).hexdigest()[:12] if source else None


def constrains_text(schema: dict[str, Any]) -> bool:
    """True for a string schema that says more than "a string" (pattern, enum, lengths, format)."""
    return schema.get("type") == "string" and any(k for k in schema if k not in ("type", "title", "description"))


@dataclass
class Answer:
    output: Any
    served_by: str  # "code" | "hybrid" (LLM-extracted fields, code computed) | "llm" | "none"
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    context_tokens: int = 0  # tokens of learned context put in the prompt (bullets + examples)
    shown_items: list[str] = field(default_factory=list)
    fallback_reason: str | None = None
    code_sha: str | None = None  # the program that ran (served or fell back), if any
    schema_error: str | None = None  # an LLM reply that broke a constrained text schema even after repair


def load_program(view: View, name: str) -> tuple[Program | None, str | None]:
    """The task's program from program.json ("program"), or (None, why not)."""
    text = view.read(task_path(name, "program.json"))
    try:
        tree = json.loads(text).get("program") if text else None
    except (ValueError, AttributeError, RecursionError):  # RecursionError: nested too deep to parse
        return None, "program.json is not a JSON object"
    if tree is None:
        return None, "no program tree in program.json (a program learned before trees: run learn again)"
    try:
        return load(tree, sandbox_runner), None
    except ProgramError as e:
        return None, f"the program does not load: {e}"


def render_bullets(items: Sequence[Item]) -> str:
    return "\n".join(f"- {it.text}" for it in items)


def _similar(examples: list[dict[str, Any]], text: str, k: int) -> list[dict[str, Any]]:
    """The k examples sharing the most word tokens with `text` (ties: most recent first)."""
    if k <= 0 or not examples:
        return []
    words = set(_TOKEN.findall(text.lower()))
    scored = [
        (len(words & set(_TOKEN.findall(str(ex["input"]).lower()))), i, ex) for i, ex in enumerate(examples)
    ]
    scored.sort(key=lambda s: (-s[0], -s[1]))
    return [ex for _, _, ex in scored[:k]]


class TaskRuntime:
    """Answers one task through a `View` of its artifacts."""

    def __init__(
        self,
        spec: TaskSpec,
        view: View,
        backend: Backend,
        *,
        bullets: Sequence[Item] = (),
        examples_k: int = 3,
        org: str | None = None,
    ) -> None:
        self.spec = spec
        self.view = view
        self.backend = backend
        self.bullets = list(bullets)
        self.examples_k = examples_k
        if view.org is None and org is not None:
            view = view.for_org(org)  # an org is served from its own namespace
        self.view = view
        self.org = view.org
        self.code = view.read(task_path(spec.name, "code.py")) if spec.grade in ("G4", "G5") else None
        self.code_sha = code_sha(self.code)
        self.program: Program | None = None
        self._unloadable: str | None = None
        if self.code is not None:
            self.program, self._unloadable = load_program(view, spec.name)
        self._validator = _validator(spec.output_schema)
        self._plain_text = spec.output_schema == {"type": "string"}
        shared = view.shared() if view.org is not None else None
        self.instructions = (view.read(task_path(spec.name, "prompt.md"))
                             or (shared.read(task_path(spec.name, "prompt.md")) if shared else None)
                             or spec.description or DEFAULT_INSTRUCTIONS)
        # The org's own examples, then the shared ones; a row tagged with another org (written before
        # namespaces) is never shown: one tenant's inputs never reach another's prompt.
        rows = view.jsonl(task_path(spec.name, "examples.jsonl"))
        if shared is not None:
            rows += shared.jsonl(task_path(spec.name, "examples.jsonl"))
        self.examples = [e for e in rows if e.get("org") in (None, self.org)]
        # Serving order org -> agent -> LLM: the shared program answers what the org's own does not.
        self.agent: TaskRuntime | None = None
        if shared is not None:
            agent_spec = shared.spec(spec.name)
            if agent_spec is not None and agent_spec.grade in ("G4", "G5"):
                self.agent = TaskRuntime(agent_spec, shared, backend, examples_k=0)

    def answer(self, value: Any, *, record: dict[str, Any] | None = None) -> Answer:
        ans, reason = self.code_answer(value, record)
        if ans is not None:
            return ans
        if self.agent is not None:  # the org's program (if any) abstained: the agent-level program next
            shared, why = self.agent.code_answer(value, record)
            if shared is not None and shared.served_by != "none":
                return shared
            reason = reason or why
        if self.code and self.spec.grade == "G5":
            return Answer(output=None, served_by="none", fallback_reason=reason, code_sha=self.code_sha)
        ans = self.llm_answer(value, record=record)
        ans.fallback_reason = reason
        ans.code_sha = self.code_sha
        return ans

    def code_answer(self, value: Any, record: dict[str, Any] | None) -> tuple[Answer | None, str | None]:
        """The program's answer (code or hybrid), or (None, why it fell through)."""
        reason = None
        if self.code:
            if self.program is None:
                out, reason = None, f"{_FAILED}: {self._unloadable}"
            else:
                result = self.program.run(value)
                out = result.output
                if out is None and result.error:
                    reason = f"{_FAILED}: {result.error}"[:500]
                elif out is None:
                    reason = ABSTAINED
                if out is None:
                    from crystallise.harness.synth.hybrid import answer as hybrid  # LLM fills fields, code computes

                    try:
                        ans = hybrid(self, value, record)
                    except SandboxError as e:  # the LLM-written compute failed: the LLM answers instead
                        ans, reason = None, f"{_FAILED}: hybrid: {type(e).__name__}: {e}"[:500]
                    if ans is not None and self._schema_error(self._normalise(ans.output)) is None:
                        ans.output, ans.code_sha = self._normalise(ans.output), self.code_sha
                        return ans, None
                else:
                    out = self._normalise(out)
                    broken = self._schema_error(out)
                    if broken is None:
                        return Answer(output=out, served_by="code", code_sha=self.code_sha), None
                    reason = f"{_SCHEMA}: {broken}"
        return None, reason

    def _normalise(self, out: Any) -> Any:
        if self.spec.text_output and isinstance(out, (bool, int, float)):
            return str(out)
        return out

    def _schema_error(self, out: Any) -> str | None:
        """Why `out` breaks the output schema, or None when it fits (plain strings skip jsonschema: hot path)."""
        if self._plain_text:
            return None if isinstance(out, str) else f"at (root): {out!r} is not of type 'string'"
        import jsonschema

        error = jsonschema.exceptions.best_match(self._validator.iter_errors(out))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return f"at {where}: {error.message}"

    def prompt(self, value: Any) -> tuple[list[Message], int]:
        """The chat messages for `value`, and how many tokens of learned context they hold."""
        system = self.instructions.strip()
        learned = 0
        if self.bullets:
            block = render_bullets(self.bullets)
            system += "\n\nPlaybook (lessons from earlier runs):\n" + block
            learned += approx_tokens(block)
        messages = [Message("system", system)]
        try:
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError) as e:
            raise ValidationError(f"the input must be a JSON value nested at most ~900 deep: {e}") from None
        for ex in _similar(self.examples, text, self.examples_k):
            q = ex["input"] if isinstance(ex["input"], str) else json.dumps(ex["input"], ensure_ascii=False)
            a = ex["output"] if isinstance(ex["output"], str) else json.dumps(ex["output"], ensure_ascii=False)
            messages += [Message("user", q), Message("assistant", a)]
            learned += approx_tokens(q) + approx_tokens(a)
        messages.append(Message("user", text))
        return messages, learned

    def llm_answer(self, value: Any, *, record: dict[str, Any] | None = None) -> Answer:
        """The LLM's answer alone (no code): what serves below G4, the fallback, and the shadow check."""
        from crystallise.backends.structured import complete_json

        messages, learned = self.prompt(value)
        request = CompletionRequest(
            messages=messages, max_tokens=self.spec.max_tokens, metadata={"record": record} if record else {}
        )
        shown = [it.id for it in self.bullets]
        schema_error = None
        if self.spec.text_output:
            c = self.backend.complete(request)
            out: Any = c.text.strip()
            calls = 1
            if constrains_text(self.spec.output_schema):
                out, c, calls, schema_error = self._repair_text(request, c, out)
        else:
            out, c, repaired = complete_json(self.backend, request, self.spec.output_schema)
            calls = 2 if repaired else 1
        return Answer(
            output=out,
            served_by="llm",
            llm_calls=calls,
            prompt_tokens=c.prompt_tokens,
            completion_tokens=c.completion_tokens,
            context_tokens=learned,
            shown_items=shown,
            schema_error=schema_error,
        )

    def _repair_text(self, request: CompletionRequest, c: Completion,
                     out: str) -> tuple[str, Completion, int, str | None]:
        """G2 for text: a reply that breaks the learned string schema gets one repair turn."""
        error = self._schema_error(out)
        if error is None:
            return out, c, 1, None
        hint = self.spec.output_schema.get("enum") or self.spec.output_schema.get("pattern")
        repair = [
            *request.messages,
            Message("assistant", c.text),
            Message("user", f"Your reply does not have the required form ({error}). The answer must match "
                            f"{json.dumps(hint, ensure_ascii=False)}. Reply with the answer only."),
        ]
        c2 = self.backend.complete(CompletionRequest(messages=repair, max_tokens=request.max_tokens,
                                                     metadata=request.metadata))
        fixed = c2.text.strip()
        return fixed, c2, 2, self._schema_error(fixed)


def _validator(schema: dict[str, Any]) -> Any:
    from crystallise.schemas import validator

    return validator(schema)
