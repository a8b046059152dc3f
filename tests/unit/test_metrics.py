"""Counters, latency percentiles and gauges."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstream import metrics
from devstream.metrics import LatencyDistribution, MetricsRegistry


def test_percentiles_use_nearest_rank() -> None:
    dist = LatencyDistribution()
    for ms in range(1, 101):
        dist.observe(ms / 1000)
    summary = dist.summary()
    assert (summary.count, summary.p50_ms, summary.p95_ms, summary.p99_ms, summary.max_ms) == (
        100,
        50,
        95,
        99,
        100,
    )
    assert summary.mean_ms == pytest.approx(50.5)


def test_window_bounds_memory_but_counts_stay_exact() -> None:
    dist = LatencyDistribution(window=10)
    for ms in range(100):
        dist.observe(ms / 1000)
    assert dist.count == 100
    assert dist.percentile(0) == pytest.approx(0.090)


def test_empty_distribution_reports_zeros() -> None:
    summary = LatencyDistribution().summary()
    assert (summary.count, summary.p99_ms, summary.mean_ms, summary.max_ms) == (0, 0, 0, 0)


def test_timed_records_failures_apart() -> None:
    registry = MetricsRegistry()
    with registry.timed("op"):
        pass
    with pytest.raises(KeyError), registry.timed("op"):
        raise KeyError("x")
    snapshot = registry.snapshot()
    assert snapshot["counters"] == {"op.errors": 1}
    assert snapshot["latencies"]["op"]["count"] == 2  # type: ignore[index]


def test_gauges_are_read_at_snapshot_time() -> None:
    registry = MetricsRegistry()
    level = {"value": 1.0}
    registry.register_gauge("level", lambda: dict(level))
    level["value"] = 2.0
    assert registry.snapshot()["gauges"] == {"level": {"value": 2.0}}


def test_resource_usage_reports_memory_only_where_the_system_does(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    here = metrics.resource_usage()
    assert here["rss_mib"] > 1  # this is Linux: /proc tells
    assert here["cpu_user_s"] > 0
    assert here["threads"] >= 1
    monkeypatch.setattr(metrics, "STATM", tmp_path / "no-proc")
    elsewhere = metrics.resource_usage()
    assert "rss_mib" not in elsewhere
    assert elsewhere["cpu_user_s"] >= here["cpu_user_s"]
