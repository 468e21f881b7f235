"""Temporal validity: fact keys, contradiction, supersession, and planning one write.

A fact may carry a **key**, `subject.attribute` in lower case — `user.city`,
`user.employer`, `org.refund_window`. A key names a *single-valued* attribute: at any
time a scope holds at most one active fact per key. So when a new fact arrives with a
key that an active fact of the same scope already has, and the two say different things,
they contradict, and the newer (by `valid_from`) supersedes the older:

    old: "I live in Paris"  key user.city  valid_from t1                 -> retired, valid_to t2,
    new: "I moved to Rome"  key user.city  valid_from t2                    superseded_by new
    query_items(as_of=t) answers Paris for t1 <= t < t2 and Rome from t2 on.

Keys come from the caller (`remember(..., key="user.city")`), from the LLM extractor, or
from `fact_key`, a small rule set for first-person statements ("my name is", "I live in",
"I work at", "my favourite X is", "our X is" for org knowledge). Multi-valued facts
("I am allergic to nuts") get no key and never supersede each other; they are
deduplicated by similarity instead.

`plan_write` decides, for one new item against the items already in its scope, whether it
is a duplicate (merge), a confirmation of a quarantined item, a contradiction (supersede)
or new (add), and returns the deltas; it is pure, so the dreamer can reuse it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from crystallise.context import deltas as build
from crystallise.context.items import Similarity, lexical_similarity, normalise
from crystallise.errors import ValidationError
from crystallise.types import Delta, Item, now

__all__ = ["KEY_PATTERN", "WritePlan", "fact_key", "plan_activation", "plan_write", "validate_key"]

KEY_PATTERN = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+){1,3}")

_VALUE = r"(?P<v>[^.,;!?\n]{1,80}?)(?=\s*(?:[.,;!?\n]|$|\band\b|\bbut\b|\bsince\b|\bnow\b))"
_ATTRS = (r"timezone|time zone|birthday|date of birth|age|nationality|pronouns|native language|first language|"
          r"home town|hometown|partner'?s name|wife'?s name|husband'?s name|son'?s name|daughter'?s name|"
          r"dog'?s name|cat'?s name|pet'?s name|job title|job|occupation|role|manager'?s name|diet|blood type|"
          r"favou?rite [a-z]+")

# (regex, case-insensitive, over the text with whitespace collapsed; key). A key with {attr}
# takes the slug of the attr group: "my favourite colour is" -> user.favorite_colour.
FACT_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"\bmy (?:full )?name is {_VALUE}", re.I), "user.name"),
    (re.compile(rf"\b(?:call me|i go by) (?!at\b|on\b|back\b|later\b|tomorrow\b|when\b|if\b){_VALUE}", re.I),
     "user.name"),
    (re.compile(rf"\bi(?: am|'m| have)? (?:live|living|lived|reside|residing|based|moved|relocated|moving)"
                rf"(?: to| in| out to)? {_VALUE}", re.I), "user.city"),
    (re.compile(rf"\bi(?: am|'m)? (?:work|working|employed)(?: at| for| by) {_VALUE}", re.I), "user.employer"),
    (re.compile(rf"\bi(?: now)? work as (?:a |an )?{_VALUE}", re.I), "user.occupation"),
    (re.compile(r"\bi(?: am|'m) (?P<v>\d{1,3}) years? old", re.I), "user.age"),
    (re.compile(rf"\bmy (?P<attr>{_ATTRS}) is {_VALUE}", re.I), "user.{attr}"),
    (re.compile(r"\b(?:reply|answer|respond|write|talk) (?:to me )?in (?P<v>[a-z]+)(?: please)?\s*(?:[.!]|$)", re.I),
     "user.reply_language"),
    (re.compile(rf"\bour (?P<attr>[a-z]+(?: [a-z]+)?) (?:is|are) {_VALUE}", re.I), "org.{attr}"),
]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.replace("'s", "").replace("favourite", "favorite")).strip("_")


def fact_key(text: str) -> tuple[str, str] | None:
    """(key, value) for a first-person or org statement the rules know; None otherwise.

    >>> fact_key("By the way, I moved to Rome last year.")
    ('user.city', 'Rome last year')
    >>> fact_key("My favourite colour is green")
    ('user.favorite_colour', 'green')
    >>> fact_key("I am allergic to nuts") is None
    True
    """
    plain = " ".join(text.replace("’", "'").split())
    found = [(m.start(), order, m, key) for order, (pattern, key) in enumerate(FACT_RULES)
             if (m := pattern.search(plain))]
    if not found:
        return None
    _, _, m, key = min(found, key=lambda f: (f[0], f[1]))  # the statement made first
    attr = m.groupdict().get("attr")
    return (key.format(attr=_slug(attr.lower())) if attr else key), m.group("v").strip()


def validate_key(key: object) -> str:
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise ValidationError(
            f"fact key {key!r} is not valid: use subject.attribute in lower case, e.g. 'user.city' or "
            "'org.refund_window' (letters, digits, _; 2-4 dotted parts)"
        )
    return key


@dataclass
class WritePlan:
    """What one write does: the deltas, the id of the item that holds the fact afterwards, and why."""

    deltas: list[Delta] = field(default_factory=list)
    item_id: str = ""
    outcome: str = "added"  # added | merged | confirmed | superseded | backfilled | unchanged


def _same_fact(a: Item, b: Item, similarity: Similarity, threshold: float) -> bool:
    if a.key and b.key and a.key != b.key:
        return False
    return normalise(a.text) == normalise(b.text) or similarity(a.text, b.text) >= threshold


def plan_write(
    new: Item,
    existing: Sequence[Item],
    *,
    similarity: Similarity = lexical_similarity,
    duplicate_at: float = 0.85,
) -> WritePlan:
    """The deltas that write `new` into a scope holding `existing` (same scope; any status).

    1. the same fact already active → merge: its provenance grows, nothing new is shown;
    2. the same fact quarantined and `new` is active (e.g. the user says it explicitly) →
       the quarantined item is confirmed: activated with the new provenance;
    3. `new` active with a key an active item of the scope has, saying something else →
       supersede (or add `new` as already superseded, if it is about an earlier time);
    4. otherwise → add.
    """
    live = [e for e in existing if e.status in ("active", "quarantined") and e.kind == new.kind and e.id != new.id]
    same = [e for e in live if _same_fact(new, e, similarity, duplicate_at)]
    active_same = [e for e in same if e.status == "active"]
    waiting = [e for e in same if e.status == "quarantined"]
    if active_same or (waiting and new.status != "active"):
        old = (active_same or waiting)[0]
        if set(new.provenance) <= set(old.provenance):
            return WritePlan([], old.id, "unchanged")
        merged = build.update(
            old, "the same fact again", op="merge", provenance=build.union(old.provenance, new.provenance),
            trust=max(old.trust, new.trust), key=old.key or new.key, meta={"seen": int(old.meta.get("seen", 1)) + 1},
        )
        return WritePlan([merged], old.id, "merged")
    if waiting:  # a trusted, active statement of a quarantined fact confirms it
        old = waiting[0]
        plan = plan_activation(
            old, [e for e in existing if e not in waiting], similarity=similarity, duplicate_at=duplicate_at,
            reason=f"confirmed by a {new.source} statement of the same fact",
            source=new.source, trust=max(old.trust, new.trust), key=old.key or new.key,
            provenance=build.union(old.provenance, new.provenance), meta={"confirmed_by": new.source},
        )
        return WritePlan(plan.deltas, plan.item_id, "confirmed")
    if new.status == "active" and new.key:
        plan = _insert_in_timeline(new, existing)
        if plan is not None:
            return plan
    return WritePlan([build.add(new)], new.id, "added")


def _start(item: Item) -> float:
    return item.valid_from if item.valid_from is not None else item.created_at


def _insert_in_timeline(new: Item, existing: Sequence[Item]) -> WritePlan | None:
    """Place a keyed fact among the scope's facts with that key, active and superseded ones.

    The facts with one key form a timeline of consecutive validity intervals. `new` starts
    at its `valid_from` (default now); the fact before it ends there, and if a later fact
    exists `new` ends where that one starts (it arrives already superseded):

        Paris [t1, t3) -> Rome [t3, ...)     + Lyon from t2:   Paris [t1, t2) -> Lyon [t2, t3) -> Rome
    """
    timeline = sorted(
        (e for e in existing if e.key == new.key and e.kind == new.kind and e.id != new.id
         and (e.status == "active" or (e.status == "retired" and e.superseded_by))),
        key=_start,
    )
    if not timeline:
        return None
    start = new.valid_from if new.valid_from is not None else now()
    new = dataclasses.replace(new, valid_from=start)
    before = [e for e in timeline if _start(e) <= start]
    after = [e for e in timeline if _start(e) > start]
    steps: list[Delta] = []
    if not after:  # the newest fact: it supersedes every active rival
        for rival in (e for e in timeline if e.status == "active"):
            steps += build.supersede(rival, new)[:1]
        return WritePlan([*steps, build.add(new, f"supersedes {new.key}")], new.id, "superseded")
    successor = after[0]
    late = dataclasses.replace(new, valid_to=_start(successor), superseded_by=successor.id, status="retired")
    if before and (before[-1].valid_to is None or before[-1].valid_to > start):
        prev = before[-1]
        steps.append(build.update(prev, f"ends where {new.id} starts", op="supersede", valid_to=start,
                                  superseded_by=new.id, status="retired"))
    return WritePlan([*steps, build.add(late, f"a fact about the past: {successor.id} holds from "
                                              f"{_start(successor):.0f}")], new.id, "backfilled")


def plan_activation(
    stored: Item,
    existing: Sequence[Item],
    *,
    reason: str,
    similarity: Similarity = lexical_similarity,
    duplicate_at: float = 0.85,
    **changes: Any,
) -> WritePlan:
    """The deltas that make the quarantined item `stored` active (corroborated, confirmed, accepted).

    Activation is a write like any other: the item may now supersede an older fact with
    its key, or turn out to duplicate an active item (then it is retired into that one).
    `changes` are other fields to set (provenance, trust, meta — merged into the old meta).
    The `before` of the item's own delta is `stored`, so a change set built on a stale
    read is refused by the Committer.
    """
    others = [e for e in existing if e.id != stored.id]
    meta = {**stored.meta, **changes.pop("meta", {}), "quarantine": None}
    live = dataclasses.replace(stored, status="active", meta=meta, updated_at=now(), **changes)
    sub = plan_write(live, others, similarity=similarity, duplicate_at=duplicate_at)
    if sub.outcome in ("merged", "unchanged"):
        retired = build.retire(stored, f"duplicate of {sub.item_id}", merged_into=sub.item_id)
        return WritePlan([*sub.deltas, retired], sub.item_id, "merged")
    steps = [
        Delta(op="update", target="item", item_id=stored.id, before=stored.to_dict(), after=d.after, reason=reason)
        if d.item_id == stored.id else d
        for d in sub.deltas
    ]
    return WritePlan(steps, stored.id, "activated")
