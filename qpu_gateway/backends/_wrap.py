"""A sampler that wraps another one (dimod's composite pattern): the child's parameters and
properties, the wrapper's own ``sample``."""

from __future__ import annotations

from typing import Any

import dimod

__all__ = ["WrappedSampler"]


class WrappedSampler(dimod.Sampler):
    """Reports ``child``'s parameters and properties; subclasses define ``sample``."""

    def __init__(self, child: dimod.Sampler) -> None:
        self.child = child

    @property
    def parameters(self) -> dict[str, Any]:
        return self.child.parameters

    @property
    def properties(self) -> dict[str, Any]:
        return self.child.properties
