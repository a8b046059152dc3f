"""User text to an FTS5 query: every word becomes a quoted term, never syntax."""

from __future__ import annotations

import re

# Words as FTS5's unicode61 tokenizer sees them: letters and digits.
TERM = re.compile(r"\w+", re.UNICODE)
MAX_TERMS = 64


def query_words(query: str) -> list[str]:
    """The distinct words of a query, lowercased, at most MAX_TERMS of them."""
    return list(dict.fromkeys(term.lower() for term in TERM.findall(query)))[:MAX_TERMS]


def match_expression(query: str) -> str | None:
    """An OR of quoted terms, or None when the text holds no searchable word.

    Quotes, `NEAR(`, `*`, `-`, `OR`, column filters: all of them end up as plain terms.
    """
    words = query_words(query)
    return " OR ".join(f'"{word}"' for word in words) if words else None
