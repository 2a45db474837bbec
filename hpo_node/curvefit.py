"""Curve-fit forecasters of a trial's loss at R for Swift-ASHA's champion gate (``rule="gate"``).

A candidate forecasts ``log L(t)`` at a target ``t`` from a partial log curve ``log L(1..e)``:
``last`` (the loss at ``e``), ``smooth`` (a least-squares line of ``log L`` on ``log t`` over ``t
in [e/2, e]``, read at ``e``: the loss at ``e`` with the epoch noise smoothed out), ``pow3`` (a
per-curve ``log(c + a t**-alpha)`` fit with a Gaussian population prior on ``alpha`` from the
long known curves; Domhan, Springenberg & Hutter, "Speeding up automatic hyperparameter
optimization of deep neural networks by extrapolation of learning curves", IJCAI 2015) and
``smooth+pow3`` (their mean). The gate compares two trials forecast from the same resource, so
what matters is how well a candidate *orders* trials, not its bias.

:class:`GateForecaster` (``name="auto"``) picks the candidate at each refit: every candidate is
forecast on 3 held-out folds of the known curves and the one with the fewest wrongly ordered
top-quarter pairs (:func:`ordering_error`, pairs weighted by their horizon) wins; its band is
calibrated on its own held-out residuals (bias per doubling of the horizon, spread growing as
``horizon**p``). This is the forecaster ``fc=auto`` of the research instrument
``benchmarks/asha_forecasters.py`` (issue 14; benchmarks/README.md, "Swift-ASHA: a forecaster
bake-off for the champion gate"), without its research-only options. Pure numpy/scipy.

Non-positive losses (a negated metric, e.g. ``-accuracy`` of a maximising study): the candidates
work on ``v = g(L)`` where "log" above reads "``g``". ``g = log`` while every known loss is > 0;
once one is not, ``g(L) = (L - m) / s`` (*loss units*: ``m`` the median, ``s`` the standard
deviation of every known loss at the refit), so ``last``, ``smooth`` and the calibration are
affine-equivariant and ``pow3`` fits ``exp(v)``, a monotone transform of the loss (still a
decreasing power law in ``t``; the standardisation keeps it well scaled whatever the metric's
units). The forecasts are losses either way (``g^-1``); :meth:`GateForecaster.units` gives ``g``.
The choice is made at each refit; a non-positive loss reaching a forecaster fitted in log space
forces a refit in loss units at the next :meth:`GateForecaster.update`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

STATE_FORMAT = 2
"""Format version of :meth:`GateForecaster.state` (1: before loss units, still loaded)."""


def smooth_level(p: FloatArray) -> float:
    """Value at ``e`` of a least-squares line of ``log L`` on ``log t`` over ``t in [e/2, e]``;
    ``p``: the log curve up to ``e``, shape ``(e,)`` (``e < 3``: its last value)."""
    e = p.shape[0]
    if e < 3:
        return float(p[-1])
    lo = max(0, e // 2 - 1)
    t = np.log(np.arange(lo + 1, e + 1, dtype=np.float64))
    a, b = np.polyfit(t, p[lo:], 1)
    return float(a * t[-1] + b)


class Last:
    """``log L(e)``: the loss at the last known epoch (no fitted parameters)."""

    def __init__(self, max_resource: int) -> None:
        self.max_resource = max_resource

    def fit(self, curves: list[FloatArray]) -> None:
        """Fit on known log curves (each of shape ``(n_i,)``); nothing to fit here."""
        return None

    def predict(self, prefixes: list[FloatArray], target: int | None = None) -> FloatArray:
        """Forecast ``log L(target)`` (default ``max_resource``) of each log prefix, ``(m,)``."""
        return np.array([p[-1] for p in prefixes])

    def predict_targets(self, prefix: FloatArray, targets: Sequence[int]) -> list[float]:
        """Forecasts of ``log L(t)`` from one log prefix for each of ``targets``."""
        return [float(self.predict([prefix], t)[0]) for t in targets]

    def params(self) -> dict[str, Any]:
        """Fitted parameters (JSON-serialisable) that :meth:`load_params` restores."""
        return {}

    def load_params(self, params: Mapping[str, Any]) -> None:
        return None


class Smooth(Last):
    """:func:`smooth_level`: the loss at ``e`` with the epoch noise smoothed out."""

    def predict(self, prefixes: list[FloatArray], target: int | None = None) -> FloatArray:
        return np.array([smooth_level(p) for p in prefixes])


class Pow3(Last):
    """Per-curve ``log(c + a t**-alpha)`` fit on ``t <= e`` (least squares in log space, the
    recent half weighted 2x, ``0 <= c <= min L``, ``0.01 <= alpha <= 5``) with a Gaussian prior
    on ``alpha`` (median and spread, at least 0.1, of the unregularised fits of the known curves
    of >= 16 epochs, when there are >= 3; else ``(0.5, 0.5)``); prefixes under 4 epochs: the
    loss at ``e``. Domhan, Springenberg & Hutter, IJCAI 2015."""

    def __init__(self, max_resource: int) -> None:
        super().__init__(max_resource)
        self.prior = (0.5, 0.5)

    def _fit_one(self, v: FloatArray, prior: tuple[float, float] | None) -> tuple[float, ...]:
        from scipy.optimize import least_squares

        e = v.shape[0]
        t = np.arange(1.0, e + 1.0)
        y = np.exp(v)
        wt = np.where(t > e / 2, 2.0, 1.0)

        def res(q: FloatArray) -> FloatArray:
            c, a, al = q
            r = wt * (np.log(np.maximum(c + a * t**-al, 1e-12)) - v)
            if prior is None:
                return r
            return np.append(r, (al - prior[0]) / prior[1] * 0.01)

        q0 = [0.8 * y.min(), max(y[0] - 0.8 * y.min(), 1e-6), 0.5]
        sol = least_squares(res, q0, bounds=([0.0, 0.0, 0.01], [y.min(), np.inf, 5.0]))
        return tuple(float(s) for s in sol.x)

    def predict_targets(self, prefix: FloatArray, targets: Sequence[int]) -> list[float]:
        """As :meth:`predict` per target, the curve fitted once."""
        if prefix.shape[0] < 4:
            return [float(prefix[-1])] * len(targets)
        c, a, al = self._fit_one(prefix, self.prior)
        return [math.log(max(c + a * t**-al, 1e-12)) for t in targets]

    def fit(self, curves: list[FloatArray]) -> None:
        long = [c for c in curves if c.shape[0] >= 16]
        if len(long) >= 3:
            al = np.array([self._fit_one(c, None)[2] for c in long])
            self.prior = (float(np.median(al)), float(max(np.std(al), 0.1)))

    def predict(self, prefixes: list[FloatArray], target: int | None = None) -> FloatArray:
        out, r = [], target or self.max_resource
        for p in prefixes:
            if p.shape[0] < 4:
                out.append(float(p[-1]))
                continue
            c, a, al = self._fit_one(p, self.prior)
            out.append(math.log(max(c + a * r**-al, 1e-12)))
        return np.array(out)

    def params(self) -> dict[str, Any]:
        return {"prior": [float(x) for x in self.prior]}

    def load_params(self, params: Mapping[str, Any]) -> None:
        mean, sd = params["prior"]
        self.prior = (float(mean), float(sd))


class SmoothPow3(Pow3):
    """Mean of :class:`Smooth` and :class:`Pow3` (the pow3 prior is its only fitted part)."""

    def predict(self, prefixes: list[FloatArray], target: int | None = None) -> FloatArray:
        parts = [Smooth.predict(self, prefixes, target), Pow3.predict(self, prefixes, target)]
        return np.mean(parts, axis=0)


CANDIDATES: dict[str, type[Last]] = {
    "last": Last,
    "smooth": Smooth,
    "pow3": Pow3,
    "smooth+pow3": SmoothPow3,
}
"""Candidate forecasters by name: ``cls(max_resource)``, then ``fit(curves)``, ``predict``."""

AUTO = ("last", "smooth", "smooth+pow3", "pow3")
"""What ``GateForecaster("auto")`` chooses from; a tie goes to the earlier (simpler) one."""

_PARTS = {"smooth+pow3": ("smooth", "pow3")}
"""A mean candidate's held-out forecasts are the mean of its parts' (fitted separately)."""

Row = tuple[int, int, int, float, float]
"""A held-out forecast: (curve, e, target t, forecast of log L(t) from e, log L(t))."""


def ordering_error(rows: Sequence[Row]) -> tuple[float, float]:
    """Horizon-weighted top-quarter pair-ordering error of held-out forecasts.

    Pairs: two held-out curves forecast from one ``e`` to the shorter one's length ``m`` (what
    the gate compares: two trials from one resource, one target), weighted by the horizon
    ``log2(m / e)`` (over short horizons the loss at ``e`` orders well), kept when one of the two
    is in the true top quarter at ``m`` of the curves reaching ``m``. Returns (weighted wrong
    pairs, weighted pairs)."""
    by_e: dict[int, dict[int, dict[int, tuple[float, float]]]] = {}
    for c, e, t, f, y in rows:
        by_e.setdefault(e, {}).setdefault(c, {})[t] = (f, y)
    wrong = total = 0.0
    for e, cs in by_e.items():
        ids = sorted(cs)
        length = {c: max(cs[c]) for c in ids}
        tops: dict[int, float] = {}
        for i, a in enumerate(ids):
            for b in ids[i + 1:]:
                m = min(length[a], length[b])
                if m not in tops:
                    tops[m] = float(np.quantile([cs[c][m][1] for c in ids if length[c] >= m], 0.25))
                (fa, ya), (fb, yb) = cs[a][m], cs[b][m]
                if min(ya, yb) > tops[m]:
                    continue
                w = math.log2(m / e)
                total += w
                wrong += w * float(np.sign(fa - fb) != np.sign(ya - yb))
    return wrong, total


class GateForecaster:
    """A curve-fit candidate in :class:`hpo_node.forecast.FinalLossForecaster`'s place, its band
    calibrated on held-out curves.

    ``name``: ``"auto"`` or a name of :data:`CANDIDATES`. Refitted when the known epochs (curves
    of >= 2 epochs) grew by ``growth`` since the last fit (first at ``min_epochs``); each fit
    draws its seed from a generator seeded by ``seed`` (the 3 held-out folds by curve). At a
    fit every held-out curve of length ``n`` is forecast from ``e = 1, 2, 4, ... <= n / 2`` to
    ``n`` by the candidate fitted on the other folds (``"auto"``: also to every shorter known
    length ``>= 2e``, and the candidate of :data:`AUTO` with the lowest :func:`ordering_error`
    is chosen, then fitted on all curves; ``choices`` logs the picks). Calibration per ``k =
    floor(log2 e)`` with >= 5 forecasts to the curve's own end: residuals ``r`` over horizons
    ``h = log2(n / e)`` give a bias per doubling ``b_k = mean(r / h)`` and a spread ``sd_k =
    std(r / h**p)``; beyond the last calibrated ``k`` both are held. A forecast from ``e`` to R
    is ``mean = candidate - b_k H`` with ``H = log2(R / e)``, band ``mean -/+ z sd_k H**p`` (log
    space), returned as losses. Without a calibrated ``k`` at or below ``e``: NaN (no forecast).
    "Log space" is ``g`` (module doc): log, or loss units once a known loss is <= 0.

    The checkpoint (:meth:`state`) holds the chosen candidate, its fitted parameters and the
    calibration, so a restored forecaster forecasts as before without refitting.
    """

    def __init__(
        self, name: str, max_resource: int, *, z: float, p: float = 0.5, seed: int = 0,
        min_epochs: int = 30, growth: float = 0.25,
    ) -> None:
        if name != "auto" and name not in CANDIDATES:
            raise ValueError(
                f"name must be 'auto' or one of {', '.join(map(repr, CANDIDATES))}, got {name!r}"
            )
        self.name, self.max_resource, self.z, self.p = name, max_resource, z, p
        self.rng = np.random.default_rng(seed)
        self.min_epochs, self.growth = min_epochs, growth
        self.version = 0
        self.choices: list[str] = []
        self._epochs = 0
        self._chosen: str | None = None
        self._model: Last | None = None
        self._cal: dict[int, tuple[float, float]] = {}
        self._affine: tuple[float, float] | None = None  # loss units (m, s); None: log
        self._positive = True  # every loss seen by update is > 0
        self._seen: dict[str, int] = {}  # per trial: how many of its losses were checked

    @property
    def ready(self) -> bool:
        """Whether forecasts can be made (a fit with a calibration happened)."""
        return self._model is not None and bool(self._cal)

    def _held_out(
        self, names: Sequence[str], known: list[FloatArray], seed: int, pairs: bool
    ) -> dict[str, list[Row]]:
        """Per candidate: held-out forecasts (3 folds) of every curve from each ``e = 2^k <= n /
        2`` to its length ``n`` and (``pairs``) to every shorter length ``>= 2e`` of a known
        curve."""
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
                m = CANDIDATES[nm](self.max_resource)
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

    @property
    def log_space(self) -> bool:
        """Whether the current fit works on log losses (else in loss units, module doc)."""
        return self._affine is None

    def units(self, loss: float) -> float:
        """``g(loss)``: the current fit's working units (log, or loss units; module doc); NaN
        for a loss <= 0 in log space."""
        if self._affine is None:
            return math.log(loss) if loss > 0 else math.nan
        m, s = self._affine
        return (loss - m) / s

    def _scan(self, curves: Mapping[str, Sequence[float]], order: Sequence[str]) -> None:
        """Note whether a loss <= 0 is known (each loss checked once)."""
        for t in order:
            c = curves[t]
            seen = self._seen.get(t, 0)
            if len(c) > seen:
                if self._positive and not min(c[seen:]) > 0:
                    self._positive = False
                self._seen[t] = len(c)

    def _due(self, curves: Mapping[str, Sequence[float]], order: Sequence[str]) -> list[FloatArray] | None:
        """The known curves (>= 2 epochs) in working units when a refit is due (the units and
        the epoch count of the fit are set), else ``None``."""
        self._scan(curves, order)
        epochs = sum(n for n in (len(curves[t]) for t in order) if n >= 2)
        forced = self._model is not None and self._affine is None and not self._positive
        if not forced and (
            epochs < self.min_epochs or (self._epochs and epochs < (1 + self.growth) * self._epochs)
        ):
            return None
        arrays = [np.asarray(curves[t], dtype=np.float64) for t in order]
        if self._positive:
            self._affine = None
            known = [np.log(a) for a in arrays if a.shape[0] >= 2]
        else:
            every = np.concatenate(arrays)
            sd = float(np.std(every))
            self._affine = (float(np.median(every)), sd if sd > 0 and math.isfinite(sd) else 1.0)
            m, s = self._affine
            known = [(a - m) / s for a in arrays if a.shape[0] >= 2]
        self._epochs = epochs
        return known

    def update(self, curves: Mapping[str, Sequence[float]], order: Sequence[str]) -> bool:
        """Refit if due (or at once when a loss <= 0 reached a fit in log space); ``True`` when
        the forecasts changed. ``curves`` by trial id, in ``order``."""
        known = self._due(curves, order)
        if known is None:
            return False
        seed = int(self.rng.integers(2**31 - 1))
        names = AUTO if self.name == "auto" else (self.name,)
        held = self._held_out(names, known, seed, len(names) > 1)
        name = names[0]
        if len(names) > 1:
            score = {}
            for nm in names:
                wrong, total = ordering_error(held[nm])
                score[nm] = wrong / total if total else math.inf
            name = min(names, key=lambda nm: score[nm])  # ties: the earlier one
            self.choices.append(name)
        self._chosen = name
        self._model = CANDIDATES[name](self.max_resource)
        self._model.fit(known)
        found: dict[int, list[tuple[float, float]]] = {}
        for i, e, t, pred, truth in held[name]:
            if t == known[i].shape[0]:
                found.setdefault(int(math.log2(e)), []).append((pred - truth, math.log2(t / e)))
        self._calibrate(found)
        self.version += 1
        return True

    def _calibrate(self, found: Mapping[int, Sequence[tuple[float, float]]]) -> None:
        """Set the calibration from held-out ``(residual, horizon)`` pairs per ``k`` (class doc:
        bias per doubling and spread; a ``k`` needs >= 5 pairs)."""
        self._cal = {}
        for k, rs in sorted(found.items()):
            if len(rs) >= 5:
                r, h = (np.array(a) for a in zip(*rs, strict=True))
                self._cal[k] = (float(np.mean(r / h)), float(np.std(r / h**self.p)))

    def forecast(self, curves: Sequence[Sequence[float]]) -> FloatArray:
        """``(m, 3)``: low, mean, high of the loss at R for each partial curve (a curve that
        reached R: its loss there; NaN: no forecast)."""
        out = np.full((len(curves), 3), np.nan)
        r = self.max_resource
        for j, c in enumerate(curves):
            if len(c) >= r:
                out[j] = c[r - 1]
        act = [j for j, c in enumerate(curves)
               if 0 < len(c) < r and (self._affine is not None or min(c) > 0)]
        if self._model is None or not self._cal or not act:
            return out
        arrays = [np.asarray(curves[j], dtype=np.float64) for j in act]
        if self._affine is None:
            pre = [np.log(a) for a in arrays]
        else:
            shift, scale = self._affine
            pre = [(a - shift) / scale for a in arrays]
        mean = self._model.predict(pre, r)
        last = max(self._cal)
        for i, j in enumerate(act):
            e = len(curves[j])
            if min(self._cal) > math.log2(e):
                continue  # no calibrated horizon from this resource yet
            b, sd = self._cal[min(last, int(math.log2(e)))]
            h = math.log2(r / e)
            m = mean[i] - b * h
            w = self.z * sd * h**self.p
            band = np.array([m - w, m, m + w])
            out[j] = np.exp(band) if self._affine is None else band * scale + shift
        return out

    # -- checkpoint ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """JSON-serialisable checkpoint: format, refit counter, epochs at the last fit, the seed
        generator's state, the chosen candidate, its fitted parameters, the calibration and the
        working units (``affine``: ``[m, s]`` of loss units, ``None``: log)."""
        return {
            "format": STATE_FORMAT,
            "name": self.name,
            "version": self.version,
            "epochs": self._epochs,
            "rng": self.rng.bit_generator.state,
            "chosen": self._chosen,
            "params": None if self._model is None else self._model.params(),
            "cal": [[k, b, sd] for k, (b, sd) in sorted(self._cal.items())],
            "choices": list(self.choices),
            "affine": None if self._affine is None else list(self._affine),
        }

    def load(self, state: Mapping[str, Any] | None) -> None:
        """Restore :meth:`state` (``None``: a checkpoint from before this forecaster existed,
        the fresh state is kept)."""
        if state is None:
            return
        if not isinstance(state, Mapping) or state.get("format") not in (1, STATE_FORMAT):
            got = state.get("format") if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"forecaster state format must be 1 or {STATE_FORMAT}, got {got!r}")
        if state["name"] != self.name:
            raise ValueError(f"forecaster state name must be {self.name!r}, got {state['name']!r}")
        self.version = int(state["version"])
        self._epochs = int(state["epochs"])
        self.rng.bit_generator.state = dict(state["rng"])
        self._chosen = None if state["chosen"] is None else str(state["chosen"])
        self._model = None
        if self._chosen is not None:
            self._model = CANDIDATES[self._chosen](self.max_resource)
            self._model.load_params(state["params"])
        self._cal = {int(k): (float(b), float(sd)) for k, b, sd in state["cal"]}
        self.choices = [str(c) for c in state["choices"]]
        affine = state.get("affine")
        self._affine = None if affine is None else (float(affine[0]), float(affine[1]))
        self._positive = self._affine is None
        self._seen = {}

    def close(self) -> None:
        return None
