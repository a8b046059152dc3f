"""Weighted Reciprocal Rank Fusion: the invariants any input keeps."""

from __future__ import annotations

from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devstream.memory.search import RRF_K, TEXT_EVIDENCE, SearchWeights, evident, fuse, fused

_RANKING = st.lists(st.integers(min_value=1, max_value=40), unique=True, max_size=15)
_WEIGHT = st.floats(min_value=0.0, max_value=10.0, allow_nan=False)
_LISTS = st.lists(st.tuples(_WEIGHT, _RANKING), max_size=4)


@given(_LISTS, st.randoms(use_true_random=False))
def test_the_order_of_the_lists_does_not_matter(
    lists: list[tuple[float, list[int]]], random: Random
) -> None:
    shuffled = list(lists)
    random.shuffle(shuffled)
    assert fuse(shuffled) == pytest.approx(fuse(lists))


@given(_WEIGHT, _RANKING.filter(lambda ids: len(ids) >= 2), st.data())
def test_a_better_rank_never_lowers_a_fused_score(
    weight: float, ranking: list[int], data: st.DataObject
) -> None:
    lower = data.draw(st.integers(min_value=1, max_value=len(ranking) - 1), label="position")
    promoted = list(ranking)
    promoted[lower - 1], promoted[lower] = promoted[lower], promoted[lower - 1]
    moved = ranking[lower]
    assert fuse([(weight, promoted)]).get(moved, 0.0) >= fuse([(weight, ranking)]).get(moved, 0.0)


@given(_RANKING, _LISTS)
def test_a_list_of_weight_zero_adds_nothing_not_even_its_ids(
    ranking: list[int], others: list[tuple[float, list[int]]]
) -> None:
    assert fuse([*others, (0.0, ranking)]) == fuse(others)


def test_each_list_adds_weight_over_k_plus_rank() -> None:
    scores = fuse([(1.0, [7, 8]), (0.5, [8])])
    assert scores == pytest.approx({7: 1 / (RRF_K + 1), 8: 1 / (RRF_K + 2) + 0.5 / (RRF_K + 1)})


def test_full_text_matches_far_below_the_best_are_no_evidence() -> None:
    """BM25 weighs a word in more than half of the rows at 1e-6: rows matching only such
    words leave the fused text ranking, and the row with the rare word keeps its lead."""
    rare, common = (9, 4.2), [(n, 1.4e-6) for n in range(1, 6)]
    assert evident([rare, *common]) == [9]
    assert evident([(9, 4.2), (3, 4.2 * TEXT_EVIDENCE), (4, 4.1e-3)]) == [9, 3]
    # Among matches all of common words, there is no rarer one to defer to.
    assert evident(common) == [1, 2, 3, 4, 5]
    assert evident([]) == []
    scores, best = fused([rare, *common], [(n, 0.4) for n in range(1, 6)], SearchWeights(), 3)
    assert best[0] == 9, scores
