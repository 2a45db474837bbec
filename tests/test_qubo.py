"""QUBO construction: the energy identity, the exact minimum, validation."""

from __future__ import annotations

import itertools

import dimod
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qpu_gateway.qubo import (
    build_svr_qubo,
    decode,
    dual_objective,
    precision_weights,
    qubo_energy,
    rbf_kernel,
)


@st.composite
def problems(draw: st.DrawFn) -> tuple:
    n = draw(st.integers(1, 6))
    k = draw(st.integers(1, 4))
    f = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.random((n, f))
    y = rng.random(n)
    params = {
        "k": k,
        "base": draw(st.floats(0.1, 3.0)),
        "k0": draw(st.floats(-2.0, 2.0)),
        "xi": draw(st.floats(0.0, 2.0)),
        "epsilon": draw(st.floats(0.0, 0.5)),
    }
    gamma = draw(st.floats(0.01, 5.0))
    bits = rng.integers(0, 2, size=(8, 2 * k * n))
    return x, y, gamma, params, bits


@settings(max_examples=200, deadline=None)
@given(problems())
def test_qubo_energy_equals_dual_objective_plus_penalty(problem: tuple) -> None:
    x, y, gamma, params, bits = problem
    kmat = rbf_kernel(x, x, gamma)
    q = build_svr_qubo(kmat, y, **params)
    alpha, alpha_hat = decode(bits, len(y), k=params["k"], base=params["base"], k0=params["k0"])
    expected = dual_objective(alpha, alpha_hat, kmat, y, epsilon=params["epsilon"], xi=params["xi"])
    np.testing.assert_allclose(qubo_energy(q, bits), expected, rtol=1e-9, atol=1e-9)


@settings(max_examples=50, deadline=None)
@given(problems())
def test_qubo_is_upper_triangular_and_dimod_energy_agrees(problem: tuple) -> None:
    x, y, gamma, params, bits = problem
    q = build_svr_qubo(rbf_kernel(x, x, gamma), y, **params)
    assert q.shape == (2 * params["k"] * len(y),) * 2
    assert np.all(np.tril(q, -1) == 0)
    bqm = dimod.BinaryQuadraticModel(q, "BINARY")
    np.testing.assert_allclose(bqm.energies((bits, range(q.shape[0]))), qubo_energy(q, bits), atol=1e-9)


def test_exact_solver_finds_the_brute_force_minimum_of_the_dual() -> None:
    rng = np.random.default_rng(7)
    n, k = 2, 2
    x, y = rng.random((n, 3)), rng.random(n)
    kmat = rbf_kernel(x, x, 0.5)
    q = build_svr_qubo(kmat, y, k=k, base=0.5, k0=0.0, xi=0.1, epsilon=0.05)
    best = min(
        itertools.product([0, 1], repeat=2 * k * n),
        key=lambda b: float(
            dual_objective(*decode(np.array(b), n, k=k, base=0.5, k0=0.0), kmat, y, epsilon=0.05, xi=0.1)
        ),
    )
    ss = dimod.ExactSolver().sample(dimod.BinaryQuadraticModel(q, "BINARY"))
    ground = np.array([ss.first.sample[i] for i in range(2 * k * n)])
    assert ss.first.energy == pytest.approx(float(qubo_energy(q, np.array(best))), abs=1e-12)
    assert qubo_energy(q, ground) == pytest.approx(ss.first.energy, abs=1e-12)


def test_precision_weights_follow_the_reference_encoding() -> None:
    np.testing.assert_allclose(precision_weights(3, 0.5, 0.005), 0.5 ** (np.arange(3) - 0.005))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, r"k must be an integer in \[1, 64\]"),
        ({"base": 0.0}, "base must be a finite number > 0"),
        ({"base": float("nan")}, "base must be a finite number > 0"),
        ({"xi": -1.0}, "xi must be a finite number >= 0"),
        ({"epsilon": float("inf")}, "epsilon must be a finite number >= 0"),
    ],
)
def test_build_svr_qubo_rejects_invalid_parameters(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_svr_qubo(np.eye(2), np.zeros(2), **kwargs)


def test_build_svr_qubo_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="kernel must be a square"):
        build_svr_qubo(np.ones((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match=r"y must have shape \(2,\)"):
        build_svr_qubo(np.eye(2), np.zeros(3))


def test_rbf_kernel_of_huge_or_infinite_rows_is_its_limit_not_nan() -> None:
    a = np.array([[1e308], [-1e308], [np.inf], [0.5]])
    b = np.array([[0.0], [1.0], [1e308]])
    with np.errstate(all="raise"):
        k = rbf_kernel(a, b, 0.5)
    expected = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0],
                         [np.exp(-0.125), np.exp(-0.125), 0.0]])
    np.testing.assert_array_equal(k, expected)
