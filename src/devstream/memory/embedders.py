"""Embedders turn texts into vectors: the protocol they share and an offline hashing one.

Every embedder returns raw float32 rows of its configured dimension; callers normalise.
The Ollama client is in `devstream.memory.ollama`, which is imported only when a server
is configured, so commands that never embed do not load its HTTP and retry libraries.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise
from typing import Protocol

import numpy as np
import numpy.typing as npt

from devstream.db.tokenizer import scrub, word_lists
from devstream.errors import EmbeddingDeferred
from devstream.vocabulary import EMBED_DIMENSION

Vectors = npt.NDArray[np.float32]

__all__ = ["DeferredEmbedder", "Embedder", "HashingEmbedder", "Vectors", "check_texts"]


class Embedder(Protocol):
    """Anything that embeds texts into vectors of one model and dimension."""

    model: str
    dimension: int

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Float32 rows of shape (len(texts), dimension), in input order; not normalised."""
        ...

    async def aclose(self) -> None:
        """Release whatever the embedder holds (connections); it is unusable afterwards."""
        ...


def check_texts(texts: Sequence[str]) -> None:
    """Refuse a bare string, which would otherwise be embedded one character per row."""
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of texts, not a single string")


class DeferredEmbedder:
    """Another embedder's model and dimension, without calling it: what is stored waits as
    pending (for `memory backfill` or a running `devstream mcp`) and searches rank on full
    text. For hooks, which must never wait on an embedding server."""

    def __init__(self, deferred: Embedder) -> None:
        self._deferred = deferred
        self.model = deferred.model
        self.dimension = deferred.dimension

    async def embed(self, texts: Sequence[str]) -> Vectors:
        check_texts(texts)
        raise EmbeddingDeferred("embedding deferred: a hook never waits on the embedder")

    async def aclose(self) -> None:
        await self._deferred.aclose()


# --- Offline feature hashing -------------------------------------------------------------

_UNIGRAM_KEY = b"devstream/uni"
_BIGRAM_KEY = b"devstream/bi"
_BIGRAM_WEIGHT = 0.5


def _words(texts: Sequence[str]) -> list[list[str]]:
    # Queries are embedded too, so invalid code points are scrubbed, not refused. NFKC:
    # unicode61 does not fold compatibility forms such as the "ﬁ" ligature.
    return word_lists([unicodedata.normalize("NFKC", scrub(text)) for text in texts])


@lru_cache(maxsize=65536)
def _feature(feature: str, key: bytes, dimension: int) -> tuple[int, float]:
    """The index and sign a feature hashes to; stable across processes and Python versions."""
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=9, key=key).digest()
    index = int.from_bytes(digest[:8], "little") % dimension
    sign = 1.0 if digest[8] & 1 else -1.0
    return index, sign


class HashingEmbedder:
    """Deterministic, offline embeddings by signed feature hashing of words and word pairs.

    Text is NFKC-normalised and split into words as the full-text index splits them
    (`devstream.db.tokenizer`: case- and diacritic-folded, unstemmed), and each word (and,
    at half weight, each adjacent word pair) adds a sublinear term frequency (1 + ln n) to
    one coordinate picked by BLAKE2b, with a hashed sign so collisions tend to cancel. The
    result is L2-normalised; a text without words maps to the zero vector. It needs no
    download and no server, which makes it the fallback and the embedder tests use.
    """

    def __init__(
        self, dimension: int = EMBED_DIMENSION, model: str = "devstream-hashing-v2"
    ) -> None:
        if dimension < 1:
            raise ValueError(f"dimension must be positive, got {dimension}")
        self.dimension = dimension
        self.model = model

    def embed_one(self, text: str) -> Vectors:
        """The unit vector of one text (all zeros when it has no words)."""
        return self._vector(_words([text])[0])

    def _vector(self, words: list[str]) -> Vectors:
        vector = np.zeros(self.dimension, dtype=np.float64)
        bigrams = Counter(f"{a} {b}" for a, b in pairwise(words))
        features = ((Counter(words), _UNIGRAM_KEY, 1.0), (bigrams, _BIGRAM_KEY, _BIGRAM_WEIGHT))
        for counts, key, weight in features:
            for feature, count in counts.items():
                index, sign = _feature(feature, key, self.dimension)
                vector[index] += sign * weight * (1.0 + math.log(count))
        norm = float(np.linalg.norm(vector))
        if norm > 0.0:
            vector /= norm
        return vector.astype(np.float32)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        check_texts(texts)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, words in enumerate(_words(texts)):
            out[row] = self._vector(words)
        return out

    async def aclose(self) -> None:
        return None
