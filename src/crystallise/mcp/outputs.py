"""The typed results of the MCP tools: each tool's `outputSchema` is one of these, not an untyped object.

The SDK derives a tool's output schema from its return annotation; `dict[str, Any]` gave
`{"type": "object", "additionalProperties": true}`, which tells a client nothing. TypedDicts keep the
tools returning plain dicts (the structured content) while the schema lists every field and type.
(`typing_extensions.TypedDict`: pydantic needs it on Python < 3.12.)
"""

from __future__ import annotations

from typing_extensions import TypedDict

__all__ = ["ArchivalHit", "ArchivalPage", "CoreBlockOut", "CoreBlocksOut", "FeedbackOut", "ForgetOut", "ItemOut",
           "LoadSkillOut", "PlaybookOut", "RecallOut", "RememberOut", "SkillInfo", "SkillsOut"]


class ItemOut(TypedDict):
    id: str
    text: str
    kind: str
    level: str
    section: str
    status: str


class RememberOut(ItemOut):
    note: str


class RecallOut(TypedDict):
    items: list[ItemOut]
    trace_id: str


class ForgetOut(TypedDict):
    forgotten: list[ItemOut]
    count: int


class PlaybookOut(TypedDict):
    text: str
    tokens: int
    item_ids: list[str]
    skills: list[str]
    trace_id: str


class SkillInfo(TypedDict):
    name: str
    description: str
    level: str
    source: str
    trust: float


class SkillsOut(TypedDict):
    skills: list[SkillInfo]


class LoadSkillOut(TypedDict):
    name: str
    description: str
    file: str
    text: str
    files: list[str]
    allowed_tools: list[str] | None
    trust: float
    trace_id: str


class FeedbackOut(TypedDict):
    trace_id: str
    feedback_id: str
    recorded: bool


class CoreBlockOut(TypedDict):
    id: str
    label: str
    level: str
    text: str
    chars: int
    limit: int


class CoreBlocksOut(TypedDict):
    blocks: list[CoreBlockOut]


class ArchivalHit(TypedDict):
    id: str
    text: str
    level: str
    created_at: float
    score: float


class ArchivalPage(TypedDict):
    results: list[ArchivalHit]
    page: int
    page_size: int
    has_more: bool
