"""The lexical index's term lookup over FTS5's sorted terms."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from devstream.memory import lexical
from devstream.memory.lexical import base_postings

_terms = st.sets(st.text(min_size=1, max_size=6), max_size=5 * lexical._BLOCK)


@given(stored=_terms, asked=st.lists(st.text(max_size=6), max_size=20))
def test_a_term_is_found_with_its_rows_and_any_other_is_not(
    stored: set[str], asked: list[str]
) -> None:
    """Over several blocks of terms: each stored term (the first and last of a block
    included) finds its own rows and counts; a term before, between or after them finds none."""
    terms = sorted(stored, key=str.encode)  # FTS5's order
    # Term i is in rows i and i + 1, the second time twice.
    instances = np.array([row for i in range(len(terms)) for row in (i, i + 1, i + 1)], np.int64)
    postings, _ = base_postings(terms, instances, range(0, 3 * len(terms) + 1, 3), len(terms) + 1)

    for i, term in enumerate(terms):
        rows, counts = postings.hits(term)
        assert (rows.tolist(), counts.tolist()) == ([i, i + 1], [1, 2]), term
    for term in set(asked) - stored:
        rows, counts = postings.hits(term)
        assert (rows.size, counts.size) == (0, 0), term
