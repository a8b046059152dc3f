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
