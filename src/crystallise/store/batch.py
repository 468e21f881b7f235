"""Batched trace ingest: `write_traces`, one transaction for many traces, each all or nothing
(the group commit's write, store/group.py; the SDK's background writer's too).

On PostgreSQL the batch goes in one psycopg pipeline over a connection of its own (outside an org
scope) — the fixed cost of a batch through SQLAlchemy was most of a trace's ingest cost at a few
traces a commit (docs/benchmarks.md, "The ingest path, second pass"); on SQLite, three SQLAlchemy
statements. Mixed into `SqlStore` (store/sql.py), whose `_write`, `write_trace`, `redactor`,
`engine`, `url` and `_exported` it uses.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import Engine

from crystallise.errors import AlreadyRecorded, CrystalliseError, StoreError, ValidationError
from crystallise.store import codec
from crystallise.store.engine import current_org_scope, mask_url
from crystallise.store.schema import spans, traces
from crystallise.store.schema import feedback as feedback_table
from crystallise.store.sql_context import TRACE_LOCK, _chunks
from crystallise.types import Trace, now

__all__ = ["TraceBatchMixin"]


class TraceBatchMixin:
    """`write_traces` for `SqlStore` (module docstring)."""

    _batch_conn: Any  # PostgreSQL: the connection trace batches go over outside an org scope
    _batch_lock: threading.Lock

    def _init_batches(self) -> None:
        self._batch_conn = None
        self._batch_lock = threading.Lock()

    def _close_batches(self) -> None:
        with self._batch_lock:
            if self._batch_conn is not None:
                self._batch_conn.close()
                self._batch_conn = None

    def write_traces(self, batch: Sequence[Trace]) -> list[Trace | CrystalliseError]:
        """Record many traces in one transaction — one commit, so one fsync — each all or nothing.

        Returns, in order, each trace as stored (`seq` set) or the error that trace alone caused
        (an id recorded before or twice in the batch, a value a database cannot store); the rest
        are written regardless. Should a span or feedback id collide with another trace's (rare:
        ids are random), the batch falls back to one `write_trace` per trace. A store failure
        raises StoreError for the whole batch, and then nothing of it was written.
        """
        results: list[Trace | CrystalliseError | None] = [None] * len(batch)
        prepared: list[tuple[int, Trace, dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]] = []
        ids: set[str] = set()
        for i, trace in enumerate(batch):
            try:
                if self.redactor is not None:  # PII never reaches the database (context/pii.py)
                    trace = self.redactor.redact_trace(trace)
                if trace.id in ids:
                    raise AlreadyRecorded(f"trace {trace.id} was already recorded; traces are immutable")
                row, span_rows = codec.trace_row(trace, recorded_at=now()), codec.span_rows(trace)
                fb_rows = [codec.feedback_row(fb, trace.id) for fb in trace.feedback]
                for kind, rows in (("span", span_rows), ("feedback", fb_rows)):
                    repeated = [k for k, n in Counter(r["id"] for r in rows).items() if n > 1]
                    if repeated:
                        raise ValidationError(f"trace {trace.id!r} has two {kind} records with id {repeated[0]!r}")
            except CrystalliseError as error:
                results[i] = error
                continue
            ids.add(trace.id)
            prepared.append((i, trace, row, span_rows, fb_rows))
        try:
            if not prepared:
                raise _BatchConflict()  # nothing valid to write: the fallback below is a no-op
            if self._pg:
                seqs = self._insert_batch_pg(prepared)
                for i, trace, *_ in prepared:
                    results[i] = _with(trace, seq=seqs[trace.id],
                                       spans=[_with(s, trace_id=trace.id) for s in trace.spans],
                                       feedback=[_with(fb, trace_id=trace.id) for fb in trace.feedback])
                    self._exported(results[i])  # type: ignore[arg-type]
                return [r if r is not None else ValidationError("not written") for r in results]
            with self._write(f"recording {len(prepared)} traces", lock=TRACE_LOCK) as conn:
                known: set[str] = set()
                for chunk in _chunks([p[1].id for p in prepared]):
                    known |= set(conn.execute(sa.select(traces.c.id).where(traces.c.id.in_(chunk))).scalars())
                todo = [p for p in prepared if p[1].id not in known]
                for i, trace, *_ in prepared:
                    if trace.id in known:
                        results[i] = AlreadyRecorded(f"trace {trace.id} was already recorded; traces are immutable")
                try:  # three statements for the whole batch, whatever its size (executemany + RETURNING)
                    seqs: dict[str, int] = {}
                    if todo and self._pg:
                        # Not INSERT ... RETURNING: SQLAlchemy renders it as one multi-row VALUES statement
                        # whose text is too long for psycopg's query cache, and re-parsing it cost ~0.4 ms of
                        # CPU per trace. A plain executemany is one prepared statement in psycopg's pipeline;
                        # the seqs are read back under the same lock, in the same transaction.
                        conn.execute(sa.insert(traces), [p[2] for p in todo])
                        chosen = sa.select(traces.c.id, traces.c.seq).where(traces.c.id.in_([p[1].id for p in todo]))
                        seqs = {r.id: int(r.seq) for r in conn.execute(chosen)}
                    elif todo:
                        insert = sa.insert(traces).returning(traces.c.id, traces.c.seq, sort_by_parameter_order=True)
                        seqs = {r.id: int(r.seq) for r in conn.execute(insert, [p[2] for p in todo])}
                    for table, rows in ((spans, [r for p in todo for r in p[3]]),
                                        (feedback_table, [r for p in todo for r in p[4]])):
                        if rows:
                            conn.execute(sa.insert(table), rows)
                    for i, trace, *_ in todo:
                        results[i] = _with(  # not dataclasses.replace: 5x the CPU, per span, on the ingest path
                            trace, seq=seqs[trace.id],
                            spans=[_with(s, trace_id=trace.id) for s in trace.spans],
                            feedback=[_with(fb, trace_id=trace.id) for fb in trace.feedback])
                except exc.IntegrityError:
                    raise _BatchConflict() from None
            for i, *_ in todo:  # committed: on to the exporter
                self._exported(results[i])  # type: ignore[arg-type]
        except _BatchConflict:
            for i, trace, *_ in prepared:
                try:
                    results[i] = self.write_trace(trace)
                except CrystalliseError as error:
                    results[i] = error
        return [r if r is not None else ValidationError("not written") for r in results]

    def _insert_batch_pg(self, prepared: list[tuple[int, Trace, dict[str, Any], list[dict[str, Any]],
                                                    list[dict[str, Any]]]]) -> dict[str, int]:
        """PostgreSQL: the batch's rows in one pipeline — BEGIN, the lock, three executemany, the seqs
        back, COMMIT — so one round trip and no SQLAlchemy statement machinery per batch. That fixed
        cost (~1.4 ms of CPU through SQLAlchemy, the pool's checkout and ping) was most of a trace's
        ingest cost at a few traces a batch (docs/benchmarks.md). Outside any org scope (the API's
        group commit) the batch goes over a connection of its own, kept open between batches;
        inside one it goes over a pooled connection whose transaction runs as that org (row-level
        security, store/engine.py). Any error the server answers while the connection lives (an id
        recorded before, a value the database refuses for whatever reason) raises `_BatchConflict`:
        nothing of the batch is kept and `write_traces` answers trace by trace. A lost connection (a
        server restart) is a StoreError for the batch; the next batch connects again."""
        try:
            import psycopg  # the `postgres` extra: present whenever this store is on PostgreSQL
        except ImportError as e:  # pragma: no cover - make_engine needed it already
            raise ImportError("PostgreSQL needs the postgres extra: pip install 'crystallise[postgres]'") from e

        rows = [(traces.name, [p[2] for p in prepared]), (spans.name, [r for p in prepared for r in p[3]]),
                (feedback_table.name, [r for p in prepared for r in p[4]])]
        ids = [p[1].id for p in prepared]

        def insert(conn: Any) -> dict[str, int]:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (TRACE_LOCK,))
                for table, values in rows:
                    if values:  # the codec's rows all have one key set: its columns, in its order
                        names = tuple(values[0])
                        cur.executemany(_insert_sql(table, names), [[r[c] for c in names] for r in values])
                cur.execute("SELECT id, seq FROM traces WHERE id = ANY(%s)", (ids,))
                return {str(i): int(q) for i, q in cur.fetchall()}

        doing = f"recording {len(prepared)} traces"
        conn: Any = None
        try:
            if current_org_scope() is not None:
                with self._write(doing) as pooled:
                    conn = pooled.connection.driver_connection
                    with conn.pipeline():
                        return insert(conn)
            with self._batch_lock:
                conn = self._batch_conn
                if conn is None or conn.closed or conn.broken:
                    conn = None
                    conn = self._batch_conn = psycopg.connect(_conninfo(self.engine), connect_timeout=10)
                with conn.pipeline(), conn.transaction():
                    return insert(conn)
        except psycopg.Error as error:
            if conn is not None and not conn.closed and not conn.broken:
                # The server answered and the connection lives: the batch, not the store, failed (an id
                # recorded before, a NUL, an index row over PostgreSQL's 2704 bytes, a value out of range).
                # Trace by trace, each gets its own error and the others are written: one org's hostile
                # trace never fails another org's traces that happened to share its commit.
                raise _BatchConflict() from None
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise StoreError(f"the store at {mask_url(self.url)} failed {doing}: {detail}") from error


def _conninfo(engine: Engine) -> str:
    """A libpq URI for the engine's database (SQLAlchemy's `postgresql+psycopg://` names the driver)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


@functools.lru_cache(maxsize=16)
def _insert_sql(table: str, names: tuple[str, ...]) -> str:
    """The INSERT for `names` (column names from schema.py via the codec, never from a client)."""
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})"


class _BatchConflict(Exception):
    """A child id of one trace in a batch collided: the batch is retried trace by trace."""


def _with(record: Any, **changes: Any) -> Any:
    """A shallow copy of a record (a plain dataclass, already validated) with `changes` set."""
    copy = object.__new__(type(record))
    copy.__dict__.update(record.__dict__)
    copy.__dict__.update(changes)
    return copy
