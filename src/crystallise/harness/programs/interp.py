"""The interpreter: a learned program is a JSON tree, run here by plain functions over data.

    load(tree) -> Program           validate every node, build closures once (no exec/eval/compile)
    Program.unit(value)             "<strategy>:<unit>" of the first code part that claims value
    Program.hybrid_unit(value)      the hybrid part's unit for value (the LLM then fills its fields)
    Program.run(value[, fields])    Result(output, error): the first part that answers

A tree (`program.json` → "program"):

    {"format": "crystallise.program/1",
     "parts": [{"strategy": "arith", "units": ["<key> | (2, 0, 0)"], "hybrid": false,
                "body": {"kind": "arith", "mode": "sentence", "skip": {...}, "rules": [...]}}, ...]}

Bodies (one per strategy family) and their expression nodes:

    lookup   {"table": {"<input as JSON>": answer}}
    arith    {"mode", "skip": {key: {"$": i, "%": j, "n": k}},
              "rules": [{"key", "signature": [d, p, n], "expr": E, "places", "rounding"}]}
             E = {"var": "d0"} | {"const": 12.0} | {"op": "+"|"-"|"*"|"/"|"**"|"neg", "args": [E, ...]}
    grouped  {"mode", "groups": [{"unit", "prefix", "suffix", "arg_keys": null | [k, ...],
                                  "codec": {"kind", "true", "false"}, "fn": F}]}
             F = {"kind": "strings", "arg_types": [...], "out_type": t, "expr": S}
               | {"kind": "source", "source": "<LLM-written def solve(...)>"}
             S = {"arg": i} | {"const": json value} | {"call": <strings_runtime helper>, "args": [S, ...]}
    hybrid   {"mode", "units": {key: {"prefix", "suffix", "fields": [...], "places", "rounding",
                                      "compute": {"kind": "source", "source": "<LLM-written compute>"}}}}

Everything in a tree is data: constants stay values, names are checked against fixed tables,
and the only code that is not ours — LLM-written `source` — runs in the OS-isolated sandbox
(`runner`), never here. Evaluation mirrors the rendering (`render.py`) exactly: the property
tests run both and compare.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from crystallise.errors import SandboxError
from crystallise.harness.synth import strings_runtime as rt
from crystallise.harness.synth.numbers import extract_numbers, fmt_number, named_numbers
from crystallise.harness.synth.template import encode, key_of, payload

__all__ = ["FORMAT", "HELPERS", "Program", "ProgramError", "Result", "Runner", "load", "load_body", "snap",
           "strings_fn"]

from crystallise.harness.programs.checks import (  # noqa: F401 - re-exported: the tree's vocabulary
    ARITH_OPS, CODECS, FMT_SPECS, FORMAT, MAX_PLACES, MODES, ROUNDINGS, TYPES, ProgramError,
)
from crystallise.harness.programs.checks import Budget as _Budget
from crystallise.harness.programs.checks import json_value as _json_value
from crystallise.harness.programs.checks import need as _need
from crystallise.harness.programs.checks import need_int as _int
from crystallise.harness.programs.checks import need_keys as _keys
from crystallise.harness.programs.checks import need_str as _str

# The strings DSL: runtime helpers by name, with their arity (None: any number of arguments).
HELPERS: dict[str, tuple[Callable[..., Any], int | None]] = {}
for _name, _fn in vars(rt).items():
    if callable(_fn) and getattr(_fn, "__module__", None) == rt.__name__ and not _name.startswith("_"):
        _params = inspect.signature(inspect.unwrap(_fn)).parameters.values()
        _var = any(p.kind is p.VAR_POSITIONAL for p in _params)
        HELPERS[_name] = (_fn, None if _var else len(list(_params)))
for _internal in ("isstr", "isint", "islist", "spans", "cached_spans", "cached_long_spans"):
    HELPERS.pop(_internal, None)

Runner = Callable[[str], Any]  # source -> an object with call_fn(name, *args) (a Sandbox)


@dataclass(frozen=True)
class Result:
    """What a program said about one input: its answer (None: abstain) and, when a part
    failed on the way (a sandbox limit, a malformed reply), why."""

    output: Any = None
    error: str | None = None


# -- arith ----------------------------------------------------------------------------------------------

_VARS = {"d": "$", "p": "%", "n": "n"}
MAX_NAMES = 5  # variables of a stated formula (synth/formula.py)
MAX_FALLBACK_NUMBERS = 8  # an at_least rule reads inputs of at most this many numbers (after the template's)


def _arith_expr(node: Any, budget: _Budget, depth: int = 0) -> Callable[[dict[str, list[float]]], Any]:
    budget.tick(depth, "arith expression")
    _need(isinstance(node, dict), "arith expression nodes must be objects")
    if "var" in node:
        _keys(node, "arith var", {"var"})
        name = _str(node["var"], "var")
        letter = name[:1]
        _need(letter in "dpnvDPN" and letter != "" and name[1:].isdigit() and len(name) <= 4,
              f"unknown arith variable {name!r}")
        i = int(name[1:])
        return lambda env: env[letter][i]
    if "const" in node:
        _keys(node, "arith const", {"const"})
        c = node["const"]
        _need(type(c) in (int, float) and math.isfinite(c), "arith constants must be finite numbers")
        value = float(c)  # floats only: an int ** int could grow without bound
        return lambda env: value
    _keys(node, "arith op", {"op", "args"})
    op = node["op"]
    _need(op in ARITH_OPS, f"unknown arith operator {op!r}")
    args = node["args"]
    _need(type(args) is list and len(args) == ARITH_OPS[op], f"{op} takes {ARITH_OPS[op]} argument(s)")
    kids = [_arith_expr(a, budget, depth + 1) for a in args]
    if op == "neg":
        (a,) = kids
        return lambda env: -a(env)
    a, b = kids
    return {
        "+": lambda env: a(env) + b(env),
        "-": lambda env: a(env) - b(env),
        "*": lambda env: a(env) * b(env),
        "/": lambda env: a(env) / b(env),
        "**": lambda env: a(env) ** b(env),
    }[op]


class _Arith:
    def __init__(self, body: Mapping[str, Any], budget: _Budget) -> None:
        _keys(body, "arith body", {"kind", "mode", "skip", "rules"}, {"names"})
        self.mode = body["mode"]
        _need(self.mode in MODES, f"mode must be one of {MODES}")
        _need(isinstance(body["skip"], dict), "skip must be an object")
        self.skip: dict[str, dict[str, int]] = {}
        budget.add(len(body["skip"]), "arith templates")
        for key, s in body["skip"].items():
            s = _keys(s, "skip entry", {"$", "%", "n"})
            self.skip[_str(key, "skip key")] = {k: _int(s[k], "skip count", 0, 64) for k in ("$", "%", "n")}
        # a template's stated variables: v<i> is the number named by names[key][i] (`named_numbers`)
        self.names: dict[str, list[str]] = {}
        names = body.get("names", {})
        _need(isinstance(names, dict), "names must be an object")
        budget.add(len(names), "arith templates")
        for key, ns in names.items():
            _need(type(ns) is list and 0 < len(ns) <= MAX_NAMES, f"names: a list of 1 to {MAX_NAMES} strings")
            self.names[_str(key, "names key")] = [_str(n, "name")[:100] for n in ns]
        _need(type(body["rules"]) is list, "rules must be a list")
        self.rules: dict[tuple[str, tuple[int, ...]], tuple[Callable[..., Any], int, str]] = {}
        # per template, at most one rule for any signature with at least these counts (`"at_least": true`):
        # used when no rule was verified for the input's exact signature
        self.fallback: dict[str, tuple[tuple[int, ...], tuple[Callable[..., Any], int, str]]] = {}
        for r in body["rules"]:
            _keys(r, "arith rule", {"key", "signature", "expr", "places", "rounding"}, {"at_least"})
            sig = r["signature"]
            _need(type(sig) is list and len(sig) == 3, "signature must be [d, p, n]")
            sig_t = tuple(_int(v, "signature count", 0, 64) for v in sig)
            places = _int(r["places"], "places", -1, MAX_PLACES)
            _need(r["rounding"] in ROUNDINGS, f"rounding must be one of {ROUNDINGS}")
            at_least = r.get("at_least", False)
            _need(type(at_least) is bool, "at_least must be a bool")
            rule = (_arith_expr(r["expr"], budget), places, r["rounding"])
            key = _str(r["key"], "rule key")
            if at_least:
                _need(key not in self.fallback, f"at most one at_least rule per template ({key[:60]!r})")
                self.fallback[key] = (sig_t, rule)
            else:
                self.rules[(key, sig_t)] = rule
        # the most numbers any rule reads (its template's own included): an input with more has no rule,
        # so extraction stops there (a hostile input of 50,000 numbers costs what 9 do)
        sizes = [sum(sig) + sum(self.skip.get(key, {}).values()) for key, sig in self.rules]
        sizes += [MAX_FALLBACK_NUMBERS + sum(self.skip.get(key, {}).values()) for key in self.fallback]
        self.limit = max(sizes, default=0) + 1

    def _match(self, text: Any) -> tuple[str, tuple[int, ...], dict[str, list[float]], Any] | None:
        if not isinstance(text, str):
            return None
        key = key_of(text, self.mode)
        skip = self.skip.get(key)
        if skip is None:
            return None
        found = extract_numbers(text, self.limit)
        if found is None:
            return None
        nums = {k: v[skip[k]:] for k, v in found.items()}
        sig = (len(nums["$"]), len(nums["%"]), len(nums["n"]))
        rule = self.rules.get((key, sig))
        if rule is None and key in self.fallback:
            least, rule = self.fallback[key]
            if sum(sig) > MAX_FALLBACK_NUMBERS or any(a < b for a, b in zip(sig, least)):
                return None
            return key, least, self._named(nums, text, key), rule
        return None if rule is None else (key, sig, self._named(nums, text, key), rule)

    def _named(self, nums: dict[str, list[float]], text: str, key: str) -> dict[str, Any]:
        names = self.names.get(key)
        return {**nums, "v": named_numbers(text, names, self.skip[key]) if names else []}

    def _unit(self, m: tuple[str, tuple[int, ...], dict[str, list[float]], Any]) -> str:
        exact = self.rules.get((m[0], m[1])) is m[3]
        return f"{m[0]} | {m[1]}" if exact else f"{m[0]} | >= {m[1]}"

    def unit(self, value: Any) -> str | None:
        m = self._match(value)
        return None if m is None else self._unit(m)

    def solve(self, value: Any, fields: Any = None) -> Any:
        return self.answer(value, fields, None)[1]

    def answer(self, value: Any, fields: Any, allowed: frozenset[str] | None) -> tuple[str | None, Any]:
        """(unit, answer) in one pass; the answer only for a unit in `allowed` (None: any)."""
        m = self._match(value)
        if m is None:
            return None, None
        unit = self._unit(m)
        if allowed is not None and unit not in allowed:
            return None, None
        return unit, self._compute(m)

    def _compute(self, m: tuple[str, tuple[int, ...], dict[str, list[float]], Any]) -> Any:
        _, _, nums, (fn, places, rounding) = m
        env = {letter: nums[kind] for letter, kind in _VARS.items()}
        env["v"] = nums["v"]
        env.update({letter.upper(): sorted(nums[kind], reverse=True) for letter, kind in _VARS.items()})
        try:
            out = fn(env)
        except (ArithmeticError, ValueError, TypeError, IndexError):
            return None
        if isinstance(out, complex):
            return None
        return fmt_number(out, places, rounding)


# -- lookup ---------------------------------------------------------------------------------------------


class _Lookup:
    def __init__(self, body: Mapping[str, Any], budget: _Budget) -> None:
        _keys(body, "lookup body", {"kind", "table"})
        _need(isinstance(body["table"], dict), "table must be an object")
        budget.add(len(body["table"]), "lookup entries")
        self.table = {_str(k, "table key"): _json_value(v, "table value") for k, v in body["table"].items()}

    @staticmethod
    def _key(value: Any) -> str:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)

    def unit(self, value: Any) -> str | None:
        try:
            return "table" if self._key(value) in self.table else None
        except (TypeError, ValueError):
            return None

    def solve(self, value: Any, fields: Any = None) -> Any:
        try:
            return self.table.get(self._key(value))
        except (TypeError, ValueError):
            return None

    def answer(self, value: Any, fields: Any, allowed: frozenset[str] | None) -> tuple[str | None, Any]:
        try:
            key = self._key(value)
        except (TypeError, ValueError):
            return None, None
        if key not in self.table or (allowed is not None and "table" not in allowed):
            return None, None
        return "table", self.table[key]


# -- strings --------------------------------------------------------------------------------------------

_CHECK: dict[str, Callable[[Any], bool]] = {
    "str": lambda v: rt.isstr(v), "int": lambda v: rt.isint(v), "list": lambda v: rt.islist(v),
    "bool": lambda v: type(v) is bool,
}


def _strings_expr(node: Any, arity: int, budget: _Budget, depth: int = 0) -> Callable[[list[Any]], Any]:
    budget.tick(depth, "strings expression")
    _need(isinstance(node, dict), "strings expression nodes must be objects")
    if "arg" in node:
        _keys(node, "strings arg", {"arg"})
        i = _int(node["arg"], "arg index", 0, max(0, arity - 1))
        _need(i < arity, f"arg {i} out of range for {arity} argument(s)")
        return lambda args: args[i]
    if "const" in node:
        _keys(node, "strings const", {"const"})
        c = _json_value(node["const"], "strings const")
        _need(c is None or type(c) in (str, int, bool) or (type(c) is list and all(type(v) is int for v in c)),
              "strings constants are str, int, bool, a list of ints or null")
        if type(c) is list:
            return lambda args: list(c)
        return lambda args: c
    _keys(node, "strings call", {"call", "args"})
    name = node["call"]
    _need(isinstance(name, str) and name in HELPERS, f"unknown strings helper {name!r}")
    fn, n = HELPERS[name]
    args = node["args"]
    _need(type(args) is list and (n is None or len(args) == n), f"{name} takes {n} argument(s)")
    if name == "fmt":
        spec = args[1] if len(args) == 2 else None
        _need(isinstance(spec, dict) and spec.get("const") in FMT_SPECS,
              f"fmt's format spec must be one of {sorted(FMT_SPECS)}")
    kids = [_strings_expr(a, arity, budget, depth + 1) for a in args]
    return lambda a: fn(*[k(a) for k in kids])


class _StringsFn:
    def __init__(self, fn: Mapping[str, Any], budget: _Budget) -> None:
        _keys(fn, "strings program", {"kind", "arg_types", "out_type", "expr"})
        types = fn["arg_types"]
        _need(type(types) is list and len(types) <= 16 and all(t in TYPES for t in types),
              f"arg_types must list types of {TYPES}")
        _need(fn["out_type"] in TYPES, f"out_type must be one of {TYPES}")
        self.checks = [_CHECK[t] for t in types]
        self.out = _CHECK[fn["out_type"]]
        self.expr = _strings_expr(fn["expr"], len(types), budget)

    def __call__(self, *args: Any) -> Any:
        if len(args) != len(self.checks) or not all(c(a) for c, a in zip(self.checks, args)):
            return None
        try:
            out = self.expr(list(args))
        except Exception:  # noqa: BLE001 - a helper on an odd value: the program abstains, as rendered
            return None
        return out if self.out(out) else None


class _SourceFn:
    """LLM-written code: a function of the sandbox, never of this process."""

    def __init__(self, fn: Mapping[str, Any], runner: Runner | None, entry: str) -> None:
        _keys(fn, "source program", {"kind", "source"})
        self.source = _str(fn["source"], "source")
        _need(len(self.source) <= 200_000, "source is over 200,000 characters")
        self.runner = runner
        # the worker serves `solve`; a hybrid unit's function is `compute`
        self.run_source = self.source if entry == "solve" else f"{self.source.rstrip()}\n\n\nsolve = {entry}\n"

    def __call__(self, *args: Any) -> Any:
        if self.runner is None:
            raise SandboxError("this program has LLM-written parts and no sandbox was given to run them")
        return self.runner(self.run_source).call(*args)


def strings_fn(tree: Any) -> Callable[..., Any]:
    """One strings-DSL function (`{"kind": "strings", ...}`), validated, as a callable."""
    return _StringsFn(tree, _Budget())


def _fn(fn: Any, runner: Runner | None, budget: _Budget, entry: str = "solve") -> Callable[..., Any]:
    _need(isinstance(fn, dict) and fn.get("kind") in ("strings", "source"), "fn.kind must be strings or source")
    return _StringsFn(fn, budget) if fn["kind"] == "strings" else _SourceFn(fn, runner, entry)


def _compute(fn: Any, runner: Runner | None) -> _SourceFn:
    _need(isinstance(fn, dict) and fn.get("kind") == "source", "a hybrid unit's compute is LLM-written source")
    return _SourceFn(fn, runner, "compute")


def _codec(c: Any) -> tuple[str, str, str]:
    _keys(c, "codec", {"kind", "true", "false"})
    _need(c["kind"] in CODECS, f"codec kind must be one of {CODECS}")
    return c["kind"], _str(c["true"], "codec true"), _str(c["false"], "codec false")


class _Grouped:
    def __init__(self, body: Mapping[str, Any], runner: Runner | None, budget: _Budget) -> None:
        _keys(body, "grouped body", {"kind", "mode", "groups"})
        self.mode = body["mode"]
        _need(self.mode in MODES, f"mode must be one of {MODES}")
        _need(type(body["groups"]) is list, "groups must be a list")
        self.groups: dict[str, tuple[str, str, tuple[str, ...] | None, Callable[..., Any], tuple[str, str, str]]] = {}
        budget.add(len(body["groups"]), "groups")
        for g in body["groups"]:
            _keys(g, "group", {"unit", "prefix", "suffix", "arg_keys", "codec", "fn"})
            keys = g["arg_keys"]
            if keys is not None:
                _need(type(keys) is list and all(type(k) is str for k in keys), "arg_keys must be strings")
                keys = tuple(keys)
            unit = _str(g["unit"], "group unit")
            _need(unit not in self.groups, f"group {unit!r} appears twice")
            self.groups[unit] = (_str(g["prefix"], "prefix"), _str(g["suffix"], "suffix"), keys,
                                 _fn(g["fn"], runner, budget), _codec(g["codec"]))

    def unit(self, value: Any) -> str | None:
        if isinstance(value, dict):
            key = "args:" + ",".join(sorted(str(k) for k in value))
            return key if key in self.groups else None
        if not isinstance(value, str):
            return None
        key = key_of(value, self.mode)
        g = self.groups.get(key)
        if g is None or g[2] is not None or payload(value, g[0], g[1]) is None:
            return None
        return key

    def solve(self, value: Any, fields: Any = None) -> Any:
        return self.answer(value, fields, None)[1]

    def answer(self, value: Any, fields: Any, allowed: frozenset[str] | None) -> tuple[str | None, Any]:
        key = self.unit(value)
        if key is None or (allowed is not None and key not in allowed):
            return None, None
        return key, self._solve(key, value)

    def _solve(self, key: str, value: Any) -> Any:
        prefix, suffix, arg_keys, fn, codec = self.groups[key]
        out = fn(*[value[k] for k in arg_keys]) if arg_keys is not None else fn(payload(value, prefix, suffix))
        return encode(out, *codec, value if isinstance(value, str) else "")


# -- hybrid ---------------------------------------------------------------------------------------------


def snap(text: str, x: Any) -> float | None:
    """The typed number of `text` that `x` names (as written, scaled, or already typed), else x.

    The LLM only says which number plays which role; the value used is the one in the text."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    if not math.isfinite(x):
        return None

    def close(a: float, b: float) -> bool:
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))

    spans = _number_spans(text)
    if any(close(x, t) for _, _, t in spans):
        return x
    hits = {t for r, s, t in spans if close(x, r) or close(x, s)}
    return hits.pop() if len(hits) == 1 else x


def _number_spans(text: str) -> list[tuple[float, float, float]]:
    from crystallise.harness.synth.numbers import number_spans

    return number_spans(text)


class _Hybrid:
    def __init__(self, body: Mapping[str, Any], runner: Runner | None, budget: _Budget) -> None:
        _keys(body, "hybrid body", {"kind", "mode", "units"})
        self.mode = body["mode"]
        _need(self.mode in MODES, f"mode must be one of {MODES}")
        _need(isinstance(body["units"], dict), "units must be an object")
        self.units: dict[str, tuple[str, str, tuple[str, ...], Callable[..., Any], int, str]] = {}
        budget.add(len(body["units"]), "hybrid units")
        for key, u in body["units"].items():
            _keys(u, "hybrid unit", {"prefix", "suffix", "fields", "places", "rounding", "compute"})
            fields = u["fields"]
            _need(type(fields) is list and 0 < len(fields) <= 16 and all(type(f) is str for f in fields),
                  "fields must be 1-16 names")
            _need(u["rounding"] in ROUNDINGS, f"rounding must be one of {ROUNDINGS}")
            self.units[_str(key, "hybrid unit key")] = (
                _str(u["prefix"], "prefix"), _str(u["suffix"], "suffix"), tuple(fields),
                _compute(u["compute"], runner), _int(u["places"], "places", -1, MAX_PLACES),
                u["rounding"])

    def unit(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return None
        key = key_of(value, self.mode)
        u = self.units.get(key)
        return key if u is not None and payload(value, u[0], u[1]) is not None else None

    def solve(self, value: Any, fields: Any = None) -> Any:
        return self.answer(value, fields, None)[1]

    def answer(self, value: Any, fields: Any, allowed: frozenset[str] | None) -> tuple[str | None, Any]:
        key = self.unit(value) if isinstance(fields, dict) else None
        if key is None or (allowed is not None and key not in allowed):
            return None, None
        return key, self._solve(key, value, fields)

    def _solve(self, key: str, value: Any, fields: dict[str, Any]) -> Any:
        prefix, suffix, names, compute, places, rounding = self.units[key]
        text = payload(value, prefix, suffix)
        args = [snap(text, fields.get(n)) for n in names]
        if None in args:
            return None
        out = compute(*args)
        if isinstance(out, bool) or not isinstance(out, (int, float)):
            return None
        return fmt_number(out, places, rounding)


# -- the program ----------------------------------------------------------------------------------------

_BODIES = {"arith": _Arith, "lookup": _Lookup}


@dataclass(frozen=True)
class _Part:
    strategy: str
    units: frozenset[str] | None
    hybrid: bool
    body: Any

    def claims(self, value: Any) -> str | None:
        try:
            u = self.body.unit(value)
        except Exception:  # noqa: BLE001 - a unit test that fails claims nothing
            return None
        if u is None or (self.units is not None and str(u) not in self.units):
            return None
        return str(u)


class Program:
    """A loaded, validated program (see the module docstring). Build with `load`."""

    def __init__(self, tree: Mapping[str, Any], parts: list[_Part]) -> None:
        self.tree = tree
        self.parts = parts

    @property
    def has_source(self) -> bool:
        """Whether any part is LLM-written (needs the sandbox)."""
        return any(isinstance(f, _SourceFn) for p in self.parts for f in _fns(p.body))

    def unit(self, value: Any) -> str | None:
        for p in self.parts:
            u = p.claims(value) if not p.hybrid else None
            if u is not None:
                return f"{p.strategy}:{u}"
        return None

    def hybrid_unit(self, value: Any) -> str | None:
        for p in self.parts:
            u = p.claims(value) if p.hybrid else None
            if u is not None:
                return u
        return None

    def run(self, value: Any, fields: dict[str, Any] | None = None) -> Result:
        """The first answer of the parts that claim `value` (hybrid parts only with `fields`)."""
        error = None
        for p in self.parts:
            if p.hybrid != (fields is not None):
                continue
            try:
                _, out = p.body.answer(value, fields, p.units)
            except SandboxError as e:
                error = error or f"{p.strategy}: {type(e).__name__}: {e}"
                continue
            except Exception as e:  # noqa: BLE001 - a part that raises is skipped, as rendered
                error = error or f"{p.strategy}: {type(e).__name__}: {e}"
                continue
            if out is not None:
                return Result(out)
        return Result(None, error)

    def solve(self, value: Any, fields: dict[str, Any] | None = None) -> Any:
        return self.run(value, fields).output


def _fns(body: Any) -> list[Any]:
    if isinstance(body, _Grouped):
        return [g[3] for g in body.groups.values()]
    if isinstance(body, _Hybrid):
        return [u[3] for u in body.units.values()]
    return []


def load_body(body: Any, runner: Runner | None = None, budget: _Budget | None = None) -> Any:
    """One part's body, validated and ready to run (`unit(value)`, `solve(value, fields)`)."""
    budget = budget or _Budget()
    _need(isinstance(body, dict), "a part's body must be an object")
    kind = body.get("kind")
    if kind in _BODIES:
        return _BODIES[kind](body, budget)
    if kind == "grouped":
        return _Grouped(body, runner, budget)
    if kind == "hybrid":
        return _Hybrid(body, runner, budget)
    raise ProgramError(f"unknown part kind {kind!r}: expected arith, lookup, grouped or hybrid")


def load(tree: Any, runner: Runner | None = None) -> Program:
    """Validate `tree` and build its program; ProgramError names the first problem.

    `runner(source)` gives the sandbox that runs LLM-written parts (a program without such
    parts needs none)."""
    _keys(tree, "program", {"format", "parts"}, {"title"})
    _need(tree["format"] == FORMAT, f"unknown program format {tree.get('format')!r}: expected {FORMAT!r}")
    _need(type(tree["parts"]) is list and tree["parts"], "a program has at least one part")
    budget = _Budget()
    parts = []
    for p in tree["parts"]:
        _keys(p, "part", {"strategy", "units", "hybrid", "body"})
        units = p["units"]
        _need(units is None or (type(units) is list and all(type(u) is str for u in units)),
              "units must be null or a list of strings")
        _need(type(p["hybrid"]) is bool, "hybrid must be a bool")
        parts.append(_Part(_str(p["strategy"], "strategy"), None if units is None else frozenset(units),
                           p["hybrid"], load_body(p["body"], runner, budget)))
    return Program(tree, parts)
