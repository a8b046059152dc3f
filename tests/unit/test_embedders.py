"""The offline hashing embedder: shape, determinism, pinned features and similarity."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from devstream.memory.embedders import Embedder
from devstream.memory.hashing import HashingEmbedder


def cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


async def test_hashing_shape_dtype_norm_and_determinism() -> None:
    embedder: Embedder = HashingEmbedder()
    texts = ["Fix the flaky login test", "fix the FLAKY login test!", "Write release notes"]
    vectors = await embedder.embed(texts)
    assert (embedder.model, embedder.dimension) == ("devstream-hashing-v2", 768)
    assert vectors.shape == (3, 768)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    # Case and punctuation do not matter; a second instance gives the very same bytes.
    assert np.array_equal(vectors[0], vectors[1])
    again = await HashingEmbedder().embed(texts)
    assert again.tobytes() == vectors.tobytes()
    empty = await embedder.embed([])
    assert empty.shape == (0, 768)
    assert empty.dtype == np.float32


async def test_hashing_gives_the_zero_vector_for_text_without_words() -> None:
    vectors = await HashingEmbedder(dimension=64).embed(["", "   ", "?! -- ..."])
    assert vectors.shape == (3, 64)
    assert not vectors.any()


def test_hashing_pins_its_features() -> None:
    """The hashing is part of the model: a change here must come with a new model name."""
    for word, index, sign in [("hello", 466, 1.0), ("world", 436, 1.0), ("task", 468, -1.0)]:
        vector = HashingEmbedder().embed_one(word)
        assert np.flatnonzero(vector).tolist() == [index]
        assert vector[index] == sign
    # Unicode words count as words, and NFKC folds compatibility forms ("ﬁ" ligature).
    assert np.array_equal(HashingEmbedder().embed_one("ﬁle"), HashingEmbedder().embed_one("FILE"))
    assert np.count_nonzero(HashingEmbedder().embed_one("Straße")) == 1


def test_hashing_weights_are_sublinear_and_bigrams_count_less() -> None:
    vector = HashingEmbedder().embed_one("alpha alpha alpha alpha beta")
    alpha, beta, alpha_alpha, alpha_beta = (vector[i] for i in (762, 174, 209, 490))
    assert np.count_nonzero(vector) == 4
    assert alpha / beta == pytest.approx(1 + math.log(4))  # both signs are negative
    assert alpha_alpha / alpha_beta == pytest.approx(1 + math.log(3))
    assert alpha_beta / beta == pytest.approx(-0.5)


def test_hashing_is_identical_in_another_process_with_another_hash_seed() -> None:
    text = "Rate limiter drops requests under load; retry with backoff"
    code = (
        "import sys, hashlib\n"
        "from devstream.memory.hashing import HashingEmbedder\n"
        "v = HashingEmbedder().embed_one(sys.argv[1])\n"
        "print(hashlib.sha256(v.tobytes()).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", code, text], capture_output=True, text=True, env=env, check=True
    )
    local = hashlib.sha256(HashingEmbedder().embed_one(text).tobytes()).hexdigest()
    assert result.stdout.strip() == local


async def test_hashing_similarity_follows_shared_words() -> None:
    query, related, unrelated = await HashingEmbedder().embed(
        [
            "database migration fails on sqlite schema version",
            "the sqlite schema migration failed again",
            "design the onboarding screen colours",
        ]
    )
    related_score = cosine(query, related)
    unrelated_score = cosine(query, unrelated)
    assert related_score > 0.3
    assert abs(unrelated_score) < 0.15
    assert related_score > unrelated_score + 0.25


async def test_embedders_reject_a_bare_string() -> None:
    with pytest.raises(TypeError, match="sequence of texts"):
        await HashingEmbedder().embed("one text")
