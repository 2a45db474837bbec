"""A client no one here wrote: Node.js (@grpc/grpc-js + @grpc/proto-loader) against a real server.

``tests/node/gateway_client.mjs`` loads ``proto/`` as-is (``qpu_gateway/v1/gateway.proto`` and the
standard protos in ``proto/third_party/``), fits (with a uint64 seed of 2^64 - 1 and feature
names), predicts, reads an ``INVALID_ARGUMENT`` with its ``google.rpc.BadRequest`` details and
checks health; and the same over TLS with a bearer token, as an operator's
gateway asks for them (``QPU_GATEWAY_TLS_CA``, ``QPU_GATEWAY_TOKEN``). Skips where node or the
installed modules are absent (``cd tests/node && npm ci``; ``.ci/run`` does it when npm exists).
Needs no network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from qpu_gateway.client import GatewayClient
from tests._certs import make_pki
from tests.conftest import REPO, GatewayProcess

NODE_DIR = REPO / "tests" / "node"
PROTO = REPO / "proto"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the Node.js client test needs node >= 18 and npm")
    for module in ("@grpc/grpc-js", "@grpc/proto-loader", "protobufjs"):
        if not (NODE_DIR / "node_modules" / module).is_dir():
            pytest.skip(f"{module} is not installed in tests/node: run `cd tests/node && npm ci`")
    return node


def _run(address: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_node(), str(NODE_DIR / "gateway_client.mjs"), address, str(PROTO)],
                          capture_output=True, text=True, timeout=120, cwd=NODE_DIR,
                          env={**os.environ, **(env or {})})


def test_node_client_fits_predicts_and_reads_bad_request_details(gateway_address: str) -> None:
    out = _run(gateway_address)
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    fit = reply["fit"]
    assert fit["backend"] == "neal" and fit["version"] == 1 and fit["n_train"] == 8
    assert fit["seed"] == str(2**64 - 1) and fit["feature_names"] == ["a", "b"]
    with GatewayClient(gateway_address) as client:
        info = client.get_model(fit["model_id"])
        assert list(info.feature_names) == ["a", "b"] and info.seed == 2**64 - 1
        i = np.arange(8)
        x = np.column_stack([i / 8, (i * 7 % 8) / 8])
        mean, std = client.predict(fit["model_id"], x)
    np.testing.assert_allclose(reply["predict"]["mean"], mean)
    np.testing.assert_allclose(reply["predict"]["std"], std)
    error = reply["error"]
    assert error["code"] == 3 and error["details"].startswith("params.k: ")
    assert error["bad_request"]["message"] == error["details"]
    assert error["bad_request"]["violations"] == [
        {"field": "params.k", "description": error["details"][len("params.k: "):]}
    ]
    assert reply["health"] == "SERVING"


def test_node_client_over_tls_with_a_bearer_token(tmp_path: Path) -> None:
    _node()
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("admin:node-admin-token-0123456789\n")
    tokens.chmod(0o600)
    proc = GatewayProcess(tmp_path / "m.sqlite", "--tls-cert", pki["server"], "--tls-key",
                          pki["server_key"], "--tokens-file", str(tokens)).start()
    try:
        tls = {"QPU_GATEWAY_TLS_CA": pki["ca"]}
        refused = _run(proc.address, tls)  # TLS without the token
        assert refused.returncode != 0 and "UNAUTHENTICATED" in refused.stderr
        out = _run(proc.address, {**tls, "QPU_GATEWAY_TOKEN": "node-admin-token-0123456789"})
        assert out.returncode == 0, out.stderr
        reply = json.loads(out.stdout)
        assert reply["fit"]["n_train"] == 8 and len(reply["predict"]["mean"]) == 8
        assert reply["error"]["bad_request"]["violations"][0]["field"] == "params.k"
        assert reply["health"] == "SERVING"
    finally:
        proc.stop()
