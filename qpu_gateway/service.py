"""The gateway's domain service: fit, predict, describe and delete QSVR models.

Transport-free: the gRPC servicer converts messages into these calls and maps
:mod:`qpu_gateway.errors` to status codes. Fitted models are immutable per version, so an LRU of
loaded estimators serves repeated Predicts without touching SQLite's state column.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from qpu_gateway.backends import BackendRegistry, available_backends
from qpu_gateway.errors import InvalidArgumentError, PermissionDeniedError, ProblemTooLargeError
from qpu_gateway.qsvr import PARAM_NAMES, QSVR
from qpu_gateway.store import ModelStore, StoredModel

__all__ = ["FIT_PARAMS", "FitLimits", "GatewayService", "ModelRecord"]

FIT_PARAMS: Final = PARAM_NAMES
_MODEL_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


@dataclass(frozen=True)
class FitLimits:
    """Upper bounds that keep one request from exhausting the server (memory, time).

    The dense QUBO of ``n`` variables takes ``8 n^2`` bytes (2048 variables: 32 MiB).
    """

    max_qubo_variables: int = 2048
    max_num_reads: int = 100_000
    max_num_sweeps: int = 100_000

    def __post_init__(self) -> None:
        for name in ("max_qubo_variables", "max_num_reads", "max_num_sweeps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class ModelRecord:
    """Metadata of one stored model version (what ``ModelInfo`` carries)."""

    model_id: str
    version: int
    created_at: float
    info: dict[str, Any]


def _check_model_id(model_id: str, *, allow_empty: bool = False) -> None:
    if not model_id and allow_empty:
        return
    if not _MODEL_ID.match(model_id):
        raise InvalidArgumentError(
            "model_id",
            "must be 1-128 characters of letters, digits, '.', '_', ':' or '-', starting with a "
            f"letter or digit; got {model_id!r}",
        )


def _check_matrix(field: str, x: NDArray[np.float64]) -> None:
    if x.ndim != 2:
        raise InvalidArgumentError(field, f"must be a 2-D matrix, got {x.ndim} dimensions")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InvalidArgumentError(field, f"must not be empty, got shape {x.shape}")
    bad = ~np.isfinite(x)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise InvalidArgumentError(field, f"values must be finite; found {x[r, c]} at row {r}, col {c}")


class GatewayService:
    """Fits QSVR models on configured backends and serves them from a :class:`ModelStore`.

    Parameters
    ----------
    store : where models live.
    registry : creates each backend's ``dimod.Sampler``.
    default_backend : backend used when a request names none.
    allowed_backends : backends a request may name; ``None`` means every registered backend.
    limits : per-request bounds (QUBO size, reads, sweeps).
    cache_size : fitted models kept in memory for Predict.
    clock : wall-clock source for ``created_at`` (seconds since the epoch).
    """

    def __init__(
        self,
        store: ModelStore,
        registry: BackendRegistry,
        *,
        default_backend: str = "neal",
        allowed_backends: list[str] | None = None,
        limits: FitLimits | None = None,
        cache_size: int = 64,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if default_backend not in available_backends():
            raise ValueError(
                f"default_backend must be one of {available_backends()}, got {default_backend!r}"
            )
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.store = store
        self.registry = registry
        self.default_backend = default_backend
        self.allowed_backends = allowed_backends
        self.limits = limits or FitLimits()
        self.cache_size = cache_size
        self._clock = clock
        self._cache: OrderedDict[tuple[str, int], QSVR] = OrderedDict()
        self._cache_lock = threading.Lock()

    def _resolve_backend(self, backend: str) -> str:
        name = backend or self.default_backend
        if name not in available_backends():
            raise InvalidArgumentError(
                "backend", f"unknown backend {name!r}; known: {', '.join(available_backends())}"
            )
        allowed = self.allowed_backends
        if allowed is not None and name not in allowed and name != self.default_backend:
            raise PermissionDeniedError(
                f"backend {name!r} is not allowed by this server's configuration "
                f"(allowed: {', '.join(allowed)})"
            )
        return name

    def fit(
        self,
        x: NDArray[np.float64],
        y: NDArray[np.float64],
        *,
        model_id: str = "",
        params: Mapping[str, Any] | None = None,
        backend: str = "",
        seed: int | None = None,
    ) -> ModelRecord:
        """Fit and store a new model version. x: (N, F), y: (N,)."""
        _check_model_id(model_id, allow_empty=True)
        _check_matrix("x", x)
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise InvalidArgumentError("y", f"must have one value per row of x ({x.shape[0]}), got {y.size}")
        if not np.isfinite(y).all():
            i = int(np.flatnonzero(~np.isfinite(y))[0])
            raise InvalidArgumentError("y", f"values must be finite; found {y[i]} at index {i}")
        params = dict(params or {})
        unknown = set(params) - set(FIT_PARAMS)
        if unknown:
            raise InvalidArgumentError("params", f"unknown parameters {sorted(unknown)}")
        model = QSVR(**params, random_state=seed)
        try:
            model._check_params()
        except (ValueError, TypeError) as exc:
            field = next((p for p in FIT_PARAMS if str(exc).startswith(p + " ")), "")
            field = field or ("base" if str(exc).startswith("base and k0") else "")
            raise InvalidArgumentError(f"params.{field}" if field else "params", str(exc)) from exc
        self._check_limits(model, x.shape[0])
        name = self._resolve_backend(backend)
        model.sampler = self.registry.sampler(name)
        try:
            model.fit(x, y)
        except ProblemTooLargeError as exc:
            raise InvalidArgumentError("x", f"too many rows for backend {name!r}: {exc}") from exc

        stats = model.fit_stats_
        info = {
            "backend": name,
            "n_train": int(x.shape[0]),
            "n_features": int(x.shape[1]),
            "num_variables": int(stats["num_variables"]),
            "train_r2": float(model.train_r2_),
            "best_energy": float(stats["best_energy"]),
            "build_seconds": float(stats["build_seconds"]),
            "sample_seconds": float(stats["sample_seconds"]),
            "members": len(model.intercept_),
            "fallback": False,
            "fallback_reason": "",
            "params": {p: getattr(model, p) for p in FIT_PARAMS},
            "member_energies": model.member_energies_.tolist(),
            "seed": seed,
            "num_reads": int(stats["num_reads"]),
            "distinct_solutions": int(stats["distinct_solutions"]),
        }
        if info["params"]["c"] is None:
            info["params"]["c"] = float(model.c_)
        mid = model_id or f"m-{uuid.uuid4().hex[:16]}"
        created = self._clock()
        version = self.store.put(mid, info, model.get_state(), created)
        self._remember((mid, version), model)
        return ModelRecord(mid, version, created, info)

    def _check_limits(self, model: QSVR, n_rows: int) -> None:
        lim = self.limits
        n_vars = 2 * int(model.k) * n_rows
        if n_vars > lim.max_qubo_variables:
            raise InvalidArgumentError(
                "x",
                f"{n_rows} rows at k={model.k} make a QUBO of 2*k*rows = {n_vars} variables, above "
                f"this server's max_qubo_variables = {lim.max_qubo_variables}",
            )
        if model.num_reads > lim.max_num_reads:
            raise InvalidArgumentError(
                "params.num_reads",
                f"{model.num_reads} is above this server's max_num_reads = {lim.max_num_reads}",
            )
        if model.num_sweeps is not None and model.num_sweeps > lim.max_num_sweeps:
            raise InvalidArgumentError(
                "params.num_sweeps",
                f"{model.num_sweeps} is above this server's max_num_sweeps = {lim.max_num_sweeps}",
            )

    def predict(
        self, model_id: str, x: NDArray[np.float64], version: int | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], int]:
        """Mean and member spread for x: (rows, F) -> (rows,), (rows,), and the version used."""
        _check_model_id(model_id)
        _check_matrix("x", x)
        if version is None:
            version = self.store.latest_version(model_id)
        model = self._load(model_id, version)
        if x.shape[1] != model.n_features_in_:
            raise InvalidArgumentError(
                "x", f"has {x.shape[1]} columns but model {model_id!r} expects {model.n_features_in_}"
            )
        mean, std = model.predict(x, return_std=True)
        return mean, std, version

    def get(self, model_id: str, version: int | None = None) -> ModelRecord:
        """Metadata of one version (the latest when ``version`` is None)."""
        _check_model_id(model_id)
        return _record(self.store.get(model_id, version, with_state=False))

    def list(self, model_id: str = "") -> list[ModelRecord]:
        """Latest version of every model, or every version of ``model_id``."""
        if model_id:
            _check_model_id(model_id)
        return [_record(m) for m in self.store.list(model_id or None)]

    def delete(self, model_id: str) -> int:
        """Delete every version of ``model_id``; returns how many were deleted."""
        _check_model_id(model_id)
        n = self.store.delete(model_id)
        with self._cache_lock:
            for key in [k for k in self._cache if k[0] == model_id]:
                del self._cache[key]
        return n

    def _load(self, model_id: str, version: int) -> QSVR:
        key = (model_id, version)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        stored = self.store.get(model_id, version)
        model = QSVR.from_state(stored.state or {})
        self._remember(key, model)
        return model

    def _remember(self, key: tuple[str, int], model: QSVR) -> None:
        if self.cache_size == 0:
            return
        with self._cache_lock:
            self._cache[key] = model
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)


def _record(m: StoredModel) -> ModelRecord:
    return ModelRecord(m.model_id, m.version, m.created_at, m.info)
