"""String, number and list transformations from examples: the FlashFill-style strategy.

Given a few (inputs, output) examples of a function, find the smallest program in a typed DSL
that reproduces all of them, and emit it as a standalone module defining `solve(*args)`:

    >>> StringStrategy().search([(["Nancy FreeHafer"], "Dr. Nancy"), (["Jan Kotas"], "Dr. Jan")]).expr
    <str cat('Dr. ', tok(x0, NAME, 0)) cost=4.4>

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
4. The program is a tree (`Program.tree`): helper calls, arguments and constants, run by the
   interpreter (`harness/programs`) with argument and result type checks. Its rendering
   (`Program.source`) is the expression plus the source of the runtime helpers it uses, for
   people. Every helper returns None on input it cannot handle, so the program abstains
   (returns None) on inputs of a shape it was not built for.

Smallest-first is the inductive bias: with three examples many programs fit, and the
smallest is the likeliest to be the intended one (it generalises to held-out inputs).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from crystallise.harness.synth.strings_concat import AtomIndex, concat, conditional
from crystallise.harness.synth.strings_ops import Grammar, grow
from crystallise.harness.synth.strings_search import Expr, Found, OutOfTime, Search, key_of, type_of

__all__ = ["Program", "StringStrategy"]

SINGLE_EXAMPLE_LEVELS = 3  # with one example, levels searched past the first fit beyond extra_levels
LONG_INPUT = 2_000  # characters: an input this long gets no extra levels (each level scans it many times)



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
    def tree(self) -> dict[str, Any]:
        """The program as data (`harness/programs`, a "strings" function): what runs."""
        return {"kind": "strings", "arg_types": list(self.arg_types), "out_type": self.out_type,
                "expr": self.expr.tree()}

    @property
    def source(self) -> str:
        """Its rendering as a standalone module (for people, and the sandbox equivalence tests)."""
        from crystallise.harness.programs.rendering import render_strings_fn

        return render_strings_fn(self.tree, f" from {self.n_examples} examples (bottom-up enumeration, "
                                            f"cost {self.expr.cost:g})")


class StringStrategy:
    """Enumerative synthesis of string/number/list functions from input-output examples.

    `synthesise(examples, budget_s=...)` returns module source defining `solve(*args)`, or
    None when nothing in the DSL fits (or the examples contradict each other). Examples are
    `(inputs, output)` pairs with `inputs` the function's arguments in order; values are JSON
    strings, ints, bools and lists of ints.

    >>> src = StringStrategy().synthesise([(["a b c"], 3), (["hello world"], 2)], budget_s=2)
    >>> "out = ntok(x0, NAME)" in src  # the number of words
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
        long_input = any(isinstance(v, str) and len(v) > LONG_INPUT for inp in inputs for v in inp)
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
                    more = SINGLE_EXAMPLE_LEVELS if s.m == 1 and not long_input else 0  # constants fit first
                    if level >= s.score(best) or level >= first_fit + self.extra_levels + more:
                        break
        except OutOfTime:
            offer(s.found)
        if best is None and self.conditionals:
            s.deadline = t0 + budget_s
            best = self._conditional(s, g)
        if best is None:
            return None
        best = _case_rule(s, best)
        types = [t or "str" for t in s.arg_types]
        program = Program(best, types, s.out_type or "str", s.m, level, s.size(), time.monotonic() - t0)
        return program if _reproduces(program.tree, inputs, outputs) else None

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


def _case_rule(s: Search, best: Expr) -> Expr:
    """When every output is upper-case (or lower-case) and the inputs are not, the case is part of
    the rule: upper(program) fits the examples as well, and on an input written in another case
    ("mary ann smith" for initials shown as "GH" from "Grace Hopper") it still gives the rule's case."""
    outs = s.outputs
    if s.out_type != "str" or not best.fn or best.fn in ("upper", "lower") or not all(
            isinstance(o, str) and any(ch.isalpha() for ch in o) for o in outs):
        return best  # a constant or an argument passed through keeps its case
    used = {int(a[1:]) for a in best.args_used()}
    texts = [v for inp in s.inputs for i, v in enumerate(inp) if i in used and isinstance(v, str)]
    for fn, case in (("upper", str.upper), ("lower", str.lower)):
        if all(o == case(o) for o in outs) and any(v != case(v) for v in texts):
            value = s.value_of(fn, [best])
            if list(value) == list(outs):
                return Expr(fn, (best,), value, "str", best.cost + 1)
    return best


def _reproduces(tree: dict[str, Any], inputs: list[list[Any]], outputs: list[Any]) -> bool:
    """The program tree, run by the interpreter, gives every example's output (guards the tree
    conversion, not the search). Nothing is compiled: the tree is data."""
    from crystallise.harness.programs.interp import ProgramError, strings_fn

    try:
        fn = strings_fn(tree)
    except ProgramError:
        return False
    return all(key_of([fn(*x)]) == key_of([y]) for x, y in zip(inputs, outputs))


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
