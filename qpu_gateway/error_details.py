"""Field errors as ``google.rpc.BadRequest`` details, beside the message text.

An ``INVALID_ARGUMENT`` reply keeps its message (``"params.k: must be ..."``) and also carries a
``google.rpc.Status`` in the ``grpc-status-details-bin`` trailer whose details hold one
``google.rpc.BadRequest`` with a ``FieldViolation`` (field path such as ``x`` or ``params.k``, and
the rule it broke), so clients in any language read the field without parsing text. A
``PERMISSION_DENIED`` for a request field the configuration does not allow (``backend``) carries
the same. :func:`field_violations` decodes them on the Python side
(``GatewayClient.field_violations``).
"""

from __future__ import annotations

from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from qpu_gateway.errors import InvalidArgumentError, PermissionDeniedError
from qpu_gateway.observability import request_id

__all__ = [
    "DETAILS_KEY",
    "abort_field_error",
    "abort_invalid_argument",
    "bad_request_status",
    "field_violations",
]

DETAILS_KEY = "grpc-status-details-bin"


def bad_request_status(
    field: str, description: str, message: str, code: int = code_pb2.INVALID_ARGUMENT
) -> status_pb2.Status:
    """A ``google.rpc.Status`` of ``code`` (default INVALID_ARGUMENT) with one BadRequest field
    violation."""
    violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    return status_pb2.Status(code=code, message=message, details=[detail])


async def abort_field_error(
    context: grpc.aio.ServicerContext,
    code: grpc.StatusCode,
    exc: InvalidArgumentError | PermissionDeniedError,
) -> NoReturn:
    """End the call with ``code``, ``str(exc)`` as message and a BadRequest detail naming
    ``exc.field`` (the trailer keeps the call's ``x-request-id``)."""
    status = bad_request_status(exc.field, exc.description, str(exc), code.value[0])
    trailer: list[tuple[str, str | bytes]] = [(DETAILS_KEY, status.SerializeToString())]
    if request_id.get() != "-":
        trailer.append(("x-request-id", request_id.get()))
    await context.abort(code, str(exc), trailing_metadata=tuple(trailer))
    raise AssertionError("unreachable")  # pragma: no cover - context.abort always raises


async def abort_invalid_argument(context: grpc.aio.ServicerContext, exc: InvalidArgumentError) -> NoReturn:
    """End the call with INVALID_ARGUMENT, ``str(exc)`` as message and a BadRequest detail."""
    await abort_field_error(context, grpc.StatusCode.INVALID_ARGUMENT, exc)


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """The (field, description) pairs of a failed call's BadRequest details; ``[]`` when none.
    ``error`` is the blocking API's ``grpc.RpcError`` or asyncio's ``grpc.aio.AioRpcError``."""
    if isinstance(error, grpc.Call):
        status = rpc_status.from_call(error)
    elif isinstance(error, grpc.aio.AioRpcError):
        raw = [v for k, v in error.trailing_metadata() or () if k == DETAILS_KEY]
        status = status_pb2.Status.FromString(raw[0]) if raw else None
    else:
        status = None
    if status is None:
        return []
    out: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out += [(v.field, v.description) for v in bad.field_violations]
    return out
