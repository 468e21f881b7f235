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

import bisect
import inspect
import re
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

__all__ = ["RUNTIME", "extract_numbers", "fmt_number", "named_numbers", "number_spans"]

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
# A word of a name or a text: 3+ letters, or a symbol with an underscore (`R_f`, `β_i`, `S_0`).
_WORD = r"[^\W\d_]+_\w+|[A-Za-z]{3,}"
# How often per year, in words ("compounded quarterly"): numbers a stated formula's `n` may name.
_FREQ = re.compile(
    r"\b(?:annually|yearly|semi-?annually|bi-?annually|half-?yearly|quarterly|monthly|weekly|daily"
    r"|every\s+(?P<every>\d{1,2}|one|two|three|four|six|twelve)\s+months?)\b",
    re.IGNORECASE,
)
_FREQ_VALUES = {"annually": 1.0, "yearly": 1.0, "semiannually": 2.0, "biannually": 2.0, "halfyearly": 2.0,
                "quarterly": 4.0, "monthly": 12.0, "weekly": 52.0, "daily": 365.0}
_COUNTS = {"one": 1, "two": 2, "three": 3, "four": 4, "six": 6, "twelve": 12}
_FUNCTION_WORDS = {"the", "and", "for", "per", "with", "from", "that", "this", "its", "are", "was", "has",
                   "have", "into", "during", "which", "each", "all", "any", "than", "then", "over", "under"}


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


def named_numbers(text, names, skip):
    """The number each of `names` (a stated formula's variables) refers to, by the words around it:
    each number (after the first skip[kind] of each kind, the template's own) scores a name by the
    name's words found near it (a word counts 1 / (1 + distance in words), half a word more after the
    number than before it, divided by how many names share it; first 5 letters compared, a symbol
    with an underscore such as `R_f` compared whole, common function words ignored; within 8 words
    of the same clause); pairs are taken best first, one number per name; None for a name no
    number matches (a rule that needs it abstains), None in all when the text has over 12 numbers
    after the template's (64 in all) or over 12 frequency words.
    Values as `extract_numbers` gives them (7% -> 0.07, scale words applied); a frequency word is a
    number too ("compounded quarterly" -> 4, "every two months" -> 6), after the others."""
    # Every step is linear or n log n in the text: the input is anyone's (a long hostile text costs
    # what its length does, never its length squared).
    stops = [m.start() for m in re.finditer(r"[;:,.?!](?!\d)", text)]  # clause ends (not 1,000 or 2.5)

    def clause(pos):
        return bisect.bisect_left(stops, pos)

    numbers = []
    for m in _NUM.finditer(text):
        numbers.append(m)
        if len(numbers) > 64:
            return None
    freqs = []
    for m in _FREQ.finditer(text):
        freqs.append(m)
        if len(freqs) > 12:
            return None
    inside = sorted((m.start(), m.end()) for m in numbers + freqs)  # "million", "quarterly": part of a number
    starts = [a for a, _ in inside]

    def covered(pos):
        k = bisect.bisect_right(starts, pos) - 1
        return k >= 0 and pos < inside[k][1]

    words = [(m.start(), m.group(0).lower() if "_" in m.group(0) else m.group(0).lower()[:5], clause(m.start()))
             for m in re.finditer(_WORD, text) if not covered(m.start())]
    word_starts = [w[0] for w in words]
    seen = {"$": 0, "%": 0, "n": 0}
    found = []
    for m in numbers:
        value = float(m.group("num").replace(",", ""))
        if m.group("scale"):
            value *= _SCALE[m.group("scale").lower()]
        kind = "%" if m.group("pct") else "$" if m.group("cur") else "n"
        seen[kind] += 1
        if seen[kind] <= skip.get(kind, 0):
            continue
        at = bisect.bisect_left(word_starts, m.start())
        found.append((value / 100.0 if kind == "%" else value, at, clause(m.start())))
        if len(found) > 12:
            return None
    for m in freqs:
        every = m.group("every")
        if every is not None:
            count = _COUNTS.get(every.lower(), 0) if not every.isdigit() else int(every)
            if not 0 < count <= 12 or 12 % count:
                continue
            value = 12.0 / count
        else:
            value = _FREQ_VALUES[re.sub(r"[^a-z]", "", m.group(0).lower())]
        found.append((value, bisect.bisect_left(word_starts, m.start()), clause(m.start())))
    wanted = [[w.lower() if "_" in w else w.lower()[:5] for w in re.findall(_WORD, name)
               if w.lower() not in _FUNCTION_WORDS] for name in names]
    shared = {}
    for stems in wanted:
        for stem in set(stems):
            shared[stem] = shared.get(stem, 0) + 1
    pairs = []
    for i, stems in enumerate(wanted):
        for j, (_, at, part) in enumerate(found):
            score = 0.0
            for stem in stems:  # words[at - 1] is just before the number (0 away), words[at] just after (0.5)
                near = [at - k - 1 if k < at else k - at + 0.5 for k in range(max(0, at - 9), min(len(words), at + 8))
                        if words[k][1] == stem and words[k][2] == part]
                score += 1.0 / (1 + min(near)) / shared[stem] if near else 0.0  # a word of several names weighs less
            if score > 0:
                pairs.append((-score, j, i))
    pairs.sort()
    out, used = [None] * len(names), set()
    for _, j, i in pairs:
        if out[i] is None and j not in used:
            out[i] = found[j][0]
            used.add(j)
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
    "import bisect",
    "import re",
    "from decimal import Decimal, ROUND_HALF_EVEN, ROUND_HALF_UP",
    "",
    f"_NUM = re.compile({_NUM.pattern!r}, re.IGNORECASE)",
    f"_SCALE = {_SCALE!r}",
    f"_WORD = {_WORD!r}",
    f"_FREQ = re.compile({_FREQ.pattern!r}, re.IGNORECASE)",
    f"_FREQ_VALUES = {_FREQ_VALUES!r}",
    f"_COUNTS = {_COUNTS!r}",
    f"_FUNCTION_WORDS = {sorted(_FUNCTION_WORDS)!r}",
    "",
    *(inspect.getsource(f) for f in (extract_numbers, named_numbers, number_spans, fmt_number)),
])
