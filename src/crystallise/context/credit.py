"""Credit assignment, idempotent: which items a run showed, and what its outcome earned them.

    trace (spans list shown_items; feedback gives the outcome)
      -> usage rows (trace, item, +1 helpful | -1 harmful | 0 no outcome yet, when it ran)
      -> store.record_usage: logged once per (trace, item); credit moves only for a new row

The rule is `crystallise.evidence.outcome_of` (an explicit score >= 0.5 is a success; revoked
traces earn nothing), as for reflect.py's `credit`; the difference is the log. Because each
(trace, item) pair is credited once, the loop and the dreamer can both credit the same
traces, and a run killed between crediting and moving its watermark can simply be run again.
The log also says when an item was last *used* (shown in a recorded run), which the
forgetting policy reads.

    >>> from crystallise.types import Feedback, Span, Trace
    >>> t = Trace(spans=[Span("context", "retrieval", attributes={"shown_items": ["it_a"]})],
    ...           feedback=[Feedback(trace_id="", score=0.0)], started_at=10.0)
    >>> [(item, outcome) for _, item, outcome, _ in usage_rows([t])]
    [('it_a', -1)]
"""

from __future__ import annotations

from collections.abc import Sequence

from crystallise.context.reflect import shown_items
from crystallise.evidence import outcome_of
from crystallise.store.base import Store
from crystallise.types import Trace

__all__ = ["failed", "outcome_of", "record_credit", "usage_rows"]


def failed(trace: Trace) -> bool:
    """Whether a run is a failure worth a critique: an explicit score < 0.5, or an error with no score."""
    o = outcome_of(trace)
    return o == -1 or (o == 0 and trace.status == "error")


def usage_rows(traces: Sequence[Trace]) -> list[tuple[str, str, int, float]]:
    """(trace id, item id, outcome, started_at) for every item each trace showed."""
    rows = []
    for t in traces:
        o = outcome_of(t)
        if o is None:
            continue
        rows += [(t.id, item_id, o, float(t.started_at)) for item_id in shown_items(t)]
    return rows


def record_credit(store: Store, traces: Sequence[Trace], *, watermark: tuple[str, int] | None = None) -> dict[str, int]:
    """Credit the items `traces` showed, once per (trace, item); returns {"new", "helpful", "harmful"}."""
    return store.record_usage(usage_rows(traces), watermark=watermark)
