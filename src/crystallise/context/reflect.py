"""Context learners: reflection on failures -> playbook bullets; credit from outcomes.

Reflection (Reflexion / ACE's reflector, reduced to its core):

    failed run (input, model answer, correct answer)
      -> LLM: "one general lesson that would have led to the correct answer"
      -> drop it if an active bullet already says much the same (token overlap)
      -> ChangeSet(add bullet item, source="reflection", trust 0.5, provenance=[trace])

Credit: every item shown in a run earns `helpful` when the run succeeded and
`harmful` when it failed; the forgetting policy of the context layer reads these.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from crystallise.backends.base import Backend, CompletionRequest, Message
from crystallise.errors import BackendError
from crystallise.evidence import VerifiedCase, outcome_of
from crystallise.types import ChangeSet, Delta, Item, Scope, Trace

__all__ = ["ReflectionLearner", "credit", "shown_items"]

_WORD = re.compile(r"[a-z]{3,}")
_SCHEMA = {
    "type": "object",
    "properties": {
        "lesson": {"type": "string", "minLength": 10, "maxLength": 300},
        "section": {"type": "string", "enum": ["strategies", "pitfalls", "formatting"]},
    },
    "required": ["lesson", "section"],
}
_SYSTEM = (
    "You maintain a playbook of short, general lessons for answering a kind of question. "
    "Given a question, a wrong answer and the correct answer, write ONE lesson (one sentence) that "
    "would lead to the correct answer on similar questions. Do not copy the specific numbers or names. "
    'Reply with JSON: {"lesson": "...", "section": "strategies" | "pitfalls" | "formatting"}.'
)


def shown_items(trace: Trace) -> list[str]:
    """Item ids shown to the model in a run (recorded on retrieval/llm/task spans)."""
    ids: list[str] = []
    for s in trace.spans:
        ids += [i for i in s.attributes.get("shown_items", []) if i not in ids]
    return ids


def credit(traces: Sequence[Trace]) -> tuple[Counter[str], Counter[str]]:
    """(helpful, harmful) counts per item id from the outcomes of runs that showed it."""
    helpful: Counter[str] = Counter()
    harmful: Counter[str] = Counter()
    for t in traces:
        outcome = outcome_of(t)
        if not outcome:  # no outcome yet, or revoked
            continue
        for item_id in shown_items(t):
            (helpful if outcome > 0 else harmful)[item_id] += 1
    return helpful, harmful


def _similar(a: str, b: str) -> float:
    wa, wb = set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower()))
    return len(wa & wb) / max(1, len(wa | wb))


class ReflectionLearner:
    """Proposes playbook bullets from failed runs (at most `max_new` per round)."""

    name = "reflection"
    layer = "context"

    def __init__(self, backend: Backend, *, max_new: int = 2, dedup_threshold: float = 0.6) -> None:
        self.backend = backend
        self.max_new = max_new
        self.dedup_threshold = dedup_threshold

    def propose(
        self,
        failures: Sequence[tuple[VerifiedCase, Any]],
        existing: Sequence[Item],
        scope: Scope,
        section_hint: str = "",
    ) -> ChangeSet | None:
        """`failures`: (case with the right answer, the answer the run gave)."""
        from crystallise.backends.structured import complete_json

        new_items: list[Item] = []
        texts = [it.text for it in existing if it.status == "active"]
        for case, given in failures:
            if len(new_items) >= self.max_new:
                break
            question = case.input if isinstance(case.input, str) else repr(case.input)
            user = f"Question:\n{question[:3000]}\n\nWrong answer: {given}\nCorrect answer: {case.output}"
            request = CompletionRequest(messages=[Message("system", _SYSTEM), Message("user", user)], max_tokens=120)
            try:
                value, _, _ = complete_json(self.backend, request, _SCHEMA)
            except BackendError:
                continue  # a small model may fail the schema; that failure is not a lesson
            lesson = " ".join(str(value["lesson"]).split())
            if any(_similar(lesson, t) >= self.dedup_threshold for t in texts):
                continue
            texts.append(lesson)
            new_items.append(
                Item(
                    text=lesson,
                    kind="bullet",
                    level=scope.level,
                    agent_id=scope.agent,
                    org_id=scope.org,
                    user_id=scope.user,
                    section=section_hint or str(value["section"]),
                    source="reflection",
                    trust=0.5,
                    provenance=[case.trace_id],
                )
            )
        if not new_items:
            return None
        return ChangeSet(
            learner=self.name,
            layer="context",
            deltas=[Delta(op="add", target="item", item_id=it.id, after=it.to_dict(), reason="reflection on a failure")
                    for it in new_items],
            summary=f"playbook: +{len(new_items)} bullet(s) from reflection on failures",
            scope=scope,
            provenance=[p for it in new_items for p in it.provenance],
            evidence={"lessons": [it.text for it in new_items]},
        )
