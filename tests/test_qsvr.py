"""The QSVR estimator: scikit-learn contract, learning, state round trip."""

from __future__ import annotations

import json

import dimod
import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from qpu_gateway.qsvr import QSVR
from qpu_gateway.qubo import build_svr_qubo, rbf_kernel

# Small sampler budgets keep the checks fast: the checks fit on up to a few hundred samples
# (2KN = 6N binary variables). We skip no check ourselves; scikit-learn itself skips its array-API
# check unless SCIPY_ARRAY_API is set (QSVR computes with NumPy only, so it does not apply).
FAST = {"num_reads": 10, "num_sweeps": 20, "random_state": 0}


@parametrize_with_checks([QSVR(**FAST)])
def test_qsvr_passes_sklearn_estimator_checks(estimator, check) -> None:
    check(estimator)


def _curves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic learning curves: features = first 10 epochs, target = epoch 40."""
    rng = np.random.default_rng(seed)
    a, b, c = rng.uniform(0.5, 2, n), rng.uniform(0.3, 1.0, n), rng.uniform(0.1, 0.5, n)
    t = np.arange(1, 41)
    curves = c[:, None] + a[:, None] * t[None, :] ** -b[:, None]
    curves += rng.normal(0, 0.005, curves.shape)
    return curves[:, :10], curves[:, -1]


def test_qsvr_predicts_unseen_learning_curves() -> None:
    x, y = _curves(120, 0)
    model = QSVR(num_reads=200, num_sweeps=100, random_state=1).fit(x[:20], y[:20])
    pred = model.predict(x[20:])
    r2 = 1 - ((pred - y[20:]) ** 2).sum() / ((y[20:] - y[20:].mean()) ** 2).sum()
    assert r2 > 0.8
    assert model.dual_coef_.shape == (4, 20) and model.intercept_.shape == (4,)
    assert np.all(np.diff(model.member_energies_) >= 0)


def test_qsvr_answers_in_caller_units_and_reports_member_spread() -> None:
    x, y = _curves(40, 1)
    shifted = QSVR(num_reads=100, num_sweeps=50, random_state=3).fit(x[:20], 1000 + 50 * y[:20])
    base = QSVR(num_reads=100, num_sweeps=50, random_state=3).fit(x[:20], y[:20])
    mean_s, std_s = shifted.predict(x[20:], return_std=True)
    mean_b, std_b = base.predict(x[20:], return_std=True)
    np.testing.assert_allclose(mean_s, 1000 + 50 * mean_b, rtol=1e-9)
    np.testing.assert_allclose(std_s, 50 * std_b, rtol=1e-9, atol=1e-9)
    assert np.all(std_b >= 0) and std_b.max() > 0


def test_qsvr_same_seed_same_model_different_seed_different() -> None:
    x, y = _curves(20, 2)
    a = QSVR(num_reads=50, num_sweeps=30, random_state=5).fit(x, y)
    b = QSVR(num_reads=50, num_sweeps=30, random_state=5).fit(x, y)
    c = QSVR(num_reads=50, num_sweeps=30, random_state=6).fit(x, y)
    np.testing.assert_array_equal(a.dual_coef_, b.dual_coef_)
    assert not np.array_equal(a.dual_coef_, c.dual_coef_)


def test_qsvr_exact_sampler_reaches_the_ground_state() -> None:
    x, y = _curves(3, 3)
    model = QSVR(k=1, top_k=2, sampler=dimod.ExactSolver()).fit(x, y)
    ys = (y - model.y_min_) / model.y_scale_
    q = build_svr_qubo(rbf_kernel(model.x_train_, model.x_train_, model.gamma), ys, k=1)
    ground = dimod.ExactSolver().sample(dimod.BinaryQuadraticModel(q, "BINARY")).first.energy
    assert model.member_energies_[0] == pytest.approx(ground, abs=1e-12)
    assert model.fit_stats_["num_reads"] == 2 ** (2 * 1 * 3)


def test_qsvr_state_round_trips_through_json() -> None:
    x, y = _curves(30, 4)
    model = QSVR(num_reads=50, num_sweeps=30, ensemble="inverse_error", random_state=0).fit(x, y)
    state = json.loads(json.dumps(model.get_state()))
    loaded = QSVR.from_state(state)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    np.testing.assert_array_equal(
        loaded.predict(x, return_std=True)[1], model.predict(x, return_std=True)[1]
    )


def test_qsvr_from_state_rejects_other_formats_and_versions() -> None:
    x, y = _curves(10, 5)
    state = QSVR(num_reads=10, num_sweeps=10).fit(x, y).get_state()
    with pytest.raises(ValueError, match="state version"):
        QSVR.from_state({**state, "version": 999})
    with pytest.raises(ValueError, match="state format"):
        QSVR.from_state({**state, "format": "pickle"})


@pytest.mark.parametrize(
    ("param", "value", "message"),
    [
        ("k", 0, r"k must be an integer in \[1, 64\]"),
        ("base", -1.0, "base must be a finite number > 0"),
        ("gamma", 0.0, "gamma must be a finite number > 0"),
        ("epsilon", -0.1, "epsilon must be a finite number >= 0"),
        ("xi", float("nan"), "xi must be a finite number >= 0"),
        ("c", 0.0, "c must be a finite number > 0"),
        ("num_reads", 0, "num_reads must be an integer >= 1"),
        ("top_k", 0, "top_k must be an integer >= 1"),
        ("num_sweeps", 0, "num_sweeps must be an integer >= 1"),
        ("ensemble", "median", "ensemble must be one of"),
    ],
)
def test_qsvr_fit_rejects_invalid_parameters_by_name(param: str, value: object, message: str) -> None:
    x, y = _curves(5, 6)
    with pytest.raises(ValueError, match=message):
        QSVR(**{param: value}).fit(x, y)


def test_qsvr_accepts_a_numpy_generator_as_random_state() -> None:
    x, y = _curves(10, 7)
    a = QSVR(num_reads=20, num_sweeps=10, random_state=np.random.default_rng(1)).fit(x, y)
    b = QSVR(num_reads=20, num_sweeps=10, random_state=np.random.default_rng(1)).fit(x, y)
    np.testing.assert_array_equal(a.dual_coef_, b.dual_coef_)
