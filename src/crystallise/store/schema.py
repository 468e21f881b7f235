"""The store's tables as they are *now* (after every migration), for the query code.

The migrations in `migrations.py` create and alter the real tables; they carry their
own frozen copies of the DDL, because a shipped migration must never change when
this file does. `tests/test_store.py` reflects a migrated database and checks it
agrees with these definitions, so the two cannot drift apart silently.

Conventions, identical on SQLite and PostgreSQL:

- timestamps are float seconds since the epoch (`Double`), as `crystallise.types.now()` makes them;
- JSON payloads (trace input/output, metadata, item provenance, deltas ...) are
  `Text` holding `json.dumps` output, so they round-trip exactly (key order, big
  ints, NUL characters) and never depend on a JSON column type;
- `traces.seq` is the monotonically increasing integer learners keep a watermark on;
- tables whose ids are strings also get an integer `rid` where an order or an
  integer key is needed (FTS5 external content keys on it, feedback is ordered by it).

Lexical search is not described here: SQLite keeps an FTS5 table `items_fts`
(external content on `items.rid`), PostgreSQL a generated `items.tsv` tsvector column
with a GIN index; `search.py` queries both.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "changesets",
    "dream_runs",
    "dream_traces",
    "feedback",
    "item_deltas",
    "item_links",
    "item_usage",
    "item_vectors",
    "items",
    "jobs",
    "metadata",
    "schema_migrations",
    "spans",
    "traces",
    "versions",
    "watermarks",
]

metadata = sa.MetaData()

# A 64-bit autoincrementing key: BIGSERIAL on PostgreSQL, INTEGER PRIMARY KEY AUTOINCREMENT
# on SQLite (AUTOINCREMENT so a deleted top value is never handed out again).
BigKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("applied_at", sa.Double, nullable=False),
)

traces = sa.Table(
    "traces",
    metadata,
    sa.Column("seq", BigKey, primary_key=True, autoincrement=True),
    sa.Column("id", sa.Text, nullable=False, unique=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("agent_id", sa.Text, nullable=False),
    sa.Column("org_id", sa.Text),
    sa.Column("user_id", sa.Text),
    sa.Column("session_id", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("input", sa.Text),
    sa.Column("output", sa.Text),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("ended_at", sa.Double),
    sa.Column("metadata", sa.Text),
    sa.Column("recorded_at", sa.Double, nullable=False),
    sa.Index("ix_traces_agent_seq", "agent_id", "seq"),
    sa.Index("ix_traces_org_id", "org_id"),
    sa.Index("ix_traces_user_id", "user_id"),
    sa.Index("ix_traces_session_id", "session_id"),
    sa.Index("ix_traces_name", "name"),
    sa.Index("ix_traces_status", "status"),
    sqlite_autoincrement=True,
)

spans = sa.Table(
    "spans",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("trace_id", sa.Text, sa.ForeignKey("traces.id", ondelete="CASCADE"), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("parent_id", sa.Text),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("input", sa.Text),
    sa.Column("output", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("ended_at", sa.Double),
    sa.Column("attributes", sa.Text),
    sa.Index("ix_spans_trace_id", "trace_id", "position"),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("rid", BigKey, primary_key=True, autoincrement=True),
    sa.Column("id", sa.Text, nullable=False, unique=True),
    sa.Column("trace_id", sa.Text, sa.ForeignKey("traces.id", ondelete="CASCADE"), nullable=False),
    sa.Column("score", sa.Double),
    sa.Column("label", sa.Text),
    sa.Column("correction", sa.Text),
    sa.Column("comment", sa.Text),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Index("ix_feedback_trace_id", "trace_id", "rid"),
    sqlite_autoincrement=True,
)

items = sa.Table(
    "items",
    metadata,
    sa.Column("rid", BigKey, primary_key=True, autoincrement=True),
    sa.Column("id", sa.Text, nullable=False, unique=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("level", sa.Text, nullable=False),
    sa.Column("agent_id", sa.Text, nullable=False),
    sa.Column("org_id", sa.Text),
    sa.Column("user_id", sa.Text),
    sa.Column("section", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("trust", sa.Double, nullable=False),
    sa.Column("shown", sa.BigInteger, nullable=False),
    sa.Column("helpful", sa.BigInteger, nullable=False),
    sa.Column("harmful", sa.BigInteger, nullable=False),
    sa.Column("valid_from", sa.Double),
    sa.Column("valid_to", sa.Double),
    sa.Column("superseded_by", sa.Text),
    sa.Column("provenance", sa.Text),
    sa.Column("meta", sa.Text),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("fact_key", sa.Text),  # m002: Item.key, the subject.attribute a fact is about
    sa.Index("ix_items_agent", "level", "agent_id", "status"),
    sa.Index("ix_items_org", "level", "org_id", "status"),
    sa.Index("ix_items_user", "level", "user_id", "status"),
    sa.Index("ix_items_updated_at", "updated_at"),
    sa.Index("ix_items_fact_key", "fact_key", "level", "status"),
    sqlite_autoincrement=True,
)

changesets = sa.Table(
    "changesets",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("learner", sa.Text, nullable=False),
    sa.Column("layer", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("scope", sa.Text),
    sa.Column("provenance", sa.Text),
    sa.Column("evidence", sa.Text),
    sa.Column("verdict", sa.Text),
    sa.Column("deltas", sa.Text),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    # m002: user-level change sets are the store's own ledger (never git): whose, and undone by which
    sa.Column("user_id", sa.Text),
    sa.Column("org_id", sa.Text),
    sa.Column("reverted_by", sa.Text),
    sa.Index("ix_changesets_status", "status", "created_at"),
    sa.Index("ix_changesets_created_at", "created_at"),
    sa.Index("ix_changesets_user_id", "user_id", "org_id"),
)

versions = sa.Table(
    "versions",
    metadata,
    sa.Column("number", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("changeset_id", sa.Text, nullable=False),
    sa.Column("git_commit", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("provenance", sa.Text),
    sa.Column("verdict", sa.Text),
    sa.Column("reverts", sa.Integer),
    sa.Column("reverted_by", sa.Integer),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Index("ix_versions_changeset_id", "changeset_id"),
)

# The item ledger: one row per applied item delta, in the order applied (`seq`).
# `version` is NULL for deltas applied outside a version (`apply_item_deltas` called
# directly). `user_id` is copied out of before/after so a user's history can be found
# and deleted (user-level data must be deletable, DESIGN.md §4).
item_deltas = sa.Table(
    "item_deltas",
    metadata,
    sa.Column("seq", BigKey, primary_key=True, autoincrement=True),
    sa.Column("version", sa.Integer, sa.ForeignKey("versions.number")),
    sa.Column("changeset_id", sa.Text),
    sa.Column("op", sa.Text, nullable=False),
    sa.Column("item_id", sa.Text, nullable=False),
    sa.Column("user_id", sa.Text),
    sa.Column("before_json", sa.Text),
    sa.Column("after_json", sa.Text),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("org_id", sa.Text),  # m002: user ids are unique within an org only
    sa.Index("ix_item_deltas_item_id", "item_id", "seq"),
    sa.Index("ix_item_deltas_version", "version"),
    sa.Index("ix_item_deltas_user_id", "user_id"),
    sa.Index("ix_item_deltas_changeset_id", "changeset_id"),
    sqlite_autoincrement=True,
)

watermarks = sa.Table(
    "watermarks",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

# Retrieval (migration "retrieval"): one vector per (item, embedder), raw float32 bytes, and
# the text hash it was computed from; directed links between related items (both directions
# are written). Both cascade when the item is deleted (a user's deletion leaves no vectors).
item_vectors = sa.Table(
    "item_vectors",
    metadata,
    sa.Column("item_id", sa.Text, sa.ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("model", sa.Text, primary_key=True),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("text_sha", sa.Text, nullable=False),
    sa.Column("vector", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Index("ix_item_vectors_model", "model"),
)

item_links = sa.Table(
    "item_links",
    metadata,
    sa.Column("src_id", sa.Text, sa.ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("dst_id", sa.Text, sa.ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("score", sa.Double, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Index("ix_item_links_dst_id", "dst_id"),
)

# Dreaming (migration "dream", context/dream.py): the usage/credit log — one row per (trace, item
# shown in it), credit bumped only when the row is new, so crediting is idempotent — the dream-run
# records, and the traces each scope's dream has processed.
item_usage = sa.Table(
    "item_usage",
    metadata,
    sa.Column("trace_id", sa.Text, primary_key=True),
    sa.Column("item_id", sa.Text, primary_key=True),
    sa.Column("outcome", sa.Integer, nullable=False),
    sa.Column("at", sa.Double, nullable=False),
    sa.Index("ix_item_usage_item_id", "item_id", "at"),
)

dream_runs = sa.Table(
    "dream_runs",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("batch_id", sa.Text, nullable=False),
    sa.Column("scope_key", sa.Text, nullable=False),
    sa.Column("level", sa.Text, nullable=False),
    sa.Column("agent_id", sa.Text, nullable=False),
    sa.Column("org_id", sa.Text),
    sa.Column("user_id", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("since_seq", sa.BigInteger, nullable=False),
    sa.Column("until_seq", sa.BigInteger, nullable=False),
    sa.Column("changeset_id", sa.Text),
    sa.Column("version", sa.Integer),
    sa.Column("report", sa.Text),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("finished_at", sa.Double),
    sa.Index("ix_dream_runs_scope_key", "scope_key", "started_at"),
    sa.Index("ix_dream_runs_started_at", "started_at"),
)

dream_traces = sa.Table(
    "dream_traces",
    metadata,
    sa.Column("scope_key", sa.Text, primary_key=True),
    sa.Column("trace_id", sa.Text, primary_key=True),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Index("ix_dream_traces_trace_id", "trace_id"),
)

# Jobs (migration "jobs", engine/jobs.py): every learning run is a job record -- its kind, scope,
# parameters, status, progress, log lines, attempts, the worker running it and its result.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("scope_key", sa.Text, nullable=False),
    sa.Column("agent_id", sa.Text, nullable=False),
    sa.Column("org_id", sa.Text),
    sa.Column("user_id", sa.Text),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("progress", sa.Double, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("log", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("worker", sa.Text),
    sa.Column("result", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("cancel_requested", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("started_at", sa.Double),
    sa.Column("finished_at", sa.Double),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Index("ix_jobs_status_created_at", "status", "created_at"),
    sa.Index("ix_jobs_scope_key_status", "scope_key", "status"),
    sa.Index("ix_jobs_org_id_created_at", "org_id", "created_at"),
)
