"""The tenancy rule, in one place: which change sets (and so versions) a caller may see.

Every edge that shows learned changes (the HTTP API's versions, change sets and review routes,
the web UI through them) asks `sees`; a change set an org may not see answers exactly like an
unknown one (DESIGN.md §5: "another org's id answers exactly like an unknown one").

    who.admin                     everything
    an org's key (who.org)        change sets of its own org and agent-level (shared) ones, judged by the
                                  scope *and* every delta: never another org's items or playbooks, nor
                                  the memories of a user outside any org
    a user-bound key (who.user)   besides, never another user's memories

Seeing is not changing (`may_change_item`, `require_change`): an agent-level item is shown to every
org, so only the admin key changes it; an org key changes its own org's items and its users'; a
user-bound key only its own user's memories, never the org's shared ones. A change it may not make
raises `NotAllowed` (403); an item it may not see stays a 404 like an unknown id.

The same rule over artifact paths (`may_read_path`), for task listings and pages, diffs and
change sets: `orgs/<org>/...` (what was learned from that org's runs: its task programs,
examples and eval cases) and `context/org/<org>/...` are that org's alone; `context/user/...`
is no org key's; everything else (`tasks/<name>/...`, the agent playbook, skills) is shared.

    >>> from types import SimpleNamespace as Key
    >>> evil = Key(org="evil", user=None, admin=False)
    >>> [may_read_path(evil, p) for p in ("tasks/t/code.py", "orgs/evil/tasks/t/evals.jsonl",
    ...                                   "orgs/victim/tasks/t/evals.jsonl", "context/org/victim/playbook.md")]
    [True, True, False, False]

Ids are per org (issue 15): an id a client chooses (a trace's, span's or feedback's `id`, an
OTLP trace id) is stored qualified by the org it is written to, `<id>@<org>` (`stored_id`), so
another org can neither squat it nor learn that it exists; record ids a client may send never
hold "@" (api/schemas.py `RecordId`). An org key names its records by the plain id and is
shown them that way (`find_trace`, `shown_trace`); rows stored before this rule, unqualified,
are still found by their org. The admin key sees the stored ids.

    >>> stored_id("victim", "run-1"), stored_id(None, "run-1")
    ('run-1@victim', 'run-1')
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from crystallise.errors import NotFoundError, UserError
from crystallise.governance.protect import Actor
from crystallise.store.base import Store
from crystallise.store.engine import org_scope, set_org_scope
from crystallise.types import ChangeSet, Item, Trace, Version
from crystallise.harness.spec import namespace

__all__ = ["ORG_SEP", "NotAllowed", "Who", "actor_for", "enter", "every_org", "find_trace", "may_change_item",
           "may_read_path", "may_see_item", "may_see_record", "may_see_trace", "org_folder", "qualify_trace",
           "report_for", "require_change", "sees", "sees_version", "shown_id", "shown_trace", "stored_id",
           "task_namespaces"]

ORG_SEP = "@"


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
            if not may_read_path(who, d.path or ""):
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


# -- ids per org -----------------------------------------------------------------------------------


def stored_id(org: str | None, given: str | None) -> str | None:
    """The id a client-chosen `given` id is stored under in `org` (unchanged outside any org)."""
    if given is None or org is None:
        return given
    return f"{given}{ORG_SEP}{org}"


def shown_id(who: Who, stored: str | None) -> str | None:
    """The id `who` knows a stored record by: its own org's qualifier dropped (admin: as stored)."""
    suffix = f"{ORG_SEP}{who.org}"
    if stored is None or who.admin or not stored.endswith(suffix):
        return stored
    return stored[: -len(suffix)]


def qualify_trace(trace: Trace, org: str | None, *, given: set[str] | None = None) -> Trace:
    """`trace` with its client-chosen ids (`given`: the ids the client sent, None: all of them)
    stored per `org`: trace id, span ids and parents, feedback ids and their trace id."""
    if org is None:
        return trace

    def q(value: str | None) -> str | None:
        return stored_id(org, value) if value is not None and (given is None or value in given) else value

    trace.id = q(trace.id) or trace.id
    for span in trace.spans:
        span.id, span.parent_id, span.trace_id = q(span.id) or span.id, q(span.parent_id), trace.id
    for fb in trace.feedback:
        fb.id, fb.trace_id = q(fb.id) or fb.id, trace.id
    return trace


def may_see_record(who: Who, org: str | None, user: str | None = None) -> bool:
    """A record (trace, user memory) of `org` and `user`: org keys see their own org's, user-bound
    keys their own user's only, the admin key all."""
    if getattr(who, "user", None) is not None and user != who.user:
        return False
    return who.admin or org == who.org


def may_see_item(who: Who, item: Item) -> bool:
    """A learned item: agent-level ones everyone; org- and user-level ones that org's keys; a
    user-level one a user-bound key's own user only."""
    if who.admin or item.level == "agent":
        return True
    if item.org_id != who.org:
        return False
    return item.level != "user" or getattr(who, "user", None) is None or item.user_id == who.user


class NotAllowed(UserError):
    """The caller's key may see this but not change it (answered 403; what it may not see is a 404)."""


def may_change_item(who: Who, item: Item) -> bool:
    """Whether `who` may change (update, retire) `item`: see the module docstring. Stricter than
    `may_see_item`: what every org is shown (agent level) or every user of an org (org level) is
    not one tenant's to rewrite."""
    if who.admin:
        return True
    if item.level == "agent" or item.org_id != who.org:
        return False
    user = getattr(who, "user", None)
    return user is None or (item.level == "user" and item.user_id == user)


def require_change(who: Who, item: Item) -> None:
    """`may_change_item`, or NotAllowed naming who may make the change."""
    if may_change_item(who, item):
        return
    if item.level == "agent":
        raise NotAllowed(f"item {item.id} is agent-level, shown to every org: changing it needs the admin key")
    raise NotAllowed(f"item {item.id} is org {item.org_id!r}'s shared {item.level}-level item and this API key is "
                     f"bound to user {getattr(who, 'user', None)!r}: changing it needs the org's key")


def may_see_trace(who: Who, trace: Trace) -> bool:
    """`may_see_record` for a trace."""
    return may_see_record(who, trace.org_id, trace.user_id)


def find_trace(store: Store, who: Who, given: str) -> Trace | None:
    """The trace `who` calls `given`, or None -- the same None whether it is unknown or another
    org's (and the same lookups either way: the org's qualified id, then the id as stored)."""
    candidates = [given] if who.admin else [stored_id(who.org, given), given]
    for candidate in candidates:
        if candidate is None:
            continue
        try:
            trace = store.get_trace(candidate)
        except NotFoundError:
            continue
        if may_see_trace(who, trace):
            return trace
    return None


def shown_trace(who: Who, trace: Trace) -> Trace:
    """A copy of `trace` with the ids as `who` knows them (see `shown_id`)."""
    if who.admin:
        return trace
    tid = shown_id(who, trace.id) or trace.id
    spans = [dataclasses.replace(s, id=shown_id(who, s.id) or s.id, parent_id=shown_id(who, s.parent_id),
                                 trace_id=tid) for s in trace.spans]
    feedback = [dataclasses.replace(f, id=shown_id(who, f.id) or f.id, trace_id=tid) for f in trace.feedback]
    return dataclasses.replace(trace, id=tid, spans=spans, feedback=feedback)



# -- artifact paths --------------------------------------------------------------------------------

def org_folder(org: str) -> str:
    """`orgs/<org>/`: where what is learned from `org`'s runs lives in the artifact repository (an
    org id that is not a plain path segment is hashed): `harness.spec.namespace`, the one rule."""
    return namespace(org)


def may_read_path(who: Who, path: str) -> bool:
    """Whether `who` may read the artifact file at `path` (see the module docstring)."""
    if who.admin:
        return True
    parts = path.split("/")
    if parts[0] == "orgs":
        return path.startswith(org_folder(who.org))
    if parts[:2] == ["context", "org"]:
        return parts[2:3] == [who.org]
    return parts[:2] != ["context", "user"]


def task_namespaces(who: Who, folders: list[str]) -> list[tuple[str | None, str]]:
    """(org, prefix) of the task trees `who` may read: the shared `tasks/`, its own org's, and for
    the admin every org's (`folders`: the `orgs/<x>/` folders the repository holds)."""
    out: list[tuple[str | None, str]] = [(None, "tasks/")]
    if who.admin:
        out += [(f.split("/")[1], f + "tasks/") for f in sorted(folders)]
    elif org_folder(who.org) in folders:
        out.append((who.org, org_folder(who.org) + "tasks/"))
    return out


def report_for(who: Who, report: dict[str, Any]) -> dict[str, Any]:
    """A dream report (`DreamReport.to_dict()`) as `who` may see it: an org key gets its own org's
    credit counts (credit runs over every org's new traces) and its own scopes only."""
    if who.admin:
        return report
    zero = {"traces": 0, "new": 0, "helpful": 0, "harmful": 0}
    out = {k: v for k, v in report.items() if k != "credit_by_org"}
    out["credit"] = dict((report.get("credit_by_org") or {}).get(who.org, zero))
    out["scopes"] = [s for s in report.get("scopes", []) if (s.get("scope") or {}).get("org") == who.org]
    return out


# -- the database's share of the rule (PostgreSQL row-level security, store/migrations.py m005) -----


def enter(who: Who) -> None:
    """From here on in this request, the store shows an org key only its org's rows (PostgreSQL:
    row-level security; a filter missed in code cannot leak). The admin key: every row."""
    set_org_scope(None if who.admin else who.org)


def every_org() -> Any:
    """A block that reads across orgs on purpose inside an org key's request (the dream's credit
    step runs over every org's new traces; what the key is shown is cut by `report_for`)."""
    return org_scope(None)
