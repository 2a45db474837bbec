"""The QSVR estimator: scikit-learn contract, learning, state round trip."""

from __future__ import annotations

import json

import dimod
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.utils.estimator_checks import parametrize_with_checks

from qpu_gateway.backends import BackendRegistry
from qpu_gateway.ensemble import member_weights
from qpu_gateway.qsvr import DEFAULT_TOP_K, QSVR, STATE_VERSION, DataRangeError, relevance_weights
from qpu_gateway.qubo import build_svr_qubo, rbf_kernel
from qpu_gateway.seeds import bounded_seed

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
    m = model.intercept_.shape[0]
    assert 1 <= m <= DEFAULT_TOP_K and model.dual_coef_.shape == (m, 20)
    assert model.fit_stats_["candidates"] == DEFAULT_TOP_K
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


@pytest.mark.parametrize("seed", [2**31, 2**32 - 2, 2**64 - 1, "generator"])
def test_qsvr_every_documented_random_state_fits_with_the_default_sampler(seed: object) -> None:
    """Large ints and Generators (whose draws once reached past the sampler's 2^31 bound)."""
    x, y = _curves(8, 2)

    def state() -> object:
        return np.random.default_rng(0) if seed == "generator" else seed

    a = QSVR(num_reads=10, num_sweeps=10, random_state=state()).fit(x, y)
    b = QSVR(num_reads=10, num_sweeps=10, random_state=state()).fit(x, y)
    np.testing.assert_array_equal(a.dual_coef_, b.dual_coef_)


def test_qsvr_seeds_past_2_32_do_not_alias_small_seeds_and_small_seeds_map_as_before() -> None:
    from dwave.samplers import SimulatedAnnealingSampler

    seeds: list[int] = []

    class Recording(SimulatedAnnealingSampler):
        def sample(self, bqm: dimod.BinaryQuadraticModel, **kwargs: object) -> dimod.SampleSet:
            seeds.append(int(kwargs["seed"]))
            return super().sample(bqm, **kwargs)

    x, y = _curves(8, 2)
    small = [0, 1, 5, 2**31 - 1, 2**31, 2**32 - 2]  # what stored models were fitted with
    large = [2**32 - 1, 2**32, 2**32 + 4, 2**64 - 1]  # once taken modulo 2^32 - 1: 0, 1, 5, 0
    models = {s: QSVR(num_reads=10, num_sweeps=10, sampler=Recording(), random_state=s).fit(x, y)
              for s in small + large}
    assert seeds[:len(small)] == [bounded_seed(s) for s in small]
    assert len(set(seeds)) == len(small) + len(large)
    for big, alias in zip(large, [0, 1, 5, 0], strict=True):
        assert not np.array_equal(models[big].dual_coef_, models[alias].dual_coef_), big


def test_qsvr_sampler_returning_no_sampleset_is_a_type_error() -> None:
    class Bad(dimod.Sampler):
        parameters = property(lambda self: {})
        properties = property(lambda self: {})

        def sample(self, bqm: dimod.BinaryQuadraticModel, **kwargs: object) -> object:
            return 42

    x, y = _curves(4, 2)
    with pytest.raises(TypeError, match=r"sampler\.sample must return a dimod\.SampleSet, got int"):
        QSVR(sampler=Bad()).fit(x, y)


def test_qsvr_exact_sampler_reaches_the_ground_state() -> None:
    x, y = _curves(3, 3)
    model = QSVR(k=1, top_k=2, sampler=dimod.ExactSolver()).fit(x, y)
    ys = (y - model.y_offset_) / model.y_scale_
    q = build_svr_qubo(model.kernel(model.x_train_, model.x_train_), ys, k=1)
    ground = dimod.ExactSolver().sample(dimod.BinaryQuadraticModel(q, "BINARY")).first.energy
    # The lowest energy sampled, before ``robust`` may drop that member for its training error.
    assert model.fit_stats_["best_energy"] == pytest.approx(ground, abs=1e-12)
    assert model.member_energies_[0] >= ground - 1e-12
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


def _as_old_state(state: dict, version: int) -> dict:
    """A current state of a ``relevance_power=0, linear_share=0, linear_margin=0,
    linear_reach=0`` model written as ``version`` (1 to 3) did: version 3 without the linear
    part's parameters; 1 and 2 also without input weights, targets offset by their minimum
    (intercepts +1/2 in scaled units)."""
    old = json.loads(json.dumps(state))
    for name in ("linear_share", "linear_margin", "linear_reach"):
        assert old["params"][name] == 0
        del old["params"][name]
    old["version"] = version
    if version == 3:
        return old
    assert old["feature_weights"] == [1.0] * old["n_features_in"]
    del old["feature_weights"], old["y_offset"], old["params"]["relevance_power"]
    old["intercept"] = [b + (state["y_offset"] - state["y_min"]) / state["y_scale"]
                        for b in state["intercept"]]
    if version == 1:
        del old["member_chain_break"]
    return old


def test_qsvr_robust_default_state_round_trips_and_old_states_still_load() -> None:
    x, y = _curves(30, 4)
    model = QSVR(num_reads=100, num_sweeps=30, random_state=0).fit(x, y)
    state = json.loads(json.dumps(model.get_state()))
    assert state["version"] == STATE_VERSION and state["params"]["ensemble"] == "robust"
    loaded = QSVR.from_state(state)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    np.testing.assert_array_equal(loaded.member_chain_break_, model.member_chain_break_)
    np.testing.assert_array_equal(loaded.feature_weights_, model.feature_weights_)
    # Versions 1 (before issue 14: no chain breaks, top_k=4, mean), 2 (before the relevance
    # weights and centred targets) and 3 (before the linear kernel share) still load, as the
    # models they were.
    old = QSVR(num_reads=100, num_sweeps=30, top_k=4, ensemble="mean", relevance_power=0,
               gamma=0.1, linear_share=0, linear_margin=0, linear_reach=0, random_state=0)
    old.fit(x, y)
    for version in (1, 2, 3):
        restored = QSVR.from_state(_as_old_state(old.get_state(), version))
        np.testing.assert_allclose(restored.predict(x), old.predict(x), rtol=1e-12)
        np.testing.assert_array_equal(restored.feature_weights_, np.ones(x.shape[1]))
        assert restored.relevance_power == 0 and restored.gamma == 0.1
        assert restored.linear_share == restored.linear_margin == restored.linear_reach == 0
        assert restored.ensemble == "mean" and restored.top_k == 4
        assert (restored.y_offset_ == restored.y_min_) == (version < 3)
    np.testing.assert_array_equal(
        QSVR.from_state(_as_old_state(old.get_state(), 1)).member_chain_break_, np.zeros(4)
    )


def test_qsvr_version_3_state_loads_as_the_pure_rbf_kernel() -> None:
    # A version-3 state (relevance weights, no linear kernel share) predicts as it did.
    x, y = _curves(30, 4)
    v3 = QSVR(num_reads=100, num_sweeps=30, linear_share=0, random_state=0).fit(x, y)
    state = json.loads(json.dumps(v3.get_state()))
    del state["params"]["linear_share"]
    state["version"] = 3
    restored = QSVR.from_state(state)
    assert restored.linear_share == 0
    np.testing.assert_array_equal(restored.predict(x), v3.predict(x))


def test_qsvr_version_4_state_loads_without_margin_or_reach() -> None:
    # A version-4 state (linear part clipped at the box, never attenuated) predicts as it did.
    x, y = _curves(30, 4)
    v4 = QSVR(num_reads=100, num_sweeps=30, linear_margin=0, linear_reach=0, random_state=0)
    v4.fit(x, y)
    state = json.loads(json.dumps(v4.get_state()))
    del state["params"]["linear_margin"], state["params"]["linear_reach"]
    state["version"] = 4
    restored = QSVR.from_state(state)
    assert restored.linear_margin == 0 and restored.linear_reach == 0
    far = x * 3.0  # rows outside the training box, where margin and reach would matter
    np.testing.assert_array_equal(restored.predict(far), v4.predict(far))


def test_qsvr_linear_margin_and_reach_shape_the_linear_part_past_the_box() -> None:
    x, y = _curves(6, 3)
    kw = {"k": 1, "top_k": 2, "linear_share": 4.0, "sampler": dimod.ExactSolver()}
    plain = QSVR(linear_margin=0, linear_reach=0, **kw).fit(x, y)
    model = QSVR(linear_margin=0.25, linear_reach=2.0, **kw).fit(x, y)
    xs, f = model.x_train_, x.shape[1]
    top = np.sqrt(model.feature_weights_)
    # Training rows lie in the box: margin and reach leave the kernel, hence the QUBO, alone.
    np.testing.assert_array_equal(model.kernel(xs, xs), plain.kernel(xs, xs))
    np.testing.assert_array_equal(model.dual_coef_, plain.dual_coef_)

    def linear(m: QSVR, rows: np.ndarray) -> np.ndarray:
        return m.kernel(xs, rows) - rbf_kernel(xs, rows, m.gamma)

    u = xs - xs.mean(axis=0)
    # 0.1 box widths past the top in every input: followed (inside the margin), attenuated by
    # exp(-(0.1 / 2)**2); 0.5 past: clipped at 0.25 past the box, attenuated by exp(-(0.5 / 2)**2).
    for past, clipped in ((0.1, 0.1), (0.5, 0.25)):
        row = (top * (1 + past))[None, :]
        expected = 4.0 / f * np.exp(-((past / 2.0) ** 2)) * (
            u @ (top * (1 + clipped) - xs.mean(axis=0)))[:, None]
        np.testing.assert_allclose(linear(model, row), expected, rtol=1e-12)
    # One input far outside the box (10 widths below): the linear part fades to nothing and the
    # prediction falls back to the RBF part's; without reach it would stay at the box's edge.
    far = xs.mean(axis=0)[None, :].copy()
    far[0, 0] = -10 * top[0]
    assert np.abs(linear(model, far)).max() < 1e-10
    assert np.abs(linear(plain, far)).max() > 1e-3
    rows = far / top * plain.x_scale_ + plain.x_min_
    rbf_only = plain.dual_coef_ @ rbf_kernel(xs, far, plain.gamma) + plain.intercept_[:, None]
    np.testing.assert_allclose(model.predict(rows),
                               model.weights_ @ (rbf_only * model.y_scale_ + model.y_offset_),
                               rtol=1e-9)


def test_qsvr_linear_share_is_a_clipped_centred_linear_kernel_in_the_qubo() -> None:
    x, y = _curves(3, 3)
    model = QSVR(k=1, top_k=2, linear_share=2.0, linear_margin=0, linear_reach=0,
                 sampler=dimod.ExactSolver()).fit(x, y)
    xs, f = model.x_train_, x.shape[1]
    u = xs - xs.mean(axis=0)
    expected = rbf_kernel(xs, xs, model.gamma) + 2.0 / f * (u @ u.T)
    np.testing.assert_allclose(model.kernel(xs, xs), expected, rtol=1e-12)
    # The QUBO was built on that kernel: the sampled ground state is the one of this QUBO.
    ys = (y - model.y_offset_) / model.y_scale_
    q = build_svr_qubo(expected, ys, k=1)
    ground = dimod.ExactSolver().sample(dimod.BinaryQuadraticModel(q, "BINARY")).first.energy
    assert model.fit_stats_["best_energy"] == pytest.approx(ground, abs=1e-12)
    # Beyond the training box the linear part stays at the box's edge (no extrapolation).
    top = np.sqrt(model.feature_weights_)
    far = np.vstack([top * 1.5, -0.5 * top])
    edge = np.vstack([top, np.zeros(f)])
    lin = model.kernel(xs, far) - rbf_kernel(xs, far, model.gamma)
    np.testing.assert_allclose(lin, model.kernel(xs, edge) - rbf_kernel(xs, edge, model.gamma),
                               rtol=1e-12)
    # linear_share=0 is the pure RBF kernel.
    pure = QSVR(k=1, top_k=2, linear_share=0, sampler=dimod.ExactSolver()).fit(x, y)
    np.testing.assert_array_equal(pure.kernel(xs, xs), rbf_kernel(xs, xs, pure.gamma))


def test_qsvr_linear_share_extends_a_trend_past_the_training_targets() -> None:
    # Targets follow the inputs linearly; training covers only the lower 60% of the targets.
    # The RBF part falls back towards the bias beyond the training curves; the linear share
    # keeps the trend up to the edge of the training box, so the spread of the predictions on
    # the rest is larger and their error smaller.
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(60, 4))
    y = x.mean(axis=1)
    train = y <= np.quantile(y, 0.6)
    x_tr, y_tr, x_te, y_te = x[train][:20], y[train][:20], x[~train], y[~train]
    errors = {}
    for share in (0.0, 3.0):
        pred = QSVR(num_reads=200, num_sweeps=50, linear_share=share, relevance_power=0,
                    random_state=1).fit(x_tr, y_tr).predict(x_te)
        errors[share] = float(((pred - y_te) ** 2).mean())
    assert errors[3.0] < errors[0.0], errors


@settings(max_examples=50, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(3, 12), st.integers(1, 5)),
           elements=st.integers(-50, 50).map(float)),
    st.data(),
    st.sampled_from([0.0, 1.0, 8.0, 32.0]),
)
def test_relevance_weights_average_one_and_ignore_monotone_rescaling(
    xs: np.ndarray, data: st.DataObject, power: float
) -> None:
    # Integer-valued entries, so that the maps below stay strictly increasing in floating point.
    y = data.draw(arrays(np.float64, xs.shape[0], elements=st.integers(-50, 50).map(float)))
    w = relevance_weights(xs, y, power)
    assert w.shape == (xs.shape[1],) and (w >= 0).all()
    assert w.mean() == pytest.approx(1.0)
    # Rank correlations: strictly increasing maps of the inputs and the target change nothing.
    np.testing.assert_allclose(relevance_weights(np.exp(xs / 10), 3 * y + 1, power), w, atol=1e-9)


def test_relevance_weights_favour_the_inputs_that_order_the_target() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(20, 3))
    x[:, 2] = 0.5  # constant
    y = x[:, 0] + 0.01 * rng.normal(size=20)
    w = relevance_weights(x, y, 8.0)
    # A share of RELEVANCE_UNIFORM_SHARE = 0.1 is uniform: no input drops out entirely.
    assert w[0] > 2.7 and w[1] < 0.2 and w[2] == pytest.approx(0.1)
    np.testing.assert_array_equal(relevance_weights(x, y, 0.0), np.ones(3))
    np.testing.assert_array_equal(relevance_weights(x, np.ones(20), 8.0), np.ones(3))


def test_qsvr_default_worst_split_beats_the_reference_scaling_on_mlpf(
    mlpf_curves: np.ndarray,
) -> None:
    """Statistical test on fixed seeds: 8 MLPF splits of the design brief's protocol (20 training
    curves, first 25 epochs -> final loss, R² on the other 276), default neal sampler. The
    default (relevance-weighted inputs, RBF plus linear kernel) has a better worst split and mean
    than the reference model (every min-max scaled input alike, pure RBF kernel, gamma=0.1)."""
    x, y = mlpf_curves[:, :25], mlpf_curves[:, -1]
    reference, default = [], []
    for seed in range(8):
        idx = np.random.default_rng(seed).permutation(len(y))
        tr, te = idx[:20], idx[20:]
        reference_model = QSVR(relevance_power=0, linear_share=0, gamma=0.1, random_state=seed)
        for out, model in ((reference, reference_model),
                           (default, QSVR(random_state=seed))):
            pred = model.fit(x[tr], y[tr]).predict(x[te])
            out.append(1 - ((y[te] - pred) ** 2).sum() / ((y[te] - y[te].mean()) ** 2).sum())
    assert min(default) > min(reference), (default, reference)
    assert np.mean(default) > np.mean(reference), (default, reference)


def test_qsvr_default_extends_the_trend_on_the_published_protocols_worst_split(
    mlpf_curves: np.ndarray,
) -> None:
    """Fixed seeds: split 21 of the published R² protocol (issue 14; quantile-scaled table,
    ``r2_score(pred, true)``), whose 20 training targets span only [0.02, 0.78] of a test range
    that reaches 1. The default kernel (strong linear part, followed a little past the training
    box) scores >= 0.8 there; the kernel of state version 4 (linear_share=2, gamma=0.05, clipped
    at the box) under-disperses its predictions and scores below 0.7."""
    from sklearn.metrics import r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import QuantileTransformer

    curves = np.delete(mlpf_curves, int(np.argmax(mlpf_curves[:, -1])), axis=0)
    x = QuantileTransformer(n_quantiles=50).fit_transform(curves[:, 0:25:2])
    y = QuantileTransformer(n_quantiles=50).fit_transform(curves[:, 98:99]).ravel()
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.5, random_state=123 + 21)
    x_tr, y_tr = x_tr[:20], y_tr[:20]
    assert y_tr.max() < 0.8 < y_te.max()
    default = QSVR(random_state=21).fit(x_tr, y_tr).predict(x_te)
    v4 = QSVR(linear_share=2, gamma=0.05, linear_margin=0, linear_reach=0, random_state=21)
    previous = v4.fit(x_tr, y_tr).predict(x_te)
    assert r2_score(default, y_te) >= 0.8 > 0.7 > r2_score(previous, y_te)


def test_qsvr_robust_keeps_only_the_members_it_trusts() -> None:
    x, y = _curves(30, 8)
    kw = {"num_reads": 200, "num_sweeps": 20, "top_k": 16, "random_state": 2}
    every = QSVR(ensemble="mean", **kw).fit(x, y)
    robust = QSVR(**kw).fit(x, y)
    keep = member_weights("robust", every.member_energies_, every.member_train_mse_) > 0
    np.testing.assert_array_equal(robust.dual_coef_, every.dual_coef_[keep])
    assert robust.member_train_mse_.max() <= 2 * every.member_train_mse_.min() * (1 + 1e-9)
    np.testing.assert_allclose(robust.predict(x), every.predict_members(x)[keep].mean(axis=0))
    assert robust.fit_stats_["candidates"] == 16 > len(robust.intercept_)


def test_qsvr_robust_worst_case_beats_the_old_default_on_mock_qpu(
    mlpf_curves: np.ndarray, tmp_path: pytest.TempPathFactory
) -> None:
    """Statistical test on fixed seeds: 12 MLPF splits (design brief §4 protocol) on the QPU code
    path (mock-qpu, 200 reads). The old default (mean of the 4 lowest-energy members) fails badly
    on one of them; the robust default has no split below 0.5 and a better worst case."""
    sampler = BackendRegistry({"mock-qpu": {"embedding_cache_dir": str(tmp_path)}}).sampler("mock-qpu")
    x, y = mlpf_curves[:, :25], mlpf_curves[:, -1]
    old, new = [], []
    for seed in range(12):
        idx = np.random.default_rng(seed).permutation(len(y))
        tr, te = idx[:20], idx[20:]
        model = QSVR(num_reads=200, ensemble="mean", sampler=sampler, random_state=seed)
        members = model.fit(x[tr], y[tr]).predict_members(x[te])
        robust = member_weights("robust", model.member_energies_, model.member_train_mse_,
                                model.member_chain_break_)
        assert model.member_chain_break_.max() > 0  # the samples came through broken chains
        for out, pred in ((old, members[:4].mean(axis=0)), (new, robust @ members)):
            out.append(1 - ((y[te] - pred) ** 2).sum() / ((y[te] - y[te].mean()) ** 2).sum())
    assert min(new) > min(old)
    assert min(new) >= 0.5, new
    assert np.mean(new) >= np.mean(old)


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
        ("linear_share", -1.0, "linear_share must be a finite number >= 0"),
        ("linear_share", float("inf"), "linear_share must be a finite number >= 0"),
        ("linear_margin", -0.1, "linear_margin must be a finite number >= 0"),
        ("linear_margin", float("nan"), "linear_margin must be a finite number >= 0"),
        ("linear_reach", -1.0, "linear_reach must be a finite number >= 0"),
        ("linear_reach", float("inf"), "linear_reach must be a finite number >= 0"),
        ("epsilon", -0.1, "epsilon must be a finite number >= 0"),
        ("xi", float("nan"), "xi must be a finite number >= 0"),
        ("c", 0.0, "c must be a finite number > 0"),
        ("num_reads", 0, "num_reads must be an integer >= 1"),
        ("top_k", 0, "top_k must be an integer >= 1"),
        ("num_sweeps", 0, "num_sweeps must be an integer >= 1"),
        ("ensemble", "median", "ensemble must be one of"),
        ("relevance_power", -1.0, "relevance_power must be a finite number >= 0"),
        ("relevance_power", float("inf"), "relevance_power must be a finite number >= 0"),
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


def test_qsvr_fit_refuses_data_float64_cannot_fit_before_sampling() -> None:
    class Refusing(dimod.Sampler):
        parameters = property(lambda self: {})
        properties = property(lambda self: {})

        def sample(self, bqm: dimod.BinaryQuadraticModel, **kwargs: object) -> dimod.SampleSet:
            raise AssertionError("sampled")

    x = np.linspace(0, 1, 10)[:, None]
    with pytest.raises(DataRangeError, match=r"^y: the range of the values") as info:
        QSVR(sampler=Refusing()).fit(x, np.sin(6 * x[:, 0]) * 1e300)
    assert info.value.field == "y"
    with pytest.raises(DataRangeError, match=r"^x: the range \(max - min\) of column 1"):
        QSVR(sampler=Refusing()).fit(np.array([[0.0, -1e308], [1.0, 1e308]]), [0.0, 1.0])
