"""``neal``: simulated annealing from dwave-samplers (the successor of dwave-neal), on the CPU.

Any uint64 ``seed`` is accepted: dwave-samplers takes seeds below 2^31, so larger ones are mapped
with :func:`qpu_gateway.seeds.bounded_seed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dimod
from dwave.samplers import SimulatedAnnealingSampler

from qpu_gateway.backends._wrap import WrappedSampler
from qpu_gateway.seeds import bounded_seed

__all__ = ["create"]


def create(settings: Mapping[str, Any]) -> dimod.Sampler:
    """A ``SimulatedAnnealingSampler``; ``settings`` (e.g. ``beta_range``) become its defaults."""
    child = SimulatedAnnealingSampler()
    unknown = set(settings) - set(child.parameters)
    if unknown:
        raise ValueError(f"unknown neal settings: {sorted(unknown)}; known: {sorted(child.parameters)}")
    return _NealSampler(child, dict(settings))


class _NealSampler(WrappedSampler):
    """Wraps the annealer: configured keyword defaults on every call, any uint64 seed."""

    def __init__(self, child: dimod.Sampler, defaults: dict[str, Any]) -> None:
        super().__init__(child)
        self.defaults = defaults

    def sample(self, bqm: dimod.BinaryQuadraticModel, **kwargs: Any) -> dimod.SampleSet:
        params = {**self.defaults, **kwargs}
        if params.get("seed") is not None:
            params["seed"] = bounded_seed(params["seed"])
        return self.child.sample(bqm, **params)
