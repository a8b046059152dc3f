"""A circuit breaker: a dependency that is down costs one fast failure per call, probed once
per cool-down, instead of a full retry cycle each time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from devstream.errors import EmbeddingUnavailable

BreakerState = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    """Fails fast while a dependency is down, probing it once per cool-down.

    Closed: calls pass and consecutive failures are counted. After `failure_threshold` of
    them it opens: `before_call()` raises `EmbeddingUnavailable` at once until `cooldown_s`
    has passed. Then it lets exactly one probe through (half-open; other callers still fail
    fast while it runs). The probe's `record_success()` closes the breaker; its
    `record_failure()` opens it again for a fresh cool-down. Every call that passed
    `before_call()` must end in `record_success()`, `record_failure()` or `abandon_call()`.
    """

    def __init__(
        self,
        failure_threshold: int = 3,
        cooldown_s: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        if cooldown_s < 0:
            raise ValueError(f"cooldown_s must not be negative, got {cooldown_s}")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.clock = clock  # injectable: tests move time instead of waiting for it
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        """One of "closed", "open" or "half-open" (a probe is running or may start now)."""
        if self._opened_at is None:
            return "closed"
        if self._probing or self._cooled_down():
            return "half-open"
        return "open"

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def _cooled_down(self) -> bool:
        return self._opened_at is not None and self.clock() - self._opened_at >= self.cooldown_s

    def before_call(self) -> None:
        """Let a call through, or raise `EmbeddingUnavailable` if the breaker is open."""
        if self._opened_at is None:
            return
        if not self._probing and self._cooled_down():
            self._probing = True
            return
        if self._probing:
            raise EmbeddingUnavailable("circuit breaker is half-open and a probe call is running")
        remaining = self.cooldown_s - (self.clock() - self._opened_at)
        raise EmbeddingUnavailable(
            f"circuit breaker is open after {self._failures} consecutive failures; "
            f"next probe in {remaining:.1f}s"
        )

    def record_success(self) -> None:
        """The call succeeded: close the breaker and forget earlier failures."""
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        """The call failed: count it, and open (or re-open) the breaker when due."""
        self._failures += 1
        if self._probing or self._opened_at is not None or self._failures >= self.failure_threshold:
            self._opened_at = self.clock()
        self._probing = False

    def abandon_call(self) -> None:
        """The call ended without a verdict (cancelled): free the probe slot, count nothing."""
        self._probing = False
