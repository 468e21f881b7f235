"""Answers as the grade rules see them: one record per task span, and the shadow checks beside them.

    answers = answer_records(traces, "ratio")     # served_by, grade, fallback, code_sha, the verified truth
    shadows = shadow_records(shadow_traces)        # answer trace id -> what the LLM said beside the code

Pure functions over stored `Trace` objects; `grades.evidence` counts them. What is verified
(and that a revoked run is no evidence) is `crystallise.evidence`'s rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from crystallise.evidence import score_of, truth_of
from crystallise.harness.runtime import fallback_kind
from crystallise.types import Trace

__all__ = ["AnswerRecord", "ShadowRecord", "answer_records", "shadow_name", "shadow_records", "truth_of"]

SHADOW_PREFIX = "shadow:"


def shadow_name(task: str) -> str:
    """The trace name of `task`'s shadow checks (engine/shadow.py records them)."""
    return f"{SHADOW_PREFIX}{task}"


@dataclass(frozen=True)
class AnswerRecord:
    """One served answer of a task, as its task span recorded it, with what feedback said."""

    trace_id: str
    seq: int
    grade: str
    served_by: str  # "code" | "llm" | "none"
    output: Any = None
    fallback: str | None = None  # "abstain" | "exception" | "schema" (the code was tried and did not answer)
    code_sha: str | None = None
    truth: Any = None  # the verified right answer, if feedback gave one
    outcome: float | None = None  # the latest explicit score (None for a revoked run: evidence.py)
    input: Any = None


@dataclass(frozen=True)
class ShadowRecord:
    """What the LLM answered beside a code answer (a shadow check), and whether it agreed."""

    trace_id: str  # the shadow trace
    shadow_of: str  # the answer's trace
    agree: bool
    llm_output: Any = None


def answer_records(traces: Iterable[Trace], task: str) -> list[AnswerRecord]:
    """One record per `task:<task>` span, oldest first (imported labels have no span and are skipped)."""
    span_name = f"task:{task}"
    out: list[AnswerRecord] = []
    for t in traces:
        if t.status != "ok":
            continue
        for s in t.spans:
            if s.kind != "task" or s.name != span_name:
                continue
            a = s.attributes
            served = str(a.get("served_by") or "llm")
            out.append(AnswerRecord(
                trace_id=t.id, seq=t.seq or 0, grade=str(a.get("grade") or "G0"), served_by=served,
                output=s.output, fallback=fallback_kind(a.get("fallback_reason")), code_sha=a.get("code_sha"),
                truth=truth_of(t), outcome=score_of(t), input=s.input,
            ))
    out.sort(key=lambda r: r.seq)
    return out


def shadow_records(traces: Iterable[Trace]) -> dict[str, ShadowRecord]:
    """answer trace id -> its shadow check, from the `shadow:<task>` traces (the latest check wins)."""
    out: dict[str, ShadowRecord] = {}
    for t in traces:
        of = t.metadata.get("shadow_of")
        if not of:
            continue
        span = next((s for s in t.spans if s.name.startswith(SHADOW_PREFIX)), None)
        if span is None or "agree" not in span.attributes:
            continue
        out[of] = ShadowRecord(trace_id=t.id, shadow_of=of, agree=bool(span.attributes["agree"]),
                               llm_output=span.output)
    return out
