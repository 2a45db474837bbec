"""Predictors that never stop a study: a gateway outage turns Swift back into its plain algorithm.

:class:`GuardedPredictor` wraps any :class:`hpo_node.predictors.Predictor` (in practice the gRPC
:class:`hpo_node.predictors.GatewayPredictor`). A ``grpc.RpcError`` from ``fit``, ``predict`` or
``close`` (``UNAVAILABLE`` when the gateway is down, ``DEADLINE_EXCEEDED`` past the deadline) is
caught, counted and logged once per outage in the shared :class:`PredictionLog`; the answer is
then *optimistic*: mean ``-inf``, spread ``0`` for every row. A gateway that refuses the token
(``UNAUTHENTICATED``, ``PERMISSION_DENIED``: :func:`auth_error`) is handled the same way but
logged as an authentication/permission error, not as an unreachable gateway (``hpo-node run``
checks the token before a study starts).

Why that is exactly the plain algorithm (checked against ``hpo_node/asha.py`` and
``hpo_node/hyperband.py``):

* Swift-ASHA stops a trial at its decision point only when ``mean - z * spread > cutoff``;
  ``-inf - z * 0 > cutoff`` is false, so the trial goes on to the rung like in ASHA, and nothing is
  added to the rung as "stopped early": promotions, quotas and epochs are those of ASHA.
* Swift-Hyperband lets a paused partial continue when its ``mean`` is below the round's threshold;
  every ``-inf`` is, so every configuration trains to ``r_i`` and the survivors are the best
  ``n_next`` at ``r_i``: the Hyperband round, with the same epochs (only the order differs).

Every gateway call carries the predictor's deadline; a decision makes at most one ``fit`` and one
``predict``. After a failure no call is made for ``retry_after`` seconds, so a dead or slow gateway
costs Tune's event loop at most one deadline per ``retry_after`` seconds; the first call after
that tries again (a failed ``fit`` is retried at the next ``predict``, on a fresh predictor and
channel), and predictions resume as soon as the gateway answers. The log also keeps the last
batch predicted, so that an engine can attribute a stop to the prediction behind it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hpo_node.core import check_float
from hpo_node.predictors import CurveFeatures, GatewayPredictor, Predictor

FloatArray = NDArray[np.float64]
logger = logging.getLogger(__name__)

LOG_VERSION = 1
_COUNTERS = (
    "fits_ok",
    "fits_failed",
    "predicts_ok",
    "predicts_failed",
    "decisions_with_prediction",
    "decisions_without_prediction",
    "outages",
    "recoveries",
)


def _rpc_error_types() -> tuple[type[BaseException], ...]:
    import grpc

    return (grpc.RpcError,)


def auth_error(exc: BaseException) -> str | None:
    """``"UNAUTHENTICATED: <details>"`` / ``"PERMISSION_DENIED: <details>"`` for a gRPC error that
    says the gateway refused the token (a configuration error, not an outage), else ``None``."""
    import grpc

    code = getattr(exc, "code", None)
    code = code() if callable(code) else None
    if code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return None
    details = getattr(exc, "details", None)
    text = details() if callable(details) else ""
    return f"{code.name}: {text}" if text else code.name


class PredictionLog:
    """State shared by the predictors of one study: outage state and counters.

    Counters (``counters()``): ``fits_ok``/``fits_failed``, ``predicts_ok``/``predicts_failed``,
    ``decisions_with_prediction``/``decisions_without_prediction`` (rows scored by the predictor, or
    answered optimistically because it was unreachable), ``outages`` (transitions up -> down) and
    ``recoveries`` (down -> up). Which prediction decided a trial is the scheduler's to say
    (:meth:`hpo_node.core.Scheduler.prediction`).
    """

    def __init__(self, retry_after: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_after = check_float(
            "retry_after", retry_after, 0.0, float("inf"), high_open=True
        )
        self.clock = clock
        self.counts = dict.fromkeys(_COUNTERS, 0)
        self.down = False
        self.last_error = ""
        self._next_try: float | None = None

    def counters(self) -> dict[str, int]:
        """A copy of the counters."""
        return dict(self.counts)

    def available(self) -> bool:
        """``False`` while a recent failure says not to try before ``retry_after`` elapsed."""
        return self._next_try is None or self.clock() >= self._next_try

    def failure(self, operation: str, exc: BaseException) -> None:
        """Count a failed call; the first failure of an outage is logged as a warning (as an error
        naming authentication/permission when the gateway refused the token: :func:`auth_error`)."""
        self.counts[f"{operation}s_failed"] += 1
        code = getattr(exc, "code", None)
        detail = f"{code() if callable(code) else type(exc).__name__}"
        self.last_error = f"{operation}: {detail}"
        if not self.down:
            self.down = True
            self.counts["outages"] += 1
            refused = auth_error(exc)
            if refused is not None:
                logger.error(
                    "predictor refused by the gateway: authentication/permission error (%s: %s); "
                    "check the token (gateway.token_env) and its scope (Fit needs 'admin'); "
                    "deciding without predictions (the plain algorithm) until it is accepted",
                    operation, refused,
                )
            else:
                logger.warning(
                    "predictor unreachable (%s); deciding without predictions (the plain "
                    "algorithm) until it answers again",
                    self.last_error,
                )
        self._next_try = self.clock() + self.retry_after

    def success(self, operation: str) -> None:
        """Count a successful call; ends an outage (logged once)."""
        self.counts[f"{operation}s_ok"] += 1
        self._next_try = None
        if self.down:
            self.down = False
            self.counts["recoveries"] += 1
            logger.warning("predictor reachable again; predictions resume")

    def without_prediction(self, rows: int) -> tuple[FloatArray, FloatArray]:
        """The optimistic answer for ``rows`` rows: mean ``-inf``, spread 0 (counted)."""
        self.counts["decisions_without_prediction"] += rows
        return np.full(rows, -math.inf), np.zeros(rows)

    def predicted(self, rows: int) -> None:
        """Count a successful batch of ``rows`` predictions."""
        self.counts["decisions_with_prediction"] += rows

    def state(self) -> dict[str, Any]:
        """JSON-serialisable counters (the outage state is not kept: a restart tries again)."""
        return {"version": LOG_VERSION, "counts": dict(self.counts)}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""
        if state.get("version") != LOG_VERSION:
            raise ValueError(f"log version must be {LOG_VERSION}, got {state.get('version')!r}")
        self.counts = {k: int(state["counts"].get(k, 0)) for k in _COUNTERS}


class GuardedPredictor:
    """A :class:`Predictor` that turns ``grpc.RpcError`` into optimistic answers (see module).

    ``factory`` makes the inner predictor. After a failure the inner predictor is dropped (its
    channel with it: a gRPC channel that lost its server waits out a reconnection back-off) and
    the next attempt fits a fresh one on the kept training data, so a restarted gateway, even one
    with an empty store, serves again at once.
    """

    def __init__(self, factory: Callable[[], Predictor], log: PredictionLog) -> None:
        if not callable(factory):
            raise TypeError(f"factory must be callable, got {factory!r}")
        if not isinstance(log, PredictionLog):
            raise TypeError(f"log must be a PredictionLog, got {type(log).__name__}")
        self.factory = factory
        self.log = log
        self.inner: Predictor | None = None
        self._fit_args: tuple[Any, ...] | None = None
        self._fitted = False

    def fit(
        self,
        curves: FloatArray,
        targets: FloatArray,
        hparams: FloatArray | None = None,
        seed: int = 0,
    ) -> None:
        """Fit now if the predictor is reachable; otherwise keep the data for a later retry."""
        self._fit_args = (
            np.array(curves, dtype=np.float64),
            np.array(targets, dtype=np.float64),
            None if hparams is None else np.array(hparams, dtype=np.float64),
            int(seed),
        )
        self._drop()
        self._try_fit()

    def _try_fit(self) -> bool:
        if self._fit_args is None or not self.log.available():
            return False
        curves, targets, hparams, seed = self._fit_args
        self.inner = self.factory()
        try:
            self.inner.fit(curves, targets, hparams, seed=seed)
        except _rpc_error_types() as exc:
            self.log.failure("fit", exc)
            self._drop(release=False)
            return False
        self.log.success("fit")
        self._fitted = True
        return True

    def predict(
        self, curves: FloatArray, hparams: FloatArray | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """The inner prediction, or the optimistic answer when the predictor is unreachable."""
        rows = int(np.asarray(curves).shape[0])
        if not self.log.available():
            return self.log.without_prediction(rows)
        if not self._fitted and not self._try_fit():
            return self.log.without_prediction(rows)
        inner = self.inner
        if inner is None:
            return self.log.without_prediction(rows)
        try:
            mean, spread = inner.predict(curves, hparams)
        except _rpc_error_types() as exc:
            self.log.failure("predict", exc)
            self._drop(release=False)
            return self.log.without_prediction(rows)
        self.log.success("predict")
        mean = np.asarray(mean, dtype=np.float64)
        spread = np.asarray(spread, dtype=np.float64)
        self.log.predicted(len(mean))
        return mean, spread

    def _drop(self, *, release: bool = True) -> None:
        """Forget the inner predictor; ``release`` closes it (deleting its gateway model).

        After a failed call nothing more is sent (the gateway may be slow rather than down, and a
        delete would cost another deadline): the model stays in the gateway's store and the
        channel is closed when the predictor is garbage-collected.
        """
        inner, self.inner, self._fitted = self.inner, None, False
        close = getattr(inner, "close", None)
        if not release or not callable(close):
            return
        try:
            close()
        except _rpc_error_types() as exc:
            logger.debug("could not release a predictor model: %s", exc)

    def close(self) -> None:
        """Release the inner predictor (a gateway model is deleted when the gateway answers)."""
        self._drop()


def guarded_factory(factory: Callable[[], Predictor], log: PredictionLog) -> Callable[[], Predictor]:
    """Wrap a predictor factory so that every predictor it makes is a :class:`GuardedPredictor`;
    the result has the ``log`` as its ``log`` attribute."""
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {factory!r}")
    return _GuardedFactory(factory, log)


def ensure_guarded(
    factory: Callable[[], Predictor], log: PredictionLog | None = None
) -> tuple[Callable[[], Predictor], PredictionLog]:
    """``factory`` made guarded (unchanged if it already is) and the :class:`PredictionLog` its
    predictors report to (``log``, else a new one). Guarding a local predictor (SVR, QSVR)
    changes nothing: it raises no ``grpc.RpcError``."""
    if isinstance(factory, _GuardedFactory):
        return factory, factory.log
    log = log if log is not None else PredictionLog()
    return guarded_factory(factory, log), log


class GatewayFactory:
    """Picklable factory of :class:`hpo_node.predictors.GatewayPredictor` for one study.

    ``address`` may be changed between calls (a restored study points its scheduler at the gateway
    of the new run); ``params`` are QSVR parameters (e.g. ``num_reads``) and the
    :class:`~hpo_node.predictors.GatewayPredictor` connection options (``token_env``, whose
    variable must be set: ``ValueError`` otherwise; ``tls_*``).
    """

    def __init__(
        self,
        address: str,
        features: CurveFeatures | None = None,
        *,
        timeout: float = 10.0,
        **params: Any,
    ) -> None:
        if not isinstance(address, str) or ":" not in address:
            raise ValueError(f"address must be HOST:PORT, got {address!r}")
        self.address = address
        self.features = features
        self.timeout = check_float("timeout", timeout, 0.0, float("inf"), low_open=True)
        self.params = dict(params)
        env = self.params.get("token_env")
        if env and not os.environ.get(env):
            # found now, not at the study's first Fit (where Ray Tune would bury it in a traceback)
            raise ValueError(
                f"token_env: environment variable {env!r} is not set; export it with the "
                "gateway's token (admin scope: the predictor fits models)"
            )

    def __call__(self) -> Predictor:
        return GatewayPredictor(self.address, self.features, timeout=self.timeout, **self.params)


class _GuardedFactory:
    """Picklable factory (Ray pickles schedulers with their predictor factories)."""

    def __init__(self, factory: Callable[[], Predictor], log: PredictionLog) -> None:
        if not isinstance(log, PredictionLog):
            raise TypeError(f"log must be a PredictionLog, got {type(log).__name__}")
        self.factory = factory
        self.log = log

    def __call__(self) -> Predictor:
        return GuardedPredictor(self.factory, self.log)
