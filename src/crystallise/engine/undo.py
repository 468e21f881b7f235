"""Undo by cause, committed: everything learned from a trace or a user taken back as one version.

`crystallise.governance.undo.plan_undo` decides what goes back (read-only planning over the store
and the artifact repository); this commits the plan, marks the cause traces revoked and the
fully undone versions reverted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from crystallise.engine.committer import Committer
from crystallise.engine.home import Home
from crystallise.errors import NotFoundError, ValidationError
from crystallise.governance import undo as rules
from crystallise.governance.protect import Actor
from crystallise.governance.undo import UndoPlan
from crystallise.types import Version

__all__ = ["UndoPlan", "plan_undo", "undo"]


def plan_undo(home: Home, *, traces: Sequence[str] = (), user: str | None = None, reason: str = "",
              org: str | None = None) -> UndoPlan:
    """The undo of everything learned from `traces` or from `user`, planned (nothing is written)."""
    return rules.plan_undo(home.store, home.repo, traces=traces, user=user, reason=reason, org=org)


def undo(
    home: Home, *, traces: Sequence[str] = (), user: str | None = None, reason: str = "", org: str | None = None,
    check: Callable[[UndoPlan], None] | None = None, actor: Actor | None = None,
) -> tuple[UndoPlan, Version | None]:
    """Plan and commit the undo; mark the cause traces revoked and fully undone versions reverted.

    `check(plan)` runs on the plan before anything is written and may raise to refuse it (the
    HTTP API refuses an org key's undo that would change what other orgs share)."""
    committer = Committer(home)
    with home.repo.transaction():
        plan = plan_undo(home, traces=traces, user=user, reason=reason, org=org)
        if check is not None:
            check(plan)
        rules.revoke(home.store, plan.traces, plan.cause, reason)
        if plan.changeset is None:
            return plan, None
        version = committer.commit(plan.changeset, actor=actor)
        for number in plan.fully_undone:
            try:
                home.store.mark_reverted(number, version.number)
            except (ValidationError, NotFoundError):
                continue  # reverted meanwhile by someone else: theirs stands
    return plan, version
