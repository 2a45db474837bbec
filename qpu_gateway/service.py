"""The gateway's domain service: fit, predict, describe and delete QSVR models.

Transport-free: the gRPC servicer converts messages into these calls and maps
:mod:`qpu_gateway.errors` to status codes. Fitted models are immutable per version, so an LRU of
loaded estimators serves repeated Predicts without touching SQLite's state column.

A Fit's sampling runs on an :mod:`qpu_gateway.execution` executor (in-thread, or a pool of
worker processes). It is stopped when its deadline passes, its caller cancels or the service
shuts down, and a version is committed only while the Fit is still wanted: a Fit that ends in
``DeadlineExceededError``, ``FitCancelledError`` or ``ShuttingDownError`` stores nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final, NoReturn

import numpy as np
from numpy.typing import NDArray

from qpu_gateway.backends import BackendRegistry, available_backends
from qpu_gateway.breaker import CircuitBreaker
from qpu_gateway.errors import (
    AllBackendsFailedError,
    BackendFailure,
    DeadlineExceededError,
    GatewayError,
    InvalidArgumentError,
    PermissionDeniedError,
    ProblemTooLargeError,
    ShuttingDownError,
)
from qpu_gateway.execution import Attempt, Executor, InlineExecutor, Interrupted
from qpu_gateway.qsvr import (
    PARAM_NAMES,
    QSVR,
    DataRangeError,
    NonFiniteProblemError,
    check_data_range,
)
from qpu_gateway.store import ModelStore, StoredModel

__all__ = ["FIT_PARAMS", "FitCancelledError", "FitLimits", "GatewayService", "ModelRecord"]

FIT_PARAMS: Final = PARAM_NAMES
DEFAULT_PAGE_SIZE: Final = 100
MAX_PAGE_SIZE: Final = 1000
log = logging.getLogger("qpu_gateway.service")
_MODEL_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_IDEMPOTENCY_KEY: Final = re.compile(r"^[\x21-\x7e]{1,128}$")
PREDICT_CHUNK_CELLS: Final = 1_000_000  # kernel entries evaluated at once in Predict (8 MB)


class FitCancelledError(GatewayError):
    """The caller cancelled the Fit; its sampling stopped and nothing was stored."""


@dataclass(frozen=True)
class FitLimits:
    """Upper bounds that keep one request from exhausting the server (memory, time).

    The dense QUBO of ``n`` variables takes ``8 n^2`` bytes (2048 variables: 32 MiB). A
    Predict of ``r`` rows on a model of ``n`` training rows evaluates ``r n`` kernel entries (in
    chunks of ``PREDICT_CHUNK_CELLS``); ``max_predict_cells`` bounds ``r n``.
    """

    max_qubo_variables: int = 2048
    max_num_reads: int = 100_000
    max_num_sweeps: int = 100_000
    max_train_rows: int = 1000
    max_features: int = 10_000
    max_predict_rows: int = 100_000
    max_predict_cells: int = 10_000_000  # Predict rows x the model's training rows

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{f.name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class ModelRecord:
    """Metadata of one stored model version (what ``ModelInfo`` carries)."""

    model_id: str
    version: int
    created_at: float
    info: dict[str, Any]


def _shown(value: str, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters with its length named (a bad value may be
    megabytes; error messages and logs show its start)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(value)} characters)"


def _check_version(version: int | None) -> None:
    if version is not None and version < 1:
        raise InvalidArgumentError(
            "version", f"must be >= 1 (versions count from 1; unset: the latest), got {version}"
        )


def _check_model_id(model_id: str, *, allow_empty: bool = False) -> None:
    if not model_id and allow_empty:
        return
    if not _MODEL_ID.match(model_id):
        raise InvalidArgumentError(
            "model_id",
            "must be 1-128 characters of letters, digits, '.', '_', ':' or '-', starting with a "
            f"letter or digit; got {_shown(model_id)}",
        )


def _check_feature_names(names: Sequence[str] | None, n_features: int) -> list[str]:
    """``names`` as a list: empty, or one unique non-empty name of <= 128 characters per column."""
    out = [str(n) for n in names or []]
    if not out:
        return out
    if len(out) != n_features:
        raise InvalidArgumentError(
            "feature_names", f"must name each of x's {n_features} columns, got {len(out)} names"
        )
    bad = next((n for n in out if not n or len(n) > 128), None)
    if bad is not None:
        raise InvalidArgumentError(
            "feature_names", f"each name must have 1-128 characters, got {_shown(bad)}"
        )
    if len(set(out)) != len(out):
        dup = next(n for n in out if out.count(n) > 1)
        raise InvalidArgumentError("feature_names", f"names must be unique; {dup!r} repeats")
    return out


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
    chain : backends tried in order when a request names none (default ``["neal"]``).
    allowed_backends : backends a request may name besides the chain's.
    limits : per-request bounds (QUBO size, reads, sweeps).
    breaker_failures, breaker_cooldown_seconds : a backend failing this many times in a row is
        skipped for the cool-down.
    cache_size : fitted models kept in memory for Predict.
    clock : wall-clock source for ``created_at`` (seconds since the epoch).
    monotonic : monotonic clock for breakers.
    executor : where sampling runs (default: an :class:`InlineExecutor` on ``registry``).
    commit_margin : seconds that must be left before a Fit's deadline to commit its version;
        a Fit finishing later is reported ``DeadlineExceededError`` and stores nothing.
    """

    def __init__(
        self,
        store: ModelStore,
        registry: BackendRegistry,
        *,
        chain: list[str] | None = None,
        allowed_backends: list[str] | None = None,
        limits: FitLimits | None = None,
        breaker_failures: int = 3,
        breaker_cooldown_seconds: float = 60.0,
        cache_size: int = 64,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        executor: Executor | None = None,
        commit_margin: float = 0.1,
    ) -> None:
        chain = list(chain or ["neal"])
        for name in [*chain, *(allowed_backends or [])]:
            if name not in available_backends():
                raise ValueError(f"backend must be one of {available_backends()}, got {name!r}")
        if len(set(chain)) != len(chain):
            raise ValueError(f"chain must not repeat a backend, got {chain}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        if not commit_margin >= 0:
            raise ValueError(f"commit_margin must be >= 0, got {commit_margin!r}")
        self.store = store
        self.registry = registry
        self.chain = chain
        self.allowed_backends = allowed_backends
        self.limits = limits or FitLimits()
        self.cache_size = cache_size
        self._clock = clock
        self._monotonic = monotonic
        self.executor: Executor = executor or InlineExecutor(registry)
        self.commit_margin = float(commit_margin)
        self._breakers = {
            name: CircuitBreaker(breaker_failures, breaker_cooldown_seconds, monotonic)
            for name in {*chain, *(allowed_backends or [])}
        }
        self._cache: OrderedDict[tuple[str, int], QSVR] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._stopping = threading.Event()

    def begin_shutdown(self) -> None:
        """Interrupt running Fits (they store nothing) and refuse new ones."""
        self._stopping.set()

    def close(self, grace: float = 0.0) -> None:
        """Shut down: interrupt Fits, stop the executor (busy workers after ``grace`` seconds)."""
        self._stopping.set()
        self.executor.close(grace)

    @property
    def default_backend(self) -> str:
        """The first backend of the chain."""
        return self.chain[0]

    def breaker(self, name: str) -> CircuitBreaker:
        """The circuit breaker of backend ``name``."""
        return self._breakers[name]

    def _chain_for(self, backend: str) -> list[str]:
        """The backends to try, in order: the configured chain, or the requested backend (and
        the rest of the chain after it, when it is part of the chain)."""
        if not backend:
            return list(self.chain)
        if backend not in available_backends():
            raise InvalidArgumentError(
                "backend", f"unknown backend {_shown(backend)}; known: {', '.join(available_backends())}"
            )
        allowed = set(self.chain) | set(self.allowed_backends or [])
        if backend not in allowed:
            raise PermissionDeniedError(
                f"{backend!r} is not allowed by this server's configuration "
                f"(allowed: {', '.join(sorted(allowed))})",
                field="backend",
            )
        return self.chain[self.chain.index(backend):] if backend in self.chain else [backend]

    def fit(
        self,
        x: NDArray[np.float64],
        y: NDArray[np.float64],
        *,
        model_id: str = "",
        params: Mapping[str, Any] | None = None,
        backend: str = "",
        seed: int | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
        cancelled: Callable[[], bool] | None = None,
        idempotency_key: str = "",
        feature_names: Sequence[str] | None = None,
    ) -> ModelRecord:
        """Fit and store a new model version. x: (N, F), y: (N,); ``feature_names``: (F,) names
        of x's columns, stored with the model (``info["feature_names"]``).

        Tries the backends of the chain in order; a backend failure (cloud errors, a problem it
        cannot embed) moves on to the next one, and a backend whose circuit breaker is open is
        skipped. The Fit stops -- and stores nothing -- when ``deadline`` (``time.monotonic()``
        seconds; or ``timeout`` seconds from now) passes (``DeadlineExceededError``), when
        ``cancelled()`` turns true (``FitCancelledError``) or at shutdown (``ShuttingDownError``).
        A Fit with an ``idempotency_key`` already stored returns that version without sampling.
        """
        if timeout is not None:
            end = time.monotonic() + timeout
            deadline = end if deadline is None else min(deadline, end)
        _check_model_id(model_id, allow_empty=True)
        if idempotency_key and not _IDEMPOTENCY_KEY.match(idempotency_key):
            raise InvalidArgumentError(
                "idempotency_key",
                f"must be 1-128 printable ASCII characters, got {_shown(idempotency_key)}",
            )
        _check_matrix("x", x)
        names = _check_feature_names(feature_names, x.shape[1])
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise InvalidArgumentError("y", f"must have one value per row of x ({x.shape[0]}), got {y.size}")
        if not np.isfinite(y).all():
            i = int(np.flatnonzero(~np.isfinite(y))[0])
            raise InvalidArgumentError("y", f"values must be finite; found {y[i]} at index {i}")
        if x.shape[0] < 2:
            raise InvalidArgumentError(
                "x", f"a Fit needs at least 2 training rows (samples), got {x.shape[0]}"
            )
        params = dict(params or {})
        unknown = set(params) - set(FIT_PARAMS)
        if unknown:
            raise InvalidArgumentError("params", f"unknown parameters {sorted(unknown)}")
        for name in ("k", "num_reads", "num_sweeps"):
            if not isinstance(params.get(name, 1), (int, np.integer)):
                raise InvalidArgumentError(f"params.{name}", f"must be an integer, got {params[name]!r}")
        model = QSVR(**params, random_state=seed)
        try:  # the parameters' own ranges first, then this server's limits on their products
            model._check_params()
        except (ValueError, TypeError) as exc:
            field = next((p for p in FIT_PARAMS if str(exc).startswith(p + " ")), "")
            field = field or ("base" if str(exc).startswith("base and k0") else "")
            raise InvalidArgumentError(f"params.{field}" if field else "params", str(exc)) from exc
        self._check_limits(model, x.shape[0], x.shape[1])
        try:
            check_data_range(x, y)
        except DataRangeError as exc:
            raise InvalidArgumentError(exc.field, exc.description) from exc
        chain = self._chain_for(backend)
        request_hash = (
            _request_hash(x, y, model_id, params, backend, seed, names) if idempotency_key else ""
        )
        if idempotency_key:
            prior = self._find_idempotent(idempotency_key, request_hash)
            if prior is not None:
                return self.get(*prior)
        if self._stopping.is_set():
            raise ShuttingDownError("the gateway is shutting down")

        def stop() -> bool:
            return (
                self._stopping.is_set()
                or (cancelled is not None and cancelled())
                or (deadline is not None and time.monotonic() > deadline)
            )

        try:
            name, attempted, reasons, state = self._fit_on_chain(
                x, y, params, seed, chain, deadline, stop
            )
        except Interrupted:
            self._raise_stopped(cancelled, "while sampling; the Fit was stopped")
        # Check-and-commit: only a Fit that is still wanted (with time left to answer) stores.
        if stop() or (deadline is not None and deadline - time.monotonic() < self.commit_margin):
            self._raise_stopped(cancelled, "before the model could be stored")
        model = QSVR.from_state(state)
        info = _fit_info(model, x, name, chain, reasons, attempted, seed)
        info["feature_names"] = names
        mid = model_id or f"m-{uuid.uuid4().hex[:16]}"
        created = self._clock()
        if idempotency_key:
            try:
                mid, version, stored = self.store.put_idempotent(
                    idempotency_key, request_hash, mid, info, state, created
                )
            except ValueError as exc:
                raise InvalidArgumentError("idempotency_key", str(exc)) from exc
            if not stored:
                return self.get(mid, version)
        else:
            version = self.store.put(mid, info, state, created)
        self._remember((mid, version), model)
        return ModelRecord(mid, version, created, info)

    def _find_idempotent(self, key: str, request_hash: str) -> tuple[str, int] | None:
        try:
            return self.store.find_idempotent(key, request_hash)
        except ValueError as exc:
            raise InvalidArgumentError("idempotency_key", str(exc)) from exc

    def _raise_stopped(self, cancelled: Callable[[], bool] | None, when: str) -> NoReturn:
        if self._stopping.is_set():
            raise ShuttingDownError(f"the gateway shut down {when}; nothing was stored")
        if cancelled is not None and cancelled():
            raise FitCancelledError(f"the caller cancelled the Fit {when}; nothing was stored")
        raise DeadlineExceededError(f"the deadline passed {when}; nothing was stored")

    def _fit_on_chain(
        self,
        x: NDArray[np.float64],
        y: NDArray[np.float64],
        params: dict[str, Any],
        seed: int | None,
        chain: list[str],
        deadline: float | None,
        stop: Callable[[], bool],
    ) -> tuple[str, list[str], list[str], dict[str, Any]]:
        """Fit on the first backend of ``chain`` that works; ``Interrupted`` once ``stop()``.

        Returns (backend used, backends attempted, reasons for each one passed over, state).
        """
        attempted: list[str] = []
        reasons: list[str] = []
        too_large = 0
        for i, name in enumerate(chain):
            breaker = self._breakers.setdefault(name, CircuitBreaker())
            if not breaker.allow():
                reasons.append(f"{name}: skipped (circuit open after repeated failures)")
                continue
            if stop():
                raise Interrupted
            attempted.append(name)
            attempt = Attempt(name, x, y, params, seed, deadline)
            try:
                state = self.executor.run(attempt, stop)
            except BackendFailure as exc:
                breaker.record_failure()
                reasons.append(f"{name}: {exc}")
                log.warning("backend %s failed%s: %s", name,
                            ", falling back" if i + 1 < len(chain) else " (the last of the chain)",
                            exc)
                continue
            except ProblemTooLargeError as exc:
                too_large += 1
                reasons.append(f"{name}: {exc}")
                continue
            except NonFiniteProblemError as exc:
                raise InvalidArgumentError("params", str(exc)) from exc
            breaker.record_success()
            return name, attempted, reasons, state
        if too_large and too_large == len(attempted):
            raise InvalidArgumentError("x", f"too many rows for backend(s): {'; '.join(reasons)}")
        raise AllBackendsFailedError(f"every backend failed: {'; '.join(reasons)}")

    def _check_limits(self, model: QSVR, n_rows: int, n_features: int) -> None:
        lim = self.limits
        if n_rows > lim.max_train_rows:
            raise InvalidArgumentError(
                "x", f"{n_rows} training rows are above this server's max_train_rows = {lim.max_train_rows}"
            )
        if n_features > lim.max_features:
            raise InvalidArgumentError(
                "x", f"{n_features} features are above this server's max_features = {lim.max_features}"
            )
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
        """Mean and member spread for x: (rows, F) -> (rows,), (rows,), and the version used.

        Refuses (before allocating) more than ``max_predict_rows`` rows, or more than
        ``max_predict_cells`` kernel entries (rows x the model's training rows); evaluates the
        kernel in chunks of ``PREDICT_CHUNK_CELLS`` entries. Rows far outside the training data
        get the kernel's limit (:func:`qpu_gateway.qubo.rbf_kernel`); a prediction that is not
        finite is refused naming the row, never answered.
        """
        _check_model_id(model_id)
        _check_matrix("x", x)
        lim = self.limits
        if x.shape[0] > lim.max_predict_rows:
            raise InvalidArgumentError(
                "x", f"{x.shape[0]} rows are above this server's max_predict_rows = {lim.max_predict_rows}"
            )
        _check_version(version)
        if version is None:
            version = self.store.latest_version(model_id)
        model = self._load(model_id, version)
        if x.shape[1] != model.n_features_in_:
            raise InvalidArgumentError(
                "x", f"has {x.shape[1]} columns but model {model_id!r} expects {model.n_features_in_}"
            )
        n_train = int(model.x_train_.shape[0])
        cells = x.shape[0] * n_train
        if cells > lim.max_predict_cells:
            raise InvalidArgumentError(
                "x",
                f"{x.shape[0]} rows against a model of {n_train} training rows make {cells} kernel "
                f"entries, above this server's max_predict_cells = {lim.max_predict_cells}; send "
                f"at most {lim.max_predict_cells // n_train} rows per Predict",
            )
        step = max(1, PREDICT_CHUNK_CELLS // n_train)
        mean = np.empty(x.shape[0])
        std = np.empty(x.shape[0])
        with np.errstate(over="ignore", invalid="ignore"):  # a non-finite answer is refused below
            for start in range(0, x.shape[0], step):
                mean[start:start + step], std[start:start + step] = model.predict(
                    x[start:start + step], return_std=True
                )
        bad = ~(np.isfinite(mean) & np.isfinite(std))
        if bad.any():  # never an answer of NaN or inf
            r = int(np.flatnonzero(bad)[0])
            raise InvalidArgumentError(
                "x", f"row {r}: model {model_id!r} version {version}'s prediction overflows float64"
            )
        return mean, std, version

    def get(self, model_id: str, version: int | None = None) -> ModelRecord:
        """Metadata of one version (the latest when ``version`` is None)."""
        _check_model_id(model_id)
        _check_version(version)
        return _record(self.store.get(model_id, version, with_state=False))

    def list(
        self, model_id: str = "", *, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[ModelRecord], str]:
        """A page of the latest version of every model, or of every version of ``model_id``
        (none for an id without stored versions: an empty page, not ``ModelNotFoundError``).

        Returns the records and the token of the next page ("" after the last one). Pages are
        keyset-based, so models added or deleted meanwhile never shift a page.
        """
        if model_id:
            _check_model_id(model_id)
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidArgumentError("page_size", f"must be in [0, {MAX_PAGE_SIZE}], got {page_size}")
        size = page_size or DEFAULT_PAGE_SIZE
        after = _decode_token(page_token, model_id)
        rows = self.store.list(model_id or None, limit=size + 1, after=after)
        page = [_record(m) for m in rows[:size]]
        more = len(rows) > size
        last = page[-1] if page else None
        token = _encode_token(model_id, last.version if model_id else last.model_id) if more and last else ""
        return page, token

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


def _encode_token(model_id: str, after: str | int) -> str:
    raw = json.dumps({"m": model_id, "a": after}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_token(token: str, model_id: str) -> str | int | None:
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        after = data["a"]
        same = data["m"] == model_id
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgumentError("page_token", "is not a token this server issued") from exc
    if not same or not isinstance(after, (str, int)):
        raise InvalidArgumentError("page_token", "belongs to another listing (model_id differs)")
    return after


def _record(m: StoredModel) -> ModelRecord:
    return ModelRecord(m.model_id, m.version, m.created_at, m.info)


def _fit_info(
    model: QSVR,
    x: NDArray[np.float64],
    name: str,
    chain: list[str],
    reasons: list[str],
    attempted: list[str],
    seed: int | None,
) -> dict[str, Any]:
    """``ModelInfo``'s fields of a fitted model."""
    stats = model.fit_stats_
    qpu = stats["sampler_stats"]
    info: dict[str, Any] = {
        "backend": name,
        "n_train": int(x.shape[0]),
        "n_features": int(x.shape[1]),
        "num_variables": int(stats["num_variables"]),
        "train_r2": float(model.train_r2_),
        "best_energy": float(stats["best_energy"]),
        "build_seconds": float(stats["build_seconds"]),
        "sample_seconds": float(stats["sample_seconds"]),
        "members": len(model.intercept_),
        "fallback": name != chain[0],
        "fallback_reason": "; ".join(reasons),
        "params": {p: getattr(model, p) for p in FIT_PARAMS},
        "member_energies": model.member_energies_.tolist(),
        "seed": seed,
        "num_reads": int(stats["num_reads"]),
        "distinct_solutions": int(stats["distinct_solutions"]),
        "qpu_access_time_us": float(qpu.get("qpu_access_time_us", 0.0)),
        "chain_break_fraction": float(qpu.get("chain_break_fraction", 0.0)),
        "max_chain_length": int(qpu.get("max_chain_length", 0)),
        "qubits_used": int(qpu.get("qubits_used", 0)),
        "embedding_cache_hit": bool(qpu.get("embedding_cache_hit", False)),
        "attempted_backends": attempted,
    }
    if info["params"]["c"] is None:
        info["params"]["c"] = float(model.c_)
    return info


def _request_hash(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    model_id: str,
    params: Mapping[str, Any],
    backend: str,
    seed: int | None,
    feature_names: Sequence[str] | None,
) -> str:
    """SHA-256 of everything that makes a Fit request what it is (for idempotency keys)."""
    h = hashlib.sha256()
    head = {"model_id": model_id, "params": dict(params), "backend": backend, "seed": seed,
            "shape": list(x.shape), "feature_names": list(feature_names or [])}
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    h.update(np.ascontiguousarray(x, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.float64).tobytes())
    return h.hexdigest()
