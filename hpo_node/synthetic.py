"""Synthetic learning-curve tables, to check schedulers on curves other than the MLPF table."""

from __future__ import annotations

import numpy as np

from hpo_node.core import check_float, check_int
from hpo_node.replay import CurveTable


def synthetic_table(
    n_rows: int, n_epochs: int, seed: int = 0, *, noise: float = 0.005
) -> CurveTable:
    """Power-law learning curves with crossings, ``(n_rows, n_epochs)``, lower is better.

    Row ``j`` has hyperparameters ``lr, width`` (uniform in [0, 1]); its curve is
    ``a + (l0 - a) (1 + t / tau)**-c + noise`` with the asymptote ``a`` a smooth function of the
    hyperparameters plus scatter, and speed ``tau``/``c`` partly independent of ``a`` so that fast
    starters do not always finish best. Noise is i.i.d. Gaussian, relative to ``l0 - a``.
    """
    n = check_int("n_rows", n_rows, 1)
    e = check_int("n_epochs", n_epochs, 1)
    sigma = check_float("noise", noise, 0.0, 1.0)
    rng = np.random.default_rng(seed)
    lr, width = rng.uniform(size=n), rng.uniform(size=n)
    a = 0.2 + 0.3 * (lr - 0.6) ** 2 + 0.1 * (1.0 - width) + 0.03 * rng.normal(size=n)
    l0 = 1.0 + 0.1 * rng.normal(size=n)
    tau = np.exp(rng.uniform(np.log(0.5), np.log(20.0), size=n)) * (1.5 - lr)
    c = rng.uniform(0.5, 1.5, size=n)
    t = np.arange(1, e + 1, dtype=np.float64)[None, :]
    curves = a[:, None] + (l0 - a)[:, None] * (1.0 + t / tau[:, None]) ** (-c[:, None])
    curves = curves + sigma * (l0 - a)[:, None] * rng.normal(size=curves.shape)
    return CurveTable.from_arrays(curves, np.stack([lr, width], axis=1), ("lr", "width"))
