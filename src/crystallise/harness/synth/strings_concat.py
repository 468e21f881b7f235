"""Assembling outputs: concatenation by cheapest path, and two-branch conditionals.

**Concatenation.** An output is cut into pieces, each an expression of the bank or a
constant shared by all outputs. The state is how far into each example's output we are;
a piece moves every example forward at once, so one program must fit all examples:

    outputs "(938) 242", "(308) 916"          inputs "938-242-504", "308-916-545"
    (0, 0) --'('--> (1, 1) --tok(x0, DIGITS, 0)--> (4, 4) --') '--> (6, 6) --tok(x0, DIGITS, 1)--> (9, 9)

A cheapest-first search (Dijkstra over states; cost = sum of piece costs, a constant costs 1)
finds the smallest such program: FlashFill's DAG intersection, built lazily.

**Conditionals.** When no single program fits every example, find programs that fit parts
of them (bank expressions, or concatenations of a subset of the examples) and join two:

    first(A, B)     A where A applies (is not None), else B — no test needed
    ite(p, A, B)    a predicate p from the bank separates the examples only A fits from
                    those only B fits

Against memorising: a concatenation costlier than the outputs are long is refused, and so is
a constant branch that fits a single example.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from itertools import combinations
from typing import Any

from crystallise.harness.synth.strings_search import Expr, Search

__all__ = ["AtomIndex", "concat", "conditional"]

CONST_COST = 1
# One example: a constant's letter or digit the input also has (2.0 -> 3.5: 71 -> 78 of the 154
# invented text tasks solved from one row, bench/data/text_tasks; SyGuS unchanged).
COPIED_CHAR = 3.5
MAX_STATES = 20_000


class AtomIndex:
    """Bank strings (or lists) indexed by their value on each example: value -> expressions,
    cheapest first. List values are stored as tuples."""

    def __init__(self, s: Search, type_: str = "str") -> None:
        self.type = type_
        self.by_example: list[dict[Any, list[Expr]]] = [{} for _ in range(s.m)]
        for c in range(1, 64):
            for a in s.at(type_, c):
                if a.const:
                    continue
                for e, v in enumerate(a.value):
                    if v is not None:
                        self.by_example[e].setdefault(_seq(v), []).append(a)


def _seq(v: Any) -> Any:
    return tuple(v) if type(v) is list else v


def const_cost(text: Sequence[Any], n_examples: int, copied: frozenset[str] = frozenset()) -> float:
    """1 per constant, plus a little per character: pieces of the input beat shared text. With
    one example every text is "shared", so there a character costs as much as an operator, and
    more than taking a token (3) when it is a letter or digit the input has (`copied`, lower-cased):
    "DOE" from "Jane Doe" is upper(last word), "J." from "John Smith" its first letter and a dot, not
    constants that happen to fit the one example."""
    if n_examples >= 2:
        return CONST_COST + 0.1 * len(text)
    return CONST_COST + sum(COPIED_CHAR if isinstance(ch, str) and ch.lower() in copied else 1.0 for ch in text)


def copied_chars(s: Search) -> frozenset[str]:
    """Letters and digits of the string inputs, lower-cased (see `const_cost`)."""
    return frozenset(ch.lower() for inp in s.inputs for v in inp if isinstance(v, str) for ch in v if ch.isalnum())


def _const(s: Search, part: Any, type_: str, n_examples: int, copied: frozenset[str]) -> Expr:
    value = part if type_ == "str" else list(part)
    return Expr.leaf(repr(value), (value,) * s.m, type_, const_cost(part, n_examples, copied), const=True)


def concat(s: Search, index: AtomIndex, examples: Sequence[int], max_cost: float = 40) -> Expr | None:
    """The cheapest concatenation of bank pieces and constants giving the outputs of `examples`
    (strings, or lists of ints: the same search over sequences)."""
    ex = list(examples)
    outs: list[Any] = [_seq(s.outputs[e]) for e in ex]
    if not ex or not all(isinstance(o, (str, tuple)) for o in outs):
        return None
    start, goal = (0,) * len(ex), tuple(len(o) for o in outs)
    best: dict[tuple[int, ...], float] = {start: 0.0}
    back: dict[tuple[int, ...], tuple[tuple[int, ...], Expr | tuple[Any, ...] | str]] = {}
    heap: list[tuple[float, int, tuple[int, ...]]] = [(0.0, 0, start)]
    tie, expanded = 0, 0
    e0, o0 = ex[0], outs[0]
    idx0 = index.by_example[e0]
    copied = copied_chars(s)

    def relax(state: tuple[int, ...], nxt: tuple[int, ...], cost: float, part: Any) -> None:
        nonlocal tie
        if cost <= max_cost and cost < best.get(nxt, 1e9):
            best[nxt] = cost
            back[nxt] = (state, part)
            tie += 1
            heapq.heappush(heap, (cost, tie, nxt))

    while heap:
        cost, _, p = heapq.heappop(heap)
        if p == goal:
            break
        if cost > best.get(p, 1e9):
            continue
        expanded += 1
        if expanded > MAX_STATES:
            return None
        s.check_time()
        # constants: any prefix common to what is left of every output
        lcp = min(len(o) - q for o, q in zip(outs, p))
        for o, q in zip(outs, p):
            j = 0
            while j < lcp and o[q + j] == o0[p[0] + j]:
                j += 1
            lcp = j
        for n in range(1, lcp + 1):
            piece = o0[p[0]:p[0] + n]
            relax(p, tuple(q + n for q in p), cost + const_cost(piece, len(ex), copied), piece)
        # bank pieces: keyed by their value on the first example
        for n in range(0, len(o0) - p[0] + 1):
            for a in idx0.get(o0[p[0]:p[0] + n], ()):
                nxt, grows = _advance(a, ex, outs, p)
                if nxt is not None and grows:
                    relax(p, nxt, cost + a.cost, a)
    if goal not in back and goal != start:
        return None
    parts: list[Expr] = []
    state = goal
    while state != start:
        state, part = back[state]
        parts.append(part if isinstance(part, Expr) else _const(s, part, index.type, len(ex), copied))
    parts.reverse()
    if not parts:
        return _const(s, o0[:0], index.type, len(ex), copied)
    if len(parts) == 1:
        return parts[0]
    table = sum(len(o) for o in outs)  # what a table of the outputs costs; one output: the constant
    if best[goal] > (max(table, const_cost(o0, 1, copied)) if len(ex) == 1 else table):
        return None  # longer than a table of the outputs it explains: it memorises, not generalises
    fn = "cat" if index.type == "str" else "lcat"
    return Expr(fn, tuple(parts), s.value_of(fn, parts), index.type, sum(x.cost for x in parts))


def _advance(a: Expr, ex: list[int], outs: list[Any], p: tuple[int, ...]) -> tuple[tuple[int, ...] | None, bool]:
    nxt, grows = [], False
    for e, o, q in zip(ex, outs, p):
        v = _seq(a.value[e])
        if v is None or o[q:q + len(v)] != v:
            return None, False
        grows = grows or bool(v)
        nxt.append(q + len(v))
    return tuple(nxt), grows


# -- conditionals ----------------------------------------------------------------------------------


def _mask(s: Search, value: Sequence[Any]) -> int:
    return sum(1 << e for e in range(s.m) if value[e] is not None and _same(value[e], s.outputs[e]))


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def conditional(s: Search, index: AtomIndex | None, predicates: Sequence[Expr], max_examples: int = 6) -> Expr | None:
    """The cheapest first(A, B) or ite(p, A, B) that fits every example, or None."""
    m = s.m
    if not 2 <= m <= max_examples:
        return None
    full = (1 << m) - 1
    parts: dict[int, Expr] = {}  # ok-mask -> cheapest program fitting exactly those examples

    def offer(e: Expr) -> None:
        mask = _mask(s, e.value)
        if e.const and bin(mask).count("1") < 2:
            return  # a constant branch for one example is a lookup, not a program
        if mask and mask != full and (mask not in parts or e.cost < parts[mask].cost):
            parts[mask] = e

    if s.out_type in ("str", "list") and index is not None:
        for size in range(m - 1, 0, -1):
            for subset in combinations(range(m), size):
                got = concat(s, index, subset, max_cost=24)
                if got is not None:
                    offer(got)
    else:
        for c in range(1, 64):
            for e in s.at(s.out_type or "str", c):
                offer(e)
    preds: dict[tuple[int, int], Expr | None] = {}

    def predicate(need_true: int, need_false: int) -> Expr | None:
        if (need_true, need_false) not in preds:
            preds[need_true, need_false] = next(
                (p for p in predicates if all(p.value[e] is True for e in range(m) if need_true >> e & 1)
                 and all(p.value[e] is False for e in range(m) if need_false >> e & 1)), None)
        return preds[need_true, need_false]

    best: Expr | None = None
    items = sorted(parts.items(), key=lambda kv: kv[1].cost)
    for ma, a in items:
        for mb, b in items:
            if ma | mb != full or a is b:
                continue
            base = a.cost + b.cost + 1
            if best is not None and base >= best.cost:
                continue
            if all(a.value[e] is None for e in range(m) if not ma >> e & 1):
                cand = Expr("first", (a, b), s.value_of("first", (a, b)), s.out_type or "str", base)
            else:
                p = predicate(full & ~mb, full & ~ma)
                if p is None:
                    continue
                cand = Expr("ite", (p, a, b), s.value_of("ite", (p, a, b)), s.out_type or "str", base + p.cost)
            if _mask(s, cand.value) == full and (best is None or cand.cost < best.cost):
                best = cand
    return best
