"""Asynchronous successive halving: ASHA (promotion and stopping variants) and Swift-ASHA.

ASHA follows Algorithm 2 of Li et al. 2020 ("Massively Parallel Hyperparameter Tuning", MLSys):
rungs ``r_k = R eta**(k + s - s_max)``, ``k = 0 .. s_max - s``; a free worker promotes the best
not-yet-promoted trial among the top ``floor(|rung k| / eta)`` of the highest rung that has one,
otherwise starts a new configuration at the bottom rung. One guard is added to Algorithm 2: at
most ``floor(|rung k| / eta)`` trials are ever promoted out of rung ``k`` (without it, a trial
promoted early that later drops out of the top set lets one more through). The stopping variant
trains every trial towards R and stops it at a rung unless its loss is within the rung's ``1/eta``
quantile.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
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
    rung_resource,
    s_max_for,
    top_k,
)
from hpo_node.curvefit import CANDIDATES, GateForecaster
from hpo_node.forecast import DEFAULT_Z, RULES, FinalLossForecaster
from hpo_node.hyperband import hparam_matrix, scale_free_pairs, scale_free_window
from hpo_node.predictors import Predictor, PredictorSupport


class ASHA(Scheduler):
    """Asynchronous successive halving over ``n_trials`` configurations.

    ``mode="promotion"`` (Algorithm 2): trials pause at each rung and are resumed when promoted.
    ``mode="stopping"``: trials run towards R and are stopped at rung ``k`` when their loss is above
    the ``1/eta`` quantile (linear interpolation) of the losses recorded at rung ``k`` so far.
    """

    name = "asha"

    def __init__(
        self,
        max_resource: int,
        eta: int = 3,
        n_trials: int | None = None,
        *,
        min_resource: int = 1,
        early_stopping_rate: int = 0,
        mode: str = "promotion",
    ) -> None:
        super().__init__(max_resource)
        self.eta = check_int("eta", eta, 2)
        r_min = check_int("min_resource", min_resource, 1)
        if r_min > self.max_resource:
            raise ValueError(f"min_resource must be <= max_resource ({self.max_resource}), got {r_min}")
        s_max = s_max_for(self.max_resource, r_min, self.eta)
        s = check_int("early_stopping_rate", early_stopping_rate, 0)
        if s > s_max:
            raise ValueError(f"early_stopping_rate must be <= s_max = {s_max}, got {s}")
        self.n_trials = None if n_trials is None else check_int("n_trials", n_trials, 1)
        self.mode = check_choice("mode", mode, ("promotion", "stopping"))
        self.rungs = [
            rung_resource(self.max_resource, self.eta, s_max - s - k) for k in range(s_max - s + 1)
        ]
        self._members: list[list[str]] = [[] for _ in self.rungs]
        self._losses: list[dict[str, float]] = [{} for _ in self.rungs]
        self._promoted: list[list[str]] = [[] for _ in self.rungs]
        self._lost: set[str] = set()  # trials the engine lost (Scheduler.fail)
        self._started = 0

    @property
    def trials_to_reach_max_resource(self) -> int:
        """Fewest trials for one to reach ``max_resource``: ``eta**(len(rungs) - 1)`` when
        promoting (each rung promotes its best ``1/eta``), 1 when stopping."""
        return self.eta ** (len(self.rungs) - 1) if self.mode == "promotion" else 1

    def too_few_trials_note(self, n_trials: int, key: str = "n_trials") -> str | None:
        """What to tell a user whose ``n_trials`` (set as ``key``) is below
        :attr:`trials_to_reach_max_resource`, or ``None``: no trial could reach R."""
        need = self.trials_to_reach_max_resource
        if n_trials >= need:
            return None
        return (f"warning: {key} = {n_trials} is fewer than the {need} that {self.name} needs for any "
                f"trial to reach max_resource = {self.max_resource} (each rung promotes its best "
                f"1/eta: rungs at {', '.join(map(str, self.rungs))} epochs, eta = {self.eta}): "
                f"the study will find no best at R; give at least {need}")

    def trials_needed(self) -> int | None:
        return self.n_trials

    def rung_members(self, k: int) -> list[str]:
        """Trials recorded at rung ``k`` (with their loss there) in arrival order."""
        return list(self._members[k])

    def rung_size(self, k: int) -> int:
        """Size of rung ``k`` for the promotion quota ``floor(size / eta)``."""
        return len(self._members[k])

    def rung_loss(self, k: int, trial_id: str) -> float:
        """Loss of ``trial_id`` recorded at rung ``k``."""
        return self._losses[k][trial_id]

    def promoted(self, k: int) -> list[str]:
        """Trials promoted out of rung ``k`` in promotion order."""
        return list(self._promoted[k])

    # -- driving -------------------------------------------------------------------------------

    def _next_job(self) -> Job | None:
        if self.mode == "promotion":
            for k in range(len(self.rungs) - 2, -1, -1):
                tid = self._promotable(k)
                if tid is not None:
                    self._promoted[k].append(tid)
                    return Job(tid, self.rungs[k + 1], resume=True)
        if self.n_trials is not None and self._started >= self.n_trials:
            return None
        tid = self._take_pending()
        if tid is None:
            return None
        self._started += 1
        target = self.rungs[0] if self.mode == "promotion" else self.max_resource
        return Job(tid, target, resume=False)

    def _promotable(self, k: int) -> str | None:
        members = self._members[k]
        quota = self.rung_size(k) // self.eta
        if len(self._promoted[k]) >= quota:
            return None
        done = set(self._promoted[k])
        # a lost trial (Scheduler.fail) counts in the rung's size but is no candidate
        alive = [t for t in members if t in done or t not in self._lost]
        candidates = top_k(alive, self._losses[k], quota)
        for t in candidates:
            if t not in done and self._state[t] == TrialState.PAUSED:
                return t
        return None

    def _on_fail(self, trial_id: str) -> None:
        """A lost trial promoted out of a rung that never reached the next one gives its
        promotion slot back (the next candidate is promoted instead)."""
        self._lost.add(trial_id)
        for k in range(len(self.rungs) - 1):
            if trial_id in self._promoted[k] and trial_id not in self._losses[k + 1]:
                self._promoted[k].remove(trial_id)

    def _rung_index(self, resource: int) -> int | None:
        try:
            return self.rungs.index(resource)
        except ValueError:
            return None

    def _record(self, k: int, trial_id: str, loss: float) -> None:
        self._members[k].append(trial_id)
        self._losses[k][trial_id] = loss

    def _on_report(self, trial_id: str, resource: int, loss: float) -> Decision:
        k = self._rung_index(resource)
        if k is not None and trial_id not in self._losses[k]:
            self._record(k, trial_id, loss)
            if resource >= self.max_resource:
                return Decision.STOP
            if self.mode == "stopping":
                cut = self._stopping_cut(list(self._losses[k].values()))
                return Decision.STOP if loss > cut else Decision.CONTINUE
        if resource < self._target[trial_id]:
            return Decision.CONTINUE
        return Decision.STOP if resource >= self.max_resource else Decision.PAUSE

    def _stopping_cut(self, losses: list[float]) -> float:
        """The stopping variant's cut: the ``1/eta`` quantile (linear interpolation) of ``losses``."""
        return float(np.quantile(losses, 1.0 / self.eta))

    def _extra_state(self) -> dict[str, Any]:
        return {
            "members": [list(m) for m in self._members],
            "losses": [dict(v) for v in self._losses],
            "promoted": [list(p) for p in self._promoted],
            "lost": sorted(self._lost),
            "started": self._started,
        }

    def _load_extra_state(self, extra: Mapping[str, Any]) -> None:
        self._members = [list(m) for m in extra["members"]]
        self._losses = [{t: float(x) for t, x in v.items()} for v in extra["losses"]]
        self._promoted = [list(p) for p in extra["promoted"]]
        self._lost = {str(t) for t in extra.get("lost", [])}
        self._started = int(extra["started"])


GATE_FORECASTERS = ("auto", *CANDIDATES, "predictor")
"""``forecaster`` choices of ``rule="gate"``: :class:`hpo_node.curvefit.GateForecaster`'s
(``auto`` or one candidate) or ``predictor`` (the step model on the scheduler's predictor)."""

GATE_PROTECT = 0.125
"""Gate: default ``protect``, the share of the trials at a resource whose best are never paused
there (issue 14: on the synthetic-12 replay table it lowered the gate's regret from 0.0101 to
0.0081 and raised its savings from 30% to 39%; benchmarks/README.md)."""

GATE_TOL = 0.02
"""Gate: how far (log) a guard's forecast from its newest resource may rise above its forecast
from the shared resource before it must dominate from there too (issue 14, ``tol``); in the
forecaster's units (``SwiftASHA._held_up``), which are loss units once a loss is <= 0."""


def _fit_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpointed fit-log entry: training ids, seed, and (scale-free fits) curve lengths."""
    out: dict[str, Any] = {"ids": [str(t) for t in entry["ids"]], "seed": int(entry["seed"])}
    if "lens" in entry:
        out["lens"] = [int(n) for n in entry["lens"]]
    return out


def _default_rule(mode: str) -> str:
    """Swift-ASHA's rule when none is given: the gate; the published rule with ``mode="stopping"``
    (the only rule with a stopping variant)."""
    return "paper" if mode == "stopping" else "gate"


def swift_asha_calls_predictor(options: Mapping[str, Any]) -> bool:
    """Whether ``SwiftASHA(..., **options)`` calls its predictor: every rule but the gate with
    its curve fits (the default rule; ``"paper"`` with ``mode="stopping"``)."""
    rule = options.get("rule") or _default_rule(options.get("mode", "promotion"))
    return rule != "gate" or options.get("forecaster") == "predictor"


def swift_asha_on_predictor(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with every decision of ``SwiftASHA`` on its predictor: the gate's curve fits
    call none, so the gate gets ``forecaster="predictor"`` (with a
    :class:`hpo_node.predictors.TableOracle`: the rule's ceiling)."""
    out = dict(options)
    if (out.get("rule") or _default_rule(out.get("mode", "promotion"))) == "gate":
        out.setdefault("forecaster", "predictor")
    return out


def _no_predictor() -> Predictor:
    """The predictor factory of a gate whose curve fits call none (``predictor=None``)."""
    raise TypeError("this Swift-ASHA was built without a predictor (rule='gate' with curve fits)")


class SwiftASHA(ASHA):
    """ASHA (promotion variant) that stops or pauses trials predicted not to make the cut.

    Rules: ``"gate"`` (the default; ``"paper"`` with ``mode="stopping"``), ``"forecast"`` (both
    issue 14) and ``"paper"`` (the published rule), all below. ``rule="forecast"``: a
    :class:`hpo_node.forecast.FinalLossForecaster` (the predictor learns one scale-free step of
    the curve from windows of every known curve, iterated to R, spread calibrated by
    cross-validation) forecasts each trial's loss at R as a
    band ``low <= mean`` (``low = mean - z spread`` in log space). On its way from ``r_from`` to
    rung ``r_to`` a trial is judged after ``1, 2, 4, ...`` epochs of the job: the cut is the
    ``floor(size / eta)``-th best mean forecast among the members of rung ``r_to`` (the trial
    counted in the size), or the best loss at R so far if lower; if even ``low`` is above the cut
    the trial is paused there (counted in the rung's size, so ASHA's promotion quota is that of
    ASHA) and resumed to ``r_to`` as soon as its ``low`` makes the cut again (the rung grew). The
    trial with the lowest loss at its resource is never paused. With a
    :class:`hpo_node.predictors.TableOracle` the forecast is the true loss at R (the rule's
    ceiling). ``d``: windows needed before the first fit; ``top_rung=False``: no decision on the
    way to R. Until a forecast exists the trial runs as under ASHA.

    ``rule="gate"`` (the champion gate, issue 14): a trial is paused on its way to a rung, or
    held instead of a promotion, when a *guard* dominates it: the guard's pessimistic forecast at
    R is below the trial's optimistic one, both forecast from the same resource ``min(r,
    r_guard)`` (a bias shared by forecasts from one resource cancels); a guard that got further
    and whose mean forecast from its newest resource rose above that by more than
    :data:`GATE_TOL` (log) must dominate from there too. Guards: every trial that reached R and
    the *champion*, the trial with the best forecast (a reporting trial replaces it when it
    dominates it); when nothing else can run, the paused champion is trained to R, so every
    pause is backed by a trial that reaches R. The champion, a trial committed to R and the
    trial leading at its resource are never paused; a paused trial resumes (first in start
    order) once no guard dominates it. ``forecaster``: ``"auto"`` (default; the curve fits of
    :mod:`hpo_node.curvefit`, chosen per refit by held-out pair ordering), one candidate there
    (``"last"``, ``"smooth"``, ``"pow3"``, ``"smooth+pow3"``), or ``"predictor"`` (the forecast
    rule's step model on ``predictor``; with a :class:`hpo_node.predictors.TableOracle` the
    true loss at R). ``protect``: the best share of the trials at a resource (by loss there) is
    never paused there (default :data:`GATE_PROTECT`). Default ``z`` 0.35, one setting for
    every replay table (benchmarks/README.md, issue 14: 31-39% fewer epochs than ASHA at
    R = 50-100, with ASHA's regret or better except on synthetic-12). The curve-fit forecasters
    do not use ``predictor``. Losses <= 0 (a negated
    metric, e.g. Ray Tune's ``mode="max"``): the forecasters work in loss units instead of log
    space once a known loss is <= 0 (:mod:`hpo_node.curvefit`: standardised losses, refitted at
    once when the first one arrives; ``"predictor"``: loss differences), and :data:`GATE_TOL`
    applies in those units.

    ``rule="paper"``: the published rule (García Amboage et al. 2023) with its opt-in
    variants, kept for reproduction; it saves more than the forecast rule on 100-epoch tables
    and the digits study, the forecast rule far more on short (12-epoch) curves, the gate more
    than both (benchmarks/README.md, issue 14).
    A job taking a trial from ``r_from`` (0 for a new trial) to rung resource ``r_to`` judges it at
    ``dp = r_from + ceil((r_to - r_from) known_curve)``. The rung's promotion cutoff is the loss of
    the ``floor(size / eta)``-th best trial recorded at ``r_to`` (none while that is 0). If at least
    ``d`` trials have reached ``r_to``, a predictor fitted on their curves cut at ``dp`` -> loss at
    ``r_to`` (refitted when ``refit_every`` new curves arrived) predicts the trial's loss at
    ``r_to``; the trial stops when ``mean - z * spread`` is above the cutoff. ``z >= 0`` stops only
    confidently bad trials (design.md §2; design.md §3 writes "plus z·spread", which for a loss
    would make stopping more aggressive, not safer). A stopped trial still counts in the size of
    rung ``r_to`` (as a trial worse than the cutoff, never promoted), so the promotion quota
    ``floor(size / eta)`` stays that of ASHA and real trials fill it. ``fallback="last-value"``:
    while no predictor can be fitted for a rung, the trial stops when its loss at ``dp`` is above
    the cutoff computed from the rung members' losses at ``dp``. New design (design.md §3), no
    reference code.

    ``defer=True`` (``rule="paper"`` only, not in design.md): at ``dp`` the trial is judged as if
    it had arrived at the rung with its predicted score: it goes on unless ASHA would leave it
    unpromoted now (not within the ``floor((size + 1) / eta)`` best, or no promotion slot left for
    it); then it is paused at ``dp`` (counted in the rung size) instead of stopped, and resumed to
    ``r_to`` as soon as ASHA would promote it (its slot is reserved meanwhile). A wrong "worse" is
    thus undone when the rung grows. At the top rung it is paused unless within the ``floor((size +
    1) / eta)`` best there.
    ``scale_free=True``: the predictor is fitted on windows of every known curve (as
    :class:`hpo_node.hyperband.SwiftHyperband` with ``scale_free``; target ``log L(e') - log L(e)``
    with ``e' / e = r_to / dp``, at most ``max_windows``, refitted when ``refit_every`` new trials
    started), so it exists for rungs that ``d`` trials never reach; losses must be > 0. The score
    is ``L(dp) exp(mean - z spread)``. ``top_rung=False``: no decision point on the way to R.
    """

    name = "swift-asha"

    def __init__(
        self,
        max_resource: int,
        eta: int = 3,
        n_trials: int | None = None,
        predictor: Callable[[], Predictor] | None = None,
        *,
        rule: str | None = None,
        forecaster: str | None = None,
        protect: float | None = None,
        d: int = 15,
        known_curve: float = 0.5,
        z: float | None = None,
        refit_every: int = 1,
        fallback: str = "none",
        defer: bool = False,
        scale_free: bool = False,
        top_rung: bool = True,
        max_windows: int = 400,
        min_resource: int = 1,
        early_stopping_rate: int = 0,
        mode: str = "promotion",
        seed: int | None = None,
    ) -> None:
        super().__init__(
            max_resource,
            eta,
            n_trials,
            min_resource=min_resource,
            early_stopping_rate=early_stopping_rate,
            mode=mode,
        )
        self.rule = check_choice(
            "rule", _default_rule(self.mode) if rule is None else rule, RULES[self.name]
        )
        if predictor is None and (self.rule != "gate" or forecaster == "predictor"):
            raise TypeError(
                f"predictor must be a callable returning a Predictor with rule={self.rule!r}"
                + (" and forecaster='predictor'" if self.rule == "gate" else "") + ", got None"
            )
        if forecaster is not None and self.rule != "gate":
            raise ValueError(
                f"forecaster is an option of rule='gate', got rule={self.rule!r} with "
                f"forecaster={forecaster!r}"
            )
        self.forecaster = None if self.rule != "gate" else check_choice(
            "forecaster", "auto" if forecaster is None else forecaster, GATE_FORECASTERS
        )
        if protect is not None and self.rule != "gate":
            raise ValueError(
                f"protect is an option of rule='gate', got rule={self.rule!r} with "
                f"protect={protect!r}"
            )
        self.protect = None if self.rule != "gate" else check_float(
            "protect", GATE_PROTECT if protect is None else protect, 0.0, 1.0
        )
        self.d = check_int("d", d, 2)
        self.known_curve = check_float("known_curve", known_curve, 0.0, 1.0, low_open=True)
        if z is None:
            z = DEFAULT_Z[self.name, self.rule]
        self.z = check_float("z", z, 0.0, float("inf"), high_open=True)
        self.refit_every = check_int("refit_every", refit_every, 1)
        self.fallback = check_choice("fallback", fallback, ("none", "last-value"))
        for flag, value in (("defer", defer), ("scale_free", scale_free), ("top_rung", top_rung)):
            if not isinstance(value, bool):
                raise TypeError(f"{flag} must be a bool, got {value!r}")
        if defer and self.fallback != "none":
            raise ValueError(
                f"fallback must be 'none' with defer=True (a deferred trial is paused at its "
                f"decision point, never stopped there), got {fallback!r}"
            )
        if self.mode == "stopping" and (self.rule != "paper" or defer):
            raise ValueError(
                "mode='stopping' (trials never paused) takes rule='paper' without defer, got "
                f"rule={self.rule!r}, defer={defer}"
            )
        if self.rule != "paper" and (defer or scale_free or self.fallback != "none"):
            raise ValueError(
                f"defer, scale_free and fallback are options of rule='paper', got "
                f"rule={self.rule!r} with defer={defer}, scale_free={scale_free}, "
                f"fallback={fallback!r}"
            )
        self.defer = defer
        self.scale_free = scale_free
        self.top_rung = top_rung
        self.max_windows = check_int("max_windows", max_windows, 2)
        self._support = PredictorSupport(predictor or _no_predictor, seed)
        self._dp: dict[str, int] = {}
        self._fit_log: dict[str, dict[str, Any]] = {}
        self._models: dict[str, Predictor] = {}
        self._phantom: list[list[str]] = [[] for _ in self.rungs]
        self._waiting: list[dict[str, float]] = [{} for _ in self.rungs]
        self._resuming: list[list[str]] = [[] for _ in self.rungs]
        self._forecaster: FinalLossForecaster | GateForecaster
        if self.rule == "gate" and self.forecaster != "predictor":
            self._forecaster = GateForecaster(
                self.forecaster, self.max_resource, z=self.z, seed=int(seed or 0)
            )
        else:
            self._forecaster = FinalLossForecaster(
                self._support, self.max_resource, z=self.z, min_pairs=self.d,
                max_windows=self.max_windows,
            )
        self._forecasts: dict[tuple[str, int], np.ndarray] = {}
        self._fc_version = -1
        self._reports = 0  # reports seen, and at the last forecaster update (-1: update at once)
        self._checked = -1
        self._at: dict[int, np.ndarray] = {}  # _losses_at, as of report self._at_reports
        self._at_reports = -1
        self._from: dict[str, int] = {}
        self._champ: str | None = None
        self._committed: set[str] = set()

    def predictor_calls(self) -> dict[str, int]:
        return {"fit": self._support.fits, "predict": self._support.predicts}

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (Ray Tune pickles its scheduler) without fitted models, which may hold gRPC
        channels; a copy rebuilds them from the fit logs, uncounted, as after a restore."""
        state = self.__dict__.copy()
        state["_models"] = {}
        state["_checked"] = -1  # the copy's forecaster rebuilds its model at the next update
        return state

    def _next_job(self) -> Job | None:
        if self.rule != "paper":
            for k in range(len(self.rungs) - 1, -1, -1):
                tid = self._forecast_resumable(k)
                if tid is not None:
                    del self._waiting[k][tid]
                    self._from[tid] = self._resource(tid)
                    return Job(tid, self.rungs[k], resume=True)
            job = ASHA._next_job(self)
            if job is not None:
                self._from[job.trial_id] = self._resource(job.trial_id)
            elif self.rule == "gate":
                job = self._force_champion()
            return job
        if self.defer:
            for k in range(len(self.rungs) - 1, -1, -1):
                tid = self._resumable(k)
                if tid is not None:
                    del self._waiting[k][tid]
                    self._resuming[k].append(tid)
                    self._dp.pop(tid, None)
                    return Job(tid, self.rungs[k], resume=True)
        job = super()._next_job()
        if job is not None:
            r_from = self._resource(job.trial_id)
            dp = self._next_dp(r_from) if self.mode == "stopping" else decision_point(
                r_from, job.resource, self.known_curve
            )
            if dp is not None and dp < job.resource and (
                self.top_rung or self._rung_after(dp) < self.max_resource
            ):
                self._dp[job.trial_id] = dp
            else:
                self._dp.pop(job.trial_id, None)
        return job

    def _on_fail(self, trial_id: str) -> None:
        """ASHA's, and a lost trial no longer waits, reserves a slot, or guards as champion."""
        super()._on_fail(trial_id)
        for waiting in self._waiting:
            waiting.pop(trial_id, None)
        for resuming in self._resuming:
            if trial_id in resuming:
                resuming.remove(trial_id)
        self._committed.discard(trial_id)
        self._dp.pop(trial_id, None)
        if self._champ == trial_id:
            self._champ = None

    def _rung_after(self, resource: int) -> int:
        """The lowest rung resource above ``resource``."""
        return min(r for r in self.rungs if r > resource)

    def decision_points(self) -> dict[int, int]:
        """``mode="stopping"``: ``{decision point: the rung resource it predicts}``."""
        out: dict[int, int] = {}
        dp = self._next_dp(0)
        while dp is not None:
            out[dp] = self._rung_after(dp)
            dp = self._next_dp(dp)
        return out

    def _next_dp(self, resource: int) -> int | None:
        """``mode="stopping"``: the next decision point after ``resource``, one inside each rung
        interval ``(r_{k-1}, r_k]`` (``r_{-1} = 0``), ``None`` when none is left."""
        prev = 0
        for r in self.rungs:
            dp = decision_point(prev, r, self.known_curve)
            if resource < dp < r and (self.top_rung or r < self.max_resource):
                return dp
            prev = r
        return None

    def _resumable(self, k: int) -> str | None:
        """The best-scored trial waiting for rung ``k`` if ASHA would now promote it from there."""
        waiting = self._waiting[k]
        if not waiting:
            return None
        tid = min(waiting, key=lambda t: (waiting[t], self._order.index(t)))
        return tid if self._gets_slot(k, waiting[tid], arriving=False) else None

    def _gets_slot(self, k: int, score: float, *, arriving: bool) -> bool:
        """Whether a trial with loss ``score`` at rung ``k`` would be promoted out of it now.

        The trial counts in the rung size (``arriving``: one more than recorded). Below the top
        rung it needs a free promotion slot (quota ``floor(size / eta)`` minus trials promoted)
        that no better unpromoted member takes first; at the top rung it needs to be within the
        ``floor(size / eta)`` best.
        """
        m = (self.rung_size(k) + int(arriving)) // self.eta
        losses = self._losses[k]
        if m == 0:
            return False
        ranked = sorted(losses.values())
        if len(ranked) >= m and score > ranked[m - 1]:
            return False
        if k == len(self.rungs) - 1:
            return True
        done = set(self._promoted[k])
        better = sum(1 for t, x in losses.items() if t not in done and x < score)
        return better < m - len(done) - len(self._resuming[k])

    def _promotable(self, k: int) -> str | None:
        while True:
            if len(self._promoted[k]) + len(self._resuming[k]) >= self.rung_size(k) // self.eta:
                return None
            tid = super()._promotable(k)
            if tid is None or self.rule != "gate" or not self._gated(tid, self.rungs[k]):
                return tid
            # gate: held at rung k (its promotion slot used), waiting for rung k + 1
            self._record_forecast(tid, self.rungs[k])
            self._promoted[k].append(tid)
            self._phantom[k + 1].append(tid)
            self._waiting[k + 1][tid] = float(self.rungs[k])

    def _on_report(self, trial_id: str, resource: int, loss: float) -> Decision:
        self._reports += 1
        if self.rule == "gate":
            self._observe(trial_id, resource)
        if self.rule != "paper":
            return self._forecast_report(trial_id, resource, loss)
        if self.scale_free and not loss > 0:
            raise ValueError(f"loss must be > 0 with scale_free=True, got {loss}")
        k_at = self._rung_index(resource)
        if k_at is not None and trial_id in self._resuming[k_at]:
            self._resuming[k_at].remove(trial_id)
            self._phantom[k_at].remove(trial_id)
        if self._dp.get(trial_id) == resource:
            del self._dp[trial_id]
            r_to = self._rung_after(resource)
            k = self.rungs.index(r_to)
            if self.defer:
                if self.rung_size(k) + 1 >= self.eta:
                    predicted = self._score(trial_id, resource, r_to)
                    if predicted is not None and not self._gets_slot(k, predicted[0], arriving=True):
                        self._phantom[k].append(trial_id)
                        self._waiting[k][trial_id] = predicted[0]
                        self._record_prediction(trial_id, *predicted[1:], at=r_to)
                        return Decision.PAUSE
                return super()._on_report(trial_id, resource, loss)
            cutoff = self._cutoff(k)
            if cutoff is not None:
                predicted = self._score(trial_id, resource, r_to)
                if predicted is not None:
                    stop = predicted[0] > cutoff
                    if stop:
                        self._record_prediction(trial_id, *predicted[1:], at=r_to)
                else:
                    at_dp = self._cutoff(k, at=resource)
                    stop = self.fallback == "last-value" and at_dp is not None and loss > at_dp
                if stop:
                    if self.mode == "promotion":
                        self._phantom[k].append(trial_id)
                    return Decision.STOP
        decision = super()._on_report(trial_id, resource, loss)
        if self.mode == "stopping" and decision == Decision.CONTINUE and trial_id not in self._dp:
            dp = self._next_dp(resource)
            if dp is not None:
                self._dp[trial_id] = dp
        return decision

    # -- rule "forecast" -------------------------------------------------------------------------

    def _forecast_report(self, trial_id: str, resource: int, loss: float) -> Decision:
        k_at = self._rung_index(resource)
        if k_at is not None and trial_id in self._phantom[k_at]:
            self._phantom[k_at].remove(trial_id)
        r_to = self._target[trial_id]
        r_from = self._from.get(trial_id, 0)
        step = resource - r_from
        if (
            resource < r_to
            and step & (step - 1) == 0
            and (self.top_rung or r_to < self.max_resource)
        ):
            k = self.rungs.index(r_to)
            if self._cannot_make_cut(trial_id, resource, k):
                if trial_id not in self._phantom[k]:
                    self._phantom[k].append(trial_id)
                self._waiting[k][trial_id] = float(resource)
                return Decision.PAUSE
        return ASHA._on_report(self, trial_id, resource, loss)

    def _band(self, keys: list[tuple[str, int]]) -> np.ndarray:
        """Forecast (low, mean, high) of the loss at R from ``(trial, resource)``, ``(m, 3)``."""
        if self._checked != self._reports:  # refit if due, once per new report
            self._checked = self._reports
            self._forecaster.update(self._curve, self._order)
        if self._fc_version != self._forecaster.version:
            self._forecasts = {}
            self._fc_version = self._forecaster.version
        missing = [key for key in keys if key not in self._forecasts]
        if missing:
            bands = self._forecaster.forecast([self._curve[t][:r] for t, r in missing])
            self._forecasts.update(zip(missing, bands, strict=True))
        return np.array([self._forecasts[key] for key in keys]).reshape(len(keys), 3)

    def _cut(self, k: int, arriving: bool) -> float | None:
        """The ``m``-th best forecast (mean) at R among rung ``k``'s members,
        ``m = floor(size / eta)`` (``arriving``: one more than counted), ``None`` if undefined."""
        members = self._members[k]
        m = (self.rung_size(k) + int(arriving)) // self.eta
        if m == 0 or m > len(members):
            return None
        mean = self._band([(t, self.rungs[k]) for t in members])[:, 1]
        if np.any(np.isnan(mean)):
            return None
        return float(np.sort(mean)[m - 1])

    def _rule_cut(self, k: int, arriving: bool) -> float | None:
        """The lowest cut a trial heading for rung ``k`` must make: rung ``k``'s and those of the
        rungs above it, which it must also pass to reach R (see class doc)."""
        top = len(self.rungs) - 1
        above = [top] if k < top else []
        cuts = [self._cut(k, arriving)] + [self._cut(j, arriving=True) for j in above]
        known = [c for c in cuts if c is not None]
        return min(known) if known else None

    def _losses_at(self, resource: int) -> np.ndarray:
        """The losses at ``resource`` of every trial that got there, sorted, shape ``(m,)``
        (kept until the next report)."""
        if self._at_reports != self._reports:
            self._at, self._at_reports = {}, self._reports
        if resource not in self._at:
            self._at[resource] = np.sort(
                [c[resource - 1] for c in self._curve.values() if len(c) >= resource]
            )
        return self._at[resource]

    def _leads(self, trial_id: str, resource: int) -> bool:
        """Whether ``trial_id`` has the lowest loss at ``resource`` of every trial that got there."""
        return bool(self._losses_at(resource)[0] >= self._loss_at(trial_id, resource))

    def _cannot_make_cut(self, trial_id: str, resource: int, k: int) -> bool:
        """Even the optimistic forecast at R is worse than rung ``k``'s cut (see class doc);
        ``rule="gate"``: a guard dominates the trial (:meth:`_gated`)."""
        if self.rule == "gate":
            if trial_id == self._champ or self._leads(trial_id, resource):
                return False
            if not self._gated(trial_id, resource):
                return False
            self._record_forecast(trial_id, resource)
            return True
        cut = self._rule_cut(k, arriving=trial_id not in self._phantom[k])
        if cut is None:
            return False
        if self._band([(trial_id, resource)])[0, 0] > cut and not self._leads(trial_id, resource):
            self._record_forecast(trial_id, resource)
            return True
        return False

    def _record_forecast(self, trial_id: str, resource: int) -> None:
        """Record the forecast (mean, band half-width) from ``resource`` that pauses the trial."""
        low, mean, high = (float(v) for v in self._band([(trial_id, resource)])[0])
        self._record_prediction(trial_id, mean, (high - low) / 2.0, at=self.max_resource)

    def _forecast_resumable(self, k: int) -> str | None:
        """The waiting trial of rung ``k`` with the best optimistic forecast, if it now makes
        the cut (the rung grew, or the forecasts were refitted)."""
        waiting = self._waiting[k]
        if self.rule == "gate":  # the first waiting trial (in start order) no guard dominates
            pos = {t: i for i, t in enumerate(self._order)}
            for t, r in sorted(waiting.items(), key=lambda x: pos[x[0]]):
                if self._state[t] == TrialState.PAUSED and not self._gated(t, int(r)):
                    return t
            return None
        if not waiting:
            return None
        cut = self._rule_cut(k, arriving=False)
        if cut is None:
            return None
        keys = [(t, int(r)) for t, r in waiting.items()]
        low = self._band(keys)[:, 0]
        j = int(np.argmin(np.where(np.isnan(low), np.inf, low)))
        return keys[j][0] if low[j] <= cut else None

    # -- rule "gate" -----------------------------------------------------------------------------

    def _dominates(self, g: str, t: str, r: int) -> bool:
        """Whether guard ``g`` dominates ``t`` (at ``r``): ``g``'s pessimistic forecast is below
        ``t``'s optimistic one, both from ``rc = min(r, resource of g)``; if ``g`` got further
        and its mean forecast from its newest resource rose above the one from ``rc`` by more
        than :data:`GATE_TOL` (log, or the forecaster's loss units: :meth:`_held_up`), its
        pessimistic forecast from there must be below too."""
        rc = min(r, self._resource(g))
        if rc < 1:
            return False
        b = self._band([(t, rc), (g, rc)])
        if not (np.isfinite(b[0, 0]) and np.isfinite(b[1, 2]) and b[0, 0] > b[1, 2]):
            return False
        if self._resource(g) > rc:
            _, mean, high = self._band([(g, self._resource(g))])[0]
            held_up = self._held_up(float(mean), float(b[1, 1]))
            if not held_up and not (np.isfinite(high) and b[0, 0] > high):
                return False
        return True

    def _held_up(self, new: float, old: float) -> bool:
        """Whether the mean forecast ``new`` rose at most :data:`GATE_TOL` above ``old``, in the
        forecaster's working units: log, or loss units once a known loss is <= 0 (the curve
        fits' standardised losses, :meth:`hpo_node.curvefit.GateForecaster.units`;
        ``"predictor"``: the losses, also when one of the two is <= 0)."""
        fc = self._forecaster
        if isinstance(fc, GateForecaster):
            return fc.units(new) <= fc.units(old) + GATE_TOL
        if fc.log_space and new > 0 and old > 0:
            return math.log(new) <= math.log(old) + GATE_TOL
        return new <= old + GATE_TOL

    def _champion(self) -> str | None:
        """The champion (the trial with the best forecast), ``None`` once it reached R."""
        if self._champ is not None and self._resource(self._champ) >= self.max_resource:
            self._champ = None
        return self._champ

    def _observe(self, t: str, r: int) -> None:
        """The reporting trial becomes the champion if it dominates it (or there is none and no
        trial at R dominates the reporting one, which has a forecast)."""
        c = self._champion()
        if r >= self.max_resource or c == t:
            return
        if c is None:
            if any(g != t and self._dominates(g, t, r) for g in self._members[-1]):
                return
            if not np.isfinite(self._band([(t, r)])[0, 2]):
                return
        elif not self._dominates(t, c, r):
            return
        self._champ = t

    def _gated(self, t: str, r: int) -> bool:
        """Whether a guard (a trial at R, or the champion) dominates ``t`` at ``r``; never the
        champion itself, a trial committed to R, or the one leading at ``r``."""
        if t in self._committed or t == self._champion() or self._leads(t, r):
            return False
        if self._protected(t, r):
            return False
        guard = [*self._members[-1], *([self._champ] if self._champ else [])]
        return any(g != t and self._dominates(g, t, r) for g in guard)

    def _protected(self, t: str, r: int) -> bool:
        """Whether ``t``'s loss at ``r`` is within the best ``protect`` share of the losses at
        ``r`` of every trial that got there (ASHA-like insurance for late bloomers)."""
        if not self.protect:
            return False
        at_r = self._losses_at(r)
        better = int(np.searchsorted(at_r, self._loss_at(t, r), side="left"))
        return better < self.protect * at_r.shape[0]

    def _force_champion(self) -> Job | None:
        """Nothing else can run: the paused champion is trained to R (committed), so every pause
        is backed by a trial that reaches R."""
        if any(s == TrialState.RUNNING for s in self._state.values()):
            return None
        c = self._champion()
        if c is None or self._state[c] != TrialState.PAUSED:
            return None
        for waiting in self._waiting:
            waiting.pop(c, None)
        self._from[c] = self._resource(c)
        self._committed.add(c)
        return Job(c, self.max_resource, resume=True)

    def _score(self, trial_id: str, dp: int, r_to: int) -> tuple[float, float, float] | None:
        """``(mean - z * spread, mean, spread)`` of the predicted loss at ``r_to``, ``None``
        without a predictor."""
        if self.scale_free:
            model = self._scale_free_model(dp, r_to)
            if model is None:
                return None
            step, spread = self._support.predict(
                model, np.array([scale_free_window(self._curve[trial_id][:dp])]), None
            )
            level = self._loss_at(trial_id, dp)
            mean = float(level * np.exp(step[0]))
            return float(level * np.exp(step[0] - self.z * spread[0])), mean, mean * float(spread[0])
        model = self._model_for(dp, r_to)
        if model is None:
            return None
        mean, spread = self._support.predict(
            model,
            np.array([self._curve[trial_id][:dp]]),
            hparam_matrix([self._hparams[trial_id]]),
        )
        return float(mean[0] - self.z * spread[0]), float(mean[0]), float(spread[0])

    def waiting(self, k: int) -> list[str]:
        """Trials paused at their decision point for rung ``k`` (``defer=True``)."""
        return list(self._waiting[k])

    def close(self) -> None:
        self._forecaster.close()
        self._support.close()
        self._models = {}

    def rung_size(self, k: int) -> int:
        return len(self._members[k]) + len(self._phantom[k])

    def stopped_early(self, k: int) -> list[str]:
        """Trials stopped at the decision point on their way to rung ``k``."""
        return list(self._phantom[k])

    def _cutoff(self, k: int, at: int | None = None) -> float | None:
        """Loss of the ``floor(size / eta)``-th best member of rung ``k`` (at resource ``at``);
        ``mode="stopping"``: the rung's stopping cut, the ``1/eta`` quantile of its losses."""
        if self.mode == "stopping":
            members = self._members[k]
            if not members:
                return None
            at_res = [self._loss_at(t, at) if at is not None else self._losses[k][t] for t in members]
            return self._stopping_cut(at_res)
        m = self.rung_size(k) // self.eta
        if m == 0 or m > len(self._members[k]):
            return None
        if at is None:
            losses = list(self._losses[k].values())
        else:
            losses = [self._loss_at(t, at) for t in self._members[k]]
        return float(sorted(losses)[m - 1])

    def _known(self, resource: int) -> list[str]:
        return [t for t in self._order if self._resource(t) >= resource]

    def _model_for(self, dp: int, r_to: int) -> Predictor | None:
        key = f"{dp}:{r_to}"
        known = self._known(r_to)
        if len(known) < max(self.d, 2):
            return None
        return self._cached_model(
            key, len(known), lambda: {"ids": known, "seed": self._support.next_seed()},
            lambda log, counted: self._fit(log, dp, r_to, counted=counted),
        )

    def _cached_model(
        self,
        key: str,
        n_known: int,
        new_log: Callable[[], dict[str, Any] | None],
        fit: Callable[[Mapping[str, Any], bool], Predictor],
    ) -> Predictor | None:
        """Model ``key``: refitted when ``refit_every`` trials joined its training set since the
        last fit (``new_log()`` gives the new fit log, ``None`` when the data are too few), else
        the last fit, rebuilt from its log (uncounted) after a restore."""
        log = self._fit_log.get(key)
        if log is None or n_known - len(log["ids"]) >= self.refit_every:
            log = new_log()
            if log is None:
                return None
            self._fit_log[key] = log
            old = self._models.pop(key, None)
            if old is not None:
                self._support.release(old)
            self._models[key] = fit(log, True)
        elif key not in self._models:
            self._models[key] = fit(log, False)
        return self._models[key]

    def _windows(
        self, ids: list[str], dp: int, r_to: int, lens: list[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scale-free windows of the curves ``ids`` (cut to ``lens`` epochs when given) whose
        end-to-target ratio is ``r_to / dp``."""
        curves = [self._curve[t] for t in ids]
        if lens is not None:
            curves = [c[:n] for c, n in zip(curves, lens, strict=True)]
        return scale_free_pairs(curves, r_to / dp)

    def _scale_free_model(self, dp: int, r_to: int) -> Predictor | None:
        ids = [t for t in self._order if self._curve[t]]
        pairs: list[tuple[np.ndarray, np.ndarray]] = []

        def new_log() -> dict[str, Any] | None:
            pairs.append(self._windows(ids, dp, r_to))
            if pairs[0][0].shape[0] < max(self.d, 2):
                return None
            # The curves' lengths at fit time: a model refitted after a restore sees the same
            # windows, not the longer curves known by then.
            return {"ids": ids, "lens": [len(self._curve[t]) for t in ids],
                    "seed": self._support.next_seed()}

        def fit(log: Mapping[str, Any], counted: bool) -> Predictor:
            # A fresh fit reuses the windows new_log built; a rebuild cuts the curves to ``lens``.
            x, y = pairs[0] if pairs else self._windows(list(log["ids"]), dp, r_to, log.get("lens"))
            if x.shape[0] > self.max_windows:
                rng = np.random.default_rng(int(log["seed"]))
                keep = np.sort(rng.choice(x.shape[0], size=self.max_windows, replace=False))
                x, y = x[keep], y[keep]
            return self._support.fit(x, y, None, int(log["seed"]), counted=counted)

        return self._cached_model(f"sf:{dp}:{r_to}", len(ids), new_log, fit)

    def _fit(self, log: Mapping[str, Any], dp: int, r_to: int, *, counted: bool) -> Predictor:
        ids = log["ids"]
        return self._support.fit(
            np.array([self._curve[t][:dp] for t in ids]),
            np.array([self._loss_at(t, r_to) for t in ids]),
            hparam_matrix([self._hparams[t] for t in ids]),
            int(log["seed"]),
            counted=counted,
        )

    def _extra_state(self) -> dict[str, Any]:
        extra = super()._extra_state()
        extra.update(
            dp=dict(self._dp),
            fit_log={k: dict(v) for k, v in self._fit_log.items()},
            phantom=[list(p) for p in self._phantom],
            waiting=[dict(w) for w in self._waiting],
            resuming=[list(r) for r in self._resuming],
            support=self._support.state(),
            forecaster=self._forecaster.state(),
            job_from=dict(self._from),
            champion=self._champ,
            committed=sorted(self._committed),
        )
        return extra

    def _load_extra_state(self, extra: Mapping[str, Any]) -> None:
        super()._load_extra_state(extra)
        self._dp = {t: int(v) for t, v in extra["dp"].items()}
        self._fit_log = {k: _fit_entry(v) for k, v in extra["fit_log"].items()}
        self._models = {}
        self._phantom = [list(p) for p in extra["phantom"]]
        self._waiting = [{t: float(x) for t, x in w.items()} for w in extra.get("waiting", [])]
        self._resuming = [list(r) for r in extra.get("resuming", [])]
        if not self._waiting:
            self._waiting = [{} for _ in self.rungs]
            self._resuming = [[] for _ in self.rungs]
        self._support.load(extra["support"])
        self._forecaster.load(extra.get("forecaster"))
        self._from = {t: int(r) for t, r in extra.get("job_from", {}).items()}
        champ = extra.get("champion")
        self._champ = None if champ is None else str(champ)
        self._committed = {str(t) for t in extra.get("committed", [])}
        self._forecasts = {}
        self._fc_version = -1
        self._checked = self._at_reports = -1
