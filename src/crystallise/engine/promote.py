"""Promotion, committed: user items -> org/agent knowledge when several users independently agree.

`context.promote.PromotionLearner` decides what to propose; this runs it over a home's store,
gates each change set and commits the accepted ones (held or rejected ones stay as evidence).
"""

from __future__ import annotations

import dataclasses

from crystallise.context.items import lexical_similarity, validate_scope
from crystallise.context.meaning import MeaningSimilarity
from crystallise.context.promote import Gate, PromotionLearner
from crystallise.engine.committer import Committer
from crystallise.engine.home import Home
from crystallise.governance.review import PendingReview
from crystallise.types import ChangeSet, Version

__all__ = ["promote"]


def promote(
    home: Home,
    *,
    gate: Gate,
    agent: str = "default",
    org: str | None = None,
    learner: PromotionLearner | None = None,
) -> tuple[list[Version], list[ChangeSet]]:
    """Propose promotions for an org (or an agent's org-less users), gate each, commit the accepted.

    Returns (versions committed, change sets not accepted — saved in the store as evidence).
    """
    target = validate_scope(agent, org)
    learner = learner or PromotionLearner()
    if learner.similarity is lexical_similarity:  # one lesson in other words is one lesson (context/meaning.py)
        learner = dataclasses.replace(learner, similarity=MeaningSimilarity(home.embedder()))
    store = home.store
    user_items = store.items_of_all_users(org=org, agent=None if org else agent, status=("active",))
    existing = store.query_items(agent=agent, org=org, levels=(target.level,), status=("active", "quarantined"),
                                 limit=1_000_000)
    committed: list[Version] = []
    held: list[ChangeSet] = []
    committer: Committer | None = None
    for cs in learner.propose(user_items, target, existing):
        if int(cs.evidence.get("distinct_users", 0)) < learner.min_users:  # never trust the proposal alone
            continue
        cs.verdict = gate(cs)
        if cs.verdict.decision == "accept":
            committer = committer or Committer(home)
            try:
                committed.append(committer.commit(cs))
            except PendingReview:  # a review rule holds it: saved as needs_review by the Committer
                held.append(cs)
        else:
            cs.status = "rejected" if cs.verdict.decision == "reject" else "needs_review"
            store.save_changeset(cs)
            held.append(cs)
    return committed, held
