"""One program from several strategies' modules: tried in order, each only on its verified units.

    compose([Part("arith", src_a, {"unit-1", ...}), Part("coder", src_b, {"k"})])  ->  module source

Each part's module is wrapped in a function (`_part_arith()`), so parts cannot clash on names
(two `solve`s, two `_SENTENCE`s), and the module is still plain, readable Python. The result
defines

    unit(value)           "arith:<unit>" for the first part whose verified unit claims value, else None
    hybrid_unit(value)    the hybrid part's verified unit for value (the runtime then has the LLM
                          extract that unit's fields), else None
    solve(value)          the first non-None answer of the code parts on their verified units
    solve(value, fields)  the hybrid part's answer from extracted fields

A part that raises is skipped (the next may answer); a value no verified unit claims is
answered None — the runtime falls back to the LLM.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Part", "compose"]


@dataclass(frozen=True)
class Part:
    strategy: str
    source: str
    units: frozenset[str] | None  # None: every unit (a lookup table is right by construction)
    hybrid: bool = False


def _check(source: str, entry: str = "solve") -> set[str]:
    """Top-level names of a part; refuses what cannot live inside a function."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            raise ValueError("a part may not use `global` / `nonlocal`")
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            raise ValueError("a part may not use __future__ imports")
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    if entry not in names:
        raise ValueError(f"a part must define {entry}(value)")
    return names


# Characters str.splitlines() breaks lines at that Python's tokenizer does not (or, for \r, that
# `indent` would count differently): a source holding one is shown as a string, never re-indented.
_OTHER_BREAKS = frozenset("\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
STRATEGIES = frozenset({"lookup", "arith", "strings", "coder", "hybrid"})


def nestable(source: str, entry: str = "solve") -> bool:
    """Whether LLM-written `source` can be shown nested in a function of the rendering (it parses,
    defines `entry` at top level, uses no `global`/`nonlocal`/`__future__`, and has no line break
    but \n: `indent` must see the lines the tokenizer sees)."""
    if not _OTHER_BREAKS.isdisjoint(source):
        return False
    try:
        names = _check(source, entry)
        return entry in names
    except (SyntaxError, ValueError):
        return False


def indent(source: str) -> str:
    """Indent by 4 spaces, except continuation lines of multi-line strings (their text is data)."""
    inside: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
            inside.update(range(tok.start[0] + 1, tok.end[0] + 1))
    lines = source.splitlines()
    return "\n".join(line if (i in inside or not line.strip()) else "    " + line
                     for i, line in enumerate(lines, 1))


def _ident(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name, flags=re.ASCII)[:40]


def compose(parts: Sequence[Part], *, title: str = "") -> str:
    """The composed module (see the module docstring)."""
    if not parts:
        raise ValueError("nothing to compose")
    chunks = [
        f'"""Crystallised program: {len(parts)} part(s), tried in order.\n\n'
        "Each part answers only the units it was verified on (held-out cases it never saw, replayed\n"
        "in the sandbox) and abstains (None) elsewhere; tasks/<name>/program.json holds the program itself\n"
        "(a tree the interpreter runs) and how each part was made. This file is its rendering, for people."
        '\n"""\n'
    ]
    table = []
    for i, part in enumerate(parts):
        names = _check(part.source)
        label = _ident(part.strategy) if part.strategy in STRATEGIES else "part"  # a name, never data
        fn = f"_part{i}_{label}"
        ret = "solve, unit" if "unit" in names else "solve, (lambda value: '')"
        units = "None" if part.units is None else _units(part.units)
        chunks.append(
            f"# ---- part {i + 1}: {label}"
            f"{'' if part.units is None else f' ({len(part.units)} verified units)'} ----\n"
            f"def {fn}():\n{indent(part.source.rstrip())}\n    return {ret}\n\n\n"
            f"_UNITS{i} = {units}\n"
        )
        table.append(f"    ({part.strategy!r}, *{fn}(), _UNITS{i}, {part.hybrid!r}),")
    chunks.append("_PARTS = [  # (strategy, solve, unit, verified units or None = all, hybrid)\n"
                  + "\n".join(table) + "\n]\n" + _DISPATCH)
    return "\n\n".join(chunks)


def _units(units: Iterable[str]) -> str:
    items = sorted(units)
    if not items:
        return "frozenset()"
    return "frozenset([\n" + "".join(f"    {u!r},\n" for u in items) + "])"


_DISPATCH = '''

def _claims(part_unit, units, value):
    try:
        u = part_unit(value)
    except Exception:
        return None
    if u is None or (units is not None and str(u) not in units):
        return None
    return str(u)


def unit(value):
    for name, _solve, part_unit, units, hybrid in _PARTS:
        u = _claims(part_unit, units, value)
        if u is not None and not hybrid:
            return name + ":" + u
    return None


def hybrid_unit(value):
    for name, _solve, part_unit, units, hybrid in _PARTS:
        u = _claims(part_unit, units, value) if hybrid else None
        if u is not None:
            return u
    return None


def solve(value, fields=None):
    for name, part_solve, part_unit, units, hybrid in _PARTS:
        if hybrid != (fields is not None) or _claims(part_unit, units, value) is None:
            continue
        try:
            out = part_solve(value) if fields is None else part_solve(value, fields)
        except Exception:
            continue
        if out is not None:
            return out
    return None
'''
