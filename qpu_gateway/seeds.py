"""Seeds: any uint64 a client sends, mapped deterministically into what a sampler accepts.

dwave-samplers' simulated annealing (``neal`` and ``mock-qpu``'s substitute) takes seeds in
``[0, 2^31)``. Seeds below the bound pass unchanged; larger ones are mapped through
``numpy.random.SeedSequence`` (a hash, so nearby seeds stay unrelated). The same seed always
gives the same sampler seed, so the same model.
"""

from __future__ import annotations

from typing import Final

import numpy as np

__all__ = ["SA_SEED_BOUND", "bounded_seed"]

SA_SEED_BOUND: Final = 2**31


def bounded_seed(seed: int | None, bound: int = SA_SEED_BOUND) -> int | None:
    """``seed`` (any integer in ``[0, 2^64)``) as a seed in ``[0, bound)``; ``None`` stays ``None``."""
    if seed is None:
        return None
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    if not 1 < bound <= 2**64:
        raise ValueError(f"bound must be in (1, 2**64], got {bound}")
    if seed < bound:
        return seed
    return int(np.random.SeedSequence(seed).generate_state(1, np.uint64)[0]) % bound
