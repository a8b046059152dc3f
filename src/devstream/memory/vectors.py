"""The vector index: unit float32 vectors by row, with int8 codes for a fast first pass.

A search of a large store scans the int8 codes (a quarter of the bytes, SIMD dot products)
for the best `RESCORED` times as many rows as it needs, then re-scores those rows exactly on
the float32 vectors: the int8 dot product of two unit vectors is off by far less than the
gaps between the top candidates, so the exact re-scoring returns the exact ranking in
practice (the benchmarks measure recall against the full float32 scan). A small store is
scanned in float32 alone.
Feature-hashed vectors (the offline embedder's) are mostly zeros, and a query of a few words
has a few non-zero coordinates: its dot products need those coordinates' codes alone. Such
a store keeps its codes by column as well, and a sparse query reads only its own columns
(a twentieth of the scan at 100,000 rows), with the same integer dot products as the scan.
Rows built or loaded from the cache form a read-only base, which a cache keeps
memory-mapped; later rows are appended. Rows without a vector of this model hold zeros and
score 0.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import TypeVar

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
Vectors = npt.NDArray[np.float32]  # one row per text, as an embedder returns them
Codes = npt.NDArray[np.int8]
Scores = npt.NDArray[np.float32]
Item = TypeVar("Item", bound=np.generic)
VECTOR_DTYPE = "<f4"  # how vectors are stored, in the database and the cache

# Every coordinate of a unit vector lies in [-1, 1]: scaled by 127 it fits int8 as it is.
CODE_SCALE = 127.0
# Rows scanned on their codes per row wanted, then re-scored on their float32 vectors.
RESCORED = 4
# A query whose codes use at most 1/SPARSE_QUERY of the coordinates is scored on its columns.
SPARSE_QUERY = 8
# Codes are kept by column as well when at most 1/SPARSE_CODES of them are non-zero: a
# model's dense vectors never make a sparse query, and would keep the columns for nothing.
SPARSE_CODES = 4
# Stores of this many rows or more are scanned on their codes first. Below it the float32
# matrix is small enough for the CPU's caches, and scanning it costs no more than scanning
# the codes and re-scoring (0.25 against 0.31 ms at 4,096 rows here; 0.97 against 0.46 ms
# at 10,000).
CODES_FROM = 1 << 13
# Rows per block when quantizing: never a second float32 copy of a large matrix.
_BLOCK = 1 << 15
# A scan is split across the cores once each gets this many rows: one core alone reads
# memory slower than the cores together, but waking a thread costs more below that.
_SPLIT = 1 << 15
_CORES = os.cpu_count() or 1


def as_float32(values: npt.ArrayLike) -> Vectors:
    """Values as float32: one beyond float32's range becomes infinite, which `fault` names,
    rather than a warning."""
    with np.errstate(over="ignore"):
        return np.asarray(values, dtype=np.float32)


def fault(vectors: Vectors) -> str | None:
    """Why these rows cannot be stored and scored, or None: a row whose length overflows
    float32 would normalise to zeros and silently match nothing."""
    matrix = np.atleast_2d(vectors)
    # NaN and infinity carry into the lengths: a finite one clears its row at once.
    if np.isfinite(_norms(matrix)).all():
        return None
    if not np.isfinite(matrix).all():
        return "NaN, infinite or out-of-range (float32) values"
    return "values so large that their length overflows float32"


def normalise(vectors: npt.ArrayLike) -> Vector:
    """Rows scaled to unit length (zero rows stay zero)."""
    matrix = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    norms = _norms(matrix)
    unit: Vector = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    return unit


def _norms(matrix: Vectors) -> Vectors:
    """Each row's length, as a column: without the squared copy of the whole matrix that
    `np.linalg.norm` makes (a third of a rebuild's time at 100k rows). An overflowing length
    comes out infinite, without a warning (einsum, unlike matmul, warns of none)."""
    squares: Vectors = np.einsum("ij,ij->i", matrix, matrix)
    return np.sqrt(squares)[:, np.newaxis]


def encode(vector: npt.ArrayLike) -> bytes:
    """A vector as it is stored."""
    return np.asarray(vector, dtype=VECTOR_DTYPE).tobytes()


def decode(stored: bytes) -> Vector:
    """A stored vector's values (read-only: a view of `stored`)."""
    return np.frombuffer(stored, dtype=VECTOR_DTYPE)


def columns_if_sparse(codes: Codes) -> Codes | None:
    """The codes by column (a row per coordinate) when most of them are zero, else None."""
    if codes.size == 0 or np.count_nonzero(codes) * SPARSE_CODES > codes.size:
        return None
    return np.ascontiguousarray(codes.T)


def quantize(unit: Vector) -> Codes:
    """The int8 codes of unit vectors (one row or many)."""
    codes = np.empty(unit.shape, np.int8)
    for start in range(0, len(unit), _BLOCK):
        block = unit[start : start + _BLOCK] * np.float32(CODE_SCALE)
        codes[start : start + _BLOCK] = np.rint(block, out=block)
    return codes


class VectorIndex:
    def __init__(
        self,
        model: str,
        dimension: int,
        base: Vector | None = None,
        codes: Codes | None = None,
        columns: Codes | None = None,
    ) -> None:
        self.model = model
        self.dimension = dimension
        self.base: Vector = np.zeros((0, dimension), np.float32) if base is None else base
        self.base_codes: Codes = quantize(self.base) if codes is None else codes
        self.base_columns = columns  # `base_codes` by column, if sparse (`columns_if_sparse`)
        self._added: Vector = np.zeros((0, dimension), np.float32)
        self._added_codes: Codes = np.zeros((0, dimension), np.int8)

    @property
    def nbytes(self) -> int:
        arrays = (self.base, self.base_codes, self._added, self._added_codes)
        columns = 0 if self.base_columns is None else self.base_columns.nbytes
        return sum(array.nbytes for array in arrays) + columns

    def based(self, size: int) -> VectorIndex:
        """An index whose base is rows [0, size) of this one, with their columns if sparse."""
        codes = self.codes(size)
        columns = columns_if_sparse(codes)
        return VectorIndex(self.model, self.dimension, self.matrix(size), codes, columns)

    def reserve(self, rows: int) -> None:
        """Room for this many rows after the base, all told."""
        if rows > len(self._added):
            self._added = _grown(self._added, rows)
            self._added_codes = _grown(self._added_codes, rows)

    def put(self, rows: range, blobs: Sequence[bytes | None]) -> None:
        """The vectors of rows just appended (None: no vector of this model)."""
        first, end = rows.start - len(self.base), rows.stop - len(self.base)
        if end > len(self._added):
            self.reserve(max(16, 2 * len(self._added), end))
        zero = bytes(4 * self.dimension)
        raw = decode(b"".join(blob or zero for blob in blobs))
        target = self._added[first:end]
        target[:] = raw.reshape(len(blobs), self.dimension)
        norms = _norms(target)
        unusable = ~np.isfinite(norms[:, 0])  # NaN or overflowing values score as no vector
        target[unusable], norms[unusable] = 0, 0
        np.divide(target, norms, out=target, where=norms > 0)  # in place: no second copy
        self._added_codes[first:end] = quantize(target)

    def matrix(self, size: int) -> Vector:
        """Rows [0, size) as one matrix (the appended part copied after the base)."""
        return _joined(self.base, self._added, size)

    def codes(self, size: int) -> Codes:
        """The int8 codes of rows [0, size), as `matrix` gives their vectors."""
        return _joined(self.base_codes, self._added_codes, size)

    def columns(self, size: int) -> Codes | None:
        """`columns_if_sparse` of rows [0, size)."""
        if self.base_columns is not None and len(self.base) == size:
            return self.base_columns
        return columns_if_sparse(self.codes(size))

    # A query is passed as a unit vector (`normalise(vector)[0]`), normalised once per search.

    def cosine(self, unit: Vector, size: int) -> Scores:
        """The query's exact cosine similarity to rows [0, size)."""
        out = np.empty(size, dtype=np.float32)
        base = len(self.base)
        np.matmul(self.base, unit, out=out[:base])
        np.matmul(self._added[: size - base], unit, out=out[base:])
        return out

    def approximate(self, unit: Vector, size: int) -> Scores:
        """The query's cosine similarity to rows [0, size), times CODE_SCALE², from codes."""
        out = np.empty((1, size), dtype=np.float32)
        base = len(self.base)
        used = np.flatnonzero(unit)
        columns = self.base_columns if len(used) * SPARSE_QUERY <= self.dimension else None
        if columns is not None:
            # The query's codes on its own coordinates, as `quantize` makes them.
            weights = np.rint(unit[used] * np.float32(CODE_SCALE))
            np.matmul(weights, columns[used], out=out[0, :base])
        if columns is None or size > base:  # codes scanned row by row: the query's, once
            code = quantize(unit[np.newaxis])
            if columns is None:
                _dots(self.base_codes, code, out[:, :base])
            _dots(self._added_codes[: size - base], code, out[:, base:])
        return out.reshape(size)

    def exact(self, unit: Vector, rows: npt.NDArray[np.int64]) -> Scores:
        """The query's exact cosine similarity to the given rows: a sparse query's on its
        non-zero coordinates alone (8 values of a row rather than 768; the zeros add
        nothing to a dot product)."""
        nonzero = np.flatnonzero(unit)
        used = nonzero if len(nonzero) * SPARSE_QUERY <= self.dimension else None
        query = unit if used is None else unit[used]
        base = len(self.base)
        if len(rows) == 0 or rows.max() < base:  # the common case: no mask to apply
            return _gathered(self.base, rows, used) @ query
        in_base = rows < base
        out = np.empty(len(rows), dtype=np.float32)
        out[in_base] = _gathered(self.base, rows[in_base], used) @ query
        out[~in_base] = _gathered(self._added, rows[~in_base] - base, used) @ query
        return out


def _gathered(
    matrix: Vector, rows: npt.NDArray[np.int64], used: npt.NDArray[np.intp] | None
) -> Vector:
    """The given rows of `matrix`, of the `used` columns only (None: all of them): taken by
    their flat positions, which numpy gathers several times faster than by two indexes."""
    if used is None:
        return matrix[rows]
    positions = (rows * matrix.shape[1])[:, np.newaxis] + used
    return matrix.reshape(-1).take(positions)


def _dots(codes: Codes, query: Codes, out: Scores) -> None:
    """out[0, i] = codes[i] · query; a large matrix is split across the cores."""
    import numkong  # noqa: PLC0415 - 0.1 s to load: only a search of a large store needs it

    parts = min(_CORES, len(codes) // _SPLIT)
    if parts <= 1:
        if len(codes):
            numkong.cdist(query, codes, metric="dot", out=out)
        return
    bounds = np.linspace(0, len(codes), parts + 1).astype(int).tolist()
    jobs = [
        _scanners().submit(
            numkong.cdist, query, codes[start:end], metric="dot", out=out[:, start:end]
        )
        for start, end in itertools.pairwise(bounds)
    ]
    for job in jobs:
        job.result()


@cache
def _scanners() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(_CORES, thread_name_prefix="devstream-scan")


def _grown(array: npt.NDArray[Item], rows: int) -> npt.NDArray[Item]:
    grown = np.zeros((rows, *array.shape[1:]), array.dtype)
    grown[: len(array)] = array
    return grown


def _joined(base: npt.NDArray[Item], added: npt.NDArray[Item], size: int) -> npt.NDArray[Item]:
    """Rows [0, size): a view when they are all in one part (as after a rebuild), else a copy."""
    part = added[: size - len(base)]
    if len(part) == 0:
        return base
    return part if len(base) == 0 else np.concatenate([base, part])
