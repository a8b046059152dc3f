"""User text to an FTS5 query: every chunk of the query becomes a quoted phrase, never syntax."""

from __future__ import annotations

from devstream.db.tokenizer import query_phrases


def match_expression(query: str) -> str | None:
    """An OR of the query's phrases, quoted, or None when the text holds no searchable term.

    Each phrase is its chunk as typed with `"` doubled, so quotes, `NEAR(`, `*`, `-`, `OR`
    and column filters are all plain terms.
    """
    quoted = ['"' + phrase.text.replace('"', '""') + '"' for phrase in query_phrases(query)]
    return " OR ".join(quoted) if quoted else None
