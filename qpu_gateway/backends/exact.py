"""``exact``: dimod's brute-force solver, for tiny problems (tests, ground-state checks)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dimod

from qpu_gateway.errors import ProblemTooLargeError

__all__ = ["MAX_VARIABLES", "create"]

MAX_VARIABLES = 20


def create(settings: Mapping[str, Any]) -> dimod.Sampler:
    """An ``ExactSolver`` refusing problems above ``max_variables`` (default 20: 2^20 states)."""
    limit = int(settings.get("max_variables", MAX_VARIABLES))
    if limit < 1 or limit > 26:
        raise ValueError(f"exact.max_variables must be in [1, 26], got {limit}")
    return _BoundedExactSolver(limit)


class _BoundedExactSolver(dimod.ExactSolver):
    def __init__(self, max_variables: int) -> None:
        super().__init__()
        self.max_variables = max_variables

    def sample(self, bqm: dimod.BinaryQuadraticModel, **kwargs: Any) -> dimod.SampleSet:
        if bqm.num_variables > self.max_variables:
            raise ProblemTooLargeError(
                f"the exact backend enumerates 2^n states and accepts at most "
                f"{self.max_variables} variables; this problem has {bqm.num_variables}"
            )
        return super().sample(bqm, **kwargs)
