"""Dates a query names, as a time window: temporal query processing for retrieval.

A question such as "What did John share with Tim in January 2024?" is about what was said
*then*. Words alone match "January" and "2024" in any memory that mentions them; the window
instead selects the memories *recorded* in that period (`observed_at(item)`), which
retrieval adds as one more ranked list (retrieve.py), not as a filter: a query that names
a date may still be answered by something said later.

The window has the granularity the query states, nothing tuned:

    "on 7 July, 2023" / "July 7th 2023" / "2023-07-07"   that day          [00:00, next 00:00)
    "in July 2023" / "July, 2023"                        that month
    "in 2023" / "during 2023" / "of 2023"                that year

    >>> from datetime import datetime, timezone
    >>> lo, hi = date_window("What did Caroline paint in May 2023?")
    >>> datetime.fromtimestamp(lo, timezone.utc).date(), datetime.fromtimestamp(hi, timezone.utc).date()
    (datetime.date(2023, 5, 1), datetime.date(2023, 6, 1))
    >>> date_window("When did Caroline go to the support group?") is None
    True

Relative expressions ("last week", "yesterday") need the time the question is asked and are
left out; times are UTC.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, UTC

from crystallise.types import Item

__all__ = ["date_window", "observed_at", "parse_date"]

_MONTHS = {name: n for n, names in enumerate(
    [("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",), ("june", "jun"),
     ("july", "jul"), ("august", "aug"), ("september", "sep", "sept"), ("october", "oct"),
     ("november", "nov"), ("december", "dec")], start=1) for name in names}
_MON = r"(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"((?:19|20)\d{2})"
_DAY_MONTH_YEAR = re.compile(rf"\b{_DAY}\s+(?:of\s+)?{_MON},?\s+{_YEAR}\b")
_MONTH_DAY_YEAR = re.compile(rf"\b{_MON}\s+{_DAY},?\s+{_YEAR}\b")
_ISO = re.compile(r"\b((?:19|20)\d{2})-(\d{2})-(\d{2})\b")
_MONTH_YEAR = re.compile(rf"\b{_MON},?\s+{_YEAR}\b")
_YEAR_ONLY = re.compile(rf"\b(?:in|during|of|throughout)\s+{_YEAR}\b")


def _ts(year: int, month: int, day: int = 1) -> float | None:
    try:
        return datetime(year, month, day, tzinfo=UTC).timestamp()
    except ValueError:  # "31 February": not a date
        return None


def _day(year: int, month: int, day: int) -> tuple[float, float] | None:
    lo = _ts(year, month, day)
    return None if lo is None else (lo, lo + timedelta(days=1).total_seconds())


def date_window(query: str) -> tuple[float, float] | None:
    """The first date the query names, as `(start, end)` epoch seconds (end exclusive), or None."""
    text = query.lower()
    m = _DAY_MONTH_YEAR.search(text)
    if m:
        return _day(int(m.group(3)), _MONTHS[m.group(2)], int(m.group(1)))
    m = _MONTH_DAY_YEAR.search(text)
    if m:
        return _day(int(m.group(3)), _MONTHS[m.group(1)], int(m.group(2)))
    m = _ISO.search(text)
    if m:
        return _day(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    m = _MONTH_YEAR.search(text)
    if m:
        year, month = int(m.group(2)), _MONTHS[m.group(1)]
        lo, hi = _ts(year, month), _ts(year + month // 12, month % 12 + 1)
        return None if lo is None or hi is None else (lo, hi)
    m = _YEAR_ONLY.search(text)
    if m:
        lo, hi = _ts(int(m.group(1)), 1), _ts(int(m.group(1)) + 1, 1)
        return None if lo is None or hi is None else (lo, hi)
    return None


def parse_date(text: str) -> float | None:
    """Epoch seconds of the first full date in `text` ("1:56 pm on 8 May, 2023" -> 8 May 2023 00:00 UTC)."""
    window = date_window(text)
    return None if window is None or window[1] - window[0] > 86_400 else window[0]


def observed_at(item: Item) -> float:
    """When what the item says was observed: `meta["observed_at"]` (epoch s) if a learner set it, else created_at."""
    when = item.meta.get("observed_at") if isinstance(item.meta, dict) else None
    if isinstance(when, (int, float)) and not isinstance(when, bool):
        return float(when)
    return float(item.created_at)
