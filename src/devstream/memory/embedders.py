"""Embedders turn texts into vectors: the protocol they share, and one that defers.

Every embedder returns raw float32 rows of its configured dimension; callers normalise.
The embedders themselves live apart, each imported only when used: the offline one in
`devstream.memory.hashing` (numpy), the Ollama client in `devstream.memory.ollama` (its
HTTP and retry libraries). A hook, which only defers, loads neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from devstream.errors import EmbeddingDeferred

if TYPE_CHECKING:
    from devstream.memory.vectors import Vectors


class Embedder(Protocol):
    """Anything that embeds texts into vectors of one model and dimension.

    One may also say `costly = False` when embedding a text costs less than a read of the
    store; a store then embeds at once instead of looking for duplicates first (one that
    does not say is taken to be costly, as a model server is).
    """

    model: str
    dimension: int

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Float32 rows of shape (len(texts), dimension), in input order; not normalised."""
        ...

    async def aclose(self) -> None:
        """Release whatever the embedder holds (connections); it is unusable afterwards."""
        ...


def check_texts(texts: Sequence[str]) -> None:
    """Refuse a bare string, which would otherwise be embedded one character per row."""
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of texts, not a single string")


class DeferredEmbedder:
    """An embedder's model and dimension, without the embedder: what is stored waits as
    pending (for `memory backfill` or a running `devstream mcp`) and searches rank on full
    text. For hooks, which must never wait on an embedding server."""

    costly = False

    def __init__(self, model: str, dimension: int) -> None:
        self.model = model
        self.dimension = dimension

    async def embed(self, texts: Sequence[str]) -> Vectors:
        check_texts(texts)
        raise EmbeddingDeferred("embedding deferred: a hook never waits on the embedder")

    async def aclose(self) -> None:
        return None
