"""The memory index's lifecycle: the change log, catch-up after foreign writes, the index
cache beside the store, and the fast path held to FTS5 itself."""

from __future__ import annotations

import asyncio
import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from devstream import DevStream, Settings
from devstream.db import index_source
from devstream.db.memory_store import MemoryFilter
from devstream.memory import cache, lexical
from devstream.memory import index as index_module
from devstream.memory.follow import CachePolicy, Followed, catch_up
from devstream.memory.index import MemoryIndex
from devstream.memory.search import Searcher, SearchHit, SearchWeights
from devstream.memory.service import NewMemory

pytestmark = pytest.mark.sqlite_only(
    "the in-process index, its change log and cache, held to FTS5; PostgreSQL searches in "
    "the database"
)
TEXT_ONLY = SearchWeights(text=1.0, vector=0.0)
NOTES = [
    "the writer holds the lock while readers read",
    "checkpoint the WAL after a burst of writes",
    "readers never block the writer in WAL mode",
]


async def _changes(ds: DevStream) -> list[tuple[int, str]]:
    async with ds.pool.read_transaction() as conn:
        rows = await conn.execute(
            text(
                "SELECT c.entry_id, c.generation = s.generation FROM memory_changes c, "
                "store_state s ORDER BY c.seq"
            )
        )
        return [(int(row[0]), "current" if row[1] else "earlier") for row in rows]


def _path(ds: DevStream) -> Path:
    path = ds.settings.sqlite_path
    assert path is not None
    return path


@pytest_asyncio.fixture
async def second_process(integration_real_database: DevStream) -> AsyncIterator[DevStream]:
    """Another DevStream on the same file: its own pool and index, as another process has."""
    async with DevStream.open(
        Settings(db=str(_path(integration_real_database))), migrate_schema=False
    ) as other:
        yield other


def in_process(ds: DevStream) -> Searcher:
    searcher = ds.memory.searcher
    assert isinstance(searcher, Searcher), "the in-process index serves SQLite stores"
    return searcher


def _cached(ds: DevStream, min_rows: int = 0) -> DevStream:
    """Let the store's cache be written from `min_rows` entries on (tests hold few)."""
    in_process(ds).cache = CachePolicy(cache.path_for(_path(ds)), min_rows=min_rows)
    return ds


async def _ids(ds: DevStream, query: str, **options: object) -> list[int]:
    return [hit.entry.id for hit in (await ds.memory.search(query, **options)).hits]  # type: ignore[arg-type]


# --- the change log ----------------------------------------------------------------------


async def test_every_change_to_a_memory_row_is_logged_in_its_own_transaction(
    integration_devstream: DevStream,
) -> None:
    ds = integration_devstream
    before = await _changes(ds)
    plan = await ds.tasks.create_plan("Logged plan")
    entry = (await ds.memory.store("a logged memory", "learning", plan_id=plan.id)).entry
    assert (await _changes(ds))[len(before) :] == [(entry.id, "current")]

    await ds.memory.get(entry.id)  # a retrieval count is no change to what is indexed
    assert len(await _changes(ds)) == len(before) + 1

    await ds.memory.update(entry.id, keywords=["logged"])
    async with ds.pool.write_transaction() as conn:  # the link cleared by SET NULL
        await conn.execute(text("DELETE FROM intervention_plans WHERE id = :id"), {"id": plan.id})
    await ds.memory.delete(entry.id)
    logged = (await _changes(ds))[len(before) :]
    assert [entry_id for entry_id, _ in logged] == [entry.id] * 4
    assert logged[-1] == (entry.id, "current")

    async def refuse(_: object) -> None:
        raise RuntimeError

    with pytest.raises(RuntimeError):
        await ds.memory.store_many([NewMemory("rolled back", "learning")], together_with=refuse)
    assert len(await _changes(ds)) == len(before) + 4


# --- following another process -------------------------------------------------------


async def test_a_foreign_write_costs_the_change_not_a_rebuild(
    integration_real_database: DevStream, second_process: DevStream
) -> None:
    ds, other = integration_real_database, second_process
    await ds.memory.store_many([NewMemory(note, "learning") for note in NOTES])
    assert (await ds.memory.catch_up()).rebuilt

    plan = await other.tasks.create_plan("Foreign plan")
    added = await other.memory.store("a foreign checkpoint note", "learning", plan_id=plan.id)
    assert await ds.memory.catch_up() == Followed(changes=1)
    assert added.entry.id in await _ids(ds, "foreign checkpoint")
    assert await _ids(ds, "checkpoint", filters=MemoryFilter(plan_id=plan.id)) == [added.entry.id]

    async with other.pool.write_transaction() as conn:  # clears the memory's plan link
        await conn.execute(text("DELETE FROM intervention_plans WHERE id = :id"), {"id": plan.id})
    await other.memory.delete((await other.memory.entries())[0].id)
    assert await ds.memory.catch_up() == Followed(changes=2)
    assert await _ids(ds, "checkpoint", filters=MemoryFilter(plan_id=plan.id)) == []
    assert len(ds.memory.index.rows) == 3
    assert ds.metrics.counters["memory.index.loads"] == 1


async def test_a_search_after_a_foreign_write_answers_for_the_newer_state(
    integration_real_database: DevStream, second_process: DevStream
) -> None:
    ds, other = integration_real_database, second_process
    await ds.memory.store_many([NewMemory(note, "learning") for note in NOTES])
    assert len(await _ids(ds, "writer", weights=TEXT_ONLY)) == 2
    added = (await other.memory.store("the writer checkpoints", "learning")).entry
    assert added.id in await _ids(ds, "writer", weights=TEXT_ONLY)
    await other.memory.delete(added.id)
    assert added.id not in await _ids(ds, "writer", weights=TEXT_ONLY)


async def test_an_index_behind_a_pruned_change_log_rebuilds(
    integration_real_database: DevStream, second_process: DevStream
) -> None:
    ds, other = integration_real_database, second_process
    entry = (await ds.memory.store(NOTES[0], "learning")).entry
    await ds.memory.catch_up()
    far_ahead = 1024 * 200  # a multiple of 1,024: the insert prunes what is 100,000 behind
    async with other.pool.write_transaction() as conn:
        await conn.execute(
            text(
                "INSERT INTO memory_changes(seq, entry_id, generation) "
                "SELECT :seq, :entry, generation FROM store_state"
            ),
            {"seq": far_ahead, "entry": entry.id},
        )
        oldest = await conn.scalar(text("SELECT min(seq) FROM memory_changes"))
    assert oldest == far_ahead
    assert (await ds.memory.catch_up()).rebuilt
    assert await _ids(ds, "writer holds the lock", weights=TEXT_ONLY) == [entry.id]


# --- the index cache ---------------------------------------------------------------------


async def test_a_fresh_process_starts_from_the_cache_and_catches_up(
    integration_real_database: DevStream, second_process: DevStream
) -> None:
    ds, other = _cached(integration_real_database), _cached(second_process)
    await ds.memory.store_many([NewMemory(note, "learning") for note in NOTES])
    assert (await ds.memory.catch_up()).rebuilt
    assert cache.path_for(_path(ds)).is_file()
    await ds.memory.store("the cache misses this one", "learning")

    followed = await other.memory.catch_up()
    assert followed == Followed(changes=1, from_cache=True)
    # The offline embedder's vectors are sparse: their codes come by column as well.
    loaded = in_process(other).index.vectors
    assert loaded.base_columns is not None
    assert (loaded.base_columns == loaded.base_codes.T).all()
    for query in ("writer readers", "cache misses", "WAL checkpoint"):
        mine, theirs = await ds.memory.search(query), await other.memory.search(query)
        assert [(h.entry.id, h.score, h.text_score) for h in theirs.hits] == [
            (h.entry.id, h.score, h.text_score) for h in mine.hits
        ]


async def test_a_small_store_writes_no_cache(integration_real_database: DevStream) -> None:
    ds = _cached(integration_real_database, min_rows=10)
    await ds.memory.store_many([NewMemory(note, "learning") for note in NOTES])
    assert (await ds.memory.catch_up()).rebuilt
    assert not cache.path_for(_path(ds)).exists()


@pytest.mark.parametrize("damage", ["flip a vector byte", "truncate", "garbage", "empty"])
async def test_a_damaged_cache_is_never_trusted(
    integration_real_database: DevStream, second_process: DevStream, damage: str
) -> None:
    ds, other = _cached(integration_real_database), _cached(second_process)
    await ds.memory.store_many([NewMemory(note, "learning") for note in NOTES])
    await ds.memory.catch_up()
    path = cache.path_for(_path(ds))
    data = bytearray(path.read_bytes())
    if damage == "flip a vector byte":
        data[len(data) // 2] ^= 0xFF  # the vectors fill most of the file
    elif damage == "truncate":
        del data[len(data) // 2 :]
    elif damage == "garbage":
        data[:16] = b"not an index....."[:16]
    else:
        data.clear()
    path.write_bytes(bytes(data))

    assert (await other.memory.catch_up()).rebuilt
    assert await _ids(other, "readers never block", weights=TEXT_ONLY) == await _ids(
        ds, "readers never block", weights=TEXT_ONLY
    )
    assert path.read_bytes() != bytes(data)  # rewritten after the rebuild


async def test_a_cache_of_another_store_or_model_is_never_applied(
    integration_real_database: DevStream, tmp_path: Path
) -> None:
    ds = _cached(integration_real_database)
    await ds.memory.store_many([NewMemory(note, "learning") for note in NOTES])
    await ds.memory.catch_up()
    written = cache.path_for(_path(ds))
    assert cache.load(written, "another-model", 768) is None
    assert cache.load(written, ds.memory.embedder.model, 384) is None

    # A new, empty store beside a cache of the old one: its state does not continue.
    fresh_db = tmp_path / "fresh.db"
    async with DevStream.open(Settings(db=str(fresh_db))) as fresh:
        cache.path_for(fresh_db).write_bytes(written.read_bytes())
        _cached(fresh)
        assert (await fresh.memory.catch_up()).rebuilt
        assert (await fresh.memory.search("readers never block")).hits == []


async def test_no_cache_where_it_cannot_be_written(integration_real_database: DevStream) -> None:
    ds = integration_real_database
    blocked = _path(ds).with_name("not-a-folder")
    blocked.write_text("a file where the cache's folder would be")
    in_process(ds).cache = CachePolicy(blocked / "devstream.db-index", min_rows=0)
    await ds.memory.store_many([NewMemory(note, "learning") for note in NOTES])
    assert len(await _ids(ds, "writer", weights=TEXT_ONLY)) == 2
    assert (await ds.memory.catch_up()) == Followed()


@pytest.mark.subprocess
@pytest.mark.sqlite_only("a store in a folder of the file system")
async def test_a_store_on_a_read_only_mount_is_searched_and_refuses_writes(
    tmp_path: Path,
) -> None:
    """A read-only mount (the one folder even root cannot write): SQLite could not make the
    -shm file a WAL reader needs, so the store is read as it stands; a write is refused."""
    if shutil.which("unshare") is None or not await _command_works("unshare", "-m", "true"):
        pytest.skip("needs a mount namespace (unshare -m) to mount a folder read-only")
    folder = tmp_path / "store"
    async with DevStream.open(folder / "notes.db") as ds:
        await ds.memory.store_many([NewMemory(note, "learning") for note in NOTES])
    devstream = f"{shlex.quote(sys.executable)} -m devstream --db {folder / 'notes.db'}"
    script = (
        f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && "
        f"{devstream} memory search --json 'writer lock' && "
        f"{{ {devstream} memory add 'a new note' --type context; echo exit $?; }}"
    )
    done = await asyncio.to_thread(
        subprocess.run,
        ["unshare", "-m", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found, refused = done.stdout.rsplit("}", 1)
    assert json.loads(found + "}")["hits"][0]["content"] == NOTES[0]
    assert refused.strip() == "exit 1"
    assert "attempt to write a readonly database" in done.stderr


async def _command_works(*command: str) -> bool:
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, check=False)
    return done.returncode == 0


# --- the fast path is FTS5 ---------------------------------------------------------------


async def test_an_identifier_is_a_phrase_on_both_paths(integration_devstream: DevStream) -> None:
    memory = integration_devstream.memory
    stored = await memory.store_many(
        [
            NewMemory(text, "code")
            for text in ("the snake_case naming rule", "a snake in the grass", "upper case letters")
        ]
    )
    for query in ("snake_case", "SNAKE_CASE rule", "snake-case"):
        fast = (await memory.search(query, weights=TEXT_ONLY)).hits
        exact = (await memory.search(query, weights=TEXT_ONLY, exact=True)).hits
        assert [h.entry.id for h in fast] == [h.entry.id for h in exact], query
        assert [h.text_score for h in fast] == pytest.approx([h.text_score for h in exact])
    hits = (await memory.search("snake_case", weights=TEXT_ONLY)).hits
    assert [h.entry.id for h in hits] == [stored[0].entry.id]


@pytest.mark.parametrize("lookup_from", [lexical.FLAT_LOOKUP_FROM, 0], ids=["summed", "looked-up"])
async def test_common_words_rank_as_fts5_when_the_rest_of_the_query_fills_the_list(
    integration_devstream: DevStream, monkeypatch: pytest.MonkeyPatch, lookup_from: int
) -> None:
    """ "the" is in every entry (FTS5's floor idf); "alpha" ranks more rows than a search
    takes, and they differ only in how often they say "the" (every one is eight words long,
    without keywords), so the common word's tiny scores alone decide which rows make it:
    whether its postings are summed over every row, or looked up for the best rows alone
    (as on a large store)."""
    monkeypatch.setattr(lexical, "FLAT_LOOKUP_FROM", lookup_from)
    memory = integration_devstream.memory
    entries = [
        " ".join(["alpha", *["the"] * (1 + n % 6), *[f"word{n}"] * (6 - n % 6)]) for n in range(60)
    ]
    entries += [f"the filler{n} sentence" for n in range(70)]
    await memory.store_many([NewMemory(entry, "context", keywords=[]) for entry in entries])
    for query in ("alpha the", "the", "the word7", "alpha"):
        fast = (await memory.search(query, limit=50, weights=TEXT_ONLY)).hits
        exact = (await memory.search(query, limit=50, weights=TEXT_ONLY, exact=True)).hits
        assert _ranking(fast, "text_score") == _ranking(exact, "text_score"), query
    top = (await memory.search("alpha the", limit=10, weights=TEXT_ONLY)).hits
    assert {h.entry.content.count(" the") for h in top} == {6}


def _ranking(hits: list[SearchHit], score: str) -> list[tuple[float, frozenset[int]]]:
    """Hits ranked by one of their scores: the ids of each score, best first (order within
    a tie is free, and so is which of the last score's ids are cut off)."""
    ties: dict[float, set[int]] = {}
    for hit in hits:
        value = getattr(hit, score)
        assert value is not None
        ties.setdefault(round(value, 12), set()).add(hit.entry.id)
    ranked = [(score, frozenset(ids)) for score, ids in sorted(ties.items(), reverse=True)]
    return [*ranked[:-1], (ranked[-1][0], frozenset())] if ranked else []


# Text as this memory holds it: identifiers, accents and combining marks, several scripts.
_WORDS = st.sampled_from(
    [
        "snake_case", "camelCase", "kebab-case", "v2.1", "2026-11-25", "café", "cafe",
        "naïve", "καλημέρα", "καλημερα", "ёлка", "елка", "كتاب", "كِتَاب", "ภาษาไทย",
        "数据库", "データ", "🙂", "e\u0301", "writer", "writers", "running", "x", "_",
    ]
)  # fmt: skip
_TEXT = st.lists(st.one_of(_WORDS, st.text(min_size=1, max_size=8)), min_size=1, max_size=12)


@settings(
    max_examples=40,
    deadline=None,
    # Each example empties the table first, so the fixture's store is safely reused; an
    # example writes and searches a real database, which is slow by Hypothesis's measure.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    documents=st.lists(_TEXT.map(" ".join), min_size=1, max_size=6),
    query=_TEXT.map(" ".join),
)
async def test_the_fast_path_ranks_and_scores_as_fts5(
    integration_devstream: DevStream, documents: list[str], query: str
) -> None:
    memory = integration_devstream.memory
    async with integration_devstream.pool.write_transaction() as conn:
        await conn.execute(text("DELETE FROM memory_entries"))  # each example starts empty
    usable = [d for d in documents if d.strip() and "\x00" not in d and _encodable(d)]
    if usable:
        await memory.store_many([NewMemory(d, "context") for d in usable])
    fast = (await memory.search(query, limit=50, weights=TEXT_ONLY)).hits
    exact = (await memory.search(query, limit=50, weights=TEXT_ONLY, exact=True)).hits
    assert sorted(h.entry.id for h in fast) == sorted(h.entry.id for h in exact)
    fast_scores = {h.entry.id: h.text_score for h in fast}
    assert {h.entry.id: h.text_score for h in exact} == pytest.approx(fast_scores)


def _encodable(text_: str) -> bool:
    try:
        text_.encode()
    except UnicodeEncodeError:
        return False
    return True


async def test_a_rebuild_reads_one_snapshot_even_while_another_process_writes(
    integration_real_database: DevStream, second_process: DevStream
) -> None:
    ds, other = integration_real_database, second_process
    await ds.memory.store_many([NewMemory(note, "learning") for note in NOTES])
    index = MemoryIndex(ds.memory.embedder.model, ds.memory.embedder.dimension)
    async with ds.pool.read_transaction() as conn:
        before = await index_source.state(conn, 0)  # the snapshot starts here
        await other.memory.store("written after the snapshot began", "learning")
        # The peer transaction starts later and sees the newer store: its postings are
        # refused, and the rebuild reads them in the snapshot instead.
        followed = await catch_up(index, conn, CachePolicy(None), ds.pool.read_transaction)
    assert followed.rebuilt
    assert index.state is not None
    assert index.state.token == before.token
    assert len(index.rows) == len(NOTES)
    assert int(index.text.hits("written")[0].size) == 0


async def _by_similarity(ds: DevStream, **options: object) -> list[tuple[float, frozenset[int]]]:
    """A vector-only search's hits, ranked by similarity."""
    found = await ds.memory.search(
        "writer holds the lock",
        limit=20,
        weights=SearchWeights(text=0.0, vector=1.0),
        **options,  # type: ignore[arg-type]
    )
    return _ranking(found.hits, "similarity")


async def test_a_large_store_searches_its_codes_first_and_finds_what_an_exact_scan_finds(
    integration_devstream: DevStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The int8 first pass, taken from the first row on: the same hits and similarities as
    scoring every row exactly, thresholds and filters included (which of the last tied hits
    make the cut is free)."""
    monkeypatch.setattr(index_module, "CODES_FROM", 0)
    notes = [
        NewMemory(f"note {n}: writer {'holds' if n % 3 else 'drops'} lock {n % 7}", kind)
        for n, kind in enumerate(["learning", "context"] * 150)
    ]
    await integration_devstream.memory.store_many(notes)
    context = MemoryFilter(content_types=frozenset({"context"}))
    for options in ({}, {"min_similarity": 0.3}, {"filters": context}):
        fast = await _by_similarity(integration_devstream, **options)
        exact = await _by_similarity(integration_devstream, exact=True, **options)
        assert fast, options
        assert fast == exact


async def test_a_stored_vector_the_index_cannot_read_counts_as_none(
    integration_real_database: DevStream,
) -> None:
    """Vectors written past the service's checks (by hand, or by an older import): too short,
    NaN, text instead of bytes. Searches go on; those rows are found by their words alone."""
    ds = integration_real_database
    stored = await ds.memory.store_many(
        [NewMemory(f"damaged entry {n} here", "context") for n in range(3)]
        + [NewMemory("a sound one beside them", "context")]
    )
    damaged = [result.entry.id for result in stored[:3]]
    nan = bytes.fromhex("0000c07f") * ds.memory.embedder.dimension
    async with ds.pool.write_transaction() as conn:
        for entry_id, value in zip(damaged, [b"\x00" * 12, nan, "not bytes"], strict=True):
            await conn.execute(
                text("UPDATE memory_entries SET embedding = :v WHERE id = :id"),
                {"v": value, "id": entry_id},
            )
    for exact in (False, True):
        result = await ds.memory.search("damaged entry", exact=exact)
        assert sorted(hit.entry.id for hit in result.hits) == damaged
        assert all(not hit.similarity for hit in result.hits), "None or 0, never NaN"
        sound = await ds.memory.search("a sound one", exact=exact)
        assert sound.hits[0].entry.content == "a sound one beside them"
