"""Typed number extraction: the terminals of the arithmetic synthesiser.

Text is scanned for numbers with their kind, so that a program can say "the second
dollar amount" instead of "the fifth number" (a year or a count in between does not
shift it):

    "$1,000,000 and ... 7% ... for 3 years in 2023"
      -> {"$": [1000000.0], "%": [0.07], "n": [3.0, 2023.0]}

Kinds: `$` currency amounts (also €, £), `%` percentages (as fractions: 7% -> 0.07),
`n` plain numbers. Scale words multiply ("$1.2 million" -> 1200000). Digits that are
part of a name (`S_0`, `R_t`, `Q4`) are not numbers.

The interpreter (`harness/programs`) calls these functions; the rendering of a program
(`code.py`, for people and for the sandbox's equivalence tests) carries their source
(`RUNTIME`, made with `inspect.getsource`), so both mean the same. No annotations: the
copied source must run on its own.
"""

import inspect
import re
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

__all__ = ["RUNTIME", "extract_numbers", "fmt_number", "number_spans"]

_NUM = re.compile(
    r"(?<![\w.])"                                  # not glued to a name (S_0, Q4) or decimal
    r"(?P<cur>[$\u20ac\u00a3])?\s?"                # currency sign
    r"(?P<num>-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+)"
    r"(?![\w])"
    r"\s?(?P<pct>%|percent\b|per cent\b)?"
    r"\s?(?P<scale>thousand\b|million\b|billion\b|trillion\b)?",
    re.IGNORECASE,
)
_SCALE = {"thousand": 1e3, "million": 1e6, "billion": 1e9, "trillion": 1e12}


def extract_numbers(text, limit=None):
    """{'$': [...], '%': [...], 'n': [...]} in order of appearance; None once there are more
    than `limit` numbers (a program that reads at most that many stops early)."""
    out = {"$": [], "%": [], "n": []}
    for i, m in enumerate(_NUM.finditer(text)):
        if limit is not None and i >= limit:
            return None
        value = float(m.group("num").replace(",", ""))
        if m.group("scale"):
            value *= _SCALE[m.group("scale").lower()]
        if m.group("pct"):
            out["%"].append(value / 100.0)
        elif m.group("cur"):
            out["$"].append(value)
        else:
            out["n"].append(value)
    return out


def number_spans(text):
    """(digits as written, with scale words applied, typed) for each number in text."""
    out = []
    for m in _NUM.finditer(text):
        raw = float(m.group("num").replace(",", ""))
        scaled = raw * _SCALE[m.group("scale").lower()] if m.group("scale") else raw
        out.append((raw, scaled, scaled / 100.0 if m.group("pct") else scaled))
    return out


def fmt_number(value, places, rounding):
    """Round half-up/half-even at `places` after removing float noise; -1 = no rounding."""
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    if places < 0:
        return repr(float(value))
    mode = ROUND_HALF_UP if rounding == "half_up" else ROUND_HALF_EVEN
    d = Decimal(repr(round(float(value), 9))).quantize(Decimal(1).scaleb(-places), rounding=mode)
    return str(d)


RUNTIME = "\n".join([
    "",
    "import re",
    "from decimal import Decimal, ROUND_HALF_EVEN, ROUND_HALF_UP",
    "",
    f"_NUM = re.compile({_NUM.pattern!r}, re.IGNORECASE)",
    f"_SCALE = {_SCALE!r}",
    "",
    *(inspect.getsource(f) for f in (extract_numbers, number_spans, fmt_number)),
])
