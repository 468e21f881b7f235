"""The rendering: a program tree as one readable Python module (`tasks/<name>/code.py`).

    render(tree) -> str

`code.py` is for people (to read and diff what was learned) and for the equivalence tests
(the rendering, run in the sandbox, gives the interpreter's answers). The host never runs it:
the tree is the program (`interp.py`).

Every value that came from data — a template's text, a table entry, a constant — is written
as a Python literal with `repr` (one line: quotes, backslashes, line breaks, NUL and other
unprintables are escaped) and appears nowhere else: not in comments, not in docstrings.
LLM-written parts are shown as the model wrote them, nested in a function when they can be,
else as a string constant; they run in the sandbox on their own, whatever the rendering.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from crystallise.harness.programs.interp import FORMAT, MAX_FALLBACK_NUMBERS, ProgramError
from crystallise.harness.synth import strings_runtime as rt
from crystallise.harness.synth.compose import Part, compose, indent, nestable
from crystallise.harness.synth.numbers import RUNTIME as NUMBERS
from crystallise.harness.synth.template import RUNTIME as TEMPLATE

__all__ = ["render", "render_body", "render_strings_fn"]


def _lit(value: Any) -> str:
    """A JSON value as a Python literal (repr of str/int/float/bool/None, lists and dicts of them)."""
    if value is None or type(value) in (bool, int, str):
        return repr(value)
    if type(value) is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise ProgramError("numbers must be finite")
        return repr(value)
    if type(value) is list:
        return "[" + ", ".join(_lit(v) for v in value) + "]"
    if type(value) is dict:
        return "{" + ", ".join(f"{_lit(k)}: {_lit(v)}" for k, v in value.items()) + "}"
    raise ProgramError(f"{type(value).__name__} is not a JSON value")


def render(tree: Mapping[str, Any]) -> str:
    """The module for a whole program (the parts in order, then the dispatch)."""
    if tree.get("format") != FORMAT:
        raise ProgramError(f"unknown program format {tree.get('format')!r}")
    parts = [Part(p["strategy"], render_body(p["body"]), None if p["units"] is None else frozenset(p["units"]),
                  hybrid=bool(p["hybrid"])) for p in tree["parts"]]
    return compose(parts)


def render_body(body: Mapping[str, Any]) -> str:
    kind = body.get("kind")
    if kind == "lookup":
        return _lookup(body)
    if kind == "arith":
        return _arith(body)
    if kind == "grouped":
        return _grouped(body)
    if kind == "hybrid":
        return _hybrid(body)
    raise ProgramError(f"unknown part kind {kind!r}")


# -- lookup ---------------------------------------------------------------------------------------------


def _lookup(body: Mapping[str, Any]) -> str:
    text = json.dumps(dict(sorted(body["table"].items())), indent=1, ensure_ascii=False)
    return (
        '"""Crystallised by the lookup strategy: verified input -> output; abstains elsewhere."""\n'
        "import json\n\n"
        f"TABLE = json.loads({text!r})\n\n\n"
        "def unit(value):\n"
        "    return \"table\" if json.dumps(value, sort_keys=True, ensure_ascii=False) in TABLE else None\n\n\n"
        "def solve(value):\n"
        "    return TABLE.get(json.dumps(value, sort_keys=True, ensure_ascii=False))\n"
    )


# -- arith ----------------------------------------------------------------------------------------------

_VAR = re.compile(r"[dpnvDPN]\d{1,3}")


def _arith_expr(node: Mapping[str, Any]) -> str:
    if "var" in node:
        name = node["var"]
        if not (isinstance(name, str) and _VAR.fullmatch(name)):
            raise ProgramError(f"unknown arith variable {name!r}")
        return f"{name[0]}[{int(name[1:])}]"
    if "const" in node:
        c = node["const"]
        if type(c) not in (int, float):
            raise ProgramError("arith constants must be numbers")
        return _lit(float(c))
    op, args = node["op"], [_arith_expr(a) for a in node["args"]]
    if op == "neg":
        return f"(-{args[0]})"
    if op not in ("+", "-", "*", "/", "**"):
        raise ProgramError(f"unknown arith operator {op!r}")
    return f"({args[0]} {op} {args[1]})"


def _arith(body: Mapping[str, Any]) -> str:
    skips = {k: {kind: int(v[kind]) for kind in ("$", "%", "n")} for k, v in sorted(body["skip"].items())}
    rules = sorted(body["rules"], key=lambda r: (r["key"], r["signature"]))
    lines = [
        '"""Crystallised by the arith strategy: arithmetic over the typed numbers of the input.',
        "",
        "solve(text) returns the formatted answer, or None (abstain) for inputs whose template",
        "and number signature no rule was verified on. d = $ amounts, p = percentages as",
        'fractions, n = plain numbers, in order of appearance after the template prefix."""',
        NUMBERS,
        TEMPLATE,
        f"MODE = {_lit(body['mode'])}",
        f"SKIP = {_lit(skips)}",
        f"NAMES = {_lit({k: [str(n)[:100] for n in v] for k, v in sorted(body.get('names', {}).items())})}",
        "",
    ]
    table, fallback = [], []
    for i, r in enumerate(rules):
        lines += [f"def _rule{i}(d, p, n, D, P, N, v):", f"    return {_arith_expr(r['expr'])}", ""]
        sig = tuple(int(v) for v in r["signature"])
        entry = f"(_rule{i}, {int(r['places'])!r}, {_lit(r['rounding'])})"
        if r.get("at_least"):
            fallback.append(f"    {_lit(r['key'])}: ({sig!r}, {entry}),")
        else:
            table.append(f"    ({_lit(r['key'])}, {sig!r}): {entry},")
    lines += ["RULES = {  # (template, (d, p, n)): (rule, decimal places, rounding)", *table, "}", "",
              "FALLBACK = {  # template: (at least (d, p, n), rule) when no rule has the exact signature",
              *fallback, "}", f"MAX_FALLBACK_NUMBERS = {MAX_FALLBACK_NUMBERS!r}", "", _ARITH_SOLVE]
    return "\n".join(lines)


_ARITH_SOLVE = '''

def _match(text):
    if not isinstance(text, str):
        return None
    key = template_key(text, MODE)
    skip = SKIP.get(key)
    if skip is None:
        return None
    nums = {k: v[skip[k]:] for k, v in extract_numbers(text).items()}
    sig = (len(nums["$"]), len(nums["%"]), len(nums["n"]))
    rule = RULES.get((key, sig))
    if rule is None and key in FALLBACK:
        least, rule = FALLBACK[key]
        if sum(sig) > MAX_FALLBACK_NUMBERS or any(a < b for a, b in zip(sig, least)):
            return None
        return key, least, nums, rule
    return None if rule is None else (key, sig, nums, rule)


def unit(text):
    """The rule this input belongs to: "<template> | (d, p, n)" (or "| >= (d, p, n)"), or None."""
    m = _match(text)
    if m is None:
        return None
    return "%s | %s" % (m[0], m[1]) if RULES.get((m[0], m[1])) is m[3] else "%s | >= %s" % (m[0], m[1])


def solve(text):
    m = _match(text)
    if m is None:
        return None
    key, sig, nums, rule = m
    fn, places, rounding = rule
    try:
        ranked = [sorted(nums[k], reverse=True) for k in ("$", "%", "n")]
        names = NAMES.get(key)
        named = named_numbers(text, names, SKIP[key]) if names else []
        value = fn(nums["$"], nums["%"], nums["n"], *ranked, named)
    except (ArithmeticError, ValueError, TypeError, IndexError):
        return None
    if isinstance(value, complex):
        return None
    return fmt_number(value, places, rounding)
'''


# -- strings --------------------------------------------------------------------------------------------

_CHECK = {"str": "isstr({})", "int": "isint({})", "list": "islist({})", "bool": "type({}) is bool"}
_TOKEN_NAMES = {getattr(rt, n): n for n in rt.TOKENS}


def _strings_expr(node: Mapping[str, Any], used: set[str]) -> str:
    if "arg" in node:
        return f"x{int(node['arg'])}"
    if "const" in node:
        c = node["const"]
        if type(c) is str and c in _TOKEN_NAMES:
            used.add(_TOKEN_NAMES[c])
            return _TOKEN_NAMES[c]
        return _lit(c)
    name = node["call"]
    if not (isinstance(name, str) and name.isidentifier() and name in _deps()):
        raise ProgramError(f"unknown strings helper {name!r}")
    used.add(name)
    return f"{name}({', '.join(_strings_expr(a, used) for a in node['args'])})"


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
    return [n for n in vars(rt) if n in done]  # the runtime's own order: definitions before use


def render_strings_fn(fn: Mapping[str, Any], note: str = "") -> str:
    """A standalone module for one strings program: the helpers it uses, then `solve(*args)`."""
    types, out_type = list(fn["arg_types"]), fn["out_type"]
    used: set[str] = set()
    body = _strings_expr(fn["expr"], used)
    used |= {_CHECK[t].split("(")[0] for t in [*types, out_type]} - {"type"}
    chunks = []
    for name in _closure(used):
        v = getattr(rt, name)
        chunks.append(inspect.getsource(inspect.unwrap(v)).rstrip() if _is_helper(v) else f"{name} = {v!r}")
    consts = [c for c in chunks if not c.startswith(("def ", "@"))]
    funcs = [c for c in chunks if c.startswith(("def ", "@"))]
    params = [f"x{i}" for i in range(len(types))]
    checks = " and ".join(_CHECK[t].format(f"args[{i}]") for i, t in enumerate(types)) or "True"
    sig = ", ".join(f"{p}: {t}" for p, t in zip(params, types))
    unpack = f"    {', '.join(params)}, = args\n" if params else ""
    return (
        f'"""Crystallised by the strings strategy{note}.\n\n'
        f"    solve({sig}) -> {out_type}\n\n"
        'solve returns None (abstains) on input it cannot handle: a missing token, an index out of\n'
        'range, an argument of another type."""\n\n'
        "import functools\nimport re\n\n"
        + ("\n".join(consts) + "\n\n\n" if consts else "")
        + "\n\n\n".join(funcs)
        + "\n\n\ndef solve(*args):\n"
        f"    if len(args) != {len(types)} or not ({checks}):\n        return None\n"
        + unpack
        + f"    try:\n        out = {body}\n    except Exception:\n        return None\n"
        f"    return out if {_CHECK[out_type].format('out')} else None\n"
    )


def _source(fn: Mapping[str, Any], entry: str, i: int, prefix: str) -> tuple[list[str], str]:
    """(lines defining `_<prefix><i>` as a function returning the part's `entry`, its name)."""
    src = fn["source"]
    name = f"_{prefix}{i}"
    if nestable(src, entry):
        lines = [f"def {name}():  # LLM-written: runs in the sandbox", indent(src.rstrip()), f"    return {entry}",
                 "", ""]
        if _one_function("\n".join(lines), name):
            return lines, name
    return [f"{name}_SOURCE = {src!r}  # LLM-written, shown as text: it runs in the sandbox on its own",
            f"{name} = None", "", ""], name


def _fn_lines(fn: Mapping[str, Any], i: int) -> list[str]:
    if fn["kind"] == "strings":
        src = render_strings_fn(fn)
        return [f"def _group{i}():", indent(src.rstrip()), "    return solve", "", ""]
    lines, _ = _source(fn, "solve", i, "group")
    if lines[0].startswith("def "):
        return lines
    return lines[:-2] + [f"def _group{i}():", "    return None", "", ""]


def _grouped(body: Mapping[str, Any]) -> str:
    out = ['"""unit(value) is the group (template key) of an input, or None when the input has no\n'
           'known template; solve(value) strips the template and calls that group\'s program."""', TEMPLATE,
           f"MODE = {_lit(body['mode'])}", ""]
    table = []
    for i, g in enumerate(body["groups"]):
        out += _fn_lines(g["fn"], i)
        keys = None if g["arg_keys"] is None else tuple(g["arg_keys"])
        c = g["codec"]
        shown_keys = _lit(keys) if keys is None else _tuple(keys)
        table.append(f"    {_lit(g['unit'])}: ({_lit(g['prefix'])}, {_lit(g['suffix'])}, {shown_keys}, "
                     f"_group{i}(), ({_lit(c['kind'])}, {_lit(c['true'])}, {_lit(c['false'])})),")
    out += ["_GROUPS = {  # unit: (prefix, suffix, argument keys, solve, output codec)", *table, "}", _GROUPED]
    return "\n".join(out)


def _tuple(values: tuple[str, ...]) -> str:
    return "(" + "".join(f"{_lit(v)}, " for v in values) + ")"


_GROUPED = '''

def unit(value):
    if isinstance(value, dict):
        key = "args:" + ",".join(sorted(str(k) for k in value))
        return key if key in _GROUPS else None
    if not isinstance(value, str):
        return None
    key = template_key(value, MODE)
    g = _GROUPS.get(key)
    if g is None or g[2] is not None or payload(value, g[0], g[1]) is None:
        return None
    return key


def solve(value):
    key = unit(value)
    if key is None:
        return None
    prefix, suffix, arg_keys, fn, codec = _GROUPS[key]
    if arg_keys is not None:
        out = fn(*[value[k] for k in arg_keys])
    else:
        out = fn(payload(value, prefix, suffix))
    return encode(out, *codec, value if isinstance(value, str) else "")
'''


# -- hybrid ---------------------------------------------------------------------------------------------

_SNAP = '''

def snap(text, x):
    """The typed number of text that x names (x as written, scaled, or already typed), else x."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    if x != x or x in (float("inf"), float("-inf")):
        return None

    def close(a, b):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))

    spans = number_spans(text)
    if any(close(x, t) for _, _, t in spans):
        return x
    hits = {t for r, s, t in spans if close(x, r) or close(x, s)}
    return hits.pop() if len(hits) == 1 else x
'''

_HYBRID_SOLVE = '''

def unit(value):
    if not isinstance(value, str):
        return None
    key = template_key(value, MODE)
    u = _UNITS.get(key)
    return key if u is not None and payload(value, u[0], u[1]) is not None else None


def solve(value, fields=None):
    """None without fields (a hybrid part answers only after the LLM filled the schema)."""
    key = unit(value) if isinstance(fields, dict) else None
    if key is None:
        return None
    prefix, suffix, compute, names, places, rounding = _UNITS[key]
    text = payload(value, prefix, suffix)
    args = [snap(text, fields.get(n)) for n in names]
    if None in args:
        return None
    try:
        out = compute(*args)
    except (ArithmeticError, ValueError, TypeError, OverflowError):
        return None
    if isinstance(out, bool) or not isinstance(out, (int, float)):
        return None
    return fmt_number(out, places, rounding)
'''


def _hybrid(body: Mapping[str, Any]) -> str:
    out = ['"""Crystallised by the hybrid strategy: the LLM fills each unit\'s fields (tasks/<name>/hybrid.json),\n'
           'this code snaps them to the numbers in the text and computes the answer."""', NUMBERS, TEMPLATE, _SNAP,
           f"MODE = {_lit(body['mode'])}", ""]
    table = []
    for i, (key, u) in enumerate(sorted(body["units"].items())):
        lines, name = _source(u["compute"], "compute", i, "unit")
        out += lines
        call = f"{name}()" if lines[0].startswith("def ") else name
        table.append(f"    {_lit(key)}: ({_lit(u['prefix'])}, {_lit(u['suffix'])}, {call}, "
                     f"{_tuple(tuple(u['fields']))}, {int(u['places'])!r}, {_lit(u['rounding'])}),")
    out += ["_UNITS = {  # unit: (prefix, suffix, compute, fields, places, rounding)", *table, "}", _HYBRID_SOLVE]
    return "\n".join(out)


def _one_function(source: str, name: str) -> bool:
    """The nested rendering of LLM-written code is exactly one function `name` ending in its return
    (nothing it wrote escaped the nesting); else it is shown as text."""
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return False
    return (len(body) == 1 and isinstance(body[0], ast.FunctionDef) and body[0].name == name
            and isinstance(body[0].body[-1], ast.Return))
