"""Sharing org-learned task files at agent level, for review: `share_task(home, "codes", k=3)`.

Runs `harness.share.plan_share` over the orgs that have a namespace for the task and saves the
proposal as a change set *waiting for review* (`crystallise review list`): agent-level task files
come from the operator's own runs, or from k distinct orgs plus a person (DESIGN.md §5).
"""

from __future__ import annotations

from crystallise.engine.home import Home
from crystallise.harness.share import plan_share
from crystallise.harness.spec import View, valid_task_name
from crystallise.types import ChangeSet, Verdict

__all__ = ["share_task"]


def share_task(home: Home, name: str, *, k: int = 3) -> ChangeSet | None:
    """Propose the examples and program at least `k` orgs agree on for the shared files (None: nothing)."""
    valid_task_name(name)
    if k < 2:
        raise ValueError("k must be at least 2: one org's data is that org's")
    orgs = sorted({p.split("/")[1] for p in home.repo.list_files("orgs/") if p.split("/")[2:4] == ["tasks", name]})
    deltas, evidence = plan_share(View.of(home.repo), name, orgs, k)
    if not deltas:
        return None
    cs = ChangeSet(learner="share", layer="harness", deltas=deltas, evidence=evidence,
                   summary=f"{name}: share what {k}+ orgs learned ({evidence.get('examples', 0)} examples"
                           f"{', a program' if evidence.get('program') else ''})",
                   verdict=Verdict(decision="needs_review", reason=f"{k}+ distinct orgs agree; a person decides"),
                   status="needs_review")
    home.store.save_changeset(cs)
    return cs
