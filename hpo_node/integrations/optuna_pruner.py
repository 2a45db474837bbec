"""``SwiftPruner``: Swift-ASHA's predictor-assisted stopping rule as an Optuna pruner.

Optuna trials cannot be paused and resumed, so the pruner drives the *stopping* variant of
Swift-ASHA: :class:`hpo_node.asha.SwiftASHA` with ``mode="stopping"`` and the published rule is
its core, and the pruner only converts Optuna's calls into that scheduler's ``report`` calls (the
rule lives in one place). A trial is stopped at rung ``k`` unless its loss is within the ``1/eta``
quantile of the losses recorded at rung ``k`` so far (like Optuna's ``SuccessiveHalvingPruner``),
and at the decision point inside each rung interval ``(r_{k-1}, r_k]``, ``dp = r_{k-1} +
ceil((r_k - r_{k-1}) known_curve)``, when the loss predicted at ``r_k`` (``mean - z * spread``,
from a predictor fitted on the curves of the ``d`` or more trials that reached ``r_k``) is above
that cut (design.md §3).

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

import math
import threading
from collections.abc import Callable
from typing import Any

import optuna

from hpo_node.asha import SwiftASHA
from hpo_node.core import Decision
from hpo_node.predictors import Predictor
from hpo_node.resilient import GatewayFactory, PredictionLog, ensure_guarded, guarded_factory


class SwiftPruner(optuna.pruners.BasePruner):
    """Optuna pruner: ASHA stopping rule with Swift's predicted early stop inside each rung.

    ``max_resource`` R (the last step), ``eta`` the reduction factor, ``predictor`` a factory of
    :class:`hpo_node.predictors.Predictor`; ``d``, ``known_curve``, ``z``, ``refit_every`` as in
    :class:`hpo_node.asha.SwiftASHA` (``rule="paper"``); ``seed`` drives the predictor fits.
    Predictors are always guarded (:func:`hpo_node.resilient.ensure_guarded`): an unreachable
    gateway makes the pruner plain ASHA-stopping; ``log`` (default: the guarded factory's, else a
    new one) counts it.
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
            raise TypeError(
                "predictor must be a callable returning a Predictor, got None: pass "
                "make_predictor_factory('svr') (in-process) or use SwiftPruner.with_gateway("
                "address, ...); for ASHA's stopping rule alone, Optuna's SuccessiveHalvingPruner"
            )
        predictor, log = ensure_guarded(predictor, log)
        self.core = SwiftASHA(
            max_resource, eta, None, predictor, rule="paper", mode="stopping", d=d,
            known_curve=known_curve, z=z, refit_every=refit_every, min_resource=min_resource,
            seed=seed,
        )
        self.log = log
        self._lock = threading.Lock()
        self._curves: dict[str, list[float]] = {}
        self._offsets: dict[str, int] = {}
        self._pruned: dict[str, str] = {}
        self._signs: dict[str, float] = {}  # -1.0 for a maximized study's trials
        self._done: set[str] = set()

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
        return self.core.decision_points()

    def pruned_reasons(self) -> dict[str, str]:
        """``{trial key: "rung" | "prediction" | "diverged"}`` for every pruned trial."""
        return dict(self._pruned)

    @property
    def predictions(self) -> dict[str, tuple[int, float, float]]:
        """``{trial key: (rung resource, predicted mean, spread)}`` for trials pruned by a
        prediction: the value predicted at the rung the trial was heading for, in the study's
        units (an accuracy in a maximized study)."""
        out = {}
        for key, reason in self._pruned.items():
            made = self.core.prediction(key)
            if reason == "prediction" and made is not None:
                r_to = min(r for r in self.core.rungs if r > len(self._curves[key]))
                out[key] = (r_to, self._signs.get(key, 1.0) * made[0], made[1])
        return out

    def predictor_calls(self) -> dict[str, int]:
        """Predictor fit/predict counts."""
        return self.core.predictor_calls()

    def prune(self, study: optuna.study.Study, trial: optuna.trial.FrozenTrial) -> bool:
        sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
        key = f"{study.study_name}:{trial.number}"
        with self._lock:
            self._signs[key] = sign
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
                if self.core.report(key, r, loss) != Decision.STOP:
                    continue
                if r < self.core.max_resource:
                    self._pruned[key] = "rung" if self.core.prediction(key) is None else "prediction"
                    return True
                self._done.add(key)
                return False
        return False

    def close(self) -> None:
        """Release the predictor models (gateway models are deleted)."""
        with self._lock:
            self.core.close()
