#!/usr/bin/env bash
# Regenerates the gRPC/protobuf stubs in qpu_gateway/v1/ from proto/. tests/test_protos.py fails on drift.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root}"
cd "$root"
py="${PYTHON:-$root/.venv/bin/python}"
"$py" -m grpc_tools.protoc -I proto \
    --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" \
    proto/qpu_gateway/v1/gateway.proto
