"""Ordered schema migrations, applied once each and recorded in `schema_migrations`.

`MIGRATIONS` is a list of `(name, function)`; migration *n* is `MIGRATIONS[n - 1]`.
Rules, as in simonw/llm:

1. A shipped migration is never edited: databases in the field have already run it.
   Each one therefore carries its own frozen DDL instead of using `schema.py`,
   which describes the *current* tables for the query code.
2. New migrations are appended at the end, and must work on SQLite and PostgreSQL.
3. Each migration receives a connection already inside the migration transaction;
   it must not commit. SQLite and PostgreSQL both have transactional DDL, so a
   failed migration leaves the database as it was.

`migrate(engine)` is called by `open_store`. It is a no-op on an up-to-date
database (one read), and safe when several processes open a new database at once:
the whole run holds the SQLite write lock (BEGIN IMMEDIATE) or a PostgreSQL
advisory transaction lock, and re-reads what was applied after taking it.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from crystallise.errors import StoreError
from crystallise.store.engine import is_postgres, write_connection
from crystallise.types import now

__all__ = ["MIGRATIONS", "applied_versions", "migrate"]

Migration = Callable[[Connection], None]

# pg_advisory_xact_lock key for migrations (an arbitrary constant: "crystmig" in ASCII).
MIGRATION_LOCK = 0x637279_73746D69


def _schema_migrations(md: sa.MetaData) -> sa.Table:
    """The bookkeeping table; its shape is frozen forever."""
    return sa.Table(
        "schema_migrations",
        md,
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("applied_at", sa.Double, nullable=False),
    )


def m001_initial(conn: Connection) -> None:
    """Traces, spans, feedback, items (+ lexical search), change sets, versions, item ledger, watermarks."""
    md = sa.MetaData()
    key = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    sa.Table(
        "traces", md,
        sa.Column("seq", key, primary_key=True, autoincrement=True),
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
    )  # fmt: skip
    sa.Table(
        "spans", md,
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
    )  # fmt: skip
    sa.Table(
        "feedback", md,
        sa.Column("rid", key, primary_key=True, autoincrement=True),
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
    )  # fmt: skip
    sa.Table(
        "items", md,
        sa.Column("rid", key, primary_key=True, autoincrement=True),
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
        sa.Index("ix_items_agent", "level", "agent_id", "status"),
        sa.Index("ix_items_org", "level", "org_id", "status"),
        sa.Index("ix_items_user", "level", "user_id", "status"),
        sa.Index("ix_items_updated_at", "updated_at"),
        sqlite_autoincrement=True,
    )  # fmt: skip
    sa.Table(
        "changesets", md,
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
        sa.Index("ix_changesets_status", "status", "created_at"),
        sa.Index("ix_changesets_created_at", "created_at"),
    )  # fmt: skip
    sa.Table(
        "versions", md,
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
    )  # fmt: skip
    sa.Table(
        "item_deltas", md,
        sa.Column("seq", key, primary_key=True, autoincrement=True),
        sa.Column("version", sa.Integer, sa.ForeignKey("versions.number")),
        sa.Column("changeset_id", sa.Text),
        sa.Column("op", sa.Text, nullable=False),
        sa.Column("item_id", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text),
        sa.Column("before_json", sa.Text),
        sa.Column("after_json", sa.Text),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Index("ix_item_deltas_item_id", "item_id", "seq"),
        sa.Index("ix_item_deltas_version", "version"),
        sa.Index("ix_item_deltas_user_id", "user_id"),
        sqlite_autoincrement=True,
    )  # fmt: skip
    sa.Table(
        "watermarks", md,
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )  # fmt: skip
    md.create_all(conn)

    if is_postgres(conn):
        # Generated column + GIN index; the 'english' config stems like SQLite's porter tokenizer.
        conn.exec_driver_sql(
            "ALTER TABLE items ADD COLUMN tsv tsvector "
            "GENERATED ALWAYS AS (to_tsvector('english'::regconfig, \"text\")) STORED"
        )
        conn.exec_driver_sql("CREATE INDEX ix_items_tsv ON items USING GIN (tsv)")
        return
    # SQLite: an external-content FTS5 table over items.text keyed on items.rid, kept in
    # sync by triggers so every write path (ours or a person's sqlite3 shell) updates it.
    # `UPDATE OF "text"` keeps counter bumps from rewriting the index.
    conn.exec_driver_sql(
        "CREATE VIRTUAL TABLE items_fts USING fts5("
        "\"text\", content='items', content_rowid='rid', tokenize='porter unicode61 remove_diacritics 2')"
    )
    conn.exec_driver_sql(
        "CREATE TRIGGER items_fts_insert AFTER INSERT ON items BEGIN "
        'INSERT INTO items_fts(rowid, "text") VALUES (new.rid, new."text"); END'
    )
    conn.exec_driver_sql(
        "CREATE TRIGGER items_fts_delete AFTER DELETE ON items BEGIN "
        'INSERT INTO items_fts(items_fts, rowid, "text") VALUES (\'delete\', old.rid, old."text"); END'
    )
    conn.exec_driver_sql(
        'CREATE TRIGGER items_fts_update AFTER UPDATE OF "text", rid ON items BEGIN '
        'INSERT INTO items_fts(items_fts, rowid, "text") VALUES (\'delete\', old.rid, old."text"); '
        'INSERT INTO items_fts(rowid, "text") VALUES (new.rid, new."text"); END'
    )


def m002_context_core(conn: Connection) -> None:
    """Context layer write path: fact keys on items; who a change set / ledger row belongs to.

    - `items.fact_key`: the subject.attribute a fact is about ("user.city"), so a newer
      contradicting fact can find and supersede the older one (context/temporal.py);
    - `changesets.user_id` / `org_id` / `reverted_by`: user-level change sets live in the
      store's own ledger (never git), so they must be findable per user (deletion, history)
      and revertible without a version;
    - `item_deltas.org_id`: user ids are unique only within an org, so per-user deletion
      needs the org next to the user id.
    Existing rows are back-filled from their JSON (scope, before/after) in Python, which
    works the same on SQLite and PostgreSQL.
    """
    for ddl in (
        "ALTER TABLE items ADD COLUMN fact_key TEXT",
        "ALTER TABLE changesets ADD COLUMN user_id TEXT",
        "ALTER TABLE changesets ADD COLUMN org_id TEXT",
        "ALTER TABLE changesets ADD COLUMN reverted_by TEXT",
        "ALTER TABLE item_deltas ADD COLUMN org_id TEXT",
        "CREATE INDEX ix_items_fact_key ON items (fact_key, level, status)",
        "CREATE INDEX ix_changesets_user_id ON changesets (user_id, org_id)",
        "CREATE INDEX ix_item_deltas_changeset_id ON item_deltas (changeset_id)",
    ):
        conn.exec_driver_sql(ddl)
    md = sa.MetaData()
    cs = sa.Table("changesets", md, sa.Column("id", sa.Text), sa.Column("scope", sa.Text),
                  sa.Column("user_id", sa.Text), sa.Column("org_id", sa.Text))
    for row in conn.execute(sa.select(cs.c.id, cs.c.scope)).all():
        scope = json.loads(row.scope) if row.scope else {}
        if isinstance(scope, dict) and scope.get("user"):
            conn.execute(sa.update(cs).where(cs.c.id == row.id).values(user_id=scope["user"], org_id=scope.get("org")))
    ledger = sa.Table("item_deltas", md, sa.Column("seq", sa.Integer), sa.Column("user_id", sa.Text),
                      sa.Column("org_id", sa.Text), sa.Column("before_json", sa.Text), sa.Column("after_json", sa.Text))
    query = sa.select(ledger.c.seq, ledger.c.before_json, ledger.c.after_json).where(ledger.c.user_id.is_not(None))
    for row in conn.execute(query).all():
        snapshot = json.loads(row.after_json or row.before_json or "{}")
        if isinstance(snapshot, dict) and snapshot.get("org_id"):
            conn.execute(sa.update(ledger).where(ledger.c.seq == row.seq).values(org_id=snapshot["org_id"]))
def m003_retrieval(conn: Connection) -> None:
    """Vectors and links for hybrid retrieval and linked notes (context/index.py, context/notes.py).

    item_vectors: one float32 vector per (item, embedder name), stored as raw little-endian
    bytes (`numpy.tobytes`, never pickle), with the sha256 of the text it embeds so an
    edited item is re-embedded. item_links: directed links between related items, written
    in both directions. Both cascade on item deletion, so deleting a user's items deletes
    their vectors and links too.
    """
    md = sa.MetaData()
    sa.Table("items", md, sa.Column("id", sa.Text, primary_key=True))  # the FK target, already created
    sa.Table(
        "item_vectors", md,
        sa.Column("item_id", sa.Text, sa.ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("model", sa.Text, primary_key=True),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("text_sha", sa.Text, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Index("ix_item_vectors_model", "model"),
    )  # fmt: skip
    sa.Table(
        "item_links", md,
        sa.Column("src_id", sa.Text, sa.ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("dst_id", sa.Text, sa.ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("score", sa.Double, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Index("ix_item_links_dst_id", "dst_id"),
    )  # fmt: skip
    md.tables["item_vectors"].create(conn)
    md.tables["item_links"].create(conn)


def m004_dream(conn: Connection) -> None:
    """Offline dreaming (context/dream.py): usage/credit log, dream-run records, processed traces.

    item_usage: one row per (trace, item shown in it) with the outcome it earned (1 helpful,
    -1 harmful, 0 none) and when the trace ran; credit is bumped only for a newly inserted
    row, so crediting a trace twice (a re-run, a crash, the loop and the dreamer both) counts
    once, and "unused for a window" reads the latest `at`. dream_runs: one row per scope per
    dream run (what it read, counts per delta kind, the change set and version). dream_traces:
    the traces a scope's dream has processed, so a re-run over them (`--since`) proposes nothing.
    Columns are named by the deletion convention (trace_id, item_id, user_id + org_id), so
    deleting a user deletes their rows here too.
    """
    md = sa.MetaData()
    sa.Table(
        "item_usage", md,
        sa.Column("trace_id", sa.Text, primary_key=True),
        sa.Column("item_id", sa.Text, primary_key=True),
        sa.Column("outcome", sa.Integer, nullable=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.Index("ix_item_usage_item_id", "item_id", "at"),
    )  # fmt: skip
    sa.Table(
        "dream_runs", md,
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
    )  # fmt: skip
    sa.Table(
        "dream_traces", md,
        sa.Column("scope_key", sa.Text, primary_key=True),
        sa.Column("trace_id", sa.Text, primary_key=True),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Index("ix_dream_traces_trace_id", "trace_id"),
    )  # fmt: skip
    md.create_all(conn)


# The setting and role of m005 (frozen with it): see `store.engine.org_scope`.
_ORG_SETTING = "crystallise.org"
_ORG_ROLE = "crystallise_org"
_NO_ORG = "coalesce(current_setting('crystallise.org', true), '') = ''"


def m005_org_isolation(conn: Connection) -> None:
    """PostgreSQL: org isolation in the database too (issue 15), so a missed filter cannot leak.

    A request made with an org's key runs its transactions as the role `crystallise_org` with
    `SET LOCAL crystallise.org = '<org>'` (store/engine.py); row-level security on the org-scoped
    tables then shows it only

        traces            its own org's
        spans, feedback   those of a trace it can see
        items             its own org's and the shared ones (no org)

    and refuses writes outside them. Without the setting (the library in-process, learners, the
    admin key) the policies let every row through. FORCE: the table owner is held too. A role
    that may not create roles gets no database-side isolation (a NOTICE says so); the code's
    filters still hold. SQLite has no row-level security: nothing to do.
    """
    if not is_postgres(conn):
        return
    # '%%' below: the driver reads a lone % as a placeholder even without parameters
    conn.exec_driver_sql(f"""
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{_ORG_ROLE}') THEN
    BEGIN
      CREATE ROLE {_ORG_ROLE} NOLOGIN;
    EXCEPTION
      WHEN duplicate_object OR unique_violation THEN NULL;
      WHEN insufficient_privilege THEN
        RAISE NOTICE 'crystallise: cannot create role {_ORG_ROLE} (needs CREATEROLE): org isolation by row-level '
                     'security is off; create the role and grant it to %%, then re-run migration 5', current_user;
    END;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{_ORG_ROLE}') THEN
    BEGIN
      EXECUTE format('GRANT {_ORG_ROLE} TO %%I', current_user);
    EXCEPTION WHEN OTHERS THEN NULL;  -- already a member, or a superuser (may SET ROLE anyway)
    END;
    EXECUTE format('GRANT USAGE ON SCHEMA %%I TO {_ORG_ROLE}', current_schema());
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %%I TO {_ORG_ROLE}',
                   current_schema());
    EXECUTE format('GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA %%I TO {_ORG_ROLE}', current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %%I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES '
                   'TO {_ORG_ROLE}', current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %%I GRANT USAGE, SELECT, UPDATE ON SEQUENCES '
                   'TO {_ORG_ROLE}', current_schema());
  END IF;
END $$""")
    own = f"org_id = current_setting('{_ORG_SETTING}', true)"
    policies = {
        "traces": f"{_NO_ORG} OR {own}",
        "spans": f"{_NO_ORG} OR EXISTS (SELECT 1 FROM traces t WHERE t.id = spans.trace_id)",
        "feedback": f"{_NO_ORG} OR EXISTS (SELECT 1 FROM traces t WHERE t.id = feedback.trace_id)",
        "items": f"{_NO_ORG} OR org_id IS NULL OR {own}",
    }
    for table, rule in policies.items():
        conn.exec_driver_sql(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        conn.exec_driver_sql(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        conn.exec_driver_sql(f"CREATE POLICY crystallise_org_isolation ON {table} USING ({rule}) WITH CHECK ({rule})")


def m006_jobs(conn: Connection) -> None:
    """Jobs (issue 16, engine/jobs.py): one row per learning run -- kind, scope, JSON params, status
    (queued | running | succeeded | failed | cancelled), progress and message, log lines (JSON list),
    attempts, worker, result (JSON) or error, the actor who asked, a cancel request, timestamps.

    PostgreSQL: row-level security as m005 gives traces, so an org key's request sees and changes
    only its own org's jobs (`org_id`), whatever filter the code forgot.
    """
    md = sa.MetaData()
    sa.Table(
        "jobs", md,
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
    )  # fmt: skip
    md.create_all(conn)
    if not is_postgres(conn):
        return
    conn.exec_driver_sql(f"""
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{_ORG_ROLE}') THEN
    GRANT SELECT, INSERT, UPDATE, DELETE ON jobs TO {_ORG_ROLE};
  END IF;
END $$""")
    rule = f"{_NO_ORG} OR org_id = current_setting('{_ORG_SETTING}', true)"
    conn.exec_driver_sql("ALTER TABLE jobs ENABLE ROW LEVEL SECURITY")
    conn.exec_driver_sql("ALTER TABLE jobs FORCE ROW LEVEL SECURITY")
    conn.exec_driver_sql(f"CREATE POLICY crystallise_org_isolation ON jobs USING ({rule}) WITH CHECK ({rule})")


def m007_org_isolation_learned(conn: Connection) -> None:
    """PostgreSQL: row-level security for what learning wrote too, not only what agents recorded.

    Migration 5 covered traces, spans, feedback and items. This one covers, under the same
    per-transaction setting (a request with an org's key):

        changesets, item_deltas, dream_runs    its own org's and the shared ones (no org)
        versions                               those whose change set it can see
        dream_traces, item_usage               those of a trace it can see
        item_vectors, item_links               those of an item it can see

    Every change set now records its org (`changesets.org_id` held it for user-level ones only):
    the rows already stored get it from their scope, ledger rows from their item snapshot. On
    both stores (the backfill is plain SQL); the policies on PostgreSQL only. The committer
    (engine/committer.py) writes outside any org scope, as before: it allocates version numbers
    and checks staleness over every row; its tenancy decisions are the access module's.
    """
    md = sa.MetaData()
    cs = sa.Table("changesets", md, sa.Column("id", sa.Text), sa.Column("scope", sa.Text),
                  sa.Column("org_id", sa.Text))
    for row in conn.execute(sa.select(cs.c.id, cs.c.scope).where(cs.c.org_id.is_(None))).all():
        scope = json.loads(row.scope) if row.scope else {}
        if isinstance(scope, dict) and isinstance(scope.get("org"), str):
            conn.execute(sa.update(cs).where(cs.c.id == row.id).values(org_id=scope["org"]))
    ledger = sa.Table("item_deltas", md, sa.Column("seq", sa.Integer), sa.Column("org_id", sa.Text),
                      sa.Column("before_json", sa.Text), sa.Column("after_json", sa.Text))
    query = sa.select(ledger.c.seq, ledger.c.before_json, ledger.c.after_json).where(ledger.c.org_id.is_(None))
    for row in conn.execute(query).all():
        snapshot = json.loads(row.after_json or row.before_json or "{}")
        if isinstance(snapshot, dict) and isinstance(snapshot.get("org_id"), str):
            conn.execute(sa.update(ledger).where(ledger.c.seq == row.seq).values(org_id=snapshot["org_id"]))
    if not is_postgres(conn):
        return
    own = f"{_NO_ORG} OR org_id IS NULL OR org_id = current_setting('{_ORG_SETTING}', true)"
    policies = {
        "changesets": own,
        "item_deltas": own,
        "dream_runs": own,
        "versions": f"{_NO_ORG} OR EXISTS (SELECT 1 FROM changesets c WHERE c.id = versions.changeset_id)",
        "dream_traces": f"{_NO_ORG} OR EXISTS (SELECT 1 FROM traces t WHERE t.id = dream_traces.trace_id)",
        "item_usage": f"{_NO_ORG} OR EXISTS (SELECT 1 FROM traces t WHERE t.id = item_usage.trace_id)",
        "item_vectors": f"{_NO_ORG} OR EXISTS (SELECT 1 FROM items i WHERE i.id = item_vectors.item_id)",
        "item_links": f"{_NO_ORG} OR EXISTS (SELECT 1 FROM items i WHERE i.id = item_links.src_id)",
    }
    for table, rule in policies.items():
        conn.exec_driver_sql(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        conn.exec_driver_sql(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        conn.exec_driver_sql(f"CREATE POLICY crystallise_org_isolation ON {table} USING ({rule}) WITH CHECK ({rule})")

# Append only. Never edit, reorder or remove a shipped entry.
MIGRATIONS: list[tuple[str, Migration]] = [
    ("initial", m001_initial),
    ("context_core", m002_context_core),
    ("retrieval", m003_retrieval),
    ("dream", m004_dream),
    ("org_isolation", m005_org_isolation),
    ("jobs", m006_jobs),
    ("org_isolation_learned", m007_org_isolation_learned),
]


def applied_versions(conn: Connection) -> set[int]:
    """Versions recorded in `schema_migrations` (empty for a new database)."""
    if not sa.inspect(conn).has_table("schema_migrations"):
        return set()
    table = _schema_migrations(sa.MetaData())
    return {row[0] for row in conn.execute(sa.select(table.c.version))}


def migrate(engine: Engine, migrations: list[tuple[str, Migration]] | None = None) -> list[int]:
    """Apply every migration not yet recorded, in order, in one locked transaction.

    Returns the versions applied by this call ([] when the database was up to date).
    `migrations` defaults to `MIGRATIONS`; tests pass a longer list to exercise upgrades.
    """
    steps = MIGRATIONS if migrations is None else migrations
    wanted = set(range(1, len(steps) + 1))
    with engine.connect() as conn:
        done = applied_versions(conn)
        conn.rollback()
    _check_not_newer(done, len(steps))
    if wanted <= done:
        return []

    applied: list[int] = []
    with write_connection(engine) as conn:
        if is_postgres(conn):
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        table = _schema_migrations(sa.MetaData())
        table.create(conn, checkfirst=True)
        # Re-read under the lock: another process may have migrated while we waited.
        done = {row[0] for row in conn.execute(sa.select(table.c.version))}
        _check_not_newer(done, len(steps))
        for version, (name, step) in enumerate(steps, start=1):
            if version in done:
                continue
            step(conn)
            conn.execute(sa.insert(table).values(version=version, name=name, applied_at=now()))
            applied.append(version)
    return applied


def _check_not_newer(done: set[int], known: int) -> None:
    newest = max(done, default=0)
    if newest > known:
        raise StoreError(
            f"the store's schema is at migration {newest} but this crystallise knows only {known}: "
            "upgrade crystallise (pip install -U crystallise) before opening this store"
        )
