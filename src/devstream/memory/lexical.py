"""The in-process full-text index: BM25 over FTS5's own terms, ranked as FTS5 ranks.

FTS5 remains the durable full-text index and the only tokenizer: the base postings are read
from it (or from the index cache written from them), and the terms of entries that changed
since come from SQLite's tokenizer (`devstream.db.tokenizer`). Scores follow FTS5's bm25:
the same idf, k1 = 1.2, b = 0.75, over the content and keywords columns together; a query
phrase of several terms counts its occurrences as FTS5 does.
"""

from __future__ import annotations

import bisect
import itertools
import math
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from devstream.memory.rows import Mask, RowIds, Rows

K1 = 1.2
B = 0.75
# FTS5 gives a term that is in at least half the rows this idf instead of zero or less.
MIN_IDF = 1e-6
# The most such a phrase adds to a row's score: idf * tf * (k1 + 1) / (tf + norm) < idf * (k1 + 1).
FLAT_MOST = MIN_IDF * (K1 + 1)
# Rows of such phrases from which looking them up for the best rows alone costs less than
# scoring them all.
FLAT_LOOKUP_FROM = 1 << 13

# Terms per block of a term lookup: one binary search over the blocks' first terms (kept as
# Python bytes), then one within the block.
_BLOCK = 16
# Terms whose positions are kept once looked up (all forgotten when full).
_FOUND_TERMS = 1 << 14

Counts = npt.NDArray[np.int32]
# Rows as the base postings keep them (int32, read without a copy) or as appended (int64).
PostingRows = npt.NDArray[np.int32] | RowIds
Hits = tuple[PostingRows, Counts]  # rows holding a term or phrase, and how often
_NO_HITS: Hits = (np.zeros(0, np.int64), np.zeros(0, np.int32))


@dataclass(frozen=True)
class BasePostings:
    """Postings of the rows an index was built with, as flat read-only arrays.

    Term i is the UTF-8 text `terms[term_bounds[i]:term_bounds[i + 1]]` (terms in byte
    order, as FTS5 keeps them); its rows and counts are `rows[starts[i]:starts[i + 1]]`.
    """

    terms: npt.NDArray[np.uint8]
    term_bounds: npt.NDArray[np.int64]
    starts: npt.NDArray[np.int64]
    rows: npt.NDArray[np.int32]
    counts: Counts

    @classmethod
    def empty(cls) -> BasePostings:
        zero = np.zeros(1, np.int64)
        return cls(np.zeros(0, np.uint8), zero, zero, np.zeros(0, np.int32), np.zeros(0, np.int32))

    @property
    def nbytes(self) -> int:
        parts = (self.terms, self.term_bounds, self.starts, self.rows, self.counts)
        return sum(part.nbytes for part in parts)

    def hits(self, term: str) -> Hits:
        found = self._found
        i = found.get(term)
        if i is None:
            if len(found) >= _FOUND_TERMS:
                found.clear()
            i = found[term] = self._position(term.encode())
        if i < 0:
            return _NO_HITS
        starts = self.starts
        part = slice(starts[i], starts[i + 1])
        return self.rows[part], self.counts[part]

    def _position(self, key: bytes) -> int:
        """The term's position, or -1 if no row holds it."""
        terms, bounds, fences = self._lookup
        # The block of terms that `key` falls in, by its first term; then the place within.
        first = max(bisect.bisect_right(fences, key) - 1, 0) * _BLOCK
        block = range(first, min(first + _BLOCK, len(bounds) - 1))
        i = first + bisect.bisect_left(block, key, key=lambda k: terms[bounds[k] : bounds[k + 1]])
        if i == block.stop or terms[bounds[i] : bounds[i + 1]] != key:
            return -1
        return i

    @cached_property
    def _found(self) -> dict[str, int]:
        """Terms looked up lately and their positions (-1: none): words recur in queries."""
        return {}

    @cached_property
    def _lookup(self) -> tuple[bytes, array[int], list[bytes]]:
        """The terms and their bounds as Python objects, which a binary search reads faster
        than numpy's scalars; and the first term of every _BLOCK."""
        terms, bounds = self.terms.tobytes(), array("q", self.term_bounds.tobytes())
        fences = [terms[bounds[k] : bounds[k + 1]] for k in range(0, len(bounds) - 1, _BLOCK)]
        return terms, bounds, fences


def base_postings(
    terms: Sequence[str],
    instances: npt.NDArray[np.int64],
    instance_starts: Sequence[int],
    row_count: int,
) -> tuple[BasePostings, npt.NDArray[np.int64]]:
    """Postings from every instance of every term (`instances` holds the row of each, term
    by term, ascending within a term), and the number of instances in each row."""
    encoded = [term.encode() for term in terms]
    if any(a >= b for a, b in itertools.pairwise(encoded)):  # FTS5 keeps byte order
        raise ValueError("FTS5 terms arrived out of order")
    sizes = np.fromiter((len(term) for term in encoded), np.int64, count=len(encoded))
    term_bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    bounds = np.asarray(instance_starts, dtype=np.int64)
    # One posting per run of equal rows within a term.
    first = np.ones(len(instances), dtype=bool)
    first[1:] = instances[1:] != instances[:-1]
    first[bounds[:-1][bounds[:-1] < len(instances)]] = True
    heads = np.flatnonzero(first)
    counts = np.diff(np.append(heads, len(instances))).astype(np.int32)
    starts = np.searchsorted(heads, bounds).astype(np.int64)
    lengths = np.bincount(instances, minlength=row_count).astype(np.int64)
    postings = BasePostings(blob, term_bounds, starts, instances[heads].astype(np.int32), counts)
    return postings, lengths


class _Postings:
    """Rows that hold one term, and how often; appended to, read as numpy arrays."""

    def __init__(self) -> None:
        self._rows = array("q")
        self._counts = array("i")
        self._cache: Hits | None = None

    def add(self, row: int, count: int) -> None:
        self._rows.append(row)
        self._counts.append(count)
        self._cache = None

    @property
    def nbytes(self) -> int:
        return self._rows.itemsize * len(self._rows) + self._counts.itemsize * len(self._counts)

    def hits(self) -> Hits:
        if self._cache is None:  # copies: the arrays keep growing
            self._cache = (
                np.array(self._rows, dtype=np.int64),
                np.array(self._counts, dtype=np.int32),
            )
        return self._cache


class LexicalIndex:
    """Postings over the rows of a `Rows` table: a read-only base, then appended rows."""

    def __init__(self, rows: Rows, base: BasePostings | None = None) -> None:
        self.rows = rows
        self.base = base or BasePostings.empty()
        self._added: dict[str, _Postings] = {}
        # (rows, live rows, total length) _row_norms were computed for.
        self._norms_for: tuple[int, int, float] | None = None
        self._row_norms: npt.NDArray[np.float64] = np.zeros(0, np.float64)

    @property
    def nbytes(self) -> int:
        return self.base.nbytes + sum(p.nbytes for p in self._added.values())

    def add(self, row: int, terms: Iterable[str]) -> None:
        """Index a new row's terms (content and keywords together)."""
        for term, count in Counter(terms).items():
            self._added.setdefault(term, _Postings()).add(row, count)

    def hits(self, term: str) -> Hits:
        """Every row holding `term`, dead ones included."""
        base = self.base.hits(term)
        added = self._added.get(term)
        if added is None:
            return base
        more = added.hits()
        return np.concatenate([base[0], more[0]]), np.concatenate([base[1], more[1]])

    def search(self, hits: Sequence[Hits], limit: int, allowed: Mask) -> list[tuple[int, float]]:
        """(row, bm25 score; higher is better) of the best `limit` allowed rows, given each
        query phrase's rows (ascending) and counts.

        A phrase in half the rows or more gets FTS5's floor idf and adds less than
        `FLAT_MOST` to any score: when the other phrases already rank `limit` rows, only
        rows within that much of the last of them can still change places, so the long
        posting lists of common words (FLAT_LOOKUP_FROM rows or more in all) are looked up
        for those rows alone.
        """
        rows = self.rows
        if len(rows) == 0 or limit <= 0:
            return []
        norms = self._norms()
        # Dead rows may score here and below: `allowed` drops them.
        known = [(idf, *hit) for hit in hits if (idf := _idf(hit[0], rows)) is not None]
        flat: list[Hits] = [(r, c) for idf, r, c in known if idf == MIN_IDF]
        if sum(len(r) for r, _ in flat) >= FLAT_LOOKUP_FROM:
            known = [phrase for phrase in known if phrase[0] != MIN_IDF]
        else:
            flat = []
        scores = _summed(known, norms)
        ranked = (allowed & (scores[: len(allowed)] > 0)).nonzero()[0]
        if flat and len(ranked) >= limit:
            last = np.partition(scores[ranked], -limit)[-limit]
            ranked = ranked[scores[ranked] >= last - len(flat) * FLAT_MOST]
            for phrase_rows, counts in flat:
                found = _counts_at(phrase_rows, counts, ranked)
                scores[ranked] += _bm25(MIN_IDF, found, norms[ranked])
        elif flat:
            scores += _summed([(MIN_IDF, *phrase) for phrase in flat], norms)
            ranked = (allowed & (scores[: len(allowed)] > 0)).nonzero()[0]
        if len(ranked) > limit:
            ranked = ranked[np.argpartition(scores[ranked], -limit)[-limit:]]
        best = ranked[np.argsort(-scores[ranked], kind="stable")]
        return list(zip(best.tolist(), scores[best].tolist(), strict=True))

    def _norms(self) -> npt.NDArray[np.float64]:
        """Each row's BM25 length norm, k1 * (1 - b + b * length / average length): kept
        until a row is added or killed, which moves the average."""
        rows = self.rows
        key = (rows.size, len(rows), rows.total_length)
        if self._norms_for != key:
            average = rows.total_length / len(rows) or 1.0  # no row has a term: unused
            self._row_norms = K1 * (1 - B + B * rows.lengths[: rows.size] / average)
            self._norms_for = key
        return self._row_norms


def _bm25(idf: float, counts: Counts, norms: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Scores for a phrase of this idf found `counts` times in rows of these norms."""
    scored: npt.NDArray[np.float64] = (idf * (K1 + 1)) * counts / (counts + norms)
    return scored


def _summed(
    phrases: Sequence[tuple[float, PostingRows, Counts]], norms: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Each row's score over phrases of the given idfs, in one pass: the sums are added in
    phrase order, as adding phrase by phrase would."""
    if not phrases:
        return np.zeros(len(norms), dtype=np.float64)
    rows = np.concatenate([phrase_rows for _, phrase_rows, _ in phrases])
    scored = np.concatenate([_bm25(idf, c, norms[r]) for idf, r, c in phrases])
    summed = np.bincount(rows, weights=scored, minlength=len(norms))
    return summed.astype(np.float64, copy=False)


def _idf(phrase_rows: PostingRows, rows: Rows) -> float | None:
    """FTS5's idf of a phrase held by these rows (None: by no live row). A phrase in half
    the live rows or more has the floor idf, which needs no count when even every dead row
    being among them would leave it there."""
    docs = len(rows)
    dead = rows.size - docs
    if len(phrase_rows) - dead >= docs / 2:
        return MIN_IDF
    df = int(np.count_nonzero(rows.alive[phrase_rows])) if dead else len(phrase_rows)
    if df == 0:
        return None
    return max(math.log((docs - df + 0.5) / (df + 0.5)), MIN_IDF)


def _counts_at(phrase_rows: PostingRows, counts: Counts, wanted: RowIds) -> Counts:
    """How often the phrase occurs in each wanted row (0 where it does not)."""
    if len(phrase_rows) == 0:
        return np.zeros(len(wanted), np.int32)
    at = np.minimum(np.searchsorted(phrase_rows, wanted), len(phrase_rows) - 1)
    found: Counts = np.where(phrase_rows[at] == wanted, counts[at], np.int32(0))
    return found


def phrase_hits(positions: Sequence[npt.NDArray[np.int64]], rows: Rows) -> Hits:
    """Rows holding a phrase and how often, from the (entry, column, offset) triples of each
    of its terms' instances, in phrase order: a hit is the first term at some offset and the
    i-th term at that offset + i, in the same column."""
    keys = [_position_keys(triples) for triples in positions]
    starts = keys[0]
    for i, following in enumerate(keys[1:], start=1):
        starts = starts[np.isin(starts + i, following)]
    entries, counts = np.unique(starts >> _ENTRY_SHIFT, return_counts=True)
    found = rows.rows_of(entries)
    order = np.argsort(found)  # a changed entry's row comes after those of later ids
    return found[order], counts[order].astype(np.int32)


# Offsets fit in 31 bits and the column in one: entry << 32 | column << 31 | offset.
_ENTRY_SHIFT = 32


def _position_keys(triples: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    entry, column, offset = triples[0::3], triples[1::3], triples[2::3]
    keys: npt.NDArray[np.int64] = (entry << _ENTRY_SHIFT) | (column << 31) | offset
    return keys
