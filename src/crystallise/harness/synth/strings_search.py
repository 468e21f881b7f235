"""The bank of a bottom-up search: typed expressions, kept once per behaviour on the examples.

An expression is kept only as its *value vector* over the m examples — one value per example,
None where it does not apply. Two expressions with the same vector are interchangeable on the
evidence (observational equivalence), so only the first, cheapest one is kept:

    examples ("John Smith",), ("Ann Lee",)
    x0                      -> ("John Smith", "Ann Lee")         cost 1
    tok(x0, WORD, 0)        -> ("John", "Ann")                   cost 3
    field(x0, ' ', 0)       -> ("John", "Ann")                   dropped: same vector, came later

Values are computed with the runtime helpers (`strings_runtime`), the very functions the
rendered program calls. The grammar itself lives in `strings_ops.py`; this module is the
machinery: `Expr`, `Search.emit` (evaluate, dedupe, check the goal) and the deadline.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from crystallise.harness.synth import strings_runtime as rt

__all__ = ["TYPES", "Expr", "Found", "OutOfTime", "Search", "key_of", "type_of"]

TYPES = ("str", "int", "bool", "list")
UNUSED_ARG = 1.5
_ARG = re.compile(r"x\d+")


class Found(Exception):
    """Raised inside the search when an expression reproduces every output."""


class OutOfTime(Exception):
    """The search's deadline passed."""


def type_of(value: Any) -> str | None:
    """The DSL type of a JSON value: str, int, bool or list (of ints); None otherwise."""
    if type(value) is bool:
        return "bool"
    if type(value) is int:
        return "int"
    if type(value) is str:
        return "str"
    if type(value) is list and all(type(v) is int for v in value):
        return "list"
    return None


def key_of(values: Sequence[Any]) -> tuple[Any, ...]:
    """A hashable form of a value vector (lists become tuples)."""
    return tuple(tuple(v) if type(v) is list else v for v in values)


class Expr:
    """One DSL expression with its value on each example.

    Leaves carry their source (`x0`, `'-'`, `WORD`, `x1 - 1`); inner nodes are a runtime
    helper applied to children: `tok(x0, WORD, 0)`. `param` leaves (regex tokens, indexes,
    separators) are parts of an operator, never entries of the bank.
    """

    __slots__ = ("fn", "kids", "src", "value", "type", "cost", "const")

    def __init__(self, fn: str, kids: tuple[Expr, ...], value: tuple[Any, ...], type_: str, cost: float,
                 src: str = "", const: bool = False) -> None:
        self.fn, self.kids, self.value, self.type, self.cost = fn, kids, value, type_, cost
        self.src, self.const = src, const

    @classmethod
    def leaf(cls, src: str, value: tuple[Any, ...], type_: str = "param", cost: float = 0,
             const: bool = False) -> Expr:
        return cls("", (), value, type_, cost, src=src, const=const)

    def render(self) -> str:
        if not self.fn:
            return self.src
        return f"{self.fn}({', '.join(k.render() for k in self.kids)})"

    def tree(self) -> dict[str, Any]:
        """The expression as data for the interpreter (`harness/programs`): a helper call with its
        children, an argument, or a constant value (a constant leaf's value is the same on every
        example: that value is the constant; nothing is parsed or evaluated)."""
        if self.fn:
            return {"call": self.fn, "args": [k.tree() for k in self.kids]}
        return _leaf_tree(self.src, self.value)

    def helpers(self) -> set[str]:
        """Runtime names this expression uses (functions and token constants)."""
        out = {self.fn} if self.fn else set()
        if not self.fn and self.src in rt.TOKENS:
            out.add(self.src)
        for k in self.kids:
            out |= k.helpers()
        return out

    def args_used(self) -> set[str]:
        if not self.fn:
            return {self.src} if _ARG.fullmatch(self.src) else set()
        return set().union(*(k.args_used() for k in self.kids))

    def __repr__(self) -> str:
        return f"<{self.type} {self.render()} cost={self.cost}>"


_ARG_MINUS_ONE = re.compile(r"x(\d+) - 1")
_NEG_ARG = re.compile(r"-x(\d+)")


def _leaf_tree(src: str, value: tuple[Any, ...]) -> dict[str, Any]:
    """`x0` -> argument 0; `x1 - 1`, `-x1` -> int arithmetic on it; else the constant it stands for."""
    if _ARG.fullmatch(src):
        return {"arg": int(src[1:])}
    if m := _ARG_MINUS_ONE.fullmatch(src):
        return {"call": "sub", "args": [{"arg": int(m.group(1))}, {"const": 1}]}
    if m := _NEG_ARG.fullmatch(src):
        return {"call": "sub", "args": [{"const": 0}, {"arg": int(m.group(1))}]}
    if src in rt.TOKENS:
        return {"const": getattr(rt, src)}
    if not value or any(v != value[0] or type(v) is not type(value[0]) for v in value):
        raise ValueError(f"leaf {src!r} is neither an argument nor a constant")
    return {"const": list(value[0]) if isinstance(value[0], tuple) else value[0]}


class Search:
    """The bank for one example set, and `emit`, through which every candidate passes.

    `inputs[e]` are the arguments of example e, `outputs[e]` its output. `emit` evaluates a
    helper on the children's values, drops the candidate when it is nowhere defined or behaves
    like one already kept, and raises Found when it reproduces every output.
    """

    def __init__(self, inputs: Sequence[Sequence[Any]], outputs: Sequence[Any], deadline: float,
                 goal: bool = True) -> None:
        self.inputs, self.outputs, self.deadline = [list(i) for i in inputs], list(outputs), deadline
        self.m = len(self.outputs)
        self.arg_types = [type_of(v) for v in self.inputs[0]] if self.inputs else []
        self.out_type = type_of(self.outputs[0]) if self.outputs else None
        self.target = key_of(self.outputs)
        self.goal = goal
        self.seen: dict[str, dict[tuple[Any, ...], Expr]] = {t: {} for t in TYPES}
        self.levels: dict[str, list[list[Expr]]] = {t: [[] for _ in range(64)] for t in TYPES}
        self.found: Expr | None = None
        self._ticks = 0

    # -- bank ---------------------------------------------------------------------------------
    def at(self, type_: str, cost: int) -> list[Expr]:
        """Kept expressions of one type and exactly one cost."""
        return self.levels[type_][cost] if 0 <= cost < 64 else []

    def upto(self, type_: str, cost: int) -> list[Expr]:
        return [e for c in range(1, min(cost, 63) + 1) for e in self.levels[type_][c]]

    def size(self, type_: str | None = None) -> int:
        return sum(len(b) for t, b in self.seen.items() if type_ in (None, t))

    def add(self, e: Expr) -> bool:
        """Keep `e` unless an equivalent one is kept; raise Found if it is the answer."""
        if all(v is None for v in e.value):
            return False
        key = key_of(e.value)
        if self.goal and e.type == self.out_type and key == self.target and not (e.const and self.m < 2):
            # (a constant fits one example trivially: not an answer then, but kept below)
            if self.found is None or self.score(e) < self.score(self.found):
                self.found = e
            if self.score(e) <= e.cost:
                raise Found  # uses every argument: nothing of this cost is better
        bank = self.seen[e.type]
        if key in bank:
            return False
        bank[key] = e
        self.levels[e.type][min(int(e.cost + 1e-9), 63)].append(e)
        return True

    def emit(self, fn: str, kids: tuple[Expr, ...], type_: str, op_cost: float) -> Expr | None:
        """Evaluate `fn` over the children's values on every example, then `add` it.
        Its cost is `op_cost` plus the children's (parameters mostly cost 0)."""
        self._ticks += 1
        if self._ticks & 255 == 0 and time.monotonic() > self.deadline:
            raise OutOfTime
        f: Callable[..., Any] = getattr(rt, fn)
        values: list[Any] = []
        for e in range(self.m):
            args = [k.value[e] for k in kids]
            if any(a is None for a in args):
                values.append(None)
                continue
            try:
                v = f(*args)
            except Exception:  # noqa: BLE001 - a helper on an odd value: undefined there
                v = None
            values.append(v if v is None or type_of(v) == type_ else None)
        e_ = Expr(fn, kids, tuple(values), type_, op_cost + sum(k.cost for k in kids))
        return e_ if self.add(e_) else None

    def score(self, e: Expr) -> float:
        """Cost, plus a penalty per argument the expression ignores: with few examples, a
        program that uses every input is the likelier reading (count(s, t), not ntok(s))."""
        return e.cost + UNUSED_ARG * (len(self.arg_types) - len(e.args_used()))

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise OutOfTime

    def value_of(self, fn: str, kids: Sequence[Expr]) -> tuple[Any, ...]:
        """Values of `fn(kids)` without keeping it (for programs assembled after the search)."""
        f = getattr(rt, fn)
        out: list[Any] = []
        for e in range(self.m):
            args = [k.value[e] for k in kids]
            if fn not in ("first", "ite") and any(a is None for a in args):
                out.append(None)
                continue
            try:
                out.append(f(*args))
            except Exception:  # noqa: BLE001
                out.append(None)
        return tuple(out)
