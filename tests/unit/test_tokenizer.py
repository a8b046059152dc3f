"""The tokenizer module: words, index terms and query phrases exactly as SQLite's FTS5 has them.

The reference is a separate in-memory database built from migration 0001's own full-text
statements (memory_fts and its insert trigger over a minimal memory_entries table), read
back through its own fts5vocab table: the properties compare the module with what the
store's index really holds.
"""

# Greek, Cyrillic and Arabic letters that look like Latin ones are the point of these tests.
# ruff: noqa: RUF001

from __future__ import annotations

import importlib
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devstream.db import tokenizer as tokenizer_module
from devstream.db.tokenizer import (
    FTS_TOKENIZER,
    MAX_TERMS,
    Phrase,
    index_terms,
    query_phrases,
    scrub,
    word_lists,
    words,
)
from devstream.errors import InvalidInput
from devstream.memory.fulltext import match_expression

_MIGRATION = importlib.import_module("devstream.db.migrations.versions.0001_initial_schema")
FTS_UP = cast("tuple[str, ...]", _MIGRATION._SQLITE_FTS_UP)
PLAIN_TOKENIZER = FTS_TOKENIZER.removeprefix("porter ")


@contextmanager
def reference_db() -> Iterator[sqlite3.Connection]:
    """memory_fts as migration 0001 creates it, a words table without porter, and vocabs."""
    with closing(sqlite3.connect(":memory:", isolation_level=None)) as db:
        yield _reference_tables(db)


def _reference_tables(db: sqlite3.Connection) -> sqlite3.Connection:
    db.execute("CREATE TABLE memory_entries (id INTEGER PRIMARY KEY, content TEXT, keywords TEXT)")
    for statement in FTS_UP:
        db.execute(statement)
    db.execute("CREATE VIRTUAL TABLE fts_vocab USING fts5vocab(memory_fts, 'instance')")
    db.execute(f"CREATE VIRTUAL TABLE plain USING fts5(x, tokenize='{PLAIN_TOKENIZER}')")
    db.execute("CREATE VIRTUAL TABLE plain_vocab USING fts5vocab(plain, 'instance')")
    return db


def stored_terms(db: sqlite3.Connection, table: str, doc: int) -> list[str]:
    rows = db.execute(f"SELECT term FROM {table} WHERE doc = ? ORDER BY col, offset", (doc,))
    return [term for (term,) in rows]


def reference_terms(texts: Sequence[str]) -> tuple[list[list[str]], list[list[str]]]:
    """(index terms of the content column, plain words) of each text, as FTS5 stores them."""
    with reference_db() as db:
        for text in texts:
            doc = db.execute(
                "INSERT INTO memory_entries(content, keywords) VALUES (?, '')", (text,)
            ).lastrowid
            db.execute("INSERT INTO plain(rowid, x) VALUES (?, ?)", (doc, text))
        docs = range(1, len(texts) + 1)
        return (
            [stored_terms(db, "fts_vocab", doc) for doc in docs],
            [stored_terms(db, "plain_vocab", doc) for doc in docs],
        )


# --- strategies ---------------------------------------------------------------------------

MARKS = st.characters(categories=["Mn"])
PIECES = st.one_of(
    st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,6}([_.:/-][A-Za-z0-9]{1,6}){0,3}", fullmatch=True),
    st.from_regex(r"[0-9]{1,4}([.:/-][0-9]{1,4}){0,2}", fullmatch=True),
    st.text("àáâãäåçèéêëìíîïñòóôõöùúûüýÿßøæœÀÉÎÕÜŁłŠšŽžĳﬁ", min_size=1, max_size=6),
    st.tuples(st.sampled_from("aeiouAEnyαεоиعب"), st.text(MARKS, max_size=3)).map("".join),
    st.text("αβγδεζηθικλμνξοπρσςτυφχψωάέήίόύώΆΈΉΊΌΎΏϊϋΐΰΑΣΩ", min_size=1, max_size=6),
    st.text("абвгдеёжзийклмнопрстуфхцчшщъыьэюяЁЕЙ", min_size=1, max_size=6),
    st.text("ابتثجحخدذرزسشصضطظعغفقكلمنهويءآأإ\u064b\u064c\u064d\u064e\u064f\u0650\u0651\u0652"),
    st.text(st.characters(min_codepoint=0x0E01, max_codepoint=0x0E5B), min_size=1, max_size=8),
    st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=4),
    st.text("あいうえおかきくけこアイウエオカキ가나다라한국어", min_size=1, max_size=4),
    st.sampled_from(["😀", "👍🏽", "👨\u200d👩\u200d👧", "🏳️\u200d🌈", "❤️", "🇫🇷", "1️⃣"]),
    st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF),
    st.text("٠١٢٣٤٥٦٧٨٩०१२३½²Ⅻ", min_size=1, max_size=4),
    st.sampled_from(['"', '""', "NEAR(", ")", "*", "-", "OR", "AND", "NOT", ":", "^", "+", "'"]),
    st.text(max_size=6),
)
# Every whitespace character Python splits at, as a text's chunks are tokenized one by one.
WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
SEPARATORS = st.one_of(st.sampled_from(["", "  ", "\x00", ",", "_"]), st.sampled_from(WHITESPACE))


@st.composite
def texts(draw: st.DrawFn, max_pieces: int = 10) -> str:
    pieces = draw(st.lists(st.tuples(PIECES, SEPARATORS), max_size=max_pieces))
    return "".join(piece + separator for piece, separator in pieces)


# --- examples -----------------------------------------------------------------------------


def test_the_tokenizer_is_the_one_memory_fts_is_created_with() -> None:
    specs = re.findall(r"tokenize='([^']*)'", FTS_UP[0])
    assert specs == [FTS_TOKENIZER]


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("snake_case foo.bar 2026-11-25", ["snake", "case", "foo", "bar", "2026", "11", "25"]),
        ("Running writers, generalization", ["run", "writer", "gener"]),
        ("Café résumé NAÏVE", ["cafe", "resum", "naiv"]),
        # unicode61 keeps the Greek tonos and the Cyrillic diaeresis; only case folds.
        ("καλημέρα καλημερα ΚΑΛΗΜΈΡΑ", ["καλημέρα", "καλημερα", "καλημέρα"]),
        ("ёлка елка Ёлка", ["ёлка", "елка", "ёлка"]),
        # Arabic harakat and Thai vowel and tone marks separate words.
        ("مَرْحَبًا مرحبا", ["م", "ر", "ح", "ب", "ا", "مرحبا"]),
        ("สวัสดีครับ ภาษาไทย", ["สว", "สด", "คร", "บ", "ภาษาไทย"]),
        # CJK runs are not segmented: a run without spaces is one term.
        ("数据库迁移 データベース 한국어", ["数据库迁移", "データベース", "한국어"]),
        # Emoji separate words, but a skin-tone modifier is a term of its own.
        ("x😀y 👍🏽 👨\u200d👩\u200d👧", ["x", "y", "🏽"]),
        ("v2 3d 42 ½ ٣٤ Ⅻ", ["v2", "3d", "42", "½", "٣٤", "ⅻ"]),
        ('"NEAR(a b)" * - OR title:x', ["near", "a", "b", "or", "titl", "x"]),
        ("a\x00b", ["a", "b"]),
        ("", []),
    ],
)
def test_index_terms_examples(text: str, terms: list[str]) -> None:
    assert index_terms([text]) == [terms]
    assert reference_terms([text])[0] == [terms]


def test_words_fold_case_and_diacritics_but_do_not_stem() -> None:
    assert words("Running CAFÉ naïve snake_case") == ["running", "cafe", "naive", "snake", "case"]
    assert word_lists(["Writers", "", "ёлка"]) == [["writers"], [], ["ёлка"]]
    assert word_lists([]) == []
    assert index_terms([]) == []


def test_a_single_string_is_not_a_batch() -> None:
    with pytest.raises(TypeError, match="sequence of texts"):
        index_terms("text")  # a str is a Sequence[str]: the mistake typing cannot catch


def test_a_lone_surrogate_is_refused_with_a_typed_error() -> None:
    with pytest.raises(InvalidInput, match=r"lone surrogate U\+DCFF at offset 2"):
        words("ok\udcffthen")
    with pytest.raises(InvalidInput, match="surrogate"):
        index_terms(["fine", "bad \ud800"])
    assert index_terms(["fine afterwards"]) == [["fine", "afterward"]]


def test_scrub_replaces_what_sqlite_cannot_take_by_a_separator() -> None:
    assert scrub("a\x00b\udcffc d") == "a\ufffdb\ufffdc d"
    assert words(scrub("naïve\udcffwriter")) == ["naive", "writer"]


@pytest.mark.parametrize(
    ("query", "phrases"),
    [
        ("snake_case", [Phrase("snake_case", ("snake", "case"))]),
        (
            "foo.bar 2026-11-25",
            [Phrase("foo.bar", ("foo", "bar")), Phrase("2026-11-25", ("2026", "11", "25"))],
        ),
        # The first chunk of each distinct term sequence is kept; chunks without terms go.
        (
            "Cafe café cafes * - ?! writers writer",
            [Phrase("Cafe", ("cafe",)), Phrase("writers", ("writer",))],
        ),
        (
            '"NEAR(a b)" OR title:x',
            [
                Phrase('"NEAR(a', ("near", "a")),
                Phrase('b)"', ("b",)),
                Phrase("OR", ("or",)),
                Phrase("title:x", ("titl", "x")),
            ],
        ),
        # NUL and lone surrogates (argv's undecodable bytes) become U+FFFD, a separator.
        ("a\x00b \udcff", [Phrase("a\ufffdb", ("a", "b"))]),
        ("   ", []),
    ],
)
def test_query_phrases_examples(query: str, phrases: list[Phrase]) -> None:
    assert query_phrases(query) == phrases


def test_query_phrases_are_capped() -> None:
    query = " ".join(f"w{n}" for n in range(MAX_TERMS + 10))
    phrases = query_phrases(query)
    assert len(phrases) == MAX_TERMS
    assert phrases[-1] == Phrase(f"w{MAX_TERMS - 1}", (f"w{MAX_TERMS - 1}",))


def test_match_expression_quotes_every_chunk_as_typed() -> None:
    query = '"NEAR(a b)" * - OR title:x'
    expression = match_expression(query)
    assert expression == '"""NEAR(a" OR "b)""" OR "OR" OR "title:x"'
    assert match_expression("* - ?!") is None
    with reference_db() as db:
        for doc in ["near a", "b", "title x", "or", "a near", "x title"]:
            db.execute("INSERT INTO memory_entries(content, keywords) VALUES (?, '')", (doc,))
        rows = db.execute("SELECT rowid FROM memory_fts WHERE memory_fts MATCH ?", (expression,))
        assert sorted(rowid for (rowid,) in rows) == [1, 2, 3, 4]


def test_concurrent_callers_get_their_own_results() -> None:
    def terms_of(n: int) -> list[list[str]]:
        return index_terms([f"thread{n} running", f"alone{n}"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(terms_of, range(400)))
    assert results == [[[f"thread{n}", "run"], [f"alone{n}"]] for n in range(400)]


def test_chunks_seen_before_are_answered_without_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    """A text's terms are its whitespace-separated chunks' terms; a chunk already tokenized is
    not asked of SQLite again, and a caller changing an answer changes no later one."""
    first = words("Wrïters kéep rünning")
    first.append("changed by its caller")
    assert index_terms(["writers running"]) == [["writer", "run"]]  # its own table's answer

    monkeypatch.setattr(tokenizer_module._tokenizer, "_connect", _no_sqlite)
    assert words("rünning\tWrïters  kéep") == ["running", "writers", "keep"]
    assert word_lists(["kéep", "kéep rünning"]) == [["keep"], ["keep", "running"]]
    assert index_terms(["running writers"]) == [["run", "writer"]]
    with pytest.raises(AssertionError, match="went to SQLite"):
        words("kéep anöther")


@pytest.fixture
def fresh_tokenizer(monkeypatch: pytest.MonkeyPatch) -> Iterator[tokenizer_module._Tokenizer]:
    """A tokenizer that has seen no chunk, in the module's place; its connection closed after."""
    fresh = tokenizer_module._Tokenizer()
    monkeypatch.setattr(tokenizer_module, "_tokenizer", fresh)
    yield fresh
    if fresh._connection is not None:
        fresh._connection.close()


def test_the_chunks_kept_are_bounded_the_least_recently_used_dropped_first(
    fresh_tokenizer: tokenizer_module._Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokenizer_module, "KNOWN_CHUNKS", 3)
    words("öne twö thrée")
    words("öne")  # now the most recently used
    assert words("föur") == ["four"]  # drops "twö"
    monkeypatch.setattr(fresh_tokenizer, "_connect", _no_sqlite)
    assert words("öne thrée föur") == ["one", "three", "four"]
    with pytest.raises(AssertionError, match="went to SQLite"):
        words("twö")


def test_a_long_text_is_tokenized_whole_and_its_chunks_are_not_kept(
    fresh_tokenizer: tokenizer_module._Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    long = " ".join(f"w{n} Running_fast" for n in range(tokenizer_module.CHUNKED_UP_TO))
    texts = [long, "short Running_fast", long + " end"]
    expected, _ = reference_terms(texts)
    assert index_terms(texts) == expected
    monkeypatch.setattr(fresh_tokenizer, "_connect", _no_sqlite)
    assert index_terms(["Running_fast short"]) == [["run", "fast", "short"]]
    with pytest.raises(AssertionError, match="went to SQLite"):
        index_terms(["w0"])


def test_a_long_text_asked_alone_twice_in_a_row_goes_to_sqlite_once(
    fresh_tokenizer: tokenizer_module._Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store asks for its content's words twice: for its keywords, then for its vector."""
    long = " ".join(f"wé{n}" for n in range(tokenizer_module.CHUNKED_UP_TO + 1))
    first = words(long)
    first.append("changed by its caller")
    monkeypatch.setattr(fresh_tokenizer, "_connect", _no_sqlite)
    assert words(long) == [f"we{n}" for n in range(tokenizer_module.CHUNKED_UP_TO + 1)]
    with pytest.raises(AssertionError, match="went to SQLite"):
        words(long + " more")


def test_words_of_ascii_are_sqlites_answer_for_each_character_without_asking_again(
    fresh_tokenizer: tokenizer_module._Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ASCII character between two words, and one long text of them all: once the
    tokenizer has read its table, the words of ASCII text never go to SQLite."""
    samples = [f"Ab{chr(code)}9z" for code in range(128)]
    samples += ["".join(map(chr, range(128))) * 3, "x" * tokenizer_module.MAX_TOKEN_BYTES]
    _, expected = reference_terms(samples)
    words("warm")
    monkeypatch.setattr(fresh_tokenizer, "_connect", _no_sqlite)
    assert word_lists(samples) == expected
    assert {len(terms) for terms in expected[:128]} == {1, 2}  # joined by some, split by others


def test_a_token_fts5_would_cut_is_left_to_sqlite(
    fresh_tokenizer: tokenizer_module._Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    long = "y" * (tokenizer_module.MAX_TOKEN_BYTES + 1)
    (expected,) = reference_terms([long])[1]
    assert expected == ["y" * tokenizer_module.MAX_TOKEN_BYTES]  # as FTS5 keeps it
    assert words(long) == expected
    monkeypatch.setattr(fresh_tokenizer, "_connect", _no_sqlite)
    with pytest.raises(AssertionError, match="went to SQLite"):
        words("z" + long)


def _no_sqlite() -> sqlite3.Connection:
    raise AssertionError("the tokenizer went to SQLite again")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_tokenizes_even_if_the_parent_held_the_lock() -> None:
    script = (
        "import os\n"
        "from devstream.db import tokenizer\n"
        "tokenizer.words('warm up')\n"
        "with tokenizer._tokenizer._lock:\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        os._exit(0 if tokenizer.words('child ok') == ['child', 'ok'] else 1)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "raise SystemExit(os.waitstatus_to_exitcode(status))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], timeout=60, check=False)
    assert result.returncode == 0


# --- properties against FTS5 ---------------------------------------------------------------


@given(st.lists(texts(), max_size=4))
def test_index_terms_and_words_are_what_fts5_stores(batch: list[str]) -> None:
    terms, plain = reference_terms(batch)
    assert index_terms(batch) == terms
    assert word_lists(batch) == plain
    assert index_terms([scrub(text) for text in batch]) == terms


ANY_CHARACTER = st.characters(codec=None) | st.characters(categories=["Cs"]) | st.just("\x00")


@given(st.text(ANY_CHARACTER, max_size=40) | texts())
def test_match_expression_is_never_fts5_syntax(query: str) -> None:
    expression = match_expression(query)
    if expression is not None:
        with reference_db() as db:
            rows = db.execute(
                "SELECT rowid FROM memory_fts WHERE memory_fts MATCH ?", (expression,)
            )
            assert rows.fetchall() == []  # parsed as a query (syntax would raise), nothing stored
        # Chunks hold no whitespace, so every " OR " is a separator FTS5 reads as an operator.
        assert expression.count(" OR ") == len(query_phrases(query)) - 1


@given(texts(max_pieces=12))
def test_a_document_equal_to_a_query_chunk_is_found_by_the_query(query: str) -> None:
    chunks = query.split()
    expression = match_expression(query)
    searchable = {doc for doc, terms in enumerate(index_terms(chunks), start=1) if terms}
    if expression is None:
        assert not searchable
        return
    with reference_db() as db:
        db.executemany(
            "INSERT INTO memory_entries(content, keywords) VALUES (?, '')", [(c,) for c in chunks]
        )
        rows = db.execute("SELECT rowid FROM memory_fts WHERE memory_fts MATCH ?", (expression,))
        assert {rowid for (rowid,) in rows} == searchable
