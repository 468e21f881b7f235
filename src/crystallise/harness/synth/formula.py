"""A formula stated in the task's own text as a prior for the arithmetic search.

Tasks often say what to compute: "Formula: Working Capital = Current Assets - Current
Liabilities". The enumerator (`enumerate.py`) searches every expression and needs enough cases
to rule the wrong ones out; with the stated formula only *which number goes where* is unknown,
so one or two cases pin it down and the held-out ones check it:

    parse_formula("... Formula: ROI = (Gain - Cost) / Cost, Explanation: ...")
      -> shape (v0 - v1) / v1 over the variables ["Gain", "Cost"]
    fit_shape(shape, terminals, targets, accept)
      -> "((d1 - d0) / d0)"      the assignment of terminals to variables every fit case agrees with

The shape is read from the part of the input every case of a template shares (its instructions),
never from one case. Only `+ - * / ^`, brackets, numbers and implicit products are read; a
formula with anything else (a sum sign, a function call, a system of equations) gives None and
the search goes on without a prior. Nothing here is evaluated as code: a shape is a small tree
of tuples, applied to numpy arrays.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["Shape", "definitions", "fit_shape", "parse_formula", "stated_formulas"]

Shape = tuple[Any, ...]  # ("var", i) | ("const", c) | ("neg", S) | (op, S, S)

_STATED = re.compile(r"(?:^|[\s:;.,])([^=:;,.]{1,60}?)\s=\s(?P<rhs>[^=]{1,200}?)"
                     r"(?:,\s|;\s|\.\s|\.?\s*$|\s[A-Z][a-z]+:)")
_TOKEN = re.compile(r"\s*([-+*/^()×÷·]|\d+(?:\.\d+)?(?![\w])|[^-+*/^()×÷·=]+)")
_OPS = {"×": "*", "·": "*", "÷": "/"}
MAX_VARIABLES = 5
MAX_DEFINED = 16  # symbol definitions read from one text
MAX_ASSIGNMENTS = 200_000


_DEFINED = re.compile(r"(?:Explanation:\s*|Where:?\s+|,\s+|;\s+)(?P<symbol>[^\s,:;=()][^,:;=()]{0,39}?):\s+")


def definitions(text: str) -> dict[str, str]:
    """What the task's text says its symbols mean, from the part after "Explanation:"
    ("R_f: Risk-free rate, β_i: Beta of the portfolio" -> {"R_f": "Risk-free rate", ...}): the
    words a stated variable's number is found by when its name is a bare symbol."""
    at = text.find("Explanation:")
    if at < 0:
        return {}
    part = text[at:]
    end = re.search(r"\.\s+[A-Z][a-z]+:|\.\s*$", part)
    part = part[: end.start()] if end else part
    marks = list(_DEFINED.finditer(part))[:MAX_DEFINED]  # the text is anyone's: a bounded list
    out: dict[str, str] = {}
    for k, m in enumerate(marks):
        meaning = part[m.end(): marks[k + 1].start() if k + 1 < len(marks) else len(part)].strip()
        symbol = m.group("symbol").strip()
        if meaning and symbol not in out:
            out[symbol] = meaning
    return out


def parse_formula(text: str) -> tuple[Shape, list[str]] | None:
    """(shape, variable names) of the first `NAME = EXPRESSION` in `text` whose left side is one name
    and whose right side reads as arithmetic over at most MAX_VARIABLES names; None otherwise.

    A variable that is a bare symbol the text defines ("Explanation: r: Annual interest rate") is
    named by its symbol and its meaning ("r: Annual interest rate"), so its number can be found by
    those words; a name that is defined symbols written together ("nt" where `n` and `t` are
    defined) is their product, as in the usual notation."""
    found = stated_formulas(text)
    return (found[0][0], found[0][1]) if found and found[0][2] else None


def stated_formulas(text: str) -> list[tuple[Shape, list[str], bool]]:
    """Every way the first stated equation of `text` computes one of its quantities from the others:
    (shape, variable names, whether it is the equation as written, `NAME = EXPRESSION`).

    "Forward Rate / Spot Rate = (1 + i_d) / (1 + i_f)" is solved for each quantity that occurs once
    (Forward Rate = Spot Rate × (1 + i_d) / (1 + i_f), Spot Rate = ..., ...): which one a question
    asks for is what the cases decide. An equation as written comes first, then its rearrangements
    (the same equation solved for a right-hand quantity: a question may give the result and ask
    for an input). Only + - × / and powers with a known exponent are undone."""
    defined = definitions(text)
    for m in _STATED.finditer(text):
        lhs, rhs = m.group(1).strip(), m.group("rhs").strip()
        if not lhs:
            continue
        written = not any(c in lhs for c in "+*^()×÷") and " / " not in lhs and " - " not in lhs
        out: list[tuple[Shape, list[str], bool]] = []
        if written:
            parsed = _parse(rhs, set(defined), limit=MAX_VARIABLES + 1)
            if parsed is None:
                continue
            if len(parsed[1]) <= MAX_VARIABLES:
                out.append((parsed[0], _named(parsed[1], defined), True))
            out += _totals(parsed[0], parsed[1], defined)
            # the result as one more quantity: rhs - result = 0 ("P/B Ratio" stays one name)
            whole: tuple[Shape, list[str]] | None = (("-", parsed[0], ("var", len(parsed[1]))), [*parsed[1], lhs])
        else:
            whole = _parse(f"({lhs}) - ({rhs})", set(defined), limit=MAX_VARIABLES + 1)
        if whole is None:
            continue
        diff, names = whole
        for k in range(len(names)):
            if _count(diff, k) != 1 or (written and k == len(names) - 1):
                continue
            solved = _solve(diff, k, ("const", 0.0))
            if solved is None:
                continue
            keep = [j for j in range(len(names)) if j != k]
            if len(keep) > MAX_VARIABLES:
                continue
            out.append((_simplify(_renumber(solved, {j: i for i, j in enumerate(keep)})),
                        _named([names[j] for j in keep], defined), False))
        if out:
            return out
    return []


def _totals(shape: Shape, names: list[str], defined: dict[str, str]) -> list[tuple[Shape, list[str], bool]]:
    """A total the question may not state, as the sum of two other quantities (of the formula, or
    defined beside it): "V: Total capital" in WACC = (E/V) × Re + (D/V) × Rd × (1 - Tc) is E + D when
    only those are given. Only a quantity whose name or meaning says "total"; which pair is what the
    cases decide."""
    out: list[tuple[Shape, list[str], bool]] = []
    unused = [d for d in defined if d not in names and _symbol(d)][:4]  # defined, not in the formula
    for h, name in enumerate(names):
        if not re.search(r"\btotal\b", f"{name} {defined.get(name, '')}", re.IGNORECASE):
            continue
        rest = [names[j] for j in range(len(names)) if j != h]
        index = {j: i for i, j in enumerate(j for j in range(len(names)) if j != h)}
        base = _renumber(shape, {**index, h: -1})
        for a, b in itertools.combinations(rest + unused, 2):
            parts = rest + [n for n in (a, b) if n not in rest]
            if len(parts) > MAX_VARIABLES:
                continue
            total = ("+", ("var", parts.index(a)), ("var", parts.index(b)))
            out.append((_substitute(base, -1, total), _named(parts, defined), False))
    return out


def _substitute(shape: Shape, k: int, by: Shape) -> Shape:
    if shape[0] == "var":
        return by if shape[1] == k else shape
    if shape[0] == "const":
        return shape
    return (shape[0], *(_substitute(s, k, by) for s in shape[1:]))


def _named(names: list[str], defined: dict[str, str]) -> list[str]:
    """Names as the program keeps them: a symbol with its meaning, at most 100 characters (what the
    interpreter reads, `programs/interp.py`), so the fit and the served program read the same words."""
    return [(f"{n}: {defined[n]}" if n in defined and _symbol(n) else n)[:100] for n in names]


def _count(shape: Shape, k: int) -> int:
    if shape[0] == "var":
        return int(shape[1] == k)
    if shape[0] == "const":
        return 0
    return sum(_count(s, k) for s in shape[1:])


def _solve(side: Shape, k: int, other: Shape) -> Shape | None:
    """`side = other` solved for variable k (which occurs once in `side`), by undoing each operation
    on the path to it; None where that needs an inverse this grammar lacks (k in an exponent)."""
    while side[0] != "var":
        op = side[0]
        if op == "neg":
            side, other = side[1], ("neg", other)
            continue
        a, b = side[1], side[2]
        left = _count(a, k) == 1
        if op == "+":
            side, other = (a, ("-", other, b)) if left else (b, ("-", other, a))
        elif op == "-":
            side, other = (a, ("+", other, b)) if left else (b, ("-", a, other))
        elif op == "*":
            side, other = (a, ("/", other, b)) if left else (b, ("/", other, a))
        elif op == "/":
            side, other = (a, ("*", other, b)) if left else (b, ("/", a, other))
        elif op == "**" and left and _count(b, k) == 0:
            side, other = a, ("**", other, ("/", ("const", 1.0), b))
        else:
            return None
    return other if side == ("var", k) else None


def _simplify(shape: Shape) -> Shape:
    """Drop the zero that solving `expression = 0` leaves (0 + x, x - 0, 0 - x)."""
    if shape[0] in ("var", "const"):
        return shape
    kids = [_simplify(s) for s in shape[1:]]
    zero = ("const", 0.0)
    if shape[0] == "+" and zero in kids:
        return kids[1] if kids[0] == zero else kids[0]
    if shape[0] == "-" and kids[1] == zero:
        return kids[0]
    if shape[0] == "-" and kids[0] == zero:
        return ("neg", kids[1])
    return (shape[0], *kids)


def _renumber(shape: Shape, index: dict[int, int]) -> Shape:
    if shape[0] == "var":
        return ("var", index[shape[1]])
    if shape[0] == "const":
        return shape
    return (shape[0], *(_renumber(s, index) for s in shape[1:]))


def _symbol(name: str) -> bool:
    """A bare symbol ("r", "R_f", "PV"), not a name in words ("EBITDA", "Net Income")."""
    return "_" in name or re.search(r"[A-Za-z]{3,}", name) is None


def _split_symbols(name: str, symbols: set[str]) -> list[str] | None:
    """`name` as two to four defined symbols written together ("nt" -> ["n", "t"]); None otherwise.
    Short names only, and at most four parts: the text (and so the symbol list) is anyone's."""
    if name in symbols or " " in name or len(name) > 12:
        return None
    ways = [(name[:a], name[a:b], name[b:c], name[c:]) for a in range(1, len(name)) for b in range(a, len(name) + 1)
            for c in range(b, len(name) + 1)]
    for parts in sorted(ways, key=lambda w: sum(1 for p in w if p)):
        used = [p for p in parts if p]
        if len(used) >= 2 and all(p in symbols for p in used) and "".join(used) == name:
            return used
    return None


def _parse(rhs: str, symbols: set[str] | frozenset[str] = frozenset(),
           limit: int = MAX_VARIABLES) -> tuple[Shape, list[str]] | None:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(rhs):
        m = _TOKEN.match(rhs, pos)
        if m is None or m.end() == pos:
            return None
        t = m.group(1).strip()
        pos = m.end()
        if not t:
            continue
        t = _OPS.get(t, t)
        if t in "+-*/^()":
            tokens.append(("op", t))
        elif re.fullmatch(r"\d+(?:\.\d+)?", t):
            tokens.append(("num", t))
        elif re.search(r"[\[\]{}∑Σ∫√|<>]", t) or re.search(r"\b(?:Cov|Var|ln|log|exp|sum|max|min)\b", t):
            return None  # sums, functions, sets: not plain arithmetic
        else:
            tokens.append(("var", " ".join(t.split())))
    names: list[str] = []
    i = 0

    def peek() -> tuple[str, str] | None:
        return tokens[i] if i < len(tokens) else None

    def expr() -> Shape:
        nonlocal i
        left = term()
        while (t := peek()) is not None and t in (("op", "+"), ("op", "-")):
            i += 1
            left = (t[1], left, term())
        return left

    def term() -> Shape:
        nonlocal i
        left = factor()
        while (t := peek()) is not None:
            if t in (("op", "*"), ("op", "/")):
                i += 1
                left = (t[1], left, factor())
            elif t[0] in ("var", "num") or t == ("op", "("):  # an implicit product: "β (r_m - r_f)"
                left = ("*", left, factor())
            else:
                break
        return left

    def factor() -> Shape:
        nonlocal i
        base = unary()
        if peek() == ("op", "^"):
            i += 1
            return ("**", base, factor())
        return base

    def unary() -> Shape:
        nonlocal i
        t = peek()
        if t == ("op", "-"):
            i += 1
            return ("neg", unary())
        if t == ("op", "("):
            i += 1
            inner = expr()
            if peek() != ("op", ")"):
                raise ValueError("unbalanced")
            i += 1
            return inner
        if t is None or t[0] == "op":
            raise ValueError("operand expected")
        i += 1
        if t[0] == "num":
            return ("const", float(t[1]))
        parts = _split_symbols(t[1], set(symbols)) or [t[1]]
        out: Shape | None = None
        for part in parts:
            if part not in names:
                names.append(part)
            out = ("var", names.index(part)) if out is None else ("*", out, ("var", names.index(part)))
        assert out is not None
        return out

    try:
        shape = expr()
    except ValueError:
        return None
    if i != len(tokens) or not names or len(names) > limit:
        return None
    return shape, names


def variants(shape: Shape) -> list[Shape]:
    """The shape, and the shape without a final scaling by a power of ten (a percentage may be
    asked for as a fraction: `(a / b) × 100` answered as `a / b`)."""
    out = [shape]
    if shape[0] in ("*", "/"):
        for keep, other in ((shape[1], shape[2]), (shape[2], shape[1])):
            if other[0] == "const" and other[1] in (100.0, 1000.0) and (shape[0] == "*" or keep is shape[1]):
                out.append(keep)
    return out


def _eval(shape: Shape, holes: Sequence[np.ndarray]) -> np.ndarray:
    kind = shape[0]
    if kind == "var":
        return holes[shape[1]]
    if kind == "const":
        return np.asarray(shape[1])
    if kind == "neg":
        return -_eval(shape[1], holes)
    a, b = _eval(shape[1], holes), _eval(shape[2], holes)
    with np.errstate(all="ignore"):
        if kind == "+":
            return a + b
        if kind == "-":
            return a - b
        if kind == "*":
            return a * b
        if kind == "/":
            return a / b
        return np.where(np.abs(b) <= 400, np.power(np.abs(a), b) * np.where(a < 0, np.nan, 1.0), np.nan)


def source(shape: Shape, names: Sequence[str]) -> str:
    """The shape with terminal names in its holes, in the enumerator's grammar (`arith.expr_tree`)."""
    kind = shape[0]
    if kind == "var":
        return names[shape[1]]
    if kind == "const":
        return repr(float(shape[1]))
    if kind == "neg":
        return f"(0.0 - {source(shape[1], names)})"
    op = shape[0]
    return f"({source(shape[1], names)} {op} {source(shape[2], names)})"


def fit_shape(shape: Shape, n_vars: int, terminals: dict[str, Sequence[float]], targets: Sequence[float | None],
              accept: Callable[[np.ndarray], bool], tolerance: float = 0.0051,
              symbols: Sequence[bool] = ()) -> str | None:
    """The first assignment of distinct terminals to the shape's variables (positions before ranks)
    that reproduces every target within `tolerance` and that `accept` takes; None when none does.

    A variable's own named number (`v<h>` for variable h) fills only its slot. Where `symbols[h]`
    says variable h is a symbol the task defines ("R_f: Risk-free rate"), its named number comes
    before the positions: texts that label numbers with symbols reorder them freely. Names in plain
    words ("Net Income") are weaker evidence than a position both explain, and come after."""
    y = np.asarray([t if t is not None else np.nan for t in targets], dtype=float)
    if y.size == 0 or not np.all(np.isfinite(y)):
        return None
    # positions (d0) first, then the numbers found by the variables' names (v0), then ranks (D0)
    names = sorted(terminals, key=lambda n: (n[0].isupper(), n[0] == "v", n))
    if len(names) ** n_vars > MAX_ASSIGNMENTS:
        names = [n for n in names if n[0].islower()]
        if len(names) ** n_vars > MAX_ASSIGNMENTS:
            return None
    rows = np.asarray([terminals[n] for n in names], dtype=float)  # (T, m)
    # a variable's own named number (v<h>) fills only its own slot; a defined symbol's comes first
    slots = [[j for j, n in enumerate(names) if n[0] != "v" or n == f"v{h}"] for h in range(n_vars)]
    own = {names.index(f"v{h}"): h for h in range(n_vars) if f"v{h}" in names}
    found = [c for c in itertools.product(*slots) if len({tuple(rows[j]) for j in c}) == n_vars]
    found.sort(key=lambda c: -sum(own.get(j) == h and h < len(symbols) and symbols[h] for h, j in enumerate(c)))
    combos = np.asarray(found, dtype=int).reshape(-1, n_vars)
    if combos.size == 0:
        return None
    for variant in variants(shape):
        values = _eval(variant, [rows[combos[:, h]] for h in range(n_vars)])
        values = np.broadcast_to(values, (combos.shape[0], y.size))
        close = np.all(np.abs(values - y) <= tolerance + 1e-9 * np.abs(y), axis=1)
        for k in np.nonzero(close)[0][:50]:
            if accept(values[k]):
                return source(variant, [names[j] for j in combos[k]])
    return None
