"""A fixed, seeded synthetic corpus for search benchmarks.

Vocabulary: VOCABULARY_SIZE made-up words of two to four syllables, drawn with Zipf
probabilities p(rank) ~ 1 / rank**ZIPF_EXPONENT, so a few words are everywhere (as "the" and
"data" are in real notes) and most are rare. Entries have about WORDS_PER_ENTRY words;
queries have three to six words from the same distribution, common words included.
"""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt

SEED = 20_261_125
VOCABULARY_SIZE = 20_000
ZIPF_EXPONENT = 1.1
WORDS_PER_ENTRY = 60
QUERY_COUNT = 200

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z"]
_VOWELS = ["a", "e", "i", "o", "u"]


def vocabulary(size: int = VOCABULARY_SIZE) -> list[str]:
    """Distinct pronounceable words, in a fixed order (rank 1 first)."""
    syllables = [onset + vowel for onset in _ONSETS for vowel in _VOWELS]
    words: list[str] = []
    for length in (2, 3, 4):
        for parts in itertools.product(syllables, repeat=length):
            words.append("".join(parts) + "x")  # a final consonant keeps stemmers away
            if len(words) == size:
                return words
    raise ValueError(f"cannot make {size} distinct words")


def zipf_probabilities(
    size: int = VOCABULARY_SIZE, exponent: float = ZIPF_EXPONENT
) -> npt.NDArray[np.float64]:
    ranks = np.arange(1, size + 1, dtype=np.float64)
    weights = np.power(ranks, -exponent)
    probabilities: npt.NDArray[np.float64] = weights / weights.sum()
    return probabilities


class Corpus:
    def __init__(self, seed: int = SEED) -> None:
        self._rng = np.random.default_rng(seed)
        self._words = np.array(vocabulary())
        self._p = zipf_probabilities()

    def entries(self, count: int) -> list[str]:
        lengths = self._rng.integers(WORDS_PER_ENTRY - 10, WORDS_PER_ENTRY + 11, size=count)
        drawn = self._rng.choice(self._words, size=int(lengths.sum()), p=self._p)
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        return [" ".join(drawn[start:end]) for start, end in itertools.pairwise(bounds)]

    def queries(self, count: int = QUERY_COUNT) -> list[str]:
        found: dict[str, None] = {}
        while len(found) < count:
            length = int(self._rng.integers(3, 7))
            found.setdefault(" ".join(self._rng.choice(self._words, size=length, p=self._p)))
        return list(found)
