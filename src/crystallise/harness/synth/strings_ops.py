"""The grammar of the string synthesiser: which expressions of each cost exist.

`grow(search, grammar, c)` emits every expression of cost exactly `c` (cost = operators +
leaves, roughly), built from kept expressions of lower cost, so the bank fills smallest
first. Operator families, by output type (op cost in brackets):

    str   x_i [1] · lower/upper/title/cap/trim/rev(s) [1] · tok(s, T, k) [2] · field(s, sep, k) [2]
          span(s, p, q) [1 + position costs] · keep/drop(s, T) [2] · replace(s, a, b) [2]
          join(s, T, sep) [3] · text(i) [1] · fmt(i, spec) [2]
    int   x_i, 0..3 [1] · length(s|x) [1] · ntok(s, T) [2] · count(s, t) [1] · find(s, t, k) [2]
          at(s, T, k, side) [2] · num(s) [1] · add/sub/mul(a, b) [1] · elem(x, i) [1] · total/most/least(x) [1]
    bool  contains/prefix/suffix/eq(s, t) [1] · has(s, T) [2] · lt/eq(a, b) [1] · not_/and_/or_ [1]
    list  x_i [1] · rev/sort/sortd/uniq(x) [1] · take/skip/only/rot(x, i) [1] · mapadd/mapmul/addidx(x, k) [1]
          filt(x, op, k) [2] · append/prepend(x, v) [1] · lcat(x, y) [1] · single/upto(v) [1]
          repeat(v, n) [1] · insert/setat(x, i, v) [1] · delat(x, i) [1] · swap(x, i, j) [1]

T ranges over token classes (WORD, DIGITS, ...), the punctuation characters of the inputs
and the other string arguments; k over 0, 1, 2, 3, -1, -2, -3 and, for an int argument n,
n - 1, -n and n. Positions p, q of `span`: 0 and the end (cost 0), start/end of the k-th
match of T, small constants and int arguments (cost 1). Concatenation is not enumerated
here: `strings_concat.py` assembles outputs from these pieces.
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
KS = (0, 1, 2, -1, -2, 3, -3)
CONST_POS = 1.2  # a constant position (other than 0 and the end) generalises worse than a token one
FILTER_OPS = (">", "<", "==", "!=", ">=", "<=", "%", "!%")
FORMATS = (",", "02d", "03d", "04d", "05d", ".1f", ".2f", "+d")
_ALNUM = re.compile("[A-Za-z0-9]")


@dataclass
class Grammar:
    """Operator parameters derived from the examples: tokens, indexes, characters, constants."""

    search: Search
    args: list[Expr] = field(default_factory=list)
    tokens: list[Expr] = field(default_factory=list)  # regex params (general classes, chars, esc(arg))
    ks: list[Expr] = field(default_factory=list)  # k-th match / field indexes
    in_chars: list[str] = field(default_factory=list)
    out_chars: list[str] = field(default_factory=list)
    types: set[str] = field(default_factory=set)  # types the search builds
    _positions: dict[int, list[Expr]] = field(default_factory=dict)

    @classmethod
    def of(cls, s: Search, *, predicates: bool = False) -> Grammar:
        g = cls(s)
        m = s.m
        g.args = [Expr.leaf(f"x{i}", tuple(inp[i] for inp in s.inputs), t or "none", 1)
                  for i, t in enumerate(s.arg_types)]
        strs = [v for a in g.args if a.type == "str" for v in a.value]
        chars = Counter(ch for v in strs for ch in v if not _ALNUM.match(ch) and ch not in " \t")
        g.in_chars = [ch for ch, _ in chars.most_common(12)]
        outs = [o for o in s.outputs if type(o) is str]
        ochars = Counter(ch for o in outs for ch in o if not _ALNUM.match(ch))
        g.out_chars = ["", " "] + [ch for ch, _ in ochars.most_common(8) if ch != " "]
        g.tokens = [Expr.leaf(name, (getattr(rt, name),) * m) for name in rt.TOKENS]
        g.tokens += [Expr.leaf(repr(re.escape(ch)), (re.escape(ch),) * m) for ch in g.in_chars]
        for a in g.args:
            if a.type == "str":
                g.tokens.append(Expr("esc", (a,), tuple(rt.esc(v) for v in a.value), "param", 0))
        g.ks = [Expr.leaf(str(k), (k,) * m) for k in KS]
        for a in g.args:
            if a.type == "int":
                g.ks += [Expr.leaf(f"{a.src} - 1", tuple(v - 1 for v in a.value)),
                         Expr.leaf(f"-{a.src}", tuple(-v for v in a.value)), a]
        arg_types = {a.type for a in g.args}
        g.types = {s.out_type or "str"} | ({"str"} & arg_types) | ({"list"} & arg_types)
        if s.out_type in ("int", "bool", "list") or "int" in arg_types:
            g.types.add("int")
        if predicates:
            g.types |= {"bool", "int"} if "str" not in arg_types else {"bool"}
        return g

    def tokens_for(self, s: Expr) -> Iterator[Expr]:
        """Token params with a match in `s` on some example (the others would be all-None)."""
        for t in self.tokens:
            if any(isinstance(v, str) and isinstance(r, str) and r and rt.spans(v, r)
                   for v, r in zip(s.value, t.value)):
                yield t

    def positions(self, s: Expr) -> list[Expr]:
        """Distinct positions in `s` (by their absolute value on each example), cheapest first."""
        if id(s) in self._positions:
            return self._positions[id(s)]
        m = self.search.m
        cands: list[Expr] = [Expr.leaf("0", (0,) * m), Expr.leaf("None", (None,) * m, "end")]
        for t in self.tokens_for(s):
            for k in self.ks[:7]:
                for side in (0, 1):
                    vals = tuple(rt.at(v, r, kk, side) for v, r, kk in zip(s.value, t.value, k.value))
                    cands.append(Expr("at", (s, t, k, Expr.leaf(str(side), (side,) * m)), vals, "param", 1))
        cands += [Expr.leaf(str(k), (k,) * m, "param", CONST_POS) for k in (1, 2, 3, -1, -2, -3)]
        cands += [Expr(k.fn, k.kids, k.value, "param", 1, k.src) for k in self.ks[7:]]
        out, seen = [], set()
        for p in cands:
            absolute = tuple(_absolute(v, p.value[e], p.type == "end") for e, v in enumerate(s.value))
            if all(a is None for a in absolute) or absolute in seen:
                continue
            seen.add(absolute)
            out.append(p)
        self._positions[id(s)] = out
        return out


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


def grow(s: Search, g: Grammar, c: int) -> None:
    """Emit every expression of cost `c` into the bank (raises Found / OutOfTime)."""
    if c == 1:
        _terminals(s, g)
        return
    if c == 2:
        _constants(s, g)
    if "str" in g.types:
        _strings(s, g, c)
    if "int" in g.types:
        _ints(s, g, c)
    if "bool" in g.types:
        _bools(s, g, c)
    if "list" in g.types:
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
    if s.out_type == "list" and len(set(s.target)) == 1:
        s.add(Expr.leaf(repr(list(s.target[0])), s.target, "list", 1, const=True))


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
    for fn in ("lower", "upper", "title", "cap", "trim", "rev"):
        for a in _kids(s, "str", c - 1, UNARY_MAX):
            s.emit(fn, (a,), "str", c)
    for a in _kids(s, "str", c - 2, STRUCT_MAX):
        for t in g.tokens_for(a):
            for k in g.ks:
                s.emit("tok", (a, t, k), "str", c)
        for ch in [" "] + g.in_chars:
            if any(isinstance(v, str) and ch in v for v in a.value):
                sep = Expr.leaf(repr(ch), (ch,) * m)
                for k in g.ks:
                    s.emit("field", (a, sep, k), "str", c)
        for t in g.tokens_for(a):
            s.emit("keep", (a, t), "str", c)
            s.emit("drop", (a, t), "str", c)
        olds = [Expr.leaf(repr(ch), (ch,) * m) for ch in [" "] + g.in_chars]
        olds += [b for b in g.args if b.type == "str" and b is not a]
        for old in olds:
            if not any(isinstance(v, str) and isinstance(o, str) and o and o in v for v, o in zip(a.value, old.value)):
                continue
            for new in g.out_chars:
                if new != old.src.strip("'"):
                    s.emit("replace", (a, old, Expr.leaf(repr(new), (new,) * m)), "str", c)
    for a in _kids(s, "str", c - 3, STRUCT_MAX):
        for t in g.tokens_for(a):
            for sep in g.out_chars:
                s.emit("join", (a, t, Expr.leaf(repr(sep), (sep,) * m)), "str", c)
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
                    s.emit("rest", (a, p), "str", cost)
                elif p.type != "end":
                    s.emit("span", (a, p, q), "str", cost)
    for i in _kids(s, "int", c - 1, INT_KID_MAX):
        s.emit("text", (i,), "str", c)
    for i in _kids(s, "int", c - 2, INT_KID_MAX):
        for spec in FORMATS:
            s.emit("fmt", (i, Expr.leaf(repr(spec), (spec,) * m)), "str", c)


def _ints(s: Search, g: Grammar, c: int) -> None:
    m = s.m
    for a in _kids(s, "str", c - 1, UNARY_MAX) + _kids(s, "list", c - 1, UNARY_MAX):
        s.emit("length", (a,), "int", c)
    for a in _kids(s, "str", c - 1, 5):
        s.emit("num", (a,), "int", c)
    for a in _kids(s, "str", c - 2, STRUCT_MAX):
        for t in g.tokens_for(a):
            s.emit("ntok", (a, t), "int", c)
            for k in g.ks:
                for side in (0, 1):
                    s.emit("at", (a, t, k, Expr.leaf(str(side), (side,) * m)), "int", c)
    for ca in range(1, c - 1):
        for a in _kids(s, "str", ca, STRUCT_MAX):
            for t in _kids(s, "str", c - 1 - ca, 2, consts=True):
                if t is not a:
                    s.emit("count", (a, t), "int", c)
        for a in _kids(s, "str", ca, STRUCT_MAX):
            for t in _kids(s, "str", c - 2 - ca, 2, consts=True):
                if t is not a:
                    for k in g.ks:
                        s.emit("find", (a, t, k), "int", c)
    for x in _kids(s, "list", c - 1, UNARY_MAX):
        for fn in ("total", "most", "least"):
            s.emit(fn, (x,), "int", c)
    for ca in range(1, c - 1):
        for x in _kids(s, "list", ca, UNARY_MAX):
            for i in _kids(s, "int", c - 1 - ca, 3, consts=True):
                s.emit("elem", (x, i), "int", c)
    for ca in range(1, c - 1):
        cb = c - 1 - ca
        for a in _kids(s, "int", ca, INT_KID_MAX, consts=True):
            for b in _kids(s, "int", cb, INT_KID_MAX, consts=True):
                if a.const and b.const:
                    continue
                if ca <= cb:
                    s.emit("add", (a, b), "int", c)
                    s.emit("mul", (a, b), "int", c)
                s.emit("sub", (a, b), "int", c)


def _bools(s: Search, g: Grammar, c: int) -> None:
    for ca in range(1, c - 1):
        for a in _kids(s, "str", ca, STRUCT_MAX):
            for t in _kids(s, "str", c - 1 - ca, STRUCT_MAX, consts=True):
                if t is a:
                    continue
                for fn in ("contains", "prefix", "suffix", "eq"):
                    s.emit(fn, (a, t), "bool", c)
    for a in _kids(s, "str", c - 2, STRUCT_MAX):
        for t in g.tokens_for(a):
            s.emit("has", (a, t), "bool", c)
    for ca in range(1, c - 1):
        for a in _kids(s, "int", ca, 3, consts=True):
            for b in _kids(s, "int", c - 1 - ca, 3, consts=True):
                if not (a.const and b.const):
                    s.emit("lt", (a, b), "bool", c)
                    if ca <= c - 1 - ca:
                        s.emit("eq", (a, b), "bool", c)
    for a in _kids(s, "bool", c - 1, 6):
        s.emit("not_", (a,), "bool", c)
    for ca in range(1, c - 1):
        for a in _kids(s, "bool", ca, 6):
            for b in _kids(s, "bool", c - 1 - ca, 6):
                if ca < c - 1 - ca or (ca == c - 1 - ca and id(a) < id(b)):
                    s.emit("and_", (a, b), "bool", c)
                    s.emit("or_", (a, b), "bool", c)


def _lists(s: Search, g: Grammar, c: int) -> None:
    m = s.m
    for x in _kids(s, "list", c - 1, UNARY_MAX):
        for fn in ("rev", "sort", "sortd", "uniq"):
            s.emit(fn, (x,), "list", c)
    for i in _kids(s, "int", c - 1, INT_KID_MAX, consts=True):
        s.emit("single", (i,), "list", c)
        s.emit("upto", (i,), "list", c)
    for ca in range(1, c - 1):
        cb = c - 1 - ca
        for x in _kids(s, "list", ca, UNARY_MAX):
            for i in _kids(s, "int", cb, 3, consts=True):
                for fn in ("take", "skip", "only", "rot", "mapadd", "mapmul", "addidx", "append", "prepend", "delat",
                           "stretch", "stride"):
                    s.emit(fn, (x, i), "list", c)
            for y in _kids(s, "list", cb, UNARY_MAX):
                s.emit("lcat", (x, y), "list", c)
        for v in _kids(s, "int", ca, 3, consts=True):
            for n in _kids(s, "int", cb, 3, consts=True):
                s.emit("repeat", (v, n), "list", c)
    for ca in range(1, c - 2):
        for x in _kids(s, "list", ca, UNARY_MAX):
            for k in _kids(s, "int", c - 2 - ca, 3, consts=True):
                for op in FILTER_OPS:
                    s.emit("filt", (x, Expr.leaf(repr(op), (op,) * m), k), "list", c)
    for cx in range(1, c - 2):
        for x in _kids(s, "list", cx, 4):
            for ci in range(1, c - 1 - cx):
                cv = c - 1 - cx - ci
                for i in _kids(s, "int", ci, 2, consts=True):
                    for v in _kids(s, "int", cv, 3, consts=True):
                        s.emit("insert", (x, i, v), "list", c)
                        s.emit("setat", (x, i, v), "list", c)
                        if ci <= cv and i is not v:
                            s.emit("swap", (x, i, v), "list", c)

