"""The offline embedder: deterministic vectors by feature hashing, no model and no server."""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise

import numpy as np

from devstream.db.tokenizer import scrub, word_lists
from devstream.memory.embedders import check_texts
from devstream.memory.vectors import Vectors
from devstream.vocabulary import EMBED_DIMENSION, HASHING_MODEL

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

    costly = False  # a few microseconds a text, less than a look for duplicates

    def __init__(self, dimension: int = EMBED_DIMENSION, model: str = HASHING_MODEL) -> None:
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
