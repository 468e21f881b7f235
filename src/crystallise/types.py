"""The core objects of DESIGN.md §3 as plain data.

Everything here is a dataclass of JSON-able fields so that stores, artifact files
and the API can serialise it without special cases:

    Trace ─┬─ Span*        what the agent did (llm / tool / task / retrieval calls)
           └─ Feedback*    how it went (explicit score/label/correction, implicit signals)
    Item                   a context-layer unit (memory, playbook bullet, skill, note)
    Delta                  one atomic change to an item or an artifact file
    ChangeSet              deltas + evidence + the gate's verdict
    Verdict                the gate's decision with its statistic
    Version                an applied change set: one git commit, one ledger entry
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

__all__ = [
    "ChangeSet",
    "Delta",
    "Feedback",
    "Item",
    "LABEL_SCORES",
    "Scope",
    "Span",
    "Trace",
    "Verdict",
    "Version",
    "new_id",
    "now",
]

Level = Literal["agent", "org", "user"]
SpanKind = Literal["llm", "tool", "task", "retrieval", "code", "other"]
ItemKind = Literal["memory", "bullet", "skill", "note"]
ItemStatus = Literal["candidate", "quarantined", "active", "retired"]
DeltaOp = Literal["add", "update", "merge", "supersede", "retire", "set", "replace"]
Decision = Literal["accept", "reject", "needs_review"]


def new_id(prefix: str = "") -> str:
    """A unique id: `prefix` + 16 random hex characters (64 bits from the OS's CSPRNG).

    The bytes come from a pool refilled 4 KiB at a time: one `getrandom` call per 512 ids instead of
    one per id (an ingested trace makes four ids; the syscall was ~5 % of the server's event loop).
    A forked child starts with an empty pool, so parent and child never hand out the same bytes.
    """
    with _id_lock:
        if len(_id_pool) < 8:
            _id_pool[:] = os.urandom(4096)
        chunk = bytes(_id_pool[-8:])
        del _id_pool[-8:]
    return prefix + chunk.hex()


_id_pool = bytearray()
_id_lock = threading.Lock()


def _fresh_id_pool() -> None:  # in a forked child: never reuse the parent's bytes (or its held lock)
    global _id_lock
    _id_pool.clear()
    _id_lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_id_pool)


def now() -> float:
    """Wall-clock seconds since the epoch; every timestamp in crystallise uses this."""
    return time.time()


class _Record:
    """Shared (de)serialisation for the dataclasses below."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        names = _FIELD_NAMES.get(cls)
        if names is None:  # once per class: `fields()` costs more than the rest of a span's conversion
            names = _FIELD_NAMES[cls] = frozenset(f.name for f in fields(cls))  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


_FIELD_NAMES: dict[type, frozenset[str]] = {}


@dataclass
class Scope(_Record):
    """Who a run or an item belongs to. `level` is the narrowest id that is set.

    >>> Scope(agent="support", org="acme", user="u1").level
    'user'
    """

    agent: str = "default"
    org: str | None = None
    user: str | None = None

    @property
    def level(self) -> Level:
        if self.user:
            return "user"
        if self.org:
            return "org"
        return "agent"


@dataclass
class Span(_Record):
    """One step of a run: an LLM call, a tool call, a task call, a retrieval or a code call.

    `attributes` carries the kind-specific facts: model, token counts, latency_ms,
    retries, `shown_items` for a retrieval, `served_by` ("code" | "llm") for a task.
    """

    name: str
    kind: SpanKind = "other"
    id: str = field(default_factory=lambda: new_id("sp_"))
    trace_id: str = ""
    parent_id: str | None = None
    input: Any = None
    output: Any = None
    error: str | None = None
    started_at: float = field(default_factory=now)
    ended_at: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


# Label-only feedback counts: the score a label alone stands for (lower case, "-" and " " read as "_").
# Applications send thumbs and verdicts, not numbers; an unknown label carries no score.
LABEL_SCORES: dict[str, float] = {
    **dict.fromkeys(("thumbs_up", "thumbsup", "+1", "👍", "up", "like", "good", "great", "correct", "right",
                     "helpful", "positive", "accept", "accepted", "approve", "approved", "pass", "passed",
                     "success", "resolved", "yes"), 1.0),
    **dict.fromkeys(("thumbs_down", "thumbsdown", "-1", "👎", "down", "dislike", "bad", "wrong", "incorrect",
                     "unhelpful", "not_helpful", "negative", "reject", "rejected", "fail", "failed", "failure",
                     "unresolved", "no"), 0.0),
}


@dataclass
class Feedback(_Record):
    """An outcome signal on a trace.

    Explicit feedback comes from a person or a checker (`score` in [0, 1], `label`,
    `correction` = the right answer); implicit feedback is recorded by the SDK
    (`kind` = "exception" | "retry" | "latency" | "abandoned" | "schema_repair").
    """

    trace_id: str
    score: float | None = None
    label: str | None = None
    correction: Any = None
    comment: str | None = None
    source: Literal["explicit", "implicit"] = "explicit"
    kind: str = "feedback"
    id: str = field(default_factory=lambda: new_id("fb_"))
    created_at: float = field(default_factory=now)

    @property
    def effective_score(self) -> float | None:
        """`score`, else the score its label stands for (`LABEL_SCORES`: "thumbs_down" -> 0.0), else None.

        >>> Feedback(trace_id="t", label="Thumbs-Down").effective_score
        0.0
        """
        if self.score is not None:
            return self.score
        if isinstance(self.label, str):
            return LABEL_SCORES.get(self.label.strip().lower().replace("-", "_").replace(" ", "_"))
        return None


@dataclass
class Trace(_Record):
    """One agent run. Immutable once acknowledged (written to the store)."""

    name: str = "run"
    id: str = field(default_factory=lambda: new_id("tr_"))
    agent_id: str = "default"
    org_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    input: Any = None
    output: Any = None
    status: Literal["ok", "error"] = "ok"
    error: str | None = None
    started_at: float = field(default_factory=now)
    ended_at: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    spans: list[Span] = field(default_factory=list)
    feedback: list[Feedback] = field(default_factory=list)
    seq: int | None = None  # assigned by the store; the watermark learners resume from

    @property
    def scope(self) -> Scope:
        return Scope(agent=self.agent_id, org=self.org_id, user=self.user_id)

    @property
    def outcome(self) -> float | None:
        """The latest explicit score (a known label counts: `Feedback.effective_score`), else None.
        1.0 = success, 0.0 = failure."""
        scores = [f.effective_score for f in self.feedback if f.source == "explicit" and f.effective_score is not None]
        return scores[-1] if scores else None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trace:
        data = dict(data)
        data["spans"] = [s if isinstance(s, Span) else Span.from_dict(s) for s in data.get("spans", [])]
        data["feedback"] = [
            f if isinstance(f, Feedback) else Feedback.from_dict(f) for f in data.get("feedback", [])
        ]
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Item(_Record):
    """A context-layer unit. `level` + the matching id say whose it is."""

    text: str
    kind: ItemKind = "bullet"
    level: Level = "agent"
    agent_id: str = "default"
    org_id: str | None = None
    user_id: str | None = None
    section: str = "general"
    status: ItemStatus = "active"
    source: str = "user"  # user | tool | reflection | review | import
    trust: float = 1.0
    shown: int = 0
    helpful: int = 0
    harmful: int = 0
    valid_from: float | None = None
    valid_to: float | None = None
    superseded_by: str | None = None
    key: str | None = None  # the subject.attribute a fact is about ("user.city"): see context/temporal.py
    provenance: list[str] = field(default_factory=list)  # trace ids
    meta: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: new_id("it_"))
    created_at: float = field(default_factory=now)
    updated_at: float = field(default_factory=now)


@dataclass
class Delta(_Record):
    """One atomic change. The only way learning changes anything.

    Item deltas (`target="item"`): `item_id`, and `before`/`after` item dicts
    (`before` is None for add). Artifact deltas (`target="artifact"`): `path` in the
    artifact repository and `before`/`after` file texts (`after` None deletes).
    Keeping `before` makes every delta invertible, which is what revert uses.
    """

    op: DeltaOp
    target: Literal["item", "artifact"]
    item_id: str | None = None
    path: str | None = None
    before: Any = None
    after: Any = None
    reason: str = ""

    def inverted(self) -> Delta:
        """The delta that undoes this one."""
        return Delta(
            op="set" if self.target == "artifact" else "update",
            target=self.target,
            item_id=self.item_id,
            path=self.path,
            before=self.after,
            after=self.before,
            reason=f"revert: {self.reason}".strip(),
        )


@dataclass
class Verdict(_Record):
    """The gate's decision on paired old-vs-new results, with the statistic behind it."""

    decision: Decision
    reason: str
    n: int = 0
    old_passed: int = 0
    new_passed: int = 0
    wins: int = 0  # cases new passes and old fails
    losses: int = 0  # cases old passes and new fails
    statistic: str = ""
    p_value: float | None = None
    old_cost: float = 0.0
    new_cost: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChangeSet(_Record):
    """Deltas a learner proposes, the evidence for them and, once gated, the verdict."""

    learner: str
    layer: Literal["context", "harness", "weights"]
    deltas: list[Delta] = field(default_factory=list)
    summary: str = ""
    scope: Scope = field(default_factory=Scope)
    provenance: list[str] = field(default_factory=list)  # trace ids that caused it
    evidence: dict[str, Any] = field(default_factory=dict)
    verdict: Verdict | None = None
    status: Literal["proposed", "accepted", "rejected", "needs_review", "committed"] = "proposed"
    id: str = field(default_factory=lambda: new_id("cs_"))
    created_at: float = field(default_factory=now)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChangeSet:
        data = dict(data)
        data["deltas"] = [d if isinstance(d, Delta) else Delta.from_dict(d) for d in data.get("deltas", [])]
        if isinstance(data.get("scope"), dict):
            data["scope"] = Scope.from_dict(data["scope"])
        if isinstance(data.get("verdict"), dict):
            data["verdict"] = Verdict.from_dict(data["verdict"])
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Version(_Record):
    """An applied change set: version `number` is git commit `commit`."""

    number: int
    changeset_id: str
    commit: str
    message: str
    provenance: list[str] = field(default_factory=list)
    verdict: dict[str, Any] | None = None
    reverts: int | None = None  # the version this one undid, if it is a revert
    reverted_by: int | None = None
    created_at: float = field(default_factory=now)
