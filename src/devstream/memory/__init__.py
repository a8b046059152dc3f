"""Memory: embeddings, the entries they index, hybrid search and context assembly.

What callers use is here. The Ollama embedder is `devstream.memory.ollama.OllamaEmbedder`:
it is not imported with this package, as its HTTP client costs every command that does not
use it.
"""

from devstream.db.memory_store import MemoryFilter, Scope
from devstream.db.records import MemoryEntry
from devstream.memory.backfill import EmbedReport
from devstream.memory.context import (
    AssembledContext,
    Included,
    TokenCounter,
    approximate_tokens,
    assemble,
)
from devstream.memory.embedders import DeferredEmbedder, Embedder, HashingEmbedder
from devstream.memory.index import MemoryIndex
from devstream.memory.search import SearchHit, SearchResult, SearchWeights
from devstream.memory.service import MemoryService, NewMemory, StoreResult

__all__ = [
    "AssembledContext",
    "DeferredEmbedder",
    "EmbedReport",
    "Embedder",
    "HashingEmbedder",
    "Included",
    "MemoryEntry",
    "MemoryFilter",
    "MemoryIndex",
    "MemoryService",
    "NewMemory",
    "Scope",
    "SearchHit",
    "SearchResult",
    "SearchWeights",
    "StoreResult",
    "TokenCounter",
    "approximate_tokens",
    "assemble",
]
