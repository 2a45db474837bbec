"""``SwiftPruner``: Swift-ASHA's predictor-assisted stopping rule as an Optuna pruner.

Optuna trials cannot be paused and resumed, so the pruner is the *stopping* variant of Swift-ASHA:
the rungs ``r_k = R eta**(k - s_max)`` and the rule at a rung are those of
:class:`hpo_node.asha.ASHA` with ``mode="stopping"`` (the core scheduler is driven underneath: a
trial is stopped at rung ``k`` unless its loss is within the ``1/eta`` quantile of the losses
recorded at rung ``k`` so far, like Optuna's ``SuccessiveHalvingPruner``). Swift adds a decision
point inside each rung interval ``(r_{k-1}, r_k]``, at ``dp = r_{k-1} + ceil((r_k - r_{k-1})
known_curve)``: once ``d`` trials have reached ``r_k``, a predictor fitted on their curves cut at
``dp`` -> loss at ``r_k`` (refitted after ``refit_every`` new curves) predicts the trial's loss at
``r_k``, and the trial is pruned when ``mean - z * spread`` is above the rung's current cutoff
(design.md §3, as in :class:`hpo_node.asha.SwiftASHA`).

Predictions come from any :mod:`hpo_node.predictors` factory, always wrapped in
:class:`hpo_node.resilient.GuardedPredictor`, so that an unreachable gateway makes the pruner plain
ASHA-stopping (counted in :attr:`SwiftPruner.log`); :meth:`SwiftPruner.with_gateway` builds the
gateway one.

Steps, as Optuna's own pruners take them: ``trial.report(loss, step)`` with steps counted from 1
(``1, 2, ..., R``: the step is the epoch) or from 0 (a trial whose first step is 0 reports epoch
``step + 1``), every epoch or every ``k`` epochs. A report covers the epochs since the previous one:
each gets its value, so a rung is judged by the first value reported at or after it, as Optuna's
``SuccessiveHalvingPruner`` does, and the predictor sees step-wise curves. Steps past ``R`` are not
used. Trials call ``trial.should_prune()``; the pruner reads every intermediate value it has not
seen yet. The state lives in the pruner object: use one process (Optuna's ``n_jobs`` threads are
fine: calls are serialised by a lock), not several processes sharing an RDB storage.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna

from hpo_node.asha import ASHA
from hpo_node.core import Decision, check_float, check_int, decision_point
from hpo_node.predictors import Predictor, PredictorSupport
from hpo_node.resilient import GatewayFactory, PredictionLog, ensure_guarded, guarded_factory

logger = logging.getLogger(__name__)


class SwiftPruner(optuna.pruners.BasePruner):
    """Optuna pruner: ASHA stopping rule with Swift's predicted early stop inside each rung.

    ``max_resource`` R (the last step), ``eta`` the reduction factor, ``predictor`` a factory of
    :class:`hpo_node.predictors.Predictor`; ``d``, ``known_curve``, ``z``, ``refit_every`` as in
    :class:`hpo_node.asha.SwiftASHA`; ``seed`` drives the predictor fits. Predictors are always
    guarded (:func:`hpo_node.resilient.ensure_guarded`): an unreachable gateway makes the pruner
    plain ASHA-stopping; ``log`` (default: the guarded factory's, else a new one) counts it.
    """

    def __init__(
        self,
        max_resource: int,
        eta: int = 3,
        predictor: Callable[[], Predictor] | None = None,
        *,
        d: int = 15,
        known_curve: float = 0.5,
        z: float = 0.0,
        refit_every: int = 1,
        min_resource: int = 1,
        seed: int | None = None,
        log: PredictionLog | None = None,
    ) -> None:
        if predictor is None:
            raise TypeError("predictor must be a callable returning a Predictor, got None")
        predictor, log = ensure_guarded(predictor, log)
        self.core = ASHA(max_resource, eta, None, min_resource=min_resource, mode="stopping")
        self.d = check_int("d", d, 2)
        self.known_curve = check_float("known_curve", known_curve, 0.0, 1.0, low_open=True)
        self.z = check_float("z", z, 0.0, float("inf"), high_open=True)
        self.refit_every = check_int("refit_every", refit_every, 1)
        self.log = log
        self._support = PredictorSupport(predictor, seed)
        self._lock = threading.Lock()
        self._curves: dict[str, list[float]] = {}
        self._offsets: dict[str, int] = {}
        self._pruned: dict[str, str] = {}
        self._done: set[str] = set()
        self._models: dict[int, tuple[int, Predictor]] = {}
        self.predictions: dict[str, tuple[int, float, float]] = {}
        prev = 0
        self._dps: dict[int, int] = {}
        for r in self.core.rungs:
            dp = decision_point(prev, r, self.known_curve)
            if dp < r:
                self._dps[dp] = r
            prev = r

    @classmethod
    def with_gateway(
        cls,
        address: str,
        max_resource: int,
        eta: int = 3,
        *,
        timeout: float = 10.0,
        retry_after: float = 5.0,
        predictor_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> SwiftPruner:
        """A pruner predicting through the gateway at ``address`` (guarded: see module doc)."""
        log = PredictionLog(retry_after=retry_after)
        factory = guarded_factory(
            GatewayFactory(address, timeout=timeout, **(predictor_params or {})), log
        )
        return cls(max_resource, eta, factory, log=log, **kwargs)

    @property
    def rungs(self) -> list[int]:
        """The rung resources ``r_0 < r_1 < ... = R``."""
        return list(self.core.rungs)

    def decision_points(self) -> dict[int, int]:
        """``{decision point: rung resource it predicts}``."""
        return dict(self._dps)

    def pruned_reasons(self) -> dict[str, str]:
        """``{trial key: "rung" | "prediction"}`` for every pruned trial."""
        return dict(self._pruned)

    def predictor_calls(self) -> dict[str, int]:
        """Predictor fit/predict counts."""
        return {"fit": self._support.fits, "predict": self._support.predicts}

    def prune(self, study: optuna.study.Study, trial: optuna.trial.FrozenTrial) -> bool:
        sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
        key = f"{study.study_name}:{trial.number}"
        with self._lock:
            return self._prune(key, trial, sign)

    def _prune(self, key: str, trial: optuna.trial.FrozenTrial, sign: float) -> bool:
        if key in self._pruned:
            return True
        values = trial.intermediate_values
        if not values:
            return False
        if key not in self._curves:
            self._curves[key] = []
            self._offsets[key] = 1 if min(values) == 0 else 0
            self.core.add_trial(key)
            job = self.core.next_job()
            if job is None or job.trial_id != key:
                raise RuntimeError(f"the ASHA core did not start trial {key}")
        curve = self._curves[key]
        offset = self._offsets[key]
        for step in sorted(values):
            epoch = min(step + offset, self.core.max_resource)
            if epoch <= len(curve):
                continue
            if key in self._done:
                return False
            loss = sign * float(values[step])
            if not math.isfinite(loss):
                self._pruned[key] = "diverged"
                return True
            # the report covers the epochs since the previous one
            for r in range(len(curve) + 1, epoch + 1):
                curve.append(loss)
                decision = self.core.report(key, r, loss)
                if decision == Decision.STOP and r < self.core.max_resource:
                    self._pruned[key] = "rung"
                    return True
                if decision == Decision.STOP:
                    self._done.add(key)
                    return False
                if decision == Decision.CONTINUE and r in self._dps and self._predict_stop(key, r):
                    self._pruned[key] = "prediction"
                    return True
        return False

    def _predict_stop(self, key: str, dp: int) -> bool:
        r_to = self._dps[dp]
        k = self.core.rungs.index(r_to)
        members = self.core.rung_members(k)
        if not members:
            return False
        cutoff = float(np.quantile([self.core.rung_loss(k, t) for t in members], 1.0 / self.core.eta))
        known = [t for t, c in self._curves.items() if len(c) >= r_to]
        if len(known) < self.d:
            return False
        model = self._model(dp, r_to, known)
        mean, spread = self._support.predict(model, np.array([self._curves[key][:dp]]), None)
        self.predictions[key] = (r_to, float(mean[0]), float(spread[0]))
        return bool(mean[0] - self.z * spread[0] > cutoff)

    def _model(self, dp: int, r_to: int, known: list[str]) -> Predictor:
        held = self._models.get(dp)
        if held is not None and len(known) - held[0] < self.refit_every:
            return held[1]
        if held is not None:
            self._support.release(held[1])
        model = self._support.fit(
            np.array([self._curves[t][:dp] for t in known]),
            np.array([self._curves[t][r_to - 1] for t in known]),
            None,
            self._support.next_seed(),
        )
        self._models[dp] = (len(known), model)
        return model

    def close(self) -> None:
        """Release the predictor models (gateway models are deleted)."""
        with self._lock:
            self._support.close()
            self._models = {}
