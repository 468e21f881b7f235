"""The context layer's tables, for `SqlStore`: the user ledger, item history, per-user deletion
(ctx-core, m002), the usage log that credit assignment writes, and the dream's run records.

A mixin: `SqlStore` supplies `_read`, `_write`, `_upsert`, `_refuse_committed` and `redactor`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, get_args

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from crystallise.errors import NotFoundError, ValidationError
from crystallise.store import codec, dreams, userdata
from crystallise.store.base import Redactor
from crystallise.store.deltas import apply_deltas
from crystallise.store.engine import WRITE, translate_errors
from crystallise.store.schema import changesets, item_deltas, items, traces, watermarks
from crystallise.types import ChangeSet, Item, Level, now

__all__ = ["CHUNK", "LEVELS", "TRACE_LOCK", "VERSION_LOCK", "ContextDataMixin"]

# pg_advisory_xact_lock keys (arbitrary constants, ASCII "crystrac" / "crystver").
TRACE_LOCK = 0x63727973_74726163
VERSION_LOCK = 0x63727973_74766572

# Ids per IN (...) list: far below SQLite's and psycopg's parameter limits.
CHUNK = 500

LEVELS = frozenset(get_args(Level))


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValidationError(f"limit must be a non-negative integer, not {limit!r}")


class ContextDataMixin:
    """User ledger, deletion, usage log and dream runs (see the module docstring)."""

    redactor: Redactor | None

    if TYPE_CHECKING:  # SqlStore's
        def _read(self, doing: str) -> AbstractContextManager[Connection]: ...
        def _write(self, doing: str, lock: int | None = None) -> AbstractContextManager[Connection]: ...
        def _upsert(self, table: sa.Table, row: dict[str, Any], key: str) -> sa.Insert: ...
        def _refuse_committed(self, conn: Connection, changeset_id: str, consequence: str) -> None: ...

    # -- context layer: user ledger, item history, per-user deletion (ctx-core, m002) ---------

    def _redacted(self, changeset: ChangeSet) -> ChangeSet:
        """The change set with its item deltas' text redacted (a copy; unchanged without a redactor)."""
        if self.redactor is None or not changeset.deltas:
            return changeset
        return dataclasses.replace(changeset, deltas=[self.redactor.redact_delta(d) for d in changeset.deltas])

    def commit_user_changeset(self, changeset: ChangeSet) -> ChangeSet:
        """Apply a user-level change set in the store's own ledger (no version, never git), atomically.

        Every delta must be about items of `changeset.scope.user` (in `scope.org`); the change set
        is stored as committed with its owner, and each delta writes a ledger row carrying the
        change set id. Undo with `crystallise items revert CHANGESET_ID` (`Committer.revert_user`).
        """
        changeset = self._redacted(changeset)
        committed = userdata.committed_user_changeset(changeset)
        row = codec.changeset_row(committed, updated_at=now())
        with self._write(f"committing user change set {changeset.id}") as conn:
            self._refuse_committed(conn, changeset.id, "it cannot be applied twice")
            userdata.user_owner(conn, changeset.deltas, changeset.scope.user, changeset.scope.org)
            apply_deltas(conn, changeset.deltas, version=None, changeset_id=changeset.id)
            conn.execute(self._upsert(changesets, row, "id"))
        return committed

    def list_user_changesets(self, user: str, *, org: str | None = None, limit: int = 100) -> list[ChangeSet]:
        """A user's change sets in the user ledger, newest first; `evidence["reverted_by"]` names the
        change set that undid one."""
        _check_limit(limit)
        with self._read(f"listing change sets of user {user}") as conn:
            rows = conn.execute(userdata.user_changesets_query(user, org, limit)).mappings().all()
        found = []
        for row in rows:
            cs = codec.changeset_from_row(row)
            if row["reverted_by"]:
                cs.evidence["reverted_by"] = row["reverted_by"]
            found.append(cs)
        return found

    def changeset_reverted_by(self, changeset_id: str) -> str | None:
        """The id of the change set that undid a user-level change set, if one did."""
        with self._read(f"reading change set {changeset_id}") as conn:
            return conn.execute(
                sa.select(changesets.c.reverted_by).where(changesets.c.id == changeset_id)
            ).scalar()

    def mark_changeset_reverted(self, changeset_id: str, by: str) -> None:
        """Record that user-level change set `by` undid `changeset_id` (once)."""
        with self._write(f"marking change set {changeset_id} reverted") as conn:
            current = conn.execute(
                sa.select(changesets.c.reverted_by).where(changesets.c.id == changeset_id)
            ).first()
            if current is None:
                raise NotFoundError(f"change set {changeset_id} not found: see `crystallise items history --user U`")
            if current[0] not in (None, by):
                raise ValidationError(f"change set {changeset_id} was already reverted by {current[0]}")
            conn.execute(sa.update(changesets).where(changesets.c.id == changeset_id).values(reverted_by=by))

    def item_history(self, item_id: str) -> list[dict[str, Any]]:
        """Every ledger row of an item, oldest first: seq, version (None in the user ledger),
        changeset_id, op, reason, created_at, before, after (item dicts or None)."""
        query = sa.select(item_deltas).where(item_deltas.c.item_id == item_id).order_by(item_deltas.c.seq)
        with self._read(f"reading the history of item {item_id}") as conn:
            rows = conn.execute(query).mappings().all()
        return [
            {"seq": r["seq"], "version": r["version"], "changeset_id": r["changeset_id"], "op": r["op"],
             "reason": r["reason"], "created_at": r["created_at"],
             "before": codec.load_json(r["before_json"]), "after": codec.load_json(r["after_json"])}
            for r in rows
        ]

    def user_orgs(self, user: str) -> list[str | None]:
        """The orgs (None: no org) in which `user` has traces, items or change sets."""
        found: set[str | None] = set()
        with self._read(f"finding the orgs of user {user}") as conn:
            for table, extra in ((traces, None), (items, items.c.level == "user"), (changesets, None)):
                query = sa.select(table.c.org_id).where(table.c.user_id == user).distinct()
                if extra is not None:
                    query = query.where(extra)
                found.update(row[0] for row in conn.execute(query))
        return sorted(found, key=lambda o: (o is not None, o or ""))

    def items_of_all_users(self, *, org: str | None, agent: str | None = None,
                           status: Sequence[str] = ("active",), kind: str | None = None) -> list[Item]:
        """User-level items of every user of `org` (org None: users without an org, of `agent`).

        Not a visibility query — nothing serves these to anyone: it is what the promotion
        learner reads to find lessons several users hold independently.
        """
        query = sa.select(items).where(items.c.level == "user", items.c.status.in_(list(status)))
        query = query.where(items.c.org_id.is_(None) if org is None else items.c.org_id == org)
        if agent is not None:
            query = query.where(items.c.agent_id == agent)
        if kind is not None:
            query = query.where(items.c.kind == kind)
        with self._read("reading items of all users") as conn:
            rows = conn.execute(query.order_by(items.c.rid)).mappings().all()
        return [codec.item_from_row(row) for row in rows]

    def derived_items(self, user: str, *, org: str | None = None) -> list[Item]:
        """Agent/org items whose provenance is only this user's traces (what deletion also removes)."""
        with self._read(f"finding items derived from user {user}") as conn:
            ids = userdata.derived_item_ids(conn, userdata.user_trace_ids(conn, user, org))
            rows = [
                row for chunk in _chunks(ids)
                for row in conn.execute(sa.select(items).where(items.c.id.in_(chunk))).mappings()
            ]
        return [codec.item_from_row(row) for row in rows]

    def delete_user_data(self, user: str, *, org: str | None = None,
                         purge_items: Sequence[str] = (), strings: Sequence[str] = (),
                         derived_changesets: Sequence[str] = ()) -> dict[str, int]:
        """Hard-delete a user's traces, spans, feedback, items, ledger rows and change sets, plus
        `purge_items`, in one transaction; returns the number of rows deleted per table.

        Deleted text must not survive on disk either: SQLite runs the delete with
        `secure_delete` (freed pages are zeroed), merges the FTS index and truncates the
        WAL; PostgreSQL vacuums the touched tables afterwards.
        """
        if not isinstance(user, str) or not user:
            raise ValidationError("delete_user_data needs the user id (a non-empty string)")
        with self._serial, translate_errors(self.url, f"deleting the data of user {user}"):
            with self.engine.connect() as conn:
                raw = None if self._pg else conn.connection.dbapi_connection
                if raw is not None:  # outside any transaction: the driver connection is in autocommit
                    raw.execute("PRAGMA secure_delete = ON")
                conn.execution_options(**{WRITE: True})
                try:
                    with conn.begin():
                        if self._pg:
                            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(TRACE_LOCK)))
                        counts = userdata.delete_user(conn, user, org, purge_items, strings, derived_changesets)
                        if raw is not None:
                            conn.exec_driver_sql("INSERT INTO items_fts(items_fts) VALUES ('optimize')")
                finally:
                    if raw is not None:
                        raw.execute("PRAGMA secure_delete = OFF")
                if raw is not None:
                    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            if self._pg:
                with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    for table in ("traces", "spans", "feedback", "items", "item_deltas", "changesets", "versions"):
                        conn.exec_driver_sql(f"VACUUM {table}")
        return counts

    # -- retrieval: vectors, links, the item change feed (context/index.py) -------------------

    def record_usage(self, rows: Sequence[tuple[str, str, int, float]], *,
                     watermark: tuple[str, int] | None = None) -> dict[str, int]:
        """Log (trace, item shown, outcome 1|-1|0, at) rows and credit the new ones, atomically with
        an optional watermark move; a pair logged before credits nothing (store/dreams.py)."""
        with self._write("recording item usage") as conn:
            counts = dreams.insert_usage(conn, rows)
            if watermark is not None:
                conn.execute(self._upsert(watermarks, {"name": watermark[0], "value": int(watermark[1]),
                                                       "updated_at": now()}, "name"))
        return counts

    def usage_pairs(self, trace_ids: Sequence[str]) -> set[tuple[str, str]]:
        with self._read("reading item usage") as conn:
            return dreams.usage_pairs(conn, trace_ids)

    def last_used(self, item_ids: Sequence[str]) -> dict[str, float]:
        """Item id -> the latest time it was shown in a logged trace."""
        with self._read("reading when items were last used") as conn:
            return dreams.last_used(conn, item_ids)

    def trace_scopes(self) -> list[tuple[str, str | None, str | None, int]]:
        """(agent, org, user, max seq) per group of traces."""
        with self._read("listing trace scopes") as conn:
            return dreams.trace_scopes(conn)

    def watermarks_with_prefix(self, prefix: str) -> dict[str, int]:
        with self._read(f"reading watermarks {prefix}*") as conn:
            return dreams.watermarks_with_prefix(conn, prefix)

    def dream_processed(self, scope_key: str, trace_ids: Sequence[str]) -> set[str]:
        """Which of `trace_ids` the dream of `scope_key` has processed."""
        with self._read("reading processed traces") as conn:
            return dreams.processed(conn, scope_key, trace_ids)

    def save_dream_run(self, run: dict[str, Any]) -> None:
        with self._write(f"saving dream run {run.get('id')}") as conn:
            dreams.save_run(conn, run)

    def finish_dream_run(self, run: dict[str, Any], *, watermark: str, value: int, trace_ids: Sequence[str]) -> None:
        """The run's final row, its processed traces and the scope's watermark, in one transaction."""
        with self._write(f"finishing dream run {run.get('id')}") as conn:
            dreams.finish_run(conn, run, watermark=watermark, value=value, trace_ids=trace_ids)

    def list_dream_runs(self, *, scope_key: str | None = None, status: str | None = None,
                        agent: str | None = None, org: str | None = None, user: str | None = None,
                        limit: int = 50) -> list[dict[str, Any]]:
        """Dream-run records, newest first (what each run read, did and committed)."""
        _check_limit(limit)
        with self._read("listing dream runs") as conn:
            return dreams.list_runs(conn, scope_key=scope_key, status=status, agent=agent, org=org, user=user,
                                    limit=limit)
