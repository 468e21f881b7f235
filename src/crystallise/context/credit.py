"""Credit assignment, idempotent: which items a run showed, and what its outcome earned them.

    trace (spans list shown_items; feedback gives the outcome)
      -> usage rows (trace, item, +1 helpful | -1 harmful | 0 shown, not blamed, when it ran)
      -> store.record_usage: logged once per (trace, item); credit moves only for a new row

Harm is a counterfactual, not blame-all: a failed run makes an item harmful only when
running the same input again *without that item* (with the model that produced the run)
answers it right, while the run with every item still fails (`counterfactual_blame`; a run
whose failure does not reproduce blames nothing). The other items the failed run showed are
innocent: logged with 0, so they are never blamed for it later. Without a way to re-run
(`blame=None`, as in the offline dreamer, or a case with no known right answer) a failed run's
items are logged with 0 too: being shown in a failure is no evidence of harm. (The task's loop
credits its runs at each learn(), before a dream sees them, with the counterfactual.)

The rule is `crystallise.evidence.outcome_of` (an explicit score >= 0.5 is a success; revoked
traces earn nothing), as for reflect.py's `credit`; the difference is the log. Because each
(trace, item) pair is credited once, the loop and the dreamer can both credit the same
traces, and a run killed between crediting and moving its watermark can simply be run again.
The log also says when an item was last *used* (shown in a recorded run), which the
forgetting policy reads.

    >>> from crystallise.types import Feedback, Span, Trace
    >>> t = Trace(spans=[Span("context", "retrieval", attributes={"shown_items": ["it_a"]})],
    ...           feedback=[Feedback(trace_id="", score=0.0)], started_at=10.0)
    >>> [(item, outcome) for _, item, outcome, _ in usage_rows([t], blame=lambda t, shown: {"it_a"})]
    [('it_a', -1)]
    >>> [(item, outcome) for _, item, outcome, _ in usage_rows([t])]  # no counterfactual: nobody is blamed
    [('it_a', 0)]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from crystallise.context.reflect import shown_items
from crystallise.evidence import outcome_of
from crystallise.store.base import Store
from crystallise.types import Trace

__all__ = ["Blame", "counterfactual_blame", "failed", "outcome_of", "record_credit", "usage_rows"]

# (failed trace, item ids it showed) -> the items whose removal fixes it, or None: cannot tell
Blame = Callable[[Trace, Sequence[str]], "set[str] | None"]


def failed(trace: Trace) -> bool:
    """Whether a run is a failure worth a critique: an explicit score < 0.5, or an error with no score."""
    o = outcome_of(trace)
    return o == -1 or (o == 0 and trace.status == "error")


def usage_rows(traces: Sequence[Trace], blame: Blame | None = None) -> list[tuple[str, str, int, float]]:
    """(trace id, item id, outcome, started_at) for every item each trace showed: +1 on a success; on a
    failure -1 for the items `blame` finds harmful, 0 for the others (all of them when it cannot tell)."""
    rows = []
    for t in traces:
        o = outcome_of(t)
        shown = shown_items(t)
        if o is None or not shown:
            continue
        if o == -1:
            guilty = (blame(t, shown) if blame is not None else None) or set()
            rows += [(t.id, item_id, -1 if item_id in guilty else 0, float(t.started_at)) for item_id in shown]
            continue
        rows += [(t.id, item_id, o, float(t.started_at)) for item_id in shown]
    return rows


def counterfactual_blame(cases: Mapping[str, tuple[Any, Any]], answer_without: Callable[[Any, str | None], Any],
                         passes: Callable[[Any, Any], bool], *, max_items: int = 8, max_runs: int = 16) -> Blame:
    """A `Blame` that re-runs the case: `cases` maps a trace id to (input, right answer);
    `answer_without(input, item_id)` answers the input with every item the run would show except
    `item_id` (None: all of them). An item is harmful when its absence fixes a failure that
    reproduces with everything shown. It costs 1 + len(shown) model calls a run, so runs showing more
    than `max_items` items, and runs past the first `max_runs` of one call, are not judged (None)."""
    judged = [0]

    def blame(trace: Trace, shown: Sequence[str]) -> set[str] | None:
        case = cases.get(trace.id)
        if case is None or len(shown) > max_items or judged[0] >= max_runs:
            return None  # no right answer to check against, or too many items / runs to re-run
        judged[0] += 1
        value, truth = case
        if _passes(passes, answer_without(value, None), truth):
            return None  # the failure does not reproduce: nothing to learn about the items from it
        return {i for i in shown if _passes(passes, answer_without(value, i), truth)}

    return blame


def _passes(passes: Callable[[Any, Any], bool], output: Any, truth: Any) -> bool:
    return output is not None and bool(passes(output, truth))


def record_credit(store: Store, traces: Sequence[Trace], *, watermark: tuple[str, int] | None = None,
                  blame: Blame | None = None) -> dict[str, int]:
    """Credit the items `traces` showed, once per (trace, item); returns {"new", "helpful", "harmful"}."""
    return store.record_usage(usage_rows(traces, blame), watermark=watermark)
