"""Forecaster bake-off for Swift-ASHA's champion gate (issue 14): how sharp are forecasts at R?

Replays the information a Swift-ASHA run has at a decision: an ASHA run (W = 8, eta = 2) is
replayed on a table and the known curves are taken at fractions of its reports (each trial's
curve up to the epoch it had reached then). Each candidate forecaster is fitted on the known
curves of the other folds (5 folds by trial) and forecasts ``log L(R)`` of every trial from each
``e = 1, 2, 4, ... < R`` it had reached; the truth is the table's loss at R. Per resource bucket
(``e``): bias and spread (standard deviation) of ``log L_hat(R) - log L(R)``; the spread as a
multiple ``s`` of the ``svr`` spread the noisy-oracle sweep used (``asha_gates.SVR_SPREAD``);
and, what the champion gate needs (it compares two trials forecast from the same resource), the
pairwise ordering error: the share of pairs of trials forecast from the same ``e`` whose
forecasts are in the wrong order, over all pairs and over the pairs with the true top quarter.

Candidates (:data:`CANDIDATES`): ``last`` (the loss at e; a per-e shift does not change a
same-resource comparison), ``smooth`` (log-log line through the last half of the curve, at e),
``step`` (today's :class:`hpo_node.forecast.FinalLossForecaster`, ``svr``), ``direct-svr`` /
``direct-et`` (one multi-horizon regression: window at e and horizon ``log2(R'/e)`` to ``log
L(R') - log L(e)``, no compounding; ``+hp`` adds the hyperparameters), ``knn`` (nearest known
curves by normalised shape up to e, their median ratio ``L(2e)/L(e)``, chained; the
scale-free step pairs when fewer than 3 curves reached 2e), ``pow3`` (per-curve
``c + a t**-alpha`` fit on the curve up to e, Domhan, Springenberg and Hutter, IJCAI 2015,
with a population prior on ``alpha``), ``ens`` (mean of ``direct-et+hp``, ``knn``, ``smooth``).
``last``, ``smooth``, ``pow3``, ``smooth+pow3``, :func:`ordering_error` and the base of
:class:`GateForecaster` are :mod:`hpo_node.curvefit`'s (ported from here); this script keeps the
research-only candidates and options and the measurement.

    nice -n 10 .venv/bin/python benchmarks/asha_forecasters.py --table mlpf --seeds 3
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hpo_rules import load

from hpo_node import curvefit
from hpo_node.asha import ASHA
from hpo_node.core import Decision
from hpo_node.curvefit import _PARTS, Row, ordering_error
from hpo_node.forecast import FinalLossForecaster, _window
from hpo_node.predictors import PredictorSupport, make_predictor_factory
from hpo_node.replay import CurveTable, simulate

FloatArray = NDArray[np.float64]

SVR_SPREAD = {0: 0.12, 1: 0.05, 2: 0.013, 3: 0.009, 4: 0.005, 5: 0.004, 6: 0.004}
"""Spread of the ``svr`` forecasts on MLPF by floor(log2(e)) (asha_gates.SVR_SPREAD)."""


# -- the information at a decision ---------------------------------------------------------------


class _Recorder(ASHA):
    """ASHA that logs ``(trial, resource)`` of every report."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.log: list[tuple[str, int]] = []

    def report(self, trial_id: str, resource: int, loss: float) -> Decision:
        self.log.append((trial_id, resource))
        return super().report(trial_id, resource, loss)


def snapshots(
    table: CurveTable, r_max: int, n: int, seed: int, fracs: Sequence[float], workers: int = 8
) -> list[dict[int, int]]:
    """Per fraction of an ASHA run's reports: table row -> epochs known then."""
    d = _Recorder(r_max, 2, n)
    simulate(table, d, seed=seed, max_resource=r_max, workers=workers)
    out = []
    for f in fracs:
        known: dict[int, int] = {}
        for tid, r in d.log[: max(1, round(f * len(d.log)))]:
            row = int(tid.split("-")[1])
            known[row] = max(known.get(row, 0), r)
        out.append(known)
    return out


# -- candidates ------------------------------------------------------------------------------------
# A candidate: fit(curves, hps) on known log curves, then predict(prefixes, hps) -> log L(R).
# ``last``, ``smooth``, ``pow3`` and ``smooth+pow3`` are hpo_node.curvefit's (through NoHp).


class NoHp:
    """A :mod:`hpo_node.curvefit` candidate (curves only) as a bake-off candidate: ``hps``
    ignored."""

    def __init__(self, model: curvefit.Last) -> None:
        self.model = model

    def fit(self, curves: list[FloatArray], hps: list[FloatArray]) -> None:
        self.model.fit(curves)

    def predict(
        self, prefixes: list[FloatArray], hps: list[FloatArray], target: int | None = None
    ) -> FloatArray:
        return self.model.predict(prefixes, target)


class CurvesOnly(curvefit.Last):
    """A bake-off candidate in :mod:`hpo_node.curvefit`'s interface (no hyperparameters), so
    :class:`GateForecaster` can use it."""

    def __init__(self, model: Any, max_resource: int) -> None:
        super().__init__(max_resource)
        self.model = model

    def fit(self, curves: list[FloatArray]) -> None:
        self.model.fit(curves, [np.zeros(0)] * len(curves))

    def predict(self, prefixes: list[FloatArray], target: int | None = None) -> FloatArray:
        return np.asarray(self.model.predict(prefixes, [np.zeros(0)] * len(prefixes), target))


class Step:
    """Today's step model (FinalLossForecaster with ``svr``), its mean at R (``target`` is
    ignored: a bake-off row, not usable as ``GateForecaster``'s candidate)."""

    def __init__(self, r_max: int, seed: int = 0) -> None:
        self.r_max = r_max
        self.seed = seed

    def fit(self, curves: list[FloatArray], hps: list[FloatArray]) -> None:
        self.fc = FinalLossForecaster(
            PredictorSupport(make_predictor_factory("svr"), self.seed), self.r_max,
            z=1.0, min_pairs=2,
        )
        known = {str(i): list(np.exp(c)) for i, c in enumerate(curves)}
        self.fc.update(known, list(known))

    def predict(
        self, prefixes: list[FloatArray], hps: list[FloatArray], target: int | None = None
    ) -> FloatArray:
        return np.log(self.fc.forecast([list(np.exp(p)) for p in prefixes])[:, 1])


def direct_pairs(
    curves: list[FloatArray], hps: list[FloatArray], use_hp: bool, rng: np.random.Generator,
    cap: int,
) -> tuple[FloatArray, FloatArray]:
    """Features ``[window(e), log2(R'/e), (hp)]`` -> ``log L(R') - log L(e)``, every ``e`` and
    ``R' = 2e, 4e, ... <= n`` and ``R' = n`` of each known curve of length ``n``; at most ``cap``."""
    xs, ys = [], []
    for c, h in zip(curves, hps, strict=True):
        n = c.shape[0]
        t = np.arange(1.0, n + 1.0)
        for e in range(1, n):
            w = _window(t[:e], c[:e], float(e))
            targets = {n}
            k = 2 * e
            while k <= n:
                targets.add(k)
                k *= 2
            for r in sorted(targets):
                f = [*w, math.log2(r / e)]
                xs.append([*f, *h] if use_hp else f)
                ys.append(c[r - 1] - c[e - 1])
    x, y = np.array(xs), np.array(ys)
    if x.shape[0] > cap:
        keep = rng.choice(x.shape[0], size=cap, replace=False)
        x, y = x[keep], y[keep]
    return x, y


class Direct:
    """Direct multi-horizon regression (module doc); ``kind`` ``svr`` or ``et`` (extra trees)."""

    def __init__(self, r_max: int, kind: str, use_hp: bool, seed: int = 0, cap: int = 3000) -> None:
        self.r_max, self.kind, self.use_hp, self.seed, self.cap = r_max, kind, use_hp, seed, cap

    def fit(self, curves: list[FloatArray], hps: list[FloatArray]) -> None:
        from sklearn.ensemble import ExtraTreesRegressor
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import MinMaxScaler, StandardScaler
        from sklearn.svm import SVR

        rng = np.random.default_rng(self.seed)
        x, y = direct_pairs([c for c in curves if c.shape[0] >= 2],
                            [h for c, h in zip(curves, hps, strict=True) if c.shape[0] >= 2],
                            self.use_hp, rng, self.cap)
        if self.kind == "svr":
            self.model = make_pipeline(MinMaxScaler(), SVR(C=10.0, gamma=1.0, epsilon=0.002))
            self._sy = StandardScaler()
            self.model.fit(x, self._sy.fit_transform(y[:, None])[:, 0])
        else:
            self.model = ExtraTreesRegressor(
                n_estimators=100, min_samples_leaf=3, max_features=0.5,
                random_state=int(rng.integers(2**31 - 1)), n_jobs=1,
            )
            self._sy = None
            self.model.fit(x, y)

    def predict(
        self, prefixes: list[FloatArray], hps: list[FloatArray], target: int | None = None
    ) -> FloatArray:
        rows, r = [], target or self.r_max
        for p, h in zip(prefixes, hps, strict=True):
            e = p.shape[0]
            f = [*_window(np.arange(1.0, e + 1.0), p, float(e)), math.log2(r / e)]
            rows.append([*f, *h] if self.use_hp else f)
        d = self.model.predict(np.array(rows))
        if self._sy is not None:
            d = self._sy.inverse_transform(d[:, None])[:, 0]
        return np.array([p[-1] for p in prefixes]) + d


class Knn:
    """Nearest-neighbour curve matching, chained by doublings (module doc)."""

    def __init__(self, r_max: int, k: int = 7) -> None:
        self.r_max, self.k = r_max, k

    def fit(self, curves: list[FloatArray], hps: list[FloatArray]) -> None:
        self.curves = [c for c in curves if c.shape[0] >= 2]
        self.lens = np.array([c.shape[0] for c in self.curves])
        # scale-free pool: (window at e, log L(2e) - log L(e))
        xs, ys = [], []
        for c in self.curves:
            t = np.arange(1.0, c.shape[0] + 1.0)
            for e in range(1, c.shape[0] // 2 + 1):
                xs.append(_window(t[:e], c[:e], float(e)))
                ys.append(c[2 * e - 1] - c[e - 1])
        self.pool_x, self.pool_y = np.array(xs).reshape(-1, 10), np.array(ys)

    def _step(self, t: FloatArray, v: FloatArray, e: float, to: float) -> float:
        w = _window(t, v, e)
        ei, ti = round(e), math.ceil(to)
        ok = np.flatnonzero(self.lens >= ti)
        if ok.size >= 3 and abs(e - ei) < 1e-9:
            ws = np.array([_window(np.arange(1.0, ei + 1.0), self.curves[j][:ei], float(ei))
                           for j in ok])
            near = ok[np.argsort(((ws - w) ** 2).sum(axis=1))[: self.k]]
            return float(np.median([self.curves[j][ti - 1] - self.curves[j][ei - 1] for j in near]))
        near = np.argsort(((self.pool_x - w) ** 2).sum(axis=1))[: self.k]
        return float(np.median(self.pool_y[near])) * math.log(to / e) / math.log(2.0)

    def predict(
        self, prefixes: list[FloatArray], hps: list[FloatArray], target: int | None = None
    ) -> FloatArray:
        out, r = [], float(target or self.r_max)
        for p in prefixes:
            t, v = list(np.arange(1.0, p.shape[0] + 1.0)), list(p)
            while t[-1] < r - 1e-9:
                to = min(2.0 * t[-1], r)
                v.append(v[-1] + self._step(np.array(t), np.array(v), t[-1], to))
                t.append(to)
            out.append(v[-1])
        return np.array(out)


class Pow4(curvefit.Pow3):
    """Per-curve ``log(c + A (1 + t / tau)**-alpha)`` fit on ``t <= e`` (Domhan et al.'s pow4,
    ``c - (a t + b)**-alpha`` for an accuracy, as a loss), weak Gaussian priors on ``alpha`` and
    ``log tau`` from long known curves; at least 6 epochs, else
    :class:`hpo_node.curvefit.Pow3`."""

    def __init__(self, max_resource: int) -> None:
        super().__init__(max_resource)
        self.prior4 = (0.7, 0.5, 0.0, 2.0)  # alpha mean, sd; log tau mean, sd

    def _fit4(self, v: FloatArray, prior: tuple[float, float, float, float] | None) -> FloatArray:
        from scipy.optimize import least_squares

        e = v.shape[0]
        t = np.arange(1.0, e + 1.0)
        y = np.exp(v)
        wt = np.where(t > e / 2, 2.0, 1.0)

        def res(q: FloatArray) -> FloatArray:
            c, amp, ltau, al = q
            r = wt * (np.log(np.maximum(c + amp * (1.0 + t / math.exp(ltau)) ** -al, 1e-12)) - v)
            if prior is None:
                return r
            return np.append(r, [(al - prior[0]) / prior[1] * 0.01,
                                 (ltau - prior[2]) / prior[3] * 0.01])

        q0 = [0.8 * y.min(), max(y[0] - 0.8 * y.min(), 1e-6), 0.0, 0.7]
        sol = least_squares(res, q0, bounds=([0.0, 0.0, -3.0, 0.05], [y.min(), np.inf, 5.0, 5.0]))
        return np.asarray(sol.x)

    def fit(self, curves: list[FloatArray]) -> None:
        super().fit(curves)
        long = [c for c in curves if c.shape[0] >= 16]
        if len(long) >= 3:
            q = np.array([self._fit4(c, None) for c in long])
            self.prior4 = (float(np.median(q[:, 3])), float(max(np.std(q[:, 3]), 0.1)),
                           float(np.median(q[:, 2])), float(max(np.std(q[:, 2]), 0.5)))

    def predict_targets(self, prefix: FloatArray, targets: Sequence[int]) -> list[float]:
        """:meth:`predict` per target (not the pow3 fit of the base class)."""
        return curvefit.Last.predict_targets(self, prefix, targets)

    def predict(self, prefixes: list[FloatArray], target: int | None = None) -> FloatArray:
        out, r = [], target or self.max_resource
        for p in prefixes:
            if p.shape[0] < 6:
                out.append(float(super().predict([p], r)[0]))
                continue
            c, amp, ltau, al = self._fit4(p, self.prior4)
            out.append(math.log(max(c + amp * (1.0 + r / math.exp(ltau)) ** -al, 1e-12)))
        return np.array(out)


class Ensemble:
    """Mean of member forecasts."""

    def __init__(self, members: list[Any]) -> None:
        self.members = members

    def fit(self, curves: list[FloatArray], hps: list[FloatArray]) -> None:
        for m in self.members:
            m.fit(curves, hps)

    def predict(
        self, prefixes: list[FloatArray], hps: list[FloatArray], target: int | None = None
    ) -> FloatArray:
        return np.mean([m.predict(prefixes, hps, target) for m in self.members], axis=0)


CANDIDATES: dict[str, Callable[[int, int], Any]] = {
    "last": lambda r, s: NoHp(curvefit.Last(r)),
    "smooth": lambda r, s: NoHp(curvefit.Smooth(r)),
    "step": lambda r, s: Step(r, s),
    "direct-svr": lambda r, s: Direct(r, "svr", False, s),
    "direct-et": lambda r, s: Direct(r, "et", False, s),
    "direct-et+hp": lambda r, s: Direct(r, "et", True, s),
    "knn": lambda r, s: Knn(r),
    "pow3": lambda r, s: NoHp(curvefit.Pow3(r)),
    "ens": lambda r, s: Ensemble([Direct(r, "et", True, s), Knn(r), NoHp(curvefit.Smooth(r))]),
    "smooth+pow3": lambda r, s: NoHp(curvefit.SmoothPow3(r)),
    "pow4": lambda r, s: NoHp(Pow4(r)),
}


# -- a candidate as Swift-ASHA's forecaster (asha_gates.py ``fc=NAME``) --------------------------


AUTO = {
    "auto": curvefit.AUTO,
    "auto-fit": ("smooth+pow3", "pow3", "smooth", "last"),
}
"""What ``GateForecaster("auto")`` chooses from, ties to the earlier one (``auto``: the simplest
first, :data:`hpo_node.curvefit.AUTO`; ``auto-fit``: the curve fits first)."""


class GateForecaster(curvefit.GateForecaster):
    """:class:`hpo_node.curvefit.GateForecaster` (refits, held-out folds, ``auto``, calibration,
    band) with the bake-off's research options.

    ``name``: ``"auto"``, ``"auto-fit"`` (:data:`AUTO`) or any candidate of :data:`CANDIDATES`
    but ``step`` (seeded ``seed + fold + 1`` in the folds, ``seed`` for the final fit); log space
    only (a curve with a loss <= 0 gets no forecast). ``choices`` and ``scores`` log the picks.
    ``zcal``: the band multiple per ``k`` is at least the one that would have paused no truly
    better held-out trial (:meth:`_band_scale`). ``reach > 0``: no band (``[0, mean, inf]``: no
    pause) from ``e`` when ``H = log2(R / e)`` exceeds ``reach`` times the third-longest horizon
    calibrated at ``k``. No checkpoint (:meth:`state` is ``None``).
    """

    def __init__(
        self, name: str, max_resource: int, *, z: float, p: float = 0.5, seed: int = 0,
        min_epochs: int = 30, growth: float = 0.25, zcal: bool = False,
        reach: float = 0.0,
    ) -> None:
        if name not in AUTO and (name not in CANDIDATES or name == "step"):
            raise ValueError(
                f"name must be one of {sorted(AUTO)} or a candidate other than 'step' "
                f"({sorted(CANDIDATES)}), got {name!r}"
            )
        super().__init__("auto", max_resource, z=z, p=p, seed=seed, min_epochs=min_epochs,
                         growth=growth)
        self.name = name  # a name of this module (AUTO, CANDIDATES): update is this class's
        self.zcal, self.reach = zcal, reach
        self._zk: dict[int, float] = {}
        self._hmax: dict[int, float] = {}
        self.scores: list[dict[str, tuple[float, float]]] = []

    def _candidate(self, name: str, seed: int) -> curvefit.Last:
        """A fresh candidate ``name`` in :mod:`hpo_node.curvefit`'s interface."""
        m = CANDIDATES[name](self.max_resource, seed)
        return m.model if isinstance(m, NoHp) else CurvesOnly(m, self.max_resource)

    def _held_out(
        self, names: Sequence[str], known: list[FloatArray], seed: int, pairs: bool
    ) -> dict[str, list[Row]]:
        """As :meth:`hpo_node.curvefit.GateForecaster._held_out` with this module's candidates
        (:meth:`_candidate`, fold ``f`` seeded ``seed + f + 1``)."""
        need = sorted({b for nm in names for b in _PARTS.get(nm, (nm,))})
        groups = np.random.default_rng(seed).integers(0, 3, size=len(known))
        lengths = sorted({c.shape[0] for c in known})
        rows: dict[str, list[Row]] = {nm: [] for nm in need}
        for f in range(3):
            train = [c for c, g in zip(known, groups, strict=True) if g != f]
            held = [(i, c) for i, (c, g) in enumerate(zip(known, groups, strict=True)) if g == f]
            if len(train) < 2 or not held:
                continue
            for nm in need:
                m = self._candidate(nm, seed + f + 1)
                m.fit(train)
                for k in range(int(math.log2(self.max_resource)) + 1):
                    e = 2**k
                    for i, c in held:
                        n = c.shape[0]
                        if n < 2 * e:
                            continue
                        ts = [t for t in lengths if 2 * e <= t < n] if pairs else []
                        targets = [*ts, n]
                        preds = m.predict_targets(c[:e], targets)
                        rows[nm].extend((i, e, t, pred, float(c[t - 1]))
                                        for t, pred in zip(targets, preds, strict=True))
        out = {}
        for nm in names:
            parts = [rows[b] for b in _PARTS.get(nm, (nm,))]
            out[nm] = [(i, e, t, float(np.mean([p[j][3] for p in parts])), y)
                       for j, (i, e, t, _, y) in enumerate(parts[0])]
        return out

    def _band_scale(self, rows: list[Row]) -> dict[int, float]:
        """Per ``k``: the band multiple that would have paused no truly better held-out trial.

        Pairs as in :func:`ordering_error` (from one ``e`` to the shorter length ``m``, one in
        the true top quarter); a wrongly ordered pair (``f_a > f_b`` with ``y_a < y_b``) would
        have paused ``a`` unless ``z >= (f_a - f_b) / (2 sd_k log2(m / e)**p)``; the biases
        cancel (one ``e``, one ``m``)."""
        by_e: dict[int, dict[int, dict[int, tuple[float, float]]]] = {}
        for c, e, t, f, y in rows:
            by_e.setdefault(e, {}).setdefault(c, {})[t] = (f, y)
        out: dict[int, float] = {}
        for e, cs in by_e.items():
            k = int(math.log2(e))
            if k not in self._cal or self._cal[k][1] <= 0:
                continue
            ids = sorted(cs)
            length = {c: max(cs[c]) for c in ids}
            need = 0.0
            for i, a in enumerate(ids):
                for b in ids[i + 1:]:
                    m = min(length[a], length[b])
                    ys = [cs[c][m][1] for c in ids if length[c] >= m]
                    (fa, ya), (fb, yb) = cs[a][m], cs[b][m]
                    if min(ya, yb) > np.quantile(ys, 0.25):
                        continue
                    gap = (fa - fb) if ya < yb else (fb - fa)
                    if gap > 0:
                        need = max(need, gap / (2 * self._cal[k][1] * math.log2(m / e) ** self.p))
            out[k] = need
        return out

    def update(self, curves: Any, order: Sequence[str]) -> bool:
        """Refit if due (log space only); ``True`` when the forecasts changed."""
        known = [np.log(np.asarray(curves[t], dtype=np.float64)) for t in order
                 if len(curves[t]) >= 2]
        epochs = sum(c.shape[0] for c in known)
        if epochs < self.min_epochs or (self._epochs and epochs < (1 + self.growth) * self._epochs):
            return False
        self._epochs = epochs
        seed = int(self.rng.integers(2**31 - 1))
        names = AUTO.get(self.name, (self.name,))
        held = self._held_out(names, known, seed, len(names) > 1 or self.zcal)
        name = names[0]
        if len(names) > 1:
            score = {}
            for nm in names:
                wrong, total = ordering_error(held[nm])
                score[nm] = wrong / total if total else math.inf
            self.scores.append({nm: (score[nm], len(known)) for nm in names})
            name = min(names, key=lambda nm: score[nm])  # ties: the earlier one
            self.choices.append(name)
        self._chosen, self._model = name, self._candidate(name, seed)
        self._model.fit(known)
        found: dict[int, list[tuple[float, float]]] = {}
        for i, e, t, pred, truth in held[name]:
            if t == known[i].shape[0]:
                found.setdefault(int(math.log2(e)), []).append((pred - truth, math.log2(t / e)))
        self._cal, self._hmax = {}, {}
        for k, rs in sorted(found.items()):
            if len(rs) >= 5:
                r, h = (np.array(a) for a in zip(*rs, strict=True))
                self._cal[k] = (float(np.mean(r / h)), float(np.std(r / h**self.p)))
                self._hmax[k] = float(np.sort(h)[-3])
        self._zk = self._band_scale(held[name]) if self.zcal else {}
        self.version += 1
        return True

    def forecast(self, curves: Sequence[Sequence[float]]) -> FloatArray:
        """:meth:`hpo_node.curvefit.GateForecaster.forecast` with the band multiple ``max(z,
        zcal_k)`` per ``k`` and no band beyond ``reach`` (class doc)."""
        if not self._cal:
            return super().forecast(curves)
        r, last = self.max_resource, max(self._cal)
        ks = [min(last, int(math.log2(len(c)))) if 0 < len(c) < r else -1 for c in curves]
        if not self._zk:
            out = super().forecast(curves)
        else:
            out, z = np.full((len(curves), 3), np.nan), self.z
            try:
                for k in sorted(set(ks)):
                    idx = [j for j, kj in enumerate(ks) if kj == k]
                    self.z = max(z, self._zk.get(k, 0.0))
                    out[idx] = super().forecast([curves[j] for j in idx])
            finally:
                self.z = z
        for j, k in enumerate(ks):
            if self.reach and k >= 0 and math.isfinite(out[j, 1]) \
                    and math.log2(r / len(curves[j])) > self.reach * self._hmax.get(k, 0.0):
                out[j, 0], out[j, 2] = 0.0, math.inf  # beyond ``reach``: no band
        return out

    def state(self) -> None:
        return None

    def load(self, state: Any) -> None:
        return None


# -- measurement -----------------------------------------------------------------------------------


def errors(
    table: CurveTable, r_max: int, known: dict[int, int], make: Callable[[int, int], Any],
    seed: int, folds: int = 5,
) -> dict[int, list[tuple[float, float]]]:
    """Per ``e``: ``(forecast, truth)`` of ``log L(R)`` for every trial that had reached ``e``."""
    logc = np.log(table.curves[:, :r_max])
    hp = np.asarray(table.hparams, dtype=np.float64) if table.hparams is not None else None
    rows = sorted(known)
    group = np.random.default_rng(seed).integers(0, folds, size=len(rows))
    es = [2**k for k in range(int(math.log2(r_max)) + 1) if 2**k < r_max]
    out: dict[int, list[tuple[float, float]]] = {e: [] for e in es}
    for f in range(folds):
        train = [r for r, g in zip(rows, group, strict=True) if g != f]
        test = [r for r, g in zip(rows, group, strict=True) if g == f]
        m = make(r_max, seed + f)
        hps = [hp[r] if hp is not None else np.zeros(0) for r in train]
        m.fit([logc[r, : known[r]] for r in train], hps)
        for e in es:
            q = [r for r in test if known[r] >= e]
            if not q:
                continue
            pred = m.predict([logc[r, :e] for r in q], [hp[r] if hp is not None else np.zeros(0)
                                                          for r in q])
            out[e].extend(zip(pred.tolist(), logc[q, r_max - 1].tolist(), strict=True))
    return out


def pair_error(pred: FloatArray, true: FloatArray) -> tuple[float, float]:
    """Share of wrongly ordered pairs: all pairs, and pairs with a true top-quarter trial."""
    n = pred.shape[0]
    if n < 2:
        return math.nan, math.nan
    i, j = np.triu_indices(n, 1)
    wrong = np.sign(pred[i] - pred[j]) != np.sign(true[i] - true[j])
    top = true <= np.quantile(true, 0.25)
    sel = top[i] | top[j]
    return float(wrong.mean()), float(wrong[sel].mean()) if sel.any() else math.nan


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", default="mlpf")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--fracs", default="0.25,0.5,1.0", help="fractions of the ASHA run's reports")
    p.add_argument("--candidates", default=",".join(CANDIDATES))
    a = p.parse_args()
    table, r_max, n = load(a.table)
    fracs = [float(f) for f in a.fracs.split(",")]
    snaps = [(s, k) for s in range(a.seeds) for k in snapshots(table, r_max, n, s, fracs)]
    print(f"### {a.table}, R = {r_max}: forecasts of log L(R) from e, {a.seeds} ASHA runs x "
          f"snapshots at {a.fracs} of their reports, 5 folds by trial\n")
    print("Cells: bias / spread (s = spread / svr spread of the noisy-oracle sweep) / wrongly "
          "ordered pairs, all | with a true top-quarter trial; n = forecasts.\n")
    names = a.candidates.split(",")
    res: dict[str, dict[int, list[tuple[float, float, float, float]]]] = {}
    counts: dict[int, int] = {}
    for name in names:
        res[name] = {}
        for s, known in snaps:
            for e, pairs in errors(table, r_max, known, CANDIDATES[name], s).items():
                if len(pairs) < 2:
                    continue
                pr, tr = (np.array(x) for x in zip(*pairs, strict=True))
                err = pr - tr
                pe, pt = pair_error(pr, tr)
                res[name].setdefault(e, []).append((float(err.mean()), float(err.std()), pe, pt))
                counts[e] = counts.get(e, 0) + len(pairs) if name == names[0] else counts.get(e, 0)
        print(f"- {name} done", file=sys.stderr, flush=True)
    es = sorted(counts)
    print("| candidate | " + " | ".join(f"e = {e} (n {counts[e]})" for e in es) + " |")
    print("|---|" + "---|" * len(es))
    for name in names:
        cells = []
        for e in es:
            v = np.array(res[name].get(e, [(math.nan,) * 4]))
            b, sd, pe, pt = np.nanmean(v, axis=0)
            s = sd / SVR_SPREAD[min(6, int(math.log2(e)))]
            cells.append(f"{100 * b:+.2f}% / {100 * sd:.2f}% (s {s:.2f}) / {pe:.3f} | {pt:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
