"""Ensemble member selection, the robust rejection rule and the combination weights."""

from __future__ import annotations

import dimod
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qpu_gateway.ensemble import (
    ENSEMBLE_METHODS,
    ROBUST_MSE_RATIO,
    member_weights,
    robust_keep,
    select_members,
)


def _sampleset(
    rows: list[list[int]], energies: list[float], chain_break: list[float] | None = None
) -> dimod.SampleSet:
    extra = {} if chain_break is None else {"chain_break_fraction": chain_break}
    return dimod.SampleSet.from_samples((np.array(rows), [0, 1, 2]), "BINARY", energies, **extra)


def test_select_members_keeps_distinct_lowest_energy_samples_in_order() -> None:
    ss = _sampleset(
        [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1], [1, 1, 1]], [-1.0, -3.0, -1.0, -2.0, 0.0]
    )
    samples, energies, n_distinct, chain_break = select_members(ss, 3, range(3))
    assert n_distinct == 4
    np.testing.assert_array_equal(energies, [-3.0, -2.0, -1.0])
    np.testing.assert_array_equal(samples, [[0, 1, 0], [0, 0, 1], [1, 0, 0]])
    np.testing.assert_array_equal(chain_break, [0.0, 0.0, 0.0])


def test_select_members_returns_fewer_when_fewer_are_distinct() -> None:
    ss = _sampleset([[1, 0, 0], [1, 0, 0]], [-1.0, -1.0])
    members = select_members(ss, 4, range(3))
    assert members.samples.shape == (1, 3) and members.n_distinct == 1
    np.testing.assert_array_equal(members.energies, [-1.0])


def test_select_members_takes_the_fewest_chain_breaks_among_duplicate_reads() -> None:
    ss = _sampleset(
        [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]], [-1.0, -3.0, -1.0, -2.0],
        chain_break=[0.5, 0.25, 0.0, 0.75],
    )
    members = select_members(ss, 3, range(3))
    np.testing.assert_array_equal(members.energies, [-3.0, -2.0, -1.0])
    np.testing.assert_array_equal(members.chain_break, [0.25, 0.75, 0.0])


@pytest.mark.parametrize("method", ENSEMBLE_METHODS)
def test_member_weights_are_a_distribution(method: str) -> None:
    w = member_weights(method, np.array([-3.0, -2.5, -1.0]), np.array([0.1, 0.2, 0.4]))
    assert w.shape == (3,) and np.all(w >= 0) and w.sum() == pytest.approx(1.0)


def test_member_weights_favour_the_right_members() -> None:
    e, mse = np.array([-3.0, -2.5, -1.0]), np.array([0.4, 0.2, 0.1])
    np.testing.assert_array_equal(member_weights("best", e, mse), [1.0, 0.0, 0.0])
    soft = member_weights("energy_softmax", e, mse)
    assert soft[0] > soft[1] > soft[2]
    inv = member_weights("inverse_error", e, mse)
    assert inv[2] > inv[1] > inv[0]
    np.testing.assert_allclose(member_weights("mean", e, mse), 1 / 3)
    np.testing.assert_allclose(member_weights("robust", e, mse), [0.0, 0.5, 0.5])


def test_energy_softmax_is_scale_free_and_uniform_on_ties() -> None:
    e = np.array([-3.0, -2.5, -1.0])
    np.testing.assert_allclose(
        member_weights("energy_softmax", e, e), member_weights("energy_softmax", 100 * e, e)
    )
    np.testing.assert_allclose(member_weights("energy_softmax", np.ones(4), np.ones(4)), 0.25)


def test_member_weights_reject_unknown_method() -> None:
    with pytest.raises(ValueError, match="ensemble must be one of"):
        member_weights("median", np.zeros(2), np.zeros(2))


def test_robust_keep_drops_members_twice_as_far_off_as_the_best() -> None:
    assert ROBUST_MSE_RATIO == 2.0
    np.testing.assert_array_equal(
        robust_keep([0.01, 0.03, 5.0, 0.015, 0.02]), [True, False, False, True, True]
    )
    np.testing.assert_array_equal(robust_keep([0.3, 0.1, 0.3]), [False, True, False])
    # Most members bad (a noisy QPU path): only the few good ones stay, not the better half.
    np.testing.assert_array_equal(
        robust_keep([0.04, 0.05, 0.9, 1.1, 1.3, 2.0, 3.1]), [True, True] + [False] * 5
    )
    # Most members good (simulated annealing): all of them stay, not only the better half.
    np.testing.assert_array_equal(
        robust_keep([0.030, 0.031, 0.033, 0.035, 0.04, 0.2]), [True] * 5 + [False]
    )
    # A perfect fit keeps only the perfect fits.
    np.testing.assert_array_equal(robust_keep([0.0, 1e-20, 0.0]), [True, False, True])


def test_robust_weights_down_weight_and_drop_broken_chains() -> None:
    e, mse = np.zeros(4), np.array([0.01, 0.01, 0.01, 9.0])
    np.testing.assert_allclose(
        member_weights("robust", e, mse, [0.0, 0.5, 1.0, 0.0]), [2 / 3, 1 / 3, 0.0, 0.0]
    )
    # Every trusted member fully broken: they are kept uniformly rather than none at all.
    np.testing.assert_allclose(member_weights("robust", e, mse, [1.0, 1.0, 1.0, 0.0]), [1 / 3] * 3 + [0])


@pytest.mark.parametrize(
    ("mse", "chain_break", "message"),
    [
        ([], None, "train_mse must be a non-empty 1-D array"),
        ([0.1, float("nan")], None, "train_mse must be finite"),
        ([0.1, 0.2], [0.0], r"chain_break must have one entry per member \(2\), got 1"),
        ([0.1, 0.2], [0.0, 1.5], r"chain_break must lie in \[0, 1\]"),
    ],
)
def test_robust_weights_reject_invalid_input_by_name(
    mse: list[float], chain_break: list[float] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        member_weights("robust", np.zeros(max(len(mse), 1)), mse, chain_break)


_errors = st.lists(
    st.floats(min_value=0.0, max_value=1e3, allow_nan=False, allow_infinity=False),
    min_size=1, max_size=32,
)
_breaks = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@given(mse=_errors, data=st.data())
def test_robust_keep_never_rejects_every_member(mse: list[float], data: st.DataObject) -> None:
    cbf = data.draw(st.lists(_breaks, min_size=len(mse), max_size=len(mse)))
    assert robust_keep(mse).any()
    assert member_weights("robust", np.zeros(len(mse)), mse, cbf).sum() == pytest.approx(1.0)


@given(mse=_errors, data=st.data())
def test_robust_keep_is_invariant_to_member_order(mse: list[float], data: st.DataObject) -> None:
    cbf = np.array(data.draw(st.lists(_breaks, min_size=len(mse), max_size=len(mse))))
    perm = np.array(data.draw(st.permutations(range(len(mse)))))
    err = np.array(mse)
    np.testing.assert_array_equal(robust_keep(err[perm]), robust_keep(err)[perm])
    e = np.zeros(len(mse))
    np.testing.assert_allclose(
        member_weights("robust", e, err[perm], cbf[perm]), member_weights("robust", e, err, cbf)[perm]
    )


@given(
    value=st.floats(min_value=0.0, max_value=1e3, allow_nan=False),
    cbf=_breaks,
    m=st.integers(min_value=1, max_value=32),
    energies=st.lists(st.floats(min_value=-1e3, max_value=1e3), min_size=32, max_size=32),
)
def test_robust_equals_mean_when_all_members_agree(
    value: float, cbf: float, m: int, energies: list[float]
) -> None:
    e = np.sort(np.array(energies[:m]))
    np.testing.assert_allclose(
        member_weights("robust", e, np.full(m, value), np.full(m, cbf)),
        member_weights("mean", e, np.full(m, value)),
        rtol=1e-12,
    )
    np.testing.assert_array_equal(
        member_weights("robust", e, np.full(m, value)), member_weights("mean", e, np.full(m, value))
    )
