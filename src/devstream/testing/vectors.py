"""Deterministic pseudo-embeddings: stable stand-ins for a model's vectors in tests."""

from __future__ import annotations

import hashlib

import numpy as np

from devstream.vocabulary import EMBED_DIMENSION


def deterministic_embedding(text: str, dimension: int = EMBED_DIMENSION) -> list[float]:
    """A unit-length vector that depends only on `text` and `dimension`.

    The text's UTF-8 bytes (lone surrogates allowed) are hashed with BLAKE2b, the digest seeds
    NumPy's PCG64 generator, and `dimension` standard-normal draws are scaled to unit length.
    Hashing, unlike `hash()`, is the same in every process, so a test and a server in another
    process agree on the vector. Different texts give different, nearly orthogonal vectors.

    The values are float32 widened to float, as an embedding model's are: each one survives a
    round trip through JSON or a float32 array unchanged.
    """
    if dimension < 1:
        raise ValueError(f"dimension must be at least 1, not {dimension}")
    digest = hashlib.blake2b(text.encode("utf-8", errors="surrogatepass"), digest_size=16)
    rng = np.random.default_rng(int.from_bytes(digest.digest(), "big"))
    draws = rng.standard_normal(dimension)
    vector = (draws / np.linalg.norm(draws)).astype(np.float32)
    return [float(value) for value in vector]
