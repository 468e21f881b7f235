"""Typed number extraction: the terminals of the arithmetic synthesiser.

Text is scanned for numbers with their kind, so that a program can say "the second
dollar amount" instead of "the fifth number" (a year or a count in between does not
shift it):

    "$1,000,000 and ... 7% ... for 3 years in 2023"
      -> {"$": [1000000.0], "%": [0.07], "n": [3.0, 2023.0]}

Kinds: `$` currency amounts (also €, £), `%` percentages (as fractions: 7% -> 0.07),
`n` plain numbers. Scale words multiply ("$1.2 million" -> 1200000). Digits that are
part of a name (`S_0`, `R_t`, `Q4`) are not numbers.

The same source is embedded verbatim in every crystallised program (`RUNTIME`), so a
program file runs on its own in the sandbox with no import of crystallise.
"""

from __future__ import annotations

# The runtime below is both executed here and copied into generated programs.
RUNTIME = r'''
import re
from decimal import Decimal, ROUND_HALF_EVEN, ROUND_HALF_UP

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


def extract_numbers(text):
    """{'$': [...], '%': [...], 'n': [...]} in order of appearance."""
    out = {"$": [], "%": [], "n": []}
    for m in _NUM.finditer(text):
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


def fmt_number(value, places, rounding):
    """Round half-up/half-even at `places` after removing float noise; -1 = no rounding."""
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    if places < 0:
        return repr(float(value))
    mode = ROUND_HALF_UP if rounding == "half_up" else ROUND_HALF_EVEN
    d = Decimal(repr(round(float(value), 9))).quantize(Decimal(1).scaleb(-places), rounding=mode)
    return str(d)
'''

_namespace: dict[str, object] = {}
exec(compile(RUNTIME, "<crystallise.harness.synth.numbers>", "exec"), _namespace)  # noqa: S102 - our own constant source

extract_numbers = _namespace["extract_numbers"]
fmt_number = _namespace["fmt_number"]

__all__ = ["RUNTIME", "extract_numbers", "fmt_number"]
