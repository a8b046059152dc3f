"""The in-process full-text index: BM25 over postings, ranked as SQLite's FTS5 ranks.

FTS5 remains the durable full-text index; this mirror answers queries without making
SQLite score every row that contains a common word. It tokenizes as FTS5's
`porter unicode61 remove_diacritics 2` does (case-folded letters and digits, diacritics
removed, Porter stems) and scores with FTS5's bm25: the same idf, k1 = 1.2, b = 0.75, over
the content and keywords columns together.
"""

from __future__ import annotations

import math
import re
import unicodedata
from array import array
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import snowballstemmer

from devstream.db.memory_store import MemoryFilter
from devstream.memory.fulltext import query_words
from devstream.memory.rows import RowMeta, Rows

K1 = 1.2
B = 0.75
# FTS5 gives a term that is in at least half the rows this idf instead of zero or less.
MIN_IDF = 1e-6

_WORD = re.compile(r"[^\W_]+")
_STEMMABLE = re.compile(r"[a-z]{3,64}")
_porter = snowballstemmer.stemmer("porter")


@lru_cache(maxsize=200_000)
def _stem(token: str) -> str:
    return str(_porter.stemWord(token)) if _STEMMABLE.fullmatch(token) else token


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text.lower())
    return "".join(char for char in decomposed if unicodedata.category(char) != "Mn")


def tokenize(text: str) -> list[str]:
    """The terms FTS5 would index for `text`, in order."""
    return [_stem(token) for token in _WORD.findall(_fold(text))]


class _Postings:
    """Rows that hold one term, and how often; appended to, read as numpy arrays."""

    def __init__(self) -> None:
        self._rows = array("q")
        self._counts = array("f")
        self._cache: tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]] | None = None

    def add(self, row: int, count: int) -> None:
        self._rows.append(row)
        self._counts.append(count)
        self._cache = None

    @property
    def nbytes(self) -> int:
        return self._rows.itemsize * len(self._rows) + self._counts.itemsize * len(self._counts)

    def arrays(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        if self._cache is None:  # copies: the arrays keep growing
            self._cache = (
                np.array(self._rows, dtype=np.int64),
                np.array(self._counts, dtype=np.float32),
            )
        return self._cache


class LexicalIndex:
    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.rows = Rows()
        self._postings: dict[str, _Postings] = {}
        self._df: Counter[str] = Counter()  # live rows holding each term
        self._terms: dict[int, tuple[str, ...]] = {}  # live row -> its distinct terms
        self._lengths = array("f")  # tokens per row
        # BM25's length normalisation per row; it changes only when an entry does.
        self._norm_cache: npt.NDArray[np.float32] | None = None
        self._total_tokens = 0.0  # over live rows

    @property
    def nbytes(self) -> int:
        postings = sum(p.nbytes for p in self._postings.values())
        return postings + self.rows.nbytes + self._lengths.itemsize * len(self._lengths)

    def load(self, entries: Iterable[tuple[int, RowMeta, str]]) -> None:
        self._reset()
        for entry_id, meta, text in entries:
            self.upsert(entry_id, text, meta)

    def upsert(self, entry_id: int, text: str, meta: RowMeta) -> None:
        self.remove(entry_id)
        tokens = tokenize(text)
        row = self.rows.append(entry_id, meta)
        counts = Counter(tokens)
        for term, count in counts.items():
            self._postings.setdefault(term, _Postings()).add(row, count)
        self._df.update(counts.keys())
        self._terms[row] = tuple(counts)
        self._lengths.append(len(tokens))
        self._norm_cache = None
        self._total_tokens += len(tokens)

    def remove(self, entry_id: int) -> None:
        row = self.rows.live.get(entry_id)
        if row is None:
            return
        self._df.subtract(self._terms.pop(row))
        self._total_tokens -= self._lengths[row]
        self._norm_cache = None
        self.rows.kill(entry_id)

    def search(self, query: str, limit: int, filters: MemoryFilter) -> list[tuple[int, float]]:
        """(id, bm25 score; higher is better) of the best `limit` live rows passing filters."""
        docs, size = len(self.rows), self.rows.size
        # One term per distinct query word, as the FTS5 query has one phrase per word.
        terms = [t for word in query_words(query) for t in tokenize(word) if self._df[t] > 0]
        if not terms or limit <= 0:
            return []
        if self._norm_cache is None:
            lengths = np.array(self._lengths, dtype=np.float32)
            self._norm_cache = K1 * (1 - B + B * lengths / (self._total_tokens / docs))
        norm = self._norm_cache
        scores = np.zeros(size, dtype=np.float64)
        for term in terms:
            df = self._df[term]
            idf = max(math.log((docs - df + 0.5) / (df + 0.5)), MIN_IDF)
            rows, counts = self._postings[term].arrays()
            weights = idf * counts * (K1 + 1) / (counts + norm[rows])
            scores += np.bincount(rows, weights=weights, minlength=size)
        candidates = np.flatnonzero(self.rows.mask(filters) & (scores > 0))
        if len(candidates) > limit:
            candidates = candidates[np.argpartition(scores[candidates], -limit)[-limit:]]
        best = candidates[np.argsort(-scores[candidates], kind="stable")]
        return [(int(self.rows.ids[row]), float(scores[row])) for row in best]
