"""The vector index's int8 first pass: codes, the split scan, and the exact re-scoring."""

from __future__ import annotations

import numpy as np
import pytest

from devstream.memory import vectors
from devstream.memory.vectors import CODE_SCALE, VectorIndex, encode, normalise, quantize


def _unit(rows: int, dimension: int, seed: int = 0) -> vectors.Vector:
    return normalise(np.random.default_rng(seed).standard_normal((rows, dimension)))


def test_codes_are_the_coordinates_scaled_and_rounded() -> None:
    unit = _unit(50, 32)
    codes = quantize(unit)
    assert codes.dtype == np.int8
    assert np.abs(codes.astype(np.float32) / CODE_SCALE - unit).max() <= 0.5 / CODE_SCALE + 1e-7
    assert quantize(np.array([[1.0, -1.0, 0.0]], np.float32)).tolist() == [[127, -127, 0]]


@pytest.mark.parametrize("rows", [0, 7, 3 * vectors._SPLIT + 5], ids=["empty", "one", "split"])
def test_the_scan_is_the_integer_dot_product_of_the_codes(rows: int) -> None:
    """Split across the cores or not, with rows in the base and appended after it."""
    dimension = 8
    base = _unit(rows, dimension)
    added = _unit(3, dimension, seed=1)
    index = VectorIndex("m", dimension, base=base)
    index.put(range(rows, rows + 3), [encode(vector) for vector in added])
    query = normalise(np.random.default_rng(2).standard_normal(dimension))[0]

    scores = index.approximate(query, rows + 3)

    code = quantize(query[np.newaxis])[0].astype(np.int64)
    expected = np.concatenate([quantize(base), quantize(added)]).astype(np.int64) @ code
    assert scores.tolist() == expected.astype(np.float32).tolist()


def _sparse(rows: int, dimension: int, used: int, seed: int = 0) -> vectors.Vector:
    """Unit vectors with `used` non-zero coordinates each, as feature hashing makes them."""
    rng = np.random.default_rng(seed)
    matrix = np.zeros((rows, dimension), np.float32)
    for row in matrix:
        row[rng.choice(dimension, used, replace=False)] = rng.standard_normal(used)
    return normalise(matrix)


def test_sparse_codes_are_kept_by_column_and_dense_ones_are_not() -> None:
    sparse = quantize(_sparse(40, 64, 8))
    columns = vectors.columns_if_sparse(sparse)
    assert columns is not None
    assert columns.flags.c_contiguous
    assert (columns == sparse.T).all()
    assert vectors.columns_if_sparse(quantize(_unit(40, 64))) is None
    assert vectors.columns_if_sparse(quantize(_unit(0, 64))) is None


@pytest.mark.parametrize("used", [2, 8, 40], ids=["sparse", "at the bound", "dense"])
def test_a_store_kept_by_column_scans_to_the_same_integer_dot_products(used: int) -> None:
    """A query using few coordinates is scored on those columns alone; one using more of
    them is scanned by row. Both give the codes' integer dot products, appended rows too."""
    dimension = 64
    base = _sparse(300, dimension, 6)
    codes = quantize(base)
    index = VectorIndex("m", dimension, base, codes, vectors.columns_if_sparse(codes))
    added = _sparse(4, dimension, 6, seed=1)
    index.put(range(300, 304), [encode(vector) for vector in added])
    query = _sparse(1, dimension, used, seed=2)[0]

    scores = index.approximate(query, 304)

    code = quantize(query[np.newaxis])[0].astype(np.int64)
    expected = np.concatenate([codes, quantize(added)]).astype(np.int64) @ code
    assert scores.tolist() == expected.astype(np.float32).tolist()


def test_rows_made_the_base_keep_their_vectors_codes_and_columns() -> None:
    index = VectorIndex("m", 16)
    matrix = _sparse(10, 16, 2)
    index.put(range(10), [encode(vector) for vector in matrix])

    held, codes = index.matrix(10), index.codes(10)

    based = index.based(10)

    assert (based.base == held).all()
    assert (based.base_codes == codes).all()
    assert based.base_columns is not None
    assert (based.base_columns == codes.T).all()
    assert based.columns(10) is based.base_columns
    # Read whole (as the cache is written) without a copy of the matrix.
    assert np.shares_memory(based.matrix(10), based.base)
    assert np.shares_memory(based.codes(10), based.base_codes)
    based.put(range(10, 12), [encode(vector) for vector in _sparse(2, 16, 2, seed=1)])
    grown = based.columns(12)
    assert grown is not None
    assert (grown == based.codes(12).T).all()


def test_exact_scores_are_the_float32_cosine_of_base_and_appended_rows() -> None:
    base, added = _unit(20, 16), _unit(5, 16, seed=1)
    index = VectorIndex("m", 16, base=base)
    index.put(range(20, 25), [encode(vector * 3.0) for vector in added[:4]] + [None])
    unit = normalise(np.random.default_rng(3).standard_normal(16))[0]
    rows = np.array([24, 3, 21, 0], dtype=np.int64)

    scores = index.exact(unit, rows)

    assert scores[0] == 0.0  # no vector of this model
    assert scores[1:] == pytest.approx([base[3] @ unit, added[1] @ unit, base[0] @ unit])
    assert index.cosine(unit, 25)[rows].tolist() == pytest.approx(scores.tolist())
    assert index.exact(unit, rows[[1, 3]]).tolist() == pytest.approx(
        [base[3] @ unit, base[0] @ unit]
    )


def test_the_first_pass_keeps_the_exact_nearest_rows() -> None:
    """Unit vectors' int8 dot products are close enough that the rows re-scored contain the
    exact best ones."""
    matrix = _unit(5_000, 64)
    index = VectorIndex("m", 64, base=matrix)
    for seed in range(20):
        query = normalise(np.random.default_rng(100 + seed).standard_normal(64))[0]
        best = set(np.argsort(-(matrix @ query))[:10].tolist())
        rough = index.approximate(query, len(matrix))
        first_pass = set(np.argsort(-rough)[: vectors.RESCORED * 10].tolist())
        assert best <= first_pass, seed
