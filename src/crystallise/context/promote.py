"""Promotion: a lesson several users learned separately becomes org (or agent) knowledge — gated.

    user items of an org ─► cluster by similarity ─► clusters with >= min_users distinct users
                        ─► one ChangeSet per lesson (add an org-level item; no verdict)
                        ─► gate(cs) -> Verdict ─► accept: Committer (a version) | else kept as evidence
                            (that step is `crystallise.engine.promote`: this module only proposes)

Two independent checks stand between one user's words and everyone's context: evidence
from several *distinct* users (default 3; one user repeating themselves counts once), and
a gate verdict (the Committer refuses a change set without an accept). What is never
promoted: facts about a person (a `user.*` key), quarantined or instruction-flagged items,
and, by default, anything but playbook bullets (`kinds=("bullet",)`) — memories are about
their user; lessons are about the work.

Scope: an org-level promotion reads the users of that org; an agent-level one reads the
agent's users that have no org, so evidence never crosses an org boundary. The promoted
item records how many users backed it and their pseudonyms (`store.userdata.user_hash`),
never their ids, so org members cannot see who said it, and deleting a user removes
their pseudonym (docs/context.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from crystallise.context import deltas as build
from crystallise.context.items import Similarity, lexical_similarity, normalise
from crystallise.errors import ValidationError
from crystallise.store.userdata import user_hash
from crystallise.types import ChangeSet, Item, Scope, Verdict

__all__ = ["Gate", "PromotionLearner"]

Gate = Callable[[ChangeSet], Verdict]


@dataclass
class PromotionLearner:
    """Proposes org/agent items from lessons that `min_users` distinct users hold."""

    min_users: int = 3
    similarity: Similarity = lexical_similarity
    threshold: float = 0.6
    kinds: tuple[str, ...] = ("bullet",)
    name: str = "promotion"

    def __post_init__(self) -> None:
        if isinstance(self.min_users, bool) or not isinstance(self.min_users, int) or self.min_users < 2:
            raise ValidationError(f"min_users must be an integer >= 2 (evidence from several users), not "
                                  f"{self.min_users!r}")

    def eligible(self, item: Item) -> bool:
        return (item.level == "user" and item.status == "active" and item.kind in self.kinds
                and not (item.key or "").startswith("user.") and not item.meta.get("injection"))

    def clusters(self, items: Sequence[Item]) -> list[list[Item]]:
        """Greedy single pass: each item joins the first cluster whose first item it resembles."""
        groups: list[list[Item]] = []
        for item in items:
            for group in groups:
                head = group[0]
                same = normalise(head.text) == normalise(item.text)
                if same or self.similarity(head.text, item.text) >= self.threshold:
                    group.append(item)
                    break
            else:
                groups.append([item])
        return groups

    def propose(self, user_items: Sequence[Item], target: Scope, existing: Sequence[Item]) -> list[ChangeSet]:
        """One change set per lesson backed by >= min_users users and not already at `target`."""
        if target.level == "user":
            raise ValidationError("promotion targets an org or an agent, not a user")
        out = []
        for group in self.clusters([it for it in user_items if self.eligible(it)]):
            users = sorted({it.user_id for it in group if it.user_id})
            if len(users) < self.min_users:
                continue
            texts = Counter(normalise(it.text) for it in group)
            top = max(texts.values())
            text = min((it.text for it in group if texts[normalise(it.text)] == top), key=len)
            if any(normalise(e.text) == normalise(text) or self.similarity(e.text, text) >= self.threshold
                   for e in existing if e.status in ("active", "quarantined")):
                continue  # the org already knows it
            provenance = build.union(*[it.provenance for it in group])
            first = group[0]
            item = Item(
                text=text, kind=first.kind, level=target.level, agent_id=target.agent, org_id=target.org,
                section=first.section, status="active", source="user",
                trust=round(sum(it.trust for it in group) / len(group), 3), provenance=provenance,
                meta={"learned_by": "promotion", "users": len(users),
                      "evidence_users": [user_hash(u, target.org) for u in users]},
            )
            out.append(ChangeSet(
                learner=self.name, layer="context", deltas=[build.add(item, f"promoted: {len(users)} users")],
                summary=f"promote to {target.level} {target.org or target.agent}: {text[:80]}",
                scope=target, provenance=provenance,
                evidence={"distinct_users": len(users), "min_users": self.min_users, "user_items": len(group)},
            ))
        return out
