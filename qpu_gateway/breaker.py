"""A per-backend circuit breaker: skip a backend for a cool-down after M consecutive failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    """Closed -> open after ``failure_threshold`` consecutive failures; half-open after
    ``cooldown_seconds`` (one trial call is let through); a success closes it again.

    Parameters
    ----------
    failure_threshold : consecutive failures that open the breaker (M >= 1).
    cooldown_seconds : how long an open breaker refuses calls.
    clock : monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self,
        failure_threshold: int = 3,
        cooldown_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(failure_threshold, int) or failure_threshold < 1:
            raise ValueError(f"failure_threshold must be an integer >= 1, got {failure_threshold!r}")
        if not cooldown_seconds >= 0:
            raise ValueError(f"cooldown_seconds must be >= 0, got {cooldown_seconds!r}")
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = float(cooldown_seconds)
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        """True while the breaker refuses calls (failing and still cooling down)."""
        with self._lock:
            return self._opened_at is not None and (
                self._clock() - self._opened_at < self.cooldown_seconds
            )

    def allow(self) -> bool:
        """Whether a call may go through now (closed, or half-open after the cool-down)."""
        return not self.is_open

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
