"""The gRPC server: a thin servicer over :class:`qpu_gateway.service.GatewayService`.

``create_server`` builds a ``grpc.aio`` server with the Gateway, the standard health service
(overall and ``qpu_gateway.v1.Gateway``) and, unless switched off, server reflection (v1 and
v1alpha); optionally
TLS or mutual TLS, token authentication and Prometheus metrics.

Nothing blocks the event loop: a Fit takes one of ``max_concurrent_fits`` slots and its sampling
runs on the service's executor (worker processes in ``qpu-gateway serve``); Predicts and store
reads run in a small thread pool. A Fit arriving when every slot is busy waits within its
deadline, counted from its arrival (a Fit without a deadline: within ``fit_queue_wait_seconds``;
at most ``max_queued_fits`` wait), or is refused with ``RESOURCE_EXHAUSTED``. A cancelled Fit's
slot is freed once its work has stopped. A background check of the store (unwritable, full,
corrupt) turns health NOT_SERVING, with the reason logged.

The listening port is never shared (``grpc.so_reuseport`` off): a second server on a busy
address fails to start with ``OSError`` instead of splitting the traffic with the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import functools
import ipaddress
import logging
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import numpy as np
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from qpu_gateway.auth import TokenAuthInterceptor, TokenTable
from qpu_gateway.convert import matrix_from_proto, params_from_proto, record_to_proto
from qpu_gateway.error_details import abort_field_error, abort_invalid_argument
from qpu_gateway.errors import (
    AllBackendsFailedError,
    DeadlineExceededError,
    InvalidArgumentError,
    ModelNotFoundError,
    PermissionDeniedError,
    ShuttingDownError,
    StoreBusyError,
)
from qpu_gateway.observability import Metrics, ObservabilityInterceptor
from qpu_gateway.reflection import enable_reflection
from qpu_gateway.service import FitCancelledError, GatewayService, ModelRecord
from qpu_gateway.v1 import gateway_pb2 as pb
from qpu_gateway.v1 import gateway_pb2_grpc as pb_grpc

__all__ = [
    "SERVICE_NAME",
    "GatewayServer",
    "GatewayServicer",
    "ServerOptions",
    "TLSFiles",
    "create_server",
    "is_loopback",
]

log = logging.getLogger("qpu_gateway.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Gateway"].full_name
T = TypeVar("T")


async def _guard(context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]) -> T:
    """Run a domain call, mapping domain errors to status codes (never UNKNOWN)."""
    try:
        return await call()
    except InvalidArgumentError as exc:
        await abort_invalid_argument(context, exc)
    except ModelNotFoundError as exc:
        await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
    except PermissionDeniedError as exc:
        if exc.field:
            await abort_field_error(context, grpc.StatusCode.PERMISSION_DENIED, exc)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
    except AllBackendsFailedError as exc:
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
    except DeadlineExceededError as exc:
        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))
    except (asyncio.CancelledError, grpc.aio.AbortError):
        raise
    except (ShuttingDownError, StoreBusyError) as exc:
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
    except FitCancelledError as exc:
        await context.abort(grpc.StatusCode.CANCELLED, str(exc))
    except Exception:
        cid = uuid.uuid4().hex[:12]
        log.exception("internal error (correlation id %s)", cid)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error; correlation id {cid}")
    raise AssertionError("unreachable")  # pragma: no cover - context.abort always raises


QUEUE_MARGIN_S = 0.25
"""A queued Fit stops waiting for a slot this long (at most a fifth of its wait) before its
deadline, so that its RESOURCE_EXHAUSTED reaches the caller before the caller's deadline."""


class _FitPool:
    """At most ``size`` Fits at once (each in a thread that waits on the service's executor);
    at most ``queue`` more waiting, within their deadline counted from arrival, or within
    ``queue_wait`` seconds for a Fit without a deadline (0: such a Fit is refused at once)."""

    def __init__(self, size: int, queue: int, queue_wait: float = 30.0) -> None:
        if size < 1:
            raise ValueError(f"max_concurrent_fits must be >= 1, got {size}")
        if queue < 0:
            raise ValueError(f"max_queued_fits must be >= 0, got {queue}")
        if not 0 <= queue_wait < float("inf"):
            raise ValueError(f"fit_queue_wait_seconds must be a finite number >= 0, got {queue_wait!r}")
        self.size = size
        self.queue = queue
        self.queue_wait = float(queue_wait)
        self.executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="fit")
        self._slots = asyncio.Semaphore(size)
        self._waiting = 0

    async def run(
        self,
        context: grpc.aio.ServicerContext,
        fn: Callable[[threading.Event], T],
        deadline: float | None,
    ) -> T:
        """Run ``fn(cancelled)`` in a slot. ``deadline``: ``time.monotonic()`` seconds, fixed at
        the call's arrival. When the call is cancelled, ``cancelled`` is set and the slot stays
        taken until ``fn`` has returned (its work stopped)."""
        if self._slots.locked():
            busy = f"all {self.size} Fit slots are busy (max_concurrent_fits)"
            if self._waiting >= self.queue:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{busy} and the wait queue is full (max_queued_fits = {self.queue})",
                )
            if deadline is None and self.queue_wait == 0:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{busy} and the call has no deadline to wait within "
                    "(fit_queue_wait_seconds = 0): retry later, or with a deadline",
                )
            if deadline is None:
                timeout = self.queue_wait
                within = (f"within fit_queue_wait_seconds = {self.queue_wait:g} s (the wait of a "
                          "Fit without a deadline): the gateway is busy; retry later, or with a "
                          "deadline to wait longer")
            else:
                # give up a little before the deadline, so that the caller gets
                # RESOURCE_EXHAUSTED (busy: retry) rather than its own DEADLINE_EXCEEDED (its
                # Fit was too slow)
                left = deadline - time.monotonic()
                timeout = left - min(QUEUE_MARGIN_S, 0.2 * max(left, 0.0))
                within = ("within the deadline: the gateway is busy; retry later or with a "
                          "longer deadline")
            self._waiting += 1
            try:
                await asyncio.wait_for(self._slots.acquire(), timeout=timeout)
            except TimeoutError:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"no Fit slot (max_concurrent_fits = {self.size}) freed {within}",
                )
            finally:
                self._waiting -= 1
        else:
            await self._slots.acquire()
        cancelled = threading.Event()
        try:
            # in the caller's context: the Fit's log lines carry its request id
            future = asyncio.get_running_loop().run_in_executor(
                self.executor, contextvars.copy_context().run, fn, cancelled
            )
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                cancelled.set()
                while not future.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.wait([future])
                if not future.cancelled():
                    future.exception()  # retrieved: the caller is gone
                raise
        finally:
            self._slots.release()


class GatewayServicer(pb_grpc.GatewayServicer):
    """Converts messages to domain calls and back; holds no logic of its own."""

    def __init__(
        self,
        service: GatewayService,
        *,
        max_concurrent_fits: int = 2,
        max_queued_fits: int = 8,
        fit_queue_wait_seconds: float = 30.0,
        metrics: Metrics | None = None,
        io_threads: int = 4,
        max_reply_bytes: int | None = None,
    ) -> None:
        self.service = service
        self.pool = _FitPool(max_concurrent_fits, max_queued_fits, fit_queue_wait_seconds)
        self.metrics = metrics
        self.io = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="io")
        self.max_reply_bytes = max_reply_bytes

    def _check_reply_size(self, reply: Message, field: str, what: str,
                          advice: Callable[[], str]) -> None:
        """``InvalidArgumentError`` naming ``field`` when ``reply`` (the reply for ``what``) is
        larger than this server may send (``max_message_bytes``), with ``advice()``: else gRPC
        would fail the call after the servicer returned, as RESOURCE_EXHAUSTED, with no status
        line in the log and counted OK."""
        size = reply.ByteSize()
        limit = self.max_reply_bytes
        if limit is not None and size > limit:
            raise InvalidArgumentError(
                field,
                f"the reply for {what} would take {size} bytes, above this server's "
                f"max_message_bytes = {limit}; {advice()}",
            )

    async def _io(self, fn: Callable[[], T]) -> T:
        """Run a store read or a Predict off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(
            self.io, contextvars.copy_context().run, fn
        )

    async def Fit(self, request: pb.FitRequest, context: grpc.aio.ServicerContext) -> pb.FitReply:
        async def call() -> pb.FitReply:
            x = matrix_from_proto("x", request.x)
            y = np.asarray(request.y, dtype=np.float64)
            seed = request.seed if request.HasField("seed") else None
            remaining = context.time_remaining()
            deadline = None if remaining is None else time.monotonic() + remaining
            params = params_from_proto(request.params)

            def fit(cancelled: threading.Event) -> ModelRecord:
                return self.service.fit(
                    x, y, model_id=request.model_id, params=params, backend=request.backend,
                    seed=seed, deadline=deadline, cancelled=cancelled.is_set,
                    idempotency_key=request.idempotency_key,
                    feature_names=list(request.feature_names),
                )

            try:
                record = await self.pool.run(context, fit, deadline)
            except grpc.aio.AbortError:  # the pool's refusal (RESOURCE_EXHAUSTED): no slot
                if self.metrics is not None:
                    self.metrics.fits.labels("none", "rejected").inc()
                raise
            except Exception:
                if self.metrics is not None:
                    self.metrics.fits.labels("none", "failed").inc()
                raise
            if self.metrics is not None:
                self.metrics.fits.labels(record.info["backend"], "ok").inc()
                if record.info["fallback"]:
                    self.metrics.fallbacks.labels(record.info["backend"]).inc()
            log.info(
                "fit model_id=%s version=%d backend=%s fallback=%s n_train=%d sample_seconds=%.3f",
                record.model_id, record.version, record.info["backend"], record.info["fallback"],
                record.info["n_train"], record.info["sample_seconds"],
            )
            return pb.FitReply(model=record_to_proto(record))

        return await _guard(context, call)

    async def Predict(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext
    ) -> pb.PredictReply:
        async def call() -> pb.PredictReply:
            x = matrix_from_proto("x", request.x)
            version = request.version if request.HasField("version") else None
            mean, std, used = await self._io(
                functools.partial(self.service.predict, request.model_id, x, version)
            )
            reply = pb.PredictReply(
                mean=mean.tolist(), std=std.tolist(), model_id=request.model_id, version=used
            )
            rows = x.shape[0]
            self._check_reply_size(  # each row takes the same room: pro rata
                reply, "x", f"{rows} rows",
                lambda: f"send at most {rows * self.max_reply_bytes // reply.ByteSize()} rows "
                        "per Predict",
            )
            return reply

        return await _guard(context, call)

    async def GetModel(
        self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfo:
        async def call() -> pb.ModelInfo:
            version = request.version if request.HasField("version") else None
            return record_to_proto(
                await self._io(functools.partial(self.service.get, request.model_id, version))
            )

        return await _guard(context, call)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsReply:
        async def call() -> pb.ListModelsReply:
            records, token = await self._io(functools.partial(
                self.service.list, request.model_id, page_size=request.page_size,
                page_token=request.page_token,
            ))
            reply = pb.ListModelsReply(
                models=[record_to_proto(r) for r in records], next_page_token=token
            )
            self._check_reply_size(
                reply, "page_size", f"{len(records)} models",
                lambda: "ask for a smaller page_size (the first "
                        f"{_models_that_fit(reply, self.max_reply_bytes or 0)} models of this "
                        "page would fit)",
            )
            return reply

        return await _guard(context, call)

    async def DeleteModel(
        self, request: pb.DeleteModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteModelReply:
        async def call() -> pb.DeleteModelReply:
            n = await self._io(functools.partial(self.service.delete, request.model_id))
            log.info("delete model_id=%s versions=%d", request.model_id, n)
            return pb.DeleteModelReply(model_id=request.model_id, versions_deleted=n)

        return await _guard(context, call)


def _models_that_fit(reply: pb.ListModelsReply, limit: int) -> int:
    """How many of ``reply``'s first models fit in a reply of ``limit`` bytes."""
    used = pb.ListModelsReply(next_page_token=reply.next_page_token).ByteSize()
    for n, model in enumerate(reply.models):
        size = model.ByteSize()
        used += 1 + max(1, (size.bit_length() + 6) // 7) + size  # the field's tag, length, model
        if used > limit:
            return n
    return len(reply.models)


@dataclass(frozen=True)
class TLSFiles:
    """PEM files: the server's certificate and key, and the CA that signs client certificates
    (mutual TLS) when ``client_ca`` is set."""

    cert: str
    key: str
    client_ca: str | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """The server credentials; ``ValueError`` naming the setting (``tls_cert``, ``tls_key``,
        ``tls_client_ca``) when its file cannot be read or is not what it should be: a PEM
        certificate, an unencrypted PEM private key of that certificate, PEM CA certificates.
        (gRPC itself would only fail to bind, naming neither.)"""
        cert = _read_setting("tls_cert", self.cert)
        key = _read_setting("tls_key", self.key)
        client_ca = _read_setting("tls_client_ca", self.client_ca) if self.client_ca else None
        _check_tls(self)
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
        )


def _read_setting(name: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{name}: cannot read {path}: {exc.strerror or exc}") from None


def _check_certificates(name: str, path: str) -> None:
    """``ValueError`` naming ``name`` unless ``path`` holds PEM certificates."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=path)
    except (ssl.SSLError, ValueError) as exc:
        raise ValueError(f"{name}: {path} holds no PEM certificate ({exc})") from None


def _check_tls(files: TLSFiles) -> None:
    """Load the files as OpenSSL does (``ssl``): ``ValueError`` naming the setting at fault."""
    _check_certificates("tls_cert", files.cert)

    def encrypted() -> bytes:
        raise ValueError(f"tls_key: {files.key} is encrypted; the gateway needs an unencrypted key")

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            files.cert, files.key, password=encrypted
        )
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ValueError(
                f"tls_key: {files.key} is not the private key of tls_cert {files.cert} "
                "(the two do not match)"
            ) from None
        raise ValueError(f"tls_key: {files.key} holds no PEM private key ({exc})") from None
    if files.client_ca:
        _check_certificates("tls_client_ca", files.client_ca)


@dataclass(frozen=True)
class ServerOptions:
    """Transport-level settings of :func:`create_server`."""

    reflection: bool = True
    tls: TLSFiles | None = None
    tokens: TokenTable | None = None
    metrics: Metrics | None = None
    max_message_bytes: int = 16 * 1024 * 1024
    max_concurrent_fits: int = 2
    max_queued_fits: int = 8
    fit_queue_wait_seconds: float = 30.0
    store_check_seconds: float = 5.0


@dataclass
class GatewayServer:
    """A built server: the grpc server, its bound port, health servicer and fit pool."""

    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    servicer: GatewayServicer
    store_check_seconds: float = 5.0
    observability: ObservabilityInterceptor | None = None
    _checker: asyncio.Task[None] | None = None

    async def start(self, ready_timeout: float = 300.0) -> None:
        """Wait until the sampling executor is warm (so SERVING means a Fit can run), then
        serve; ``RuntimeError`` when it is not warm within ``ready_timeout`` seconds."""
        executor = self.servicer.service.executor
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, executor.wait_ready, ready_timeout):
            raise RuntimeError(f"the sampling workers did not start within {ready_timeout:.0f} s")
        await self.server.start()
        self._checker = asyncio.create_task(self._check_store())

    async def _check_store(self) -> None:
        """Health follows the store: NOT_SERVING while it is unwritable, full or corrupt."""
        store = self.servicer.service.store
        problem = ""
        while True:
            now = await asyncio.get_running_loop().run_in_executor(self.servicer.io, store.check)
            if now != problem:
                if now:
                    log.error("store %s cannot serve: %s; health is NOT_SERVING", store.path, now)
                else:
                    log.warning("store %s serves again; health is SERVING", store.path)
                status = (health_pb2.HealthCheckResponse.NOT_SERVING if now
                          else health_pb2.HealthCheckResponse.SERVING)
                for name in ("", SERVICE_NAME):
                    await self.health.set(name, status)
                problem = now
            await asyncio.sleep(self.store_check_seconds)

    async def stop(self, grace: float, drain: float = 0.0) -> None:
        """Graceful stop: NOT_SERVING, keep serving (health probes see NOT_SERVING) for ``drain``
        seconds, then refuse new calls, let in-flight calls finish within ``grace`` seconds, then
        stop leftover sampling (it stores nothing) and wait for it."""
        if not drain >= 0:
            raise ValueError(f"drain must be >= 0 seconds, got {drain!r}")
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker
        await self.health.enter_graceful_shutdown()
        if drain > 0:
            await asyncio.sleep(drain)
        if self.observability is not None:
            self.observability.stopping = True
        await self.server.stop(grace)
        service = self.servicer.service
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, service.close)
        await loop.run_in_executor(
            None, functools.partial(self.servicer.pool.executor.shutdown, wait=True)
        )
        await loop.run_in_executor(None, functools.partial(self.servicer.io.shutdown, wait=True))


def _split_address(address: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (``[V6]:PORT`` too) as ``(host, port)``; ``None`` for other gRPC addresses
    (``unix:PATH``). ``ValueError`` naming ``address`` for a port outside [0, 65535]."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or address.startswith(("unix:", "unix-abstract:")):
        return None
    if not 0 <= int(port) < 65536:
        raise ValueError(f"address: port must be in [0, 65535], got {address!r}")
    return host.strip("[]"), int(port)


def is_loopback(address: str) -> bool:
    """Whether ``address`` is reachable from this host only: ``HOST:PORT`` on the loopback
    interface (``localhost``, 127/8, ::1) or a Unix socket."""
    split = _split_address(address)
    if split is None:
        return address.startswith(("unix:", "unix-abstract:"))
    host = split[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_free(address: str) -> None:
    """``OSError`` naming ``address`` when another process listens on it.

    Binds (as gRPC does: ``SO_REUSEADDR``, no ``SO_REUSEPORT``) and closes a socket for each
    resolved address, so that a busy address fails with one clear message rather than gRPC
    core's log line; gRPC's own bind stays the final check."""
    split = _split_address(address)
    if split is None or split[1] == 0:
        return
    host, port = split
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"cannot listen on {address}: {exc.strerror}") from None
    for family, kind, proto, _name, sockaddr in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise OSError(
                        f"cannot listen on {address}: the address is already in use "
                        "(another gateway?)"
                    ) from None
                if exc.errno != errno.EADDRNOTAVAIL:  # e.g. no IPv6: gRPC skips it too
                    raise OSError(f"cannot listen on {address}: {exc.strerror}") from None


async def create_server(
    service: GatewayService, address: str, options: ServerOptions | None = None
) -> GatewayServer:
    """Build (not start) the server on ``address`` (port 0 picks a free one); ``OSError`` naming
    the address when it cannot be bound (e.g. another server listens on it), ``ValueError``
    naming the TLS setting whose file is unusable (:meth:`TLSFiles.credentials`)."""
    opts = options or ServerOptions()
    if opts.max_message_bytes < 1024:
        raise ValueError(f"max_message_bytes must be >= 1024, got {opts.max_message_bytes}")
    if not opts.store_check_seconds > 0:
        raise ValueError(f"store_check_seconds must be > 0, got {opts.store_check_seconds!r}")
    credentials = opts.tls.credentials() if opts.tls is not None else None  # before binding
    _check_free(address)
    if opts.tokens is not None and opts.tls is None and not is_loopback(address):
        log.warning(
            "bearer tokens are checked but TLS is off on %s: tokens travel in cleartext; "
            "serve TLS (tls_cert, tls_key) or listen on 127.0.0.1 only", address,
        )
    observability = ObservabilityInterceptor(opts.metrics)
    interceptors: list[grpc.aio.ServerInterceptor] = [observability]
    if opts.tokens is not None:
        interceptors.append(TokenAuthInterceptor(opts.tokens))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", opts.max_message_bytes),
            ("grpc.max_send_message_length", opts.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    servicer = GatewayServicer(
        service,
        max_concurrent_fits=opts.max_concurrent_fits,
        max_queued_fits=opts.max_queued_fits,
        fit_queue_wait_seconds=opts.fit_queue_wait_seconds,
        metrics=opts.metrics,
        max_reply_bytes=opts.max_message_bytes,
    )
    pb_grpc.add_GatewayServicer_to_server(servicer, server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in ("", SERVICE_NAME):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    if opts.reflection:
        enable_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server
        )
    if opts.metrics is not None:
        opts.metrics.track_store(service.store.count)
    try:
        if credentials is not None:
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        raise OSError(f"cannot listen on {address} (in use, or not an address of this host)")
    return GatewayServer(server, port, health, servicer, opts.store_check_seconds, observability)
