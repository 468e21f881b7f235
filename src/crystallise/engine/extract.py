"""Implicit extraction, committed: new traces -> memory items, one change set per scope.

`context.extract.ExtractionLearner` decides what the traces say; this runs it over every trace
recorded since the watermark and commits what it proposes (the user ledger for user scopes).
"""

from __future__ import annotations

import dataclasses

from crystallise.context.extract import WATERMARK, ExtractionLearner
from crystallise.context.items import lexical_similarity
from crystallise.context.meaning import MeaningSimilarity
from crystallise.engine.committer import Committer
from crystallise.engine.home import Home
from crystallise.engine.memory import scope_items
from crystallise.engine.scope import review_only
from crystallise.governance.review import PendingReview

__all__ = ["run_extraction"]


def run_extraction(home: Home, *, learner: ExtractionLearner | None = None, batch: int = 500) -> dict[str, int]:
    """Extract from every trace recorded since the last run (watermark `context:extract`), commit.

    Safe to re-run and to resume after a crash: a trace already in an item's provenance is
    not counted again, and the watermark moves only after a batch is committed. Text from a run with
    no authenticated user, or relayed without an org, waits for review (`engine/scope.review_only`).
    Returns totals: traces read, change sets committed, items quarantined / corroborated / merged.
    """
    # the write path's trust rule holds for every extractor a caller brings (engine/scope.py)
    learner = dataclasses.replace(learner or ExtractionLearner(), review_only=review_only)
    if learner.similarity is lexical_similarity:  # the same fact in other words corroborates (context/meaning.py)
        learner = dataclasses.replace(learner, similarity=MeaningSimilarity(home.embedder()))
    store = home.store
    committer = Committer(home, recover=False)
    totals = {"traces": 0, "changesets": 0, "quarantined": 0, "corroborated": 0, "merged": 0}
    since = store.get_watermark(WATERMARK)
    while True:
        traces = store.list_traces(after_seq=since, limit=batch, with_children=True)
        if not traces:
            break
        for cs in learner.propose(traces, lambda scope: scope_items(home, scope)):
            try:
                committer.commit(cs)
            except PendingReview:  # a review rule holds extraction: it waits in `crystallise review list`
                totals["held_for_review"] = totals.get("held_for_review", 0) + 1
                continue
            totals["changesets"] += 1
            for name in ("quarantined", "corroborated", "merged"):
                totals[name] += int(cs.evidence.get(name, 0))
        totals["traces"] += len(traces)
        since = max(t.seq or 0 for t in traces)
        store.set_watermark(WATERMARK, since)
    return totals
