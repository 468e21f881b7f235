"""The tenancy rule, in one place: which change sets (and so versions) a caller may see.

Every edge that shows learned changes (the HTTP API's versions, change sets and review routes,
the web UI through them) asks `sees`; a change set an org may not see answers exactly like an
unknown one (DESIGN.md §5: "another org's id answers exactly like an unknown one").

    who.admin                     everything
    an org's key (who.org)        change sets of its own org and agent-level (shared) ones, judged by the
                                  scope *and* every delta: never another org's items or playbooks, nor
                                  the memories of a user outside any org
    a user-bound key (who.user)   besides, never another user's memories
"""

from __future__ import annotations

from typing import Protocol

from crystallise.governance.protect import Actor
from crystallise.store.base import Store
from crystallise.types import ChangeSet, Version

__all__ = ["Who", "actor_for", "sees", "sees_version"]


class Who(Protocol):
    """The authenticated caller (`crystallise.api.auth.Principal` is one)."""

    org: str
    user: str | None

    @property
    def admin(self) -> bool: ...


def sees(who: Who, changeset: ChangeSet) -> bool:
    """Admin: everything. Org key: changes of its own org and agent-level (shared) ones, judged by
    the change set's scope *and* every delta in it — never another org's items or playbooks, nor
    the memories of a user outside any org."""
    if who.admin:
        return True
    if changeset.scope.org is not None and changeset.scope.org != who.org:
        return False
    if changeset.scope.org is None and changeset.scope.user is not None:
        return False
    if who.user is not None and changeset.scope.user not in (None, who.user):
        return False  # a user-bound key: never another user's memories
    for d in changeset.deltas:
        if d.target == "artifact":
            parts = (d.path or "").split("/")
            if parts[:2] == ["context", "org"] and parts[2:3] != [who.org]:
                return False
            if parts[:2] == ["context", "user"]:
                return False
            continue
        for snap in (d.before, d.after):
            if isinstance(snap, dict) and snap.get("level") in ("org", "user") and snap.get("org_id") != who.org:
                return False
            if who.user is not None and isinstance(snap, dict) and snap.get("level") == "user" \
                    and snap.get("user_id") != who.user:
                return False
    return True


def sees_version(store: Store, who: Who, version: Version, cache: dict[str, bool] | None = None) -> bool:
    """`sees` for the change set of `version` (`cache`: change set id -> answer, across calls)."""
    cache = {} if cache is None else cache
    if version.changeset_id not in cache:
        cache[version.changeset_id] = sees(who, store.get_changeset(version.changeset_id))
    return cache[version.changeset_id]


def actor_for(who: Who, what: str) -> Actor:
    """The authenticated actor an API request commits as (governance/protect.py): the admin key
    is a person's action with authority over graders, metrics, existing cases and logging (the
    key id is recorded); an org key's explicit request (a revert, an undo, an approval) is a
    person's action too, so it does not wait for review, but it has no such authority."""
    if who.admin:
        return Actor.admin_key(who, name=what)
    return Actor.explicit(f"{what} (org {who.org})")
