"""Keyword extraction without a model: frequent content words, in order of weight."""

from __future__ import annotations

import re
from collections import Counter

WORD = re.compile(r"[^\W\d_][\w'-]*", re.UNICODE)
MIN_LENGTH = 3

# Function words that carry no topic; kept short on purpose (English, as most notes are).
_STOPWORD_TEXT = """
    about above after again against all also and any are because been before being below
    between both but can could did does doing down during each few for from further had has
    have having her here hers herself him himself his how into its itself just more most
    must not now off once only other our ours out over own same she should some such than
    that the their theirs them then there these they this those through too under until
    very was were what when where which while who whom why will with would you your yours
    yourself onto upon via per
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def extract_keywords(text: str, limit: int = 12) -> list[str]:
    """The `limit` most frequent content words (lowercase), ties by first appearance."""
    words = [word.lower().strip("'-") for word in WORD.findall(text)]
    counts = Counter(word for word in words if len(word) >= MIN_LENGTH and word not in STOPWORDS)
    return [word for word, _ in counts.most_common(limit)]
