"""Adaptive configuration selection: searchers that decide *which* configuration runs next.

A scheduler (:mod:`hpo_node.core`) decides how long a configuration trains; a :class:`Searcher`
proposes the configurations. The interface is engine-agnostic:

* :meth:`Searcher.suggest` returns a new configuration of the :class:`SearchSpace`, marked pending;
* :meth:`Searcher.select` picks the best of a finite list of candidate configurations (the replay
  simulator's search space is the table: it passes the rows not yet used), marked pending;
* :meth:`Searcher.observe` records ``(config, resource, loss)`` after any unit of resource, not only
  final results (multi-fidelity);
* :meth:`Searcher.release` ends a configuration's pending state (its trial paused or stopped).

A configuration is never proposed again while it is pending (the slides' rule for parallel workers:
never evaluate the same θ twice at once). Model-based searchers fit their model, as in BOHB (Falkner
et al. 2018, ICML), on the highest resource level that has at least ``min_points`` observations;
below that they choose at random.

Searchers: ``random``; ``tpe`` (Bergstra et al. 2011, NeurIPS: split the observations at the
quantile γ of the loss, Parzen estimators l(x) for the good and g(x) for the others, maximise
l(x)/g(x); multivariate product kernels as in BOHB, Aitchison–Aitken kernels for categorical
parameters); ``gp-ei`` (a Gaussian process with expected improvement; pending configurations enter
the model with the "constant liar" value, which collapses the posterior variance there, so the
acquisition avoids them); ``evolution`` (uniform crossover of two of the fittest configurations plus
Gaussian / resampling mutation; among finite candidates the one nearest to the child is chosen).

Libraries: the Gaussian process is scikit-learn's ``GaussianProcessRegressor`` (maintained, exact
inference, marginal-likelihood fit of the kernel). TPE is implemented here rather than through
Optuna's ``TPESampler``: the replay must *score a given finite set of candidates*, which Optuna's
ask/tell interface cannot do (its Parzen estimator is private), and Optuna's sampler keeps its state
in a study storage rather than in our versioned JSON checkpoint.

:meth:`Searcher.state_dict` is a versioned JSON-serialisable checkpoint (observations, pending
configurations and the ``numpy.random.Generator`` state); loading it into a searcher built with the
same arguments resumes the proposals identically.
"""

from __future__ import annotations

import json
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from hpo_node.core import check_choice, check_float, check_int

SEARCH_STATE_VERSION = 1
SEARCHERS = ("random", "tpe", "gp-ei", "evolution")

FloatArray = NDArray[np.float64]
Config = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Search space: every parameter maps to one column of an encoded matrix. Float and Int columns
# live in [0, 1] (log scale where asked); a Categorical column holds the index of the choice.


@dataclass(frozen=True)
class Float:
    """A real parameter in ``[low, high]``, uniform or log-uniform."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        check_float("low", self.low, -math.inf, math.inf, low_open=True, high_open=True)
        check_float("high", self.high, -math.inf, math.inf, low_open=True, high_open=True)
        if not self.high > self.low:
            raise ValueError(f"high must be > low ({self.low}), got {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"low must be > 0 for a log scale, got {self.low}")


@dataclass(frozen=True)
class Int(Float):
    """An integer parameter in ``[low, high]`` (both included)."""

    def __post_init__(self) -> None:
        for name in ("low", "high"):
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float | np.integer | np.floating)
                or not math.isfinite(v)
                or float(v) != int(v)
            ):
                raise TypeError(f"{name} must be an integer, got {v!r}")
        super().__post_init__()


@dataclass(frozen=True)
class Categorical:
    """One of ``choices`` (JSON scalars); no order is assumed."""

    choices: tuple[Any, ...]

    def __post_init__(self) -> None:
        if len(self.choices) < 1:
            raise ValueError(f"choices must hold at least 1 value, got {self.choices!r}")
        if len(set(map(_key, self.choices))) != len(self.choices):
            raise ValueError(f"choices must be distinct, got {self.choices!r}")


Param = Float | Int | Categorical


def _int_edges(p: Int) -> tuple[float, float]:
    """The encoded axis of an :class:`Int`: ``[low, high + 1)``, each integer a bin of equal
    width (in log space with ``log``), so a uniform ``u`` draws every integer equally often (the
    ends included: rounding ``low + u (high - low)`` gives them half the weight)."""
    lo, hi = float(p.low), float(p.high) + 1.0
    return (math.log(lo), math.log(hi)) if p.log else (lo, hi)


def _int_decode(p: Int, x: float) -> int:
    lo, hi = _int_edges(p)
    v = lo + x * (hi - lo)
    return min(max(math.floor(math.exp(v) if p.log else v), int(p.low)), int(p.high))


def _int_encode(p: Int, v: float) -> float:
    """The centre of ``v``'s bin (geometric with ``log``)."""
    lo, hi = _int_edges(p)
    centre = 0.5 * (math.log(v) + math.log(v + 1.0)) if p.log else v + 0.5
    return (centre - lo) / (hi - lo)


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


class AllPending(RuntimeError):
    """Every configuration a searcher could propose is pending (a small discrete space)."""


class SearchSpace:
    """Named parameters, and the encoding of configurations into a numeric matrix."""

    def __init__(self, params: Mapping[str, Param]) -> None:
        if not isinstance(params, Mapping) or not params:
            raise ValueError(f"params must be a non-empty mapping of name -> parameter, got {params!r}")
        for name, p in params.items():
            if not isinstance(p, Float | Categorical):
                raise TypeError(f"params[{name!r}] must be Float, Int or Categorical, got {p!r}")
        self.params: dict[str, Param] = dict(params)
        self.names = tuple(self.params)
        self.categorical = np.array([isinstance(p, Categorical) for p in self.params.values()])
        self.n_choices = np.array(
            [len(p.choices) if isinstance(p, Categorical) else 0 for p in self.params.values()]
        )

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def size(self) -> int | None:
        """Number of distinct configurations; ``None`` when a continuous parameter makes it infinite."""
        out = 1
        for p in self.params.values():
            if isinstance(p, Categorical):
                out *= len(p.choices)
            elif isinstance(p, Int):
                out *= int(p.high) - int(p.low) + 1
            else:
                return None
        return out

    @classmethod
    def from_table(
        cls, hparams: FloatArray, names: Sequence[str], categorical: Sequence[str] = ()
    ) -> SearchSpace:
        """The space spanned by a replay table's columns.

        ``categorical`` columns (codes) and constant columns become :class:`Categorical`, columns of
        whole numbers :class:`Int`, the others :class:`Float` — log-scaled when positive, spanning
        at least two decades and with the median in the lowest tenth of the range (values spread
        on a log scale).
        """
        h = np.asarray(hparams, dtype=np.float64)
        params: dict[str, Param] = {}
        for j, name in enumerate(names):
            col = h[:, j]
            lo, hi = float(col.min()), float(col.max())
            if name in categorical or lo == hi:
                params[name] = Categorical(tuple(float(v) for v in np.unique(col)))
            elif np.all(col == np.round(col)):
                params[name] = Int(int(lo), int(hi))
            else:
                log = lo > 0 and hi / lo >= 100 and float(np.median(col)) < lo + 0.1 * (hi - lo)
                params[name] = Float(lo, hi, log=log)
        return cls(params)

    def encode(self, configs: Sequence[Mapping[str, Any]]) -> FloatArray:
        """Configurations -> ``(n, dim)`` matrix."""
        out = np.empty((len(configs), self.dim))
        for j, (name, p) in enumerate(self.params.items()):
            for i, c in enumerate(configs):
                if name not in c:
                    raise ValueError(f"config must set every parameter, {name!r} missing in {c!r}")
                v = c[name]
                if isinstance(p, Categorical):
                    keys = [_key(x) for x in p.choices]
                    if _key(v) not in keys:
                        raise ValueError(f"{name} must be one of {p.choices!r}, got {v!r}")
                    out[i, j] = keys.index(_key(v))
                elif isinstance(p, Int):
                    out[i, j] = _int_encode(p, v)
                elif p.log:
                    out[i, j] = (math.log(v) - math.log(p.low)) / (math.log(p.high) - math.log(p.low))
                else:
                    out[i, j] = (v - p.low) / (p.high - p.low)
        return out

    def decode(self, u: FloatArray) -> Config:
        """One encoded row -> configuration (clipped to the bounds, integers rounded)."""
        out: Config = {}
        for j, (name, p) in enumerate(self.params.items()):
            if isinstance(p, Categorical):
                out[name] = p.choices[int(u[j])]
                continue
            x = float(np.clip(u[j], 0.0, 1.0))
            if isinstance(p, Int):
                out[name] = _int_decode(p, x)
                continue
            if p.log:
                v = math.exp(math.log(p.low) + x * (math.log(p.high) - math.log(p.low)))
            else:
                v = p.low + x * (p.high - p.low)
            out[name] = min(max(v, p.low), p.high)
        return out

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        """``n`` encoded configurations drawn uniformly (log-uniformly on log scales)."""
        u = rng.random((n, self.dim))
        cat = self.categorical
        u[:, cat] = np.floor(u[:, cat] * self.n_choices[cat])
        return u

    def distance(self, u: FloatArray, v: FloatArray) -> FloatArray:
        """Distance of each row of ``u`` to the point ``v``: Euclidean on the numeric columns,
        plus one per differing categorical column."""
        cat = self.categorical
        num = np.sqrt(((u[:, ~cat] - v[~cat]) ** 2).sum(axis=1))
        return num + (u[:, cat] != v[cat]).sum(axis=1)


# ---------------------------------------------------------------------------------------------


class Searcher(ABC):
    """Base of every searcher: observations, pending configurations, proposal and checkpoint.

    Subclasses implement :meth:`_score` (higher is better, given the fitted training data) and may
    override :meth:`_candidates` (what :meth:`suggest` scores in an open space).
    """

    name: ClassVar[str] = "base"

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int = 0,
        min_points: int | None = None,
        n_candidates: int = 64,
    ) -> None:
        if not isinstance(space, SearchSpace):
            raise TypeError(f"space must be a SearchSpace, got {type(space).__name__}")
        self.space = space
        self.seed = check_int("seed", seed, 0)
        self.min_points = check_int(
            "min_points", space.dim + 1 if min_points is None else min_points, 2
        )
        self.n_candidates = check_int("n_candidates", n_candidates, 1)
        self._rng = np.random.default_rng(self.seed)
        self._obs: dict[int, dict[str, tuple[Config, float]]] = {}
        self._pending: dict[str, Config] = {}

    # -- public interface --------------------------------------------------------------------

    def suggest(self) -> Config:
        """A new configuration of the space (never one that is pending); it becomes pending."""
        data = self._training_data()
        u = self._candidates(data, self.n_candidates)
        scores = self._score_open(data, u) if data is not None else self._rng.random(len(u))
        configs = [self.space.decode(row) for row in u]
        i = self._best(scores, configs)
        if i is None:
            u = self.space.sample(self._rng, 16 * self.n_candidates)
            configs = [self.space.decode(row) for row in u]
            i = self._best(np.zeros(len(u)), configs)
        if i is None:
            raise AllPending(
                f"{self.name}: every candidate configuration is pending "
                f"({len(self._pending)} pending); release one first"
            )
        return self._mark(configs[i])

    def select(self, candidates: Sequence[Mapping[str, Any]]) -> int:
        """Index of the best of ``candidates`` (first on ties); that configuration becomes pending.

        Candidates equal to a pending configuration are skipped; :class:`AllPending` if all are.
        """
        if len(candidates) == 0:
            raise ValueError("candidates must hold at least 1 configuration, got 0")
        configs = [dict(c) for c in candidates]
        u = self.space.encode(configs)
        data = self._training_data()
        scores = self._score_finite(data, u) if data is not None else self._rng.random(len(u))
        i = self._best(scores, configs)
        if i is None:
            raise AllPending(f"{self.name}: every one of the {len(configs)} candidates is pending")
        self._mark(configs[i])
        return i

    def observe(self, config: Mapping[str, Any], resource: int, loss: float) -> None:
        """Record the loss of ``config`` after ``resource`` units (the latest value counts)."""
        r = check_int("resource", resource, 1)
        loss = float(loss)
        if not math.isfinite(loss):
            raise ValueError(f"loss must be finite, got {loss}")
        c = dict(config)
        self.space.encode([c])
        self._obs.setdefault(r, {})[_key(c)] = (c, loss)

    def release(self, config: Mapping[str, Any]) -> None:
        """``config`` is no longer being evaluated (its trial paused, stopped or failed)."""
        self._pending.pop(_key(dict(config)), None)

    def hold(self, config: Mapping[str, Any]) -> None:
        """``config`` is being evaluated again (its paused trial resumed): pending again."""
        c = dict(config)
        self.space.encode([c])
        self._mark(c)

    @property
    def pending(self) -> list[Config]:
        return [dict(c) for c in self._pending.values()]

    def model_resource(self) -> int | None:
        """Highest resource with at least ``min_points`` observations (``None``: none yet)."""
        full = [r for r, obs in self._obs.items() if len(obs) >= self.min_points]
        return max(full) if full else None

    def state_dict(self) -> dict[str, Any]:
        """Versioned JSON-serialisable checkpoint."""
        return {
            "version": SEARCH_STATE_VERSION,
            "searcher": self.name,
            "rng": self._rng.bit_generator.state,
            "observations": [
                [r, c, loss] for r, obs in self._obs.items() for c, loss in obs.values()
            ],
            "pending": list(self._pending.values()),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a checkpoint made by :meth:`state_dict` of the same searcher."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping, got {type(state).__name__}")
        if state.get("version") != SEARCH_STATE_VERSION:
            raise ValueError(
                f"state version must be {SEARCH_STATE_VERSION}, got {state.get('version')!r}"
            )
        if state.get("searcher") != self.name:
            raise ValueError(f"state searcher must be {self.name!r}, got {state.get('searcher')!r}")
        self._rng = np.random.default_rng(self.seed)
        self._rng.bit_generator.state = state["rng"]
        self._obs = {}
        for r, c, loss in state["observations"]:
            self._obs.setdefault(int(r), {})[_key(c)] = (dict(c), float(loss))
        self._pending = {_key(c): dict(c) for c in state["pending"]}

    # -- helpers -------------------------------------------------------------------------------

    def _training_data(self) -> tuple[FloatArray, FloatArray] | None:
        r = self.model_resource()
        if r is None:
            return None
        obs = list(self._obs[r].values())
        return self.space.encode([c for c, _ in obs]), np.array([loss for _, loss in obs])

    def _best(self, scores: FloatArray, configs: Sequence[Config]) -> int | None:
        s = np.where(np.isnan(scores), -np.inf, np.asarray(scores, dtype=np.float64))
        for i in np.argsort(-s, kind="stable"):
            if _key(configs[i]) not in self._pending:
                return int(i)
        return None

    def _mark(self, config: Config) -> Config:
        self._pending[_key(config)] = config
        return dict(config)

    def _candidates(self, data: tuple[FloatArray, FloatArray] | None, n: int) -> FloatArray:
        return self.space.sample(self._rng, n)

    def _score_open(self, data: tuple[FloatArray, FloatArray], u: FloatArray) -> FloatArray:
        return self._score(data, u)

    def _score_finite(self, data: tuple[FloatArray, FloatArray], u: FloatArray) -> FloatArray:
        return self._score(data, u)

    @abstractmethod
    def _score(self, data: tuple[FloatArray, FloatArray], u: FloatArray) -> FloatArray: ...


class RandomSearcher(Searcher):
    """Uniform random configurations; among finite candidates a uniform random choice."""

    name: ClassVar[str] = "random"

    def _training_data(self) -> tuple[FloatArray, FloatArray] | None:
        return None

    def _score(self, data: tuple[FloatArray, FloatArray], u: FloatArray) -> FloatArray:
        return self._rng.random(len(u))


class TPESearcher(Searcher):
    """Tree-structured Parzen Estimator (Bergstra et al. 2011; multivariate kernels as in BOHB).

    The best ``ceil(gamma n)`` observations at the model resource form l(x), the others g(x).
    Numeric columns use Gaussian kernels with Scott's bandwidth, at least ``1 / min(100, n + 1)``
    of the range for ``n`` observations (Optuna's rule) and ``min_bandwidth``; categorical ones
    Aitchison–Aitken kernels. Each estimator also mixes in the uniform prior with the weight of one
    observation (as Optuna does), which keeps unexplored regions attractive instead of collapsing on
    the first good point. :meth:`suggest` samples ``n_candidates`` from l(x) (values leaving
    ``[0, 1]`` are reflected back) and returns the one maximising l(x)/g(x). :meth:`select` does
    the same on a finite set: each sample from l(x) is replaced by its nearest candidate, and the
    best of those by l(x)/g(x) wins. (Scoring every candidate by l/g alone would favour regions
    with no observation at all, where the ratio tends to that of the prior weights.)
    """

    name: ClassVar[str] = "tpe"

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int = 0,
        min_points: int | None = None,
        n_candidates: int = 64,
        gamma: float = 0.15,
        min_bandwidth: float = 0.01,
        categorical_bandwidth: float = 0.2,
    ) -> None:
        super().__init__(space, seed=seed, min_points=min_points, n_candidates=n_candidates)
        self.gamma = check_float("gamma", gamma, 0.0, 1.0, low_open=True, high_open=True)
        self.min_bandwidth = check_float("min_bandwidth", min_bandwidth, 0.0, 1.0, low_open=True)
        self.categorical_bandwidth = check_float(
            "categorical_bandwidth", categorical_bandwidth, 0.0, 1.0, high_open=True
        )

    def _split(self, data: tuple[FloatArray, FloatArray]) -> tuple[FloatArray, FloatArray]:
        x, y = data
        order = np.argsort(y, kind="stable")
        n_good = min(len(y) - 1, max(1, math.ceil(self.gamma * len(y))))
        return x[order[:n_good]], x[order[n_good:]]

    def _bandwidth(self, x: FloatArray, n_total: int) -> FloatArray:
        n, d = x.shape
        std = x.std(axis=0) if n > 1 else np.zeros(d)
        floor = max(self.min_bandwidth, 1.0 / min(100, n_total + 1))
        return np.maximum(std * n ** (-1.0 / (d + 4)), floor)

    def _log_density(self, x: FloatArray, u: FloatArray, n_total: int) -> FloatArray:
        cat = self.space.categorical
        bw = self._bandwidth(x[:, ~cat], n_total)
        z = (u[:, None, ~cat] - x[None, :, ~cat]) / bw
        log_k = (-0.5 * z**2 - np.log(bw * math.sqrt(2 * math.pi))).sum(axis=2)
        if cat.any():
            k = self.space.n_choices[cat]
            lam = self.categorical_bandwidth
            same = u[:, None, cat] == x[None, :, cat]
            other = np.where(k > 1, lam / np.maximum(k - 1, 1), 0.0)
            log_k = log_k + np.log(np.where(same, 1.0 - lam * (k > 1), other) + 1e-300).sum(axis=2)
        # The prior: uniform on the numeric unit cube, 1/k per categorical column.
        log_prior = -np.log(self.space.n_choices[cat]).sum() * np.ones((len(u), 1))
        log_k = np.hstack([log_k, log_prior])
        m = log_k.max(axis=1, keepdims=True)
        return (m + np.log(np.exp(log_k - m).mean(axis=1, keepdims=True)))[:, 0]

    def _score(self, data: tuple[FloatArray, FloatArray], u: FloatArray) -> FloatArray:
        good, bad = self._split(data)
        n = len(data[1])
        return self._log_density(good, u, n) - self._log_density(bad, u, n)

    def _score_finite(self, data: tuple[FloatArray, FloatArray], u: FloatArray) -> FloatArray:
        near = {int(np.argmin(self.space.distance(u, v))) for v in self._candidates(data, self.n_candidates)}
        idx = np.array(sorted(near))
        scores = np.full(len(u), -np.inf)
        scores[idx] = self._score(data, u[idx])
        return scores

    def _candidates(self, data: tuple[FloatArray, FloatArray] | None, n: int) -> FloatArray:
        if data is None:
            return self.space.sample(self._rng, n)
        good, _ = self._split(data)
        cat = self.space.categorical
        u = good[self._rng.integers(len(good), size=n)].copy()
        bw = self._bandwidth(good[:, ~cat], len(data[1]))
        v = np.abs(u[:, ~cat] + self._rng.normal(size=(n, bw.size)) * bw)
        u[:, ~cat] = np.clip(1.0 - np.abs(1.0 - v), 0.0, 1.0)
        if cat.any():
            flip = self._rng.random((n, int(cat.sum()))) < self.categorical_bandwidth
            fresh = self.space.sample(self._rng, n)[:, cat]
            u[:, cat] = np.where(flip, fresh, u[:, cat])
        return u


class GPEISearcher(Searcher):
    """Gaussian process (scikit-learn, Matérn 5/2 + white noise) with expected improvement.

    Pending configurations without an observation at the model resource enter the fit with the
    "constant liar" loss (``liar``: the ``max``, ``mean`` or ``min`` of the observed losses).
    Categorical columns are one-hot encoded. :meth:`suggest` scores ``n_candidates`` uniform draws.
    """

    name: ClassVar[str] = "gp-ei"

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int = 0,
        min_points: int | None = None,
        n_candidates: int = 256,
        liar: str = "max",
        xi: float = 0.0,
    ) -> None:
        super().__init__(space, seed=seed, min_points=min_points, n_candidates=n_candidates)
        self.liar = check_choice("liar", liar, ("max", "mean", "min"))
        self.xi = check_float("xi", xi, 0.0, math.inf, high_open=True)

    def _features(self, u: FloatArray) -> FloatArray:
        cat = self.space.categorical
        cols = [u[:, ~cat]]
        for j in np.flatnonzero(cat):
            k = int(self.space.n_choices[j])
            cols.append(np.eye(k)[u[:, j].astype(int)])
        return np.hstack(cols)

    def _score(self, data: tuple[FloatArray, FloatArray], u: FloatArray) -> FloatArray:
        from scipy.stats import norm
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        x, y = data
        seen = set(self._obs[self.model_resource() or 0])
        lies = [c for k, c in self._pending.items() if k not in seen]
        lie = {"max": y.max(), "mean": y.mean(), "min": y.min()}[self.liar]
        if lies:
            x = np.vstack([x, self.space.encode(lies)])
        y_fit = np.concatenate([y, np.full(len(lies), lie)])
        f = self._features(x)
        kernel = ConstantKernel(1.0, (1e-3, 1e3)) * Matern(
            np.ones(f.shape[1]), (1e-2, 1e2), nu=2.5
        ) + WhiteKernel(1e-3, (1e-8, 1e-1))
        gp = GaussianProcessRegressor(
            kernel,
            normalize_y=True,
            n_restarts_optimizer=0,
            random_state=int(self._rng.integers(2**31 - 1)),
        )
        with warnings.catch_warnings():
            # A length scale at its upper bound means "this column does not matter": expected.
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(f, y_fit)
        mu, sigma = gp.predict(self._features(u), return_std=True)
        sigma = np.maximum(sigma, 1e-12)
        improvement = y.min() - mu - self.xi
        z = improvement / sigma
        return improvement * norm.cdf(z) + sigma * norm.pdf(z)


class EvolutionSearcher(Searcher):
    """Evolution from the fittest: uniform crossover of two parents drawn from the best
    ``population`` observations at the model resource, then mutation (Gaussian with ``sigma`` on
    numeric columns, a fresh uniform value with probability ``mutation_rate`` on categorical ones).
    Among finite candidates, the one nearest to the child wins."""

    name: ClassVar[str] = "evolution"

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int = 0,
        min_points: int | None = None,
        n_candidates: int = 16,
        population: int = 10,
        sigma: float = 0.1,
        mutation_rate: float = 0.2,
    ) -> None:
        super().__init__(space, seed=seed, min_points=min_points, n_candidates=n_candidates)
        self.population = check_int("population", population, 2)
        self.sigma = check_float("sigma", sigma, 0.0, 1.0)
        self.mutation_rate = check_float("mutation_rate", mutation_rate, 0.0, 1.0)

    def _children(self, data: tuple[FloatArray, FloatArray], n: int) -> FloatArray:
        x, y = data
        fittest = x[np.argsort(y, kind="stable")[: self.population]]
        cat = self.space.categorical
        out = np.empty((n, self.space.dim))
        for i in range(n):
            a, b = fittest[self._rng.choice(len(fittest), size=2, replace=False)]
            child = np.where(self._rng.random(self.space.dim) < 0.5, a, b)
            child[~cat] = np.clip(
                child[~cat] + self._rng.normal(size=int((~cat).sum())) * self.sigma, 0.0, 1.0
            )
            fresh = self.space.sample(self._rng, 1)[0]
            flip = self._rng.random(self.space.dim) < self.mutation_rate
            child[cat] = np.where(flip[cat], fresh[cat], child[cat])
            out[i] = child
        return out

    def _candidates(self, data: tuple[FloatArray, FloatArray] | None, n: int) -> FloatArray:
        return self.space.sample(self._rng, n) if data is None else self._children(data, n)

    def _score_open(self, data: tuple[FloatArray, FloatArray], u: FloatArray) -> FloatArray:
        return np.zeros(len(u))

    def _score(self, data: tuple[FloatArray, FloatArray], u: FloatArray) -> FloatArray:
        return -self.space.distance(u, self._children(data, 1)[0])


_CLASSES: dict[str, type[Searcher]] = {
    "random": RandomSearcher,
    "tpe": TPESearcher,
    "gp-ei": GPEISearcher,
    "evolution": EvolutionSearcher,
}


def make_searcher(name: str, space: SearchSpace, *, seed: int = 0, **options: Any) -> Searcher:
    """Build searcher ``name`` (one of :data:`SEARCHERS`); ``options`` go to its constructor."""
    check_choice("searcher", name, SEARCHERS)
    return _CLASSES[name](space, seed=seed, **options)
