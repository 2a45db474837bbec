"""Shared helpers of the gateway benchmarks: the MLPF table and the R² protocol's splits."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# The MLPF Delphes table (data/README.md); QHPO_MLPF_CSV points the benchmarks at another copy.
MLPF = Path(os.environ.get("QHPO_MLPF_CSV", REPO / "data" / "mlpf_delphes_curves.csv"))


def load_mlpf(known_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Features = the first ``known_fraction`` of each loss curve, target = final loss.

    Returns x: (296, 25) and y: (296,) for the default fraction. Exits with a clear message when
    the table is absent (``QHPO_MLPF_CSV`` points at another copy).
    """
    if not MLPF.exists():
        sys.exit(f"the MLPF learning-curve table is not at {MLPF} (QHPO_MLPF_CSV)")
    import pandas as pd

    df = pd.read_csv(MLPF)
    cols = sorted((c for c in df.columns if c.startswith("loss_")), key=lambda c: int(c[5:]))
    curves = df[cols].to_numpy(dtype=np.float64)
    known = round(curves.shape[1] * known_fraction)
    return curves[:, :known], curves[:, -1]


def split(n: int, seed: int, n_train: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Random split of the R² protocol (design brief §4): n_train curves to fit, the rest to test."""
    idx = np.random.default_rng(seed).permutation(n)
    return idx[:n_train], idx[n_train:]


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def svr_baseline(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    gamma: float,
    c: float | None = None,
    relevance_power: float = 0.0,
) -> np.ndarray:
    """scikit-learn SVR on QSVR's kernel, scaling and C (``None``: the sum of the K = 3 precision
    weights of the reference QUBO), ε = 0.02: fit on (x_train (n, f), y_train (n,)), predict
    x_test (m, f) -> (m,). ``relevance_power`` weights the inputs as QSVR does
    (:func:`qpu_gateway.qsvr.relevance_weights`); 0 is plain min-max scaling."""
    from sklearn.svm import SVR

    from qpu_gateway.qsvr import relevance_weights

    lo, span = x_train.min(0), np.ptp(x_train, 0)
    span = np.where(span > 0, span, 1.0)
    ylo, yspan = y_train.min(), np.ptp(y_train)
    xs = (x_train - lo) / span
    ys = (y_train - ylo) / yspan
    w = np.sqrt(relevance_weights(xs, ys, relevance_power))
    c = float((0.5 ** (np.arange(3) - 0.005)).sum()) if c is None else c
    svr = SVR(gamma=gamma, epsilon=0.02, C=c)
    svr.fit(xs * w, ys)
    return svr.predict((x_test - lo) / span * w) * yspan + ylo


# The seed authors' published protocol (their notebook 20_points_SVR.ipynb; issue 14).
PUBLISHED_SVR = {"gamma": 0.1, "epsilon": 0.02, "C": 67.61}


def load_mlpf_published() -> tuple[np.ndarray, np.ndarray]:
    """The published protocol's table: x (295, 13), y (295,), both quantile-transformed.

    The curve with the largest final loss is dropped; features are every other epoch of the first
    25 (loss_0, loss_2, ..., loss_24), the target is loss_98; ``QuantileTransformer(n_quantiles=50)``
    is fitted on the whole table (X and y), as published.
    """
    if not MLPF.exists():
        sys.exit(f"the MLPF learning-curve table is not at {MLPF} (QHPO_MLPF_CSV)")
    import pandas as pd
    from sklearn.preprocessing import QuantileTransformer

    df = pd.read_csv(MLPF)
    curves = df[[f"loss_{i}" for i in range(100)]].to_numpy(dtype=np.float64)
    curves = np.delete(curves, int(np.argmax(curves[:, -1])), axis=0)
    x = QuantileTransformer(n_quantiles=50).fit_transform(curves[:, 0:25:2])
    y = QuantileTransformer(n_quantiles=50).fit_transform(curves[:, 98:99]).ravel()
    return x, y


def published_split(
    x: np.ndarray, y: np.ndarray, i: int, n_train: int = 20
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split ``i`` of the published protocol: ``train_test_split(test_size=0.5,
    random_state=123 + i)``, then the first ``n_train`` training rows. -> x_tr, y_tr, x_te, y_te."""
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.5, random_state=123 + i)
    return x_tr[:n_train], y_tr[:n_train], x_te, y_te


def r2_published(y: np.ndarray, pred: np.ndarray) -> float:
    """The published score, ``sklearn.metrics.r2_score(pred, y)``: arguments in that order, so the
    denominator is the spread of the predictions, not of the truth."""
    from sklearn.metrics import r2_score

    return float(r2_score(pred, y))
