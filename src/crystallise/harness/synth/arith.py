"""Arithmetic over extracted numbers: the enumerative strategy for numeric tasks.

Many LLM tasks are "read the numbers in the text, compute, format" (financial
formulas, unit conversions, totals). Given verified (input text, output) cases:

1. group the cases by template: the leading sentence when it repeats across cases
   (e.g. "Use formula Current Ratio to answer the question."), else one group;
2. in each group, drop the numbers of the shared template prefix and split by the
   signature of the remaining typed numbers (how many $, %, plain), so a record with
   an extra year in it is a different sub-group rather than noise;
3. per sub-group with >= 3 cases: hold out a third (chosen by hashing the input, not
   by order), enumerate expressions on the rest (`enumerate.py`), and keep the
   expression only if it reproduces every held-out case under the task's metric;
4. emit the program as data (`body`: rules with their expression trees, run by the
   interpreter in `harness/programs`) whose `solve(text)` dispatches on (template,
   signature) and returns None — abstains — on anything it was not verified for; its
   rendering (`render`) is a readable Python module for people.

Learning is incremental: rules of the current program (`previous`) are kept while
the new evidence agrees with them (>= 90% of their sub-group's cases), so more data
adds rules instead of re-rolling the ones already verified.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crystallise.harness.synth.enumerate import enumerate_expressions
from crystallise.harness.synth.formula import Shape, fit_shape, stated_formulas
from crystallise.harness.synth.numbers import extract_numbers, fmt_number, named_numbers
from crystallise.harness.synth.template import key_of

__all__ = ["ArithRule", "ArithStrategy", "template_key"]

Metric = Callable[[str, str], bool]
_KINDS = ("$", "%", "n")
_VAR = {"$": "d", "%": "p", "n": "n"}
_FORMATS = [(2, "half_up"), (2, "half_even"), (0, "half_up"), (1, "half_up"), (3, "half_up"), (4, "half_up"), (-1, "")]


def template_key(text: str, mode: str) -> str:
    """The part of an input that names its template: `sentence`, `line` or `none` (the same
    function the interpreter runs, `template.template_key`)."""
    return str(key_of(text, mode))


def _holdout(text: str) -> bool:
    """Deterministic ~1/3 split by content, so the order of a stream cannot bias it."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 3 == 0


def _parse_float(s: str) -> float | None:
    try:
        return float(str(s).replace(",", "").strip())
    except ValueError:
        return None


@dataclass
class ArithRule:
    key: str
    signature: tuple[int, int, int]
    expression: str  # over d0.., p0.., n0..
    places: int
    rounding: str
    n_fit: int
    n_heldout: int
    skip: dict[str, int] = field(default_factory=dict)  # numbers of the template prefix, per kind
    # a rule for every signature with at least these counts (of its template, when no rule has the
    # exact one): one expression that held across sub-groups, so it also answers unseen phrasings
    at_least: bool = False
    names: list[str] = field(default_factory=list)  # the stated formula's variables (terminals v0..)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "signature": list(self.signature)}

    @property
    def unit(self) -> str:
        """The unit id the rendered program's `unit(text)` gives this rule's inputs."""
        return f"{self.key} | {'>= ' if self.at_least else ''}{tuple(self.signature)}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArithRule:
        return cls(**{**data, "signature": tuple(data["signature"])})


@dataclass
class ArithStrategy:
    """Enumerative synthesis of arithmetic over the typed numbers in the input."""

    name: str = "arith"
    min_cases: int = 3
    max_size: int = 7
    budget_s: float = 2.0
    rules: list[ArithRule] = field(default_factory=list)
    # Hold out a third of each sub-group and keep a rule only if it reproduces them. Off when the
    # caller verifies on cases it kept back itself (the crystallise learner does: `synth/verify.py`).
    holdout: bool = True
    # The key modes tried, in order (harness/learn.py asks for ("shape",) when one template holds
    # several input formats whose numbers mean different things: a rule per format).
    modes: tuple[str, ...] = ("sentence", "line", "shape")

    # -- synthesis --------------------------------------------------------------------
    def partition(self, texts: Sequence[str]) -> list[str | None]:
        """The sub-group ("<template> | (d, p, n)") of each text, as `synthesise` would form them:
        what a caller stratifies its held-out split by, so every rule can be checked."""
        mode = self._choose_mode(list(texts))
        groups: dict[str, list[int]] = defaultdict(list)
        for i, x in enumerate(texts):
            groups[template_key(x, mode)].append(i)
        out: list[str | None] = [None] * len(texts)
        for key, idx in groups.items():
            prefix = os.path.commonprefix([texts[i] for i in idx])
            prefix = prefix[: prefix.rfind(" ") + 1] if " " in prefix else ""
            skip = {k: len(v) for k, v in extract_numbers(prefix).items()}
            for i in idx:
                nums = extract_numbers(texts[i])
                out[i] = f"{key} | {tuple(len(nums[k]) - skip[k] for k in _KINDS)}"
        return out

    def synthesise(
        self,
        cases: Sequence[tuple[str, str]],
        *,
        metric: Metric,
        progress: Callable[[int, int], None] | None = None,
        previous: Sequence[ArithRule] = (),
        previous_mode: str | None = None,
    ) -> tuple[str, list[ArithRule], str] | None:
        """(the program's rendering, rules, key mode) or None when no rule verified (`body` gives
        the program itself from the rules)."""
        numeric = [(x, y) for x, y in cases if isinstance(x, str) and _parse_float(y) is not None]
        if len(numeric) < self.min_cases:
            return None
        keep = previous and previous_mode in self.modes
        mode = previous_mode if keep and previous_mode else self._choose_mode([x for x, _ in numeric])
        previous = previous if keep else ()
        kept = {r.unit: r for r in previous}
        groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for x, y in numeric:
            groups[template_key(x, mode)].append((x, y))
        rules: list[ArithRule] = []
        todo = [(k, g) for k, g in groups.items() if len(g) >= self.min_cases]
        for done, (key, group) in enumerate(todo):
            if progress:
                progress(done, len(todo))
            prefix = os.path.commonprefix([x for x, _ in group])
            prefix = prefix[: prefix.rfind(" ") + 1] if " " in prefix else ""
            skip = {k: len(v) for k, v in extract_numbers(prefix).items()}
            old_skip = next((r.skip for r in kept.values() if r.key == key and r.skip), None)
            skip = old_skip or skip  # a key keeps the prefix its verified rules were built on
            by_sig: dict[tuple[int, int, int], list[tuple[dict, str, str]]] = defaultdict(list)
            for x, y in group:
                nums = {k: v[skip[k]:] for k, v in extract_numbers(x).items()}
                sig = tuple(len(nums[k]) for k in _KINDS)
                if sum(sig) <= 8:
                    by_sig[sig].append((nums, x, y))
            stated = stated_formulas(prefix)
            rules += self._template_rules(key, by_sig, skip, kept, metric, stated)
        rules += kept.values()  # rules nothing new speaks against stay
        if progress:
            progress(len(todo), len(todo))
        if not rules:
            return None
        return self.render(rules, mode), rules, mode

    def _template_rules(self, key: str, by_sig: dict[tuple[int, int, int], list], skip: dict[str, int],
                        kept: dict[str, ArithRule], metric: Metric,
                        stated: Sequence[tuple[Shape, list[str], bool]] = ()) -> list[ArithRule]:
        """The rules of one template, simplest first (Occam): one expression over the numbers every
        sub-group has, when it reproduces every case of the template (an `at_least` rule, which also
        answers phrasings with more numbers than seen); else a rule per signature, plus one `at_least`
        rule fitted over the sub-groups no rule of their own was found for (too few cases alone)."""
        everyone = [m for members in by_sig.values() for m in members]
        least = tuple(min(len(m[0][k]) for m in everyone) for k in _KINDS) if everyone else (0, 0, 0)
        whole = f"{key} | >= {least}"
        old = kept.pop(whole, None)
        if old is not None and _agreement(old, everyone, metric) >= 0.9:
            kept.pop(f"{key} | {least}", None)
            return _with_twin(old, by_sig)
        if len(by_sig) > 1 or old is not None:
            rule = self._fit(key, least, everyone, metric, at_least=True, stated=stated, skip=skip)
            if rule:
                rule.skip = dict(skip)
                for sig in by_sig:  # the per-signature rules it replaces
                    kept.pop(f"{key} | {sig}", None)
                return _with_twin(rule, by_sig)
        rules: list[ArithRule] = []
        orphans: list = []
        for sig, members in by_sig.items():
            old = kept.pop(f"{key} | {sig}", None)
            if old is not None and _agreement(old, members, metric) >= 0.9:
                rules.append(old)
                continue
            rule = self._fit(key, sig, members, metric, stated=stated, skip=skip)
            if rule:
                rule.skip = dict(skip)
                rules.append(rule)
            else:
                orphans += members
        if orphans and len({tuple(len(m[0][k]) for k in _KINDS) for m in orphans}) > 1:
            low = tuple(min(len(m[0][k]) for m in orphans) for k in _KINDS)
            rule = self._fit(key, low, orphans, metric, at_least=True, stated=stated, skip=skip)
            if rule:
                rule.skip = dict(skip)
                rules += _with_twin(rule, {s: m for s, m in by_sig.items() if not any(r.signature == s for r in rules)})
        return rules

    def _choose_mode(self, texts: list[str]) -> str:
        for mode in self.modes:
            sizes = defaultdict(int)
            for x in texts:
                sizes[template_key(x, mode)] += 1
            covered = sum(n for n in sizes.values() if n >= self.min_cases)
            if covered >= 0.5 * len(texts) and len(sizes) < len(texts):
                return mode
        return "none"

    def _fit(self, key: str, sig: tuple[int, int, int], members: list, metric: Metric,
             at_least: bool = False, stated: Sequence[tuple[Shape, list[str], bool]] = (),
             skip: dict[str, int] | None = None) -> ArithRule | None:
        if len(members) < (1 if stated else self.min_cases) or sum(sig) == 0:
            return None
        if self.holdout:
            fit = [m for m in members if not _holdout(m[1])]
            held = [m for m in members if _holdout(m[1])]
            if len(fit) < 2 or not held:  # too few on one side: move one across, keep both non-empty
                ordered = sorted(members, key=lambda m: hashlib.sha256(m[1].encode()).hexdigest())
                held, fit = ordered[: max(1, len(ordered) // 3)], ordered[max(1, len(ordered) // 3):]
        else:
            fit, held = list(members), []
        # By position (d0 = first $ amount) and, where a kind occurs twice or more, by rank
        # (D0 = largest $ amount): phrasings that reorder the numbers keep their magnitudes.
        terminals = {
            f"{_VAR[k]}{i}": [m[0][k][i] for m in fit] for k, count in zip(_KINDS, sig) for i in range(count)
        }
        terminals.update({
            f"{_VAR[k].upper()}{i}": [sorted(m[0][k], reverse=True)[i] for m in fit]
            for k, count in zip(_KINDS, sig) if count >= 2 for i in range(count)
        })
        targets = [_parse_float(m[2]) for m in fit]
        labels = [m[2] for m in fit]
        chosen: dict[str, tuple[int, str]] = {}

        def accept(values: np.ndarray) -> bool:
            for places, rounding in _FORMATS:
                if all(metric(fmt_number(v, places, rounding) or "", y) for v, y in zip(values, labels)):
                    chosen["fmt"] = (places, rounding)
                    return True
            return False

        def held_ok(rule: ArithRule) -> bool:
            return all(metric(_evaluate(rule, nums, x) or "", y) for nums, x, y in held)

        # the formula the task states (as written, then solved for each other quantity): only which
        # number goes where is unknown
        for shape, names, _ in stated:
            named = [named_numbers(m[1], names, skip or {}) or [None] * len(names) for m in fit]
            shape_terminals = dict(terminals)
            for i in range(len(names)):  # a variable whose number its name's words found in every fit case
                if all(v[i] is not None for v in named):
                    shape_terminals[f"v{i}"] = [v[i] for v in named]
            symbols = [":" in n or "_" in n for n in names]  # "R_f: Risk-free rate" (formula.parse_formula)
            source = fit_shape(shape, len(names), shape_terminals, targets, accept, symbols=symbols)
            if source is not None:
                rule = ArithRule(key, sig, source, *chosen["fmt"], len(fit), len(held), dict(skip or {}),
                                 at_least=at_least, names=list(names) if "v" in source else [])
                if held_ok(rule):
                    return rule
        if stated and len(members) < self.min_cases:
            return None
        found = enumerate_expressions(
            terminals, targets, accept=accept, max_size=self.max_size, budget_s=self.budget_s, tolerance=0.0051
        )

        if found is not None:
            rule = ArithRule(key, sig, found.source, *chosen["fmt"], len(fit), len(held), at_least=at_least)
            if held_ok(rule):
                return rule
        source = fit_linear(terminals, targets, accept, labels)  # constants fitted: unit conversions, rates, offsets
        if source is None:
            return None
        rule = ArithRule(key, sig, source, *chosen["fmt"], len(fit), len(held), at_least=at_least)
        return rule if held_ok(rule) else None

    # -- the program ----------------------------------------------------------------------
    @staticmethod
    def body(rules: list[ArithRule], mode: str) -> dict[str, Any]:
        """The part's body as data (`harness/programs`, kind "arith"): what runs."""
        skips = {r.key: {k: int(r.skip.get(k, 0)) for k in _KINDS} for r in rules}
        names = {r.key: list(r.names) for r in rules if r.names}
        ordered = sorted(rules, key=lambda r: (r.key, r.signature))
        return {"kind": "arith", "mode": mode, "skip": dict(sorted(skips.items())),
                **({"names": dict(sorted(names.items()))} if names else {}),
                "rules": [{"key": r.key, "signature": list(r.signature), "expr": expr_tree(r.expression),
                           "places": r.places, "rounding": r.rounding, **({"at_least": True} if r.at_least else {})}
                          for r in ordered]}

    @classmethod
    def render(cls, rules: list[ArithRule], mode: str) -> str:
        """The rendering of `body` (a readable module, for people)."""
        from crystallise.harness.programs.rendering import render_body

        return render_body(cls.body(rules, mode))


_TOKEN = re.compile(r"\s*(\*\*|[-+*/()]|[dpnvDPN]\d{1,3}|\d+(?:\.\d*)?(?:e[-+]?\d+)?)")


def expr_tree(expression: str) -> dict[str, Any]:
    """An enumerated expression (`"(d0 / (1.0 + p0))"`) as a tree for the interpreter.

    A small reader for the enumerator's own grammar — terminals, numbers, fully bracketed
    `(a op b)` with + - * / ** — that compiles and evaluates nothing; anything else is refused.

    >>> expr_tree("(d0 / 12.0)")
    {'op': '/', 'args': [{'var': 'd0'}, {'const': 12.0}]}
    """
    tokens: list[str] = []
    pos = 0
    while pos < len(expression.rstrip()):
        m = _TOKEN.match(expression, pos)
        if m is None:
            raise ValueError(f"not an arithmetic expression over the terminals: {expression[:80]!r}")
        tokens.append(m.group(1))
        pos = m.end()

    def read(i: int) -> tuple[dict[str, Any], int]:
        if i >= len(tokens):
            raise ValueError(f"expression ends early: {expression[:80]!r}")
        t = tokens[i]
        if t == "(":
            left, i = read(i + 1)
            if i + 1 >= len(tokens) or tokens[i] not in ("+", "-", "*", "/", "**"):
                raise ValueError(f"expected an operator in {expression[:80]!r}")
            op = tokens[i]
            right, i = read(i + 1)
            if i >= len(tokens) or tokens[i] != ")":
                raise ValueError(f"unbalanced brackets in {expression[:80]!r}")
            return {"op": op, "args": [left, right]}, i + 1
        if t == "-":
            inner, i = read(i + 1)
            return {"op": "neg", "args": [inner]}, i
        if t[0] in "dpnvDPN":
            return {"var": t}, i + 1
        if t[0].isdigit():
            return {"const": float(t)}, i + 1
        raise ValueError(f"unexpected {t!r} in {expression[:80]!r}")

    tree, end = read(0)
    if end != len(tokens):
        raise ValueError(f"trailing text in {expression[:80]!r}")
    return tree


def _bounds(x: np.ndarray, y: np.ndarray, tol: float) -> list[tuple[float, float]] | None:
    """Per coefficient, the smallest and largest value any c with |x·c - y| <= tol allows (two
    linear programs each); None when no c fits every case within the answers' rounding."""
    from scipy.optimize import linprog

    a_ub = np.vstack([x, -x])
    b_ub = np.concatenate([y + tol, tol - y])
    free = [(None, None)] * x.shape[1]
    out = []
    for i in range(x.shape[1]):
        unit = np.eye(x.shape[1])[i]
        low = linprog(unit, A_ub=a_ub, b_ub=b_ub, bounds=free, method="highs")
        high = linprog(-unit, A_ub=a_ub, b_ub=b_ub, bounds=free, method="highs")
        if low.status != 0 or high.status != 0:
            return None
        out.append((float(low.fun), float(-high.fun)))
    return out


def _constant(low: float, high: float, max_digits: int = 8) -> float:
    """The constant to use, given the range [low, high] every fit case allows.

    The simplest number in range (fewest significant digits) when finding one is telling: its
    digit's step is at least four times the range's width, so a constant that is not that round
    would rarely land on it (2.54, 1.8, 32, 12.5). Otherwise nothing round is implied, and the
    middle of the range is the estimate that is furthest from being ruled out by the next case."""
    width = high - low
    size = max(abs(low), abs(high))
    if size == 0:
        return 0.0
    if low <= 0 <= high and width <= 0.25 * size:
        return 0.0
    for digits in range(1, max_digits + 1):
        step = 10.0 ** (math.floor(math.log10(size)) - digits + 1)
        if width > 0.25 * step:
            break
        k = math.ceil(low / step - 1e-9)
        if k * step <= high + 1e-12:
            return float(f"{k * step:.{digits + 1}g}")
    middle = (low + high) / 2
    step = 10.0 ** math.floor(math.log10(max(width, 1e-12) / 100))
    return round(middle / step) * step


def _term(name: str, coef: float) -> str:
    return name if coef == 1.0 else f"({name} * {coef!r})" if coef >= 0 else f"({name} * -{-coef!r})"


def fit_linear(terminals: dict[str, Sequence[float]], targets: Sequence[float | None],
               accept: Callable[[np.ndarray], bool], labels: Sequence[str] = (), max_digits: int = 8) -> str | None:
    """Constants fitted from the examples: `y = a*x` or `y = a*x + b` over one terminal (unit
    conversions, rates, offsets like °F = °C * 1.8 + 32), else the same over two.

    The answers are rounded, so each case allows a band of constants: linear programs give each
    constant's range over all cases, and `_constant` picks within it (a round number when the
    range makes one telling, else the middle); the result must reproduce every case, within the
    answers' own rounding and by `accept` (the task's metric after formatting). The expression
    is the enumerator's kind of text (`expr_tree` reads it); the held-out cases decide whether
    it is kept."""
    y = np.asarray([t if t is not None else np.nan for t in targets], dtype=float)
    if y.size < 3 or not np.all(np.isfinite(y)):
        return None
    decimals = max((len(t.split(".")[1]) if "." in t else 0 for t in labels), default=6)
    tol = 0.5 * 10.0 ** -decimals + 1e-9 * float(np.max(np.abs(y)) or 1.0)
    names = [n for n in terminals if n[0].islower()]  # positions; ranks only repeat them
    combos = [(n,) for n in names] + [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    for combo, offset in [(c, o) for c in combos[:30] for o in (False, True)]:  # through 0 first: y = a*x
        x = np.column_stack([np.asarray(terminals[n], dtype=float) for n in combo] + ([np.ones(y.size)] * offset))
        if x.shape[0] <= x.shape[1] + 1 or np.linalg.matrix_rank(x) < x.shape[1]:
            continue
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        bounds = _bounds(x, y, tol) if np.all(np.isfinite(coef)) else None
        if bounds is None:
            continue
        c = [_constant(lo, hi, max_digits) for lo, hi in bounds]
        if all(v == 0 for v in c[: len(combo)]):
            continue
        values = x @ np.asarray(c)
        if np.max(np.abs(values - y)) <= tol and accept(values):
            expr = _term(combo[0], c[0])
            for n, v in zip(combo[1:], c[1:len(combo)]):
                expr = f"({expr} + {_term(n, v)})"
            if offset and c[-1] > 0:
                expr = f"({expr} + {c[-1]!r})"
            elif offset and c[-1] < 0:
                expr = f"({expr} - {-c[-1]!r})"
            return expr
    return None


def _with_twin(rule: ArithRule, by_sig: dict[tuple[int, int, int], list]) -> list[ArithRule]:
    """An `at_least` rule, and the same expression as an exact rule for its own signature when cases
    have it: two units, verified apart (synth/verify.py), so the phrasings it was fitted on are not
    dropped with the extra-number phrasings it may answer wrongly, nor those kept on their evidence."""
    if not rule.at_least or rule.signature not in by_sig:
        return [rule]
    return [rule, ArithRule(**{**rule.to_dict(), "signature": tuple(rule.signature), "at_least": False,
                               "names": list(rule.names), "skip": dict(rule.skip)})]


def _agreement(rule: ArithRule, members: list, metric: Metric) -> float:
    """Share of a sub-group's cases an existing rule still reproduces."""
    ok = sum(1 for nums, x, y in members if metric(_evaluate(rule, nums, x) or "", y))
    return ok / max(1, len(members))


def _evaluate(rule: ArithRule, nums: dict[str, list[float]], text: str = "") -> str | None:
    """The rule on one input's numbers, by the interpreter (the expression is data, never eval'd)."""
    from crystallise.harness.programs.interp import _arith_expr, _Budget

    fn = _arith_expr(expr_tree(rule.expression), _Budget())
    env = {_VAR[k]: nums[k] for k in _KINDS}
    env.update({_VAR[k].upper(): sorted(nums[k], reverse=True) for k in _KINDS})
    env["v"] = named_numbers(text, rule.names, rule.skip) if rule.names else []
    try:
        value = fn(env)
    except (ArithmeticError, ValueError, TypeError, IndexError):
        return None
    if isinstance(value, complex):
        return None
    return fmt_number(value, rule.places, rule.rounding)
