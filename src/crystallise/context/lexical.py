"""In-process BM25 over one scope's items: the lexical half of hybrid retrieval on the hot path.

Why not the store's FTS5 / tsvector here? Both score *every* matching row of the whole
table and filter by scope afterwards: at 100k items a question with a common word
("Caroline", "group") took 25-240 ms on this machine (docs/retrieval.md). This index
is per scope and lives next to the vectors, so its cost grows with one scope's size.
It tokenises the way the store does (`\\w+`, lower case, Porter stems, like FTS5's
`porter` tokenizer) and drops English stop words (as PostgreSQL's 'english' does).

    score(d, q) = sum over terms t of q:  idf(t) * tf(t,d) * (k1 + 1) / (tf(t,d) + k1 * (1 - b + b * len(d) / avglen))
    idf(t)      = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))          (Lucene's non-negative form)

    >>> ix = BM25Index()
    >>> ix.add(0, "Caroline went to the LGBTQ support group"); ix.add(1, "Melanie painted a sunset")
    >>> ix.search("when did caroline go to the support group?", 5)
    [(0, ...)]
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import numpy as np

__all__ = ["STOP_WORDS", "BM25Index", "terms"]

_TOKEN = re.compile(r"\w+")

# PostgreSQL's 'english' stop list (snowball), which is what the tsvector side drops.
STOP_WORDS = frozenset(
    """i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers
    herself it its itself they them their theirs themselves what which who whom this that these those am is are
    was were be been being have has had having do does did doing a an the and but if or because as until while
    of at by for with about against between into through during before after above below to from up down in out
    on off over under again further then once here there when where why how all any both each few more most
    other some such no nor not only own same so than too very s t can will just don should now""".split()
)

_STEMMER = None
_STEMS: dict[str, str] = {}


def _stem(word: str) -> str:
    global _STEMMER
    hit = _STEMS.get(word)
    if hit is not None:
        return hit
    if _STEMMER is None:
        import snowballstemmer

        _STEMMER = snowballstemmer.stemmer("porter")
    stem = _STEMMER.stemWord(word)
    if len(_STEMS) < 500_000:
        _STEMS[word] = stem
    return stem


def terms(text: str) -> list[str]:
    """Stemmed content terms of `text`, in order, repeats kept: `terms("The paintings!") == ['paint']`."""
    return [_stem(w) for w in _TOKEN.findall(text.lower()) if w not in STOP_WORDS]


class BM25Index:
    """BM25 over documents keyed by integer slots; supports add and remove; not thread-safe by itself.

    Postings live in Python lists per term (cheap appends) and are turned into numpy
    arrays on first use after a change, so a query is a handful of vectorised gathers.
    """

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self._post: dict[str, tuple[list[int], list[int]]] = {}
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._doc_terms: dict[int, Counter[str]] = {}
        self._lengths = np.zeros(1024, dtype=np.float32)
        self._total = 0.0
        self._weights: dict[str, np.ndarray] = {}  # term -> BM25 weight per posting, for the current corpus
        self._weights_n = -1  # the document count those weights were computed for (any change clears them)

    def __len__(self) -> int:
        return len(self._doc_terms)

    def add(self, slot: int, text: str) -> None:
        """Index `text` under `slot` (replacing what the slot held)."""
        if slot in self._doc_terms:
            self.remove(slot)
        counts = Counter(terms(text))
        self._doc_terms[slot] = counts
        if slot >= len(self._lengths):
            grown = np.zeros(max(slot + 1, 2 * len(self._lengths)), dtype=np.float32)
            grown[: len(self._lengths)] = self._lengths
            self._lengths = grown
        length = float(sum(counts.values()))
        self._lengths[slot] = length
        self._total += length
        self._weights.clear()
        for term, tf in counts.items():
            slots, tfs = self._post.setdefault(term, ([], []))
            slots.append(slot)
            tfs.append(tf)
            self._arrays.pop(term, None)

    def remove(self, slot: int) -> None:
        counts = self._doc_terms.pop(slot, None)
        if counts is None:
            return
        self._total -= float(self._lengths[slot])
        self._lengths[slot] = 0.0
        self._weights.clear()
        for term in counts:
            slots, tfs = self._post[term]
            i = slots.index(slot)
            slots.pop(i)
            tfs.pop(i)
            self._arrays.pop(term, None)
            if not slots:
                del self._post[term]

    def _postings(self, term: str) -> tuple[np.ndarray, np.ndarray] | None:
        hit = self._arrays.get(term)
        if hit is None:
            raw = self._post.get(term)
            if raw is None:
                return None
            hit = (np.asarray(raw[0], dtype=np.int64), np.asarray(raw[1], dtype=np.float32))
            self._arrays[term] = hit
        return hit

    def _weight(self, term: str, n: int, avg: float) -> tuple[np.ndarray, np.ndarray] | None:
        """(slots, BM25 weights) of one term's postings, cached until the corpus changes.

        The weights depend on N, df and the average length, which only move on add/remove,
        so a query on an unchanged index is gathers and one sum (the hot path).
        """
        post = self._postings(term)
        if post is None:
            return None
        w = self._weights.get(term)
        if w is None:
            slots, tf = post
            df = len(slots)
            idf = np.log1p((n - df + 0.5) / (df + 0.5))
            norm = self.k1 * (1.0 - self.b + self.b * self._lengths[slots] / avg)
            w = self._weights[term] = (idf * tf * (self.k1 + 1.0) / (tf + norm)).astype(np.float32)
        return post[0], w

    def scores(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """(slots, scores) of every document matching at least one query term, in slot order."""
        n = len(self._doc_terms)
        qterms = list(dict.fromkeys(terms(query)))
        if n == 0 or not qterms:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        avg = self._total / n if self._total > 0 else 1.0
        parts = [p for p in (self._weight(t, n, avg) for t in qterms) if p is not None]
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if len(parts) == 1:
            return parts[0]
        total = sum(len(p[0]) for p in parts)
        if total * 8 < len(self._lengths):  # few postings: sorting them beats a pass over every slot
            all_slots = np.concatenate([p[0] for p in parts])
            uniq, inverse = np.unique(all_slots, return_inverse=True)
            return uniq, np.bincount(inverse, weights=np.concatenate([p[1] for p in parts])).astype(np.float32)
        acc = np.zeros(len(self._lengths), dtype=np.float32)  # dense accumulator: O(postings + slots), no sort
        for slots, w in parts:
            acc[slots] += w  # a term's slots are distinct, so fancy-index += is exact
        hit = np.flatnonzero(acc)
        return hit, acc[hit]

    def search(self, query: str, k: int, allowed: Iterable[int] | None = None) -> list[tuple[int, float]]:
        """The best `k` (slot, score) pairs, best first; `allowed` restricts the slots."""
        slots, scores = self.scores(query)
        if allowed is not None:
            keep = np.isin(slots, np.fromiter(allowed, dtype=np.int64))
            slots, scores = slots[keep], scores[keep]
        if len(slots) == 0 or k <= 0:
            return []
        if len(slots) > k:
            top = np.argpartition(-scores, k - 1)[:k]
            slots, scores = slots[top], scores[top]
        order = np.lexsort((slots, -scores))
        return [(int(slots[i]), float(scores[i])) for i in order]
