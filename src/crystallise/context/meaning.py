"""Same fact, other words: a similarity by meaning for corroboration and promotion.

    similarity = MeaningSimilarity(embedder)      # a `Similarity`: (a, b) -> score in [0, 1]
    similarity("Refunds are accepted within 30 days.", "You can get your money back for thirty days.")  # 1.0
    similarity("Refunds are accepted within 30 days.", "Refunds are accepted within 14 days.")         # 0.0

Two texts state the same fact when

1. their *slots agree* (`slots_agree`): a fact key the rules know (`temporal.fact_key`: "I live
   in Paris" -> user.city) is the same on both sides with the same value; the numbers they state
   are the same (number words count: "thirty" is 30); the names they use (capitalised or upper-case
   words after the first) are the same; and what each negates ("not dollars", "never accepted") is the same. An
   embedding cannot see these: "within 30 days" and "within 14 days" are 0.96 alike for MiniLM;
2. and they mean the same: the cosine of their embeddings (`context/embed.py`; the packaged
   all-MiniLM-L6-v2 where installed) is at least `threshold`, or they are lexically alike.

Measured with MiniLM (tests/test_meaning.py has the cases): paraphrases of one fact 0.69-0.84,
unrelated texts 0.10-0.30, a near-miss about another thing of the same kind ("allergic to
peanuts" / "to shellfish") 0.53 -- so `threshold` 0.66; near-misses that differ only in a number,
a name or a negated word score 0.64-0.997 and are told apart by the slots alone. The rule is
conservative: a paraphrase that swaps a name for a description ("ISO dates" / "YYYY-MM-DD")
stays apart, and corroboration waits for another sighting or review.

    >>> slots_agree("Refunds within 30 days", "refunds for thirty days"), slots_agree("in Paris", "in Lyon")
    (True, False)
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from crystallise.context.embed import CachedEmbedder, Embedder
from crystallise.context.items import lexical_similarity, normalise
from crystallise.context.temporal import fact_key

__all__ = ["MeaningSimilarity", "slots_agree"]

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_WORDS.update({"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
               "hundred": 100, "thousand": 1000})
_NEGATORS = ("not", "never", "no", "without", "instead of", "rather than")
_NEGATED = re.compile(r"\b(?:" + "|".join(n.replace(" ", r"\s+") for n in _NEGATORS) + r")\s+(?:the\s+|a\s+|an\s+)?"
                      r"([A-Za-z0-9][\w-]*)", re.I)
_STOP_NAMES = {"i", "i'm", "i've", "i'd", "i'll"}


def _numbers(text: str) -> set[str]:
    found = {n.replace(",", "") for n in _NUMBER.findall(text)}
    found |= {str(_WORDS[w.lower()]) for w in _WORD.findall(text) if w.lower() in _WORDS and w.lower() != "one"}
    return found


def _names(text: str) -> set[str]:
    words = _WORD.findall(text)
    return {w.lower() for i, w in enumerate(words) if i > 0 and (w[0].isupper() or (len(w) > 1 and w.isupper()))
            and w.lower() not in _STOP_NAMES}


def _negated(text: str) -> set[str]:
    return {m.lower() for m in _NEGATED.findall(text)}


def slots_agree(a: str, b: str) -> bool:
    """Whether two texts agree on everything an embedding cannot see (see the module docstring)."""
    ka, kb = fact_key(a), fact_key(b)
    if ka is not None and kb is not None and (ka[0] != kb[0] or normalise(ka[1]) != normalise(kb[1])):
        return False
    if _numbers(a) != _numbers(b) or _names(a) != _names(b):
        return False
    return _negated(a) == _negated(b)


@dataclass
class MeaningSimilarity:
    """A `Similarity` by meaning: 1.0 for the same fact in other words, 0.0 when a slot disagrees, else the
    lexical similarity (so the learners' lexical thresholds still hold for near-identical words)."""

    embedder: Embedder
    threshold: float = 0.66
    _cache: CachedEmbedder = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._cache = self.embedder if isinstance(self.embedder, CachedEmbedder) else CachedEmbedder(self.embedder)

    def cosine(self, a: str, b: str) -> float:
        vectors = self._cache.embed([a, b])
        return float(vectors[0] @ vectors[1])

    def __call__(self, a: str, b: str) -> float:
        if not slots_agree(a, b):
            return 0.0
        lexical = lexical_similarity(a, b)
        if lexical >= 0.9:
            return lexical  # the same words: no model needed
        return 1.0 if self.cosine(a, b) >= self.threshold else lexical

    def warm(self, texts: Sequence[str]) -> None:
        """Embed `texts` in one batch (comparisons afterwards hit the cache)."""
        if texts:
            self._cache.embed(list(texts))
