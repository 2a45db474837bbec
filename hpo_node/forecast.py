"""Forecasts of a trial's loss at R with a calibrated spread: the Swift schedulers' forecast rule.

:class:`FinalLossForecaster` learns one step of a learning curve, ``log L(2e) - log L(e)``, from the
shape of the curve up to ``e`` (``log L(f e) - log L(e)`` at ``f = 0.1 .. 1``, the scale-free window
of issue 3), on windows of every known curve. Learning curves are close to self-similar in
log-time (power laws exactly), so windows at small resources inform steps at large ones. A trial's
loss at R is forecast by iterating the step from its last epoch to R, each predicted point
extending the curve the next window is read from (the last step, of ratio ``R / e < 2``, is scaled
by ``log(R / e) / log 2``). The spread is calibrated: the root-mean-square error of the step on
curves held out of the fit (``folds``-fold cross-validation by curve), in quadrature with the
predictor's own spread (e.g. a QSVR ensemble's), added over the steps as independent errors
(``sqrt(steps) * sigma``; on the MLPF table this matches the root-mean-square error of the
forecast at R within a factor of two from every resource). With positive losses all of this
is in log space; when a known loss is ``<= 0`` (a negated metric) the forecaster works in loss
units instead (differences rather than log ratios).

:class:`HorizonForecaster` (Swift-Hyperband's) replaces the ``sqrt(steps) * sigma`` band by one
measured per horizon on held-out curves forecast over ``2**k``-fold horizons: on the synthetic
replay tables the errors of a forecast at R grew faster than ``sqrt(steps)`` and with the drop
still ahead of a curve (benchmarks/README.md, issue 14).

:class:`hpo_node.predictors.TableOracle` (predictor ``oracle``) is the ceiling instrument: the
forecaster then answers the table's true loss at R.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hpo_node.predictors import FinalLossOracle, Predictor, PredictorSupport

FloatArray = NDArray[np.float64]

STEP = 2.0
WINDOW_POINTS = 10

SWIFT_RULES = ("forecast", "paper")
"""Stopping rules of both Swift schedulers: the forecast rule and the published one."""

RULES = {"swift-asha": (*SWIFT_RULES, "gate"), "swift-hyperband": SWIFT_RULES}
"""Rules per Swift scheduler: Swift-ASHA also has the champion gate (``rule="gate"``)."""

DEFAULT_Z = {
    ("swift-asha", "forecast"): 1.0,
    ("swift-asha", "paper"): 0.0,
    ("swift-asha", "gate"): 0.35,  # of the curve-fit band (curvefit.py); issue 14, fc=auto
    ("swift-hyperband", "forecast"): 1.5,  # of its horizon-calibrated band (hyperband.py)
    ("swift-hyperband", "paper"): 0.0,
}
"""Default band width ``z`` per (scheduler, rule); the published rule uses the mean prediction.
Chosen once on the six replay tables of benchmarks/README.md, issue 14 (one value for all)."""


def _window(times: FloatArray, values: FloatArray, end: float) -> FloatArray:
    """``values(f end) - values(end)`` at ``f = 0.1 .. 1`` (linear interpolation), shape (10,)."""
    at = np.interp(np.linspace(end / WINDOW_POINTS, end, WINDOW_POINTS), times, values)
    return at - at[-1]


def step_pairs(curves: Sequence[Sequence[float]], log_space: bool) -> tuple[FloatArray, FloatArray]:
    """Training pairs of the step model: every window end ``e`` with ``2 e`` on the curve.

    x: (m, 10) window shapes, y: (m,) ``g(L(2e)) - g(L(e))`` with ``g = log`` or identity.
    """
    xs, ys = [], []
    for curve in curves:
        c = np.asarray(curve, dtype=np.float64)
        v = np.log(c) if log_space else c
        t = np.arange(1, c.shape[0] + 1, dtype=np.float64)
        for end in range(1, c.shape[0] // 2 + 1):
            xs.append(_window(t[:end], v[:end], float(end)))
            ys.append(v[2 * end - 1] - v[end - 1])
    return np.array(xs).reshape(-1, WINDOW_POINTS), np.array(ys)


def n_step_pairs(lengths: Sequence[int]) -> int:
    """How many pairs :func:`step_pairs` builds from curves of these lengths."""
    return sum(n // 2 for n in lengths)


class FinalLossForecaster:
    """Forecast ``(low, mean, high)`` of each trial's loss at ``max_resource`` (see module doc).

    ``support`` fits the step predictor (fresh from its factory, seeded); ``z`` widens the band
    (``low/high = mean -/+ z * spread`` in the working space); ``min_pairs`` windows are needed
    before a first fit; the model is refitted when the windows grew by ``growth`` (a fraction)
    since the last fit; at most ``max_windows`` windows (a seeded subset) per fit. The fit log
    (trial ids, curve lengths, seed) is the checkpoint: a restored forecaster refits the same
    model from it.
    """

    def __init__(
        self,
        support: PredictorSupport,
        max_resource: int,
        *,
        z: float,
        min_pairs: int,
        growth: float = 0.25,
        max_windows: int = 400,
        folds: int = 3,
    ) -> None:
        self.support = support
        self.max_resource = max_resource
        self.z = z
        self.min_pairs = min_pairs
        self.growth = growth
        self.max_windows = max_windows
        self.folds = folds
        self.log: dict[str, Any] | None = None
        self.log_space = True
        self._model: Predictor | None = None
        probe = support.factory()  # an oracle answers final losses itself; a model is fitted
        self._oracle = probe if isinstance(probe, FinalLossOracle) else None
        self._sigma = 0.0
        self._spread2: list[float] = []
        self.version = 0

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the fitted model (a gateway predictor holds a gRPC channel): a copy
        refits it, uncounted, from the fit log at its next :meth:`update`, as after :meth:`load`."""
        state = self.__dict__.copy()
        state["_model"] = None
        return state

    # -- fitting -------------------------------------------------------------------------------

    def update(self, curves: Mapping[str, Sequence[float]], order: Sequence[str]) -> bool:
        """Refit if due; ``True`` when the model changed. ``curves`` by trial id, in ``order``."""
        if self._oracle is not None:
            return False
        ids = [t for t in order if len(curves[t]) >= 2]
        n = n_step_pairs([len(curves[t]) for t in ids])
        if n < self.min_pairs:
            return False
        if self.log is not None and n < (1.0 + self.growth) * self.log["pairs"]:
            if self._model is None:
                self._build(self.log, curves, counted=False)
            return False
        self.log = {
            "ids": ids,
            "lens": [len(curves[t]) for t in ids],
            "pairs": n,
            "seed": self.support.next_seed(),
        }
        self._build(self.log, curves, counted=True)
        return True

    def _build(
        self, log: Mapping[str, Any], curves: Mapping[str, Sequence[float]], *, counted: bool
    ) -> None:
        cut = [list(curves[t][:n]) for t, n in zip(log["ids"], log["lens"], strict=True)]
        self.log_space = bool(all(min(c) > 0 for c in cut))
        x, y, owner, groups, seed = self._fold_windows(cut, np.random.default_rng(int(log["seed"])))
        if self._model is not None:
            self.support.release(self._model)
        self._model = self.support.fit(x, y, None, seed, counted=counted)
        residuals = []
        for fold in range(self.folds):
            test = groups[owner] == fold
            if test.sum() == 0 or (~test).sum() < 2:
                continue
            model = self.support.fit(x[~test], y[~test], None, seed + fold + 1, counted=False)
            pred, _ = model.predict(x[test], None)
            self.support.release(model)
            residuals.append(pred - y[test])
        res = np.concatenate(residuals) if residuals else np.zeros(1)
        res = res[np.isfinite(res)]
        self._sigma = float(np.sqrt(np.mean(res**2))) if res.size else 0.0
        self.version += 1

    def _fold_windows(
        self, cut: list[list[float]], rng: np.random.Generator
    ) -> tuple[FloatArray, FloatArray, NDArray[np.int64], NDArray[np.int64], int]:
        """Step pairs of ``cut`` for a fit with ``folds``-fold cross-validation by curve: windows
        ``x (m, 10)``, steps ``y (m,)``, each window's curve index ``owner (m,)``, each curve's fold
        ``groups (len(cut),)`` (at most ``max_windows`` windows, a seeded subset) and a fit seed."""
        groups = rng.integers(0, self.folds, size=len(cut))
        x, y = step_pairs(cut, self.log_space)
        owner = np.repeat(np.arange(len(cut)), [len(c) // 2 for c in cut])
        keep = np.arange(x.shape[0])
        if keep.size > self.max_windows:
            keep = np.sort(rng.choice(keep.size, size=self.max_windows, replace=False))
        return x[keep], y[keep], owner[keep], groups, int(rng.integers(0, 2**31 - 1))

    @property
    def ready(self) -> bool:
        """Whether forecasts can be made."""
        return self._oracle is not None or self._model is not None

    # -- forecasting ---------------------------------------------------------------------------

    def forecast(self, curves: Sequence[Sequence[float]]) -> FloatArray:
        """``(m, 3)``: low, mean, high of the loss at R for each partial curve (NaN: none)."""
        out = np.full((len(curves), 3), np.nan)
        if self._oracle is not None:
            final = np.asarray(self._oracle.final_loss(curves), dtype=np.float64)
            return np.repeat(final[:, None], 3, axis=1)
        if self._model is None:
            return out
        r = float(self.max_resource)
        active = [
            j for j, c in enumerate(curves)
            if 0 < len(c) < self.max_resource and not (self.log_space and min(c) <= 0)
        ]
        for j, c in enumerate(curves):
            if len(c) >= self.max_resource:
                out[j] = c[self.max_resource - 1]
        if not active:
            return out
        rolled = self._roll(self._model, [curves[j] for j in active], [r] * len(active), True)
        end_v = np.array([v[-1] for _, v in rolled])
        steps = np.array([math.log2(r / len(curves[j])) for j in active])
        spread2 = np.array(self._spread2)
        width = self.z * np.sqrt(self._sigma**2 * steps + spread2)
        ok = np.isfinite(end_v) & np.isfinite(width)
        band = np.stack([end_v[ok] - width[ok], end_v[ok], end_v[ok] + width[ok]], axis=1)
        out[np.array(active)[ok]] = np.exp(band) if self.log_space else band
        return out

    def _roll(
        self,
        model: Predictor,
        curves: Sequence[Sequence[float]],
        until: Sequence[float],
        spreads: bool = False,
    ) -> list[tuple[list[float], list[float]]]:
        """Extend each curve by predicted steps of ratio 2 (the last one shorter) up to ``until``:
        knots ``(times, values)`` in the working space, the known epochs first. A step without a
        finite prediction ends the curve with a NaN value. ``spreads``: the predictor's own
        spreads, summed in quadrature over the steps, are left in ``self._spread2``."""
        knots = []
        for c in curves:
            arr = np.asarray(c, dtype=np.float64)
            v = np.log(arr) if self.log_space else arr
            knots.append((list(np.arange(1.0, arr.shape[0] + 1.0)), list(v)))
        spread2 = [0.0] * len(curves)
        todo = [i for i in range(len(curves)) if knots[i][0][-1] < until[i]]
        while todo:
            ends = np.array([knots[i][0][-1] for i in todo])
            x = np.array([_window(np.array(knots[i][0]), np.array(knots[i][1]), e)
                          for i, e in zip(todo, ends, strict=True)])
            mean, spread = self.support.predict(model, x, None)
            ratio = np.minimum(STEP, np.array([until[i] for i in todo]) / ends)
            frac = np.log(ratio) / math.log(STEP)
            nxt = []
            for n, i in enumerate(todo):
                t, v = knots[i]
                if not (math.isfinite(mean[n]) and math.isfinite(spread[n])):
                    v.append(math.nan)  # no prediction (e.g. an unreachable gateway): no forecast
                    continue
                t.append(float(ends[n] * ratio[n]))
                v.append(v[-1] + float(mean[n]) * frac[n])
                spread2[i] += float(spread[n]) ** 2 * frac[n] ** 2
                if t[-1] < until[i] * (1 - 1e-9):
                    nxt.append(i)
            todo = nxt
        if spreads:
            self._spread2 = spread2
        return knots

    # -- checkpoint ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any] | None:
        """The fit log (JSON-serialisable), ``None`` before the first fit."""
        return None if self.log is None else dict(self.log)

    def load(self, state: Mapping[str, Any] | None) -> None:
        """Restore :meth:`state`; the model is refitted (uncounted) at the next :meth:`update`."""
        if self._model is not None:
            self.support.release(self._model)
        self._model = None
        self.log = None if state is None else {
            "ids": [str(t) for t in state["ids"]],
            "lens": [int(n) for n in state["lens"]],
            "pairs": int(state["pairs"]),
            "seed": int(state["seed"]),
        }

    def close(self) -> None:
        if self._model is not None:
            self.support.release(self._model)
            self._model = None


class HorizonForecaster(FinalLossForecaster):
    """:class:`hpo_node.forecast.FinalLossForecaster` whose band is calibrated per horizon.

    Swift-Hyperband's forecaster. The half-width of the band (before ``z``) of a forecast from
    epoch ``e`` is ``c(s) (|D| + Dbar(s))``, in the working space (log or loss units): ``s =
    log2(R / e)`` is the horizon in doublings, ``D`` the forecast's own drop from ``e`` to R.
    ``c`` and ``Dbar`` are measured at each fit on curves held out of it (``folds`` folds by
    curve; each fold's model learns the windows of the other curves): every held-out curve of
    length ``L`` is forecast from ``round(L / 2**k)`` (at least 2 epochs) to ``L``, for ``k = 1,
    2, ...``. Per ``k`` (with at least :attr:`min_residuals` forecasts): ``s_k`` = their mean
    horizon, ``Dbar_k`` = their mean ``|D|`` and ``c_k`` = the root mean square of ``residual /
    (|D| + Dbar_k)``. Between the ``s_k`` both are interpolated linearly; beyond the last, ``c``
    is held and ``Dbar`` grows in proportion to ``s`` (the errors of iterated steps add up).

    Why: the parent's ``sqrt(steps) sigma`` assumes independent one-step errors of one size. On
    the replay tables of benchmarks/README.md (issue 14) the errors of a forecast at R grew
    faster than ``sqrt(steps)`` and with the drop still ahead of a curve: trials that start slow
    and end best were stopped at early decision points. Without any calibrated horizon (curves
    too short) the parent's band is used.
    """

    min_residuals = 5

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._horizons: list[tuple[float, float, float]] = []

    def _build(
        self, log: Mapping[str, Any], curves: Mapping[str, Sequence[float]], *, counted: bool
    ) -> None:
        super()._build(log, curves, counted=counted)
        self._horizons = self._calibrate(
            [list(curves[t][:n]) for t, n in zip(log["ids"], log["lens"], strict=True)],
            int(log["seed"]),
        )

    def load(self, state: Mapping[str, Any] | None) -> None:
        """Restore a fit log; the calibration is rebuilt with the model at the next update."""
        super().load(state)
        self._horizons = []

    def _calibrate(
        self, cut: list[list[float]], seed: int
    ) -> list[tuple[float, float, float]]:
        """``[(s_k, c_k, Dbar_k), ...]`` from held-out forecasts (see class doc); uncounted."""
        x, y, owner, groups, fit_seed = self._fold_windows(cut, np.random.default_rng([seed, 1]))
        ks = range(1, int(math.log2(self.max_resource)) + 1)
        found: dict[int, list[tuple[float, float, float]]] = {k: [] for k in ks}
        predicts = self.support.predicts
        for fold in range(self.folds):
            train = groups[owner] != fold
            held = [c for c, g in zip(cut, groups, strict=True) if g == fold]
            if not held or train.sum() < 2:
                continue
            model = self.support.fit(x[train], y[train], None, fit_seed + fold, counted=False)
            for k in ks:
                starts = [c[: round(len(c) / 2**k)] for c in held]
                pairs = [(s, c) for s, c in zip(starts, held, strict=True) if 2 <= len(s) < len(c)]
                if not pairs:
                    continue
                rolled = self._roll(model, [s for s, _ in pairs], [float(len(c)) for _, c in pairs])
                for (s, c), (_, v) in zip(pairs, rolled, strict=True):
                    true = math.log(c[-1]) if self.log_space else c[-1]
                    if math.isfinite(v[-1]):
                        found[k].append((math.log2(len(c) / len(s)), v[-1] - true, v[-1] - v[len(s) - 1]))
            self.support.release(model)
        self.support.predicts = predicts  # calibration predictions are not the scheduler's
        out = []
        for k in ks:
            if len(found[k]) < self.min_residuals:
                continue
            s, res, drop = (np.array(a) for a in zip(*found[k], strict=True))
            dbar = float(np.mean(np.abs(drop)))
            if dbar > 0:
                c = float(np.sqrt(np.mean((res / (np.abs(drop) + dbar)) ** 2)))
                out.append((float(np.mean(s)), c, dbar))
        return out

    def forecast(self, curves: Sequence[Sequence[float]]) -> np.ndarray:
        """``(m, 3)``: low, mean, high of the loss at R (NaN: none), band as in the class doc."""
        if self._oracle is not None or self._model is None or not self._horizons:
            return super().forecast(curves)
        out = np.full((len(curves), 3), np.nan)
        r = self.max_resource
        for j, c in enumerate(curves):
            if len(c) >= r:
                out[j] = c[r - 1]
        active = [
            j for j, c in enumerate(curves)
            if 0 < len(c) < r and not (self.log_space and min(c) <= 0)
        ]
        if not active:
            return out
        rolled = self._roll(self._model, [curves[j] for j in active], [float(r)] * len(active), True)
        end_v = np.array([v[-1] for _, v in rolled])
        drop = np.abs(end_v - np.array([v[len(curves[j]) - 1] for j, (_, v) in
                                        zip(active, rolled, strict=True)]))
        steps = np.array([math.log2(r / len(curves[j])) for j in active])
        s_k, c_k, dbar_k = (np.array(a) for a in zip(*self._horizons, strict=True))
        dbar = np.where(steps > s_k[-1], dbar_k[-1] * steps / s_k[-1],
                        np.interp(steps, s_k, dbar_k))
        sigma = np.interp(steps, s_k, c_k) * (drop + dbar)
        width = self.z * np.sqrt(sigma**2 + np.array(self._spread2))
        ok = np.isfinite(end_v) & np.isfinite(width)
        band = np.stack([end_v[ok] - width[ok], end_v[ok], end_v[ok] + width[ok]], axis=1)
        out[np.array(active)[ok]] = np.exp(band) if self.log_space else band
        return out
