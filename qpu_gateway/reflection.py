"""gRPC server reflection under both names clients use: ``grpc.reflection.v1`` and ``v1alpha``.

grpcio-reflection ships only ``grpc.reflection.v1alpha.ServerReflection``; tools such as grpcurl
and Postman ask for ``grpc.reflection.v1`` first. The two are one protocol: v1 is v1alpha's
.proto under another package, with the same messages field for field, so one servicer answers
both. The v1 file descriptor is registered too, so v1 describes itself like any listed service.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Final

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

__all__ = ["V1ALPHA_SERVICE_NAME", "V1_SERVICE_NAME", "enable_reflection"]

V1ALPHA_SERVICE_NAME: Final = reflection.SERVICE_NAME
V1_SERVICE_NAME: Final = "grpc.reflection.v1.ServerReflection"
_V1_FILE: Final = "grpc/reflection/v1/reflection.proto"
_lock = threading.Lock()


def _register_v1_descriptor() -> None:
    """Add ``grpc/reflection/v1/reflection.proto`` (v1alpha's, renamed) to the default pool."""
    pool = descriptor_pool.Default()
    with _lock:
        try:
            pool.FindFileByName(_V1_FILE)
            return
        except KeyError:
            pass
        fdp = descriptor_pb2.FileDescriptorProto.FromString(reflection_pb2.DESCRIPTOR.serialized_pb)
        old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
        fdp.name, fdp.package = _V1_FILE, "grpc.reflection.v1"
        fdp.ClearField("options")
        for message in fdp.message_type:
            for f in message.field:
                if f.type_name.startswith(old):
                    f.type_name = new + f.type_name[len(old):]
        for service in fdp.service:
            for method in service.method:
                method.input_type = new + method.input_type[len(old):]
                method.output_type = new + method.output_type[len(old):]
        pool.Add(fdp)


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection v1 and v1alpha on ``server`` for ``service_names`` (and themselves)."""
    _register_v1_descriptor()
    names = (*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)
    servicer = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.method_handlers_generic_handler(
        V1_SERVICE_NAME,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((v1,))
