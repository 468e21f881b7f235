"""The store protocol: traces, spans, feedback, items, change sets, versions, watermarks.

One protocol, two implementations of the same schema (SQLite for the embedded
default, PostgreSQL for deployments). Every write method returns only after the
write is durable (committed); that is what "acknowledged" means.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from crystallise.errors import CrystalliseError
from crystallise.types import ChangeSet, Delta, Feedback, Item, Trace, Version


class Redactor(Protocol):
    """What the store calls to remove PII before anything is written (context/pii.py implements it).

    Each method returns a redacted copy and leaves its argument alone.
    """

    def redact_text(self, text: str) -> str: ...

    def redact_trace(self, trace: Trace) -> Trace: ...

    def redact_feedback(self, feedback: Feedback) -> Feedback: ...

    def redact_delta(self, delta: Delta) -> Delta: ...


@runtime_checkable
class Store(Protocol):
    url: str

    # -- traces ------------------------------------------------------------------------
    def write_trace(self, trace: Trace) -> Trace:
        """Insert a finished trace with its spans and feedback; returns it with `seq` set.
        Writing the same trace id twice is an error (traces are immutable)."""
        ...

    def add_feedback(self, feedback: Feedback) -> None:
        """Attach feedback to an acknowledged trace (NotFoundError if the trace is unknown)."""
        ...

    def get_trace(self, trace_id: str) -> Trace:
        """The trace with its spans and feedback (NotFoundError if unknown)."""
        ...

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
        """Traces in `seq` order, oldest first, starting after `after_seq`."""
        ...

    def count_traces(self, *, agent: str | None = None, org: str | None = None, user: str | None = None,
                     name: str | None = None, after_seq: int = 0, limit: int | None = None) -> int:
        """How many traces match (as `list_traces` filters them), counting at most `limit`."""
        ...

    def sessions_after(self, *, after_seq: int, limit: int, marks: Sequence[str] = ()
                       ) -> list[tuple[str | None, str | None, float, list[dict[str, Any]]]]:
        """Per (org, session) among the `limit` traces after `after_seq` (session None: traces with no
        session): its last time (ended, else started) and, per trace whose metadata has one of the
        top-level keys `marks`, those keys' values (the caller decides what ends a session). No trace
        is decoded whole, no metadata kept beyond those keys."""
        ...

    # -- items -------------------------------------------------------------------------
    def get_item(self, item_id: str) -> Item: ...

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
        """Items visible to a scope: agent-level items of `agent`, org-level of `org`,
        user-level of `user` only. With `text`, rank by lexical match (FTS5 / tsvector).
        Active items only while valid at `as_of` (default now); with `as_of`, superseded
        items count for the times they were valid. `key`: facts about that subject.attribute."""
        ...

    def bump_items(self, item_ids: Iterable[str], *, shown: int = 0, helpful: int = 0, harmful: int = 0) -> None:
        """Add to the credit counters of items (missing ids are ignored)."""
        ...

    # -- change sets and versions -----------------------------------------------------
    def save_changeset(self, changeset: ChangeSet) -> None:
        """Insert or update a change set (proposed, rejected, ... kept as evidence)."""
        ...

    def get_changeset(self, changeset_id: str) -> ChangeSet: ...

    def list_changesets(self, *, status: str | None = None, limit: int = 100) -> list[ChangeSet]: ...

    def apply_item_deltas(self, deltas: Sequence[Delta]) -> None:
        """Apply item deltas in one transaction (all or nothing).
        add: insert `after`; update/merge/supersede/retire: overwrite with `after`."""
        ...

    def add_version(self, version: Version, changeset: ChangeSet) -> Version:
        """Record a version and mark its change set committed, atomically, together with
        the change set's item deltas (so store and ledger never disagree)."""
        ...

    def get_version(self, number: int) -> Version: ...

    def list_versions(self, *, limit: int = 100) -> list[Version]:
        """Newest first."""
        ...

    def mark_reverted(self, number: int, by: int) -> None: ...

    # -- watermarks --------------------------------------------------------------------
    def get_watermark(self, name: str) -> int: ...

    def set_watermark(self, name: str, value: int) -> None: ...

    def close(self) -> None: ...

    # -- retrieval: vectors, links, the item change feed (context/index.py) -------------------
    def item_watermark(self) -> tuple[int, int]:
        """(max ledger seq, max item rid): moves whenever an item changes by a delta."""
        ...

    def changed_item_ids(self, after_seq: int, after_rid: int) -> list[str]: ...

    def items_by_ids(self, ids: Sequence[str]) -> dict[str, Item]: ...

    def scan_items(self, status: Sequence[str] = ("active",)) -> list[Item]: ...

    def get_vectors(self, model: str, ids: Sequence[str] | None = None) -> dict[str, tuple[str, Any]]: ...

    def put_vectors(self, model: str, vectors: Any) -> int: ...

    def put_links(self, links: Iterable[tuple[str, str, float, str]]) -> int: ...

    def get_links(self, ids: Sequence[str]) -> list[tuple[str, str, float]]: ...

    # -- context layer: user ledger, deletion, usage log, dream runs (store/sql_context.py) --------
    def changeset_reverted_by(self, changeset_id: str) -> str | None:
        """The id of the change set that undid a user-level change set, if one did."""
        ...

    def commit_user_changeset(self, changeset: ChangeSet) -> ChangeSet:
        """Apply a user-level change set in the store's own ledger (no version, never git), atomically.

        Every delta must be about items of `changeset.scope.user` (in `scope.org`); the change set
        is stored as committed with its owner, and each delta writes a ledger row carrying the
        change set id. Undo with `crystallise items revert CHANGESET_ID` (`Committer.revert_user`)."""
        ...

    def delete_user_data(self, user: str, *, org: str | None = None,
                         purge_items: Sequence[str] = (), strings: Sequence[str] = (),
                         derived_changesets: Sequence[str] = ()) -> dict[str, int]:
        """Hard-delete a user's traces, spans, feedback, items, ledger rows and change sets, plus
        `purge_items`, in one transaction; returns the number of rows deleted per table. `strings`
        (the user's inputs and answers) are scrubbed from every change set's deltas, evidence and
        summary that still quotes them, and the program files written by `derived_changesets` (learned
        from the user's runs) leave those change sets' deltas (issue 15).

        Deleted text must not survive on disk either: SQLite runs the delete with
        `secure_delete` (freed pages are zeroed), merges the FTS index and truncates the
        WAL; PostgreSQL vacuums the touched tables afterwards."""
        ...

    def derived_items(self, user: str, *, org: str | None = None) -> list[Item]:
        """Agent/org items whose provenance is only this user's traces (what deletion also removes)."""
        ...

    def dream_processed(self, scope_key: str, trace_ids: Sequence[str]) -> set[str]:
        """Which of `trace_ids` the dream of `scope_key` has processed."""
        ...

    def finish_dream_run(self, run: dict[str, Any], *, watermark: str, value: int, trace_ids: Sequence[str]) -> None:
        """The run's final row, its processed traces and the scope's watermark, in one transaction."""
        ...

    def item_history(self, item_id: str) -> list[dict[str, Any]]:
        """Every ledger row of an item, oldest first: seq, version (None in the user ledger),
        changeset_id, op, reason, created_at, before, after (item dicts or None)."""
        ...

    def items_of_all_users(self, *, org: str | None, agent: str | None = None,
                           status: Sequence[str] = ("active",), kind: str | None = None) -> list[Item]:
        """User-level items of every user of `org` (org None: users without an org, of `agent`).

        Not a visibility query — nothing serves these to anyone: it is what the promotion
        learner reads to find lessons several users hold independently."""
        ...

    def last_used(self, item_ids: Sequence[str]) -> dict[str, float]:
        """Item id -> the latest time it was shown in a logged trace."""
        ...

    def list_dream_runs(self, *, scope_key: str | None = None, status: str | None = None,
                        agent: str | None = None, org: str | None = None, user: str | None = None,
                        limit: int = 50) -> list[dict[str, Any]]:
        """Dream-run records, newest first (what each run read, did and committed)."""
        ...

    def list_user_changesets(self, user: str, *, org: str | None = None, limit: int = 100) -> list[ChangeSet]:
        """A user's change sets in the user ledger, newest first; `evidence["reverted_by"]` names the
        change set that undid one."""
        ...

    def mark_changeset_reverted(self, changeset_id: str, by: str) -> None:
        """Record that user-level change set `by` undid `changeset_id` (once)."""
        ...

    def record_usage(self, rows: Sequence[tuple[str, str, int, float]], *,
                     watermark: tuple[str, int] | None = None) -> dict[str, int]:
        """Log (trace, item shown, outcome 1|-1|0, at) rows and credit the new ones, atomically with
        an optional watermark move; a pair logged before credits nothing (store/dreams.py)."""
        ...

    def save_dream_run(self, run: dict[str, Any]) -> None:
        ...

    def trace_scopes(self) -> list[tuple[str, str | None, str | None, int]]:
        """(agent, org, user, max seq) per group of traces."""
        ...

    def usage_pairs(self, trace_ids: Sequence[str]) -> set[tuple[str, str]]:
        ...

    def user_orgs(self, user: str) -> list[str | None]:
        """The orgs (None: no org) in which `user` has traces, items or change sets."""
        ...

    def watermarks_with_prefix(self, prefix: str) -> dict[str, int]:
        ...

    def write_traces(self, batch: Sequence[Trace]) -> list[Trace | CrystalliseError]:
        """Record many traces in one transaction — one commit, so one fsync — each all or nothing.

        Returns, in order, each trace as stored (`seq` set) or the error that trace alone caused
        (an id recorded before or twice in the batch, a value a database cannot store); the rest
        are written regardless. Should a span or feedback id collide with another trace's (rare:
        ids are random), the batch falls back to one `write_trace` per trace. A store failure
        raises StoreError for the whole batch, and then nothing of it was written."""
        ...
