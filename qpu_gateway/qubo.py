"""Support-vector regression written as a QUBO (Pasetto et al. 2022; design brief §2).

Each dual coefficient is encoded with ``K`` binary variables and precision weights
``p_k = B^(k - k0)``::

    alpha_n     = sum_k p_k a[K*n + k]
    alpha_hat_n = sum_k p_k a[K*(N + n) + k]          a in {0, 1}^(2KN)

and the QUBO energy ``a^T Q a`` of any bit vector equals the SVR dual objective of the decoded
coefficients plus the penalty ``xi * (sum_n alpha_n - alpha_hat_n)^2``::

    E = 1/2 sum_nm beta_n beta_m k_nm + eps sum_n (alpha_n + alpha_hat_n) - sum_n y_n beta_n
        + xi (sum_n beta_n)^2,          beta = alpha - alpha_hat

Everything here is pure NumPy on dense arrays, built with Kronecker products (no Python loops).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "MAX_K",
    "build_svr_qubo",
    "decode",
    "dual_objective",
    "precision_weights",
    "qubo_energy",
    "rbf_kernel",
]


MAX_K = 64
"""Bits per coefficient above which the weights ``base**k`` under/overflow for any useful base."""


def precision_weights(k: int, base: float, k0: float) -> NDArray[np.float64]:
    """Return the encoding weights ``p_k = base**(k - k0)`` for ``k = 0..K-1``, shape (K,)."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer in [1, {MAX_K}], got {k!r}")
    if not np.isfinite(base) or base <= 0:
        raise ValueError(f"base must be a finite number > 0, got {base!r}")
    if not np.isfinite(k0):
        raise ValueError(f"k0 must be finite, got {k0!r}")
    with np.errstate(over="ignore", under="ignore"):
        p = np.power(float(base), np.arange(int(k), dtype=np.float64) - float(k0))
    if not (np.isfinite(p).all() and (p > 0).all()):
        raise ValueError(
            f"base and k0 must give finite, positive weights base**(k - k0) for k < {k}; "
            f"got base={base!r}, k0={k0!r}"
        )
    return p


def rbf_kernel(
    a: NDArray[np.float64], b: NDArray[np.float64], gamma: float
) -> NDArray[np.float64]:
    """RBF kernel ``exp(-gamma * ||a_i - b_j||^2)``; a: (n, d), b: (m, d) -> (n, m).

    Rows far outside float64's comfortable range (huge or infinite entries) get the kernel's
    limit: 0 for every row they are infinitely far from, never NaN.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is handled just below
        sq = (
            np.einsum("ij,ij->i", a, a)[:, None]
            + np.einsum("ij,ij->i", b, b)[None, :]
            - 2.0 * (a @ b.T)
        )
    bad = ~np.isfinite(sq)
    if bad.any():
        _direct_sq_distances(a, b, sq, bad)
    np.maximum(sq, 0.0, out=sq)
    with np.errstate(over="ignore"):  # a huge gamma: -inf, whose exp is the exact limit 0
        return np.exp(-gamma * sq)


def _direct_sq_distances(
    a: NDArray[np.float64], b: NDArray[np.float64], sq: NDArray[np.float64], bad: NDArray[np.bool_]
) -> None:
    """Recompute the entries ``bad`` of ``sq`` as ``sum((a_i - b_j)**2)``, where the expansion
    ``|a|^2 + |b|^2 - 2 a.b`` overflowed (``inf - inf``, or an infinite entry): the direct sum
    overflows only where the distance itself does, to ``inf``. A NaN left (both rows infinite in
    the same coordinate) is taken as infinitely far. One line at a time, along the axis with
    fewer bad lines."""
    rows = np.flatnonzero(bad.any(axis=1))
    cols = np.flatnonzero(bad.any(axis=0))
    with np.errstate(over="ignore", invalid="ignore"):
        if len(rows) <= len(cols):
            for i in rows:
                d = a[i] - b[bad[i]]
                sq[i, bad[i]] = np.einsum("ij,ij->i", d, d)
        else:
            for j in cols:
                d = a[bad[:, j]] - b[j]
                sq[bad[:, j], j] = np.einsum("ij,ij->i", d, d)
    sq[np.isnan(sq)] = np.inf


def build_svr_qubo(
    kernel: ArrayLike,
    y: ArrayLike,
    *,
    k: int = 3,
    base: float = 0.5,
    k0: float = 0.005,
    xi: float = 0.01,
    epsilon: float = 0.02,
) -> NDArray[np.float64]:
    """Build the upper-triangular QSVR QUBO matrix.

    Parameters
    ----------
    kernel : (N, N) symmetric kernel matrix ``k(x_n, x_m)`` of the training inputs.
    y : (N,) training targets (the reference parameters assume min-max scaled targets).
    k, base, k0 : encoding of each dual coefficient (see :func:`precision_weights`).
    xi : weight of the penalty ``(sum_n alpha_n - alpha_hat_n)^2``.
    epsilon : width of the epsilon-insensitive tube.

    Returns
    -------
    Q : (2KN, 2KN) upper-triangular matrix with ``E(a) = a^T Q a`` for ``a`` in {0, 1}^(2KN).
        Variable ``K*n + i`` is bit ``i`` of ``alpha_n``; ``K*(N + n) + i`` of ``alpha_hat_n``.
    """
    kmat = np.asarray(kernel, dtype=np.float64)
    yv = np.asarray(y, dtype=np.float64)
    if kmat.ndim != 2 or kmat.shape[0] != kmat.shape[1]:
        raise ValueError(f"kernel must be a square (N, N) matrix, got shape {kmat.shape}")
    if yv.shape != (kmat.shape[0],):
        raise ValueError(f"y must have shape ({kmat.shape[0]},), got {yv.shape}")
    if not np.isfinite(xi) or xi < 0:
        raise ValueError(f"xi must be a finite number >= 0, got {xi!r}")
    if not np.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
    p = precision_weights(k, base, k0)

    # beta-beta interaction of one (alpha or alpha_hat) block pair: (KN, KN).
    block = np.kron(0.5 * kmat + xi, np.outer(p, p))
    full = np.kron(np.array([[1.0, -1.0], [-1.0, 1.0]]), block)
    linear = np.concatenate([np.kron(epsilon - yv, p), np.kron(epsilon + yv, p)])

    # Fold the symmetric form to upper-triangular; a_i^2 = a_i puts linear terms on the diagonal.
    q = np.triu(full, 1)
    q *= 2.0
    q[np.diag_indices_from(q)] = np.diag(full) + linear
    return q


def decode(
    samples: ArrayLike, n: int, *, k: int = 3, base: float = 0.5, k0: float = 0.005
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Decode bit vectors into dual coefficients.

    samples : (S, 2KN) or (2KN,) binary array -> ``(alpha, alpha_hat)``, each (S, N) or (N,).
    """
    a = np.asarray(samples, dtype=np.float64)
    p = precision_weights(k, base, k0)
    if a.shape[-1] != 2 * k * n:
        raise ValueError(f"samples must have 2*k*n = {2 * k * n} columns, got {a.shape[-1]}")
    coef = a.reshape(*a.shape[:-1], 2, n, k) @ p
    return coef[..., 0, :], coef[..., 1, :]


def dual_objective(
    alpha: ArrayLike,
    alpha_hat: ArrayLike,
    kernel: ArrayLike,
    y: ArrayLike,
    *,
    epsilon: float,
    xi: float,
) -> NDArray[np.float64] | float:
    """SVR dual objective plus the ``xi`` penalty; alpha, alpha_hat: (..., N) -> (...)."""
    al = np.asarray(alpha, dtype=np.float64)
    ah = np.asarray(alpha_hat, dtype=np.float64)
    kmat = np.asarray(kernel, dtype=np.float64)
    yv = np.asarray(y, dtype=np.float64)
    beta = al - ah
    quad = 0.5 * np.einsum("...n,nm,...m->...", beta, kmat, beta)
    return (
        quad
        + epsilon * (al + ah).sum(axis=-1)
        - beta @ yv
        + xi * beta.sum(axis=-1) ** 2
    )


def qubo_energy(q: ArrayLike, samples: ArrayLike) -> NDArray[np.float64] | float:
    """Energy ``a^T Q a`` of bit vectors; samples: (S, n) or (n,) -> (S,) or scalar."""
    qm = np.asarray(q, dtype=np.float64)
    a = np.asarray(samples, dtype=np.float64)
    return np.einsum("...i,ij,...j->...", a, qm, a)
