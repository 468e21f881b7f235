"""The store protocol: traces, spans, feedback, items, change sets, versions, watermarks.

One protocol, two implementations of the same schema (SQLite for the embedded
default, PostgreSQL for deployments). Every write method returns only after the
write is durable (committed); that is what "acknowledged" means.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

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

    def count_traces(self) -> int: ...

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
