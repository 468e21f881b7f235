"""Bottom-up enumeration of arithmetic expressions with observational equivalence.

Given, for m examples, the values of some named terminals (numbers extracted from
each input) and the m target numbers, find the smallest expression over the
terminals that reproduces every target:

    terminals {"d0": [1e6, 5e5, 1.5e5], "d1": [5e5, 2.5e5, 7.5e4]}, targets [2, 2, 2]
      -> "(d0 / d1)"

Each expression is kept only as its vector of values over the m examples (one numpy
row); two expressions with the same vector are interchangeable on the evidence, so
only the first (smallest) one survives — this is what keeps the search tractable.
Size = number of leaves + operators; size 7 covers formulas like `d0 * (1 + p0) ** n0`.
"""

from __future__ import annotations

import time
from itertools import chain
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Found", "enumerate_expressions"]

CONSTANTS: tuple[float, ...] = (1.0, 2.0, 12.0, 100.0, 365.0)
_OPS: tuple[str, ...] = ("+", "-", "*", "/", "**")
_COMMUTATIVE = {"+", "*"}


@dataclass
class Found:
    source: str  # python expression over the terminal names
    size: int
    values: list[float]


@dataclass
class _Level:
    rows: np.ndarray  # (k, m) values
    src: list[str]  # k source strings, built lazily for the larger levels
    uses_input: np.ndarray  # (k,) bool: depends on at least one terminal


def _apply(op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return a / b
        # keep powers small and real: huge exponents are never a financial formula
        out = np.power(np.abs(a), b) * np.where(a < 0, np.nan, 1.0)
        return np.where(np.abs(b) <= 400, out, np.nan)


def enumerate_expressions(
    terminals: dict[str, Sequence[float]],
    targets: Sequence[float],
    *,
    accept: Callable[[np.ndarray], bool] | None = None,
    tolerance: float = 0.005,
    max_size: int = 7,
    budget_s: float = 2.0,
    constants: Sequence[float] = CONSTANTS,
) -> Found | None:
    """Smallest expression within `tolerance` of every target that `accept` also likes.

    `accept(values)` is the exact check (e.g. formatting + the benchmark's metric);
    the tolerance test is only a fast numpy prefilter. Expressions that use no
    terminal (pure constants) are never returned: a program must depend on its input.
    """
    t = np.asarray(targets, dtype=float)
    m = t.shape[0]
    if m == 0 or not terminals:
        return None
    deadline = time.monotonic() + budget_s
    names = list(terminals)
    leaf_rows = [np.asarray(terminals[n], dtype=float) for n in names]
    leaf_rows += [np.full(m, c) for c in constants]
    leaf_src = names + [repr(c) for c in constants]
    leaf_uses = [True] * len(names) + [False] * len(constants)
    seen: set[bytes] = set()
    levels: dict[int, _Level] = {}

    def keep(rows: np.ndarray, uses: np.ndarray, last: bool) -> tuple[np.ndarray, np.ndarray]:
        """Indices and rows of finite rows not equal (to 1e-9) to an earlier row.

        Equivalence is per kind: an input-dependent row equal to a constant row is kept,
        because constants are never accepted as answers (with fit cases that all have the
        same answer, `d0 / d1` would otherwise vanish behind the constant 2.0).
        The last level is checked but never combined, so it skips the global memo."""
        finite = np.all(np.isfinite(rows), axis=1) & np.all(np.abs(rows) < 1e15, axis=1)
        idx = np.nonzero(finite)[0]
        if idx.size == 0:
            return idx, np.zeros((0, m))
        keys = np.round(rows[idx], 9) + 0.0  # +0.0 folds -0.0 into 0.0
        keys = np.hstack([keys, uses[idx, None].astype(float)])
        _, first = np.unique(keys, axis=0, return_index=True)
        first = np.sort(first)
        idx, keys = idx[first], keys[first]
        if not last:
            fresh = np.fromiter((k.tobytes() not in seen for k in keys), dtype=bool, count=len(keys))
            seen.update(k.tobytes() for k in keys[fresh])
            idx = idx[fresh]
        return idx, rows[idx]

    def check(level: _Level) -> Found | None:
        close = np.all(np.abs(level.rows - t) <= tolerance + 1e-9 * np.abs(t), axis=1) & level.uses_input
        for i in np.nonzero(close)[0]:
            if accept is None or accept(level.rows[i]):
                return Found(source=level.src[i], size=size, values=level.rows[i].tolist())
        return None

    size = 1
    rows = np.vstack(leaf_rows)
    idx, rows = keep(rows, np.asarray(leaf_uses), last=False)
    levels[1] = _Level(rows, [leaf_src[i] for i in idx], np.asarray(leaf_uses)[idx])
    found = check(levels[1])
    if found:
        return found
    for size in range(3, max_size + 1, 2):
        parts_rows: list[np.ndarray] = []
        parts_src: list[list[str]] = []
        parts_uses: list[np.ndarray] = []
        for ls in range(1, size - 1, 2):
            rs = size - 1 - ls
            if ls not in levels or rs not in levels:
                continue
            left, right = levels[ls], levels[rs]
            for op in _OPS:
                if op in _COMMUTATIVE and ls > rs:
                    continue
                if time.monotonic() > deadline:
                    return None
                combo = _apply(op, left.rows[:, None, :], right.rows[None, :, :]).reshape(-1, m)
                uses = (left.uses_input[:, None] | right.uses_input[None, :]).reshape(-1)
                idx, kept = keep(combo, uses, last=size == max_size)
                if idx.size == 0:
                    continue
                li, ri = np.divmod(idx, right.rows.shape[0])
                parts_rows.append(kept)
                parts_src.append([f"({left.src[a]} {op} {right.src[b]})" for a, b in zip(li, ri)])
                parts_uses.append(uses[idx])
        if not parts_rows:
            return None
        level = _Level(np.vstack(parts_rows), list(chain.from_iterable(parts_src)), np.concatenate(parts_uses))
        levels[size] = level
        found = check(level)
        if found:
            return found
    return None
