"""The grammar of the string synthesiser: which expressions of each cost exist.

`grow(search, grammar, c)` emits every expression of cost `c`, built from kept expressions of
lower cost, so the bank fills smallest first. An expression costs its operator's cost (in
brackets) plus its children's; arguments and small int constants cost 1:

    str   lower/upper/title/cap/trim/rev/month/mon/pad/unpad(s) [1] · tok(s, T, k) [2]
          field(s, sep, k) [2] · span(s, p, q), rest(s, p) [1 + positions] · keep/drop(s, T) [2]
          replace(s, a, b) [2] · join(s, T, sep) [3] · text(i) [1] · fmt(i, spec) [2]
    int   length(s|x) [1] · ntok(s, T) [2] · count(s, t) [1] · find(s, t, k) [2] · num(s) [1]
          at(s, T, k, side) [2] · add/sub/mul(a, b) [1] · elem(x, i) [1] · total/most/least(x) [1]
    bool  contains/prefix/suffix/eq(s, t) [1] · has(s, T) [2] · lt/eq(a, b) [1] · not_/and_/or_ [1]
    list  rev/sort/sortd/uniq(x) [1] · take/skip/only/rot/stretch/stride(x, i) [1] · filt(x, op, k) [2]
          mapadd/mapmul/addidx(x, k) [1] · append/prepend(x, v) [1] · lcat(x, y) [1]
          single/upto(v) [1] · repeat(v, n) [1] · insert/setat(x, i, v) [1] · delat(x, i) [1]
          swap(x, i, j) [1]

T ranges over token classes (WORD, DIGITS, ...), the punctuation characters of the inputs,
text every input of an argument shares ("=//", " Inc") and the other string arguments; k over
0, 1, 2, 3, -1, -2, -3 and, for an int argument n, n - 1, -n and n. Positions p, q: 0 and the
end (cost 0), start/end of the k-th match of T and int arguments (cost 1), small constants
(cost 1.2: they generalise worse). Extraction operators apply only to cheap children (the
arguments, their case changes, a token), which keeps the bank small. Concatenation is not
enumerated here: `strings_concat.py` assembles outputs from these pieces.

    "John Smith": tok(x0, WORD, 1) -> "Smith" (cost 3); upper(span(x0, 0, 1)) -> "J" (cost 4.2)
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from crystallise.harness.synth import strings_runtime as rt
from crystallise.harness.synth.strings_search import Expr, Search

__all__ = ["Grammar", "grow"]

STRUCT_MAX = 3  # extraction operators apply to children up to this cost (args, case(arg), tok(arg))
UNARY_MAX = 7
INT_KID_MAX = 4
MAX_POSITIONS = 120
KS = (0, -1, 1, 2, -2, 3, -3)  # first, last, ...: where several fit the examples, the earlier one is kept
CONST_POS = 1.2  # a constant position (other than 0 and the end) generalises worse than a token one
FILTER_OPS = (">", "<", "==", "!=", ">=", "<=", "%", "!%")
FORMATS = (",", "02d", "03d", "04d", "05d", ".1f", ".2f", "+d")


@dataclass
class Grammar:
    """Operator parameters derived from the examples: tokens, indexes, characters, constants."""

    search: Search
    args: list[Expr] = field(default_factory=list)
    tokens: list[Expr] = field(default_factory=list)  # regex params (general classes, chars, esc(arg))
    ks: list[Expr] = field(default_factory=list)  # k-th match / field indexes
    in_chars: list[str] = field(default_factory=list)
    common: list[str] = field(default_factory=list)  # substrings (2+ chars) every input of an argument has
    out_chars: list[str] = field(default_factory=list)
    types: set[str] = field(default_factory=set)  # types the search builds
    _positions: dict[int, list[Expr]] = field(default_factory=dict)

    @classmethod
    def of(cls, s: Search) -> Grammar:
        g = cls(s)
        m = s.m
        g.args = [Expr.leaf(f"x{i}", tuple(inp[i] for inp in s.inputs), t or "none", 1)
                  for i, t in enumerate(s.arg_types)]
        strs = [v for a in g.args if a.type == "str" for v in a.value]
        chars = Counter(ch for v in strs for ch in v if not ch.isalnum() and ch not in " \t")
        g.in_chars = [ch for ch, _ in chars.most_common(12)]
        outs = [o for o in s.outputs if type(o) is str]
        ochars = Counter(ch for o in outs for ch in o if not ch.isalnum())
        g.out_chars = ["", " "] + [ch for ch, _ in ochars.most_common(8) if ch != " "]
        g.tokens = [Expr.leaf(name, (getattr(rt, name),) * m) for name in rt.TOKENS]
        for a in g.args:
            if a.type == "str":
                g.common += [t for t in _common_substrings(a.value) if t not in g.common]
        g.tokens += [Expr.leaf(repr(re.escape(t)), (re.escape(t),) * m) for t in g.common + g.in_chars]
        for a in g.args:
            if a.type == "str":
                g.tokens.append(Expr("esc", (a,), tuple(rt.esc(v) for v in a.value), "param", 0))
        g.ks = [Expr.leaf(str(k), (k,) * m) for k in KS]
        for a in g.args:
            if a.type == "int":
                g.ks += [Expr.leaf(f"{a.src} - 1", tuple(v - 1 for v in a.value), "param", 1),
                         Expr.leaf(f"-{a.src}", tuple(-v for v in a.value), "param", 1), a]
        arg_types = {a.type for a in g.args}
        g.types = {s.out_type or "str"} | ({"str"} & arg_types) | ({"list"} & arg_types)
        if s.out_type in ("int", "bool", "list") or "int" in arg_types:
            g.types.add("int")
        if s.out_type == "str" and any(  # numbers written as text: "7" -> "007", "1234" -> "1,234"
                a.type == "str" and all(re.search("[0-9]", v) for v in a.value) for a in g.args) and all(
                re.search("[0-9]", o) for o in outs):
            g.types.add("int")
        return g

    def tokens_for(self, s: Expr) -> Iterator[Expr]:
        """Token params with a match in `s` on some example (the others would be all-None)."""
        for t in self.tokens:
            self.search.check_time()  # each test scans every example: long texts take a while
            if any(isinstance(v, str) and isinstance(r, str) and r and rt.spans(v, r)
                   for v, r in zip(s.value, t.value)):
                yield t

    def positions(self, s: Expr) -> list[Expr]:
        """Distinct positions in `s` (by their absolute value on each example), cheapest first."""
        if id(s) in self._positions:
            return self._positions[id(s)]
        m = self.search.m
        cands: list[Expr] = [Expr.leaf("0", (0,) * m), Expr.leaf("None", (None,) * m, "end")]
        for t in self.tokens_for(s):  # (tokens_for checks the deadline per token)
            for k in self.ks[:len(KS)]:
                for side in (0, 1):
                    vals = tuple(rt.at(v, r, kk, side) for v, r, kk in zip(s.value, t.value, k.value))
                    cands.append(Expr("at", (s, t, k, Expr.leaf(str(side), (side,) * m)), vals, "param", 1))
        cands += [Expr.leaf(str(k), (k,) * m, "param", CONST_POS) for k in (1, 2, 3, -1, -2, -3)]
        cands += [Expr(k.fn, k.kids, k.value, "param", 1, k.src) for k in self.ks[len(KS):]]
        out, seen = [], set()
        for p in cands:
            absolute = tuple(_absolute(v, p.value[e], p.type == "end") for e, v in enumerate(s.value))
            if all(a is None for a in absolute) or absolute in seen:
                continue
            seen.add(absolute)
            out.append(p)
        out = out[:MAX_POSITIONS]  # long texts: the cheapest positions only
        self._positions[id(s)] = out
        return out


def _common_substrings(values: tuple[object, ...], most: int = 4) -> list[str]:
    """Maximal substrings of 2+ characters found in every value, longest first: constant parts
    of the input format ("=//", " Inc", "that"), usable as delimiters like punctuation. None with
    a digit: "-000" common to "INV-000482" and "CUST-00057" is a coincidence of the values."""
    texts = [v for v in values if isinstance(v, str)]
    if len(texts) < 2 or len(texts) != len(values):
        return []
    base = min(texts, key=len)[:80]
    found = {base[i:j] for i in range(len(base)) for j in range(i + 2, len(base) + 1)
             if all(base[i:j] in t for t in texts)}
    kept: list[str] = []
    for t in sorted(found, key=lambda t: (-len(t), t)):
        if t.strip() and not any(t in u for u in kept) and not any(ch.isdigit() for ch in t):
            kept.append(t)
            if len(kept) == most:
                break
    return kept


def _absolute(s: object, p: object, end: bool) -> int | None:
    if not isinstance(s, str):
        return None
    n = len(s)
    if end:
        return n
    if type(p) is not int:
        return None
    p = p + n if p < 0 else p
    return p if 0 <= p <= n else None


# -- the generators --------------------------------------------------------------------------------


def grow(s: Search, g: Grammar, c: int, types: set[str] | None = None) -> None:
    """Emit every expression of cost `c` and of `types` (default: the grammar's) into the bank
    (raises Found / OutOfTime)."""
    types = g.types if types is None else types
    if c == 1:
        _terminals(s, g)
        return
    if c == 2:
        _constants(s, g)
    if "str" in types:
        _strings(s, g, c)
    if "int" in types:
        _ints(s, g, c)
    if "bool" in types:
        _bools(s, g, c)
    if "list" in types:
        _lists(s, g, c)


def _terminals(s: Search, g: Grammar) -> None:
    for a in g.args:
        if a.type in g.types:
            s.add(a)
    m = s.m
    if s.out_type in ("int", "list") or "list" in g.types:
        nums = [0, 1, 2, 3, -1]
        if s.out_type == "list":
            nums += _list_numbers(s, g)
        for k in dict.fromkeys(nums):
            s.add(Expr.leaf(repr(k), (k,) * m, "int", 1, const=True))
    if s.out_type == "bool" or "bool" in g.types:
        for b in (True, False):
            s.add(Expr.leaf(repr(b), (b,) * m, "bool", 1, const=True))


def _list_numbers(s: Search, g: Grammar) -> list[int]:
    """Int constants a list function may need, read off the examples: small indexes, numbers
    the outputs have more of than the inputs ("append 7"), a constant output length or
    length change ("repeat ten times")."""
    nums = [4, 5, 6, -2]
    lists = [a for a in g.args if a.type == "list"]
    extra: Counter[int] = Counter()
    for e, out in enumerate(s.outputs):
        have = Counter(v for a in lists for v in a.value[e])
        extra.update(v for v, n in Counter(out).items() if n > have[v])
    nums += [v for v, _ in extra.most_common(6)]
    lengths = {len(o) for o in s.outputs}
    if len(lengths) == 1:
        nums += list(lengths)
    if lists:
        deltas = {len(o) - len(lists[0].value[e]) for e, o in enumerate(s.outputs)}
        if len(deltas) == 1:
            nums += [abs(d) for d in deltas]
    return nums


def _constants(s: Search, g: Grammar) -> None:
    """String constants for needles and comparisons: input characters and, for int/bool
    outputs, the words of the inputs."""
    if "str" not in g.types:
        return
    m = s.m
    words: list[str] = [" "] + g.in_chars
    if s.out_type in ("int", "bool") or "bool" in g.types:
        counts = Counter(w for a in g.args if a.type == "str" for v in a.value for w in set(re.findall(rt.ALNUM, v)))
        words += [w for w, _ in counts.most_common(24)]
    for w in dict.fromkeys(words):
        s.add(Expr.leaf(repr(w), (w,) * m, "str", 2, const=True))


def _kids(s: Search, type_: str, cost: int, limit: int, consts: bool = False) -> list[Expr]:
    if cost < 1 or cost > limit:
        return []
    return [e for e in s.at(type_, cost) if consts or not e.const]


def _strings(s: Search, g: Grammar, c: int) -> None:
    m = s.m
    for fn in ("lower", "upper", "title", "cap", "trim", "rev", "month", "mon", "pad", "unpad"):
        for a in _kids(s, "str", c - 1, UNARY_MAX):
            s.emit(fn, (a,), "str", 1)
    for a in _kids(s, "str", c - 2, STRUCT_MAX):
        # Emitted first is kept where several agree on the examples: a field between punctuation
        # ("/usr/bin/x.py" split on "/", "Boston, MA" on ", ") reads a delimited column better than a
        # word token does, while tokens beat fields split on blanks (a one-word input has no blank).
        marks = [t for t in g.common if not any(ch.isalnum() for ch in t)]  # ", " in "Boston, MA"
        _fields(s, g, a, marks + g.in_chars)
        for t in g.tokens_for(a):
            for k in g.ks:
                s.emit("tok", (a, t, k), "str", 2)
        _fields(s, g, a, [" "] + [t for t in g.common if t not in marks])
        for t in g.tokens_for(a):
            s.emit("keep", (a, t), "str", 2)
            s.emit("drop", (a, t), "str", 2)
        olds = [Expr.leaf(repr(ch), (ch,) * m) for ch in [" "] + g.common + g.in_chars]
        olds += [b for b in g.args if b.type == "str" and b is not a]
        for old in olds:
            if not any(isinstance(v, str) and isinstance(o, str) and o and o in v for v, o in zip(a.value, old.value)):
                continue
            for new in g.out_chars:
                if new != old.value[0]:
                    s.emit("replace", (a, old, Expr.leaf(repr(new), (new,) * m)), "str", 2)
    for a in _kids(s, "str", c - 3, STRUCT_MAX):
        for t in g.tokens_for(a):
            for glue in g.out_chars:
                s.emit("join", (a, t, Expr.leaf(repr(glue), (glue,) * m)), "str", 3)
    for a in s.upto("str", STRUCT_MAX):
        if a.const or not c - 1 - a.cost >= 0:
            continue
        pos = g.positions(a)
        for p in pos:
            for q in pos:
                cost = 1 + a.cost + p.cost + q.cost
                if int(cost + 1e-9) != c or q is p or (q.type == "end" and p.src == "0"):
                    continue
                if q.type == "end":
                    s.emit("rest", (a, p), "str", 1)
                elif p.type != "end":
                    s.emit("span", (a, p, q), "str", 1)
    for i in _kids(s, "int", c - 1, INT_KID_MAX):
        s.emit("text", (i,), "str", 1)
    for i in _kids(s, "int", c - 2, INT_KID_MAX):
        for spec in FORMATS:
            s.emit("fmt", (i, Expr.leaf(repr(spec), (spec,) * m)), "str", 2)


def _fields(s: Search, g: Grammar, a: Expr, seps: list[str]) -> None:
    for ch in seps:
        if any(isinstance(v, str) and ch in v for v in a.value):
            sep = Expr.leaf(repr(ch), (ch,) * s.m)
            for k in g.ks:
                s.emit("field", (a, sep, k), "str", 2)


def _ints(s: Search, g: Grammar, c: int) -> None:
    m = s.m
    for a in _kids(s, "str", c - 1, UNARY_MAX) + _kids(s, "list", c - 1, UNARY_MAX):
        s.emit("length", (a,), "int", 1)
    for a in _kids(s, "str", c - 1, 5):
        s.emit("num", (a,), "int", 1)
    for a in _kids(s, "str", c - 2, STRUCT_MAX):
        for t in g.tokens_for(a):
            s.emit("ntok", (a, t), "int", 2)
            for k in g.ks:
                for side in (0, 1):
                    s.emit("at", (a, t, k, Expr.leaf(str(side), (side,) * m)), "int", 2)
    for ca in range(1, c - 1):
        for a in _kids(s, "str", ca, STRUCT_MAX):
            for t in _kids(s, "str", c - 1 - ca, 2, consts=True):
                if t is not a:
                    s.emit("count", (a, t), "int", 1)
        for a in _kids(s, "str", ca, STRUCT_MAX):
            for t in _kids(s, "str", c - 2 - ca, 2, consts=True):
                if t is not a:
                    for k in g.ks:
                        s.emit("find", (a, t, k), "int", 2)
    for x in _kids(s, "list", c - 1, UNARY_MAX):
        for fn in ("total", "most", "least"):
            s.emit(fn, (x,), "int", 1)
    for ca in range(1, c - 1):
        for x in _kids(s, "list", ca, UNARY_MAX):
            for i in _kids(s, "int", c - 1 - ca, 3, consts=True):
                s.emit("elem", (x, i), "int", 1)
    for ca in range(1, c - 1):
        cb = c - 1 - ca
        for a in _kids(s, "int", ca, INT_KID_MAX, consts=True):
            for b in _kids(s, "int", cb, INT_KID_MAX, consts=True):
                if a.const and b.const:
                    continue
                if ca <= cb:
                    s.emit("add", (a, b), "int", 1)
                    s.emit("mul", (a, b), "int", 1)
                s.emit("sub", (a, b), "int", 1)


def _bools(s: Search, g: Grammar, c: int) -> None:
    for ca in range(1, c - 1):
        for a in _kids(s, "str", ca, STRUCT_MAX):
            for t in _kids(s, "str", c - 1 - ca, STRUCT_MAX, consts=True):
                if t is a:
                    continue
                for fn in ("contains", "prefix", "suffix", "eq"):
                    s.emit(fn, (a, t), "bool", 1)
    for a in _kids(s, "str", c - 2, STRUCT_MAX):
        for t in g.tokens_for(a):
            s.emit("has", (a, t), "bool", 2)
    for ca in range(1, c - 1):
        for a in _kids(s, "int", ca, 3, consts=True):
            for b in _kids(s, "int", c - 1 - ca, 3, consts=True):
                if not (a.const and b.const):
                    s.emit("lt", (a, b), "bool", 1)
                    if ca <= c - 1 - ca:
                        s.emit("eq", (a, b), "bool", 1)
    for a in _kids(s, "bool", c - 1, 6):
        s.emit("not_", (a,), "bool", 1)
    for ca in range(1, c - 1):
        for a in _kids(s, "bool", ca, 6):
            for b in _kids(s, "bool", c - 1 - ca, 6):
                if ca < c - 1 - ca or (ca == c - 1 - ca and id(a) < id(b)):
                    s.emit("and_", (a, b), "bool", 1)
                    s.emit("or_", (a, b), "bool", 1)


def _lists(s: Search, g: Grammar, c: int) -> None:
    m = s.m
    for x in _kids(s, "list", c - 1, UNARY_MAX):
        for fn in ("rev", "sort", "sortd", "uniq"):
            s.emit(fn, (x,), "list", 1)
    for i in _kids(s, "int", c - 1, INT_KID_MAX, consts=True):
        s.emit("single", (i,), "list", 1)
        s.emit("upto", (i,), "list", 1)
    for ca in range(1, c - 1):
        cb = c - 1 - ca
        for x in _kids(s, "list", ca, UNARY_MAX):
            for fn in ("take", "skip", "only", "rot", "mapadd", "mapmul", "addidx", "append", "prepend", "delat",
                       "stretch", "stride"):  # total operators first: on a tie they are kept
                for i in _kids(s, "int", cb, 3, consts=True):
                    s.emit(fn, (x, i), "list", 1)
            for y in _kids(s, "list", cb, UNARY_MAX):
                s.emit("lcat", (x, y), "list", 1)
        for v in _kids(s, "int", ca, 3, consts=True):
            for n in _kids(s, "int", cb, 3, consts=True):
                s.emit("repeat", (v, n), "list", 1)
    for ca in range(1, c - 2):
        for x in _kids(s, "list", ca, UNARY_MAX):
            for k in _kids(s, "int", c - 2 - ca, 3, consts=True):
                for op in FILTER_OPS:
                    s.emit("filt", (x, Expr.leaf(repr(op), (op,) * m), k), "list", 2)
    for cx in range(1, c - 2):
        for x in _kids(s, "list", cx, 4):
            for ci in range(1, c - 1 - cx):
                cv = c - 1 - cx - ci
                for i in _kids(s, "int", ci, 2, consts=True):
                    for v in _kids(s, "int", cv, 3, consts=True):
                        s.emit("insert", (x, i, v), "list", 1)
                        s.emit("setat", (x, i, v), "list", 1)
                        if ci <= cv and i is not v:
                            s.emit("swap", (x, i, v), "list", 1)

