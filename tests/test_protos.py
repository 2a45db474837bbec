"""The checked-in gRPC stubs are exactly what scripts/gen_protos.sh generates from proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
