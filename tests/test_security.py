"""TLS, mutual TLS and token scopes through real server processes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from qpu_gateway.auth import TokenTable, load_tokens
from qpu_gateway.backends import BackendRegistry
from qpu_gateway.client import GatewayClient
from qpu_gateway.server import ServerOptions, create_server, is_loopback
from qpu_gateway.service import GatewayService
from qpu_gateway.store import ModelStore
from tests._certs import make_pki
from tests.conftest import GatewayProcess

ADMIN = "admin-token-0123456789abcdef"
PREDICT = "predict-token-0123456789abcdef"
BAD = "not-a-known-token-0123456789"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, str]):
    """A TLS gateway with an admin and a predict token (from a chmod-600 file)."""
    d = tmp_path_factory.mktemp("tls-gw")
    tokens = d / "tokens.txt"
    tokens.write_text(f"# scope:token\nadmin:{ADMIN}\npredict:{PREDICT}\n")
    os.chmod(tokens, 0o600)
    proc = GatewayProcess(d / "m.sqlite", "--tls-cert", pki["server"], "--tls-key", pki["server_key"],
                          "--tokens-file", str(tokens)).start()
    yield proc
    proc.stop()


def _client(proc: GatewayProcess, pki: dict[str, str], token: str | None) -> GatewayClient:
    return GatewayClient(proc.address, token=token, tls_ca=pki["ca"], timeout=30)


def _x() -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).random((6, 2))
    return x, x.sum(axis=1)


def _code(fn) -> grpc.StatusCode:
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


OK, UNAUTH, DENIED = grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED
MATRIX = {
    None: {"Predict": UNAUTH, "Fit": UNAUTH, "DeleteModel": UNAUTH},
    BAD: {"Predict": UNAUTH, "Fit": UNAUTH, "DeleteModel": UNAUTH},
    PREDICT: {"Predict": OK, "Fit": DENIED, "DeleteModel": DENIED},
    ADMIN: {"Predict": OK, "Fit": OK, "DeleteModel": OK},
}


@pytest.mark.parametrize("token", list(MATRIX), ids=["no-token", "bad-token", "predict", "admin"])
@pytest.mark.parametrize("method", ["Predict", "Fit", "DeleteModel"])
def test_auth_matrix_over_tls(tls_server, pki, token: str | None, method: str) -> None:
    x, y = _x()
    with _client(tls_server, pki, ADMIN) as admin:
        model_id = admin.fit(x, y, num_reads=10, num_sweeps=10).model_id
    with _client(tls_server, pki, token) as client:
        call = {
            "Predict": lambda: client.predict(model_id, x),
            "Fit": lambda: client.fit(x, y, num_reads=10, num_sweeps=10),
            "DeleteModel": lambda: client.delete_model(model_id),
        }[method]
        assert _code(call) == MATRIX[token][method]
        assert client.health() == "SERVING"


def test_plaintext_client_is_refused_by_a_tls_server(tls_server) -> None:
    refused = 0
    for _ in range(10):
        with GatewayClient(tls_server.address, token=ADMIN, timeout=0.5) as plain:
            try:
                plain.list_models(timeout=0.5)
            except grpc.RpcError as exc:
                refused += exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert refused == 10


def test_mutual_tls_requires_a_client_certificate(tmp_path: Path, pki: dict[str, str]) -> None:
    proc = GatewayProcess(tmp_path / "m.sqlite", "--tls-cert", pki["server"], "--tls-key",
                          pki["server_key"], "--tls-client-ca", pki["ca"]).start()
    try:
        with GatewayClient(proc.address, tls_ca=pki["ca"], timeout=3) as no_cert:
            assert _code(lambda: no_cert.list_models(timeout=3)) in (
                grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        with GatewayClient(proc.address, tls_ca=pki["ca"], tls_cert=pki["client"],
                           tls_key=pki["client_key"], timeout=10) as with_cert:
            assert with_cert.list_models() == []
    finally:
        proc.stop()
    assert "tls=mtls" in proc.log()


def test_tokens_never_appear_in_the_server_log(tls_server, pki) -> None:
    with _client(tls_server, pki, BAD) as client:
        _code(lambda: client.list_models())
    log = tls_server.log()
    assert "auth=2 tokens" in log
    for token in (ADMIN, PREDICT, BAD):
        assert token not in log


def test_token_table_scopes_and_validation(tmp_path: Path) -> None:
    table = TokenTable([("admin", ADMIN), ("predict", PREDICT)])
    assert (table.scope_of(ADMIN), table.scope_of(PREDICT), table.scope_of(BAD)) == ("admin", "predict", None)
    with pytest.raises(ValueError, match="token scope must be one of"):
        TokenTable([("root", ADMIN)])
    with pytest.raises(ValueError, match="at least 16 characters"):
        TokenTable([("admin", "short")])
    loose = tmp_path / "tokens.txt"
    loose.write_text(f"admin:{ADMIN}\n")
    os.chmod(loose, 0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        load_tokens(loose, env={})
    env_table = load_tokens(None, env={"QPU_GATEWAY_TOKENS": f"predict:{PREDICT}, admin:{ADMIN}"})
    assert env_table is not None and len(env_table) == 2
    assert load_tokens(None, env={}) is None


def test_load_tokens_accepts_the_tokens_of_the_file_and_of_the_environment_both(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text(f"admin:{ADMIN}\n")
    os.chmod(path, 0o600)
    table = load_tokens(path, env={"QPU_GATEWAY_TOKENS": f"predict:{PREDICT}"})
    assert table is not None and len(table) == 2
    assert (table.scope_of(ADMIN), table.scope_of(PREDICT)) == ("admin", "predict")


def test_hpo_gateway_predictor_reaches_a_secured_gateway(tls_server, pki, monkeypatch) -> None:
    from hpo_node.predictors import GatewayPredictor

    curves = np.random.default_rng(0).random((12, 8)).cumsum(axis=1)[:, ::-1]
    finals = curves[:, -1] * 0.9
    monkeypatch.setenv("QHPO_TEST_TOKEN", PREDICT)
    denied = GatewayPredictor(tls_server.address, token_env="QHPO_TEST_TOKEN", tls_ca=pki["ca"],
                              num_reads=20, num_sweeps=10)
    with pytest.raises(grpc.RpcError) as info:
        denied.fit(curves, finals, None, seed=0)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    monkeypatch.setenv("QHPO_TEST_TOKEN", ADMIN)
    predictor = GatewayPredictor(tls_server.address, token_env="QHPO_TEST_TOKEN", tls_ca=pki["ca"],
                                 num_reads=20, num_sweeps=10)
    predictor.fit(curves, finals, None, seed=0)
    mean, spread = predictor.predict(curves, None)
    assert mean.shape == spread.shape == (12,)
    assert ADMIN not in repr(vars(predictor))
    predictor.close()
    monkeypatch.delenv("QHPO_TEST_TOKEN")
    with pytest.raises(ValueError, match="token_env: environment variable 'QHPO_TEST_TOKEN' is not set"):
        GatewayPredictor(tls_server.address, token_env="QHPO_TEST_TOKEN", num_reads=20).fit(
            curves, finals, None, seed=0)


def test_tokens_file_errors_never_print_a_token(tmp_path: Path) -> None:
    swapped = tmp_path / "tokens.txt"
    swapped.write_text(f"# scope:token\n{ADMIN}:admin\n")
    os.chmod(swapped, 0o600)
    with pytest.raises(ValueError, match=r"tokens.txt, entry 2: the token scope must be one of") as info:
        load_tokens(swapped, env={})
    assert ADMIN not in str(info.value)
    with pytest.raises(ValueError, match=r"QPU_GATEWAY_TOKENS, entry 1: expected SCOPE:TOKEN") as info:
        load_tokens(None, env={"QPU_GATEWAY_TOKENS": ADMIN})
    assert ADMIN not in str(info.value)
    with pytest.raises(ValueError, match="entry 1: tokens must be at least 16 characters") as info:
        load_tokens(None, env={"QPU_GATEWAY_TOKENS": "admin:short-tok"})
    assert "short-tok" not in str(info.value)


def test_refused_calls_are_logged_with_status_request_id_and_peer(tls_server, pki) -> None:
    x, y = _x()
    with _client(tls_server, pki, BAD) as client:
        assert _code(lambda: client.list_models()) == UNAUTH
    with _client(tls_server, pki, PREDICT) as client:
        assert _code(lambda: client.fit(x, y, num_reads=10, num_sweeps=10)) == DENIED
    deadline = time.monotonic() + 10  # the server logs after the status has gone out
    while True:
        lines = tls_server.log().splitlines()
        unauth = [line for line in lines if "ListModels UNAUTHENTICATED" in line]
        denied = [line for line in lines if "Fit PERMISSION_DENIED" in line]
        if (unauth and denied) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert unauth and denied
    assert all(" WARNING " in line and "(peer ipv" in line for line in unauth + denied)
    assert "scope 'predict' does not allow Fit" in denied[0]  # a scope name is not a secret
    assert all("[-]" not in line for line in unauth + denied)  # the call's request id, not "-"


def test_json_log_stays_one_object_per_line_when_plaintext_clients_hit_tls(
    tmp_path: Path, pki: dict[str, str]
) -> None:
    proc = GatewayProcess(tmp_path / "m.sqlite", "--tls-cert", pki["server"], "--tls-key",
                          pki["server_key"], "--log-format", "json").start()
    try:
        for _ in range(3):
            with GatewayClient(proc.address, timeout=0.5) as plain:
                assert _code(lambda: plain.list_models(timeout=0.5)) != OK
        with GatewayClient(proc.address, tls_ca=pki["ca"], timeout=10) as client:
            assert _code(lambda: client.predict("missing", np.zeros((1, 2)))) == grpc.StatusCode.NOT_FOUND
    finally:
        proc.stop()
    records = [json.loads(line) for line in proc.log().splitlines() if line.strip()]
    assert records and all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", r["ts"])
                           for r in records)
    refused = [r for r in records if r["message"].startswith("Predict NOT_FOUND")]
    assert refused and refused[0]["level"] == "INFO" and refused[0]["request_id"] != "-"


def _warnings_of_a_plaintext_server(
    caplog: pytest.LogCaptureFixture, address: str, tokens: TokenTable | None
) -> list[str]:
    """The WARNING lines logged while building (not starting) a server without TLS."""

    async def build() -> None:
        service = GatewayService(ModelStore(":memory:"), BackendRegistry())
        gateway = await create_server(service, address, ServerOptions(tokens=tokens))
        await gateway.stop(0)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="qpu_gateway.server"):
        asyncio.run(build())
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_tokens_without_tls_off_loopback_log_one_cleartext_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tokens = TokenTable([("admin", ADMIN)])
    warned = _warnings_of_a_plaintext_server(caplog, "0.0.0.0:0", tokens)
    assert len(warned) == 1 and "cleartext" in warned[0] and "0.0.0.0:0" in warned[0]
    assert ADMIN not in warned[0]
    assert _warnings_of_a_plaintext_server(caplog, "127.0.0.1:0", tokens) == []
    assert _warnings_of_a_plaintext_server(caplog, "0.0.0.0:0", None) == []


@pytest.mark.parametrize(
    ("address", "loopback"),
    [("127.0.0.1:1", True), ("127.8.0.1:1", True), ("localhost:1", True), ("[::1]:1", True),
     ("unix:/run/gw.sock", True),
     ("0.0.0.0:1", False), ("[::]:1", False), ("10.0.0.5:1", False), ("gw.example:1", False)],
)
def test_is_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback
