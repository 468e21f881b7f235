"""Curation for dreaming: critiques -> deltas, dedup that applies merges, the forgetting policy.

Pure planning over plain data (the scope's items, critiques, usage times, an embed
function); nothing here writes. One `Plan` per scope collects the deltas of a dream run,
folded to one delta per item (the Committer checks each delta's `before` against the
store, so two deltas about one item in a change set would be refused as stale):

    1. critiques   add a lesson | update an item's wording | supersede an item | retire an item
                   (a lesson the scope already holds is a merge: provenance grows, no duplicate)
    2. dedup       items saying the same thing (embedding cosine + lexical overlap, same
                   negation) are merged into the most valuable one: provenance and credit
                   counts of both, the others retired pointing at it (old texts stay in history)
    3. forgetting  retire (a) items whose harm outweighs help with enough rated runs,
                   (b) learned items unused for a window, (c) the lowest-value items while
                   the scope is over its token budget

Rules that keep curation incremental (ACE's "no context collapse"):

- never rewrite a section wholesale: critiques may edit (update / supersede / retire) at
  most `section_share` of a section's items per run (at least one);
- never summarise a summary: a merge keeps one original's text verbatim, so dreaming never
  writes a summary; items marked `meta.summary` (written by a summariser elsewhere) are
  never merged at all;
- every delta is keyed on its cause (`meta.dream_causes`: `critique:<trace id>`,
  `dedup`, `forget:<rule>`), so a re-run over the same traces proposes nothing.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crystallise.context import deltas as build
from crystallise.context.critique import Critique
from crystallise.context.injection import detect
from crystallise.context.items import clean_text, content_words, lexical_similarity, normalise, validate_section
from crystallise.errors import ConfigError, ValidationError
from crystallise.backends.base import approx_tokens
from crystallise.types import ChangeSet, Delta, Item, Scope, Verdict

__all__ = ["DreamPolicy", "Plan", "evidence_gate", "item_tokens", "value_order"]

CAUSES = "dream_causes"
EXPLICIT_SOURCES = ("user", "review")
# Written by a person (a user, a reviewer, an import, an admin or the CLI): no rule retires these
# on its own -- the dream lists them for review instead (`Plan.review`).
HUMAN_SOURCES = ("user", "review", "import", "admin", "cli")
_NEGATIONS = frozenset({"not", "never", "no", "dont", "don't", "avoid", "without", "cannot", "can't", "nor"})
Embed = Callable[[Sequence[str]], np.ndarray]


@dataclass
class DreamPolicy:
    """What a dream may do, from `config.json`'s `"dream"` object (every key optional):

        {"dream": {"kinds": ["bullet"], "min_evidence": 5, "harm_ratio": 1.0, "unused_days": 30,
                   "token_budget": {"agent": 4000, "org": 4000, "user": 1000},
                   "dedup_embedding": 0.85, "dedup_lexical": 0.5, "section_share": 0.5,
                   "max_critiques": 20}}

    `token_budget` may be one number for every level, or null for no budget;
    `unused_days` null turns that rule off.
    """

    kinds: tuple[str, ...] = ("bullet",)
    min_evidence: int = 5
    harm_ratio: float = 1.0
    unused_days: float | None = 30.0
    token_budget: dict[str, int | None] = field(default_factory=lambda: {"agent": 4000, "org": 4000, "user": 1000})
    dedup_embedding: float = 0.85
    dedup_lexical: float = 0.5
    dedup_lexical_alone: float = 0.85
    section_share: float = 0.5
    max_critiques: int = 20

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> DreamPolicy:
        raw = (config or {}).get("dream", {})
        if not isinstance(raw, dict):
            raise ConfigError('config.json "dream" must be an object, e.g. {"dream": {"unused_days": 30}}')
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f'config.json "dream" has unknown key(s) {unknown}: use {sorted(known)}')
        values = dict(raw)
        if "kinds" in values:
            values["kinds"] = tuple(values["kinds"]) if isinstance(values["kinds"], list) else values["kinds"]
        if "token_budget" in values and not isinstance(values["token_budget"], dict):
            b = values["token_budget"]
            values["token_budget"] = {"agent": b, "org": b, "user": b}
        policy = cls(**{**dataclasses.asdict(cls()), **values})
        policy.check()
        return policy

    def check(self) -> None:
        def bad(name: str, want: str) -> ConfigError:
            return ConfigError(f'config.json "dream.{name}" must be {want}, not {getattr(self, name)!r}')

        if not isinstance(self.kinds, tuple) or not self.kinds or any(
                k not in ("memory", "bullet", "note") for k in self.kinds):
            raise bad("kinds", 'a list of "bullet", "memory", "note"')
        for name in ("min_evidence", "max_critiques"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(name, "an integer >= 1")
        for name in ("harm_ratio", "dedup_embedding", "dedup_lexical", "dedup_lexical_alone", "section_share"):
            v = getattr(self, name)
            top = 10 if name == "harm_ratio" else 1
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= top:
                raise bad(name, "a number in (0, 1]" if name != "harm_ratio" else "a number in (0, 10]")
        if self.unused_days is not None and (isinstance(self.unused_days, bool) or not isinstance(
                self.unused_days, int | float) or self.unused_days <= 0):
            raise bad("unused_days", "a positive number of days, or null")
        for level in ("agent", "org", "user"):
            v = self.token_budget.get(level)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f'config.json "dream.token_budget.{level}" must be a positive integer or null, '
                                  f"not {v!r}")

    def budget(self, level: str) -> int | None:
        return self.token_budget.get(level)


def item_tokens(item: Item) -> int:
    """What an item costs in a context pack (the same estimate `assemble` spends its budget by)."""
    return approx_tokens(f"- {item.text}") + 2


def value_order(item: Item, last_used: dict[str, float]) -> tuple[Any, ...]:
    """Sort key, lowest value first: learned before explicit, net credit, then most shown without
    help, least recently used, oldest."""
    return (item.source in EXPLICIT_SOURCES, item.helpful - item.harmful, -item.shown,
            last_used.get(item.id, item.created_at), item.created_at, item.id)


def _negated(text: str) -> bool:
    return bool(set(normalise(text).split()) & _NEGATIONS)


@dataclass
class Plan:
    """The deltas of one scope's dream run, planned against an in-memory view of its items."""

    scope: Scope
    items: Sequence[Item]
    policy: DreamPolicy
    view: dict[str, Item] = field(init=False)
    deltas: dict[str, Delta] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    retired: Counter[str] = field(default_factory=Counter)
    rejected: list[str] = field(default_factory=list)
    causes: dict[str, list[str]] = field(default_factory=dict)
    retirements: list[dict[str, Any]] = field(default_factory=list)
    review: list[dict[str, Any]] = field(default_factory=list)  # retirements a person must decide (HUMAN_SOURCES)
    provenance: list[str] = field(default_factory=list)
    _edits: Counter[str] = field(default_factory=Counter)
    _section_size: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.view = {it.id: it for it in self.items}
        self._section_size = Counter(it.section for it in self.active())

    # -- bookkeeping --------------------------------------------------------------------------
    def active(self) -> list[Item]:
        return [it for it in self.view.values() if it.status == "active" and it.kind in self.policy.kinds]

    def done(self, cause: str) -> bool:
        """Whether some item of the scope already records `cause` (it was applied by an earlier run)."""
        return any(cause in it.meta.get(CAUSES, []) for it in self.view.values())

    def put(self, delta: Delta, cause: str) -> None:
        """Fold `delta` in (one delta per item: the first `before`, the latest `after`)."""
        key = delta.item_id or ""
        after = dict(delta.after) if delta.after is not None else None
        if after is not None:
            meta = dict(after.get("meta") or {})
            meta[CAUSES] = build.union(meta.get(CAUSES, []), [cause])
            after["meta"] = meta
        first = self.deltas.get(key)
        if first is None:
            self.deltas[key] = dataclasses.replace(delta, after=after)
        else:
            op = "add" if first.op == "add" else delta.op
            reason = first.reason if delta.reason == first.reason else f"{first.reason}; {delta.reason}"
            self.deltas[key] = dataclasses.replace(delta, op=op, before=first.before, after=after,  # type: ignore[arg-type]
                                                   reason=reason[:500])
        if after is not None:
            self.view[key] = Item.from_dict(after)
        self.causes.setdefault(key, [])
        if cause not in self.causes[key]:
            self.causes[key].append(cause)
        if cause.startswith("critique:"):
            trace = cause.split(":", 1)[1]
            if trace not in self.provenance:
                self.provenance.append(trace)

    def _edit_allowed(self, item: Item) -> bool:
        size = self._section_size.get(item.section, 0)
        cap = max(1, math.floor(self.policy.section_share * size))
        if self._edits[item.section] >= cap:
            self.rejected.append(f"{item.id}: not edited — {self._edits[item.section]} of the {size} items of "
                                 f"section {item.section!r} were edited this run already (never a whole section)")
            return False
        self._edits[item.section] += 1
        return True

    # -- 1. critiques ---------------------------------------------------------------------------
    def apply_critique(self, critique: Critique, shown: Sequence[str]) -> None:
        """Turn one critique's proposals into deltas, checking each (the model's word is not enough)."""
        cause = f"critique:{critique.trace_id}"
        self.rejected += [f"{critique.trace_id}: {why}" for why in critique.dropped]
        for p in critique.proposals:
            where = f"{critique.trace_id} {p.op}"
            try:
                if p.op == "retire":
                    self._retire_by_critique(p.target, shown, p.reason, cause, where)
                    continue
                text = clean_text(p.text if p.text is not None else "", "bullet")
                if p.op == "add":
                    section = validate_section(p.section or "strategies")
                    self._add_lesson(text, section, critique, cause)
                    continue
                old = self.view.get(p.target or "")
                if old is None or old.status != "active" or old.kind not in self.policy.kinds:
                    self.rejected.append(f"{where}: item {p.target} is not an active {'/'.join(self.policy.kinds)} "
                                         "of this scope")
                    continue
                if normalise(text) == normalise(old.text):
                    continue  # the same words again: nothing to change
                if not self._edit_allowed(old):
                    continue
                if p.op == "update":
                    self.put(build.update(old, f"dream: reworded after a critique of {critique.trace_id}",
                                          text=text, provenance=build.union(old.provenance, [critique.trace_id])),
                             cause)
                    self.counts["update"] += 1
                else:  # supersede: a new item replaces the old one from now on
                    new = Item(text=text, kind=old.kind, level=old.level, agent_id=old.agent_id, org_id=old.org_id,
                               user_id=old.user_id, section=old.section, source="reflection", trust=0.5,
                               key=old.key, provenance=[critique.trace_id],
                               meta={"learned_by": "dream", "critique": critique.text[:300]})
                    for d in build.supersede(old, new, f"dream: superseded after a critique of {critique.trace_id}"):
                        self.put(d, cause)
                    self.counts["supersede"] += 1
            except ValidationError as error:
                self.rejected.append(f"{where}: {error}")

    def _add_lesson(self, text: str, section: str, critique: Critique, cause: str) -> None:
        harmful = next((it for it in self.view.values() if it.status == "retired"
                        and it.meta.get("forgotten_by") == "harm" and similar_text(text, it.text, self.policy)), None)
        if harmful is not None:  # forgotten because it did more harm than good: not re-learned from one critique
            self.rejected.append(f"{critique.trace_id} add: the same lesson as {harmful.id}, retired for harm")
            return
        same = next((it for it in self.active() if similar_text(text, it.text, self.policy)), None)
        if same is not None:  # the scope knows it already: the evidence grows, nothing new is shown
            if critique.trace_id in same.provenance:
                return
            self.put(build.update(same, f"dream: the same lesson again from {critique.trace_id}", op="merge",
                                  provenance=build.union(same.provenance, [critique.trace_id]),
                                  meta={"seen": int(same.meta.get("seen", 1)) + 1}), cause)
            self.counts["merge"] += 1
            return
        s = self.scope
        item = Item(text=text, kind="bullet", level=s.level, agent_id=s.agent, org_id=s.org, user_id=s.user,
                    section=section, source="reflection", trust=0.5, provenance=[critique.trace_id],
                    meta={"learned_by": "dream", "critique": critique.text[:300]})
        self.put(build.add(item, f"dream: lesson from a critique of {critique.trace_id}"), cause)
        self.counts["add"] += 1

    def _retire_by_critique(self, target: str | None, shown: Sequence[str], reason: str, cause: str,
                            where: str) -> None:
        old = self.view.get(target or "")
        if old is None or old.status != "active":
            self.rejected.append(f"{where}: item {target} is not an active item of this scope")
            return
        if old.id not in shown:
            self.rejected.append(f"{where}: item {old.id} was not shown in the run, so the run cannot blame it")
            return
        if not self._edit_allowed(old):
            return
        self._retire(old, "critique", f"a critique of {cause.split(':', 1)[1]} blamed it: {reason}"[:300], cause,
                     {"trace": cause.split(":", 1)[1]})

    def _retire(self, item: Item, rule: str, reason: str, cause: str, stats: dict[str, Any]) -> bool:
        if item.source in HUMAN_SOURCES:  # a person's words: never retired without review
            self.review.append({"item": item.id, "rule": rule, "reason": reason, "source": item.source, **stats})
            self.rejected.append(f"{item.id}: {rule} would retire it, but a person wrote it (source "
                                 f"{item.source!r}): left for review")
            return False
        self.put(build.retire(item, f"dream: {reason}", forgotten_by=rule), cause)
        self.counts["retire"] += 1
        self.retired[rule] += 1
        self.retirements.append({"item": item.id, "rule": rule, "reason": reason, **stats})
        return True

    # -- 2. dedup ---------------------------------------------------------------------------------
    def dedup(self, embed: Embed) -> None:
        """Merge items that say the same thing into the most valuable one (see the module docstring)."""
        pool = [it for it in self.active() if not it.meta.get("summary")]
        if len(pool) < 2:
            return
        pool.sort(key=lambda it: (-(it.helpful - it.harmful), -len(it.provenance), -it.shown, it.created_at, it.id))
        vectors = np.asarray(embed([it.text for it in pool]), dtype=np.float32)
        cos = vectors @ vectors.T
        heads: list[int] = []
        groups: dict[int, list[int]] = {}
        for i in range(len(pool)):
            for h in heads:
                if pool[h].kind == pool[i].kind and self._duplicate(pool[h], pool[i], float(cos[h, i])):
                    groups[h].append(i)
                    break
            else:
                heads.append(i)
                groups[i] = []
        for h, members in groups.items():
            if not members:
                continue
            keep, others = pool[h], [pool[i] for i in members]
            merged = build.merge(keep, others, reason=f"dream: {len(others)} duplicate(s) merged into {keep.id}")
            causes = build.union(*[it.meta.get(CAUSES, []) for it in [keep, *others]])
            first = merged[0]
            first.after = {**(first.after or {}), "meta": {**((first.after or {}).get("meta") or {}), CAUSES: causes}}
            for d in merged:
                self.put(d, "dedup")
            self.counts["merge"] += 1
            self.retired["merged"] += len(others)

    def _duplicate(self, a: Item, b: Item, cos: float) -> bool:
        if _negated(a.text) != _negated(b.text):
            return False  # "always round" and "never round" are not the same lesson
        if normalise(a.text) == normalise(b.text):
            return True
        lex = lexical_similarity(a.text, b.text)
        return lex >= self.policy.dedup_lexical_alone or (
            cos >= self.policy.dedup_embedding and lex >= self.policy.dedup_lexical)

    # -- 3. forgetting -------------------------------------------------------------------------------
    def forget(self, last_used: dict[str, float], at: float) -> None:
        p = self.policy
        for it in sorted(self.active(), key=lambda i: i.id):
            rated = it.helpful + it.harmful
            if rated >= p.min_evidence and it.harmful > p.harm_ratio * it.helpful:
                self._retire(it, "harm", f"harm outweighs help: {it.harmful} harmful vs {it.helpful} helpful "
                                         f"over {rated} rated runs", "forget:harm",
                             {"helpful": it.helpful, "harmful": it.harmful})
        if p.unused_days is not None:
            horizon = at - p.unused_days * 86400
            for it in sorted(self.active(), key=lambda i: i.id):
                used = last_used.get(it.id)
                if it.source in EXPLICIT_SOURCES or it.created_at >= horizon or (used is not None and used >= horizon):
                    continue
                when = "never shown in a recorded run" if used is None else "last shown " \
                       f"{(at - used) / 86400:.0f} days ago"
                self._retire(it, "unused", f"unused for {p.unused_days:g} days ({when})", "forget:unused",
                             {"last_used": used})
        budget = p.budget(self.scope.level)
        if budget is None:
            return
        live = self.active()
        tokens = sum(item_tokens(it) for it in live)
        for it in sorted(live, key=lambda i: value_order(i, last_used)):
            if tokens <= budget:
                break
            if self._retire(it, "budget", f"over the {self.scope.level} token budget ({tokens} > {budget} "
                                          f"tokens); lowest value ({it.helpful - it.harmful:+d})", "forget:budget",
                            {"tokens": tokens, "budget": budget, "value": it.helpful - it.harmful}):
                tokens -= item_tokens(it)

    def tokens(self) -> int:
        return sum(item_tokens(it) for it in self.active())


def similar_text(a: str, b: str, policy: DreamPolicy) -> bool:
    """The lexical half of the dedup rule, for a lesson not yet embedded (critique adds)."""
    if _negated(a) != _negated(b):
        return False
    if normalise(a) == normalise(b):
        return True
    wa, wb = content_words(a), content_words(b)
    return bool(wa and wb) and lexical_similarity(a, b) >= policy.dedup_lexical_alone


def evidence_gate(cs: ChangeSet, policy: DreamPolicy | None = None) -> Verdict:
    """The default gate for a dream's change set, re-checking the evidence instead of trusting the plan.

    - every delta names its cause (a critiqued trace, dedup, or a forgetting rule);
    - a retirement by the harm rule holds on the item as it is (`before`): enough rated runs and
      harmful > harm_ratio * helpful; a budget retirement was over the budget;
    - model-written text (added or reworded) that reads as instructions goes to review
      (`needs_review`), not live: a poisoned trace must not write the playbook.
    A caller with eval cases passes its own `gate=` (e.g. a paired old-vs-new test).
    """
    policy = policy or DreamPolicy()
    causes = cs.evidence.get("causes", {})
    uncaused = [d.item_id for d in cs.deltas if not causes.get(d.item_id or "")]
    if uncaused:
        return Verdict(decision="reject", reason=f"reject: {len(uncaused)} delta(s) without a cause "
                                                 f"({', '.join(map(str, uncaused[:3]))})")
    by_id = {d.item_id: d for d in cs.deltas}
    for r in cs.evidence.get("retirements", []):
        delta = by_id.get(r["item"])
        before = (delta.before if delta is not None else None) or {}
        if r["rule"] == "harm":
            h, x = int(before.get("helpful", 0)), int(before.get("harmful", 0))
            if h + x < policy.min_evidence or x <= policy.harm_ratio * h:
                return Verdict(decision="reject", reason=f"reject: {r['item']} retired for harm without the evidence "
                                                         f"({x} harmful vs {h} helpful)")
        if r["rule"] == "budget" and int(r.get("tokens", 0)) <= int(r.get("budget", 0)):
            return Verdict(decision="reject", reason=f"reject: {r['item']} retired for a budget it was within")
    flagged = []
    for d in cs.deltas:
        after = d.after or {}
        if after.get("status") == "active" and after.get("source") == "reflection":
            old = (d.before or {}).get("text")
            if after.get("text") != old and detect(str(after.get("text", ""))):
                flagged.append(d.item_id)
    if flagged:
        return Verdict(decision="needs_review", reason=f"needs review: model-written text reads as instructions "
                                                       f"({', '.join(map(str, flagged[:3]))})")
    n = len(cs.deltas)
    return Verdict(decision="accept", statistic="evidence rules", n=n,
                   reason=f"dream: {n} delta(s), each with its cause; forgetting re-checked against the policy")
