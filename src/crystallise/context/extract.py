"""Implicit online learning: candidate items from conversations and tool results, quarantined.

    traces ─► Extractor (rules, or an LLM with the rules as fallback) ─► candidates
           ─► ExtractionLearner: per scope, against what the scope holds already
                 new fact                         → add, status quarantined (stored, never shown)
                 seen again in an independent     → evidence grows; at `corroborations` (default 2)
                 trace (another trace and session)   independent traces it is activated
                 already active                   → merge: provenance grows
                 instruction-like (any source),   → quarantined for review only (corroboration never frees it:
                 or tool output                      an attacker, or a fetched page, repeats itself)
                 from a run with no authenticated → quarantined for review only: an org- or agent-level
                 user, or relayed without an org     item is never activated by sightings (`review_only`)
           ─► change sets (one per scope) ─► Committer (user scope: the user ledger)

The scope of a candidate is the trace's: a trace of user u1 yields u1's items only, so
one user's words never become another user's memory (promotion to org/agent level is a
separate, gated learner: promote.py). "The same fact" is `similarity(a, b) >= threshold`
with a pluggable similarity (lexical by default; pass an embedding one).

The rule extractor (`RuleExtractor`) needs no model: first-person facts ("my name is",
"I live in", "I work at" …), stated preferences ("I prefer", "I'm allergic to", "always
answer …"), "remember that …", and "Note:/Important:" lines of tool output. The LLM
extractor asks the backend for JSON (`complete_json`), keeps only candidates grounded in
the conversation's words, and falls back to the rules when the model fails — so a tiny
local model or the scripted double degrades gracefully instead of inventing memories.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from crystallise.backends.base import Backend, CompletionRequest, Message
from crystallise.context import deltas as build
from crystallise.context.injection import Detector, is_untrusted
from crystallise.context.injection import detect as default_detect
from crystallise.context.items import Similarity, content_words, lexical_similarity, normalise, same_scope
from crystallise.context.temporal import KEY_PATTERN, fact_key, plan_activation
from crystallise.errors import BackendError
from crystallise.types import ChangeSet, Delta, Item, Scope, Trace, Verdict

__all__ = [
    "WATERMARK", "Candidate", "ExtractionLearner", "Extractor", "LLMExtractor", "RuleExtractor", "conversation",
    "messages_of",
]

EXTRACTED_TRUST = {"user": 0.6, "tool": 0.3}
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_REMEMBER = re.compile(r"^(?:please )?(?:remember|note|keep in mind|don't forget)(?: that)?[:,]?\s+(?P<v>.+)$", re.I)
_PREFERENCE = re.compile(
    r"\b(?:i (?:prefer|like|love|hate|dislike|don't like|do not like|can't stand|always|never|usually|"
    r"am allergic to|'m allergic to|am vegetarian|'m vegetarian|am vegan|'m vegan)|"
    r"(?:please )?(?:always|never) (?:answer|reply|respond|use|include|write|call|show|send))\b",
    re.I,
)
_TOOL_NOTE = re.compile(r"^\s*(?:note|remember|important|fact|fyi)\s*[:\-]\s*(?P<v>.+)$", re.I)


@dataclass
class Candidate:
    """A proposed item: its text, whose words it is (`source`: user | tool) and where it was seen."""

    text: str
    kind: str = "memory"
    section: str = "general"
    key: str | None = None
    source: str = "user"
    trace_id: str = ""


class Extractor(Protocol):
    def extract(self, trace: Trace) -> list[Candidate]: ...


def _text_of(value: Any) -> str:
    """The text of a message: a string, `content`/`text`/…, or the text parts of OpenAI content lists
    and OTel GenAI `parts` (`[{"type": "text", "content": "..."}]`); other parts are not text."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for name in ("content", "text", "message", "question", "query", "input"):
            if isinstance(value.get(name), str):
                return value[name]
        for name in ("parts", "content"):
            parts = value.get(name)
            if isinstance(parts, list):
                texts = [p.get("content", p.get("text")) for p in parts
                         if isinstance(p, dict) and p.get("type", "text") == "text"]
                return "\n".join(t for t in texts if isinstance(t, str))
    return ""


def _messages(value: Any) -> list[tuple[str, str]]:
    """(role, text) pairs of a chat-shaped value; a plain string is one user message."""
    if isinstance(value, str):
        return [("user", value)]
    if isinstance(value, dict) and isinstance(value.get("messages"), list):
        value = value["messages"]
    if isinstance(value, list):
        found = []
        for m in value:
            if isinstance(m, dict) and isinstance(m.get("role"), str):
                found.append((m["role"], _text_of(m)))
        return found
    text = _text_of(value)
    return [("user", text)] if text else []


messages_of = _messages  # (role, text) pairs of a chat-shaped value (the memory API's `add`)


def conversation(trace: Trace) -> list[tuple[str, str]]:
    """What was said in a run, as (role, text): the user's messages (trace input and LLM span
    inputs), the assistant's replies, and tool results as role "tool". Duplicates once."""
    seen: set[tuple[str, str]] = set()
    out: list[tuple[str, str]] = []

    def put(role: str, text: str) -> None:
        if text and (role, text) not in seen:
            seen.add((role, text))
            out.append((role, text))

    for role, text in _messages(trace.input):
        put(role, text)
    for span in trace.spans:
        if span.kind == "llm":
            for role, text in _messages(span.input):
                if role in ("user", "tool"):
                    put(role, text)
        elif span.kind == "tool" and span.output is not None:
            put("tool", span.output if isinstance(span.output, str) else json.dumps(span.output, ensure_ascii=False))
    if isinstance(trace.output, str):
        put("assistant", trace.output)
    return out


class RuleExtractor:
    """Candidates by rules only: deterministic, model-free (see the module docstring)."""

    def extract(self, trace: Trace) -> list[Candidate]:
        found: list[Candidate] = []
        for role, text in conversation(trace):
            if role not in ("user", "tool"):
                continue
            for sentence in _SENTENCE.split(text):
                sentence = " ".join(sentence.split()).strip(" -*")
                if not 3 <= len(sentence) <= 300 or sentence.endswith("?"):
                    continue
                candidate = self._one(sentence, role)
                if candidate is not None:
                    found.append(dataclasses.replace(candidate, trace_id=trace.id))
        return found

    @staticmethod
    def _one(sentence: str, role: str) -> Candidate | None:
        if role == "tool":
            m = _TOOL_NOTE.match(sentence)
            return Candidate(m.group("v").strip(), source="tool") if m else None
        m = _REMEMBER.match(sentence)
        body = m.group("v").strip() if m else sentence
        fact = fact_key(body)
        if fact and fact[0].startswith("user."):
            return Candidate(body, key=fact[0], section="facts")
        if m or _PREFERENCE.search(body):
            return Candidate(body, section="preferences")
        return None


_SCHEMA = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "maxItems": 5,
            "items": {
                "type": "object",
                "properties": {
                    "text": {"type": "string", "minLength": 3, "maxLength": 300},
                    "kind": {"type": "string", "enum": ["memory", "bullet"]},
                    "key": {"type": ["string", "null"]},
                },
                "required": ["text", "kind"],
            },
        }
    },
    "required": ["items"],
}
_SYSTEM = (
    "You extract durable memories about the user from a conversation: facts about them (name, city, job, "
    "family), their preferences, and lessons for serving them. One short sentence each, in the third person "
    "or as the user said it. Only what the conversation states; nothing about this one request. "
    'Reply with JSON: {"items": [{"text": "...", "kind": "memory", "key": "user.city" or null}]}. '
    "Use a key only for a single-valued attribute (user.name, user.city, user.employer ...). "
    'If there is nothing durable, reply {"items": []}.'
)


class LLMExtractor:
    """Candidates from a model (structured JSON output), grounded in the conversation; the rules
    answer when the model fails or proposes nothing grounded."""

    def __init__(self, backend: Backend, *, fallback: Extractor | None = None, grounding: float = 0.6,
                 max_chars: int = 3000) -> None:
        self.backend = backend
        self.fallback = fallback if fallback is not None else RuleExtractor()
        self.grounding = grounding
        self.max_chars = max_chars

    def extract(self, trace: Trace) -> list[Candidate]:
        from crystallise.backends.structured import complete_json

        said = [(role, text) for role, text in conversation(trace) if role in ("user", "tool", "assistant")]
        if not said:
            return []
        transcript = "\n".join(f"{role}: {text}" for role, text in said)[: self.max_chars]
        request = CompletionRequest(messages=[Message("system", _SYSTEM), Message("user", transcript)], max_tokens=300)
        rules = self.fallback.extract(trace)
        try:
            value, _, _ = complete_json(self.backend, request, _SCHEMA)
        except BackendError:
            return rules
        words = {role: content_words(" ".join(t for r, t in said if r == role)) for role in ("user", "tool")}
        found: list[Candidate] = []
        for entry in value["items"]:
            text = " ".join(str(entry["text"]).split())
            mine = content_words(text)
            if not mine:
                continue
            overlap = {role: len(mine & w) / len(mine) for role, w in words.items()}
            source = max(overlap, key=lambda r: overlap[r])
            if overlap[source] < self.grounding:
                continue  # not said in the conversation: a model's guess is not a memory
            key = entry.get("key")
            key = key if isinstance(key, str) and KEY_PATTERN.fullmatch(key) else None
            found.append(Candidate(text, kind=str(entry["kind"]), key=key, source=source, trace_id=trace.id,
                                   section="facts" if key else "general"))
        have = {normalise(c.text) for c in found}
        return found + [c for c in rules if normalise(c.text) not in have]


def _scope_of(trace: Trace) -> Scope:
    return Scope(agent=trace.agent_id, org=trace.org_id, user=trace.user_id)


def independent(evidence: Sequence[dict[str, Any]], level: str = "user") -> int:
    """How many independent sightings.

    Above user level: distinct authenticated users (session ids are the client's to choose, so two
    sessions of one client are one voice; a sighting with no user counts for nobody). At user level
    the user is the only author of their own memories: distinct traces, a session's traces once.

    >>> independent([{"trace": "a", "session": "s1", "user": "u1"}, {"trace": "b", "session": "s2", "user": "u1"}],
    ...             level="org")
    1
    """
    if level != "user":
        return len({e["user"] for e in evidence if e.get("user")})
    sessions = {e.get("session") or f"trace:{e.get('trace')}" for e in evidence}
    return len(sessions)


def _no_user(trace: Trace) -> bool:
    return trace.user_id is None


class _Buffer:
    """Deltas of one change set, at most one per item: later changes fold into the first."""

    def __init__(self) -> None:
        self.by_item: dict[str, Delta] = {}

    def put(self, delta: Delta) -> None:
        first = self.by_item.get(delta.item_id or "")
        if first is None:
            self.by_item[delta.item_id or ""] = delta
            return
        op = "add" if first.op == "add" else delta.op
        self.by_item[delta.item_id or ""] = dataclasses.replace(delta, op=op, before=first.before)  # type: ignore[arg-type]


@dataclass
class ExtractionLearner:
    """Turns traces into quarantine/corroboration change sets (see the module docstring)."""

    extractor: Extractor = field(default_factory=RuleExtractor)
    similarity: Similarity = lexical_similarity
    threshold: float = 0.7
    corroborations: int = 2
    detector: Detector | None = None
    name: str = "extraction"
    # runs whose text waits for review whatever is seen again (engine/scope.review_only: no authenticated
    # user, or relayed without an org)
    review_only: Callable[[Trace], bool] = _no_user

    def _detect(self, text: str) -> list[str]:
        return (self.detector.detect if self.detector is not None else default_detect)(text)

    def propose(self, traces: Sequence[Trace], existing: Callable[[Scope], list[Item]]) -> list[ChangeSet]:
        """Change sets (one per scope) for the candidates of `traces`; `existing(scope)` gives the
        scope's current items (active and quarantined)."""
        views: dict[tuple[Any, ...], list[Item]] = {}
        buffers: dict[tuple[Any, ...], tuple[Scope, _Buffer, list[str], dict[str, int]]] = {}
        for trace in traces:
            scope = _scope_of(trace)
            ident = (scope.level, scope.agent if scope.level == "agent" else None, scope.org, scope.user)
            if ident not in views:
                views[ident] = [it for it in existing(scope) if same_scope(it, scope)]
                buffers[ident] = (scope, _Buffer(), [], {"quarantined": 0, "corroborated": 0, "merged": 0})
            view = views[ident]
            _, buffer, provenance, counts = buffers[ident]
            for cand in self.extractor.extract(trace):
                for delta in self._one(cand, trace, scope, view, counts):
                    buffer.put(delta)
                    _apply(view, delta)
                    if trace.id not in provenance:
                        provenance.append(trace.id)
        out = []
        for scope, buffer, provenance, counts in buffers.values():
            if not buffer.by_item:
                continue
            reason = (f"extraction: {counts['quarantined']} new candidate(s) quarantined (not shown until seen in "
                      f"{self.corroborations} independent traces or accepted), {counts['corroborated']} corroborated "
                      f"and activated, {counts['merged']} sighting(s) of active items")
            out.append(ChangeSet(
                learner=self.name, layer="context", deltas=list(buffer.by_item.values()),
                summary=f"extraction: {len(buffer.by_item)} item change(s) from {len(provenance)} trace(s)",
                scope=scope, provenance=provenance, evidence=dict(counts),
                verdict=Verdict(decision="accept", reason=reason, statistic="corroboration",
                                n=counts["corroborated"]),
            ))
        return out

    def _one(self, cand: Candidate, trace: Trace, scope: Scope, view: list[Item],
             counts: dict[str, int]) -> list[Delta]:
        unvouched = self.review_only(trace)
        sighting = {"trace": trace.id, "session": trace.session_id, "user": None if unvouched else trace.user_id}
        same = [it for it in view if it.status in ("active", "quarantined") and it.kind == cand.kind
                and (normalise(it.text) == normalise(cand.text)
                     or self.similarity(it.text, cand.text) >= self.threshold)]
        if same:
            old = next((it for it in same if it.status == "active"), same[0])
            if trace.id in old.provenance:
                return []  # this trace was counted already: re-running changes nothing
            evidence = [*old.meta.get("evidence", []), sighting]
            if old.status == "active":
                counts["merged"] += 1
                return [build.update(old, f"seen again in trace {trace.id}", op="merge",
                                     provenance=build.union(old.provenance, [trace.id]),
                                     meta={"evidence": evidence, "seen": int(old.meta.get("seen", 1)) + 1})]
            # instruction-like text, and tool output, are released by review only: an attacker (or a web
            # page a tool fetches) can repeat themselves in as many "independent" sessions as they like
            flagged = bool(old.meta.get("injection")) or old.source == "tool" or cand.source == "tool" \
                or bool(self._detect(cand.text)) or bool(old.meta.get("unauthenticated")) or unvouched
            n = independent(evidence, scope.level)
            if flagged or n < self.corroborations:
                return [build.update(old, f"seen again in trace {trace.id} ({n} independent)",
                                     provenance=build.union(old.provenance, [trace.id]), meta={"evidence": evidence})]
            counts["corroborated"] += 1
            plan = plan_activation(
                old, view, reason=f"corroborated: seen in {n} independent traces",
                similarity=self.similarity, provenance=build.union(old.provenance, [trace.id]),
                meta={"evidence": evidence, "corroborated": n},
            )
            return plan.deltas
        counts["quarantined"] += 1
        trust = EXTRACTED_TRUST.get(cand.source, 0.3)
        rules = self._detect(cand.text)  # the user's words too: implicit extraction is nobody's decision
        if rules:
            quarantine = {"reason": f"instruction-like text from {cand.source} output", "release": "review only"}
        elif unvouched:
            quarantine = {"reason": "text from a run with no authenticated user (or relayed without an org)",
                          "release": "review only (nobody answers for these words)"}
        elif is_untrusted(cand.source, trust):
            quarantine = {"reason": "uncorroborated extraction from tool output",
                          "release": "review only (tool output can repeat itself)"}
        else:
            quarantine = {"reason": "uncorroborated extraction",
                          "release": f"seen in {self.corroborations} independent traces, or review"}
        meta: dict[str, Any] = {"learned_by": "extraction", "evidence": [sighting], "quarantine": quarantine}
        if rules:
            meta["injection"] = rules
        if unvouched:
            meta["unauthenticated"] = True
        item = Item(
            text=cand.text, kind=cand.kind, level=scope.level, agent_id=scope.agent, org_id=scope.org,  # type: ignore[arg-type]
            user_id=scope.user, section=cand.section, status="quarantined", source=cand.source, trust=trust,
            key=cand.key, valid_from=trace.started_at, provenance=[trace.id], meta=meta,
        )
        return [build.add(item, f"extracted from trace {trace.id}")]


def _apply(view: list[Item], delta: Delta) -> None:
    """Keep the in-memory view of a scope in step with the deltas planned so far."""
    for index, it in enumerate(view):
        if it.id == delta.item_id:
            if delta.after is None:
                view.pop(index)
            else:
                view[index] = Item.from_dict(delta.after)
            return
    if delta.after is not None:
        view.append(Item.from_dict(delta.after))


WATERMARK = "context:extract"
