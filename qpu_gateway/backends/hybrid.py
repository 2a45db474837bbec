"""``hybrid``: D-Wave's Leap hybrid solver (``dwave.system.LeapHybridSampler``).

Settings: the cloud keys of ``qpu`` and ``time_limit`` (seconds; default: the solver's minimum).
Connects on the first Fit; cloud errors become fallbacks; the token never appears in messages.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import dimod

from qpu_gateway.backends._embedded import cloud_failures, embedded_settings
from qpu_gateway.backends.qpu import CLOUD_KEYS, register_cloud_token
from qpu_gateway.errors import BackendFailure, DeadlineExceededError
from qpu_gateway.redact import add_secret, scrub

__all__ = ["create"]


class HybridSampler(dimod.Sampler):
    """Lazily connected ``LeapHybridSampler`` with a deadline and safe error messages."""

    def __init__(self, factory: Callable[[], dimod.Sampler], time_limit: float | None,
                 secrets: list[str]) -> None:
        if time_limit is not None and not time_limit > 0:
            raise ValueError(f"time_limit must be > 0 seconds, got {time_limit!r}")
        self._factory = factory
        self._child: dimod.Sampler | None = None
        self._lock = threading.Lock()
        self.time_limit = time_limit
        for secret in secrets:
            add_secret(secret)

    @property
    def parameters(self) -> dict[str, list[Any]]:
        return {"timeout": []}

    @property
    def properties(self) -> dict[str, Any]:
        return {}

    def sample(self, bqm: dimod.BinaryQuadraticModel, *, timeout: float | None = None,
               **kwargs: Any) -> dimod.SampleSet:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if self._child is None:
                try:
                    self._child = self._factory()
                except Exception as exc:  # no token, unknown solver or region, unreachable
                    raise BackendFailure(
                        scrub(f"hybrid: cannot reach the solver: {type(exc).__name__}: {exc}")
                    ) from None
        try:
            params = {} if self.time_limit is None else {"time_limit": self.time_limit}
            sampleset = self._child.sample(bqm, **params)
            while not sampleset.done():
                if deadline is not None and time.monotonic() > deadline:
                    raise DeadlineExceededError("the hybrid solver did not answer within the deadline")
                time.sleep(0.05)
            sampleset.resolve()
        except cloud_failures() as exc:
            raise BackendFailure(scrub(f"hybrid: {type(exc).__name__}: {exc}")) from None
        sampleset.info["qhpo_stats"] = {
            "qpu_access_time_us": float(sampleset.info.get("qpu_access_time", 0.0)),
        }
        return sampleset


def create(settings: Mapping[str, Any]) -> dimod.Sampler:
    s = embedded_settings(settings, CLOUD_KEYS | {"time_limit"})
    cloud = {k: v for k, v in s.items() if k in CLOUD_KEYS}

    def connect() -> dimod.Sampler:
        from dwave.system import LeapHybridSampler

        register_cloud_token(cloud)
        return LeapHybridSampler(**cloud)

    return HybridSampler(
        connect,
        s.get("time_limit"),
        [str(cloud.get("token", "")), os.environ.get("DWAVE_API_TOKEN", "")],
    )
