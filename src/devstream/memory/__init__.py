"""Memory: embeddings, the entries they index, hybrid search and context assembly.

What callers use is here, each name loaded from its module on first use: a process that
only stores (a capture hook) then never imports numpy or the index. The Ollama embedder is
`devstream.memory.ollama.OllamaEmbedder`, imported only where a server is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from devstream.exports import lazy

if TYPE_CHECKING:  # the same names as _HOMES below, for type checkers
    from devstream.db.memory_store import MemoryFilter as MemoryFilter
    from devstream.db.memory_store import Scope as Scope
    from devstream.db.records import MemoryEntry as MemoryEntry
    from devstream.memory.backfill import EmbedReport as EmbedReport
    from devstream.memory.context import AssembledContext as AssembledContext
    from devstream.memory.context import Included as Included
    from devstream.memory.context import TokenCounter as TokenCounter
    from devstream.memory.context import approximate_tokens as approximate_tokens
    from devstream.memory.context import assemble as assemble
    from devstream.memory.embedders import DeferredEmbedder as DeferredEmbedder
    from devstream.memory.embedders import Embedder as Embedder
    from devstream.memory.hashing import HashingEmbedder as HashingEmbedder
    from devstream.memory.index import MemoryIndex as MemoryIndex
    from devstream.memory.search import SearchHit as SearchHit
    from devstream.memory.search import SearchResult as SearchResult
    from devstream.memory.search import SearchWeights as SearchWeights
    from devstream.memory.service import MemoryService as MemoryService
    from devstream.memory.service import NewMemory as NewMemory
    from devstream.memory.service import StoreResult as StoreResult

_HOMES = {
    "devstream.db.memory_store": ("MemoryFilter", "Scope"),
    "devstream.db.records": ("MemoryEntry",),
    "devstream.memory.backfill": ("EmbedReport",),
    "devstream.memory.context": (
        "AssembledContext",
        "Included",
        "TokenCounter",
        "approximate_tokens",
        "assemble",
    ),
    "devstream.memory.embedders": ("DeferredEmbedder", "Embedder"),
    "devstream.memory.hashing": ("HashingEmbedder",),
    "devstream.memory.index": ("MemoryIndex",),
    "devstream.memory.search": ("SearchHit", "SearchResult", "SearchWeights"),
    "devstream.memory.service": ("MemoryService", "NewMemory", "StoreResult"),
}
if not TYPE_CHECKING:  # type checkers would otherwise accept any attribute through it
    __getattr__, __dir__ = lazy(__name__, _HOMES)
