"""The gRPC server: a thin servicer over :class:`qpu_gateway.service.GatewayService`.

``create_server`` builds a ``grpc.aio`` server with the Gateway, the standard health service
(overall and ``qpu_gateway.v1.Gateway``) and, unless switched off, server reflection. Model
fitting runs in worker threads so the event loop keeps answering Predicts and health checks.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from qpu_gateway.convert import matrix_from_proto, params_from_proto, record_to_proto
from qpu_gateway.errors import (
    AllBackendsFailedError,
    DeadlineExceededError,
    InvalidArgumentError,
    ModelNotFoundError,
    PermissionDeniedError,
)
from qpu_gateway.service import GatewayService
from qpu_gateway.v1 import gateway_pb2 as pb
from qpu_gateway.v1 import gateway_pb2_grpc as pb_grpc

__all__ = ["SERVICE_NAME", "GatewayServicer", "create_server"]

log = logging.getLogger("qpu_gateway.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Gateway"].full_name
T = TypeVar("T")


async def _guard(context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]) -> T:
    """Run a domain call, mapping domain errors to status codes (never UNKNOWN)."""
    try:
        return await call()
    except InvalidArgumentError as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except ModelNotFoundError as exc:
        await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
    except PermissionDeniedError as exc:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
    except AllBackendsFailedError as exc:
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
    except DeadlineExceededError as exc:
        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))
    except asyncio.CancelledError:
        raise
    except Exception:
        cid = uuid.uuid4().hex[:12]
        log.exception("internal error (correlation id %s)", cid)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error; correlation id {cid}")
    raise AssertionError("unreachable")  # pragma: no cover - context.abort always raises


class GatewayServicer(pb_grpc.GatewayServicer):
    """Converts messages to domain calls and back; holds no logic of its own."""

    def __init__(self, service: GatewayService) -> None:
        self.service = service

    async def Fit(self, request: pb.FitRequest, context: grpc.aio.ServicerContext) -> pb.FitReply:
        async def call() -> pb.FitReply:
            x = matrix_from_proto("x", request.x)
            y = np.asarray(request.y, dtype=np.float64)
            seed = request.seed if request.HasField("seed") else None
            remaining = context.time_remaining()
            record = await asyncio.to_thread(
                self.service.fit,
                x,
                y,
                model_id=request.model_id,
                params=params_from_proto(request.params),
                backend=request.backend,
                seed=seed,
                timeout=remaining,
            )
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
            mean, std, used = self.service.predict(request.model_id, x, version)
            return pb.PredictReply(
                mean=mean.tolist(), std=std.tolist(), model_id=request.model_id, version=used
            )

        return await _guard(context, call)

    async def GetModel(
        self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfo:
        async def call() -> pb.ModelInfo:
            version = request.version if request.HasField("version") else None
            return record_to_proto(self.service.get(request.model_id, version))

        return await _guard(context, call)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsReply:
        async def call() -> pb.ListModelsReply:
            records = self.service.list(request.model_id)
            return pb.ListModelsReply(models=[record_to_proto(r) for r in records])

        return await _guard(context, call)

    async def DeleteModel(
        self, request: pb.DeleteModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteModelReply:
        async def call() -> pb.DeleteModelReply:
            n = self.service.delete(request.model_id)
            log.info("delete model_id=%s versions=%d", request.model_id, n)
            return pb.DeleteModelReply(model_id=request.model_id, versions_deleted=n)

        return await _guard(context, call)


async def create_server(
    service: GatewayService,
    address: str,
    *,
    reflection_enabled: bool = True,
    options: list[tuple[str, Any]] | None = None,
) -> tuple[grpc.aio.Server, int, health_aio.HealthServicer]:
    """Build (not start) the server; returns it, the bound port, and its health servicer."""
    server = grpc.aio.server(options=options)
    pb_grpc.add_GatewayServicer_to_server(GatewayServicer(service), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in ("", SERVICE_NAME):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    if reflection_enabled:
        names = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
    return server, port, health
