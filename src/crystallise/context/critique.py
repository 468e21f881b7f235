"""Reflexion-style critiques of failed runs, as proposed deltas against the scope's items.

    failed trace (input, the answer given, the correction / error / comments)
    + the scope's items it showed (and a few related ones), numbered [1] [2] ...
      -> LLM (structured JSON): why it failed, and at most 3 proposals:
           {"op": "add",       "text": "...", "section": "pitfalls"}
           {"op": "update",    "ref": 2, "text": "a sharper wording of item [2]"}
           {"op": "supersede", "ref": 1, "text": "what replaces item [1] from now on"}
           {"op": "retire",    "ref": 3, "reason": "item [3] led the run astray"}
      -> Critique(proposals)   (refs mapped back to item ids; nothing is written here)

Items are numbered instead of shown by id: small models copy a short number far more
reliably than `it_3f9a0c…`. A model that fails the schema (even after one repair) gives a
critique with `error` set and no proposals: a failure to critique is not a lesson. The
curation that checks each proposal (text limits, targets, the section cap) is curate.py.

    >>> from crystallise.backends import ScriptedBackend
    >>> from crystallise.types import Feedback, Trace
    >>> critic = LLMCritic(ScriptedBackend(['{"critique": "units", "deltas": '
    ...                                     '[{"op": "add", "text": "State the unit.", "section": "formatting"}]}']))
    >>> t = Trace(input="3 km + 2 km?", output="5", feedback=[Feedback(trace_id="", score=0.0, correction="5 km")])
    >>> [(p.op, p.text) for p in critic.critique(t, []).proposals]
    [('add', 'State the unit.')]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from crystallise.backends.base import Backend, CompletionRequest, Message
from crystallise.errors import BackendError
from crystallise.types import Item, Trace

__all__ = ["Critic", "Critique", "LLMCritic", "Proposal", "OPS"]

OPS = ("add", "update", "supersede", "retire")

_SCHEMA = {
    "type": "object",
    "properties": {
        "critique": {"type": "string"},
        "deltas": {
            "type": "array",
            "maxItems": 6,
            "items": {
                "type": "object",
                "properties": {
                    "op": {"type": "string", "enum": list(OPS)},
                    "ref": {"type": ["integer", "null"]},
                    "text": {"type": ["string", "null"]},
                    "section": {"type": ["string", "null"]},
                    "reason": {"type": ["string", "null"]},
                },
                "required": ["op"],
            },
        },
    },
    "required": ["critique", "deltas"],
}

_SYSTEM = (
    "You review a FAILED run of an AI agent and maintain its playbook of short, general lessons. "
    "Say in one sentence why the run failed, then propose at most 3 changes to the playbook: "
    '"add" a new one-sentence lesson (with a section: strategies, pitfalls, rules or formatting), '
    '"update" a numbered item with a better wording, "supersede" a numbered item that is now wrong with '
    'its replacement, or "retire" a numbered item that misled the run. Prefer updating a numbered item '
    "over adding a near-duplicate. Lessons must be general: do not copy the run's specific numbers or names. "
    'Reply with JSON: {"critique": "...", "deltas": [{"op": "add", "text": "...", "section": "pitfalls"}, '
    '{"op": "update", "ref": 1, "text": "..."}]}. Reply with "deltas": [] only when the failure teaches nothing '
    "general (a typo in the input, an answer the correction itself contradicts)."
)


@dataclass
class Proposal:
    """One change a critique proposes; `target` is an item id (update / supersede / retire)."""

    op: str
    trace_id: str
    text: str | None = None
    section: str | None = None
    target: str | None = None
    reason: str = ""


@dataclass
class Critique:
    trace_id: str
    text: str = ""
    proposals: list[Proposal] = field(default_factory=list)
    error: str | None = None
    dropped: list[str] = field(default_factory=list)  # proposals that named no usable item


class Critic(Protocol):
    def critique(self, trace: Trace, items: Sequence[Item]) -> Critique: ...


def _show(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + f" … [{len(text) - limit} more characters]"


def describe(trace: Trace, items: Sequence[Item], max_chars: int = 3000) -> str:
    """The user message of a critique request: the run, its outcome and the numbered items."""
    parts = [f"Input:\n{_show(trace.input, max_chars)}", f"Answer given: {_show(trace.output, max_chars // 3)}"]
    for fb in trace.feedback:
        if fb.correction is not None:
            parts.append(f"Correct answer: {_show(fb.correction, max_chars // 3)}")
        if fb.comment:
            parts.append(f"Feedback: {_show(fb.comment, 500)}")
    if trace.error:
        parts.append(f"Error: {_show(trace.error, 500)}")
    if items:
        parts.append("Playbook items the run saw (or related ones):\n" + "\n".join(
            f"[{n}] ({it.section}) {it.text}" for n, it in enumerate(items, 1)))
    else:
        parts.append("The playbook has nothing on runs like this one yet: add the lesson that would have "
                     "led to the correct answer.")
    return "\n\n".join(parts)


class LLMCritic:
    """Critiques by a model through `complete_json` (see the module docstring)."""

    def __init__(self, backend: Backend, *, max_chars: int = 3000, max_proposals: int = 3,
                 max_tokens: int = 300) -> None:
        self.backend = backend
        self.max_chars = max_chars
        self.max_proposals = max_proposals
        self.max_tokens = max_tokens

    def critique(self, trace: Trace, items: Sequence[Item]) -> Critique:
        from crystallise.backends.structured import complete_json

        request = CompletionRequest(
            messages=[Message("system", _SYSTEM), Message("user", describe(trace, items, self.max_chars))],
            max_tokens=self.max_tokens,
        )
        try:
            value, _, _ = complete_json(self.backend, request, _SCHEMA)
        except BackendError as error:  # ModelOutputError included: a failed critique is no lesson
            return Critique(trace.id, error=f"{type(error).__name__}: {str(error)[:200]}")
        out = Critique(trace.id, text=" ".join(str(value.get("critique") or "").split())[:500])
        for entry in value["deltas"][: self.max_proposals]:
            op = str(entry["op"])
            ref = entry.get("ref")
            target = None
            if op != "add":
                if not isinstance(ref, int) or isinstance(ref, bool) or not 1 <= ref <= len(items):
                    out.dropped.append(f"{op} names item [{ref}], which the critique was not shown")
                    continue
                target = items[ref - 1].id
            text = entry.get("text")
            out.proposals.append(Proposal(
                op=op, trace_id=trace.id, text=text if isinstance(text, str) else None,
                section=entry.get("section") if isinstance(entry.get("section"), str) else None,
                target=target, reason=str(entry.get("reason") or "")[:300],
            ))
        return out
