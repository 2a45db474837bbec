"""The checked-in gRPC stubs are exactly what scripts/gen_protos.sh generates from proto/, and the
standard protos under proto/third_party/ describe what the server uses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GENERATED = ("gateway_pb2.py", "gateway_pb2.pyi", "gateway_pb2_grpc.py")


def test_generated_stubs_match_the_proto(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(REPO / "scripts" / "gen_protos.sh"), str(tmp_path)],
        check=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    for name in GENERATED:
        fresh = (tmp_path / "qpu_gateway" / "v1" / name).read_text()
        checked_in = (REPO / "qpu_gateway" / "v1" / name).read_text()
        assert fresh == checked_in, f"qpu_gateway/v1/{name} drifted: run scripts/gen_protos.sh"



THIRD_PARTY = REPO / "proto" / "third_party"


def _without_json_names(message: Any) -> Any:
    for f in message.field:
        f.ClearField("json_name")
    for nested in message.nested_type:
        _without_json_names(nested)
    return message


def _parts(fd: Any) -> list[bytes]:
    """The messages, enums and services of a file descriptor (not its name or source info),
    each serialized; ``json_name`` left out (protoc fills it in, the runtime's copy does not)."""
    parts = [*map(_without_json_names, fd.message_type), *fd.enum_type, *fd.service]
    return sorted(p.SerializeToString(deterministic=True) for p in parts)


def test_third_party_protos_describe_what_the_server_uses(tmp_path: Path) -> None:
    import grpc_tools
    from google.protobuf import descriptor_pb2
    from google.rpc import error_details_pb2, status_pb2
    from grpc_health.v1 import health_pb2

    include = Path(grpc_tools.__file__).parent / "_proto"
    for name, module in (("google/rpc/status.proto", status_pb2),
                         ("google/rpc/error_details.proto", error_details_pb2),
                         ("grpc/health/v1/health.proto", health_pb2)):
        out = tmp_path / "set.pb"
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{THIRD_PARTY}",
                        f"-I{include}", f"--descriptor_set_out={out}", name],
                       check=True, cwd=THIRD_PARTY)
        (compiled,) = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
        runtime = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(runtime)
        assert _parts(compiled) == _parts(runtime), f"proto/third_party/{name} drifted"
        assert compiled.package == runtime.package
        assert "Licensed under the Apache License" in (THIRD_PARTY / name).read_text()
