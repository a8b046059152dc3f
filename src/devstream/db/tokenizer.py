"""What a word is: SQLite's own FTS5 tokenizer, asked through a private in-memory database.

The store's full-text index tokenizes with `FTS_TOKENIZER`. Python's `unicodedata` ships
other Unicode tables than SQLite's unicode61 (Greek tonos is kept, Arabic harakat and Thai
vowel marks split words, an emoji skin-tone modifier is a token), so a port of its rules
cannot agree with it. Instead texts are inserted into an FTS5 table of that very tokenizer
on a private `sqlite3` connection (the stdlib module links the same SQLite as the store)
and their terms are read back through `fts5vocab` in document order. Each batch runs in
one transaction that is rolled back, so the private tables stay empty. What is inserted
is each whitespace-separated chunk not seen lately (see `_Tokenizer`).

Words of ASCII text alone are split in Python, by SQLite's own answer for each of the 128
ASCII characters (read once from the same tokenizer): unicode61 folds and separates them
one character at a time, so a table of them gives its words exactly, at a fraction of a
round trip. Index terms go to SQLite always: Porter stemming is not ported either.

Bad input: a text holding a lone surrogate cannot be encoded for SQLite, so it cannot be
stored or indexed either; `index_terms` and the word functions refuse it with
`InvalidInput`. A NUL is passed through, as the store passes it (FTS5 separates words at
it). Queries are typed by users (argv decodes undecodable bytes to lone surrogates) and
FTS5 reads a MATCH expression only up to a NUL, so `query_phrases` first applies `scrub`,
which replaces both with U+FFFD, a separator to unicode61 as they are.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from devstream.errors import InvalidInput

__all__ = [
    "FTS_TOKENIZER",
    "MAX_TERMS",
    "Phrase",
    "index_terms",
    "query_phrases",
    "scrub",
    "word_lists",
    "words",
]

# Must equal the tokenize= of memory_fts (migration 0001); a unit test holds them together.
FTS_TOKENIZER = "porter unicode61 remove_diacritics 2"
# The same folding without stemming: words as written, minus case and diacritics.
_WORD_TOKENIZER = FTS_TOKENIZER.removeprefix("porter ")
MAX_TERMS = 64
# FTS5 cuts a token at this many bytes: ASCII text no longer than this has none it cuts.
MAX_TOKEN_BYTES = 32768
# Chunks whose terms each tokenizer keeps, the least recently used dropped first.
KNOWN_CHUNKS = 1 << 16
# Texts of more chunks than this are tokenized whole, their chunks neither looked up nor kept.
CHUNKED_UP_TO = 16

_TERMS = "index_terms"
_WORDS = "folded_words"
_UNSAFE = re.compile("[\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Phrase:
    """One whitespace-separated chunk of a query and the index terms FTS5 finds in it."""

    text: str
    terms: tuple[str, ...]


class _Tokenizer:
    """A lazily opened in-memory database holding one FTS5 table per tokenizer, and the
    terms of the chunks it has tokenized.

    Whitespace separates words for every tokenizer here, so a text's terms are its
    whitespace-separated chunks' terms in order: a chunk of a short text (a query, a
    keyword) seen before is not tokenized again. Words recur, and asking SQLite costs tens of
    microseconds a call where a look-up costs tenths of one.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the connection, lock and chunks (in a forked child, where the connection
        and lock are not usable)."""
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._known: dict[str, OrderedDict[str, tuple[str, ...]]] = {}
        self._last: dict[str, tuple[str, tuple[str, ...]]] = {}  # the last lone long text
        self._ascii: dict[int, str] | None = None  # see `_ascii_words`

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            for table, tokenizer in ((_TERMS, FTS_TOKENIZER), (_WORDS, _WORD_TOKENIZER)):
                connection.execute(
                    f"CREATE VIRTUAL TABLE {table} USING fts5(text, tokenize='{tokenizer}')"
                )
                connection.execute(
                    f"CREATE VIRTUAL TABLE {table}_vocab USING fts5vocab({table}, 'instance')"
                )
            self._connection = connection
        return self._connection

    def tokens(self, table: str, texts: Sequence[str]) -> list[list[str]]:
        """The terms `table`'s tokenizer stores for each text, in order."""
        if isinstance(texts, str):
            raise TypeError("pass a sequence of texts, not a single string")
        for text in texts:
            if found := _SURROGATE.search(text):
                raise _unencodable(text, found.start())
        chunked = [text.split() for text in texts]
        # A long text (content, mostly words seen before but in a new order) is tokenized
        # whole: SQLite's one pass costs less than looking its chunks up one by one.
        whole = [i for i, chunks in enumerate(chunked) if len(chunks) > CHUNKED_UP_TO]
        looked_up = [[] if len(chunks) > CHUNKED_UP_TO else chunks for chunks in chunked]
        with self._lock:
            known = self._known.setdefault(table, OrderedDict())
            missing = list(
                dict.fromkeys(c for chunks in looked_up for c in chunks if c not in known)
            )
            long_texts = [texts[i] for i in whole]
            # A store asks for a content's words twice (its keywords, then its vector).
            last = self._last.get(table)
            again = last is not None and long_texts == [last[0]]
            answers = self._asked(table, missing + ([] if again else long_texts))
            known.update(zip(missing, answers, strict=False))
            out = [_joined(known, chunks) for chunks in looked_up]
            while len(known) > KNOWN_CHUNKS:
                known.popitem(last=False)
            long_terms = [last[1]] if again and last else answers[len(missing) :]
            if len(long_texts) == 1:
                self._last[table] = (long_texts[0], long_terms[0])
        for i, terms in zip(whole, long_terms, strict=True):
            out[i] = list(terms)
        return out

    def _asked(self, table: str, chunks: Sequence[str]) -> list[tuple[str, ...]]:
        """Each chunk's terms: words of ASCII from `_ascii_words`, the rest from SQLite."""
        out: list[tuple[str, ...] | None] = [None] * len(chunks)
        if table == _WORDS and chunks:
            folds = self._ascii_words()
            for i, chunk in enumerate(chunks):
                if chunk.isascii() and len(chunk) <= MAX_TOKEN_BYTES:
                    out[i] = tuple(chunk.translate(folds).split())
        asked = [i for i, terms in enumerate(out) if terms is None]
        answers = iter(self._from_sqlite(table, [chunks[i] for i in asked]))
        return [next(answers) if terms is None else terms for terms in out]

    def _ascii_words(self) -> dict[int, str]:
        """What unicode61 makes of each ASCII character, as `str.translate` takes it: its
        folded self if it is part of a word, else a space."""
        if self._ascii is None:
            characters = [chr(code) for code in range(128)]
            answers = self._from_sqlite(_WORDS, characters)
            self._ascii = {
                ord(character): "".join(terms) or " "
                for character, terms in zip(characters, answers, strict=True)
            }
        return self._ascii

    def _from_sqlite(self, table: str, chunks: Sequence[str]) -> list[tuple[str, ...]]:
        """Each chunk's terms, from SQLite."""
        if not chunks:
            return []
        out: list[list[str]] = [[] for _ in chunks]
        connection = self._connect()
        connection.execute("BEGIN")
        try:
            connection.executemany(
                f"INSERT INTO {table}(rowid, text) VALUES (?, ?)", enumerate(chunks)
            )
            rows = connection.execute(
                f"SELECT doc, term FROM {table}_vocab ORDER BY doc, col, offset"
            ).fetchall()
        finally:
            connection.execute("ROLLBACK")
        for doc, term in rows:
            out[doc].append(term)
        return [tuple(terms) for terms in out]


def _joined(known: OrderedDict[str, tuple[str, ...]], chunks: list[str]) -> list[str]:
    """The terms of these known chunks in order, each chunk marked as used just now."""
    terms: list[str] = []
    for chunk in chunks:
        known.move_to_end(chunk)
        terms += known[chunk]
    return terms


def _unencodable(text: str, offset: int) -> InvalidInput:
    return InvalidInput(
        f"text holds a lone surrogate U+{ord(text[offset]):04X} at offset {offset}: "
        "it is not valid Unicode, so it cannot be stored or indexed",
        hint="decode bytes with errors='replace' before passing them",
    )


_tokenizer = _Tokenizer()
if hasattr(os, "register_at_fork"):  # not on Windows, which never forks
    # A child must not reuse the parent's SQLite connection or a lock held at fork time.
    os.register_at_fork(after_in_child=_tokenizer.reset)


def index_terms(texts: Sequence[str]) -> list[list[str]]:
    """For each text, the terms FTS5 indexes for it in order, as memory_fts stores a column."""
    return _tokenizer.tokens(_TERMS, texts)


def word_lists(texts: Sequence[str]) -> list[list[str]]:
    """For each text, its words in order: lowercased and diacritic-folded, not stemmed."""
    return _tokenizer.tokens(_WORDS, texts)


def words(text: str) -> list[str]:
    """The words of one text in order: lowercased and diacritic-folded, not stemmed."""
    return word_lists([text])[0]


def scrub(text: str) -> str:
    """`text` with every NUL and lone surrogate replaced by U+FFFD; the words stay the same."""
    return _UNSAFE.sub("\ufffd", text)


def query_phrases(query: str) -> list[Phrase]:
    """The phrases of a user query: one per whitespace-separated chunk holding a term.

    A chunk of several terms (`snake_case`, `foo.bar`, `2026-11-25`) is one phrase, as FTS5
    reads a quoted string. Chunks with the same terms as an earlier one are dropped; at
    most MAX_TERMS phrases are kept. The query is scrubbed first (see `scrub`).
    """
    chunks = scrub(query).split()
    phrases: dict[tuple[str, ...], Phrase] = {}
    for chunk, terms in zip(chunks, index_terms(chunks), strict=True):
        if terms:
            phrases.setdefault(tuple(terms), Phrase(chunk, tuple(terms)))
    return list(phrases.values())[:MAX_TERMS]
