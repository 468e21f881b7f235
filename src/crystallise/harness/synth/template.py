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

The interpreter calls these functions, and the rendering of a program (`code.py`) carries their
source (`RUNTIME`), so `payload` means the same at learn time, at serve time and in the rendering.
"""

from __future__ import annotations

import inspect
import os
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "RUNTIME", "GroupProgram", "OutputCodec", "Template", "choose_mode", "encode", "key_of", "payload",
    "grouped", "templates",
]

_SENTENCE = re.compile(r"[^.?!\n]*[.?!\n]")
_DIGITS = re.compile(r"[-+]?[0-9][0-9,]*(?:[.][0-9]+)?|[-+]?[.][0-9]+")
_OPTION = re.compile(r"^\s*(\([A-Z]\))\s*(.+?)\s*$", re.M)


def template_key(text, mode):
    if mode == "sentence":
        m = _SENTENCE.match(text.lstrip())
        return m.group(0).strip() if m else text.strip()
    if mode == "line":
        return text.lstrip().split("\n", 1)[0].strip()
    if mode == "shape":  # the text with every number masked: inputs of one shape, whatever their values
        return _DIGITS.sub("#", text).strip()
    return ""


def payload(text, prefix, suffix):
    """The varying part of `text`, or None when it does not have the template's shape."""
    if not isinstance(text, str) or not text.startswith(prefix) or not text.endswith(suffix):
        return None
    if len(prefix) + len(suffix) > len(text):
        return None
    return text[len(prefix):len(text) - len(suffix)].strip()


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


# The same functions, as source, for the rendering of a program (code.py).
RUNTIME = "\n".join([
    "",
    "import re",
    "",
    f"_SENTENCE = re.compile({_SENTENCE.pattern!r})",
    f"_DIGITS = re.compile({_DIGITS.pattern!r})",
    f"_OPTION = re.compile({_OPTION.pattern!r}, re.M)",
    "",
    *(inspect.getsource(f) for f in (template_key, payload, encode)),
])
key_of = template_key
_payload = payload
_encode = encode


@dataclass(frozen=True)
class Template:
    """The constant text of one group of inputs: `key` names the group (the unit)."""

    key: str
    prefix: str
    suffix: str

    def payload(self, text: Any) -> str | None:
        return _payload(text, self.prefix, self.suffix)


def choose_mode(texts: Sequence[str], min_cases: int = 3) -> str:
    """`sentence` or `line` when leading sentences / lines repeat across cases, `shape` when the
    texts repeat once their numbers are masked, else `none`."""
    for mode in ("sentence", "line", "shape"):
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
    """A program for one group of inputs: `fn` (a tree: a strings expression, or LLM-written
    source run in the sandbox) takes the payload (or, for mapping inputs, the values of
    `arg_keys` in order)."""

    template: Template
    fn: dict[str, Any]
    codec: OutputCodec
    arg_keys: tuple[str, ...] | None = None

    @property
    def unit(self) -> str:
        return self.template.key if self.arg_keys is None else "args:" + ",".join(self.arg_keys)

    def tree(self) -> dict[str, Any]:
        return {"unit": self.unit, "prefix": self.template.prefix, "suffix": self.template.suffix,
                "arg_keys": None if self.arg_keys is None else list(self.arg_keys),
                "codec": {"kind": self.codec.kind, "true": self.codec.true, "false": self.codec.false},
                "fn": self.fn}


def grouped(mode: str, groups: Sequence[GroupProgram]) -> dict[str, Any]:
    """The body of a part whose units are template groups (`harness/programs`, kind "grouped")."""
    return {"kind": "grouped", "mode": mode, "groups": [g.tree() for g in groups]}
