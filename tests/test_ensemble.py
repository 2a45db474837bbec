"""Ensemble member selection and weights."""

from __future__ import annotations

import dimod
import numpy as np
import pytest

from qpu_gateway.ensemble import ENSEMBLE_METHODS, member_weights, select_members


def _sampleset(rows: list[list[int]], energies: list[float]) -> dimod.SampleSet:
    return dimod.SampleSet.from_samples((np.array(rows), [0, 1, 2]), "BINARY", energies)


def test_select_members_keeps_distinct_lowest_energy_samples_in_order() -> None:
    ss = _sampleset(
        [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1], [1, 1, 1]], [-1.0, -3.0, -1.0, -2.0, 0.0]
    )
    samples, energies, n_distinct = select_members(ss, 3, range(3))
    assert n_distinct == 4
    np.testing.assert_array_equal(energies, [-3.0, -2.0, -1.0])
    np.testing.assert_array_equal(samples, [[0, 1, 0], [0, 0, 1], [1, 0, 0]])


def test_select_members_returns_fewer_when_fewer_are_distinct() -> None:
    ss = _sampleset([[1, 0, 0], [1, 0, 0]], [-1.0, -1.0])
    samples, energies, n_distinct = select_members(ss, 4, range(3))
    assert samples.shape == (1, 3) and n_distinct == 1
    np.testing.assert_array_equal(energies, [-1.0])


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


def test_energy_softmax_is_scale_free_and_uniform_on_ties() -> None:
    e = np.array([-3.0, -2.5, -1.0])
    np.testing.assert_allclose(
        member_weights("energy_softmax", e, e), member_weights("energy_softmax", 100 * e, e)
    )
    np.testing.assert_allclose(member_weights("energy_softmax", np.ones(4), np.ones(4)), 0.25)


def test_member_weights_reject_unknown_method() -> None:
    with pytest.raises(ValueError, match="ensemble must be one of"):
        member_weights("median", np.zeros(2), np.zeros(2))
