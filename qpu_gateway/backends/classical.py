"""``classical``: scikit-learn's SVR on the same kernel, C and epsilon; no annealing.

The baseline users compare the annealers against through the same API. It implements
:class:`qpu_gateway.qsvr.DualSolver` instead of ``dimod.Sampler``: the model it yields has one
member whose dual coefficients are the exact (continuous) SVR solution.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.svm import SVR

__all__ = ["ClassicalSVRSolver", "create"]


class ClassicalSVRSolver:
    """Solves the SVR dual with libsvm (``sklearn.svm.SVR``, precomputed kernel)."""

    def __init__(self, tol: float = 1e-3) -> None:
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol!r}")
        self.tol = tol

    def solve_dual(
        self, kernel: NDArray[np.float64], y: NDArray[np.float64], *, c: float, epsilon: float
    ) -> tuple[NDArray[np.float64], float]:
        """kernel: (N, N), y: (N,) -> (beta = alpha - alpha_hat, shape (N,), bias)."""
        svr = SVR(kernel="precomputed", C=c, epsilon=epsilon, tol=self.tol).fit(kernel, y)
        beta = np.zeros(len(y))
        beta[svr.support_] = svr.dual_coef_[0]
        return beta, float(svr.intercept_[0])


def create(settings: Mapping[str, Any]) -> ClassicalSVRSolver:
    unknown = set(settings) - {"tol"}
    if unknown:
        raise ValueError(f"unknown classical settings {sorted(unknown)}; known: ['tol']")
    return ClassicalSVRSolver(float(settings.get("tol", 1e-3)))
