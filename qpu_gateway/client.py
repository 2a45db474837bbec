"""Python client of the gateway: numpy in, numpy out, a deadline on every call.

Predict, GetModel and ListModels are idempotent: the channel's service config waits for the
server to be ready and retries them on ``UNAVAILABLE`` and on ``CANCELLED`` (what a stopping
server answers the calls it has not finished; a call the caller cancels is not retried)
within the call's deadline (a gateway restarting is waited for). One whose deadline passed
while the channel has no connection to a gRPC server (nothing listens, a TLS/plaintext
mismatch, or a listener that never speaks HTTP/2) fails with ``UNAVAILABLE`` "could not connect
..."; a connected but slow gateway's stays ``DEADLINE_EXCEEDED``.
``wait_for_ready=False`` (the command line's) makes them fail at once when no server answers.
Fit and DeleteModel are never retried and fail fast when the server is down. TLS (``tls_ca``), mutual
TLS (``tls_cert`` + ``tls_key``) and bearer tokens (``token``) are supported.

Errors are ``grpc.RpcError``; for ``INVALID_ARGUMENT``, :meth:`GatewayClient.field_violations`
gives the (field, rule) pairs of its ``google.rpc.BadRequest`` details, e.g.
``[("params.k", "k must be an integer >= 1, got 0")]``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Final

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from numpy.typing import ArrayLike, NDArray

from qpu_gateway.convert import WIRE_PARAMS, matrix_to_proto, wire_uint
from qpu_gateway.error_details import field_violations
from qpu_gateway.v1 import gateway_pb2 as pb
from qpu_gateway.v1 import gateway_pb2_grpc as pb_grpc

__all__ = ["RECONNECT_OPTIONS", "GatewayClient", "UnreachableError"]

# A channel whose connection was refused (a gateway starting or restarting) tries again only after
# gRPC's reconnect backoff: about 1, 2.6, 5.2, 9.3 s ... (up to 120 s) after the first try. Bounded
# like this, a client (``wait_until_serving``, ``health --wait``, a study's predictor) sees the
# gateway within about 0.25 s of its serving, at a cost of at most 4 connection attempts a second.
RECONNECT_OPTIONS: Final = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 250),
)

# After a DEADLINE_EXCEEDED, how long the channel may take to show it is connected: a connected
# channel shows it at once; 0.5 s covers one reconnect backoff above (0.25 s) and a busy host.
_PROBE_SECONDS: Final = 0.5

_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [
                    {"service": "qpu_gateway.v1.Gateway", "method": m}
                    for m in ("Predict", "GetModel", "ListModels")
                ],
                "waitForReady": True,
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
                },
            }
        ]
    }
)


class UnreachableError(grpc.RpcError):
    """An idempotent call that waited its whole deadline without a connection to a gRPC server:
    ``code()`` ``UNAVAILABLE``, ``details()`` says so (gRPC itself reports a bare
    ``DEADLINE_EXCEEDED``)."""

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self._details = details

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return self._details


def _read(path: str | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


_UINT_BITS: Final = {
    f.name: 32 if f.type == f.TYPE_UINT32 else 64
    for f in pb.QSVRParams.DESCRIPTOR.fields
    if f.type in (f.TYPE_UINT32, f.TYPE_UINT64)
}


def _wire_params(params: dict[str, Any]) -> pb.QSVRParams:
    """``params`` (None = server default) as ``QSVRParams``; integer fields checked as
    ``params.NAME`` (:func:`~qpu_gateway.convert.wire_uint`)."""
    set_ = {k: v for k, v in params.items() if v is not None}
    for name, bits in _UINT_BITS.items():
        if name in set_:
            set_[name] = wire_uint(f"params.{name}", set_[name], bits)
    return pb.QSVRParams(**set_)


def _as_matrix(x: ArrayLike) -> NDArray[np.float64]:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"x must be 1-D or 2-D, got shape {a.shape}")
    return a


class GatewayClient:
    """Blocking client for ``qpu_gateway.v1.Gateway``.

    Parameters
    ----------
    address : ``HOST:PORT`` of the gateway.
    timeout : default deadline in seconds of every call (Fit can take seconds; see ``fit``).
    token : bearer token sent with every call (``authorization`` metadata).
    tls_ca : PEM file of the CA that signed the server's certificate: use TLS.
    tls_cert, tls_key : PEM client certificate and key: mutual TLS.
    credentials : ready-made channel credentials (instead of the ``tls_*`` files).
    wait_for_ready : idempotent calls wait within their deadline for a server to answer (default);
        ``False``: they fail at once with ``UNAVAILABLE`` when none does.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float = 30.0,
        token: str | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: list[tuple[str, Any]] | None = None,
        wait_for_ready: bool = True,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        given = list(options or [])
        mine = [("grpc.service_config", _SERVICE_CONFIG), ("grpc.enable_retries", 1),
                *RECONNECT_OPTIONS]
        opts = [o for o in mine if o[0] not in {k for k, _ in given}] + given  # the caller's win
        self.address = address
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        if credentials is None and (tls_ca or tls_cert):
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(tls_ca),
                private_key=_read(tls_key),
                certificate_chain=_read(tls_cert),
            )
        if credentials is None:
            self._channel = grpc.insecure_channel(address, options=opts)
        else:
            self._channel = grpc.secure_channel(address, credentials, options=opts)
        self._stub = pb_grpc.GatewayStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self.wait_for_ready = bool(wait_for_ready)

    def _reachable(self) -> bool:
        """Whether the channel is connected to a gRPC server (``READY`` within
        :data:`_PROBE_SECONDS`: HTTP/2 set up, the server's settings received). A slow gateway is;
        nothing listening, a TLS/plaintext mismatch or a TCP listener that never speaks HTTP/2 is
        not (a health check would wait on the last for its own deadline and prove nothing)."""
        ready = grpc.channel_ready_future(self._channel)
        try:
            ready.result(timeout=_PROBE_SECONDS)
        except grpc.FutureTimeoutError:
            return False
        finally:
            ready.cancel()  # unsubscribes from the channel's connectivity
        return True

    def _idempotent(self, method: Any, request: Any, timeout: float | None) -> Any:
        """Call a Predict/GetModel/ListModels ``method`` (module doc: waits for the server when
        :attr:`wait_for_ready`; :class:`UnreachableError` when its deadline passed and the channel
        is not connected to a gRPC server)."""
        t = timeout or self.timeout
        try:
            return method(request, timeout=t, metadata=self._metadata,
                          wait_for_ready=self.wait_for_ready)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED or self._reachable():
                raise
            raise UnreachableError(
                f"could not connect to {self.address} within {t:g} s: no gRPC server answers there "
                "(nothing listens, or what listens does not speak gRPC), or it speaks TLS and this "
                "client plaintext (pass tls_ca) or the other way round"
            ) from exc

    @staticmethod
    def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
        """The (field, description) pairs of a failed call's ``google.rpc.BadRequest``."""
        return field_violations(error)

    def fit(
        self,
        x: ArrayLike,
        y: ArrayLike,
        *,
        model_id: str = "",
        backend: str = "",
        seed: int | None = None,
        timeout: float | None = None,
        feature_names: list[str] | None = None,
        idempotency_key: str = "",
        **params: Any,
    ) -> pb.ModelInfo:
        """Fit a model (or a new version of ``model_id``); x: (N, F), y: (N,). Returns its info.

        A 1-D x is one feature per row, (N,) as (N, 1), so it needs one value per y (unlike
        ``predict``, where a 1-D x is one row); else ``ValueError`` naming x.

        ``feature_names`` (F,) are stored with the model (``ModelInfo.feature_names``). With an
        ``idempotency_key``, resending the same request (e.g. after a lost reply) returns the
        version the first one stored instead of fitting again; Fits are never retried
        automatically."""
        unknown = set(params) - set(WIRE_PARAMS)
        if unknown:
            raise TypeError(f"unknown QSVR parameters {sorted(unknown)}; known: {list(WIRE_PARAMS)}")
        ys = np.asarray(y, dtype=np.float64).ravel()
        xs = np.asarray(x, dtype=np.float64)
        if xs.ndim == 1:
            if xs.size != ys.size:
                raise ValueError(
                    f"x must be (N, F); a 1-D x is one feature per row and needs one value per y "
                    f"({ys.size}), got {xs.size}: for one row of {xs.size} features use "
                    "x.reshape(1, -1)"
                )
            xs = xs.reshape(-1, 1)
        request = pb.FitRequest(
            model_id=model_id,
            x=matrix_to_proto(_as_matrix(xs)),
            y=ys.tolist(),
            params=_wire_params(params),
            backend=backend,
            feature_names=list(feature_names or []),
            idempotency_key=idempotency_key,
        )
        if seed is not None:
            request.seed = wire_uint("seed", seed, 64)
        return self._stub.Fit(request, timeout=timeout or self.timeout, metadata=self._metadata).model

    def predict(
        self,
        model_id: str,
        x: ArrayLike,
        *,
        version: int | None = None,
        timeout: float | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Mean and member spread for x: (rows, F) or (F,) -> two (rows,) arrays."""
        request = pb.PredictRequest(model_id=model_id, x=matrix_to_proto(_as_matrix(x)))
        if version is not None:
            request.version = wire_uint("version", version, 32)
        reply = self._idempotent(self._stub.Predict, request, timeout)
        return np.asarray(reply.mean), np.asarray(reply.std)

    def get_model(
        self, model_id: str, *, version: int | None = None, timeout: float | None = None
    ) -> pb.ModelInfo:
        """Info of one version (the latest when ``version`` is None)."""
        request = pb.GetModelRequest(model_id=model_id)
        if version is not None:
            request.version = wire_uint("version", version, 32)
        return self._idempotent(self._stub.GetModel, request, timeout)

    def list_models(
        self, model_id: str = "", *, page_size: int = 0, timeout: float | None = None
    ) -> list[pb.ModelInfo]:
        """Latest version of every model, or every version of ``model_id`` (all pages)."""
        models: list[pb.ModelInfo] = []
        token = ""
        while True:
            reply = self._idempotent(
                self._stub.ListModels,
                pb.ListModelsRequest(model_id=model_id, page_size=wire_uint("page_size", page_size, 32),
                                     page_token=token),
                timeout,
            )
            models.extend(reply.models)
            token = reply.next_page_token
            if not token:
                return models

    def delete_model(self, model_id: str, *, timeout: float | None = None) -> int:
        """Delete every version of ``model_id``; returns how many were deleted."""
        reply = self._stub.DeleteModel(
            pb.DeleteModelRequest(model_id=model_id), timeout=timeout or self.timeout,
            metadata=self._metadata,
        )
        return int(reply.versions_deleted)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """Health status name (``SERVING``, ``NOT_SERVING``, ...) of ``service`` ("" = overall)."""
        reply = self._health.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout or self.timeout
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def wait_until_serving(self, timeout: float = 30.0) -> None:
        """Block until the health check answers SERVING; ``TimeoutError`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if self.health(timeout=min(2.0, max(deadline - time.monotonic(), 0.05))) == "SERVING":
                    return
            except grpc.RpcError as exc:
                last = exc
            time.sleep(0.05)
        why = f"{last.code().name}: {last.details()}" if isinstance(last, grpc.RpcError) else last
        raise TimeoutError(f"gateway at {self.address} not SERVING after {timeout}s ({why})")

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
