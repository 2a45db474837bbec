"""``neal``: simulated annealing from dwave-samplers (the successor of dwave-neal), on the CPU."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dimod
from dwave.samplers import SimulatedAnnealingSampler

__all__ = ["create"]


def create(settings: Mapping[str, Any]) -> dimod.Sampler:
    """A ``SimulatedAnnealingSampler``; ``settings`` (e.g. ``beta_range``) become its defaults."""
    sampler: dimod.Sampler = SimulatedAnnealingSampler()
    unknown = set(settings) - set(sampler.parameters)
    if unknown:
        raise ValueError(f"unknown neal settings: {sorted(unknown)}; known: {sorted(sampler.parameters)}")
    if settings:
        sampler = _WithDefaults(sampler, dict(settings))
    return sampler


class _WithDefaults(dimod.Sampler):
    """Wraps a sampler, adding configured keyword defaults to every call."""

    def __init__(self, child: dimod.Sampler, defaults: dict[str, Any]) -> None:
        self.child = child
        self.defaults = defaults

    @property
    def parameters(self) -> dict[str, Any]:
        return self.child.parameters

    @property
    def properties(self) -> dict[str, Any]:
        return self.child.properties

    def sample(self, bqm: dimod.BinaryQuadraticModel, **kwargs: Any) -> dimod.SampleSet:
        return self.child.sample(bqm, **{**self.defaults, **kwargs})
