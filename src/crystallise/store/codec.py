"""Rows ↔ dataclasses, and the checks every value passes before it reaches SQL.

JSON payloads are stored as `json.dumps` text (see `schema.py`). Plain text columns
are checked for the two things one of the two databases cannot store, so that a
record accepted by SQLite is accepted by PostgreSQL too:

- NUL characters (PostgreSQL `text` rejects them): put such data in a JSON field
  (input, output, metadata, attributes ...), where it is escaped as \\u0000;
- lone surrogates (not encodable as UTF-8).

Inside JSON both are escaped, so JSON fields carry any string exactly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, cast, get_args

from crystallise.errors import ValidationError
from crystallise.types import (
    ChangeSet,
    Delta,
    Feedback,
    Item,
    ItemKind,
    ItemStatus,
    Level,
    Span,
    SpanKind,
    Trace,
    Version,
)

# A result row as `.mappings()` yields it.
Row = Mapping[Any, Any]

__all__ = [
    "changeset_from_row",
    "changeset_row",
    "checked",
    "dump_json",
    "feedback_from_row",
    "feedback_row",
    "item_from_after",
    "item_from_row",
    "item_row",
    "ledger_row",
    "load_json",
    "span_from_row",
    "span_rows",
    "trace_from_row",
    "trace_row",
    "version_from_row",
    "version_row",
]

LEVELS = frozenset(get_args(Level))
ITEM_KINDS = frozenset(get_args(ItemKind))
ITEM_STATUSES = frozenset(get_args(ItemStatus))
SPAN_KINDS = frozenset(get_args(SpanKind))


def dump_json(value: Any, what: str) -> str | None:
    """JSON text for a payload (None stays SQL NULL). Non-JSON values are a ValidationError."""
    if value is None:
        return None
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise ValidationError(
            f"{what} is not JSON-serialisable ({error}): convert it to dicts, lists, strings and numbers first"
        ) from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: \u-escape everything instead
        text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text


def load_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def checked(row: dict[str, Any], what: str) -> dict[str, Any]:
    """Reject plain-text values that one of the databases cannot store (see module docstring)."""
    for column, value in row.items():
        if not isinstance(value, str):
            continue
        if "\x00" in value:
            raise ValidationError(
                f"{what}: field {column!r} contains a NUL character (\\x00), which PostgreSQL cannot store; "
                "remove it, or keep such data in a JSON field (input, output, metadata, attributes)"
            )
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValidationError(
                    f"{what}: field {column!r} is not valid Unicode (it has a lone surrogate); "
                    "decode the source text with errors='replace'"
                ) from None
    return row


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValidationError(message)


def _time(value: Any, what: str) -> float | None:
    """A timestamp as float seconds (None stays None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(f"{what} must be float seconds since the epoch (crystallise.types.now()), not {value!r}")
    return float(value)


# -- traces ------------------------------------------------------------------------------


def trace_row(trace: Trace, recorded_at: float) -> dict[str, Any]:
    what = f"trace {trace.id!r}"
    _require(bool(trace.id), "a trace needs a non-empty id (leave Trace.id at its default to get one)")
    _require(trace.status in ("ok", "error"), f"{what}: status must be 'ok' or 'error', not {trace.status!r}")
    _require(bool(trace.agent_id), f"{what}: agent_id must be non-empty (the default agent is 'default')")
    return checked(
        {
            "id": trace.id,
            "name": trace.name,
            "agent_id": trace.agent_id,
            "org_id": trace.org_id,
            "user_id": trace.user_id,
            "session_id": trace.session_id,
            "status": trace.status,
            "error": trace.error,
            "input": dump_json(trace.input, f"{what} input"),
            "output": dump_json(trace.output, f"{what} output"),
            "started_at": _time(trace.started_at, f"{what} started_at"),
            "ended_at": _time(trace.ended_at, f"{what} ended_at"),
            "metadata": dump_json(trace.metadata, f"{what} metadata"),
            "recorded_at": recorded_at,
        },
        what,
    )


def trace_from_row(row: Row, spans: list[Span], feedback: list[Feedback]) -> Trace:
    return Trace(
        name=row["name"],
        id=row["id"],
        agent_id=row["agent_id"],
        org_id=row["org_id"],
        user_id=row["user_id"],
        session_id=row["session_id"],
        input=load_json(row["input"]),
        output=load_json(row["output"]),
        status=row["status"],
        error=row["error"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        metadata=load_json(row["metadata"]) or {},
        spans=spans,
        feedback=feedback,
        seq=row["seq"],
    )


def span_rows(trace: Trace) -> list[dict[str, Any]]:
    rows = []
    for position, span in enumerate(trace.spans):
        what = f"span {span.id!r} of trace {trace.id!r}"
        _require(bool(span.id), f"{what}: a span needs a non-empty id")
        _require(
            span.trace_id in ("", trace.id),
            f"{what}: span.trace_id is {span.trace_id!r}; leave it empty or set it to the trace's id",
        )
        _require(span.kind in SPAN_KINDS, f"{what}: kind must be one of {sorted(SPAN_KINDS)}, not {span.kind!r}")
        row = {
            "id": span.id,
            "trace_id": trace.id,
            "position": position,
            "parent_id": span.parent_id,
            "name": span.name,
            "kind": span.kind,
            "input": dump_json(span.input, f"{what} input"),
            "output": dump_json(span.output, f"{what} output"),
            "error": span.error,
            "started_at": _time(span.started_at, f"{what} started_at"),
            "ended_at": _time(span.ended_at, f"{what} ended_at"),
            "attributes": dump_json(span.attributes, f"{what} attributes"),
        }
        rows.append(checked(row, what))
    return rows


def span_from_row(row: Row) -> Span:
    return Span(
        name=row["name"],
        kind=row["kind"],
        id=row["id"],
        trace_id=row["trace_id"],
        parent_id=row["parent_id"],
        input=load_json(row["input"]),
        output=load_json(row["output"]),
        error=row["error"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        attributes=load_json(row["attributes"]) or {},
    )


def feedback_row(fb: Feedback, trace_id: str) -> dict[str, Any]:
    what = f"feedback {fb.id!r} on trace {trace_id!r}"
    _require(bool(fb.id), f"{what}: feedback needs a non-empty id")
    _require(
        fb.trace_id in ("", trace_id),
        f"{what}: feedback.trace_id is {fb.trace_id!r}; leave it empty or set it to the trace's id",
    )
    _require(fb.source in ("explicit", "implicit"), f"{what}: source must be 'explicit' or 'implicit'")
    if fb.score is not None:
        _require(
            isinstance(fb.score, int | float) and math.isfinite(fb.score) and 0.0 <= fb.score <= 1.0,
            f"{what}: score must be a number in [0, 1] (1.0 = success), not {fb.score!r}",
        )
    row = {
        "id": fb.id,
        "trace_id": trace_id,
        "score": None if fb.score is None else float(fb.score) + 0.0,  # -0.0 is 0.0 (SQLite drops the sign)
        "label": fb.label,
        "correction": dump_json(fb.correction, f"{what} correction"),
        "comment": fb.comment,
        "source": fb.source,
        "kind": fb.kind,
        "created_at": _time(fb.created_at, f"{what} created_at"),
    }
    return checked(row, what)


def feedback_from_row(row: Row) -> Feedback:
    return Feedback(
        trace_id=row["trace_id"],
        score=row["score"],
        label=row["label"],
        correction=load_json(row["correction"]),
        comment=row["comment"],
        source=row["source"],
        kind=row["kind"],
        id=row["id"],
        created_at=row["created_at"],
    )


# -- items -------------------------------------------------------------------------------


def item_from_after(after: Any, item_id: str | None, what: str) -> Item:
    """The Item an item delta's `after` describes, validated (ids must agree, scope must be complete)."""
    if isinstance(after, Item):
        after = after.to_dict()
    _require(isinstance(after, dict), f"{what}: `after` must be an Item dict or None, not {type(after).__name__}")
    data = dict(after)
    data.setdefault("id", item_id)
    _require(bool(data["id"]), f"{what}: the delta needs item_id (or after['id'])")
    _require(
        item_id in (None, data["id"]),
        f"{what}: delta.item_id {item_id!r} differs from after['id'] {data['id']!r}",
    )
    try:
        item = cast(Item, Item.from_dict(data))
    except TypeError as error:
        raise ValidationError(f"{what}: `after` is not a valid Item ({error})") from None
    _require(item.kind in ITEM_KINDS, f"{what}: kind must be one of {sorted(ITEM_KINDS)}, not {item.kind!r}")
    _require(item.level in LEVELS, f"{what}: level must be one of {sorted(LEVELS)}, not {item.level!r}")
    _require(
        item.status in ITEM_STATUSES, f"{what}: status must be one of {sorted(ITEM_STATUSES)}, not {item.status!r}"
    )
    _require(bool(item.agent_id), f"{what}: agent_id must be non-empty")
    _require(
        isinstance(item.trust, int | float) and not isinstance(item.trust, bool) and math.isfinite(item.trust),
        f"{what}: trust must be a finite number, not {item.trust!r}",
    )
    for counter in ("shown", "helpful", "harmful"):
        value = getattr(item, counter)
        _require(
            isinstance(value, int) and not isinstance(value, bool),
            f"{what}: {counter} must be an integer, not {value!r}",
        )
    _require(item.level != "org" or bool(item.org_id), f"{what}: an org-level item needs org_id")
    _require(item.level != "user" or bool(item.user_id), f"{what}: a user-level item needs user_id")
    return item


def item_row(item: Item) -> dict[str, Any]:
    what = f"item {item.id!r}"
    return checked(
        {
            "id": item.id,
            "text": item.text,
            "kind": item.kind,
            "level": item.level,
            "agent_id": item.agent_id,
            "org_id": item.org_id,
            "user_id": item.user_id,
            "section": item.section,
            "status": item.status,
            "source": item.source,
            "trust": float(item.trust),
            "shown": int(item.shown),
            "helpful": int(item.helpful),
            "harmful": int(item.harmful),
            "valid_from": _time(item.valid_from, f"{what} valid_from"),
            "valid_to": _time(item.valid_to, f"{what} valid_to"),
            "superseded_by": item.superseded_by,
            "fact_key": item.key,
            "provenance": dump_json(item.provenance, f"{what} provenance"),
            "meta": dump_json(item.meta, f"{what} meta"),
            "created_at": _time(item.created_at, f"{what} created_at"),
            "updated_at": _time(item.updated_at, f"{what} updated_at"),
        },
        what,
    )


def item_from_row(row: Row) -> Item:
    return Item(
        text=row["text"],
        kind=row["kind"],
        level=row["level"],
        agent_id=row["agent_id"],
        org_id=row["org_id"],
        user_id=row["user_id"],
        section=row["section"],
        status=row["status"],
        source=row["source"],
        trust=row["trust"],
        shown=row["shown"],
        helpful=row["helpful"],
        harmful=row["harmful"],
        valid_from=row["valid_from"],
        valid_to=row["valid_to"],
        superseded_by=row["superseded_by"],
        key=row["fact_key"],
        provenance=load_json(row["provenance"]) or [],
        meta=load_json(row["meta"]) or {},
        id=row["id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def ledger_row(
    delta: Delta, before: Item | None, after: Item | None, version: int | None, changeset_id: str | None
) -> dict[str, Any]:
    """A ledger row; `before` is the row as it was in the store, not what the delta claimed."""
    item = after or before
    what = f"delta on item {delta.item_id!r}"
    return checked(
        {
            "version": version,
            "changeset_id": changeset_id,
            "op": delta.op,
            "item_id": item.id if item is not None else delta.item_id,
            "user_id": item.user_id if item is not None else None,
            "org_id": item.org_id if item is not None else None,
            "before_json": dump_json(None if before is None else before.to_dict(), f"{what} before"),
            "after_json": dump_json(None if after is None else after.to_dict(), f"{what} after"),
            "reason": delta.reason or "",
        },
        what,
    )


# -- change sets and versions -----------------------------------------------------------


def changeset_row(cs: ChangeSet, updated_at: float) -> dict[str, Any]:
    what = f"change set {cs.id!r}"
    _require(bool(cs.id), "a change set needs a non-empty id (leave ChangeSet.id at its default)")
    data = cs.to_dict()
    return checked(
        {
            "id": cs.id,
            "learner": cs.learner,
            "layer": cs.layer,
            "status": cs.status,
            "summary": cs.summary,
            "scope": dump_json(data["scope"], f"{what} scope"),
            "provenance": dump_json(data["provenance"], f"{what} provenance"),
            "evidence": dump_json(data["evidence"], f"{what} evidence"),
            "verdict": dump_json(data["verdict"], f"{what} verdict"),
            "deltas": dump_json(data["deltas"], f"{what} deltas"),
            "created_at": _time(cs.created_at, f"{what} created_at"),
            "updated_at": updated_at,
            "user_id": cs.scope.user,
            "org_id": cs.scope.org,  # m007 (org isolation of change sets): every change set's org
        },
        what,
    )


def changeset_from_row(row: Row) -> ChangeSet:
    return ChangeSet.from_dict(
        {
            "id": row["id"],
            "learner": row["learner"],
            "layer": row["layer"],
            "status": row["status"],
            "summary": row["summary"],
            "scope": load_json(row["scope"]) or {},
            "provenance": load_json(row["provenance"]) or [],
            "evidence": load_json(row["evidence"]) or {},
            "verdict": load_json(row["verdict"]),
            "deltas": load_json(row["deltas"]) or [],
            "created_at": row["created_at"],
        }
    )


def version_row(version: Version) -> dict[str, Any]:
    what = f"version {version.number}"
    return checked(
        {
            "number": version.number,
            "changeset_id": version.changeset_id,
            "git_commit": version.commit,
            "message": version.message,
            "provenance": dump_json(version.provenance, f"{what} provenance"),
            "verdict": dump_json(version.verdict, f"{what} verdict"),
            "reverts": version.reverts,
            "reverted_by": version.reverted_by,
            "created_at": _time(version.created_at, f"{what} created_at"),
        },
        what,
    )


def version_from_row(row: Row) -> Version:
    return Version(
        number=row["number"],
        changeset_id=row["changeset_id"],
        commit=row["git_commit"],
        message=row["message"],
        provenance=load_json(row["provenance"]) or [],
        verdict=load_json(row["verdict"]),
        reverts=row["reverts"],
        reverted_by=row["reverted_by"],
        created_at=row["created_at"],
    )
