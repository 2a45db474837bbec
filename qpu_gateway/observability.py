"""Prometheus metrics and request-scoped structured logging for the gateway.

Metrics (own ``CollectorRegistry``, served by ``prometheus_client`` on ``--metrics-port``):

- ``qpu_gateway_requests_total{method, code}``: finished RPCs by status code;
- ``qpu_gateway_request_seconds{method}``: latency histogram;
- ``qpu_gateway_in_flight{method}``: RPCs being served;
- ``qpu_gateway_fits_total{backend, outcome}``: Fits by the backend that answered and outcome:
  ``ok``; ``failed`` (refused or ended in error, backend ``none``); ``rejected`` (refused because
  every Fit slot was busy and the wait queue was full or the wait ran out, backend ``none``);
- ``qpu_gateway_fallbacks_total{backend}``: Fits answered by a backend other than the first choice;
- ``qpu_gateway_stored_versions``: model versions in the store.

Every RPC gets a request id (the caller's ``x-request-id`` metadata, or a fresh one). It is
returned in the trailing metadata and attached to every log record of the call.

Bytes that do not parse as the method's request message end the call with ``INVALID_ARGUMENT``
(one WARNING line, no traceback) instead of gRPC's ``UNKNOWN``. A call that gRPC cancels (the
client's deadline passed, the client cancelled, the server stopped) is logged at INFO and counted
as ``DEADLINE_EXCEEDED`` when its deadline has passed, else ``CANCELLED``.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = [
    "JsonFormatter",
    "Metrics",
    "ObservabilityInterceptor",
    "RequestIdFilter",
    "json_logging",
    "request_id",
    "worker_logging",
]

log = logging.getLogger("qpu_gateway.observability")
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The gateway's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("qpu_gateway_requests_total", "Finished RPCs by method and status code",
                                ["method", "code"], registry=self.registry)
        self.latency = Histogram("qpu_gateway_request_seconds", "RPC latency in seconds", ["method"],
                                 buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("qpu_gateway_in_flight", "RPCs being served", ["method"],
                               registry=self.registry)
        self.fits = Counter("qpu_gateway_fits_total", "Fits by answering backend and outcome",
                            ["backend", "outcome"], registry=self.registry)
        self.fallbacks = Counter("qpu_gateway_fallbacks_total",
                                 "Fits answered by a fallback backend", ["backend"],
                                 registry=self.registry)
        self.stored_versions = Gauge("qpu_gateway_stored_versions", "Model versions in the store",
                                     registry=self.registry)
        self._http: tuple[Any, threading.Thread] | None = None

    def track_store(self, count: Callable[[], int]) -> None:
        """Report the store size by calling ``count`` at each scrape."""
        self.stored_versions.set_function(count)

    def serve(self, port: int, address: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` over HTTP until :meth:`close`; returns the bound port (``port=0``
        picks one). Serving twice is a ``RuntimeError``."""
        if self._http is not None:
            raise RuntimeError("metrics are already served; close() first")
        server, thread = start_http_server(port, addr=address, registry=self.registry)
        self._http = (server, thread)
        return int(server.server_port)

    def close(self) -> None:
        """Stop serving ``/metrics`` and release its port (no-op when not serving)."""
        if self._http is None:
            return
        server, thread = self._http
        self._http = None
        server.shutdown()
        server.server_close()
        thread.join()


class _Undecodable:
    """Stands in for a request whose bytes did not parse (what went wrong in ``reason``)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer`` returning :class:`_Undecodable` instead of raising."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:
            return _Undecodable(f"{type(exc).__name__}: {exc}")

    return deserialize


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    """Request ids, in-flight gauge, latency and status-code counters for unary-unary RPCs;
    undecodable requests (unary or streamed, as reflection's) answered ``INVALID_ARGUMENT``.
    ``stopping`` (set by the server's shutdown) names the shutdown as the cause of a cancel."""

    def __init__(self, metrics: Metrics | None) -> None:
        self.metrics = metrics
        self.stopping = False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        if handler.stream_stream is not None:
            return _checked_stream(handler, details.method.rsplit("/", 1)[-1])
        if handler.unary_stream is not None:
            return _checked_unary_stream(handler, details.method.rsplit("/", 1)[-1])
        if handler.unary_unary is None:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        incoming = dict(details.invocation_metadata or ())
        behaviour = handler.unary_unary
        metrics = self.metrics

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            peer = context.peer()  # a cancelled call's context may no longer know it
            rid = str(incoming.get("x-request-id") or uuid.uuid4().hex[:16])[:64]
            token = request_id.set(rid)
            context.set_trailing_metadata((("x-request-id", rid),))
            start = time.perf_counter()
            if metrics is not None:
                metrics.in_flight.labels(method).inc()
            failed = cancelled = False
            try:
                if isinstance(request, _Undecodable):
                    await _refuse(context, method, request)
                return await behaviour(request, context)
            except asyncio.CancelledError:
                cancelled = True
                raise
            except BaseException:
                failed = True
                raise
            finally:
                if cancelled:
                    code = _cancelled_status(context)
                    details = _CANCEL_DETAILS[code]
                    if code is grpc.StatusCode.CANCELLED and self.stopping:
                        details = "the server stopped before the call ended (grace_seconds ran out)"
                    _log_refusal(method, code, context, peer, details)
                else:
                    code = _status(context.code(), failed)
                    if code is not grpc.StatusCode.OK and not isinstance(request, _Undecodable):
                        _log_refusal(method, code, context, peer)
                if metrics is not None:
                    metrics.in_flight.labels(method).dec()
                    metrics.latency.labels(method).observe(time.perf_counter() - start)
                    metrics.requests.labels(method, code.name).inc()
                request_id.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


# Status codes that point at the caller's credentials, the server's capacity or a fault: WARNING;
# the others (a bad field, an unknown model, a deadline or cancel) are the caller's own: INFO.
_WARN_CODES = frozenset({
    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS, grpc.StatusCode.UNIMPLEMENTED,
})


_CANCEL_DETAILS = {
    grpc.StatusCode.DEADLINE_EXCEEDED: "the caller's deadline passed before the call ended",
    grpc.StatusCode.CANCELLED: "cancelled by the caller",
}


_DEADLINE_SLACK_S = 0.1
"""A cancelled call with at most this much of its deadline left counts as past its deadline (the
caller's clock runs ahead of the server's by the time the cancel takes to arrive)."""


def _cancelled_status(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """The status of a call that gRPC cancelled: ``DEADLINE_EXCEEDED`` when its deadline has
    passed (``time_remaining()`` at most :data:`_DEADLINE_SLACK_S`), else ``CANCELLED``."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= _DEADLINE_SLACK_S:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


def _log_refusal(
    method: str, code: grpc.StatusCode, context: grpc.aio.ServicerContext, peer: str,
    details: Any = None,
) -> None:
    """One line per call that did not end ``OK``: method, status, details (``context.details()``
    unless given) and peer (the request id comes with the record), so that an operator sees who
    was refused and why."""
    if details is None and hasattr(context, "details"):
        details = context.details()
    if isinstance(details, bytes):
        details = details.decode("utf-8", "replace")
    log.log(
        logging.WARNING if code in _WARN_CODES else logging.INFO,
        "%s %s: %s (peer %s)", method, code.name, details or "-", peer or "-",
    )


async def _refuse(context: grpc.aio.ServicerContext, method: str, request: _Undecodable) -> None:
    """End the call: ``INVALID_ARGUMENT`` and one WARNING line (no traceback)."""
    log.warning("%s: the request is not a valid message (%s)", method, request.reason)
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"the request is not a valid {method} request message ({request.reason})",
    )


def _checked_stream(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """A stream-stream handler (reflection) whose undecodable requests end the call with
    ``INVALID_ARGUMENT`` before the servicer sees them."""
    behaviour = handler.stream_stream

    async def wrapped(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async def checked() -> AsyncIterator[Any]:
            async for request in requests:
                if isinstance(request, _Undecodable):
                    await _refuse(context, method, request)
                yield request

        async for reply in behaviour(checked(), context):
            yield reply

    return grpc.stream_stream_rpc_method_handler(
        wrapped,
        request_deserializer=_tolerant(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )


def _checked_unary_stream(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """A unary-stream handler (health's Watch) whose undecodable request ends the call with
    ``INVALID_ARGUMENT``; the servicer may yield its replies or ``context.write`` them."""
    behaviour = handler.unary_stream
    if inspect.isasyncgenfunction(behaviour):

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, _Undecodable):
                await _refuse(context, method, request)
            async for reply in behaviour(request, context):
                yield reply

    else:

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:  # type: ignore[misc]
            if isinstance(request, _Undecodable):
                await _refuse(context, method, request)
            return await behaviour(request, context)

    return grpc.unary_stream_rpc_method_handler(
        wrapped,
        request_deserializer=_tolerant(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )


def _status(code: Any, failed: bool) -> grpc.StatusCode:
    """The call's status as a ``grpc.StatusCode`` (aio contexts may report an int or None)."""
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status
    return grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (the current RPC's id, or ``-``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ms), level, logger, request_id, pid, message (and
    exc_info)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_text or record.exc_info:
            entry["exc_info"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry)


def json_logging() -> bool:
    """Whether this process logs JSON lines (a root handler with :class:`JsonFormatter`)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def worker_logging(level: int, json_lines: bool = False) -> None:
    """Logging of a sampling worker process: the server's level and format (``json_lines``), to
    stderr (the server's log), Python warnings included, every record scrubbed of secrets
    (:func:`qpu_gateway.redact.install_log_redaction`)."""
    from qpu_gateway.redact import install_log_redaction

    install_log_redaction()
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())  # the Fit's id, sent with each attempt
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s [worker %(process)d %(request_id)s]: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.captureWarnings(True)  # Python warnings (numpy's) in the log's format, not raw
