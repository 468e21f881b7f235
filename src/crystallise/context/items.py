"""The item model on the write path: scopes, validation, sameness, precedence.

An item belongs to exactly one scope, named by its ids:

    level   ids set                  who sees it
    agent   agent                    every run of that agent
    org     agent + org              runs of the agent in that org
    user    agent + (org) + user     that user's runs only — never another user

Everything written goes through `validate_scope` and `clean_text` first, so bad input
fails with a `ValidationError` that says what to change, before anything is stored.

Sameness ("is this the same fact?") is a pluggable `Similarity`: a function of two
texts to [0, 1]. The default, `lexical_similarity`, compares normalised word sets
(Jaccard over light-stemmed content words); an embedding similarity can be passed
anywhere a `similarity=` argument is taken.

Precedence (`resolve`) is pure: given the items visible to a scope, it drops the ones a
narrower scope overrides (user > org > agent) and orders the rest user-first.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import Any, get_args

from crystallise.errors import ValidationError
from crystallise.types import Item, ItemKind, Scope

__all__ = [
    "DEFAULT_TRUST",
    "ID_PATTERN",
    "KNOWN_SECTIONS",
    "MAX_TEXT",
    "SOURCES",
    "Similarity",
    "clean_text",
    "content_words",
    "lexical_similarity",
    "most_specific",
    "normalise",
    "resolve",
    "same_scope",
    "validate_scope",
]

# Ids of agents, orgs and users: what a URL path segment, a file name and a log line can carry.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,199}")

# Longest text per kind, in characters. A memory or bullet is one statement; a note a paragraph
# or two; a skill the body of a SKILL.md. Longer input is refused, not truncated.
MAX_TEXT: dict[str, int] = {"memory": 2000, "bullet": 1000, "note": 8000, "skill": 32000}

# Sections a playbook usually has (any lower-case slug is accepted).
KNOWN_SECTIONS = ("general", "strategies", "rules", "pitfalls", "formatting", "facts", "preferences")
_SECTION = re.compile(r"[a-z][a-z0-9_-]{0,63}")

# Where an item's text came from, and how far it is trusted when the caller does not say.
SOURCES = ("user", "review", "import", "reflection", "tool")
DEFAULT_TRUST: dict[str, float] = {"user": 1.0, "review": 1.0, "import": 0.7, "reflection": 0.5, "tool": 0.3}

LEVEL_ORDER: dict[str, int] = {"user": 0, "org": 1, "agent": 2}

Similarity = Callable[[str, str], float]

_KINDS = frozenset(get_args(ItemKind))


def validate_scope(agent: str | None = "default", org: str | None = None, user: str | None = None) -> Scope:
    """The scope these ids name, or a ValidationError that says which id to fix.

    >>> validate_scope("support", "acme", "u1").level
    'user'
    >>> validate_scope(None, user="u1")
    Traceback (most recent call last):
    crystallise.errors.ValidationError: a user-level scope needs an agent: pass agent="default" ...
    """
    if agent is None or agent == "":
        who = "a user-level" if user else "an org-level" if org else "a"
        raise ValidationError(
            f'{who} scope needs an agent: pass agent="default" (or the agent the '
            f"{'user talks to' if user else 'knowledge is for'})"
        )
    for label, value in (("agent", agent), ("org", org), ("user", user)):
        if value is None:
            continue
        if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
            raise ValidationError(
                f"{label} id {value!r} is not valid: use 1-200 characters of letters, digits and . _ : @ + -, "
                "starting with a letter or digit (no spaces or slashes)"
            )
    return Scope(agent=agent, org=org, user=user)


def same_scope(item: Item, scope: Scope) -> bool:
    """Whether `item` belongs to exactly `scope` (not merely visible to it).

    Mirrors the store's visibility rules: agent items belong to their agent, org items to
    their org, user items to the user within the org (the agent a user or org item was
    written through is recorded but does not partition it).
    """
    if item.level != scope.level:
        return False
    if scope.level == "agent":
        return item.agent_id == scope.agent
    if scope.level == "org":
        return item.org_id == scope.org
    return item.user_id == scope.user and item.org_id == scope.org


def clean_text(text: Any, kind: str = "memory") -> str:
    """The text as it will be stored: stripped; whitespace collapsed for one-line kinds.

    >>> clean_text("  I live in   Paris\\n")
    'I live in Paris'
    """
    if kind not in _KINDS:
        raise ValidationError(f"kind must be one of {sorted(_KINDS)}, not {kind!r}")
    if not isinstance(text, str):
        raise ValidationError(f"item text must be a string, not {type(text).__name__}")
    if kind in ("memory", "bullet"):
        text = " ".join(text.split())
    else:
        text = text.strip()
    if not text:
        raise ValidationError("item text is empty: say what to remember (e.g. 'prefers metric units')")
    limit = MAX_TEXT[kind]
    if len(text) > limit:
        raise ValidationError(
            f"item text is {len(text)} characters; a {kind} holds at most {limit}: "
            "split it into several items" + (", or store it as a note (8000)" if kind in ("memory", "bullet") else "")
        )
    if "\x00" in text:
        raise ValidationError("item text contains a NUL character (\\x00): remove it")
    return text


def validate_section(section: Any) -> str:
    if not isinstance(section, str) or not _SECTION.fullmatch(section):
        raise ValidationError(
            f"section {section!r} is not valid: use a lower-case slug such as {', '.join(KNOWN_SECTIONS[:5])}"
        )
    return section


def validate_trust(trust: Any, source: str) -> float:
    if source not in SOURCES:
        raise ValidationError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    if trust is None:
        return DEFAULT_TRUST[source]
    if isinstance(trust, bool) or not isinstance(trust, int | float) or not (0.0 <= float(trust) <= 1.0):
        raise ValidationError(f"trust must be a number in [0, 1] (1 = fully trusted), not {trust!r}")
    return float(trust)


def validate_time(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(f"{what} must be seconds since the epoch (a number), not {value!r}")
    return float(value)


# -- sameness --------------------------------------------------------------------------------

_STOP = frozenset(
    "a an the and or but of to in on at for with by from as is are was were be been being am i me my mine "
    "you your we our us it its this that these those he she they them his her their do does did so very "
    "just really also please".split()
)
_WORD = re.compile(r"[^\W_]+")


def normalise(text: str) -> str:
    """Case-, accent- and punctuation-insensitive form of a text, for exact-duplicate checks.

    >>> normalise("  Prefers MÉTRIC units!! ")
    'prefers metric units'
    """
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(_WORD.findall(plain))


def _stem(word: str) -> str:
    for suffix in ("ing", "ies", "es", "ed", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def content_words(text: str) -> frozenset[str]:
    """Light-stemmed words of `text` without stop words."""
    return frozenset(_stem(w) for w in normalise(text).split() if w not in _STOP)


def lexical_similarity(a: str, b: str) -> float:
    """Jaccard similarity of the content words of two texts, in [0, 1] (1: the same words).

    >>> lexical_similarity("I live in Paris", "i LIVE in paris.")
    1.0
    >>> round(lexical_similarity("prefers window seats", "prefers aisle seats"), 2)
    0.5
    """
    wa, wb = content_words(a), content_words(b)
    if not wa and not wb:
        return 1.0 if normalise(a) == normalise(b) else 0.0
    return len(wa & wb) / len(wa | wb)


# -- precedence ------------------------------------------------------------------------------


def resolve(items: Iterable[Item], *, similarity: Similarity | None = None, threshold: float = 1.0) -> list[Item]:
    """Resolve precedence and conflicts among items visible to one scope (pure).

    1. facts with the same `key` conflict: the narrowest level wins (user > org > agent),
       and within a level the one valid from the latest time;
    2. items saying the same thing (normalised text equal, or `similarity >= threshold`
       when a similarity is given) are shown once, from the narrowest level;
    3. the result is ordered user, org, agent, keeping the input order within a level
       (so a retriever's ranking survives).

    >>> from crystallise.types import Item
    >>> agent = Item("Answer in English", kind="bullet", level="agent", key="reply.language")
    >>> user = Item("Answer in French", kind="bullet", level="user", user_id="u1", key="reply.language")
    >>> [i.text for i in resolve([agent, user])]
    ['Answer in French']
    """
    ranked = sorted(enumerate(items), key=lambda pair: (LEVEL_ORDER.get(pair[1].level, 3), pair[0]))
    best_for_key: dict[str, Item] = {}
    for _, item in ranked:
        if item.key is None:
            continue
        held = best_for_key.get(item.key)
        if held is None or (
            LEVEL_ORDER.get(item.level, 3) == LEVEL_ORDER.get(held.level, 3)
            and (item.valid_from or item.created_at) > (held.valid_from or held.created_at)
        ):
            best_for_key[item.key] = item
    chosen: list[Item] = []
    seen_texts: set[str] = set()
    for _, item in ranked:
        if item.key is not None and best_for_key[item.key] is not item:
            continue
        norm = normalise(item.text)
        if norm in seen_texts:
            continue
        if similarity is not None and any(similarity(item.text, c.text) >= threshold for c in chosen):
            continue
        seen_texts.add(norm)
        chosen.append(item)
    return chosen



def most_specific(items: Sequence[Item], *, texts_once: bool = True) -> list[Item]:
    """`items` in their order, keeping only what `resolve` keeps: per fact key the narrowest scope's
    item (user > org > agent), and (`texts_once`) each text once. What every pack and prompt serves
    (issue 15: facts with the same key at user, org and agent level were all shown).

    >>> from crystallise.types import Item
    >>> org = Item("Ship with DHL", kind="memory", level="org", org_id="acme", key="ship.carrier")
    >>> agent = Item("Ship with UPS", kind="memory", level="agent", key="ship.carrier")
    >>> [i.text for i in most_specific([agent, org])]
    ['Ship with DHL']
    """
    kept = {id(it) for it in resolve(items)}
    keyed = {id(it) for it in resolve([it for it in items if it.key is not None])}
    return [it for it in items if id(it) in kept or (not texts_once and (it.key is None or id(it) in keyed))]
