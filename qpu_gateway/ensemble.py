"""Ensembles of annealer solutions (design brief §2: "Ensembling").

An annealer returns many bit vectors. The ``top_k`` distinct lowest-energy ones become ensemble
members; each member is one SVR. Members are combined with weights, and their spread is the
prediction's uncertainty (Wulff et al., Quantum Machine Intelligence 6, 59 (2024)).

The default combination, ``robust``, first rejects members that cannot be trusted (see
:func:`robust_keep`) and averages the rest, down-weighting those read from broken chains, so that
one bad member cannot wreck the prediction.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import dimod
import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "ENSEMBLE_METHODS",
    "MSE_TIE_RTOL",
    "ROBUST_MSE_RATIO",
    "Members",
    "member_weights",
    "robust_keep",
    "select_members",
]

ENSEMBLE_METHODS: Final = ("robust", "mean", "best", "energy_softmax", "inverse_error")
MSE_TIE_RTOL: Final = 1e-9
"""Relative tolerance under which two training errors count as equal in :func:`robust_keep`."""
ROBUST_MSE_RATIO: Final = 2.0
"""A member stays in the ``robust`` ensemble when its training MSE is at most this multiple of
the best member's (:func:`robust_keep`)."""


class Members(NamedTuple):
    """The distinct lowest-energy samples of a sampleset (:func:`select_members`)."""

    samples: NDArray[np.int8]
    """(M, n) bit vectors in the order of the requested variables."""
    energies: NDArray[np.float64]
    """(M,) energies, ascending."""
    n_distinct: int
    """Distinct samples in the whole sampleset."""
    chain_break: NDArray[np.float64]
    """(M,) fewest broken chains among the reads that gave each sample (0 without an embedding)."""


def select_members(
    sampleset: dimod.SampleSet, top_k: int, variables: list[int] | range
) -> Members:
    """Keep the ``top_k`` distinct lowest-energy samples.

    ``M = min(top_k, n_distinct)``; ties keep the sampler's order. The chain-break fraction of a
    member is the smallest one among the reads that returned its bit vector: a sample read once
    with intact chains is a genuine solution of the problem, whatever other reads did.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if len(sampleset) == 0:
        raise ValueError("the sampler returned no samples")
    index = sampleset.variables.index
    cols = [index(v) for v in variables]
    arr = np.asarray(sampleset.record.sample)[:, cols].astype(np.int8, copy=False)
    energies = np.asarray(sampleset.record.energy, dtype=np.float64)
    uniq, first, inverse = np.unique(arr, axis=0, return_index=True, return_inverse=True)
    order = np.lexsort((first, energies[first]))
    keep = order[:top_k]
    breaks = np.zeros(len(uniq))
    if "chain_break_fraction" in (sampleset.record.dtype.names or ()):
        cbf = np.asarray(sampleset.record.chain_break_fraction, dtype=np.float64)
        breaks = np.full(len(uniq), np.inf)
        np.minimum.at(breaks, np.asarray(inverse).reshape(-1), cbf)
    return Members(uniq[keep], energies[first][keep], len(uniq), breaks[keep])


def robust_keep(train_mse: ArrayLike) -> NDArray[np.bool_]:
    """Which of M members to trust, shape (M,) bool; never all False.

    A member stays when its mean squared error on the training targets is at most
    :data:`ROBUST_MSE_RATIO` times the smallest one (ties within :data:`MSE_TIE_RTOL` count as
    equal): a member with a poor fit to its own training data is the kind that extrapolates badly
    (measured in benchmarks/README.md, issue 14). Judged against the best member rather than the
    median (the rule before 2026-12-02), so that it keeps every good member when most are good
    (simulated annealing) and only the few good ones when most are bad (a noisy QPU path): an
    Occam's window on the members (Madigan & Raftery, JASA 89, 1535 (1994)). The rule depends on
    the values only, not on the members' order, and keeps every member when all agree.
    """
    mse = _vector("train_mse", train_mse)
    bound = ROBUST_MSE_RATIO * float(mse.min())
    return mse <= bound + MSE_TIE_RTOL * abs(bound)


def member_weights(
    method: str,
    energies: ArrayLike,
    train_mse: ArrayLike,
    chain_break: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Combination weights of M members, shape (M,), summing to 1.

    - ``robust`` (default): the members :func:`robust_keep` trusts, each weighted by the
      fraction of its chains left intact, ``w ∝ 1 - chain_break`` (uniform off the QPU path);
      0 for the rest. A member decoded from only broken chains gets 0 unless every trusted one is.
    - ``mean``: uniform.
    - ``best``: all weight on the lowest-energy member (members arrive sorted by energy).
    - ``energy_softmax``: ``w ∝ exp(-(E - E_min) / T)`` with ``T`` the members' mean energy gap
      ``mean(E - E_min)``, which makes the weights independent of the QUBO's scale.
    - ``inverse_error``: ``w ∝ 1 / MSE`` of each member on the (scaled) training data.

    ``chain_break`` (M,), the members' chain-break fractions, is used by ``robust`` only.
    """
    e = _vector("energies", energies)
    m = e.shape[0]
    if method == "robust":
        keep = robust_keep(_vector("train_mse", train_mse, size=m))
        w = keep.astype(np.float64)
        if chain_break is not None:
            cbf = _vector("chain_break", chain_break, size=m)
            if ((cbf < 0) | (cbf > 1)).any():
                raise ValueError(f"chain_break must lie in [0, 1], got {cbf.tolist()!r}")
            if (keep * (1.0 - cbf)).sum() > 0:
                w = keep * (1.0 - cbf)
        return w / w.sum()
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
        inv = 1.0 / np.maximum(_vector("train_mse", train_mse, size=m), 1e-12)
        return inv / inv.sum()
    raise ValueError(f"ensemble must be one of {', '.join(ENSEMBLE_METHODS)}; got {method!r}")


def _vector(name: str, values: ArrayLike, size: int | None = None) -> NDArray[np.float64]:
    """A finite, non-empty 1-D float array (of ``size`` entries when given), else ValueError."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array (one entry per member), got shape {v.shape}")
    if size is not None and v.shape[0] != size:
        raise ValueError(f"{name} must have one entry per member ({size}), got {v.shape[0]}")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} must be finite, got {v.tolist()!r}")
    return v
