"""PII redaction for training data: nothing that names a person's contact, card or account reaches the weights.

Weights cannot forget one record, so redaction happens before a dataset is written, even when
the home's store redaction (`config.json` `"pii"`, context/pii.py) is turned off. A redactor is
one method, `redact(text) -> (text, counts)`:

    >>> PiiRedactor().redact("mail ann@example.com or call +1 (415) 555-0100")
    ('mail [EMAIL] or call [PHONE]', {'email': 1, 'phone': 1})

`PiiRedactor` applies a context-layer `PiiPolicy` (the home's own, with its extra patterns, when
the store has one; the built-in redactors otherwise: e-mail, IBAN, card numbers that pass the
Luhn check, account numbers, phone numbers) and counts what each redactor replaced. Anything
with a `redact(text)` method of that shape can be passed to `export_dataset(redactor=...)`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from crystallise.context.pii import PiiPolicy

__all__ = ["PiiRedactor", "Redactor"]


@runtime_checkable
class Redactor(Protocol):
    """Replaces PII in text; returns the new text and how many of each kind it replaced."""

    def redact(self, text: str) -> tuple[str, dict[str, int]]: ...


class PiiRedactor:
    """A context-layer `PiiPolicy` with counts per redactor (see the module docstring)."""

    name = "pii"

    def __init__(self, policy: PiiPolicy | None = None) -> None:
        self.policy = policy if policy is not None else PiiPolicy()

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        counts: dict[str, int] = {}
        for redactor in self.policy.redactors:
            label = f"[{redactor.name.upper()}]"
            before = text.count(label)
            text = redactor.redact(text)
            added = text.count(label) - before
            if added > 0:
                counts[redactor.name] = counts.get(redactor.name, 0) + added
        return text, counts
