"""The store's side of the context layer's write path: validity filters, the user ledger, deletion.

Functions over a connection inside the caller's transaction (`SqlStore` owns the
transactions); the store methods that use them are the "context layer" block at the
end of `sql.py`.

    temporal_filter(status, as_of)      WHERE clause: status + valid_from <= t < valid_to
    user_owner(conn, deltas, scope)     the one (user, org) every delta of a user change set touches
    user_trace_ids / derived_item_ids   what `forget --user` deletes, planned before it runs
    delete_user(conn, ...)              hard-delete a user's rows from every table, scrub references

Deletion rules (docs/context.md, "Deleting a user"): rows are found by the columns that
say whose they are, so a table added later is covered by naming its columns
conventionally — a table with a `trace_id` column loses the rows of deleted traces, one
with an `item_id` column the rows of deleted items, one with a `user_id` column the
user's rows. References that remain (provenance lists, change set deltas of versions
that also touched other items) are scrubbed: deleted trace ids are removed and deltas
about a purged item become a tombstone `{"id": ..., "purged": true}`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from crystallise.errors import ValidationError
from crystallise.store.schema import changesets, item_deltas, items, metadata, traces, versions
from crystallise.types import ChangeSet, Delta, now

__all__ = [
    "PURGED",
    "delete_user",
    "derived_item_ids",
    "forget_strings",
    "is_tombstone",
    "temporal_filter",
    "user_hash",
    "user_owner",
    "user_trace_ids",
]

# The mark a delta about a purged item carries instead of the item (see module docstring).
PURGED = "purged"
PURGED_SUMMARY = "[purged by crystallise forget --user]"

CHUNK = 500
_JSON_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def user_hash(user: str, org: str | None) -> str:
    """A stable pseudonym of a user inside an org, for evidence counts that must not name the user.

    >>> user_hash("u1", "acme") == user_hash("u1", "acme") != user_hash("u1", None)
    True
    """
    return "uh_" + hashlib.sha256(f"{org or ''}\x00{user}".encode()).hexdigest()[:16]


def temporal_filter(status: Sequence[str], as_of: float | None) -> sa.ColumnElement[bool]:
    """Rows whose status is wanted, active ones only while valid at `as_of` (default now).

    With an explicit `as_of`, a superseded item (retired, `superseded_by` set) is what was
    active back then, so it counts as active for the times it was valid.
    """
    t = now() if as_of is None else float(as_of)
    valid = sa.and_(
        sa.or_(items.c.valid_from.is_(None), items.c.valid_from <= t),
        sa.or_(items.c.valid_to.is_(None), items.c.valid_to > t),
    )
    wanted = list(status)
    conditions = []
    if "active" in wanted:
        conditions.append(sa.and_(items.c.status == "active", valid))
        if as_of is not None:
            conditions.append(sa.and_(items.c.status == "retired", items.c.superseded_by.is_not(None), valid))
    others = [s for s in wanted if s != "active"]
    if others:
        conditions.append(items.c.status.in_(others))
    return sa.or_(*conditions) if conditions else sa.false()


def _org_is(column: sa.ColumnElement[Any], org: str | None) -> sa.ColumnElement[bool]:
    return column.is_(None) if org is None else column == org


# -- the user ledger ------------------------------------------------------------------------


def user_owner(conn: Connection, deltas: Sequence[Delta], scope_user: str | None,
               scope_org: str | None) -> tuple[str, str | None]:
    """The (user, org) of a user-level change set; ValidationError unless every delta is about it.

    Both the item as it is in the store and the delta's `after` are checked, so a change
    set cannot move an item into or out of a user's scope, or touch two users at once.
    """
    if not scope_user:
        raise ValidationError("a user-level change set needs scope.user: the user whose items it changes")
    owner = (scope_user, scope_org)
    if not deltas:
        raise ValidationError("a user-level change set needs at least one item delta")
    for delta in deltas:
        if delta.target != "item":
            raise ValidationError(
                f"user-level change sets hold item deltas only ({delta.op} {delta.path!r} is an artifact delta): "
                "user data never enters the artifact repository"
            )
        snapshots: list[dict[str, Any]] = []
        if isinstance(delta.after, dict):
            snapshots.append(delta.after)
        row = conn.execute(
            sa.select(items.c.level, items.c.user_id, items.c.org_id).where(items.c.id == delta.item_id)
        ).first()
        if row is not None:
            snapshots.append({"level": row.level, "user_id": row.user_id, "org_id": row.org_id})
        for snap in snapshots:
            if (snap.get("level"), snap.get("user_id"), snap.get("org_id")) != ("user", *owner):
                raise ValidationError(
                    f"item delta {delta.op} {delta.item_id} is not about user {scope_user!r} "
                    f"(org {scope_org!r}): a user-level change set changes one user's items only; "
                    "split it per user and commit agent/org items as a version"
                )
    return owner


# -- planning a deletion ----------------------------------------------------------------------


def user_trace_ids(conn: Connection, user: str, org: str | None) -> list[str]:
    query = sa.select(traces.c.id).where(traces.c.user_id == user, _org_is(traces.c.org_id, org))
    return [row[0] for row in conn.execute(query)]


def derived_item_ids(conn: Connection, trace_ids: Iterable[str]) -> list[str]:
    """Agent/org items whose provenance is non-empty and only these traces: derived from them alone.

    A scan of the agent/org items' provenance (deletion is rare; the scan is O(items)).
    """
    gone = set(trace_ids)
    if not gone:
        return []
    found = []
    query = sa.select(items.c.id, items.c.provenance).where(items.c.level != "user")
    for row in conn.execute(query):
        provenance = set(json.loads(row.provenance) if row.provenance else [])
        if provenance and provenance <= gone:
            found.append(row.id)
    return found


# -- deleting -------------------------------------------------------------------------------


def _delete_in(conn: Connection, table: sa.Table, column: str, values: Sequence[str]) -> int:
    total = 0
    for chunk in _chunks(list(values)):
        total += conn.execute(sa.delete(table).where(table.c[column].in_(chunk))).rowcount or 0
    return total


def delete_user(conn: Connection, user: str, org: str | None, purge_items: Sequence[str],
                strings: Sequence[str] = (), derived_changesets: Sequence[str] = ()) -> dict[str, int]:
    """Hard-delete everything of (user, org) plus the items `purge_items`; counts per table.

    Inside the caller's transaction. Order matters for the foreign keys: children first.
    """
    counts: dict[str, int] = {}
    trace_ids = user_trace_ids(conn, user, org)
    user_items = [
        row[0]
        for row in conn.execute(
            sa.select(items.c.id).where(items.c.level == "user", items.c.user_id == user,
                                        _org_is(items.c.org_id, org))
        )
    ]
    gone_items = sorted(set(user_items) | set(purge_items))
    cs_ids = [
        row[0]
        for row in conn.execute(
            sa.select(changesets.c.id).where(changesets.c.user_id == user, _org_is(changesets.c.org_id, org))
        )
    ]
    version_numbers = [
        row[0] for chunk in _chunks(cs_ids)
        for row in conn.execute(sa.select(versions.c.number).where(versions.c.changeset_id.in_(chunk)))
    ]

    # 1. every table that hangs off traces or items (spans, feedback, and any later table)
    for table in metadata.sorted_tables:
        if table.name in ("traces", "items", "item_deltas") or table.name.startswith("schema_"):
            continue
        if "trace_id" in table.c:
            counts[table.name] = counts.get(table.name, 0) + _delete_in(conn, table, "trace_id", trace_ids)
        if "item_id" in table.c:
            counts[table.name] = counts.get(table.name, 0) + _delete_in(conn, table, "item_id", gone_items)
    # 2. the ledger: the user's rows, rows about deleted items, rows of deleted change sets / versions
    ledger = conn.execute(
        sa.delete(item_deltas).where(item_deltas.c.user_id == user, _org_is(item_deltas.c.org_id, org))
    ).rowcount or 0
    ledger += _delete_in(conn, item_deltas, "item_id", gone_items)
    ledger += _delete_in(conn, item_deltas, "changeset_id", cs_ids)
    for chunk in _chunks([str(n) for n in version_numbers]):
        ledger += conn.execute(
            sa.delete(item_deltas).where(item_deltas.c.version.in_([int(n) for n in chunk]))
        ).rowcount or 0
    counts["item_deltas"] = ledger
    # 3. the records themselves
    counts["versions"] = sum(
        conn.execute(sa.delete(versions).where(versions.c.number.in_(list(chunk)))).rowcount or 0
        for chunk in _chunks(version_numbers)  # type: ignore[arg-type]
    )
    counts["changesets"] = _delete_in(conn, changesets, "id", cs_ids)
    counts["items"] = _delete_in(conn, items, "id", user_items)
    counts["derived_items"] = _delete_in(conn, items, "id", [i for i in purge_items if i not in set(user_items)])
    counts["traces"] = _delete_in(conn, traces, "id", trace_ids)
    # 4. any other table that names users
    for table in metadata.sorted_tables:
        if table.name in ("traces", "items", "item_deltas", "changesets") or "user_id" not in table.c:
            continue
        query = sa.delete(table).where(table.c.user_id == user)
        if "org_id" in table.c:
            query = query.where(_org_is(table.c.org_id, org))
        counts[table.name] = counts.get(table.name, 0) + (conn.execute(query).rowcount or 0)
    # 5. references that remain elsewhere
    counts["scrubbed_rows"] = _scrub(conn, set(trace_ids), set(gone_items), user_hash(user, org))
    counts["scrubbed_rows"] += _forget_programs(conn, derived_changesets)
    counts["scrubbed_rows"] += _scrub_strings(conn, [s for s in strings if s])
    return counts


FORGOTTEN = "[forgotten]"


def forget_strings(value: Any, strings: Sequence[str]) -> Any:
    """`value` with no string leaf quoting one of `strings`: a line-structured text (a JSONL file, code)
    loses the lines that quote one, any other string has each occurrence replaced by "[forgotten]".

    >>> forget_strings({"after": '{"input": "my pin 4711"}\\n{"input": "hi"}\\n', "n": 2}, ["my pin 4711"])
    {'after': '{"input": "hi"}\\n', 'n': 2}
    """
    if isinstance(value, list):
        return [forget_strings(v, strings) for v in value]
    if isinstance(value, dict):
        return {k: forget_strings(v, strings) for k, v in value.items()}
    if not isinstance(value, str) or not any(s in value for s in strings):
        return value
    if "\n" in value.strip("\n"):
        kept = [line for line in value.splitlines(keepends=True) if not any(s in line for s in strings)]
        value = "".join(kept)
    for s in strings:
        value = value.replace(s, FORGOTTEN)
    return value


_PROGRAM_FILES = ("/program.json", "/code.py", "/hybrid.json")


def _forget_programs(conn: Connection, changeset_ids: Sequence[str]) -> int:
    """In change sets learned from a deleted user's runs, the program files' texts (a program can hold the
    user's data as constants: `cat('VAULT-zed-', x)`) and the learner's notes (evidence) go."""
    changed = 0
    for chunk in _chunks(list(changeset_ids)):
        rows = conn.execute(sa.select(changesets.c.id, changesets.c.deltas).where(changesets.c.id.in_(chunk))).all()
        for cs_id, text in rows:
            deltas = json.loads(text or "[]")
            for d in deltas:
                if isinstance(d, dict) and str(d.get("path") or "").endswith(_PROGRAM_FILES):
                    d["before"] = d["after"] = None
                    d["reason"] = "purged by `crystallise forget --user`"
            conn.execute(sa.update(changesets).where(changesets.c.id == cs_id).values(
                deltas=json.dumps(deltas, ensure_ascii=False, separators=(",", ":")),
                evidence=json.dumps({PURGED: True})))
            changed += 1
    return changed


def _scrub_strings(conn: Connection, strings: Sequence[str]) -> int:
    """Rewrite change sets (deltas, evidence, provenance, summary) and version messages that quote one of
    `strings` (what `forget --user` found in the user's traces): their derived text goes too."""
    if not strings:
        return 0
    # in a JSON column a string appears escaped: look for both forms
    needles = sorted({*strings, *(json.dumps(s, ensure_ascii=False)[1:-1] for s in strings)})
    changed = 0
    for table, key, columns in ((changesets, "id", ["deltas", "evidence", "provenance", "summary"]),
                                (versions, "number", ["message", "provenance"]),
                                (item_deltas, "seq", ["before_json", "after_json"])):
        present = [c for c in columns if c in table.c]
        for row in conn.execute(sa.select(table.c[key], *[table.c[c] for c in present])).all():
            update: dict[str, Any] = {}
            for column in present:
                text = row._mapping[column]
                if not isinstance(text, str) or not any(n in text for n in needles):
                    continue
                if column in ("summary", "message"):
                    update[column] = forget_strings(text, strings)
                    continue
                value = forget_strings(json.loads(text), strings)
                update[column] = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            if update:
                conn.execute(sa.update(table).where(table.c[key] == row._mapping[key]).values(update))
                changed += 1
    return changed


def _mentions(text: str | None, values: set[str]) -> bool:
    """Whether a JSON text holds one of `values` as a string (linear in the text)."""
    if not text or not values:
        return False
    return any(m in values for m in _JSON_STRING.findall(text))


def _dead(value: Any, trace_ids: set[str], pseudonym: str) -> bool:
    """A list element that only points at deleted data: a deleted trace id, the user's
    pseudonym, or an evidence record {"trace": id, ...} of a deleted trace."""
    if isinstance(value, str):
        return value in trace_ids or value == pseudonym
    if isinstance(value, dict):
        ref = value.get("trace", value.get("trace_id"))
        return isinstance(ref, str) and ref in trace_ids
    return False


def _scrubbed(value: Any, trace_ids: set[str], item_ids: set[str], pseudonym: str) -> Any:
    """`value` without deleted trace ids and the user's pseudonym; purged items become tombstones."""
    if isinstance(value, list):
        return [_scrubbed(v, trace_ids, item_ids, pseudonym) for v in value if not _dead(v, trace_ids, pseudonym)]
    if isinstance(value, dict):
        if value.get("target") == "item" and value.get("item_id") in item_ids:  # a delta about a purged item
            tomb = {"id": value["item_id"], PURGED: True}
            return {**{k: value[k] for k in ("op", "target", "item_id") if k in value},
                    "before": tomb, "after": tomb, "reason": "purged by `crystallise forget --user`"}
        if isinstance(value.get("id"), str) and value["id"] in item_ids and "text" in value:  # an item snapshot
            return {"id": value["id"], PURGED: True}
        return {k: _scrubbed(v, trace_ids, item_ids, pseudonym) for k, v in value.items()}
    if isinstance(value, str) and (value in trace_ids or value == pseudonym):
        return None
    return value


def is_tombstone(snapshot: Any) -> bool:
    """Whether an item snapshot in a delta is the mark left by a purge."""
    return isinstance(snapshot, dict) and snapshot.get(PURGED) is True


def _scrub(conn: Connection, trace_ids: set[str], item_ids: set[str], pseudonym: str) -> int:
    """Rewrite JSON columns that still mention deleted traces, purged items or the user's pseudonym.

    A change set all of whose deltas are now tombstones also loses its summary (and its
    version its message), since those quoted the purged text.
    """
    wanted = trace_ids | item_ids | {pseudonym}
    targets: list[tuple[sa.Table, str, list[str]]] = [
        (items, "id", ["provenance", "meta"]),
        (changesets, "id", ["provenance", "deltas", "evidence"]),
        (versions, "number", ["provenance"]),
        (item_deltas, "seq", ["before_json", "after_json"]),
    ]
    changed = 0
    emptied: list[str] = []
    for table, key, columns in targets:
        rows = conn.execute(sa.select(table.c[key], *[table.c[c] for c in columns])).all()
        for row in rows:
            update: dict[str, Any] = {}
            for column in columns:
                text = row._mapping[column]
                if _mentions(text, wanted):
                    value = _scrubbed(json.loads(text), trace_ids, item_ids, pseudonym)
                    update[column] = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
                    if table is changesets and column == "deltas" and value and all(
                        is_tombstone(d.get("after")) for d in value if isinstance(d, dict)
                    ):
                        emptied.append(row._mapping[key])
                        update["summary"] = PURGED_SUMMARY
            if update:
                conn.execute(sa.update(table).where(table.c[key] == row._mapping[key]).values(update))
                changed += 1
    for chunk in _chunks(emptied):
        conn.execute(sa.update(versions).where(versions.c.changeset_id.in_(chunk)).values(message=PURGED_SUMMARY))
    return changed


def user_changesets_query(user: str, org: str | None, limit: int) -> sa.Select[Any]:
    return (
        sa.select(changesets)
        .where(changesets.c.user_id == user, _org_is(changesets.c.org_id, org))
        .order_by(changesets.c.created_at.desc(), changesets.c.id.desc())
        .limit(limit)
    )


def committed_user_changeset(cs: ChangeSet) -> ChangeSet:
    """`cs` as it is stored once committed to the user ledger."""
    cs = ChangeSet.from_dict(cs.to_dict())
    cs.status = "committed"
    return cs
