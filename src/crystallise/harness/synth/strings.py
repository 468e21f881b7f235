"""String, number and list transformations from examples: the FlashFill-style strategy.

Given a few (inputs, output) examples of a function, find the smallest program in a typed DSL
that reproduces all of them, and emit it as a standalone module defining `solve(*args)`:

    >>> StringStrategy().search([(["Nancy FreeHafer"], "Dr. Nancy"), (["Jan Kotas"], "Dr. Jan")]).expr
    <str cat('Dr. ', tok(x0, WORD, 0)) cost=4.4>

How (each step a module of this package):

1. `strings_search` + `strings_ops`: a bottom-up search fills a bank with expressions of cost
   1, 2, 3, ... (args, case changes, k-th regex token, substrings between positions, fields,
   replace, int <-> str, len/count/find, arithmetic, comparisons, list operators), keeping one
   expression per behaviour on the examples (observational equivalence). An expression equal
   to the outputs everywhere is the answer.
2. `strings_concat`: for string outputs, after each cost level the cheapest concatenation of
   bank pieces and shared constants is searched; the search goes on a couple of levels to see
   whether something smaller (one operator instead of five pieces) exists.
3. Failing that, a two-branch conditional: `first(A, B)` (A where it applies, else B) or
   `ite(p, A, B)` with a predicate from the bank.
4. `render`: the expression plus the source of the runtime helpers it uses (`strings_runtime`),
   with argument and result type checks; the module imports only `re` and `functools`, both
   on the sandbox's allow-list. Every helper returns None on input it cannot handle, so the
   program abstains (returns None) on inputs of a shape it was not built for.

Smallest-first is the inductive bias: with three examples many programs fit, and the
smallest is the likeliest to be the intended one (it generalises to held-out inputs).
"""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from crystallise.harness.synth import strings_runtime as rt
from crystallise.harness.synth.strings_concat import AtomIndex, concat, conditional
from crystallise.harness.synth.strings_ops import Grammar, grow
from crystallise.harness.synth.strings_search import Expr, Found, OutOfTime, Search, key_of, type_of

__all__ = ["Program", "StringStrategy", "render"]

_CHECK = {"str": "isstr({})", "int": "isint({})", "list": "islist({})", "bool": "type({}) is bool"}


@dataclass
class Program:
    """A synthesised program: its expression, the signature it was built for, and search stats."""

    expr: Expr
    arg_types: list[str]
    out_type: str
    n_examples: int
    levels: int  # cost levels the search completed
    bank: int  # expressions kept
    seconds: float

    @property
    def source(self) -> str:
        return render(self)


class StringStrategy:
    """Enumerative synthesis of string/number/list functions from input-output examples.

    `synthesise(examples, budget_s=...)` returns module source defining `solve(*args)`, or
    None when nothing in the DSL fits (or the examples contradict each other). Examples are
    `(inputs, output)` pairs with `inputs` the function's arguments in order; values are JSON
    strings, ints, bools and lists of ints.

    >>> src = StringStrategy().synthesise([(["a b c"], 3), (["hello world"], 2)], budget_s=2)
    >>> "out = ntok(x0, WORD)" in src  # the number of words
    True
    """

    name = "strings"

    def __init__(self, *, max_cost: int = 14, extra_levels: int = 2, conditionals: bool = True,
                 search_share: float = 0.7) -> None:
        self.max_cost = max_cost
        self.extra_levels = extra_levels  # levels searched past the first fit, for a smaller one
        self.conditionals = conditionals
        self.search_share = search_share  # of the budget, before conditionals are tried

    def synthesise(self, examples: Sequence[tuple[Sequence[Any], Any]], *, budget_s: float = 5.0) -> str | None:
        """Module source of the smallest program that fits every example, or None."""
        program = self.search(examples, budget_s=budget_s)
        return program.source if program else None

    def search(self, examples: Sequence[tuple[Sequence[Any], Any]], *, budget_s: float = 5.0) -> Program | None:
        """Like `synthesise`, but the Program (expression and stats) rather than its source."""
        t0 = time.monotonic()
        cleaned = _clean(examples)
        if cleaned is None:
            return None
        inputs, outputs = cleaned
        s = Search(inputs, outputs, deadline=t0 + budget_s * self.search_share)
        g = Grammar.of(s)
        best: Expr | None = None
        first_fit = level = 0

        def offer(e: Expr | None) -> None:
            nonlocal best
            if e is not None and (best is None or s.score(e) < s.score(best)):
                best = e

        try:
            for level in range(1, self.max_cost + 1):
                try:
                    grow(s, g, level)
                except Found:
                    pass
                offer(s.found)
                if s.out_type in ("str", "list"):
                    offer(concat(s, AtomIndex(s, s.out_type), range(s.m)))
                if best is not None:
                    first_fit = first_fit or level
                    if level >= s.score(best) or level >= first_fit + self.extra_levels:
                        break
        except OutOfTime:
            offer(s.found)
        if best is None and self.conditionals:
            s.deadline = t0 + budget_s
            best = self._conditional(s, g)
        if best is None:
            return None
        types = [t or "str" for t in s.arg_types]
        program = Program(best, types, s.out_type or "str", s.m, level, s.size(), time.monotonic() - t0)
        return program if _reproduces(program.source, inputs, outputs) else None

    @staticmethod
    def _conditional(s: Search, g: Grammar) -> Expr | None:
        """Predicates (bool expressions up to cost 5, in half the time left), then the cheapest
        two-branch program."""
        s.goal = False
        g.types.add("bool")
        deadline, now = s.deadline, time.monotonic()
        s.deadline = now + (deadline - now) / 2
        try:
            for c in range(2, 6):
                grow(s, g, c, types={"bool"})
        except OutOfTime:
            pass
        s.deadline = deadline
        predicates = [p for p in s.upto("bool", 5) if not p.const]
        index = AtomIndex(s, s.out_type) if s.out_type in ("str", "list") else None
        try:
            return conditional(s, index, predicates)
        except OutOfTime:
            return None


def _reproduces(source: str, inputs: list[list[Any]], outputs: list[Any]) -> bool:
    """The rendered module gives every example's output (guards the renderer, not the search).
    It is our own code over our own runtime, so it runs here, not in the sandbox."""
    namespace: dict[str, Any] = {}
    try:
        exec(compile(source, "<strings program>", "exec"), namespace)  # noqa: S102 - generated from our runtime
        return all(key_of([namespace["solve"](*x)]) == key_of([y]) for x, y in zip(inputs, outputs))
    except Exception:  # noqa: BLE001
        return False


def _clean(examples: Sequence[tuple[Sequence[Any], Any]]) -> tuple[list[list[Any]], list[Any]] | None:
    """Examples as (inputs, outputs) with one type per position; None if unusable or contradictory."""
    inputs: list[list[Any]] = []
    outputs: list[Any] = []
    seen: dict[tuple[Any, ...], Any] = {}
    for ex in examples:
        try:
            args, out = ex
        except (TypeError, ValueError):
            return None
        args = list(args)
        if None in [type_of(v) for v in [*args, out]]:
            return None  # a float, dict, null or mixed list: outside the DSL
        key = key_of(args)
        if key in seen:
            if key_of([seen[key]]) != key_of([out]):
                return None  # one input, two outputs: no function fits
            continue
        seen[key] = out
        inputs.append(args)
        outputs.append(out)
    if not outputs:
        return None
    arity = len(inputs[0])
    types = [type_of(v) for v in inputs[0]]
    out_type = type_of(outputs[0])
    if out_type is None or None in types:
        return None
    for args, out in zip(inputs, outputs):
        if len(args) != arity or [type_of(v) for v in args] != types or type_of(out) != out_type:
            return None
    return inputs, outputs


# -- rendering -------------------------------------------------------------------------------------


@cache
def _deps() -> dict[str, set[str]]:
    """Runtime name -> runtime names its source refers to."""
    names = {n for n, v in vars(rt).items() if not n.startswith("_") and (_is_helper(v) or n.isupper())}
    out: dict[str, set[str]] = {}
    for n in names:
        v = getattr(rt, n)
        src = inspect.getsource(v) if _is_helper(v) else ""
        out[n] = {w for w in re.findall(r"\b[A-Za-z_]\w*\b", src) if w in names and w != n}
    return out


def _is_helper(v: object) -> bool:
    return callable(v) and getattr(v, "__module__", None) == rt.__name__


def _closure(names: set[str]) -> list[str]:
    deps, todo, done = _deps(), list(names), set()
    while todo:
        n = todo.pop()
        if n in done or n not in deps:
            continue
        done.add(n)
        todo += deps[n]
    order = [n for n in vars(rt) if n in done]  # the runtime's own order: definitions before use
    return order


def render(program: Program) -> str:
    """A standalone module: the helpers the program uses, then `solve(*args)`."""
    expr, types = program.expr, program.arg_types
    params = [f"x{i}" for i in range(len(types))]
    used = expr.helpers() | {_CHECK[t].split("(")[0] for t in [*types, program.out_type]} - {"type"}
    chunks = []
    for name in _closure(used):
        v = getattr(rt, name)
        chunks.append(inspect.getsource(inspect.unwrap(v)).rstrip() if _is_helper(v) else f"{name} = {v!r}")
    consts = [c for c in chunks if not c.startswith(("def ", "@"))]
    funcs = [c for c in chunks if c.startswith(("def ", "@"))]
    checks = " and ".join(_CHECK[t].format(f"args[{i}]") for i, t in enumerate(types)) or "True"
    sig = ", ".join(f"{p}: {t}" for p, t in zip(params, types))
    body = expr.render()
    unpack = f"    {', '.join(params)}, = args\n" if params else ""
    return (
        f'"""Crystallised by the strings strategy from {program.n_examples} examples '
        f"(bottom-up enumeration, cost {expr.cost}).\n\n"
        f"    solve({sig}) -> {program.out_type}\n"
        f"    {body[:300]}\n\n"
        'solve returns None (abstains) on input it cannot handle: a missing token, an index out of\n'
        'range, an argument of another type."""\n\n'
        "import functools\nimport re\n\n"
        + ("\n".join(consts) + "\n\n\n" if consts else "")
        + "\n\n\n".join(funcs)
        + "\n\n\ndef solve(*args):\n"
        f"    if len(args) != {len(types)} or not ({checks}):\n        return None\n"
        + unpack
        + f"    try:\n        out = {body}\n    except Exception:\n        return None\n"
        f"    return out if {_CHECK[program.out_type].format('out')} else None\n"
    )
