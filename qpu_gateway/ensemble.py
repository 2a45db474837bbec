"""Ensembles of annealer solutions (design brief §2: "Ensembling").

An annealer returns many bit vectors. The ``top_k`` distinct lowest-energy ones become ensemble
members; each member is one SVR. Members are combined with weights, and their spread is the
prediction's uncertainty (Wulff et al., Quantum Machine Intelligence 6, 59 (2024)).
"""

from __future__ import annotations

from typing import Final

import dimod
import numpy as np
from numpy.typing import NDArray

__all__ = ["ENSEMBLE_METHODS", "member_weights", "select_members"]

ENSEMBLE_METHODS: Final = ("mean", "best", "energy_softmax", "inverse_error")


def select_members(
    sampleset: dimod.SampleSet, top_k: int, variables: list[int] | range
) -> tuple[NDArray[np.int8], NDArray[np.float64], int]:
    """Keep the ``top_k`` distinct lowest-energy samples.

    Returns ``(samples, energies, n_distinct)``: samples (M, n) in the order of ``variables``,
    energies (M,) ascending, with ``M = min(top_k, n_distinct)``. Ties keep the sampler's order.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if len(sampleset) == 0:
        raise ValueError("the sampler returned no samples")
    index = sampleset.variables.index
    cols = [index(v) for v in variables]
    arr = np.asarray(sampleset.record.sample)[:, cols].astype(np.int8, copy=False)
    energies = np.asarray(sampleset.record.energy, dtype=np.float64)
    uniq, first = np.unique(arr, axis=0, return_index=True)
    order = np.lexsort((first, energies[first]))
    keep = order[:top_k]
    return uniq[keep], energies[first][keep], len(uniq)


def member_weights(
    method: str, energies: NDArray[np.float64], train_mse: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Combination weights of M members, shape (M,), summing to 1.

    - ``mean``: uniform.
    - ``best``: all weight on the lowest-energy member (members arrive sorted by energy).
    - ``energy_softmax``: ``w ∝ exp(-(E - E_min) / T)`` with ``T`` the members' mean energy gap
      ``mean(E - E_min)``, which makes the weights independent of the QUBO's scale.
    - ``inverse_error``: ``w ∝ 1 / MSE`` of each member on the (scaled) training data.
    """
    e = np.asarray(energies, dtype=np.float64)
    m = e.shape[0]
    if m == 0:
        raise ValueError("an ensemble needs at least one member")
    if method == "mean":
        return np.full(m, 1.0 / m)
    if method == "best":
        w = np.zeros(m)
        w[int(np.argmin(e))] = 1.0
        return w
    if method == "energy_softmax":
        gap = e - e.min()
        temperature = gap.mean()
        if temperature <= 0.0:
            return np.full(m, 1.0 / m)
        w = np.exp(-gap / temperature)
        return w / w.sum()
    if method == "inverse_error":
        inv = 1.0 / np.maximum(np.asarray(train_mse, dtype=np.float64), 1e-12)
        return inv / inv.sum()
    raise ValueError(f"ensemble must be one of {', '.join(ENSEMBLE_METHODS)}; got {method!r}")
