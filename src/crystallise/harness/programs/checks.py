"""Checks every node of a program tree passes before anything is built from it (`interp.py`).

Limits, the error, and the small readers that refuse anything but the expected shape: known
fields only, the right types, finite numbers, bounded depth and size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from crystallise.errors import ValidationError

__all__ = ["ARITH_OPS", "CODECS", "FMT_SPECS", "FORMAT", "MAX_DEPTH", "MAX_NODES", "MAX_PLACES", "MODES",
           "ROUNDINGS", "TYPES", "Budget", "ProgramError", "json_value", "need", "need_int", "need_keys",
           "need_str"]

FORMAT = "crystallise.program/1"
MAX_DEPTH = 48
MAX_NODES = 200_000
MODES = ("sentence", "line", "shape", "none")
ROUNDINGS = ("half_up", "half_even", "")
TYPES = ("str", "int", "bool", "list")
CODECS = ("str", "int", "bool", "option", "any")
ARITH_OPS = {"+": 2, "-": 2, "*": 2, "/": 2, "**": 2, "neg": 1}
FMT_SPECS = frozenset({",", "02d", "03d", "04d", "05d", ".1f", ".2f", "+d"})
MAX_PLACES = 12


class ProgramError(ValidationError):
    """A program tree that is not well-formed: it is refused, never run."""


# -- readers --------------------------------------------------------------------------------


class Budget:
    """Counts every node, table entry, template and unit of one program against MAX_NODES, before
    anything is built from them (a hostile program.json must not cost the host its memory)."""

    def __init__(self) -> None:
        self.nodes = 0

    def add(self, n: int, where: str) -> None:
        self.nodes += n
        if self.nodes > MAX_NODES:
            raise ProgramError(f"program has more than {MAX_NODES} nodes ({where})")

    def tick(self, depth: int, where: str) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ProgramError(f"program has more than {MAX_NODES} nodes")
        if depth > MAX_DEPTH:
            raise ProgramError(f"{where}: expression nested deeper than {MAX_DEPTH}")


def need(cond: bool, message: str) -> None:
    if not cond:
        raise ProgramError(message)


def need_str(value: Any, where: str) -> str:
    need(type(value) is str, f"{where} must be a string")
    return value


def need_int(value: Any, where: str, lo: int = 0, hi: int = 1 << 30) -> int:
    need(type(value) is int and lo <= value <= hi, f"{where} must be an int in [{lo}, {hi}]")
    return value


def need_keys(obj: Any, where: str, required: set[str], optional: set[str] = frozenset()) -> Mapping[str, Any]:
    need(isinstance(obj, dict), f"{where} must be an object")
    missing = required - set(obj)
    extra = set(obj) - required - optional
    need(not missing, f"{where} lacks {sorted(missing)}")
    need(not extra, f"{where} has unknown fields {sorted(extra)}")
    return obj


def json_value(value: Any, where: str, depth: int = 0) -> Any:
    """A JSON value with finite numbers (NaN/Infinity have no literal and no JSON form)."""
    need(depth <= MAX_DEPTH, f"{where}: value nested too deep")
    if value is None or type(value) in (bool, str, int):
        return value
    if type(value) is float:
        need(math.isfinite(value), f"{where}: numbers must be finite")
        return value
    if type(value) is list:
        return [json_value(v, where, depth + 1) for v in value]
    if type(value) is dict:
        return {need_str(k, where): json_value(v, where, depth + 1) for k, v in value.items()}
    raise ProgramError(f"{where}: {type(value).__name__} is not a JSON value")
