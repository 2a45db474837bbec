"""Synchronous schedulers: random search, SHA, Hyperband and Swift-Hyperband.

SHA and Hyperband follow Li et al. 2018 ("Hyperband", JMLR 18, Algorithm 1) and the SHA of Li et
al. 2020 ("Massively Parallel Hyperparameter Tuning", MLSys, Algorithm 1): every configuration of a
round trains to the round's resource ``r_i`` (resuming from ``r_{i-1}``), the best
``floor(n_i / eta)`` go on, the others stop. Rounds are barriers: nothing of round ``i + 1`` starts
before every trial of round ``i`` reported. Brackets run one after the other.

Swift-Hyperband (García Amboage et al. 2023, arXiv:2311.17508) adds a decision point inside each
round, see :class:`SwiftHyperband`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from hpo_node.core import (
    Decision,
    Job,
    Scheduler,
    TrialState,
    check_choice,
    check_float,
    check_int,
    decision_point,
    hyperband_brackets,
    rung_resource,
    s_max_for,
    top_k,
)
from hpo_node.forecast import DEFAULT_Z, SWIFT_RULES, HorizonForecaster
from hpo_node.predictors import Predictor, PredictorSupport


class _Synchronous(Scheduler):
    """Brackets of synchronous successive-halving rounds, run one bracket at a time.

    ``brackets[b] = [(n_0, r_0), ..., (n_s, r_s)]``; round ``i`` keeps ``n_{i+1}`` survivors.
    """

    def __init__(self, max_resource: int, brackets: Sequence[Sequence[tuple[int, int]]]) -> None:
        super().__init__(max_resource)
        self._brackets = [[(int(n), int(r)) for n, r in b] for b in brackets]
        self._b = 0
        self._i = 0
        self._members: list[str] = []
        self._queue: list[tuple[str, int]] = []
        self._r_prev = 0
        self._finished = False

    @property
    def brackets(self) -> list[list[tuple[int, int]]]:
        """The planned brackets ``[[(n_i, r_i), ...], ...]``."""
        return [list(b) for b in self._brackets]

    @property
    def finished(self) -> bool:
        """``True`` once every bracket completed."""
        return self._finished

    def trials_needed(self) -> int:
        return sum(b[0][0] for b in self._brackets)

    # -- driving -------------------------------------------------------------------------------

    def _next_job(self) -> Job | None:
        while True:
            if self._queue:
                tid, target = self._queue.pop(0)
                return Job(tid, target, resume=self._resource(tid) > 0)
            if self._finished or any(self._state[t] == TrialState.RUNNING for t in self._members):
                return None
            if not self._step():
                return None

    def _step(self) -> bool:
        """Advance at a barrier; ``False`` when nothing more can be queued now."""
        if not self._members:
            return self._start_bracket()
        if self._barrier():
            return True
        rounds = self._brackets[self._b]
        r_i = rounds[self._i][1]
        reached = [t for t in self._members if self._resource(t) >= r_i]
        if self._i + 1 < len(rounds):
            n_next = rounds[self._i + 1][0]
            losses = {t: self._loss_at(t, r_i) for t in reached}
            survivors = top_k(reached, losses, n_next)
            for t in self._members:
                if t not in survivors:
                    self._stop_paused(t)
            self._members = survivors
            self._i += 1
            self._r_prev = r_i
            self._start_round()
            return True
        for t in self._members:
            self._stop_paused(t)
        self._members = []
        self._b += 1
        if self._b >= len(self._brackets):
            self._finished = True
            return False
        return self._start_bracket()

    def _start_bracket(self) -> bool:
        n = self._brackets[self._b][0][0]
        if len(self._pending) < n:
            return False
        self._members = self._pending[:n]
        del self._pending[:n]
        self._i = 0
        self._r_prev = 0
        self._start_round()
        return True

    def _round_target(self) -> int:
        return self._brackets[self._b][self._i][1]

    def _n_next(self) -> int:
        rounds = self._brackets[self._b]
        return rounds[self._i + 1][0] if self._i + 1 < len(rounds) else 0

    # -- hooks (plain successive halving) ------------------------------------------------------

    def _start_round(self) -> None:
        r_i = self._round_target()
        self._queue = [(t, r_i) for t in self._members]

    def _barrier(self) -> bool:
        """Called when the round's queue is empty and nothing runs; ``True`` if it queued work."""
        return False

    def _on_report(self, trial_id: str, resource: int, loss: float) -> Decision:
        if resource < self._target[trial_id]:
            return Decision.CONTINUE
        return Decision.STOP if resource >= self.max_resource else Decision.PAUSE

    def _extra_state(self) -> dict[str, Any]:
        return {
            "b": self._b,
            "i": self._i,
            "members": list(self._members),
            "queue": [[t, r] for t, r in self._queue],
            "r_prev": self._r_prev,
            "finished": self._finished,
        }

    def _load_extra_state(self, extra: Mapping[str, Any]) -> None:
        self._b = int(extra["b"])
        self._i = int(extra["i"])
        self._members = list(extra["members"])
        self._queue = [(str(t), int(r)) for t, r in extra["queue"]]
        self._r_prev = int(extra["r_prev"])
        self._finished = bool(extra["finished"])


def _check_eta(eta: int) -> int:
    return check_int("eta", eta, 2)


class RandomSearch(_Synchronous):
    """Baseline: ``n_trials`` configurations, each trained to ``max_resource``."""

    name = "random"

    def __init__(self, max_resource: int, n_trials: int) -> None:
        check_int("max_resource", max_resource, 1)
        n = check_int("n_trials", n_trials, 1)
        super().__init__(max_resource, [[(n, max_resource)]])


class SuccessiveHalving(_Synchronous):
    """Synchronous SHA: ``n`` configurations, rungs ``r_i = R eta**(i + s - s_max)``.

    ``s_max = floor(log_eta(R / min_resource))``; rounds ``i = 0 .. s_max - s`` with
    ``n_i = floor(n eta**-i)``; requires ``n >= eta**(s_max - s)`` so that one configuration
    reaches R (Li et al. 2020, Algorithm 1; the top rung is R itself).
    """

    name = "sha"

    def __init__(
        self,
        max_resource: int,
        eta: int = 3,
        n_trials: int | None = None,
        min_resource: int = 1,
        early_stopping_rate: int = 0,
    ) -> None:
        r_max = check_int("max_resource", max_resource, 1)
        eta = _check_eta(eta)
        r_min = check_int("min_resource", min_resource, 1)
        if r_min > r_max:
            raise ValueError(f"min_resource must be <= max_resource ({r_max}), got {r_min}")
        s_max = s_max_for(r_max, r_min, eta)
        s = check_int("early_stopping_rate", early_stopping_rate, 0)
        if s > s_max:
            raise ValueError(f"early_stopping_rate must be <= s_max = {s_max}, got {s}")
        need = eta ** (s_max - s)
        n = need if n_trials is None else check_int("n_trials", n_trials, 1)
        if n < need:
            raise ValueError(f"n_trials must be >= eta**(s_max - s) = {need}, got {n}")
        rounds = [
            (n // eta**i, rung_resource(r_max, eta, s_max - s - i)) for i in range(s_max - s + 1)
        ]
        super().__init__(r_max, [rounds])
        self.eta = eta


class Hyperband(_Synchronous):
    """Synchronous Hyperband (Li et al. 2018): SHA brackets ``s = s_max, ..., 0``.

    ``n = ceil((s_max + 1) eta**s / (s + 1))`` configurations start bracket ``s`` at
    ``r = R eta**-s``; resources are rounded half-to-even (see
    :func:`hpo_node.core.rung_resource`). With R = 100, eta = 2 a run costs 3213 epochs.
    """

    name = "hyperband"

    def __init__(self, max_resource: int, eta: int = 3, min_resource: int = 1) -> None:
        r_max = check_int("max_resource", max_resource, 1)
        eta = _check_eta(eta)
        r_min = check_int("min_resource", min_resource, 1)
        if r_min > r_max:
            raise ValueError(f"min_resource must be <= max_resource ({r_max}), got {r_min}")
        super().__init__(r_max, [b for _, b in hyperband_brackets(r_max, eta, r_min)])
        self.eta = eta


class OneEpoch(_Synchronous):
    """The one-epoch baseline (Egele et al. 2023, arXiv:2307.15422): train every one of
    ``n_trials`` configurations ``min_resource`` epochs, then the ``top_k`` best there to R.

    ``top_k`` defaults to ``max(1, n_trials // eta**s_max)``, as many as ASHA brings to R from
    ``n_trials`` configurations (2 of 163 for R = 100, eta = 2).
    """

    name = "one-epoch"

    def __init__(
        self,
        max_resource: int,
        eta: int = 3,
        n_trials: int | None = None,
        *,
        top_k: int | None = None,
        min_resource: int = 1,
    ) -> None:
        r_max = check_int("max_resource", max_resource, 1)
        eta = _check_eta(eta)
        r_min = check_int("min_resource", min_resource, 1)
        if r_min >= r_max:
            raise ValueError(f"min_resource must be < max_resource ({r_max}), got {r_min}")
        s_max = s_max_for(r_max, r_min, eta)
        n = eta**s_max if n_trials is None else check_int("n_trials", n_trials, 1)
        k = max(1, n // eta**s_max) if top_k is None else check_int("top_k", top_k, 1)
        if k > n:
            raise ValueError(f"top_k must be <= n_trials ({n}), got {k}")
        super().__init__(r_max, [[(n, r_min), (k, r_max)]])
        self.eta = eta
        self.top_k = k


def hparam_matrix(rows: Sequence[Mapping[str, float]]) -> np.ndarray:
    """Hyperparameter dicts -> matrix ``(n, h)``, columns in sorted key order (missing: 0)."""
    keys = sorted({k for r in rows for k in r})
    return np.array([[r.get(k, 0.0) for k in keys] for r in rows], dtype=np.float64).reshape(
        len(rows), len(keys)
    )


SCALE_FREE_POINTS = 10


def scale_free_window(curve: Sequence[float]) -> np.ndarray:
    """Shape of a partial curve, independent of its length and level, shape ``(10,)``.

    ``log L(f e) - log L(e)`` at ``f = 0.1, 0.2, ..., 1`` of the window end ``e`` (linear
    interpolation between epochs; before epoch 1 the first loss is used). Losses must be > 0.
    """
    c = np.asarray(curve, dtype=np.float64)
    end = c.shape[0]
    at = np.interp(np.linspace(end / SCALE_FREE_POINTS, end, SCALE_FREE_POINTS),
                   np.arange(1, end + 1, dtype=np.float64), c)
    if np.any(at <= 0):
        raise ValueError("scale_free needs positive losses, got a loss <= 0")
    return np.log(at) - np.log(at[-1])


def scale_free_pairs(
    curves: Sequence[Sequence[float]], ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """Training pairs of the scale-free predictor from every window of the known ``curves``.

    For each curve and window end ``e`` with a later epoch ``e' = round(ratio · e)`` on the curve
    (``e'/e`` within 5% of ``ratio``): the window's shape (:func:`scale_free_window`) and the
    target ``log L(e') − log L(e)``. Returns x: (m, 10) and y: (m,).
    """
    windows, targets = [], []
    for curve in curves:
        for end in range(2, len(curve) + 1):
            target = round(ratio * end)
            if end < target <= len(curve) and abs(target / end - ratio) <= 0.05 * ratio:
                windows.append(scale_free_window(curve[:end]))
                targets.append(np.log(curve[target - 1]) - np.log(curve[end - 1]))
    return np.array(windows).reshape(-1, SCALE_FREE_POINTS), np.array(targets)


class SwiftHyperband(Hyperband):
    """Hyperband whose rounds stop configurations that cannot make the cut, by forecast.

    ``rule="forecast"`` (default, issue 14): every configuration of a round (from ``r_prev`` to
    ``r_i``, ``n_next`` survivors, 1 in a bracket's last round) is judged at the decision points
    ``r_prev + ceil((r_i - r_prev) f)`` for ``f = known_curve, 2 known_curve, ...`` below 1
    (default 1/8, 1/4, 1/2): all alive configurations train to the point, a
    :class:`HorizonForecaster` forecasts each one's loss at R as a band ``low <= mean`` (``z``
    spreads calibrated at the forecast's horizon; default z = 1.5), and those whose ``low`` is
    above the ``n_next``-th best mean stop; the best-forecast configuration and the one with the
    lowest loss at the point always go on. Survivors are then SHA's: the best ``n_next`` at
    ``r_i``. The "send ``k n_next`` configurations to ``r_i`` first" and "collect ``d`` curves"
    rules of the paper are not needed (the forecaster learns from windows of every curve; ``d``
    counts windows). With a :class:`hpo_node.predictors.TableOracle` the forecast is the true loss
    at R (the ceiling).

    ``rule="paper"``: Swift-Hyperband as published (García Amboage et al. 2023,
    arXiv:2311.17508), with the options below.

    Inside each round (``n_i`` configs from ``r_prev`` to ``r_i``, ``n_next`` survivors; 1 in a
    bracket's last round) every config first trains to the decision point
    ``r_prev + ceil((r_i - r_prev) known_curve)``. Configs reaching it go straight on to ``r_i``
    while fewer than ``k n_next`` were sent on, or while the curves known at ``r_i`` plus those
    in flight are fewer than ``d``; the others pause. Once all reported, a predictor (fitted on the
    known curves cut at the decision point -> loss at ``r_i``; one fit per decision point) scores the
    paused ones: those predicted below the ``threshold_quantile`` quantile of the losses at ``r_i``
    of the configs sent on continue to ``r_i``, the rest stop; if fewer than ``n_next`` would reach
    ``r_i`` the best predicted fill up. Survivors are the best ``n_next`` at ``r_i``. Rounds whose
    decision point equals ``r_i`` are plain SHA rounds.

    ``pool_curves=True`` (default) counts as "known at ``r_i``" every trial that has reached
    ``r_i`` in any round or bracket (its loss at ``r_i`` is known); ``False`` counts only trials
    that completed a round whose target was ``r_i``, as the reference code does.

    ``scale_free=True`` (not in the paper) trains the predictor on windows instead of whole curves:
    every known curve ``L`` and every window end ``e`` with ``round(e r_i / dp) = e'`` within the
    curve (and ``e' / e`` within 5% of ``r_i / dp``) give the input
    :func:`scale_free_window` ``(L[:e])`` and the target ``log L(e') - log L(e)``; at most
    ``max_windows`` windows (a seeded subset) are used. The predicted loss at ``r_i`` is
    ``L(dp) exp(prediction)``. Learning curves are close to self-similar in log-time (power laws
    are exactly), so windows at small resources inform predictions at large ones and the predictor
    exists from the first rounds on; the rule that trains extra configs fully until ``d`` curves are
    known is dropped (``d`` then counts windows).

    ``fallback="last-value"`` (not in the paper) drops the rule that trains extra configs fully
    until ``d`` curves are known; a round whose predictor cannot be fitted yet ranks the paused
    configs by their loss at the decision point against the ``threshold_quantile`` quantile of the
    sent-on configs' losses at the decision point (the identity predictor, SHA's own criterion).
    """

    name = "swift-hyperband"

    def __init__(
        self,
        max_resource: int,
        eta: int = 3,
        predictor: Callable[[], Predictor] | None = None,
        *,
        rule: str = "forecast",
        d: int = 15,
        k: float = 0.5,
        known_curve: float | None = None,
        z: float | None = None,
        threshold_quantile: float = 0.25,
        pool_curves: bool = True,
        fallback: str = "none",
        scale_free: bool = False,
        max_windows: int = 400,
        min_resource: int = 1,
        seed: int | None = None,
    ) -> None:
        super().__init__(max_resource, eta, min_resource)
        if predictor is None:
            raise TypeError("predictor must be a callable returning a Predictor, got None")
        self.rule = check_choice("rule", rule, SWIFT_RULES)
        self.d = check_int("d", d, 2)
        self.k = check_float("k", k, 0.0, 1.0, low_open=True)
        if known_curve is None:
            known_curve = 0.125 if self.rule == "forecast" else 0.5
        self.known_curve = check_float("known_curve", known_curve, 0.0, 1.0, low_open=True)
        self.z = check_float(
            "z", DEFAULT_Z["swift-hyperband", self.rule] if z is None else z, 0.0, float("inf"),
            high_open=True,
        )
        self.threshold_quantile = check_float("threshold_quantile", threshold_quantile, 0.0, 1.0)
        if not isinstance(pool_curves, bool):
            raise TypeError(f"pool_curves must be a bool, got {pool_curves!r}")
        self.pool_curves = pool_curves
        self.fallback = check_choice("fallback", fallback, ("none", "last-value"))
        if not isinstance(scale_free, bool):
            raise TypeError(f"scale_free must be a bool, got {scale_free!r}")
        self.scale_free = scale_free
        if self.rule == "forecast" and (scale_free or self.fallback != "none"):
            raise ValueError(
                "scale_free and fallback are options of rule='paper', got rule='forecast' with "
                f"scale_free={scale_free}, fallback={fallback!r}"
            )
        self.max_windows = check_int("max_windows", max_windows, 2)
        self._support = PredictorSupport(predictor, seed)
        self._forecaster = HorizonForecaster(
            self._support, self.max_resource, z=self.z, min_pairs=self.d,
            max_windows=self.max_windows,
        )
        self._stages: list[int] = []
        self._stage = 0
        self._phase = "full"
        self._dp = 0
        self._sent: list[str] = []
        self._partials: list[str] = []
        self._round_done: dict[int, list[str]] = {}

    def predictor_calls(self) -> dict[str, int]:
        return {"fit": self._support.fits, "predict": self._support.predicts}

    def close(self) -> None:
        self._forecaster.close()
        self._support.close()

    def _on_fail(self, trial_id: str) -> None:
        """A lost trial leaves the round's sent and partial trials (rule ``paper``)."""
        for group in (self._sent, self._partials):
            if trial_id in group:
                group.remove(trial_id)

    def _known(self, resource: int) -> list[str]:
        if self.pool_curves:
            return [t for t in self._order if self._resource(t) >= resource]
        return list(self._round_done.get(resource, []))

    def _start_round(self) -> None:
        if self.rule == "forecast":
            self._start_staged_round()
            return
        r_i = self._round_target()
        dp = decision_point(self._r_prev, r_i, self.known_curve)
        self._sent, self._partials = [], []
        if dp >= r_i:
            self._phase = "full"
            self._queue = [(t, r_i) for t in self._members]
        else:
            self._phase = "partial"
            self._dp = dp
            self._queue = [(t, dp) for t in self._members]

    def report(self, trial_id: str, resource: int, loss: float) -> Decision:
        if self.scale_free and not float(loss) > 0:
            raise ValueError(f"loss must be > 0 with scale_free=True, got {loss}")
        return super().report(trial_id, resource, loss)

    def _on_report(self, trial_id: str, resource: int, loss: float) -> Decision:
        r_i = self._round_target()
        if self._phase == "partial" and resource == self._dp and self._target[trial_id] == self._dp:
            n_next = max(self._n_next(), 1)
            in_flight = sum(1 for t in self._sent if self._resource(t) < r_i)
            collect = (
                self.fallback == "none"
                and not self.scale_free
                and in_flight < self.d - len(self._known(r_i))
            )
            if len(self._sent) < self.k * n_next or collect:
                self._sent.append(trial_id)
                self._target[trial_id] = r_i
                return Decision.CONTINUE
            self._partials.append(trial_id)
            return Decision.PAUSE
        if resource < self._target[trial_id]:
            return Decision.CONTINUE
        if resource == r_i:
            self._round_done.setdefault(r_i, []).append(trial_id)
        return Decision.STOP if resource >= self.max_resource else Decision.PAUSE

    # -- rule "forecast" -------------------------------------------------------------------------

    def _start_staged_round(self) -> None:
        """Decision points at ``known_curve``, ``2 known_curve``, ... of the round (below 1)."""
        r_i = self._round_target()
        fractions = []
        f = self.known_curve
        while f < 1.0:
            fractions.append(f)
            f *= 2.0
        self._stages = sorted(
            {decision_point(self._r_prev, r_i, f) for f in fractions} - {r_i}
        )
        self._stage = 0
        self._phase = "staged" if self._stages else "full"
        first = self._stages[0] if self._stages else r_i
        self._queue = [(t, first) for t in self._members]

    def _staged_barrier(self) -> bool:
        """At a decision point: keep the configs whose optimistic forecast at R makes the cut."""
        dp = self._stages[self._stage]
        alive = [
            t for t in self._members
            if self._state[t] == TrialState.PAUSED and self._resource(t) == dp
        ]
        keep = self._forecast_keep(alive, dp)
        for t in alive:
            if t not in keep:
                self._stop_paused(t)
        self._stage += 1
        r_i = self._round_target()
        nxt = self._stages[self._stage] if self._stage < len(self._stages) else r_i
        if nxt == r_i:
            self._phase = "full"
        self._queue = [(t, nxt) for t in alive if t in keep]
        return bool(self._queue)

    def _forecast_keep(self, alive: list[str], dp: int) -> set[str]:
        """Configs among ``alive`` (all at ``dp``) to train on (see class doc)."""
        n_next = max(self._n_next(), 1)
        if len(alive) <= n_next:
            return set(alive)
        self._forecaster.update(self._curve, self._order)
        band = self._forecaster.forecast([self._curve[t][:dp] for t in alive])
        if np.any(np.isnan(band)):
            return set(alive)
        cut = float(np.sort(band[:, 1])[n_next - 1])
        keep = {t for t, low in zip(alive, band[:, 0], strict=True) if low <= cut}
        keep.add(alive[int(np.argmin(band[:, 1]))])
        keep.add(min(alive, key=lambda t: self._loss_at(t, dp)))
        for t, (low, mean, high) in zip(alive, band, strict=True):
            if t not in keep:
                self._record_prediction(t, mean, (high - low) / 2.0, at=self.max_resource)
        return keep

    def _barrier(self) -> bool:
        if self._phase == "staged":
            return self._staged_barrier()
        if self._phase != "partial":
            return False
        self._phase = "full"
        if not self._partials:
            return False
        r_i = self._round_target()
        selected = self._select(r_i)
        for t in self._partials:
            if t not in selected:
                self._stop_paused(t)
        self._queue = [(t, r_i) for t in self._partials if t in selected]
        return bool(self._queue)

    def _select(self, r_i: int) -> set[str]:
        """Partials that continue to ``r_i``: one fit, one batched predict."""
        dp = self._dp
        if self.scale_free:
            return self._select_scale_free(r_i)
        known = self._known(r_i)
        if len(known) < max(self.d, 2):
            if self.fallback == "none":
                return set(self._partials)
            mean = np.array([self._loss_at(t, dp) for t in self._partials])
            ref = np.array([self._loss_at(t, dp) for t in self._sent])
            return self._threshold_select(mean, ref, r_i)
        model = self._support.fit(
            np.array([self._curve[t][:dp] for t in known]),
            np.array([self._loss_at(t, r_i) for t in known]),
            hparam_matrix([self._hparams[t] for t in known]),
            self._support.next_seed(),
        )
        mean, spread = self._support.predict(
            model,
            np.array([self._curve[t][:dp] for t in self._partials]),
            hparam_matrix([self._hparams[t] for t in self._partials]),
        )
        self._support.release(model)
        return self._threshold_select(
            mean, np.array([self._loss_at(t, r_i) for t in self._sent]), r_i, spread
        )

    def _select_scale_free(self, r_i: int) -> set[str]:
        """Predict ``log L(r_i) - log L(dp)`` from windows of every known curve (see class doc)."""
        dp = self._dp
        x, y = scale_free_pairs([self._curve[t] for t in self._order], r_i / dp)
        if x.shape[0] < max(self.d, 2):
            if self.fallback == "none":
                return set(self._partials)
            mean = np.array([self._loss_at(t, dp) for t in self._partials])
            ref = np.array([self._loss_at(t, dp) for t in self._sent])
            return self._threshold_select(mean, ref, r_i)
        rng = np.random.default_rng(self._support.next_seed())
        if x.shape[0] > self.max_windows:
            keep = np.sort(rng.choice(x.shape[0], size=self.max_windows, replace=False))
            x, y = x[keep], y[keep]
        model = self._support.fit(x, y, None, self._support.next_seed())
        step, spread = self._support.predict(
            model, np.array([scale_free_window(self._curve[t][:dp]) for t in self._partials]), None
        )
        self._support.release(model)
        mean = np.array([self._loss_at(t, dp) for t in self._partials]) * np.exp(step)
        return self._threshold_select(
            mean, np.array([self._loss_at(t, r_i) for t in self._sent]), r_i, mean * spread
        )

    def _threshold_select(
        self, mean: np.ndarray, reference: np.ndarray, r_i: int, spread: np.ndarray | None = None
    ) -> set[str]:
        """Partials scored ``mean`` (a loss at ``r_i``) below the quantile of ``reference``,
        filled up to n_next; with a predictor's ``spread`` the others are recorded as stopped by
        prediction."""
        if reference.size == 0:  # every sent trial was lost: nothing to compare with
            return set(self._partials)
        threshold = float(np.quantile(reference, self.threshold_quantile))
        selected = [t for t, m in zip(self._partials, mean, strict=True) if m < threshold]
        n_next = max(self._n_next(), 1)
        if len(selected) + len(self._sent) < n_next:
            order = np.argsort(mean, kind="stable")
            selected = [self._partials[j] for j in order[: n_next - len(self._sent)]]
        if spread is not None:
            for t, m, s in zip(self._partials, mean, spread, strict=True):
                if t not in selected:
                    self._record_prediction(t, m, s, at=r_i)
        return set(selected)

    def _extra_state(self) -> dict[str, Any]:
        extra = super()._extra_state()
        extra.update(
            phase=self._phase,
            dp=self._dp,
            sent=list(self._sent),
            partials=list(self._partials),
            round_done={str(r): list(v) for r, v in self._round_done.items()},
            support=self._support.state(),
            stages=list(self._stages),
            stage=self._stage,
            forecaster=self._forecaster.state(),
        )
        return extra

    def _load_extra_state(self, extra: Mapping[str, Any]) -> None:
        super()._load_extra_state(extra)
        self._phase = str(extra["phase"])
        self._dp = int(extra["dp"])
        self._sent = list(extra["sent"])
        self._partials = list(extra["partials"])
        self._round_done = {int(r): list(v) for r, v in extra["round_done"].items()}
        self._support.load(extra["support"])
        self._stages = [int(r) for r in extra.get("stages", [])]
        self._stage = int(extra.get("stage", 0))
        self._forecaster.load(extra.get("forecaster"))

