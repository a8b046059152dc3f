"""The calibration workload: a fixed amount of work that touches no DevStream code.

ci/benchcheck.py divides the times of a run by its calibration figure (conftest.py times
ROUNDS_PER_BENCHMARK rounds of this work before each benchmark), so that a faster or slower
machine cancels out when two runs are compared. The work mixes interpreted Python (integer
arithmetic, a dict, string formatting) with numpy array work (sort, partition, reductions),
as DevStream's own paths do; integers only, so the checksum is the same everywhere. Changing
the work invalidates the committed baseline: refresh it.
"""

from __future__ import annotations

import numpy as np

ROUNDS_PER_BENCHMARK = 3
CHECKSUM = 249617655


def workload() -> int:
    """Do the fixed work once; returns a checksum of it, the same on every machine."""
    counts: dict[str, int] = {}
    state = 12345
    for _ in range(40_000):
        state = (state * 1103515245 + 12345) % 2**31
        word = format(state % 4093, "x")
        counts[word] = counts.get(word, 0) + 1
    python_part = sum(len(word) * count for word, count in counts.items())
    values = (np.arange(400_000, dtype=np.int64) * 2654435761) % 1_000_003
    top = np.argpartition(values, -50)[-50:]
    numpy_part = np.sort(values)[::1000].sum() + np.bincount(values % 1024).max()
    return python_part + int(numpy_part) + int(values[top].sum())
