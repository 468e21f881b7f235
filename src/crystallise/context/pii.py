"""PII redaction before anything is stored: traces, feedback and items.

    policy = PiiPolicy()                       # email, phone, card (Luhn), IBAN (mod 97), account
    policy.redact_text("mail ann@example.com or call +44 20 7946 0958")
    # 'mail [EMAIL] or call [PHONE]'

The store calls the policy on every write (`SqlStore.redactor`, set by `Home.store` from
the home's config), so redaction happens on the write path itself — the SDK, the HTTP
API, OTLP ingest and every item delta pass through it — and unredacted text never reaches
the database, the ledger or the artifact repository.

Configuration (`config.json` of the home; on by default):

    {"pii": {"enabled": true,
             "redactors": ["email", "phone", "card", "iban", "account"],
             "patterns": {"employee_id": "EMP-\\\\d{6}"}}}

`patterns` adds regex redactors (the match becomes `[EMPLOYEE_ID]`); any object with a
`name` and a `redact(text) -> str` method is a `Redactor` and can be passed to
`PiiPolicy(redactors=[...])` or registered by name with `register_redactor`.

What is redacted: every string inside trace/span input, output, error, metadata and
attributes; feedback correction, comment and label; item text and the string values of
item meta. What is not: ids (trace, span, agent, org, user ids are identifiers — use
pseudonymous user ids, not e-mail addresses), names of traces and spans, dict keys,
and artifact files (task specs and code are written by people or learned from
already-redacted traces).

Speed: each redactor first runs a cheap prefilter (an '@' for e-mail; for the rest a run of
six digits, found by one cached regex pass), so ordinary text costs two scans; see
docs/benchmarks.md (`crystallise bench tracewrite`) for measured figures.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from crystallise.errors import ConfigError
from crystallise.types import Delta, Feedback, Item, Span, Trace

__all__ = [
    "BUILTIN",
    "PatternRedactor",
    "PiiPolicy",
    "Redactor",
    "iban_valid",
    "luhn_valid",
    "policy_from_config",
    "register_redactor",
]

class Redactor(Protocol):
    """Replaces one kind of PII in a text; returns the text unchanged when there is none."""

    name: str

    def redact(self, text: str) -> str: ...


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies.

    >>> luhn_valid("4111111111111111"), luhn_valid("4111111111111112")
    (True, False)
    """
    total, double = 0, False
    for ch in reversed(digits):
        d = ord(ch) - 48
        if double:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
        double = not double
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616 check: move the first four characters to the end, letters to numbers, mod 97 == 1.

    >>> iban_valid("DE89 3704 0044 0532 0130 00"), iban_valid("DE88 3704 0044 0532 0130 00")
    (True, False)
    """
    compact = iban.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34 or not compact[:2].isalpha() or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


# A run of at least six digits with at most short separators between them: every card, phone,
# IBAN and account number has one. Finding none (one regex pass, cached per text) lets the
# digit redactors skip a text without running their own, costlier patterns.
_DIGIT_RUN = re.compile(r"\d(?:[ ().-]{0,2}\d){5}")


@functools.lru_cache(maxsize=512)
def has_digit_run(text: str) -> bool:
    return _DIGIT_RUN.search(text) is not None


def has_at(text: str) -> bool:
    return "@" in text


@dataclasses.dataclass
class PatternRedactor:
    """A regex redactor: matches accepted by `check` become `[NAME]` (upper case: plain text in
    Markdown and in terminal markup alike).

    `prefilter` is a cheap test run first (the pattern runs only when it says yes);
    `group` redacts only that group of the match (the account number, not the word "account").
    """

    name: str
    pattern: re.Pattern[str]
    check: Callable[[str], bool] | None = None
    prefilter: Callable[[str], bool] | None = None
    group: int = 0

    def redact(self, text: str) -> str:
        if self.prefilter is not None and not self.prefilter(text):
            return text
        label = f"[{self.name.upper()}]"

        def replace(m: re.Match[str]) -> str:
            if self.check is not None and not self.check(m.group(self.group)):
                return m.group(0)
            if self.group == 0:
                return label
            start, end = m.span(self.group)
            whole = m.group(0)
            return whole[: start - m.start()] + label + whole[end - m.start():]

        return self.pattern.sub(replace, text)


def _digits_between(low: int, high: int) -> Callable[[str], bool]:
    return lambda s: low <= sum(ch.isdigit() for ch in s) <= high


def _card_check(s: str) -> bool:
    digits = "".join(ch for ch in s if ch.isdigit())
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _email() -> Redactor:
    return PatternRedactor(
        "email", re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
        prefilter=has_at,
    )


def _iban() -> Redactor:
    return PatternRedactor(
        "iban", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"), check=iban_valid,
        prefilter=has_digit_run,
    )


def _card() -> Redactor:
    return PatternRedactor("card", re.compile(r"(?<![\w.,/-])(?:\d[ -]?){12,18}\d(?![\w/-]|[.,]\w)"), check=_card_check,
                           prefilter=has_digit_run)


def _account() -> Redactor:
    return PatternRedactor(
        "account",
        re.compile(r"(?i)\b(?:account|acct|a/c)(?:\s*(?:number|num|no\.?|#))?\s*[:#]?\s*(\d[\d -]{4,}\d)"),
        prefilter=has_digit_run, group=1,
    )


def _phone() -> Redactor:
    international = r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?!\w)"
    national = r"(?<![\w$£€.,/-])\(?\d{2,4}\)?[ .-]\d{3,4}[ .-]\d{3,5}(?![\w.,/-])"
    french = r"(?<![\w.,])0\d(?:[ .]\d{2}){4}(?![\w.,])"
    return PatternRedactor(
        "phone", re.compile(f"{international}|{national}|{french}"), check=_digits_between(8, 15),
        prefilter=has_digit_run,
    )


# Name -> factory. The order here is the order they run in: e-mail before phone (an address
# can hold digits), IBAN and card before phone (their digit groups look like phone numbers).
BUILTIN: dict[str, Callable[[], Redactor]] = {
    "email": _email,
    "iban": _iban,
    "card": _card,
    "account": _account,
    "phone": _phone,
}
_REGISTRY: dict[str, Callable[[], Redactor]] = dict(BUILTIN)


def register_redactor(name: str, factory: Callable[[], Redactor]) -> None:
    """Make a redactor available by name to `config.json`'s `pii.redactors` list."""
    _REGISTRY[name] = factory


class PiiPolicy:
    """Applies redactors, in order, to every string of a record. Implements the store's `Redactor` hook.

    >>> PiiPolicy().redact_text("card 4111 1111 1111 1111, IBAN GB82 WEST 1234 5698 7654 32")
    'card [CARD], IBAN [IBAN]'
    """

    def __init__(self, redactors: Sequence[Redactor] | None = None) -> None:
        self.redactors: list[Redactor] = list(redactors) if redactors is not None else [f() for f in BUILTIN.values()]

    def __repr__(self) -> str:
        return f"PiiPolicy([{', '.join(r.name for r in self.redactors)}])"

    def redact_text(self, text: str) -> str:
        for redactor in self.redactors:
            text = redactor.redact(text)
        return text

    def redact_value(self, value: Any) -> Any:
        """Every string inside a JSON-like value redacted (dict keys are left alone)."""
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return {k: self.redact_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_value(v) for v in value]
        return value

    def _optional(self, text: str | None) -> str | None:
        return None if text is None else self.redact_text(text)

    def redact_span(self, span: Span) -> Span:
        return dataclasses.replace(
            span, input=self.redact_value(span.input), output=self.redact_value(span.output),
            error=self._optional(span.error), attributes=self.redact_value(span.attributes),
        )

    def redact_feedback(self, feedback: Feedback) -> Feedback:
        return dataclasses.replace(
            feedback, correction=self.redact_value(feedback.correction), comment=self._optional(feedback.comment),
            label=self._optional(feedback.label),
        )

    def redact_trace(self, trace: Trace) -> Trace:
        return dataclasses.replace(
            trace, input=self.redact_value(trace.input), output=self.redact_value(trace.output),
            error=self._optional(trace.error), metadata=self.redact_value(trace.metadata),
            spans=[self.redact_span(s) for s in trace.spans],
            feedback=[self.redact_feedback(f) for f in trace.feedback],
        )

    def redact_item(self, item: Item) -> Item:
        return dataclasses.replace(item, text=self.redact_text(item.text), meta=self.redact_value(item.meta))

    def _snapshot(self, snap: Any) -> Any:
        if isinstance(snap, Item):
            return self.redact_item(snap)
        if isinstance(snap, dict) and isinstance(snap.get("text"), str):
            return {**snap, "text": self.redact_text(snap["text"]), "meta": self.redact_value(snap.get("meta") or {})}
        return snap

    def redact_delta(self, delta: Delta) -> Delta:
        """Item deltas get their item text and meta redacted; artifact deltas are left alone."""
        if delta.target != "item":
            return delta
        return dataclasses.replace(delta, before=self._snapshot(delta.before), after=self._snapshot(delta.after),
                                   reason=self.redact_text(delta.reason))


def policy_from_config(config: Mapping[str, Any]) -> PiiPolicy | None:
    """The home's policy from `config["pii"]` (see the module docstring); None when disabled."""
    settings = config.get("pii", {})
    if settings is None or settings is True:
        settings = {}
    if settings is False:
        return None
    if not isinstance(settings, dict):
        raise ConfigError('config.json "pii" must be an object such as {"enabled": true}: fix config.json')
    if not settings.get("enabled", True):
        return None
    names = settings.get("redactors", list(BUILTIN))
    unknown = [n for n in names if n not in _REGISTRY]
    if unknown:
        raise ConfigError(
            f"config.json pii.redactors names unknown redactor(s) {unknown}: use {sorted(_REGISTRY)} "
            "or add regexes under pii.patterns"
        )
    redactors = [_REGISTRY[n]() for n in names]
    for name, pattern in (settings.get("patterns") or {}).items():
        try:
            redactors.append(PatternRedactor(str(name), re.compile(pattern)))
        except (re.error, TypeError) as error:
            raise ConfigError(f"config.json pii.patterns.{name} is not a valid regex ({error}): fix it") from None
    return PiiPolicy(redactors)
