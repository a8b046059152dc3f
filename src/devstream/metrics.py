"""In-process metrics: counters, latency distributions and gauges read on demand."""

from __future__ import annotations

import math
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STATM = Path("/proc/self/statm")  # Linux: the process's memory, in pages
# Enough recent samples for a stable p99 without growing with the process's lifetime.
SAMPLE_WINDOW = 10_000


@dataclass(frozen=True)
class LatencySummary:
    count: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


class LatencyDistribution:
    """Durations of one operation: exact count and total, percentiles over a recent window."""

    def __init__(self, window: int = SAMPLE_WINDOW) -> None:
        self._samples: deque[float] = deque(maxlen=window)
        self.count = 0
        self.total_s = 0.0

    def observe(self, seconds: float) -> None:
        self._samples.append(seconds)
        self.count += 1
        self.total_s += seconds

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile in seconds (q in 0..100) of the recent window."""
        if not self._samples:
            return 0.0
        ordered = sorted(self._samples)
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return ordered[rank - 1]

    def summary(self) -> LatencySummary:
        ordered = sorted(self._samples)
        return LatencySummary(
            count=self.count,
            mean_ms=1000 * self.total_s / self.count if self.count else 0.0,
            p50_ms=1000 * self.percentile(50),
            p95_ms=1000 * self.percentile(95),
            p99_ms=1000 * self.percentile(99),
            max_ms=1000 * ordered[-1] if ordered else 0.0,
        )


Gauge = Callable[[], Mapping[str, float]]


class MetricsRegistry:
    """One per DevStream instance; services record into it, `stats` and benchmarks read it."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.latencies: dict[str, LatencyDistribution] = {}
        self._gauges: dict[str, Gauge] = {}

    def increment(self, name: str, by: int = 1) -> None:
        self.counters[name] += by

    def observe(self, name: str, seconds: float) -> None:
        self.latencies.setdefault(name, LatencyDistribution()).observe(seconds)

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Record the block's wall time under `name`, and count its failures apart."""
        started = time.perf_counter()
        try:
            yield
        except BaseException:
            self.increment(f"{name}.errors")
            raise
        finally:
            self.observe(name, time.perf_counter() - started)

    def register_gauge(self, name: str, read: Gauge) -> None:
        self._gauges[name] = read

    def snapshot(self) -> dict[str, object]:
        """A JSON-ready view of everything recorded so far."""
        return {
            "counters": dict(sorted(self.counters.items())),
            "latencies": {
                name: vars(dist.summary()) for name, dist in sorted(self.latencies.items())
            },
            "gauges": {name: dict(read()) for name, read in sorted(self._gauges.items())},
        }


def resource_usage() -> dict[str, float]:
    """This process's CPU time, threads (each pooled connection runs one) and, where the
    system reports it (Linux), its resident memory; sampled when read."""
    cpu = os.times()
    usage = {
        "cpu_user_s": cpu.user,
        "cpu_system_s": cpu.system,
        "threads": float(threading.active_count()),
    }
    rss = _resident_bytes()
    if rss is not None:
        usage["rss_mib"] = rss / 2**20
    return usage


def _resident_bytes() -> int | None:
    try:
        pages = int(STATM.read_text().split()[1])
    except OSError:
        return None  # no /proc here
    return pages * os.sysconf("SC_PAGE_SIZE")
