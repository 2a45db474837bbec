"""QSVR: support-vector regression trained by sampling a QUBO (Pasetto et al. 2022).

A scikit-learn regressor. ``fit`` min-max scales X and y on the training data (y centred),
weights each input by its rank correlation with the target (``relevance_power``), builds the QUBO
of :mod:`qpu_gateway.qubo` on an RBF kernel plus a share of linear kernel (``linear_share``;
followed a little past the training box, ``linear_margin``, and faded for rows far outside it,
``linear_reach``), samples it with any ``dimod.Sampler`` (simulated annealing by default),
keeps the ``top_k`` distinct lowest-energy solutions as candidate members and combines them (by
default the ``robust`` ensemble: members whose training error is more than twice the best
member's are dropped, the rest weighted by their intact chains); ``predict`` answers in the
caller's units, optionally with the members' spread.
"""

from __future__ import annotations

import time
from typing import Any, Final, Protocol, runtime_checkable

import dimod
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from qpu_gateway.ensemble import ENSEMBLE_METHODS, member_weights, select_members
from qpu_gateway.qubo import build_svr_qubo, decode, dual_objective, precision_weights, rbf_kernel
from qpu_gateway.seeds import SA_SEED_BOUND, bounded_seed

__all__ = [
    "DEFAULT_ENSEMBLE",
    "DEFAULT_GAMMA",
    "DEFAULT_LINEAR_MARGIN",
    "DEFAULT_LINEAR_REACH",
    "DEFAULT_LINEAR_SHARE",
    "DEFAULT_NUM_SWEEPS",
    "DEFAULT_RELEVANCE_POWER",
    "DEFAULT_TOP_K",
    "PARAM_NAMES",
    "QSVR",
    "RELEVANCE_UNIFORM_SHARE",
    "STATE_FORMAT",
    "STATE_PARAM_NAMES",
    "STATE_VERSION",
    "DataRangeError",
    "DualSolver",
    "NonFiniteProblemError",
    "check_data_range",
    "relevance_weights",
]

DEFAULT_ENSEMBLE: Final = "robust"
# Sweeps per simulated-annealing read; chosen in benchmarks/README.md (R² vs Fit time).
DEFAULT_NUM_SWEEPS: Final = 100
# Candidate members per fit; ``robust`` keeps those that fit the training data about as well as
# the best (issue 14's measurements in benchmarks/README.md: more candidates, fewer bad splits,
# same Fit time).
DEFAULT_TOP_K: Final = 32
# Exponent p of the inputs' relevance weights |rho|**p (:func:`relevance_weights`), chosen in
# benchmarks/README.md (issue 14); 0 is the reference model (Pasetto et al.), as fitted before
# state version 3.
DEFAULT_RELEVANCE_POWER: Final = 32.0
# Share of uniform weight mixed into the relevance weights, so that no input drops out entirely
# (benchmarks/README.md, issue 14: better under both R² protocols than 0).
RELEVANCE_UNIFORM_SHARE: Final = 0.1
# Weight c of the kernel's linear part (:meth:`QSVR.kernel`), the RBF width that goes with it,
# how far (in training-box widths) the linear part follows an input past the training box
# (margin), and its reach: a row whose inputs lie e box widths outside the box keeps the share
# exp(-(e / reach)**2) of the linear part (reach 0: no attenuation). Chosen on 1000 splits of both
# R² protocols with the classical backend as proxy (benchmarks/README.md, issue 14): the strong
# linear part extends the training trend past the training targets (the published protocol's
# worst splits), the reach keeps it from extrapolating to outlier curves far outside the box
# (our protocol). ``linear_share=2, gamma=0.05`` with margin and reach 0 is the kernel of state
# version 4; ``linear_share=0, gamma=0.1`` the pure RBF kernel of the reference model (Pasetto et
# al.), as fitted before state version 4.
DEFAULT_LINEAR_SHARE: Final = 8.0
DEFAULT_GAMMA: Final = 0.02
DEFAULT_LINEAR_MARGIN: Final = 0.25
DEFAULT_LINEAR_REACH: Final = 2.0
STATE_FORMAT: Final = "qhpo.qsvr"
STATE_VERSION: Final = 5
# Version 1 (before the robust ensemble) lacks ``member_chain_break``; it loads with zeros.
# Versions 1 and 2 (before relevance weights and centred targets) lack ``feature_weights`` and
# ``y_offset``; they load with ones, ``relevance_power=0`` and ``y_offset = y_min``, which is
# what they computed. Versions 1 to 3 (before the linear kernel share) load with
# ``linear_share=0``; versions 1 to 4 (before the linear part's margin and reach) with
# ``linear_margin=0, linear_reach=0``.
_READABLE_VERSIONS: Final = (1, 2, 3, 4, 5)

# Hyperparameters of the model itself (everything but the sampler and the seed) that a Fit
# request carries (the fields of the wire's ``QSVRParams``).
PARAM_NAMES: Final = (
    "k", "base", "k0", "xi", "gamma", "epsilon", "c", "num_reads", "num_sweeps", "top_k", "ensemble",
    "relevance_power", "linear_share", "linear_margin", "linear_reach",
)
# Hyperparameters a checkpoint records (all of them are on the wire).
STATE_PARAM_NAMES: Final = PARAM_NAMES


class NonFiniteProblemError(ValueError):
    """The parameters or data give a QUBO with non-finite entries (overflow)."""


class DataRangeError(ValueError):
    """Training data float64 cannot fit: ``field`` (``x`` or ``y``) names it and
    ``description`` the rule it broke."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


def check_data_range(x: NDArray[np.float64], y: NDArray[np.float64]) -> None:
    """``DataRangeError`` when finite training data x: (N, F), y: (N,) overflow float64 once fitted.

    A column's range (max - min) must be finite, as the min-max scaling divides by it (after that
    every quantity of x is in the scaled units). y's ``N * range**2`` must be finite too: the
    members' spread that Predict answers squares deviations in y's units.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        x_span = np.ptp(x, axis=0)
        y_span = np.float64(np.ptp(y))
        y_squares = len(y) * y_span**2
    if not np.isfinite(x_span).all():
        j = int(np.flatnonzero(~np.isfinite(x_span))[0])
        raise DataRangeError("x", f"the range (max - min) of column {j} overflows float64")
    if not np.isfinite(y_span):
        raise DataRangeError("y", "the range of the values (max - min) overflows float64")
    if not np.isfinite(y_squares):
        raise DataRangeError(
            "y",
            f"the range of the values ({y_span:.3g}) is too large: rows * range**2 must stay "
            f"below {np.finfo(np.float64).max:.3g} (the spreads square deviations in y's "
            f"units), so at most {np.sqrt(np.finfo(np.float64).max / len(y)):.3g} for "
            f"{len(y)} rows; rescale y",
        )


@runtime_checkable
class DualSolver(Protocol):
    """A classical solver of the (continuous) SVR dual, usable in place of a sampler."""

    def solve_dual(
        self, kernel: NDArray[np.float64], y: NDArray[np.float64], *, c: float, epsilon: float
    ) -> tuple[NDArray[np.float64], float]:
        """kernel: (N, N), y: (N,) -> (alpha - alpha_hat, shape (N,), bias)."""
        ...


def _default_sampler() -> dimod.Sampler:
    from dwave.samplers import SimulatedAnnealingSampler

    return SimulatedAnnealingSampler()


def _minmax(a: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-column min and range (range 1 where a column is constant), for axis-0 scaling."""
    lo = a.min(axis=0)
    span = a.max(axis=0) - lo
    return lo, np.where(span > 0, span, 1.0)


def _seed_from(random_state: int | np.random.Generator | None) -> int | None:
    """The sampler seed of ``random_state``, in ``[0, 2^31)`` (what dwave-samplers' simulated
    annealing accepts): a Generator draws one; an int in ``[0, 2^64)`` is mapped
    deterministically by :func:`qpu_gateway.seeds.bounded_seed` (every seed through
    ``SeedSequence`` from ``2^31`` up, so no two nearby seeds alias)."""
    if random_state is None:
        return None
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, SA_SEED_BOUND))
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        if not 0 <= random_state < 2**64:
            raise ValueError(f"random_state must be in [0, 2**64), got {random_state}")
        return bounded_seed(int(random_state))
    raise TypeError(
        f"random_state must be None, an int or a numpy.random.Generator, got {type(random_state)!r}"
    )


def relevance_weights(
    xs: NDArray[np.float64], y: NDArray[np.float64], power: float
) -> NDArray[np.float64]:
    """Weights of the inputs in the kernel's squared distance, shape (F,), mean 1.

    ``w = (1 - s) * r + s`` with ``s`` = :data:`RELEVANCE_UNIFORM_SHARE` and ``r_j ∝
    |rho_j|**power`` (mean 1), ``rho_j`` the Spearman rank correlation of column j of ``xs``
    (N, F) with ``y`` (N,): a supervised scaling that lets the inputs that order the targets
    dominate the distance (for learning curves, the later epochs). A constant column has rho = 0.
    ``power=0``, a constant ``y`` or no correlated column give uniform weights.
    """
    f = xs.shape[1]
    if power == 0 or xs.shape[0] < 2:
        return np.ones(f)
    rx = rankdata(xs, axis=0)
    ry = rankdata(y)
    rx -= rx.mean(axis=0)
    ry -= ry.mean()
    norm = np.sqrt((rx**2).sum(axis=0) * (ry**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(norm > 0, (rx * ry[:, None]).sum(axis=0) / norm, 0.0)
    w = np.abs(rho) ** float(power)
    total = w.sum()
    if not (np.isfinite(total) and total > 0):
        return np.ones(f)
    return (1.0 - RELEVANCE_UNIFORM_SHARE) * w * (f / total) + RELEVANCE_UNIFORM_SHARE


def _member_bias(
    alpha: NDArray[np.float64],
    alpha_hat: NDArray[np.float64],
    f0: NDArray[np.float64],
    y: NDArray[np.float64],
    epsilon: float,
    c: float,
) -> NDArray[np.float64]:
    """Bias of each member from its free support vectors; all arrays (M, N) except y (N,).

    ``0 < alpha_n < C`` gives ``b = y_n - eps - f0_n`` and ``0 < alpha_hat_n < C`` gives
    ``b = y_n + eps - f0_n`` (f0 = kernel expansion without bias); b is their mean. A member with
    no free support vector falls back to the mean training residual ``mean(y - f0)``, the
    least-squares bias for its coefficients.
    """
    tol = 1e-12
    free_a = (alpha > tol) & (alpha < c - tol)
    free_h = (alpha_hat > tol) & (alpha_hat < c - tol)
    resid = y[None, :] - f0
    total = ((resid - epsilon) * free_a).sum(axis=1) + ((resid + epsilon) * free_h).sum(axis=1)
    count = free_a.sum(axis=1) + free_h.sum(axis=1)
    fallback = resid.mean(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), fallback)


class QSVR(RegressorMixin, BaseEstimator):
    """Quantum(-annealing) support-vector regression, an ensemble of QUBO solutions.

    Parameters
    ----------
    k : binary variables per dual coefficient (K).
    base, k0 : precision weights ``p_k = base**(k - k0)``.
    xi : penalty weight of ``sum(alpha - alpha_hat) = 0``.
    gamma : RBF kernel width on the min-max scaled, relevance-weighted inputs:
        ``k(x, x') = exp(-gamma * sum_j w_j (x_j - x'_j)**2)``.
    linear_share : weight c of a linear part added to the RBF kernel (:meth:`kernel`):
        ``+ c / F * s(x) s(x') sum_j w_j (u_j - m_j)(u'_j - m_j)`` with ``u`` the scaled input
        clipped to the training box [0, 1] widened by ``linear_margin``, ``m`` the training
        inputs' mean and ``s`` the attenuation of ``linear_reach``; 0 is the pure RBF kernel.
    linear_margin : how far past the training box (in box widths) the linear part follows an
        input before it is clipped; 0 clips at the box.
    linear_reach : a row whose inputs lie ``e`` box widths outside the training box (the largest
        excursion over its inputs) keeps the share ``s = exp(-(e / reach)**2)`` of the linear
        part: the trend is extended just past the training data, not to inputs far outside it
        (outlier curves), where the prediction falls back to the RBF part. Training rows have
        ``s = 1``, so the QUBO does not depend on it. 0: no attenuation (``s = 1``).
    epsilon : epsilon-insensitive tube on min-max scaled targets.
    c : box bound C used to tell free support vectors (``0 < alpha < C``) for the bias; ``None``
        means the largest coefficient the encoding represents, ``sum_k p_k``.
    num_reads : samples requested from the sampler.
    num_sweeps : sweeps per read, passed to samplers that take it (simulated annealing).
    top_k : distinct lowest-energy solutions taken as candidate ensemble members.
    ensemble : ``robust`` (default: drop the members whose training error is more than twice the
        best member's, weight the rest by ``1 - chain-break fraction``), ``mean``, ``best``,
        ``energy_softmax`` or ``inverse_error`` (see :func:`qpu_gateway.ensemble.member_weights`).
        ``robust`` keeps only the members it weights (and its spread is theirs); the others keep
        all ``top_k``.
    relevance_power : exponent p of the input weights ``w_j ∝ |rho_j|**p`` (mean 1), rho_j the
        Spearman correlation of min-max scaled input j with the target on the training data
        (:func:`relevance_weights`); 0 weights every input alike. The reference model is
        ``relevance_power=0, linear_share=0, gamma=0.1``.
    sampler : a ``dimod.Sampler``; ``None`` means dwave-samplers' simulated annealing. A
        :class:`DualSolver` (e.g. the ``classical`` backend) instead yields one member with the
        exact continuous solution.
    random_state : seed (int) or ``numpy.random.Generator`` for the sampler; ``None``: fresh.

    Attributes
    ----------
    x_train_ : (N, F) scaled, weighted training inputs.
    feature_weights_ : (F,) the weights ``w_j`` of the inputs (ones for ``relevance_power=0``).
    dual_coef_ : (M, N) ``alpha - alpha_hat`` of each member.
    intercept_ : (M,) bias of each member (scaled units).
    member_energies_ : (M,) QUBO energies, ascending.
    c_ : the box bound C in effect.
    member_train_mse_ : (M,) mean squared error of each member on the scaled training targets.
    member_chain_break_ : (M,) chain-break fraction of each member's sample: the fewest among the
        reads that returned it (0 off the QPU path).
    weights_ : (M,) combination weights.
    x_min_, x_scale_ : (F,) input scaling; y_min_, y_scale_ : minimum and range of the training
        targets; y_offset_ : their midrange, so that the QUBO's targets are
        ``(y - y_offset_) / y_scale_``, in [-1/2, 1/2].
    train_r2_ : R² of the ensemble on the training data.
    fit_stats_ : dict with build_seconds, sample_seconds, num_variables, num_reads,
        distinct_solutions, best_energy, candidates (members before the ``robust`` rejection),
        and ``sampler_stats`` (scalars a backend reports).
    """

    def __init__(
        self,
        k: int = 3,
        base: float = 0.5,
        k0: float = 0.005,
        xi: float = 0.01,
        gamma: float = DEFAULT_GAMMA,
        epsilon: float = 0.02,
        c: float | None = None,
        num_reads: int = 1000,
        num_sweeps: int | None = DEFAULT_NUM_SWEEPS,
        top_k: int = DEFAULT_TOP_K,
        ensemble: str = DEFAULT_ENSEMBLE,
        relevance_power: float = DEFAULT_RELEVANCE_POWER,
        linear_share: float = DEFAULT_LINEAR_SHARE,
        linear_margin: float = DEFAULT_LINEAR_MARGIN,
        linear_reach: float = DEFAULT_LINEAR_REACH,
        sampler: dimod.Sampler | None = None,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.k = k
        self.base = base
        self.k0 = k0
        self.xi = xi
        self.gamma = gamma
        self.epsilon = epsilon
        self.c = c
        self.num_reads = num_reads
        self.num_sweeps = num_sweeps
        self.top_k = top_k
        self.ensemble = ensemble
        self.relevance_power = relevance_power
        self.linear_share = linear_share
        self.linear_margin = linear_margin
        self.linear_reach = linear_reach
        self.sampler = sampler
        self.random_state = random_state

    def _check_params(self) -> None:
        """Validate hyperparameters; ``ValueError``/``TypeError`` names the parameter."""
        precision_weights(self.k, self.base, self.k0)
        for name in ("xi", "epsilon"):
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.number)) or not np.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if not isinstance(self.gamma, (int, float, np.number)) or not (
            np.isfinite(self.gamma) and self.gamma > 0
        ):
            raise ValueError(f"gamma must be a finite number > 0, got {self.gamma!r}")
        rp = self.relevance_power
        if not isinstance(rp, (int, float, np.number)) or isinstance(rp, bool) or not (
            np.isfinite(rp) and rp >= 0
        ):
            raise ValueError(f"relevance_power must be a finite number >= 0, got {rp!r}")
        for name in ("linear_share", "linear_margin", "linear_reach"):
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.number)) or isinstance(v, bool) or not (
                np.isfinite(v) and v >= 0
            ):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.c is not None and not (np.isfinite(self.c) and self.c > 0):
            raise ValueError(f"c must be a finite number > 0 or None, got {self.c!r}")
        for name, lo in (("num_reads", 1), ("top_k", 1)):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        if self.num_sweeps is not None and (
            not isinstance(self.num_sweeps, (int, np.integer)) or self.num_sweeps < 1
        ):
            raise ValueError(f"num_sweeps must be an integer >= 1 or None, got {self.num_sweeps!r}")
        if self.ensemble not in ENSEMBLE_METHODS:
            raise ValueError(
                f"ensemble must be one of {', '.join(ENSEMBLE_METHODS)}; got {self.ensemble!r}"
            )
        if self.sampler is not None and not (
            hasattr(self.sampler, "sample") or isinstance(self.sampler, DualSolver)
        ):
            raise TypeError(
                f"sampler must be a dimod.Sampler or a DualSolver, got {type(self.sampler)!r}"
            )

    def _sample_kwargs(self, sampler: dimod.Sampler, **extra: Any) -> dict[str, Any]:
        accepted = getattr(sampler, "parameters", {})
        kwargs: dict[str, Any] = {}
        if "num_reads" in accepted:
            kwargs["num_reads"] = int(self.num_reads)
        if "num_sweeps" in accepted and self.num_sweeps is not None:
            kwargs["num_sweeps"] = int(self.num_sweeps)
        seed = _seed_from(self.random_state)
        if "seed" in accepted and seed is not None:
            kwargs["seed"] = seed
        kwargs.update({k: v for k, v in extra.items() if k in accepted and v is not None})
        return kwargs

    def fit(self, X: ArrayLike, y: ArrayLike, **sample_kwargs: Any) -> QSVR:
        """Fit the ensemble. X: (N, F), y: (N,). Returns self.

        ``sample_kwargs`` go to the sampler when it declares them in ``sampler.parameters``
        (e.g. ``timeout`` or ``interrupt_function``); others are ignored.
        """
        self._check_params()
        X, y = validate_data(self, X, y, y_numeric=True, dtype=np.float64)
        check_data_range(X, y)
        x_min, x_scale = _minmax(X)
        y_min, y_scale = _minmax(y[:, None])
        xs = (X - x_min) / x_scale
        # Centred targets (in [-1/2, 1/2]): the QUBO has no bias, and the soft penalty on
        # sum(beta) = 0 would otherwise let the targets' offset pull every coefficient one way.
        y_offset = float(y_min[0] + y_scale[0] / 2)
        ys = (y - y_offset) / y_scale[0]
        feature_weights = relevance_weights(xs, ys, float(self.relevance_power))
        xs = xs * np.sqrt(feature_weights)
        n = xs.shape[0]
        k = int(self.k)

        t0 = time.perf_counter()
        kmat = self._kernel(xs, xs, xs.mean(axis=0), np.sqrt(feature_weights))
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
            q = build_svr_qubo(
                kmat, ys, k=k, base=self.base, k0=self.k0, xi=self.xi, epsilon=self.epsilon
            )
            bound = np.abs(q).sum()  # bounds |energy| of every sample
        if not np.isfinite(bound):
            raise NonFiniteProblemError(
                "the QUBO's energies overflow float64: xi, epsilon or the precision weights are too large"
            )
        bqm = dimod.BinaryQuadraticModel(q, "BINARY")
        build_seconds = time.perf_counter() - t0

        sampler = self.sampler if self.sampler is not None else _default_sampler()
        c = float(precision_weights(k, self.base, self.k0).sum()) if self.c is None else self.c
        t0 = time.perf_counter()
        if isinstance(sampler, DualSolver):
            beta_1, bias_1 = sampler.solve_dual(kmat, ys, c=c, epsilon=float(self.epsilon))
            sample_seconds = time.perf_counter() - t0
            beta = np.asarray(beta_1, dtype=np.float64)[None, :]
            energies = np.atleast_1d(dual_objective(
                np.maximum(beta, 0), np.maximum(-beta, 0), kmat, ys, epsilon=self.epsilon, xi=self.xi
            ))
            bias = np.array([bias_1])
            chain_break = np.zeros(1)
            n_reads, n_distinct, sampler_stats = 1, 1, {}
        else:
            sampleset = sampler.sample(bqm, **self._sample_kwargs(sampler, **sample_kwargs))
            if not isinstance(sampleset, dimod.SampleSet):
                raise TypeError(
                    f"sampler.sample must return a dimod.SampleSet, got {type(sampleset).__name__}"
                )
            sampleset.resolve()
            sample_seconds = time.perf_counter() - t0
            members, energies, n_distinct, chain_break = select_members(
                sampleset, int(self.top_k), range(2 * k * n)
            )
            alpha, alpha_hat = decode(members, n, k=k, base=self.base, k0=self.k0)
            beta = alpha - alpha_hat
            bias = _member_bias(alpha, alpha_hat, beta @ kmat, ys, float(self.epsilon), c)
            n_reads = len(sampleset)
            sampler_stats = dict(sampleset.info.get("qhpo_stats", {}))
        if not (np.isfinite(energies).all() and np.isfinite(bias).all()):
            raise NonFiniteProblemError(
                "sample energies or biases overflow: xi, epsilon or the precision weights are too large"
            )
        f0 = beta @ kmat
        train_pred = f0 + bias[:, None]
        train_mse = ((train_pred - ys[None, :]) ** 2).mean(axis=1)
        weights = member_weights(self.ensemble, energies, train_mse, chain_break)
        candidates, best_energy = len(weights), float(energies[0])
        if self.ensemble == "robust":  # the rejected members leave the model (and its spread)
            kept = weights > 0
            beta, bias, energies = beta[kept], bias[kept], energies[kept]
            train_mse, chain_break, weights = train_mse[kept], chain_break[kept], weights[kept]

        self.c_ = c
        self.x_train_ = xs
        self.feature_weights_ = feature_weights
        self.dual_coef_ = beta
        self.intercept_ = bias
        self.member_energies_ = energies
        self.member_train_mse_ = train_mse
        self.member_chain_break_ = chain_break
        self.weights_ = weights
        self.x_min_, self.x_scale_ = x_min, x_scale
        self.y_min_, self.y_scale_ = float(y_min[0]), float(y_scale[0])
        self.y_offset_ = y_offset
        self.train_r2_ = _r2(ys, self.weights_ @ self._scaled_members(xs))
        self.fit_stats_ = {
            "build_seconds": build_seconds,
            "sample_seconds": sample_seconds,
            "num_variables": 2 * k * n,
            "num_reads": n_reads,
            "distinct_solutions": n_distinct,
            "best_energy": best_energy,
            "candidates": candidates,
            "sampler_stats": sampler_stats,
        }
        return self

    def _kernel(
        self,
        a: NDArray[np.float64],
        b: NDArray[np.float64],
        center: NDArray[np.float64],
        upper: NDArray[np.float64],
    ) -> NDArray[np.float64]:
        k = rbf_kernel(a, b, float(self.gamma))
        share = float(self.linear_share)
        if share > 0:
            k += (share / a.shape[1]) * (self._linear_features(a, center, upper)
                                         @ self._linear_features(b, center, upper).T)
        return k

    def _linear_features(
        self, a: NDArray[np.float64], center: NDArray[np.float64], upper: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """The linear part's feature map of rows a: (n, F) -> (n, F), ``s(x) (u(x) - m)``."""
        margin = float(self.linear_margin)
        u = np.clip(a, -margin * upper, (1.0 + margin) * upper) - center
        reach = float(self.linear_reach)
        if reach > 0:
            with np.errstate(over="ignore", invalid="ignore"):
                rel = a / upper  # in training-box widths, box [0, 1]
                excursion = np.maximum(rel - 1.0, -rel).max(axis=1, initial=0.0)
                u *= np.exp(-((np.maximum(excursion, 0.0) / reach) ** 2))[:, None]
        return u

    def kernel(self, a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
        """The fitted kernel between scaled, weighted inputs a: (n, F) and b: (m, F) -> (n, m).

        ``exp(-gamma * ||a - b||**2) + linear_share / F * s_a s_b (u_a - m) . (u_b - m)``, where
        ``u`` clips each input to the training box (``[0, sqrt(w_j)]`` after weighting) widened by
        ``linear_margin`` box widths on either side, ``m`` is the training inputs' mean and ``s =
        exp(-(e / linear_reach)**2)`` (1 for ``linear_reach=0``), ``e`` the row's largest
        excursion outside the box in box widths: the linear part extends the trend of the training
        data to inputs beyond the training curves (where the RBF part falls back to the bias),
        a little past the box, and fades for rows far outside it. A kernel: the linear part is the
        inner product of the feature map ``s (u - m)``.
        """
        check_is_fitted(self, "dual_coef_")
        return self._kernel(
            np.asarray(a, dtype=np.float64),
            np.asarray(b, dtype=np.float64),
            self.x_train_.mean(axis=0),
            np.sqrt(self.feature_weights_),
        )

    def predict_members(self, X: ArrayLike) -> NDArray[np.float64]:
        """Predictions of every member in the caller's units, shape (M, rows)."""
        check_is_fitted(self, "dual_coef_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        with np.errstate(over="ignore"):  # a row far outside the box: inf, the kernel's limit
            xs = (X - self.x_min_) / self.x_scale_ * np.sqrt(self.feature_weights_)
        return self._scaled_members(xs) * self.y_scale_ + self.y_offset_

    def _scaled_members(self, xs: NDArray[np.float64]) -> NDArray[np.float64]:
        """Every member's predictions for scaled, weighted inputs, in the QUBO's target units."""
        kx = self.kernel(self.x_train_, xs)
        return self.dual_coef_ @ kx + self.intercept_[:, None]

    def predict(
        self, X: ArrayLike, return_std: bool = False
    ) -> NDArray[np.float64] | tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Weighted ensemble prediction, shape (rows,).

        With ``return_std`` also the members' spread: the unweighted standard deviation of the
        member predictions, shape (rows,), so that it measures disagreement whatever the weights.
        """
        members = self.predict_members(X)
        mean = self.weights_ @ members
        if not return_std:
            return mean
        return mean, members.std(axis=0)

    def get_state(self) -> dict[str, Any]:
        """Versioned, JSON-serialisable checkpoint of a fitted model (no sampler, no pickle)."""
        check_is_fitted(self, "dual_coef_")
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "params": {name: getattr(self, name) for name in STATE_PARAM_NAMES},
            "n_features_in": int(self.n_features_in_),
            "c": self.c_,
            "x_train": self.x_train_.tolist(),
            "feature_weights": self.feature_weights_.tolist(),
            "dual_coef": self.dual_coef_.tolist(),
            "intercept": self.intercept_.tolist(),
            "member_energies": self.member_energies_.tolist(),
            "member_train_mse": self.member_train_mse_.tolist(),
            "member_chain_break": self.member_chain_break_.tolist(),
            "weights": self.weights_.tolist(),
            "x_min": self.x_min_.tolist(),
            "x_scale": self.x_scale_.tolist(),
            "y_min": self.y_min_,
            "y_scale": self.y_scale_,
            "y_offset": self.y_offset_,
            "train_r2": self.train_r2_,
            "fit_stats": dict(self.fit_stats_),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> QSVR:
        """Rebuild a fitted model from :meth:`get_state`'s dict (this version or an older one)."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"state format must be {STATE_FORMAT!r}, got {state.get('format')!r}")
        if state.get("version") not in _READABLE_VERSIONS:
            raise ValueError(
                f"state version {state.get('version')!r} is not supported (readable: "
                f"{', '.join(map(str, _READABLE_VERSIONS))})"
            )
        params = dict(state["params"])
        if state["version"] < 3:  # fitted before relevance weights: plain min-max scaling
            params["relevance_power"] = 0.0
        if state["version"] < 4:  # fitted before the linear kernel share: pure RBF
            params["linear_share"] = 0.0
        if state["version"] < 5:  # fitted before the linear part's margin and reach
            params["linear_margin"] = 0.0
            params["linear_reach"] = 0.0
        model = cls(**params)
        model.n_features_in_ = int(state["n_features_in"])
        model.c_ = float(state["c"])
        model.x_train_ = np.asarray(state["x_train"], dtype=np.float64).reshape(
            -1, model.n_features_in_
        )
        model.feature_weights_ = np.asarray(
            state.get("feature_weights", np.ones(model.n_features_in_)), dtype=np.float64
        )
        model.dual_coef_ = np.asarray(state["dual_coef"], dtype=np.float64).reshape(
            -1, model.x_train_.shape[0]
        )
        model.intercept_ = np.asarray(state["intercept"], dtype=np.float64)
        model.member_energies_ = np.asarray(state["member_energies"], dtype=np.float64)
        model.member_train_mse_ = np.asarray(state["member_train_mse"], dtype=np.float64)
        model.member_chain_break_ = np.asarray(
            state.get("member_chain_break", np.zeros(len(model.intercept_))), dtype=np.float64
        )
        model.weights_ = np.asarray(state["weights"], dtype=np.float64)
        model.x_min_ = np.asarray(state["x_min"], dtype=np.float64)
        model.x_scale_ = np.asarray(state["x_scale"], dtype=np.float64)
        model.y_min_ = float(state["y_min"])
        model.y_scale_ = float(state["y_scale"])
        model.y_offset_ = float(state.get("y_offset", model.y_min_))
        model.train_r2_ = float(state["train_r2"])
        model.fit_stats_ = dict(state["fit_stats"])
        return model


def _r2(y: NDArray[np.float64], pred: NDArray[np.float64]) -> float:
    """R² of ``pred`` against ``y``; the same in any affine units of both (the fit computes it
    on the scaled targets, where the squares cannot overflow)."""
    ss_res = float(((y - pred) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
