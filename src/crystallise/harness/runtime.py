"""Serving a task at its grade: code first where it has earned it, else the LLM.

    answer(input)
      1. G4/G5 with tasks/<name>/code.py: run `solve(input)` in the sandbox
         -> a value: served by code (no LLM call)
         -> None (abstain), an exception or a timeout: fall through (G4) / return None (G5)
      2. LLM: system = instructions + playbook bullets, few-shot = the k verified
         examples most similar to the input, user = the input; JSON schema for
         non-text outputs (validated, repaired once).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from crystallise.backends.base import Backend, CompletionRequest, Message
from crystallise.errors import SandboxError
from crystallise.harness.spec import TaskSpec, View, task_path
from crystallise.types import Item

__all__ = ["Answer", "TaskRuntime", "close_sandboxes", "render_bullets"]

DEFAULT_INSTRUCTIONS = "Answer the request. Reply with the answer only, no explanation."
_TOKEN = re.compile(r"\w+")


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


# One worker process per distinct program, shared by every runtime in the process:
# the gate builds many short-lived runtimes over the same code.
_SANDBOXES: OrderedDict[str, Any] = OrderedDict()
_SANDBOX_LOCK = threading.Lock()
_MAX_SANDBOXES = 8


def _sandbox_for(source: str) -> Any:
    from crystallise.harness.sandbox import Sandbox

    key = hashlib.sha256(source.encode()).hexdigest()
    with _SANDBOX_LOCK:
        box = _SANDBOXES.pop(key, None)
        if box is None:
            box = Sandbox(source, timeout_s=2.0)
        _SANDBOXES[key] = box
        while len(_SANDBOXES) > _MAX_SANDBOXES:
            _, old = _SANDBOXES.popitem(last=False)
            old.close()
        return box


def close_sandboxes() -> None:
    with _SANDBOX_LOCK:
        while _SANDBOXES:
            _SANDBOXES.popitem()[1].close()


def approx_tokens(text: str) -> int:
    """~4 characters a token: good enough for budgets and reports, and model-independent."""
    return (len(text) + 3) // 4


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
    ) -> None:
        self.spec = spec
        self.view = view
        self.backend = backend
        self.bullets = list(bullets)
        self.examples_k = examples_k
        self.code = view.read(task_path(spec.name, "code.py")) if spec.grade in ("G4", "G5") else None
        self.instructions = view.read(task_path(spec.name, "prompt.md")) or spec.description or DEFAULT_INSTRUCTIONS
        self.examples = view.jsonl(task_path(spec.name, "examples.jsonl"))

    def answer(self, value: Any, *, record: dict[str, Any] | None = None) -> Answer:
        reason = None
        if self.code:
            try:
                out = _sandbox_for(self.code).call(value)
            except SandboxError as e:
                out, reason = None, f"code failed: {type(e).__name__}: {e}"
            else:
                if out is not None:
                    return Answer(output=out, served_by="code")
                reason = "code abstained"
                from crystallise.harness.synth.hybrid import answer as hybrid_answer  # LLM fills fields, code computes

                hybrid = hybrid_answer(self, value, record)
                if hybrid is not None:
                    return hybrid
            if self.spec.grade == "G5":
                return Answer(output=None, served_by="none", fallback_reason=reason)
        ans = self._llm(value, record)
        ans.fallback_reason = reason
        return ans

    def prompt(self, value: Any) -> tuple[list[Message], int]:
        """The chat messages for `value`, and how many tokens of learned context they hold."""
        system = self.instructions.strip()
        learned = 0
        if self.bullets:
            block = render_bullets(self.bullets)
            system += "\n\nPlaybook (lessons from earlier runs):\n" + block
            learned += approx_tokens(block)
        messages = [Message("system", system)]
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        for ex in _similar(self.examples, text, self.examples_k):
            q = ex["input"] if isinstance(ex["input"], str) else json.dumps(ex["input"], ensure_ascii=False)
            a = ex["output"] if isinstance(ex["output"], str) else json.dumps(ex["output"], ensure_ascii=False)
            messages += [Message("user", q), Message("assistant", a)]
            learned += approx_tokens(q) + approx_tokens(a)
        messages.append(Message("user", text))
        return messages, learned

    def _llm(self, value: Any, record: dict[str, Any] | None) -> Answer:
        from crystallise.backends.structured import complete_json

        messages, learned = self.prompt(value)
        request = CompletionRequest(
            messages=messages, max_tokens=self.spec.max_tokens, metadata={"record": record} if record else {}
        )
        shown = [it.id for it in self.bullets]
        if self.spec.text_output:
            c = self.backend.complete(request)
            out: Any = c.text.strip()
            calls = 1
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
        )
