"""Request and response bodies of the HTTP API (pydantic), and their conversion to crystallise types.

Request models forbid unknown fields, so a misspelt scope field (`"usr": "u1"`) is a 422
naming the field instead of a silently unscoped write. Responses reuse the dataclasses of
`crystallise.types` (Trace, Item, Version ...) so the wire format is the library's own
`to_dict()` shape.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from crystallise.types import ChangeSet, Feedback, Item, Span, Trace, Version, now

__all__ = [
    "ChangeSetPage",
    "ContextIn",
    "ContextOut",
    "FeedbackIn",
    "Health",
    "ItemPage",
    "RevertIn",
    "SpanIn",
    "TaskDetail",
    "TaskList",
    "TaskSummary",
    "TraceAccepted",
    "TraceBatchAccepted",
    "TraceBatchIn",
    "TraceOutcome",
    "TraceIn",
    "TracePage",
    "VersionDetail",
    "VersionDiff",
    "VersionPage",
]

ScopeId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")]
RecordId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$")]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SpanIn(_In):
    """One step of the run. `attributes.shown_items` (ids) marks a retrieval the learners credit."""

    name: Annotated[str, Field(min_length=1, max_length=500)]
    kind: Literal["llm", "tool", "task", "retrieval", "code", "other"] = "other"
    id: RecordId | None = None
    trace_id: Annotated[str, Field(max_length=200)] | None = Field(
        None, description="leave empty (or the trace's id): spans belong to the trace they are sent in")
    parent_id: RecordId | None = None
    input: Any = None
    output: Any = None
    error: str | None = None
    started_at: Seconds | None = None
    ended_at: Seconds | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)

    def to_span(self) -> Span:
        data = {k: v for k, v in self.model_dump().items() if v is not None}  # defaults fill the gaps
        data.setdefault("started_at", now())
        return Span.from_dict(data)


class FeedbackIn(_In):
    """An outcome signal: `score` in [0, 1] (1 = success), a `label`, the right answer as `correction`."""

    score: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] | None = None
    label: Annotated[str, Field(max_length=200)] | None = None
    correction: Any = None
    comment: Annotated[str, Field(max_length=10_000)] | None = None
    source: Literal["explicit", "implicit"] = "explicit"
    kind: Annotated[str, Field(min_length=1, max_length=100)] = "feedback"
    id: RecordId | None = None

    def to_feedback(self, trace_id: str) -> Feedback:
        if self.score is None and self.label is None and self.correction is None and self.comment is None:
            from crystallise.errors import ValidationError

            raise ValidationError("feedback needs at least one of score, label, correction or comment")
        data = {k: v for k, v in self.model_dump().items() if v is not None}
        return Feedback.from_dict({**data, "trace_id": trace_id})


class TraceIn(_In):
    """A finished agent run. `org` may be left out: an org key's org is filled in."""

    name: Annotated[str, Field(min_length=1, max_length=500)] = "run"
    id: RecordId | None = None
    agent: ScopeId = Field("default", validation_alias=AliasChoices("agent", "agent_id"))
    org: ScopeId | None = Field(None, validation_alias=AliasChoices("org", "org_id"))
    user: ScopeId | None = Field(None, validation_alias=AliasChoices("user", "user_id"))
    session: ScopeId | None = Field(None, validation_alias=AliasChoices("session", "session_id"))
    input: Any = None
    output: Any = None
    status: Literal["ok", "error"] = "ok"
    error: str | None = None
    started_at: Seconds | None = None
    ended_at: Seconds | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    spans: list[SpanIn] = Field(default_factory=list, max_length=10_000)
    feedback: list[FeedbackIn] = Field(default_factory=list, max_length=1_000)

    def to_trace(self, org: str | None) -> Trace:
        trace = Trace(
            name=self.name,
            agent_id=self.agent,
            org_id=org,
            user_id=self.user,
            session_id=self.session,
            input=self.input,
            output=self.output,
            status=self.status,
            error=self.error,
            metadata=dict(self.metadata),
            spans=[s.to_span() for s in self.spans],
        )
        if self.id:
            trace.id = self.id
        if self.started_at is not None:
            trace.started_at = self.started_at
        trace.ended_at = self.ended_at if self.ended_at is not None else now()
        trace.feedback = [f.to_feedback(trace.id) for f in self.feedback]
        return trace


class TraceBatchIn(_In):
    """Many finished runs in one request (`POST /v1/traces/batch`): each is a `TraceIn`."""

    traces: list[TraceIn] = Field(min_length=1, max_length=1000)


class TraceOutcome(BaseModel):
    """One trace of a batch: `status` 201 with its `id` and `seq`, or the error that trace alone met
    (409 recorded before, 403 another org or user, 400 a value the store refuses, 503 the store failed)."""

    status: int
    id: str | None = None
    seq: int | None = None
    detail: str | None = None


class TraceBatchAccepted(BaseModel):
    """The batch's answer, one outcome per trace in the order sent; `written` of them are durable."""

    results: list[TraceOutcome]
    written: int
    failed: int


class TraceAccepted(BaseModel):
    """The acknowledgement: from now on the trace is durable and immutable."""

    id: str
    seq: int


class TracePage(BaseModel):
    """One page of traces, oldest first. Fetch the next with `after_seq=next_after_seq`."""

    traces: list[Trace]
    next_after_seq: int
    has_more: bool


class ItemPage(BaseModel):
    """Items, best first. `next_offset` (None on the last page) is the `offset` of the next page."""

    items: list[Item]
    next_offset: int | None = None


class ChangeSetPage(BaseModel):
    """Change sets with the gate's verdict and evidence, newest first; pass `next_before` as `before`."""

    changesets: list[ChangeSet]
    next_before: str | None = None


class ContextIn(_In):
    """Scope + query + budget: what `crystallise.context(...)` takes."""

    agent: ScopeId = "default"
    org: ScopeId | None = None
    user: ScopeId | None = None
    query: Annotated[str, Field(max_length=20_000)] | None = None
    budget_tokens: Annotated[int, Field(gt=0, le=200_000)] = 800
    kind: Literal["memory", "bullet", "skill", "note"] | None = None


class ContextOut(BaseModel):
    """The pack. Attach `span` to the trace of the run (in `spans`) so the shown items earn credit."""

    text: str
    tokens: int
    item_ids: list[str]
    items: list[Item]
    span: Span


class RevertIn(_In):
    reason: Annotated[str, Field(min_length=1, max_length=500)] = "requested through the API"


class VersionPage(BaseModel):
    """Versions, newest first. Fetch older ones with `before=next_before`."""

    versions: list[Version]
    next_before: int | None


class VersionDetail(BaseModel):
    version: Version
    changeset: ChangeSet
    patch: str


class VersionDiff(BaseModel):
    a: int
    b: int
    patch: str


class TaskSummary(BaseModel):
    name: str
    org: str | None = Field(None, description="the org whose runs this namespace was learned from "
                                              "(null: the shared, agent-level task)")
    grade: str
    description: str
    examples: int
    eval_cases: int
    code: bool


class TaskDetail(TaskSummary):
    spec: dict[str, Any]
    program: Any = None
    files: list[str]


class TaskList(BaseModel):
    tasks: list[TaskSummary]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    open: bool = Field(description="true when no API keys are configured (loopback only)")
