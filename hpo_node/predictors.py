"""Final-loss predictors for the Swift schedulers: features, the protocol, SVR / QSVR / gateway.

A predictor is fitted on partial learning curves (the losses after ``1 .. p`` epochs, one row per
trial, shape ``(n, p)``) with their losses at a target resource (shape ``(n,)``), and predicts a mean
and a spread for new partial curves of the same length, batched (shapes ``(m,)``). The curve-based
predictor follows García Amboage et al. 2023 (arXiv:2311.17508) and Wulff et al. 2024 (QMI 6, 59).

Features (:class:`CurveFeatures`): the partial curve down-sampled to at most ``max_points`` points
(evenly spaced indices, the last point always kept), optionally its first (``differences=1``) and
second (``differences=2``) differences, optionally the trial's hyperparameters (``hparams=True``).
Features are returned in raw units: :class:`SVRPredictor` min-max scales them on its training set,
QSVR (in-process or through the gateway) does the same itself, as the reference protocol does.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import count
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from hpo_node.core import check_choice, check_float, check_int

FloatArray = NDArray[np.float64]

PREDICTORS = ("svr", "qsvr", "gateway", "oracle")


@dataclass(frozen=True)
class CurveFeatures:
    """Feature extraction from partial curves.

    ``max_points``: down-sample the curve to at most this many points (``None``: keep all);
    ``differences``: 0 (curve only), 1 (+ first differences), 2 (+ first and second differences)
    of the down-sampled curve; ``hparams``: append the trial's hyperparameters.
    """

    max_points: int | None = 25
    differences: int = 0
    hparams: bool = False

    def __post_init__(self) -> None:
        if self.max_points is not None:
            check_int("max_points", self.max_points, 1)
        check_int("differences", self.differences, 0)
        if self.differences > 2:
            raise ValueError(f"differences must be <= 2, got {self.differences}")

    def transform(self, curves: FloatArray, hparams: FloatArray | None = None) -> FloatArray:
        """Map curves ``(n, p)`` (and hyperparameters ``(n, h)``) to features ``(n, f)``."""
        x = np.asarray(curves, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] < 1:
            raise ValueError(f"curves must have shape (n, p) with p >= 1, got {x.shape}")
        p = x.shape[1]
        if self.max_points is not None and p > self.max_points:
            idx = np.unique(np.round(np.linspace(0, p - 1, self.max_points)).astype(np.int64))
            x = x[:, idx]
        parts = [x]
        d = x
        for _ in range(self.differences):
            d = np.diff(d, axis=1)
            parts.append(d)
        if self.hparams:
            if hparams is None:
                raise ValueError("hparams must be given when CurveFeatures.hparams is True")
            h = np.asarray(hparams, dtype=np.float64)
            if h.shape[0] != x.shape[0]:
                raise ValueError(f"hparams must have {x.shape[0]} rows, got {h.shape[0]}")
            parts.append(h.reshape(x.shape[0], -1))
        return np.concatenate(parts, axis=1)


@runtime_checkable
class Predictor(Protocol):
    """Fit on partial curves -> losses at the target resource; predict ``(mean, spread)``."""

    def fit(
        self,
        curves: FloatArray,
        targets: FloatArray,
        hparams: FloatArray | None = None,
        seed: int = 0,
    ) -> None:
        """Fit on ``curves (n, p)`` and ``targets (n,)``; ``seed`` drives any randomness."""
        ...

    def predict(
        self, curves: FloatArray, hparams: FloatArray | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """Return ``(mean (m,), spread (m,))`` for ``curves (m, p)``, in the targets' units."""
        ...


class _FeaturePredictor:
    """Shared part: feature extraction, optional training-set cap, shape checks."""

    def __init__(self, features: CurveFeatures | None, max_train: int | None) -> None:
        self.features = features if features is not None else CurveFeatures()
        if not isinstance(self.features, CurveFeatures):
            raise TypeError(f"features must be a CurveFeatures, got {type(features).__name__}")
        self.max_train = None if max_train is None else check_int("max_train", max_train, 2)
        self._fitted = False

    def fit(
        self,
        curves: FloatArray,
        targets: FloatArray,
        hparams: FloatArray | None = None,
        seed: int = 0,
    ) -> None:
        x = self.features.transform(curves, hparams)
        y = np.asarray(targets, dtype=np.float64).reshape(-1)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"targets must have {x.shape[0]} values, got {y.shape[0]}")
        if x.shape[0] < 2:
            raise ValueError(f"curves must hold at least 2 training curves, got {x.shape[0]}")
        rng = np.random.default_rng(seed)
        if self.max_train is not None and x.shape[0] > self.max_train:
            keep = np.sort(rng.choice(x.shape[0], size=self.max_train, replace=False))
            x, y = x[keep], y[keep]
        self._fit(x, y, rng)
        self._fitted = True

    def predict(
        self, curves: FloatArray, hparams: FloatArray | None = None
    ) -> tuple[FloatArray, FloatArray]:
        if not self._fitted:
            raise RuntimeError("predict called before fit")
        x = self.features.transform(curves, hparams)
        mean, spread = self._predict(x)
        return np.asarray(mean, dtype=np.float64), np.asarray(spread, dtype=np.float64)

    def _fit(self, x: FloatArray, y: FloatArray, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def _predict(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        raise NotImplementedError


class _MinMax:
    """Min-max scaling fitted on a training set; constant columns map to 0."""

    def __init__(self, a: FloatArray) -> None:
        self.lo = a.min(axis=0)
        span = a.max(axis=0) - self.lo
        self.span = np.where(span > 0, span, 1.0)

    def forward(self, a: FloatArray) -> FloatArray:
        return (a - self.lo) / self.span

    def inverse(self, a: FloatArray) -> FloatArray:
        return a * self.span + self.lo


class SVRPredictor(_FeaturePredictor):
    """Classical baseline: ``sklearn.svm.SVR`` (RBF) on min-max-scaled features and targets.

    Defaults mirror the QSVR reference parameters (gamma = 0.1, epsilon = 0.02 on targets scaled to
    [0, 1]) with C = 1. ``spread`` is 0 unless ``n_bootstrap > 0``: then it is the standard deviation
    of ``n_bootstrap`` SVRs fitted on bootstrap resamples of the training set (the mean stays the
    prediction of the SVR fitted on the whole set).
    """

    def __init__(
        self,
        features: CurveFeatures | None = None,
        *,
        c: float = 1.0,
        epsilon: float = 0.02,
        gamma: float = 0.1,
        n_bootstrap: int = 0,
        max_train: int | None = None,
    ) -> None:
        super().__init__(features, max_train)
        self.c = check_float("c", c, 0.0, float("inf"), low_open=True, high_open=True)
        self.epsilon = check_float("epsilon", epsilon, 0.0, float("inf"), high_open=True)
        self.gamma = check_float("gamma", gamma, 0.0, float("inf"), low_open=True, high_open=True)
        self.n_bootstrap = check_int("n_bootstrap", n_bootstrap, 0)

    def _new(self) -> Any:
        from sklearn.svm import SVR

        return SVR(kernel="rbf", C=self.c, epsilon=self.epsilon, gamma=self.gamma)

    def _fit(self, x: FloatArray, y: FloatArray, rng: np.random.Generator) -> None:
        self._sx = _MinMax(x)
        self._sy = _MinMax(y[:, None])
        xs, ys = self._sx.forward(x), self._sy.forward(y[:, None])[:, 0]
        self._model = self._new().fit(xs, ys)
        self._boot = []
        for _ in range(self.n_bootstrap):
            idx = rng.integers(0, xs.shape[0], size=xs.shape[0])
            self._boot.append(self._new().fit(xs[idx], ys[idx]))

    def _rbf(self, model: Any, xs: FloatArray) -> FloatArray:
        """``model.predict(xs)`` computed from its support vectors (sklearn's per-call checks
        cost more than the kernel for the few rows a scheduler asks about)."""
        sv = model.support_vectors_
        d2 = (xs**2).sum(axis=1)[:, None] - 2.0 * xs @ sv.T + (sv**2).sum(axis=1)[None, :]
        return np.exp(-self.gamma * np.maximum(d2, 0.0)) @ model.dual_coef_[0] + model.intercept_[0]

    def _predict(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        xs = self._sx.forward(x)
        mean = self._sy.inverse(self._rbf(self._model, xs)[:, None])[:, 0]
        if not self._boot:
            return mean, np.zeros_like(mean)
        members = np.stack([self._sy.inverse(m.predict(xs)[:, None])[:, 0] for m in self._boot])
        return mean, members.std(axis=0)


class QSVRPredictor(_FeaturePredictor):
    """The gateway's QSVR estimator in-process (``qpu_gateway.qsvr.QSVR``, simulated annealing).

    QSVR's defaults (``qpu_gateway.qsvr``; ``params`` override them), N <= 20 training curves
    (``max_train``: a seeded random subset when more curves are known). ``spread`` is the spread
    of the ensemble members. QSVR scales features and targets itself.
    """

    def __init__(
        self,
        features: CurveFeatures | None = None,
        *,
        num_reads: int = 1000,
        num_sweeps: int | None = None,
        max_train: int | None = 20,
        **params: Any,
    ) -> None:
        super().__init__(features, max_train)
        self.num_reads = check_int("num_reads", num_reads, 1)
        self.num_sweeps = None if num_sweeps is None else check_int("num_sweeps", num_sweeps, 1)
        self.params = dict(params)

    def _fit(self, x: FloatArray, y: FloatArray, rng: np.random.Generator) -> None:
        from qpu_gateway.qsvr import QSVR

        kw: dict[str, Any] = {"num_reads": self.num_reads, **self.params}
        if self.num_sweeps is not None:
            kw["num_sweeps"] = self.num_sweeps
        seed = int(rng.integers(0, 2**31 - 1))
        self._model = QSVR(random_state=seed, **kw).fit(x, y)

    def _predict(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        mean, std = self._model.predict(x, return_std=True)
        return mean, std


@runtime_checkable
class FinalLossOracle(Protocol):
    """A predictor that knows final losses: ``final_loss(curves)`` -> loss at R of each curve."""

    def final_loss(self, curves: Sequence[Sequence[float]]) -> FloatArray: ...


class TableOracle:
    """The ceiling of a rule, not a predictor: the true loss at ``max_resource`` from a table.

    A partial curve is identified by its prefix among the table's ``curves (rows, epochs)`` (in loss
    orientation), which is unique on real and synthetic tables. As a :class:`Predictor` (the
    published rules) it answers the true loss at the target resource of its training pairs.
    """

    def __init__(self, curves: FloatArray, max_resource: int) -> None:
        self.curves = np.asarray(curves, dtype=np.float64)
        if self.curves.ndim != 2:
            raise ValueError(f"curves must have shape (rows, epochs), got {self.curves.shape}")
        self.max_resource = check_int("max_resource", max_resource, 1)
        if self.max_resource > self.curves.shape[1]:
            raise ValueError(
                f"max_resource must be <= the table's {self.curves.shape[1]} epochs, "
                f"got {max_resource}"
            )
        self.resource = self.max_resource

    def _row(self, curve: Sequence[float]) -> int:
        c = np.asarray(curve, dtype=np.float64)
        hits = np.flatnonzero(np.all(self.curves[:, : c.shape[0]] == c, axis=1))
        if hits.size == 0:
            raise ValueError("curve must be a prefix of a table row, got an unknown curve")
        return int(hits[0])

    def final_loss(self, curves: Sequence[Sequence[float]]) -> FloatArray:
        return np.array([self.curves[self._row(c), self.max_resource - 1] for c in curves])

    def fit(self, curves: Any, targets: Any, hparams: Any = None, seed: int = 0) -> None:
        first = np.asarray(curves, dtype=np.float64)[0]
        try:
            row = self._row(first)
        except ValueError:
            self.resource = self.max_resource
            return
        hits = np.flatnonzero(self.curves[row] == float(np.asarray(targets)[0]))
        self.resource = int(hits[0]) + 1 if hits.size else self.max_resource

    def predict(self, curves: Any, hparams: Any = None) -> tuple[FloatArray, FloatArray]:
        mean = np.array(
            [self.curves[self._row(c), self.resource - 1] for c in np.asarray(curves)]
        )
        return mean, np.zeros_like(mean)


_GATEWAY_IDS = count()
# Model ids carry this process's namespace: two studies (processes) on one gateway never share a
# model id, so one study's cleanup never deletes another's models.
_GATEWAY_NAMESPACE = uuid.uuid4().hex[:12]


class GatewayPredictor(_FeaturePredictor):
    """QSVR fitted and served by a running ``qpu-gateway`` over gRPC.

    One ``Fit`` per :meth:`fit` (a new version of this predictor's model), one batched ``Predict``
    per :meth:`predict`; every call carries the deadline ``timeout`` (seconds). gRPC errors
    propagate as ``grpc.RpcError``. ``params`` are QSVR parameter names (e.g. ``num_reads=200``).

    A secured gateway: ``tls_ca`` (TLS), ``tls_cert`` + ``tls_key`` (mutual TLS), and
    ``token_env``, the *name* of an environment variable holding the bearer token. The token is
    read when connecting, so it never sits in this object (which Ray pickles into checkpoints).

    The model id is ``{model_prefix}-{process namespace}-{n}``: unique to this process, so that
    studies sharing a gateway never touch each other's models (:meth:`close` deletes its own).
    """

    def __init__(
        self,
        address: str,
        features: CurveFeatures | None = None,
        *,
        timeout: float = 30.0,
        backend: str = "",
        model_prefix: str = "hpo-node",
        max_train: int | None = 20,
        token_env: str | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        **params: Any,
    ) -> None:
        super().__init__(features, max_train)
        if not isinstance(address, str) or ":" not in address:
            raise ValueError(f"address must be HOST:PORT, got {address!r}")
        self.address = address
        self.timeout = check_float(
            "timeout", timeout, 0.0, float("inf"), low_open=True, high_open=True
        )
        self.backend = backend
        self.token_env = token_env
        self.tls = {"tls_ca": tls_ca, "tls_cert": tls_cert, "tls_key": tls_key}
        self.params = dict(params)
        self.model_id = f"{model_prefix}-{_GATEWAY_NAMESPACE}-{next(_GATEWAY_IDS)}"
        self._client: Any = None
        self._version: int | None = None

    def _connect(self) -> Any:
        if self._client is None:
            from qpu_gateway.client import GatewayClient

            token = None
            if self.token_env:
                token = os.environ.get(self.token_env)
                if not token:
                    raise ValueError(f"token_env: environment variable {self.token_env!r} is not set")
            self._client = GatewayClient(self.address, timeout=self.timeout, token=token, **self.tls)
        return self._client

    def _fit(self, x: FloatArray, y: FloatArray, rng: np.random.Generator) -> None:
        seed = int(rng.integers(0, 2**31 - 1))
        info = self._connect().fit(
            x,
            y,
            model_id=self.model_id,
            backend=self.backend,
            seed=seed,
            timeout=self.timeout,
            **self.params,
        )
        self.model_id = info.model_id or self.model_id
        self._version = int(info.version)

    def _predict(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        return self._connect().predict(
            self.model_id, x, version=self._version, timeout=self.timeout
        )

    def close(self) -> None:
        """Delete this predictor's model on the gateway (best effort) and close the channel."""
        if self._client is None:
            return
        import grpc

        try:
            if self._fitted:
                self._client.delete_model(self.model_id, timeout=self.timeout)
        except grpc.RpcError:
            # Best effort: an unreachable gateway must not fail the study that is cleaning up;
            # the model stays in the gateway's store under this model_id.
            pass
        finally:
            self._client.close()
            self._client = None


def make_predictor_factory(
    name: str,
    *,
    features: CurveFeatures | None = None,
    gateway: str | None = None,
    **params: Any,
) -> Callable[[], Predictor]:
    """A factory of fresh predictors by name (``svr``, ``qsvr``, ``gateway``, ``oracle``: the
    table's true losses, ``curves`` and ``max_resource`` in ``params``; a ceiling, not a model).

    The Swift schedulers keep one predictor per (decision point, target resource) and call the
    factory for each; ``params`` go to the predictor's constructor.
    """
    check_choice("predictor", name, PREDICTORS)
    if name == "oracle":
        if "curves" not in params or "max_resource" not in params:
            raise ValueError(
                "predictor 'oracle' needs the table: pass curves=(rows, epochs) and max_resource"
            )
        curves, r_max = params["curves"], params["max_resource"]
        return lambda: TableOracle(curves, r_max)
    if name == "svr":
        return lambda: SVRPredictor(features, **params)
    if name == "qsvr":
        return lambda: QSVRPredictor(features, **params)
    if gateway is None:
        raise ValueError("gateway must be HOST:PORT for predictor 'gateway', got None")
    # guarded: while the gateway is unreachable, Swift decides as its plain algorithm (the
    # factory's ``log`` counts it; hpo_node.resilient)
    from hpo_node.resilient import GatewayFactory, PredictionLog, guarded_factory

    return guarded_factory(GatewayFactory(gateway, features, **params), PredictionLog())


class PredictorSupport:
    """Predictor plumbing shared by the Swift schedulers: seeded fits, batched predicts, counts.

    ``factory`` builds a fresh :class:`Predictor`; fit seeds are drawn from a generator seeded by
    ``seed`` so that a run (and a run restored from a checkpoint) is reproducible.
    """

    def __init__(self, factory: Callable[[], Predictor], seed: int | None) -> None:
        if not callable(factory):
            raise TypeError(f"predictor must be a callable returning a Predictor, got {factory!r}")
        self.factory = factory
        self.rng = np.random.default_rng(seed)
        self.fits = 0
        self.predicts = 0
        self._live: list[Predictor] = []

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its live models (a gateway predictor holds a gRPC channel); the
        schedulers rebuild the models they need from their fit logs."""
        state = self.__dict__.copy()
        state["_live"] = []
        return state

    def next_seed(self) -> int:
        """A fresh fit seed from the generator."""
        return int(self.rng.integers(0, 2**31 - 1))

    def fit(
        self,
        curves: FloatArray,
        targets: FloatArray,
        hparams: FloatArray | None,
        seed: int,
        *,
        counted: bool = True,
    ) -> Predictor:
        """Fit a fresh predictor on ``curves (n, p)`` -> ``targets (n,)``."""
        model = self.factory()
        self._live.append(model)
        model.fit(curves, targets, hparams, seed=seed)
        if counted:
            self.fits += 1
        return model

    def release(self, model: Predictor) -> None:
        """Free a model no longer used (a gateway model is deleted on the gateway)."""
        if model in self._live:
            self._live.remove(model)
        close = getattr(model, "close", None)
        if callable(close):
            close()

    def close(self) -> None:
        """Release every live model."""
        for model in list(self._live):
            self.release(model)

    def predict(
        self, model: Predictor, curves: FloatArray, hparams: FloatArray | None
    ) -> tuple[FloatArray, FloatArray]:
        """One batched prediction ``(mean (m,), spread (m,))``."""
        self.predicts += 1
        mean, spread = model.predict(curves, hparams)
        return np.asarray(mean, dtype=np.float64), np.asarray(spread, dtype=np.float64)

    def state(self) -> dict[str, Any]:
        """JSON-serialisable generator state and counters."""
        return {"rng": self.rng.bit_generator.state, "fits": self.fits, "predicts": self.predicts}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""
        self.rng.bit_generator.state = state["rng"]
        self.fits = int(state["fits"])
        self.predicts = int(state["predicts"])
