"""Memory benchmarks: store throughput, concurrency, and hybrid search at 1k / 10k / 100k.

Run with `pytest tests/integration/ --benchmark-only` (or `nox -s benchmark`); no xdist.
Search compares, side by side in one run: DevStream's search, a bare numpy brute-force
top-k over the same matrix, and the naive approach written out below (an FTS5 OR-query plus
every vector read back from the table on each query, fused by the same RRF).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture
from sqlalchemy import select, text
from threadpoolctl import threadpool_limits

from devstream import DevStream, Settings
from devstream.db import memory_store as store
from devstream.db.memory_store import MemoryFilter
from devstream.db.schema import memory_entries
from devstream.db.tokenizer import query_phrases
from devstream.memory.fulltext import match_expression
from devstream.memory.search import CANDIDATES, SearchWeights, fused
from devstream.memory.service import NewMemory
from devstream.memory.vectors import Vector, normalise
from tests.integration.benchmarks.conftest import median_s, record
from tests.integration.benchmarks.corpus import QUERY_COUNT, Corpus

Run = Callable[[Awaitable[Any]], Any]

STORE_TARGET = 1_000.0  # entries/s, one commit per entry
STORE_MANY_TARGET = 10_000.0  # entries/s
SEARCH_P50_TARGET_MS = {10_000: 4.0, 100_000: 25.0}
NAIVE_RATIO_TARGET = 8.0
RECALL_TARGET = 0.99
# Warm p50 over a bare numpy brute-force top-10 of the same vectors.
BRUTE_RATIO_TARGET = {10_000: 1.5, 100_000: 0.8}
ROUNDS = 3
NAIVE_QUERIES = {1_000: QUERY_COUNT, 10_000: 50, 100_000: 10}  # the naive path is slow
FULL_QUERIES = {1_000: QUERY_COUNT, 10_000: 100, 100_000: 30}  # full FTS5 rankings too
TOP = 10
DIMENSION = 768


def _vectors(count: int, seed: int) -> Vector:
    return np.random.default_rng(seed).normal(size=(count, DIMENSION)).astype(np.float32)


async def _count(ds: DevStream, table: str) -> int:
    async with ds.pool.read_transaction() as conn:
        return int(await conn.scalar(text(f"SELECT count(*) FROM {table}")) or 0)


async def _stored(ds: DevStream) -> tuple[int, int]:
    """(entries, full-text index rows): what a throughput run must leave behind."""
    return await _count(ds, "memory_entries"), await _count(ds, "memory_fts_docsize")


def _record_throughput(
    benchmark: BenchmarkFixture, per_round: int, name: str, target: float
) -> None:
    rate = per_round / median_s(benchmark)
    record(name, rate, "entries/s", f">= {target:,.0f}/s", rate >= target)


# --- store throughput ---------------------------------------------------------------------


def test_store_one_commit_per_entry(
    benchmark: BenchmarkFixture, bench_store: DevStream, run: Run
) -> None:
    """The public service, a file database with production pragmas and FTS triggers."""
    ds = bench_store
    per_round, rounds = 500, 5
    vectors = _vectors(per_round * (rounds + 1), seed=1)
    counter = iter(range(len(vectors)))

    async def store_round(ds: DevStream) -> None:
        for _ in range(per_round):
            n = next(counter)
            await ds.memory.store(
                f"note {n}: a decision and its reason", "decision", embedding=vectors[n]
            )

    benchmark.pedantic(lambda: run(store_round(ds)), rounds=rounds, warmup_rounds=1)
    stored = per_round * (rounds + 1)  # every round, the warm-up included, stored and indexed
    assert run(_stored(ds)) == (stored, stored)
    _record_throughput(benchmark, per_round, "store: one commit per entry", STORE_TARGET)


def test_store_many(benchmark: BenchmarkFixture, bench_store: DevStream, run: Run) -> None:
    ds = bench_store
    per_round, rounds = 5_000, 3
    vectors = _vectors(per_round * (rounds + 1), seed=2)
    batches = iter(range(rounds + 1))

    async def store_batch(ds: DevStream) -> None:
        start = next(batches) * per_round
        await ds.memory.store_many(
            [
                NewMemory(f"bulk note {n} about ingestion", "documentation", embedding=vectors[n])
                for n in range(start, start + per_round)
            ]
        )

    benchmark.pedantic(lambda: run(store_batch(ds)), rounds=rounds, warmup_rounds=1)
    stored = per_round * (rounds + 1)
    assert run(_stored(ds)) == (stored, stored)
    _record_throughput(benchmark, per_round, "store_many", STORE_MANY_TARGET)


def test_thousand_concurrent_memory_operations(
    benchmark: BenchmarkFixture, bench_store: DevStream, run: Run
) -> None:
    """Mixed store / search / update at once on a real pool: no errors, nothing lost."""
    ds = bench_store
    operations = 1_000
    rng = random.Random(3)  # a local generator: test plugins reseed the global one

    async def mixed(ds: DevStream) -> tuple[int, int]:
        seeded = await ds.memory.store_many(
            [NewMemory(f"seed {n} memory about pools", "context") for n in range(100)]
        )
        ids = [result.entry.id for result in seeded]
        kinds = [rng.choice(("store", "search", "update")) for _ in range(operations)]

        async def one(n: int, kind: str) -> object:
            if kind == "store":
                return await ds.memory.store(f"concurrent note {n} about pools", "learning")
            if kind == "search":
                return await ds.memory.search(f"pools note {n % 50}")
            return await ds.memory.update(rng.choice(ids), keywords=[f"touched{n}"])

        outcomes = await asyncio.gather(
            *(one(n, kind) for n, kind in enumerate(kinds)), return_exceptions=True
        )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        assert errors == []
        return kinds.count("store"), len(ids)

    stores, seeded = benchmark.pedantic(lambda: run(mixed(ds)), rounds=1, iterations=1)
    assert run(_stored(ds)) == (stores + seeded, stores + seeded)
    seconds = median_s(benchmark)
    record("1,000 concurrent memory operations", seconds * 1000, "ms", "0 errors, 0 lost", True)


# --- hybrid search ------------------------------------------------------------------------


async def _naive(ds: DevStream, query: str, query_vector: Vector) -> list[int]:
    """The approach without an index: FTS5 OR-query, every vector read back, same RRF."""
    match = match_expression(query)
    async with ds.pool.read_transaction() as conn:
        lexical = await store.full_text(conn, match, MemoryFilter(), CANDIDATES) if match else []
        rows = (
            await conn.execute(
                select(memory_entries.c.id, memory_entries.c.embedding).where(
                    memory_entries.c.embedding_status == "embedded"
                )
            )
        ).all()
    ids = np.array([row.id for row in rows])
    matrix = normalise(
        np.frombuffer(b"".join(row.embedding for row in rows), dtype="<f4").reshape(len(rows), -1)
    )
    sims = matrix @ normalise(query_vector)[0]
    best = np.argsort(-sims)[:CANDIDATES]
    vector = [(int(ids[i]), float(sims[i])) for i in best if sims[i] > 0]
    text = [(entry_id, -rank) for entry_id, rank in lexical]  # bm25() is negated
    return fused(text, vector, SearchWeights(), TOP)[1]


def _ms(samples: list[float], q: float) -> float:
    return 1000 * float(np.percentile(samples, q))


def _best_p50_ms(rounds: list[list[float]]) -> float:
    return min(_ms(samples, 50) for samples in rounds)


async def _fused_over_full_rankings(ds: DevStream, query: str, query_vector: Vector) -> list[int]:
    """The top ten of RRF over every full-text match and every positively similar vector."""
    match = match_expression(query)
    async with ds.pool.read_transaction() as conn:
        everything = 10**9
        lexical = await store.full_text(conn, match, MemoryFilter(), everything) if match else []
    index = ds.memory.index
    size = index.rows.size
    sims = index.vectors.cosine(normalise(query_vector)[0], size)
    order = np.argsort(-sims, kind="stable")
    vector = [
        (int(index.rows.ids[row]), float(sims[row]))
        for row in order
        if sims[row] > 0 and index.alive[row]
    ]
    text = [(entry_id, -rank) for entry_id, rank in lexical]  # bm25() is negated
    return fused(text, vector, SearchWeights(), TOP)[1]


def _recall(found: dict[str, list[int]], reference: dict[str, list[int]]) -> float:
    shares = [len(set(ids) & set(found[q])) / len(ids) for q, ids in reference.items() if ids]
    return statistics.mean(shares)


def _side_timings(ds: DevStream, queries: list[str], vectors: Vector) -> dict[str, list[float]]:
    """Each side of the fast path on its own, per query, as a search calls it: the full-text
    side (posting lookups and BM25) and the vector side (first pass and re-scoring)."""
    index = ds.memory.index
    timings: dict[str, list[float]] = {"text": [], "vector": []}
    allowed = index.mask(MemoryFilter())
    for query, vector in zip(queries, vectors, strict=True):
        phrases = query_phrases(query)
        assert all(len(p.terms) == 1 for p in phrases), "corpus queries are single words"
        unit = normalise(vector)[0]
        started = time.perf_counter()
        index.text.search([index.text.hits(p.terms[0]) for p in phrases], CANDIDATES, allowed)
        timings["text"].append(time.perf_counter() - started)
        started = time.perf_counter()
        index.nearest(unit, CANDIDATES, allowed, None)
        timings["vector"].append(time.perf_counter() - started)
    return timings


@pytest.mark.parametrize("size", [1_000, 10_000, 100_000], ids=["1k", "10k", "100k"])
def test_hybrid_search(
    benchmark: BenchmarkFixture, corpora: Callable[[int], Path], run: Run, size: int
) -> None:
    """Warm searches side by side with a bare numpy brute-force top-10 over the same vectors
    (float32, C-contiguous, one matrix product and argpartition, in this process: the same
    BLAS threads), each the best of ROUNDS rounds; and the naive approach."""
    path = corpora(size)
    queries = Corpus().queries()

    async def measure(ds: DevStream) -> dict[str, Any]:
        await ds.memory.search(queries[0])  # loads the index once, as a long-lived process does
        vectors = await ds.memory.embedder.embed(queries)
        fast: list[list[float]] = []
        brute: list[list[float]] = []
        one_thread: dict[str, list[list[float]]] = {"fast": [], "brute": []}
        fast_ids: dict[str, list[int]] = {}
        matrix = np.ascontiguousarray(ds.memory.index.vectors.matrix(ds.memory.index.rows.size))

        async def searches() -> list[float]:
            timings = []
            for query in queries:
                started = time.perf_counter()
                result = await ds.memory.search(query, limit=TOP)
                timings.append(time.perf_counter() - started)
                fast_ids[query] = [hit.entry.id for hit in result.hits]
            return timings

        def brute_force() -> list[float]:
            timings = []
            for vector in vectors:
                started = time.perf_counter()
                sims = matrix @ normalise(vector)[0]
                np.argpartition(sims, -TOP)[-TOP:]
                timings.append(time.perf_counter() - started)
            return timings

        for _ in range(ROUNDS):
            fast.append(await searches())
            brute.append(brute_force())
            with threadpool_limits(limits=1, user_api="blas"):
                one_thread["fast"].append(await searches())
                one_thread["brute"].append(brute_force())
        sides = [_side_timings(ds, queries, vectors) for _ in range(ROUNDS)]
        naive = []
        for query, vector in zip(queries[: NAIVE_QUERIES[size]], vectors, strict=False):
            started = time.perf_counter()
            await _naive(ds, query, vector)
            naive.append(time.perf_counter() - started)
        exact = {
            query: [hit.entry.id for hit in (await ds.memory.search(query, exact=True)).hits]
            for query in queries
        }
        full = {
            query: await _fused_over_full_rankings(ds, query, vector)
            for query, vector in zip(queries[: FULL_QUERIES[size]], vectors, strict=False)
        }
        return {
            "fast": fast,
            "brute": brute,
            "one thread": one_thread,
            "text side": [side["text"] for side in sides],
            "vector side": [side["vector"] for side in sides],
            "naive": naive,
            "recall": _recall(fast_ids, exact),
            "recall_full": _recall(fast_ids, full),
            "footprint": ds.memory.index.footprint(),
            "entries": len(ds.memory.index.rows),
        }

    async def session() -> dict[str, Any]:
        async with DevStream.open(Settings(db=str(path)), migrate_schema=False) as ds:
            return await measure(ds)

    figures = benchmark.pedantic(lambda: run(session()), rounds=1, iterations=1)
    assert figures["entries"] == size
    label = f"search {size // 1000}k"
    fast_p50 = _best_p50_ms(figures["fast"])
    brute_p50 = _best_p50_ms(figures["brute"])
    naive_p50 = _ms(figures["naive"], 50)
    target = SEARCH_P50_TARGET_MS.get(size)
    record(
        f"{label}: DevStream p50",
        fast_p50,
        "ms",
        f"<= {target:g} ms" if target else "",
        None if target is None else fast_p50 <= target,
    )
    record(f"{label}: DevStream p95", min(_ms(samples, 95) for samples in figures["fast"]), "ms")
    record(f"{label}: numpy brute-force top-10 p50", brute_p50, "ms")
    text_p50, vector_p50 = _best_p50_ms(figures["text side"]), _best_p50_ms(figures["vector side"])
    record(f"{label}: full-text side p50", text_p50, "ms")
    record(f"{label}: vector side p50", vector_p50, "ms")
    record(
        f"{label}: full-text side / vector side",
        text_p50 / vector_p50,
        "x",
        "<= 1x",
        text_p50 <= vector_p50,
    )
    record(f"{label}: naive p50 ({len(figures['naive'])} queries)", naive_p50, "ms")
    record(
        f"{label}: naive / DevStream",
        naive_p50 / fast_p50,
        "x",
        f">= {NAIVE_RATIO_TARGET:g}x",
        naive_p50 / fast_p50 >= NAIVE_RATIO_TARGET,
    )
    ratio_target = BRUTE_RATIO_TARGET.get(size)
    record(
        f"{label}: DevStream / numpy brute force",
        fast_p50 / brute_p50,
        "x",
        f"<= {ratio_target:g}x" if ratio_target else "",
        None if ratio_target is None else fast_p50 / brute_p50 <= ratio_target,
    )
    # The brute force's matrix product runs on every core BLAS may take (two here), a
    # search on one: the same ratio with BLAS held to one thread, for comparison.
    one_fast, one_brute = (_best_p50_ms(figures["one thread"][side]) for side in ("fast", "brute"))
    record(f"{label}: numpy brute-force top-10 p50, one BLAS thread", one_brute, "ms")
    record(f"{label}: DevStream / numpy brute force, one BLAS thread", one_fast / one_brute, "x")
    record(
        f"{label}: recall@10 vs exact (same depth)",
        figures["recall"],
        "",
        f">= {RECALL_TARGET}",
        figures["recall"] >= RECALL_TARGET,
    )
    record(f"{label}: recall@10 vs fusion of full rankings", figures["recall_full"], "")
    if size == 100_000:
        footprint = figures["footprint"]
        record("index footprint 100k: vectors (768-d)", footprint["vector_bytes"] / 2**20, "MiB")
        record("index footprint 100k: full text", footprint["text_bytes"] / 2**20, "MiB")
