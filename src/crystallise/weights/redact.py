"""PII redaction for training data: nothing that names a person's contact or card reaches the weights.

Weights cannot forget one record, so redaction happens before a dataset is written.
A redactor is one method, `redact(text) -> (text, counts)`:

    >>> RegexRedactor().redact("mail ann@example.com or call +1 (415) 555-0100")
    ('mail [EMAIL] or call [PHONE]', {'email': 1, 'phone': 1})

`RegexRedactor` covers e-mail addresses, phone numbers (7-15 digits with the usual separators,
not plain numbers such as amounts or years) and payment card numbers (13-19 digits that pass the
Luhn check). It is the hook for a fuller one: anything with a `redact(text)` method of that shape
(e.g. the context layer's pluggable PII redaction) can be passed to `export_dataset(redactor=...)`.
"""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable

__all__ = ["Redactor", "RegexRedactor", "luhn_ok"]


@runtime_checkable
class Redactor(Protocol):
    """Replaces PII in text; returns the new text and how many of each kind it replaced."""

    def redact(self, text: str) -> tuple[str, dict[str, int]]: ...


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies.

    >>> luhn_ok("4111111111111111"), luhn_ok("4111111111111112")
    (True, False)
    """
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_CARD = re.compile(r"(?<![\d.,])(?:\d[ -]?){12,18}\d(?![\d.,])")
# +CC, optional area code in parentheses, groups joined by space, dot or dash; 7-15 digits in all.
_PHONE = re.compile(r"(?<![\w.,$])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?![\w.,%])")


class RegexRedactor:
    """E-mail, phone and card numbers by pattern (see the module docstring)."""

    name = "regex"

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        counts: dict[str, int] = {}

        def sub(kind: str, label: str, ok: object = None) -> object:
            def repl(m: re.Match[str]) -> str:
                digits = re.sub(r"\D", "", m.group(0))
                if kind == "card" and not luhn_ok(digits):
                    return m.group(0)
                if kind == "phone" and not (7 <= len(digits) <= 15 and _phone_shaped(m.group(0))):
                    return m.group(0)
                counts[kind] = counts.get(kind, 0) + 1
                return label

            return repl

        text = _EMAIL.sub(sub("email", "[EMAIL]"), text)  # type: ignore[arg-type]
        text = _CARD.sub(sub("card", "[CARD]"), text)  # type: ignore[arg-type]
        text = _PHONE.sub(sub("phone", "[PHONE]"), text)  # type: ignore[arg-type]
        return text, counts


def _phone_shaped(s: str) -> bool:
    """A phone number has a + prefix, parentheses, or at least three digit groups (not '1,000' or '2023-24')."""
    return s.startswith("+") or "(" in s or len(re.findall(r"\d+", s)) >= 3
