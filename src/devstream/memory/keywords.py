"""Keyword extraction without a model: frequent content words, in order of weight."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from devstream.db.tokenizer import word_lists

MIN_LENGTH = 3

# Function words that carry no topic; kept short on purpose (English, as most notes are).
# The tokenizer splits "don't" into "don" and "t", so negated auxiliaries appear as stems.
_STOPWORD_TEXT = """
    about above after again against all also and any are because been before being below
    between both but can could did does doing down during each few for from further had has
    have having her here hers herself him himself his how into its itself just more most
    must not now off once only other our ours out over own same she should some such than
    that the their theirs them then there these they this those through too under until
    very was were what when where which while who whom why will with would you your yours
    yourself onto upon via per
    aren couldn didn doesn don hadn hasn haven isn shouldn wasn weren won wouldn
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def _is_keyword(word: str) -> bool:
    # Bare numbers (versions, counts, dates split at '-') name no topic.
    return len(word) >= MIN_LENGTH and not word.isdigit() and word not in STOPWORDS


def extract_keywords(texts: Sequence[str], limit: int = 12) -> list[list[str]]:
    """For each text, its `limit` most frequent content words, folded as FTS5 folds them
    (ties by first appearance); one tokenizer call for the whole batch."""
    return [
        [word for word, _ in Counter(w for w in found if _is_keyword(w)).most_common(limit)]
        for found in word_lists(texts)
    ]
