"""Curve features and the SVR / QSVR / gateway predictors."""

from __future__ import annotations

import numpy as np
import pytest

from hpo_node.hyperband import SwiftHyperband
from hpo_node.predictors import (
    CurveFeatures,
    GatewayPredictor,
    Predictor,
    QSVRPredictor,
    SVRPredictor,
    make_predictor_factory,
)
from hpo_node.replay import simulate
from hpo_node.synthetic import synthetic_table


def test_features_downsample_keep_last_point_and_add_differences() -> None:
    curves = np.arange(2 * 50, dtype=np.float64).reshape(2, 50)
    x = CurveFeatures(max_points=10).transform(curves)
    assert x.shape == (2, 10)
    assert x[0, 0] == 0 and x[0, -1] == 49
    x2 = CurveFeatures(max_points=10, differences=2).transform(curves)
    assert x2.shape == (2, 10 + 9 + 8)
    np.testing.assert_allclose(x2[:, 10:19], np.diff(x, axis=1))
    short = CurveFeatures(max_points=25).transform(curves[:, :3])
    np.testing.assert_array_equal(short, curves[:, :3])


def test_features_append_hparams_and_validate() -> None:
    curves = np.ones((3, 4))
    h = np.arange(6.0).reshape(3, 2)
    x = CurveFeatures(max_points=None, hparams=True).transform(curves, h)
    np.testing.assert_array_equal(x[:, -2:], h)
    with pytest.raises(ValueError, match="hparams must be given"):
        CurveFeatures(hparams=True).transform(curves)
    with pytest.raises(ValueError, match="differences must be <= 2, got 3"):
        CurveFeatures(differences=3)
    with pytest.raises(ValueError, match="max_points must be >= 1, got 0"):
        CurveFeatures(max_points=0)


def _split(seed: int = 0) -> tuple[np.ndarray, ...]:
    table = synthetic_table(120, 40, seed=seed, noise=0.002)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(120)
    tr, te = idx[:20], idx[20:]
    return table.curves[tr, :10], table.curves[tr, -1], table.curves[te, :10], table.curves[te, -1]


def test_svr_predictor_beats_last_value_baseline() -> None:
    xtr, ytr, xte, yte = _split()
    model = SVRPredictor()
    assert isinstance(model, Predictor)
    model.fit(xtr, ytr, seed=0)
    mean, spread = model.predict(xte)
    assert mean.shape == spread.shape == (100,)
    assert np.all(spread == 0)
    r2 = 1 - np.sum((mean - yte) ** 2) / np.sum((yte - yte.mean()) ** 2)
    assert r2 > 0.5


def test_svr_bootstrap_spread_is_positive_and_seeded() -> None:
    xtr, ytr, xte, _ = _split(1)
    a, b = SVRPredictor(n_bootstrap=8), SVRPredictor(n_bootstrap=8)
    a.fit(xtr, ytr, seed=3)
    b.fit(xtr, ytr, seed=3)
    _ma, sa = a.predict(xte)
    _mb, sb = b.predict(xte)
    np.testing.assert_array_equal(sa, sb)
    assert np.all(sa >= 0) and sa.mean() > 0


def test_predictor_validation() -> None:
    with pytest.raises(RuntimeError, match="predict called before fit"):
        SVRPredictor().predict(np.ones((2, 3)))
    with pytest.raises(ValueError, match="at least 2 training curves"):
        SVRPredictor().fit(np.ones((1, 3)), np.ones(1))
    with pytest.raises(ValueError, match="c must be in"):
        SVRPredictor(c=0.0)
    with pytest.raises(ValueError, match="predictor must be one of"):
        make_predictor_factory("gp")
    with pytest.raises(ValueError, match="gateway must be HOST:PORT"):
        make_predictor_factory("gateway")
    with pytest.raises(ValueError, match="address must be HOST:PORT"):
        GatewayPredictor("localhost")


def test_max_train_caps_training_set() -> None:
    xtr, ytr, _xte, _ = _split(2)
    model = SVRPredictor(max_train=5)
    model.fit(xtr, ytr, seed=0)
    assert model._model.support_vectors_.shape[0] <= 5


def test_qsvr_predictor_in_process() -> None:
    xtr, ytr, xte, yte = _split(3)
    model = QSVRPredictor(num_reads=200)
    model.fit(xtr, ytr, seed=1)
    mean, spread = model.predict(xte)
    assert mean.shape == spread.shape == (100,)
    assert np.all(np.isfinite(mean)) and np.all(spread >= 0)
    assert np.corrcoef(mean, yte)[0, 1] > 0.5


def test_gateway_predictor_drives_swift_hyperband(request: pytest.FixtureRequest) -> None:
    address = request.getfixturevalue("gateway_address")
    table = synthetic_table(120, 27, seed=4)
    factory = make_predictor_factory("gateway", gateway=address, num_reads=100, timeout=60.0)
    sched = SwiftHyperband(27, 3, factory, rule="paper", d=5, seed=0)
    run = simulate(table, sched, seed=0, max_resource=27, workers=2)
    sched.close()
    assert run.predictor_fits > 0 and run.predictor_predicts == run.predictor_fits
    assert run.best_loss is not None
