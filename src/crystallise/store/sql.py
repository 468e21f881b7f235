"""`SqlStore`: the `Store` protocol on SQLAlchemy Core, one code base for SQLite and PostgreSQL.

Every write method runs in one transaction and returns only after it committed, so
a returned call is an acknowledged, durable write. Reads run in one transaction too,
so a trace and its children come from one snapshot.

Ordering guarantees learners rely on:

- `traces.seq` grows with commit order. SQLite serialises writers (BEGIN IMMEDIATE);
  on PostgreSQL a sequence alone would not do (a transaction holding seq 7 can commit
  after one holding seq 8, and a learner that has read 8 would skip 7 for ever), so
  trace writes take a short advisory transaction lock.
- version numbers are assigned under the same kind of lock, so `number=0` never races.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from crystallise.errors import AlreadyRecorded, NotFoundError, ValidationError
from crystallise.store import codec
from crystallise.store.base import Redactor
from crystallise.store import vectors as vec
from crystallise.store.deltas import apply_deltas
from crystallise.store.engine import (is_postgres, make_engine, mask_url, translate_errors,
                                      write_connection)
from crystallise.store.schema import changesets, items, spans, traces, versions, watermarks
from crystallise.store.schema import feedback as feedback_table
from crystallise.store.batch import TraceBatchMixin
from crystallise.store.search import query_tokens, ranked
from crystallise.store.sql_context import LEVELS, TRACE_LOCK, VERSION_LOCK, ContextDataMixin, _check_limit, _chunks
from crystallise.store.userdata import temporal_filter
from crystallise.types import ChangeSet, Delta, Feedback, Item, Span, Trace, Version, now

__all__ = ["SqlStore"]

class SqlStore(TraceBatchMixin, ContextDataMixin):
    """The trace and item store on SQLite or PostgreSQL. Open it with `crystallise.store.open_store`.

    >>> store = open_store("sqlite:///" + tmp + "/crystallise.db")   # doctest: +SKIP
    >>> store.write_trace(Trace(name="answer", input="2+2?", output="4")).seq   # doctest: +SKIP
    1
    """

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine if engine is not None else make_engine(url)
        self._pg = is_postgres(self.engine)
        # An in-memory SQLite store is one shared connection (StaticPool): serialise its
        # users, or two threads would interleave statements inside one transaction.
        self._serial: AbstractContextManager[Any] = (
            threading.RLock() if isinstance(self.engine.pool, StaticPool) else nullcontext()
        )
        # PII redaction applied before anything is stored (context/pii.py); `Home.store` sets
        # it from the home's config. None stores text as given.
        self.redactor: Redactor | None = None
        # Called with every trace once it is committed (traces/otlp_export.py: must only enqueue, never raise).
        self.exporter: Callable[[Trace], None] | None = None
        self._init_batches()  # write_traces' own PostgreSQL connection (store/batch.py)

    def __repr__(self) -> str:
        return f"SqlStore({mask_url(self.url)!r})"

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every pooled connection. The store must not be used afterwards."""
        self._close_batches()
        self.engine.dispose()

    @contextmanager
    def _read(self, doing: str) -> Iterator[Connection]:
        with self._serial, translate_errors(self.url, doing), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _write(self, doing: str, lock: int | None = None) -> Iterator[Connection]:
        with self._serial, translate_errors(self.url, doing), write_connection(self.engine) as conn:
            if lock is not None and self._pg:
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock)))
            yield conn

    def _upsert(self, table: sa.Table, row: dict[str, Any], key: str) -> sa.Insert:
        insert = (postgresql.insert if self._pg else sqlite.insert)(table).values(row)
        return insert.on_conflict_do_update(
            index_elements=[key], set_={name: insert.excluded[name] for name in row if name != key}
        )

    # -- traces ------------------------------------------------------------------------

    def write_trace(self, trace: Trace) -> Trace:
        """Record a finished trace with its spans and feedback, all or nothing.

        Returns a copy with `seq` set and the children's `trace_id` filled in; the
        argument is not modified. Raises ValidationError if the id was recorded before.
        """
        if self.redactor is not None:
            trace = self.redactor.redact_trace(trace)
        trace_row = codec.trace_row(trace, recorded_at=now())
        span_rows = codec.span_rows(trace)
        feedback_rows = [codec.feedback_row(fb, trace.id) for fb in trace.feedback]
        for kind, rows in (("span", span_rows), ("feedback", feedback_rows)):
            repeated = [i for i, n in Counter(row["id"] for row in rows).items() if n > 1]
            if repeated:
                raise ValidationError(f"trace {trace.id!r} has two {kind} records with id {repeated[0]!r}")
        with self._write(f"recording trace {trace.id}", lock=TRACE_LOCK) as conn:
            if conn.execute(sa.select(traces.c.seq).where(traces.c.id == trace.id)).first() is not None:
                raise AlreadyRecorded(f"trace {trace.id} was already recorded; traces are immutable")
            try:
                key = conn.execute(sa.insert(traces).values(trace_row)).inserted_primary_key
                seq = int(key[0]) if key is not None else None
                if span_rows:
                    conn.execute(sa.insert(spans), span_rows)
                if feedback_rows:
                    conn.execute(sa.insert(feedback_table), feedback_rows)
            except exc.IntegrityError as error:
                raise ValidationError(
                    f"trace {trace.id}: a span or feedback id is already recorded in another trace "
                    f"(ids must be unique; leave them at their defaults): {error.orig}"
                ) from None
        return self._exported(dataclasses.replace(
            trace,
            seq=seq,
            spans=[dataclasses.replace(span, trace_id=trace.id) for span in trace.spans],
            feedback=[dataclasses.replace(fb, trace_id=trace.id) for fb in trace.feedback],
        ))

    def _exported(self, trace: Trace) -> Trace:
        if self.exporter is not None:
            try:
                self.exporter(trace)
            except Exception:  # noqa: BLE001 - exporting is telemetry: it never fails a write
                logging.getLogger("crystallise.store").exception("the trace exporter failed on %s", trace.id)
        return trace

    def add_feedback(self, feedback: Feedback) -> None:
        """Attach feedback to an acknowledged trace (NotFoundError if the trace is unknown)."""
        if not feedback.trace_id:
            raise ValidationError("feedback needs trace_id: the id of the trace it is about")
        if self.redactor is not None:
            feedback = self.redactor.redact_feedback(feedback)
        row = codec.feedback_row(feedback, feedback.trace_id)
        with self._write(f"adding feedback to trace {feedback.trace_id}") as conn:
            if conn.execute(sa.select(traces.c.seq).where(traces.c.id == feedback.trace_id)).first() is None:
                raise self._trace_not_found(feedback.trace_id)
            try:
                conn.execute(sa.insert(feedback_table), [row])
            except exc.IntegrityError:
                raise AlreadyRecorded(
                    f"feedback {feedback.id} was already recorded; feedback is immutable (use a new id)"
                ) from None

    @staticmethod
    def _trace_not_found(trace_id: str) -> NotFoundError:
        return NotFoundError(f"trace {trace_id} not found: run `crystallise traces list` to see recorded traces")

    def get_trace(self, trace_id: str) -> Trace:
        """The trace with its spans (in recorded order) and feedback (oldest first)."""
        with self._read(f"reading trace {trace_id}") as conn:
            row = conn.execute(sa.select(traces).where(traces.c.id == trace_id)).mappings().first()
            if row is None:
                raise self._trace_not_found(trace_id)
            children = self._children(conn, [trace_id])
        return codec.trace_from_row(row, *children[trace_id])

    def _children(self, conn: Connection, trace_ids: Sequence[str]) -> dict[str, tuple[list[Span], list[Feedback]]]:
        """Spans and feedback of many traces in two queries per CHUNK ids (no N+1)."""
        found: dict[str, tuple[list[Span], list[Feedback]]] = {tid: ([], []) for tid in trace_ids}
        for chunk in _chunks(trace_ids):
            span_query = sa.select(spans).where(spans.c.trace_id.in_(chunk)).order_by(spans.c.position)
            for row in conn.execute(span_query).mappings():
                found[row["trace_id"]][0].append(codec.span_from_row(row))
            fb_query = (
                sa.select(feedback_table).where(feedback_table.c.trace_id.in_(chunk)).order_by(feedback_table.c.rid)
            )
            for row in conn.execute(fb_query).mappings():
                found[row["trace_id"]][1].append(codec.feedback_from_row(row))
        return found

    def list_traces(
        self,
        *,
        agent: str | None = None,
        org: str | None = None,
        user: str | None = None,
        name: str | None = None,
        after_seq: int = 0,
        limit: int = 100,
        with_children: bool = False,
    ) -> list[Trace]:
        """Traces in `seq` order, oldest first, starting after `after_seq`.

        Without `with_children` the traces have empty `spans` and `feedback` (one
        query); with it, children are loaded in bulk. Page with the last `seq` seen:

        >>> page = store.list_traces(after_seq=watermark, limit=500)   # doctest: +SKIP
        """
        _check_limit(limit)
        query = sa.select(traces).where(traces.c.seq > after_seq).order_by(traces.c.seq).limit(limit)
        for column, value in (("agent_id", agent), ("org_id", org), ("user_id", user), ("name", name)):
            if value is not None:
                query = query.where(traces.c[column] == value)
        with self._read("listing traces") as conn:
            rows = conn.execute(query).mappings().all()
            children = self._children(conn, [row["id"] for row in rows]) if with_children and rows else {}
        return [codec.trace_from_row(row, *children.get(row["id"], ([], []))) for row in rows]

    def count_traces(self, *, agent: str | None = None, org: str | None = None, user: str | None = None,
                     name: str | None = None, after_seq: int = 0, limit: int | None = None) -> int:
        """How many traces match (as `list_traces` filters them), counting at most `limit`: the
        scheduler's "enough new runs yet?" without reading the runs (engine/scheduler.py)."""
        query = sa.select(traces.c.seq).where(traces.c.seq > after_seq) if after_seq else sa.select(traces.c.seq)
        for column, value in (("agent_id", agent), ("org_id", org), ("user_id", user), ("name", name)):
            if value is not None:
                query = query.where(traces.c[column] == value)
        if limit is not None:
            _check_limit(limit)
            query = query.order_by(traces.c.seq).limit(limit)
        with self._read("counting traces") as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(query.subquery())).scalar_one())

    def sessions_after(self, *, after_seq: int, limit: int, marks: Sequence[str] = ()
                       ) -> list[tuple[str | None, str | None, float, list[dict[str, Any]]]]:
        """Per session among the `limit` traces after `after_seq`, as (org, session id, last time, end
        marks): a session is an org's (ids are per org: two orgs' "s1" are two sessions; session None:
        no session), its last time is the latest ended (else started) time, and its end marks are, per
        trace whose metadata holds one of the top-level keys `marks`, those keys' values — nothing else
        of the metadata is kept, so a tick over thousands of traces with huge metadata holds one row at
        a time (engine/session_end.py decides what ends a session; each scheduler tick)."""
        _check_limit(limit)
        window = (sa.select(traces.c.org_id, traces.c.session_id,
                            sa.func.coalesce(traces.c.ended_at, traces.c.started_at).label("t"), traces.c.metadata)
                  .where(traces.c.seq > after_seq).order_by(traces.c.seq).limit(limit).subquery())
        found: dict[tuple[str | None, str | None], list[dict[str, Any]]] = {}
        with self._read("reading session activity") as conn:
            last = conn.execute(sa.select(window.c.org_id, window.c.session_id, sa.func.max(window.c.t))
                                .group_by(window.c.org_id, window.c.session_id)).all()
            if marks:  # the key as JSON text ("session_end" quoted; LIKE's wildcards escaped): a cheap first cut
                mention = sa.or_(*(window.c.metadata.contains(json.dumps(k), autoescape=True) for k in marks))
                rows = conn.execute(sa.select(window.c.org_id, window.c.session_id, window.c.metadata)
                                    .where(mention).execution_options(yield_per=64))
                for org, session, text in rows:
                    meta = codec.load_json(text)
                    if isinstance(meta, dict) and (mark := {k: meta[k] for k in marks if k in meta}):
                        found.setdefault((org, session), []).append(mark)
        return [(org, session, float(t or 0.0), found.get((org, session), [])) for org, session, t in last]

    # -- items -------------------------------------------------------------------------

    def get_item(self, item_id: str) -> Item:
        with self._read(f"reading item {item_id}") as conn:
            row = conn.execute(sa.select(items).where(items.c.id == item_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"item {item_id} not found: run `crystallise items list` to see item ids")
        return codec.item_from_row(row)

    def query_items(
        self,
        *,
        agent: str | None = None,
        org: str | None = None,
        user: str | None = None,
        levels: Sequence[str] = ("agent", "org", "user"),
        status: Sequence[str] = ("active",),
        kind: str | None = None,
        section: str | None = None,
        text: str | None = None,
        limit: int = 1000,
        as_of: float | None = None,
        key: str | None = None,
    ) -> list[Item]:
        """Items visible to a scope, best lexical match first with `text`, else newest first.

        Scope rules (a privacy boundary, so deliberately strict):

        - level "agent": items with `agent_id == agent`; `agent=None` means every
          agent's agent-level items (agent knowledge is not private);
        - level "org": items with `org_id == org`, only when `org` is given;
        - level "user": items with `user_id == user` *and* the same `org_id` (None
          matches None), only when `user` is given, because user ids need only be
          unique within an org. Nothing ever returns another user's items.

        A `text` with no word characters (only punctuation or emoji) matches nothing.

        Temporal validity (m002, context/temporal.py): an active item is shown only while
        it is valid (`valid_from <= t < valid_to`, a missing bound is open), where t is
        `as_of` or now. With `as_of`, superseded items (retired with `superseded_by` set)
        count as active for the times they were valid, so the query answers "what was
        true at t". `key` keeps only facts about that subject.attribute.
        """
        _check_limit(limit)
        unknown = set(levels) - LEVELS
        if unknown:
            raise ValidationError(f"unknown item level(s) {sorted(unknown)}: use {sorted(LEVELS)}")
        visible = []
        if "agent" in levels:
            visible.append(
                items.c.level == "agent"
                if agent is None
                else sa.and_(items.c.level == "agent", items.c.agent_id == agent)
            )
        if "org" in levels and org is not None:
            visible.append(sa.and_(items.c.level == "org", items.c.org_id == org))
        if "user" in levels and user is not None:
            same_org = items.c.org_id.is_(None) if org is None else items.c.org_id == org
            visible.append(sa.and_(items.c.level == "user", items.c.user_id == user, same_org))
        tokens = query_tokens(text) if text is not None else []
        if not visible or not status or limit == 0 or (text is not None and not tokens):
            return []
        query = sa.select(items).where(sa.or_(*visible), temporal_filter(status, as_of)).limit(limit)
        if key is not None:
            query = query.where(items.c.fact_key == key)
        if kind is not None:
            query = query.where(items.c.kind == kind)
        if section is not None:
            query = query.where(items.c.section == section)
        if text is not None:
            query = ranked(query, self.engine.dialect.name, tokens)
        else:
            query = query.order_by(items.c.updated_at.desc(), items.c.rid.desc())
        with self._read("querying items") as conn:
            return [codec.item_from_row(row) for row in conn.execute(query).mappings()]

    def bump_items(self, item_ids: Iterable[str], *, shown: int = 0, helpful: int = 0, harmful: int = 0) -> None:
        """Add to the credit counters of items, atomically in SQL (missing ids are ignored).

        An id listed n times is bumped n times. `updated_at` is left alone: it
        tracks changes to an item's content, not its statistics.
        """
        amounts = {"shown": shown, "helpful": helpful, "harmful": harmful}
        for counter, amount in amounts.items():
            if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
                raise ValidationError(f"bump_items: {counter} must be a non-negative integer, not {amount!r}")
        if not any(amounts.values()):
            return
        by_multiplicity: dict[int, list[str]] = {}
        for item_id, times in Counter(item_ids).items():
            by_multiplicity.setdefault(times, []).append(item_id)
        if not by_multiplicity:
            return
        with self._write("bumping item counters") as conn:
            for times, ids in by_multiplicity.items():
                values = {name: items.c[name] + amount * times for name, amount in amounts.items() if amount}
                for chunk in _chunks(ids):
                    conn.execute(sa.update(items).where(items.c.id.in_(chunk)).values(values))

    # -- change sets and versions ------------------------------------------------------

    def save_changeset(self, changeset: ChangeSet) -> None:
        """Insert or update a change set; a committed one is frozen (its version is history)."""
        row = codec.changeset_row(self._redacted(changeset), updated_at=now())
        with self._write(f"saving change set {changeset.id}") as conn:
            self._refuse_committed(conn, changeset.id, "it can no longer change")
            conn.execute(self._upsert(changesets, row, "id"))

    def _refuse_committed(self, conn: Connection, changeset_id: str, consequence: str) -> None:
        query = sa.select(changesets.c.status).where(changesets.c.id == changeset_id)
        if conn.execute(query.with_for_update() if self._pg else query).scalar() == "committed":
            number = conn.execute(
                sa.select(sa.func.max(versions.c.number)).where(versions.c.changeset_id == changeset_id)
            ).scalar()
            raise ValidationError(
                f"change set {changeset_id} is already committed as version {number}; {consequence} "
                "(propose a new change set, or undo the version with `crystallise revert N`)"
            )

    def get_changeset(self, changeset_id: str) -> ChangeSet:
        with self._read(f"reading change set {changeset_id}") as conn:
            row = conn.execute(sa.select(changesets).where(changesets.c.id == changeset_id)).mappings().first()
        if row is None:
            raise NotFoundError(
                f"change set {changeset_id} not found: run `crystallise changesets list` to see change sets"
            )
        return codec.changeset_from_row(row)

    def list_changesets(self, *, status: str | None = None, limit: int = 100) -> list[ChangeSet]:
        """Change sets, newest first, optionally only those with `status`."""
        _check_limit(limit)
        query = sa.select(changesets).order_by(changesets.c.created_at.desc(), changesets.c.id.desc()).limit(limit)
        if status is not None:
            query = query.where(changesets.c.status == status)
        with self._read("listing change sets") as conn:
            return [codec.changeset_from_row(row) for row in conn.execute(query).mappings()]

    def apply_item_deltas(self, deltas: Sequence[Delta]) -> None:
        """Apply item deltas in one transaction (all or nothing), recording each in the ledger.

        add inserts `after`; update/merge/supersede/retire overwrite the row with
        `after`, except that the credit counters keep bumps made since the delta's
        `before` was read (see `deltas.keep_live_counters`); `after=None` deletes the row
        (how reverting an add looks). The ledger records the row as it really was
        before and after. A delta on
        a missing item, an add of an existing one, or a malformed `after` raises
        ValidationError and nothing in the batch is applied.
        """
        if self.redactor is not None:
            deltas = [self.redactor.redact_delta(delta) for delta in deltas]
        with self._write("applying item deltas") as conn:
            apply_deltas(conn, deltas, version=None, changeset_id=None)

    def add_version(self, version: Version, changeset: ChangeSet) -> Version:
        """Record `version`, apply the change set's item deltas (ledger included) and mark
        the change set committed, in one transaction.

        `version.number == 0` takes the next free number. Artifact deltas are not
        touched here: they are the artifact store's. Returns the version as stored;
        neither argument is modified.
        """
        if isinstance(version.number, bool) or not isinstance(version.number, int) or version.number < 0:
            raise ValidationError(
                f"version number must be a positive integer, or 0 for the next one: {version.number!r}"
            )
        if version.changeset_id not in ("", changeset.id):
            raise ValidationError(
                f"version.changeset_id {version.changeset_id!r} is not the change set given ({changeset.id!r})"
            )
        changeset = self._redacted(changeset)
        committed = dataclasses.replace(changeset, status="committed")
        changeset_row = codec.changeset_row(committed, updated_at=now())
        item_changes = [delta for delta in changeset.deltas if delta.target == "item"]
        with self._write(f"adding a version for change set {changeset.id}", lock=VERSION_LOCK) as conn:
            self._refuse_committed(conn, changeset.id, "it cannot be applied twice")
            number = version.number
            if number == 0:
                number = (
                    int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(versions.c.number), 0))).scalar_one()) + 1
                )
            elif conn.execute(sa.select(versions.c.number).where(versions.c.number == number)).first() is not None:
                raise ValidationError(f"version {number} already exists; pass number=0 to take the next free number")
            stored = dataclasses.replace(version, number=number, changeset_id=changeset.id)
            conn.execute(sa.insert(versions).values(codec.version_row(stored)))
            apply_deltas(conn, item_changes, version=number, changeset_id=changeset.id)
            conn.execute(self._upsert(changesets, changeset_row, "id"))
        return stored

    @staticmethod
    def _version_not_found(number: int) -> NotFoundError:
        return NotFoundError(f"version {number} not found: run `crystallise log` to see version numbers")

    def get_version(self, number: int) -> Version:
        with self._read(f"reading version {number}") as conn:
            row = conn.execute(sa.select(versions).where(versions.c.number == number)).mappings().first()
        if row is None:
            raise self._version_not_found(number)
        return codec.version_from_row(row)

    def list_versions(self, *, limit: int = 100) -> list[Version]:
        """Newest first."""
        _check_limit(limit)
        query = sa.select(versions).order_by(versions.c.number.desc()).limit(limit)
        with self._read("listing versions") as conn:
            return [codec.version_from_row(row) for row in conn.execute(query).mappings()]

    def mark_reverted(self, number: int, by: int) -> None:
        """Record that version `by` undid version `number`."""
        with self._write(f"marking version {number} reverted") as conn:
            current = conn.execute(sa.select(versions.c.reverted_by).where(versions.c.number == number)).first()
            if current is None:
                raise self._version_not_found(number)
            if current[0] not in (None, by):
                raise ValidationError(f"version {number} was already reverted by version {current[0]}")
            conn.execute(sa.update(versions).where(versions.c.number == number).values(reverted_by=by))

    # -- watermarks --------------------------------------------------------------------

    def get_watermark(self, name: str) -> int:
        """The last position a consumer named `name` processed; 0 if it never ran."""
        with self._read(f"reading watermark {name}") as conn:
            value = conn.execute(sa.select(watermarks.c.value).where(watermarks.c.name == name)).scalar()
        return 0 if value is None else int(value)

    def set_watermark(self, name: str, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValidationError(f"watermark {name!r} must be a non-negative integer, not {value!r}")
        row = codec.checked({"name": name, "value": value, "updated_at": now()}, f"watermark {name!r}")
        with self._write(f"setting watermark {name}") as conn:
            conn.execute(self._upsert(watermarks, row, "name"))

    def item_watermark(self) -> tuple[int, int]:
        """(max ledger seq, max item rid): a cheap token that moves when any item changes by a delta."""
        with self._read("reading the item watermark") as conn:
            return vec.item_watermark(conn)

    def changed_item_ids(self, after_seq: int, after_rid: int) -> list[str]:
        """Ids of items changed by a delta after `after_seq` or inserted after `after_rid`."""
        with self._read("reading the item change feed") as conn:
            return vec.changed_item_ids(conn, after_seq, after_rid)

    def items_by_ids(self, ids: Sequence[str]) -> dict[str, Item]:
        """The items that exist among `ids`, by id, in one snapshot."""
        with self._read("reading items by id") as conn:
            return vec.items_by_ids(conn, ids)

    def scan_items(self, status: Sequence[str] = ("active",)) -> list[Item]:
        """Every item of every scope with one of `status` (for building an index, never for serving)."""
        with self._read("scanning items") as conn:
            return vec.scan_items(conn, status)

    def get_vectors(self, model: str, ids: Sequence[str] | None = None) -> dict[str, tuple[str, Any]]:
        """item id -> (text sha, float32 vector) stored for embedder `model` (all of them with ids=None)."""
        with self._read(f"reading {model} vectors") as conn:
            return vec.get_vectors(conn, model, ids)

    def put_vectors(self, model: str, vectors: Any) -> int:
        """Store {item id: (text sha, vector)} for embedder `model`; returns how many were written."""
        with self._write(f"writing {model} vectors") as conn:
            return vec.put_vectors(conn, model, vectors)

    def put_links(self, links: Iterable[tuple[str, str, float, str]]) -> int:
        """Insert or update directed item links (src, dst, score, reason)."""
        with self._write("writing item links") as conn:
            return vec.put_links(conn, links)

    def get_links(self, ids: Sequence[str]) -> list[tuple[str, str, float]]:
        """Outgoing links (src, dst, score) of the given items."""
        with self._read("reading item links") as conn:
            return vec.get_links(conn, ids)
