"""Context assembly: the most relevant whole memories that fit a token budget.

Memories of the task's own plan come first, then the rest of the store; each is taken
whole or not at all, in ranking order, until the budget is spent. Token counting is
pluggable and never needs the network.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from devstream.db.memory_store import MemoryFilter
from devstream.errors import InvalidInput

if TYPE_CHECKING:
    from devstream.memory.search import SearchHit
    from devstream.memory.service import MemoryService

TokenCounter = Callable[[str], int]

# How many ranked memories are considered before packing.
CONSIDERED = 50
SEPARATOR = "\n\n"


def approximate_tokens(text: str) -> int:
    """About four characters per token, as for English text with common tokenizers."""
    return max(1, math.ceil(len(text) / 4))


@dataclass(frozen=True)
class Included:
    memory_id: int
    content_type: str
    tokens: int
    score: float


@dataclass(frozen=True)
class AssembledContext:
    text: str
    included: list[Included]
    tokens_used: int
    budget: int
    degraded: bool  # the searches behind it had no vectors

    @property
    def memory_ids(self) -> list[int]:
        return [item.memory_id for item in self.included]


def render(hit: SearchHit) -> str:
    """How one memory appears in an assembled context."""
    return f"[{hit.entry.content_type} #{hit.entry.id}]\n{hit.entry.content}"


async def assemble(
    memory: MemoryService,
    query: str,
    budget: int,
    *,
    plan_id: int | None = None,
    per_type_cap: int | None = None,
    count_tokens: TokenCounter = approximate_tokens,
    count_retrievals: bool = True,
) -> AssembledContext:
    """Pack the best whole memories for `query` into `budget` tokens.

    Without `count_retrievals` the caller counts them itself (in its own transaction).
    """
    if budget < 1:
        raise InvalidInput(f"token budget must be at least 1, got {budget}")
    if per_type_cap is not None and per_type_cap < 1:
        raise InvalidInput(f"per-type cap must be at least 1, got {per_type_cap}")
    with memory.metrics.timed("memory.assemble"):
        hits, degraded = await _ranked(memory, query, plan_id)
    chosen: list[tuple[SearchHit, str, int]] = []
    per_type: Counter[str] = Counter()
    used = 0
    for hit in hits:
        # The separator is counted with the block it precedes, so the text fits the budget.
        piece = render(hit) if not chosen else SEPARATOR + render(hit)
        tokens = count_tokens(piece)
        kind = hit.entry.content_type
        if used + tokens > budget or (per_type_cap and per_type[kind] >= per_type_cap):
            continue
        chosen.append((hit, piece, tokens))
        per_type[kind] += 1
        used += tokens
    if chosen and count_retrievals:
        await memory.count_retrievals([hit.entry.id for hit, _, _ in chosen])
    return AssembledContext(
        text="".join(piece for _, piece, _ in chosen),
        included=[Included(h.entry.id, h.entry.content_type, t, h.score) for h, _, t in chosen],
        tokens_used=used,
        budget=budget,
        degraded=degraded,
    )


async def _ranked(
    memory: MemoryService, query: str, plan_id: int | None
) -> tuple[list[SearchHit], bool]:
    """The plan's own memories first, then everything else, without repeats."""
    scopes = [MemoryFilter(plan_id=plan_id), MemoryFilter()] if plan_id else [MemoryFilter()]
    seen: set[int] = set()
    hits: list[SearchHit] = []
    degraded = False
    for scope in scopes:
        result = await memory.search(query, limit=CONSIDERED, filters=scope)
        degraded = degraded or result.degraded
        hits += [hit for hit in result.hits if hit.entry.id not in seen]
        seen.update(hit.entry.id for hit in result.hits)
    return hits, degraded
