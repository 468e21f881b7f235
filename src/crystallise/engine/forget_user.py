"""`crystallise forget --user U`: hard-delete everything of one user, and what was derived only from it.

    reports = forget_user(home, "u1", org="acme")
    reports[0].counts   # {"traces": 12, "spans": 40, "feedback": 7, "items": 5, "item_deltas": 9, ...}

Deleted, in one store transaction per (user, org):

- the user's traces with their spans and feedback (and rows of any table keyed by trace_id);
- the user's items, their ledger rows and the user's change sets (the user ledger), and
  versions that only changed the user's items (from before user-level changes had a ledger
  of their own);
- agent/org items *derived only from the user*: provenance non-empty and entirely the
  user's traces (e.g. a reflection bullet learned from one of their failed runs, or an org
  memory an operator saved from their conversation). They are first taken out of the
  served knowledge by a version (`Committer.purge`: the playbook is re-rendered without
  them) and then deleted with their ledger rows;
- references elsewhere are scrubbed: the user's trace ids leave provenance lists, their
  pseudonym leaves promoted items' evidence, deltas about purged items become tombstones.

Kept, on purpose: agent/org items backed by other users' traces too (their provenance
loses the user's traces; a promoted lesson keeps its text, which several users
contributed), and git history, which is the audit trail of agent/org knowledge — the
commit that added a purged item still holds its text; rewrite history (git filter-repo)
if a deletion must reach it too. User-level data never enters git, so a user's own
memories and traces are gone from every table (and, on SQLite, from the file: deletes run
with secure_delete and the WAL is truncated; PostgreSQL tables are vacuumed).

A user id is unique only within an org. When the user exists in several orgs, pass the
org (or `all_orgs=True`); deletion never guesses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from crystallise.context.index import forget_user_block
from crystallise.context.items import validate_scope
from crystallise.errors import NotFoundError, ValidationError
from crystallise.engine.committer import Committer
from crystallise.engine.home import Home

__all__ = ["DeletionReport", "forget_user"]


@dataclass
class DeletionReport:
    user: str
    org: str | None
    counts: dict[str, int] = field(default_factory=dict)
    purge_version: int | None = None  # the version that took derived agent/org items out of the playbooks

    @property
    def total(self) -> int:
        return sum(v for k, v in self.counts.items() if k != "scrubbed_rows")

    def to_dict(self) -> dict[str, object]:
        return {"user": self.user, "org": self.org, "counts": dict(self.counts), "purge_version": self.purge_version,
                "total": self.total}


def forget_user(home: Home, user: str, *, org: str | None = None, all_orgs: bool = False) -> list[DeletionReport]:
    """Hard-delete `user` (in `org`, or in every org with `all_orgs`); one report per org.

    Irreversible. Raises NotFoundError when the user has nothing stored, ValidationError when
    the user exists in several orgs and neither `org` nor `all_orgs` says which.
    """
    validate_scope("default", org, user)
    store = home.store
    orgs = store.user_orgs(user)
    if not orgs:
        raise NotFoundError(f"user {user!r} has no traces, items or changes in this store: nothing to delete")
    if all_orgs:
        targets = orgs
    elif org is not None:
        if org not in orgs:
            raise NotFoundError(f"user {user!r} has nothing stored in org {org!r} (orgs with data: "
                                f"{', '.join(o or '(none)' for o in orgs)})")
        targets = [org]
    elif len(orgs) == 1:
        targets = orgs
    else:
        raise ValidationError(
            f"user {user!r} has data in several orgs ({', '.join(o or '(none)' for o in orgs)}): user ids are "
            "unique only within an org, so pass --org ORG (or --all-orgs to delete every one)"
        )
    reports = []
    for target in targets:
        derived = store.derived_items(user, org=target)
        version = None
        if derived:
            made = Committer(home).purge(derived, reason=f"forget --user (org {target or 'none'})")
            version = made.number if made else None
        counts = store.delete_user_data(user, org=target, purge_items=[it.id for it in derived])
        forget_user_block(target, user, [it.id for it in derived])  # nor in this process's retrieval index
        reports.append(DeletionReport(user=user, org=target, counts=counts, purge_version=version))
    return reports
