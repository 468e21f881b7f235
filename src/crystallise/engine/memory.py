"""Explicit online learning: `remember` and `forget`, effective at once.

    import crystallise
    item = crystallise.remember("I moved to Rome", agent="travel", user="u1")   # supersedes "I live in Paris"
    crystallise.forget(query="Rome", agent="travel", user="u1")                 # retired, revertible
    crystallise.context(agent="travel", user="u1", query="where do I live?")    # no longer shown

These are explicit user actions, so they are not gated; they are written the way
everything is written — as deltas through the `Committer`:

- a user-level change (`user=` given) goes to the store's own user ledger, never git
  (undo: `crystallise items revert CHANGESET_ID`);
- an agent- or org-level change lands as a version, with a verdict that says it was an
  explicit user action, and the trace it came from as provenance (undo: `crystallise revert N`).

A write is planned by `temporal.plan_write` against the scope's items: the same fact again
is merged (not duplicated), a fact contradicting an active one with the same key supersedes
it, instruction-like text from an untrusted source (`source="tool"`, `"import"`, or trust
< 0.5) is quarantined instead of shown, and so is any untrusted text at agent or org level
(shared by every run there: a person reviews it first, whatever the detector said).
`forget` retires (soft, revertible); the hard, irreversible deletion of everything of a user
is `crystallise forget --user U` (forget_user.py).

The names and keyword arguments of `remember` and `forget` are a contract: the MCP tools and
HTTP endpoints are built on them.
"""

from __future__ import annotations

from typing import Any

from crystallise.context import deltas as build
from crystallise.context.injection import Detector, is_untrusted
from crystallise.context.injection import detect as default_detect
from crystallise.context.items import (
    clean_text,
    content_words,
    lexical_similarity,
    same_scope,
    validate_scope,
    validate_section,
    validate_time,
    validate_trust,
)
from crystallise.context.temporal import KEY_PATTERN, fact_key, plan_activation, plan_write, validate_key
from crystallise.errors import NotFoundError, ValidationError
from crystallise.engine.committer import Committer
from crystallise.engine.home import Home
from crystallise.governance.protect import Actor
from crystallise.types import ChangeSet, Delta, Item, Scope, Verdict, Version, now

__all__ = ["accept", "changes", "check_trace", "commit_explicit", "find_item", "forget", "history", "remember",
           "revert_change", "scope_items"]

EXPLICIT = "explicit user action: {what} (not gated; undo with {undo})"
LIVE = ("active", "quarantined")


def _owner(scope: Scope) -> str:
    return {"agent": scope.agent, "org": scope.org, "user": scope.user}[scope.level] or ""


def scope_items(home: Home, scope: Scope, kind: str | None = None) -> list[Item]:
    """Every live item of exactly `scope` (not the wider set visible to it)."""
    store = home.store
    found = store.query_items(
        agent=scope.agent, org=scope.org, user=scope.user, levels=(scope.level,), status=LIVE, kind=kind,
        limit=1_000_000,
    )
    return [it for it in found if same_scope(it, scope)]


def commit_explicit(home: Home, scope: Scope, deltas: list[Delta], *, what: str, provenance: list[str],
                    evidence: dict[str, Any] | None = None, learner: str = "remember") -> Version:
    """Commit deltas of an explicit user action through the Committer (user ledger or a version)."""
    undo = ("`crystallise items revert <change set>`" if scope.level == "user" else "`crystallise revert <version>`")
    cs = ChangeSet(
        learner=learner,
        layer="context",
        deltas=deltas,
        summary=f"{what} ({scope.level} {_owner(scope)})"[:200],
        scope=scope,
        provenance=provenance,
        evidence={"explicit": True, **(evidence or {})},
        verdict=Verdict(decision="accept", reason=EXPLICIT.format(what=learner, undo=undo)),
    )
    return Committer(home, recover=scope.level != "user").commit(cs, actor=Actor.explicit(learner))


def _check_trace(home: Home, trace_id: str | None, scope: Scope) -> list[str]:
    if trace_id is None:
        return []
    trace = home.store.get_trace(trace_id)  # NotFoundError names `traces list`
    if scope.level == "user" and (trace.user_id, trace.org_id) != (scope.user, scope.org):
        raise ValidationError(
            f"trace {trace_id} is not a trace of user {scope.user!r}: a user's memory can only cite that user's traces"
        )
    return [trace_id]


check_trace = _check_trace  # the trace a write cites, checked to be the scope's own (tiers.py)


def remember(
    text: str,
    *,
    agent: str = "default",
    org: str | None = None,
    user: str | None = None,
    kind: str = "memory",
    section: str = "general",
    source: str = "user",
    trust: float | None = None,
    valid_from: float | None = None,
    trace_id: str | None = None,
    home: Home | None = None,
    key: str | None = None,
    valid_to: float | None = None,
    meta: dict[str, Any] | None = None,
    detector: Detector | None = None,
) -> Item:
    """Store `text` in a scope now and return the item that holds it afterwards.

    `kind` memory | bullet | note | skill; `section` a playbook section (bullets);
    `source` user | review | import | reflection | tool, with `trust` defaulting by source;
    `valid_from`/`valid_to` bound when the fact holds (default: from now, open-ended);
    `key` the subject.attribute of a fact ("user.city"; found by rules when omitted);
    `trace_id` the run it came from (provenance). Returns the existing item when the same
    fact is already stored (its provenance grows), the new item otherwise; a quarantined
    item (instruction-like text from an untrusted source) is returned with that status.

    >>> remember("Prefers metric units", agent="travel", user="u1").status   # doctest: +SKIP
    'active'
    """
    scope = validate_scope(agent, org, user)
    text = clean_text(text, kind)
    section = validate_section(section)
    trust = validate_trust(trust, source)
    start, end = validate_time(valid_from, "valid_from"), validate_time(valid_to, "valid_to")
    if start is not None and end is not None and end <= start:
        raise ValidationError(f"valid_to ({end}) must be after valid_from ({start})")
    if meta is not None and not isinstance(meta, dict):
        raise ValidationError("meta must be a dict of JSON values")
    h = home or Home.from_env()
    redactor = getattr(h.store, "redactor", None)
    if redactor is not None:
        text = redactor.redact_text(text)
    provenance = _check_trace(h, trace_id, scope)
    value = None
    if key is not None:
        key = validate_key(key)
    elif kind == "memory":
        found = fact_key(text)
        subject = "user" if scope.level == "user" else "org"
        if found and found[0].split(".", 1)[0] == subject:
            key, value = found
    status = "active"
    extra: dict[str, Any] = {"learned_by": "explicit", **(meta or {})}
    if value is not None:
        extra["value"] = value
    if is_untrusted(source, trust):
        rules = (detector.detect if detector is not None else default_detect)(text)
        if rules:
            status = "quarantined"
            extra["quarantine"] = {"reason": f"instruction-like text from an untrusted source ({source})",
                                   "rules": rules, "release": "review: crystallise items accept ID"}
        elif scope.level != "user":  # a rule list misses new phrasings: every run of the scope would see it
            status = "quarantined"
            extra["quarantine"] = {"reason": f"untrusted source ({source}) at {scope.level} level",
                                   "release": "review: crystallise items accept ID"}
    item = Item(
        text=text, kind=kind, level=scope.level, agent_id=scope.agent, org_id=scope.org, user_id=scope.user,  # type: ignore[arg-type]
        section=section, status=status, source=source, trust=trust,  # type: ignore[arg-type]
        valid_from=start if start is not None else now(), valid_to=end, key=key, provenance=provenance, meta=extra,
    )
    existing = scope_items(h, scope, kind)
    if key is not None:  # the key's superseded facts too: a fact about the past is placed among them
        existing += [it for it in h.store.query_items(
            agent=scope.agent, org=scope.org, user=scope.user, levels=(scope.level,), status=("retired",), key=key,
            limit=1_000_000) if same_scope(it, scope) and it.superseded_by]
    plan = plan_write(item, existing)
    if plan.deltas:
        commit_explicit(h, scope, plan.deltas, what=f"remember: {text[:80]}", provenance=provenance,
                        evidence={"outcome": plan.outcome})
    return h.store.get_item(plan.item_id)


def _matches(item: Item, query: str, words: frozenset[str]) -> bool:
    if KEY_PATTERN.fullmatch(query):
        return item.key == query
    return words <= content_words(item.text) or lexical_similarity(query, item.text) >= 0.5


def forget(
    item_id: str | None = None,
    *,
    query: str | None = None,
    agent: str = "default",
    org: str | None = None,
    user: str | None = None,
    home: Home | None = None,
    reason: str = "forgotten on request",
) -> list[Item]:
    """Retire one item (by id) or the items of a scope matching `query`; returns them, retired.

    Soft and revertible: the items stay in the ledger (undo: `crystallise items revert` for
    a user's items, `crystallise revert N` for agent/org ones). The scope must be the item's
    own — forgetting a user's item needs `user=` — so nobody forgets another scope's items.
    A `query` matches items containing all its words (or lexically similar to it), or,
    when it is a fact key such as `user.city`, the facts with that key. Nothing matching
    returns [].
    """
    if (item_id is None) == (query is None):
        raise ValidationError("forget needs exactly one of item_id or query=")
    scope = validate_scope(agent, org, user)
    h = home or Home.from_env()
    if item_id is not None:
        try:
            item = h.store.get_item(item_id)
        except NotFoundError:
            item = None
        if item is None or not same_scope(item, scope):
            raise NotFoundError(
                f"item {item_id} not found in scope {scope.level} {_owner(scope)!r}: pass the item's own "
                "--agent/--org/--user (see `crystallise items list`)"
            )
        doomed = [item] if item.status in LIVE else []
    else:
        if not isinstance(query, str) or not query.strip():
            raise ValidationError("forget query is empty: give words the items to forget contain")
        words = content_words(query)
        if not words and not KEY_PATTERN.fullmatch(query.strip()):
            raise ValidationError(f"forget query {query!r} has no content words to match: be more specific")
        doomed = [it for it in scope_items(h, scope) if _matches(it, query.strip(), words)]
    if not doomed:
        return []
    deltas = [build.retire(it, reason) for it in doomed]
    commit_explicit(h, scope, deltas, what=f"forget {len(doomed)} item(s)", provenance=[], learner="forget",
                    evidence={"reason": reason})
    return [h.store.get_item(it.id) for it in doomed]


def accept(
    item_id: str,
    *,
    agent: str = "default",
    org: str | None = None,
    user: str | None = None,
    reason: str = "accepted in review",
    verdict: Verdict | None = None,
    home: Home | None = None,
) -> Item:
    """Release a quarantined item: a person's review, or a gate's accept `verdict`.

    The item becomes active (superseding an older fact with its key, or folding into an
    active duplicate). Without a verdict the release is recorded as a review by the user.
    """
    scope = validate_scope(agent, org, user)
    h = home or Home.from_env()
    item = h.store.get_item(item_id)
    if not same_scope(item, scope):
        raise NotFoundError(f"item {item_id} not found in scope {scope.level} {_owner(scope)!r}")
    if item.status != "quarantined":
        raise ValidationError(f"item {item_id} is {item.status}, not quarantined: only quarantined items are accepted")
    if verdict is not None and verdict.decision != "accept":
        raise ValidationError(f"the verdict is {verdict.decision}, not accept: the item stays quarantined")
    plan = plan_activation(item, scope_items(h, scope, item.kind), reason=reason,
                           meta={"accepted": {"by": "gate" if verdict else "review", "reason": reason}})
    commit_explicit(h, scope, plan.deltas, what=f"accept {item_id}", provenance=list(item.provenance),
                    learner="accept", evidence={"verdict": verdict.to_dict() if verdict else None})
    return h.store.get_item(plan.item_id)


def history(item_id: str, *, home: Home | None = None) -> list[dict[str, Any]]:
    """The ledger rows of one item, oldest first (see `Store.item_history`)."""
    h = home or Home.from_env()
    rows = list(h.store.item_history(item_id))
    if not rows:
        h.store.get_item(item_id)  # NotFoundError for an unknown id
    return rows


def find_item(store: Any, item_id: str) -> Item:
    """The item, or -- when a revert took it out of the items table -- its last state from the
    ledger, shown `retired` with `meta.reverted = {"by": change set, "at": time}`, so a reverted
    `remember` keeps its page and its history. NotFoundError only for an id the ledger never saw."""
    try:
        return store.get_item(item_id)  # type: ignore[no-any-return]
    except NotFoundError:
        rows = list(store.item_history(item_id))
        last = next((r for r in reversed(rows) if r.get("after") is None and r.get("before")), None)
        if last is None:
            raise
    item = Item.from_dict(last["before"])
    item.status = "retired"
    item.meta = {**item.meta, "reverted": {"by": last["changeset_id"], "version": last["version"],
                                           "at": last["created_at"]}}
    return item


def changes(user: str, *, org: str | None = None, limit: int = 100, home: Home | None = None) -> list[ChangeSet]:
    """A user's change sets in the user ledger, newest first."""
    validate_scope("default", org, user)
    h = home or Home.from_env()
    return list(h.store.list_user_changesets(user, org=org, limit=limit))


def revert_change(changeset_id: str, *, reason: str = "requested by the user", home: Home | None = None) -> ChangeSet:
    """Undo a user-level change set (`Committer.revert_user`); returns the reverting change set."""
    h = home or Home.from_env()
    return Committer(h, recover=False).revert_user(changeset_id, reason=reason)
