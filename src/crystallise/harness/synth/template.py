"""Factor the constant instruction text out of a task's inputs, and normalise its outputs.

LLM task inputs carry fixed text around the part that varies: a leading instruction
sentence, a formula's definition, a trailing "is" or "Answer:". A program is far easier to
find (for an enumerator or a small coder model) over the varying part alone:

    "True and not not ( not False ) is"          -> payload "True and not not ( not False )"
    "Use formula Current Ratio ... Question: \"A firm lists ... Find the current ratio.\". Answer:"
                                                 -> payload "\"A firm lists ... Find the current ratio.\""

1. Inputs are grouped by *key*: their leading sentence when it repeats across cases (the
   same mode choice as the arith strategy), else their first line, else one group.
2. Per group the longest common prefix and suffix are the template, cut back to a token
   boundary (never inside a word or a number) and, across lines, to whole lines; the rest is
   the payload, whitespace-stripped.
3. Outputs that are all strings of one type become that type for synthesis (`"8"` -> 8,
   `"True"`/`"yes"` -> a bool), and generated programs turn answers back into those strings;
   for multiple-choice answers (`"(B)"`) a program may return the option's text instead.

The same few lines (`RUNTIME`) run inside every generated program, so `payload` means the
same thing at learn time and at serve time.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["RUNTIME", "GroupProgram", "OutputCodec", "Template", "choose_mode", "key_of", "render_grouped", "templates"]

RUNTIME = r'''
import re

_SENTENCE = re.compile(r"[^.?!\n]*[.?!\n]")


def template_key(text, mode):
    if mode == "sentence":
        m = _SENTENCE.match(text.lstrip())
        return m.group(0).strip() if m else text.strip()
    if mode == "line":
        return text.lstrip().split("\n", 1)[0].strip()
    return ""


def payload(text, prefix, suffix):
    """The varying part of `text`, or None when it does not have the template's shape."""
    if not isinstance(text, str) or not text.startswith(prefix) or not text.endswith(suffix):
        return None
    if len(prefix) + len(suffix) > len(text):
        return None
    return text[len(prefix):len(text) - len(suffix)].strip()


_OPTION = re.compile(r"^\s*(\([A-Z]\))\s*(.+?)\s*$", re.M)


def encode(value, kind, true="True", false="False", text=""):
    """A typed answer back to the task's string form; None (abstain) stays None.

    For multiple-choice tasks (answers like "(B)") a program may return the text of an option
    of the input ("12/25/1937"), which becomes that option's label."""
    if value is None or kind == "any":
        return value
    if kind == "bool" and isinstance(value, bool):
        return true if value else false
    if isinstance(value, bool):
        value = str(value)
    if not isinstance(value, (int, float, str)):
        return None
    value = str(value).strip()
    if kind == "option" and not re.fullmatch(r"\([A-Z]\)", value):
        if re.fullmatch(r"[A-Z]", value):
            return "(" + value + ")"
        labels = [m.group(1) for m in _OPTION.finditer(text) if m.group(2).strip().lower() == value.lower()]
        return labels[0] if len(labels) == 1 else None
    return value
'''

_ns: dict[str, Any] = {}
exec(compile(RUNTIME, "<crystallise.harness.synth.template>", "exec"), _ns)  # noqa: S102 - our own constant source
key_of = _ns["template_key"]
_payload = _ns["payload"]
_encode = _ns["encode"]


@dataclass(frozen=True)
class Template:
    """The constant text of one group of inputs: `key` names the group (the unit)."""

    key: str
    prefix: str
    suffix: str

    def payload(self, text: Any) -> str | None:
        return _payload(text, self.prefix, self.suffix)


def choose_mode(texts: Sequence[str], min_cases: int = 3) -> str:
    """`sentence` or `line` when leading sentences / lines repeat across cases, else `none`."""
    for mode in ("sentence", "line"):
        sizes: Counter[str] = Counter(key_of(x, mode) for x in texts)
        covered = sum(n for n in sizes.values() if n >= min_cases)
        if covered >= 0.5 * len(texts) and len(sizes) < len(texts):
            return mode
    return "none"


def _boundary(text: str, i: int) -> bool:
    """A cut at i does not split a word or a number."""
    return i <= 0 or i >= len(text) or not (text[i - 1].isalnum() and text[i].isalnum())


def _common(texts: Sequence[str]) -> tuple[str, str]:
    distinct = sorted(set(texts))
    if len(distinct) < 2:
        return "", ""
    prefix = os.path.commonprefix(distinct)
    shortest = min(distinct, key=len)
    i = len(prefix)
    while i > 0 and not all(_boundary(t, i) for t in distinct):
        i -= 1
    prefix = prefix[:i]
    if "\n" in prefix:  # whole lines only: never the start of a line that goes on to vary
        prefix = prefix[: prefix.rfind("\n") + 1]
    rev = os.path.commonprefix([t[::-1] for t in distinct])
    j = min(len(rev), len(shortest) - len(prefix))  # prefix and suffix never overlap
    while j > 0 and not all(_boundary(t, len(t) - j) for t in distinct):
        j -= 1
    suffix = rev[:j][::-1] if j > 0 else ""
    if "\n" in suffix:
        suffix = suffix[suffix.find("\n"):]
    return prefix, suffix


def templates(texts: Sequence[str], mode: str) -> dict[str, Template]:
    """Key -> Template for every group of `texts` under `mode`."""
    groups: dict[str, list[str]] = defaultdict(list)
    for x in texts:
        groups[key_of(x, mode)].append(x)
    return {k: Template(k, *_common(g)) for k, g in groups.items()}


# -- outputs ----------------------------------------------------------------------------------------

_INT = re.compile(r"-?\d{1,18}")


@dataclass(frozen=True)
class OutputCodec:
    """How the task's string answers map to typed values for synthesis, and back.

    >>> c = OutputCodec.infer(["yes", "no", "no"])
    >>> c.kind, c.decode("yes"), c.encode(False)
    ('bool', True, 'no')
    >>> OutputCodec.infer(["8", "12"]).decode("8")
    8
    """

    kind: str  # "str" | "int" | "bool" | "option" ("(B)") | "any" (not all strings: left as they are)
    true: str = "True"
    false: str = "False"

    @classmethod
    def infer(cls, outputs: Sequence[Any]) -> OutputCodec:
        if not outputs or not all(isinstance(o, str) for o in outputs):
            return cls("any")
        values = {o.strip() for o in outputs}
        if all(_INT.fullmatch(v) for v in values):
            return cls("int")
        if all(re.fullmatch(r"\([A-Z]\)", v) for v in values):
            return cls("option")
        if len(values) == 2:
            pairs = [("True", "False"), ("true", "false"), ("Yes", "No"), ("yes", "no"), ("valid", "invalid")]
            for t, f in pairs:
                if values == {t, f}:
                    return cls("bool", t, f)
        return cls("str")

    def decode(self, output: Any) -> Any:
        if self.kind == "int":
            return int(str(output).strip())
        if self.kind == "bool":
            return str(output).strip() == self.true
        return output

    def encode(self, value: Any, text: str = "") -> Any:
        """A typed answer back to the task's form (None stays None: abstain); `text` is the
        input, where a multiple-choice answer's options are."""
        return _encode(value, self.kind, self.true, self.false, text)


# -- programs over payloads, one per group ---------------------------------------------------------


@dataclass(frozen=True)
class GroupProgram:
    """A program for one group of inputs: `source` defines solve(payload) (or solve(*args)
    for mapping inputs, with `arg_keys` the keys in order)."""

    template: Template
    source: str
    codec: OutputCodec
    arg_keys: tuple[str, ...] | None = None

    @property
    def unit(self) -> str:
        return self.template.key if self.arg_keys is None else "args:" + ",".join(self.arg_keys)


def render_grouped(header: str, mode: str, groups: Sequence[GroupProgram]) -> str:
    """A module whose unit(value) picks the group and solve(value) answers over its payload."""
    from crystallise.harness.synth.compose import _indent  # one indentation rule for nested modules

    out = [f'"""{header}\n\nunit(value) is the group (template key) of an input, or None when the input has no\n'
           'known template; solve(value) strips the template and calls that group\'s program."""', RUNTIME,
           f"MODE = {mode!r}", ""]
    table = []
    for i, g in enumerate(groups):
        out += [f"def _group{i}():", _indent(g.source.rstrip()), "    return solve", "", ""]
        t = g.template
        table.append(f"    {g.unit!r}: ({t.prefix!r}, {t.suffix!r}, {g.arg_keys!r}, _group{i}(), "
                     f"{(g.codec.kind, g.codec.true, g.codec.false)!r}),")
    out += ["_GROUPS = {  # unit: (prefix, suffix, argument keys, solve, output codec)", *table, "}", _GROUPED]
    return "\n".join(out)


_GROUPED = '''

def unit(value):
    if isinstance(value, dict):
        key = "args:" + ",".join(sorted(value))
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
