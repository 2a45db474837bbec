"""Backends through real ``qpu-gateway serve`` processes (offline: mock QPU, unreachable cloud)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from qpu_gateway.client import GatewayClient
from tests.conftest import REPO, GatewayProcess

TOKEN = "DEV-0123456789abcdef0123456789abcdef0123abcd"
PLAIN_TOKEN = "qhpo-secret-token-7f3a9c2e51"  # not SAPI-shaped: only its registration hides it

CLIENT_SCRIPT = """
import sys
import numpy as np
from qpu_gateway.client import GatewayClient
rng = np.random.default_rng(0)
x = rng.random((12, 4))
with GatewayClient(sys.argv[1]) as client:
    info = client.fit(x, x.sum(axis=1), num_reads=50, seed=1)
    mean, _ = client.predict(info.model_id, x)
    print(info.backend, mean.shape[0])
"""


def _config(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_swapping_config_files_switches_the_backend_with_the_same_client(tmp_path: Path) -> None:
    cache = tmp_path / "emb"
    configs = {
        "neal": '[server]\nbackend = "neal"\n',
        "mock-qpu": f'[server]\nbackend = "mock-qpu"\n[backends.mock-qpu]\nembedding_cache_dir = "{cache}"\n',
    }
    for name, text in configs.items():
        proc = GatewayProcess(tmp_path / f"{name}.sqlite", "--config", str(_config(tmp_path, name, text)))
        proc.start()
        try:
            out = subprocess.run([sys.executable, "-c", CLIENT_SCRIPT, proc.address],
                                 capture_output=True, text=True, timeout=120, check=True)
            assert out.stdout.split() == [name, "12"]
        finally:
            proc.stop()


def test_mock_qpu_end_to_end_r2_side_by_side_with_neal(
    tmp_path: Path, mlpf_curves: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, "chain", f'[server]\nbackend = "mock-qpu"\nallowed_backends = ["neal"]\n'
                                     f'[backends.mock-qpu]\nembedding_cache_dir = "{tmp_path / "emb"}"\n')
    proc = GatewayProcess(tmp_path / "m.sqlite", "--config", str(cfg)).start()
    x, y = mlpf_curves[:, :25], mlpf_curves[:, -1]
    scores: dict[str, list[float]] = {"mock-qpu": [], "neal": []}
    try:
        with GatewayClient(proc.address, timeout=120) as client:
            for seed in range(10):
                idx = np.random.default_rng(seed).permutation(len(y))
                tr, te = idx[:20], idx[20:]
                for backend in scores:
                    info = client.fit(x[tr], y[tr], backend=backend, seed=seed)
                    assert info.backend == backend and not info.fallback
                    if backend == "mock-qpu":
                        assert info.qubits_used > 120 and info.max_chain_length > 1
                    mean, _ = client.predict(info.model_id, x[te])
                    ss = ((y[te] - y[te].mean()) ** 2).sum()
                    scores[backend].append(1 - ((mean - y[te]) ** 2).sum() / ss)
    finally:
        proc.stop()
    with capsys.disabled():
        for backend, r2 in scores.items():
            print(f"\nR² over 10 splits, {backend}: mean {np.mean(r2):.4f}, min {np.min(r2):.4f}")
    assert np.mean(scores["neal"]) > 0.75
    assert np.mean(scores["mock-qpu"]) > 0.65


def test_qpu_token_never_appears_in_logs_errors_or_replies(tmp_path: Path) -> None:
    """A real token, ``--log-level DEBUG`` (dwave.cloud logs its whole config, token included,
    in the sampling worker) and real connection attempts to an unreachable endpoint."""
    cloud = ('endpoint = "http://127.0.0.1:1/sapi/v2/"\nrequest_timeout = 2\nhttp_retry_total = 0\n')
    cfg = _config(tmp_path, "qpu", '[server]\nbackends = ["qpu", "neal"]\nallowed_backends = ["hybrid"]\n'
                  'breaker_failures = 1\n'
                  f'[backends.qpu]\ntoken = "{PLAIN_TOKEN}"\n{cloud}'
                  f'[backends.hybrid]\ntoken = "{TOKEN}"\n{cloud}')
    proc = GatewayProcess(tmp_path / "m.sqlite", "--config", str(cfg), "--log-level", "DEBUG").start()
    seen: list[str] = []
    try:
        rng = np.random.default_rng(0)
        x = rng.random((6, 2))
        with GatewayClient(proc.address, timeout=60) as client:
            first = client.fit(x, x.sum(axis=1), num_reads=20)
            assert first.backend == "neal" and first.fallback and "qpu:" in first.fallback_reason
            second = client.fit(x, x.sum(axis=1), num_reads=20)
            assert "circuit open" in second.fallback_reason
            seen += [str(first), str(second)]
            for call in (
                lambda: client.fit(x, x.sum(axis=1), backend="hybrid", num_reads=20),
                lambda: client.fit(x, x.sum(axis=1), backend="exact"),
                lambda: client.fit(x, x.sum(axis=1), backend="qpu", k=0),
                lambda: client.predict("missing", x),
            ):
                with pytest.raises(grpc.RpcError) as info:
                    call()
                seen.append(f"{info.value.code()} {info.value.details()}")
    finally:
        proc.stop()
    assert any("UNAVAILABLE" in s and "hybrid" in s for s in seen)
    assert any("PERMISSION_DENIED" in s for s in seen)
    log = proc.log()
    assert "falling back" in log
    assert log.count("DEBUG dwave.cloud") >= 10 and "'token': '***'" in log
    for text in [log, *seen]:
        for token in (TOKEN, PLAIN_TOKEN):
            assert token not in text
            assert token[4:] not in text


def test_example_production_config_switches_reflection_off() -> None:
    from qpu_gateway.config import load_config

    cfg = load_config(REPO / "examples" / "gateway-production.toml", env={})
    assert cfg.reflection is False and cfg.tls_client_ca and cfg.tokens_file
    assert cfg.chain == ["qpu", "neal"]


def test_example_backend_configs_load() -> None:
    from qpu_gateway.config import load_config

    chains = {name: load_config(REPO / "examples" / f"gateway-{name}.toml", env={}).chain
              for name in ("neal", "mock-qpu", "qpu", "chain", "gpu-sa")}
    assert chains == {"neal": ["neal"], "mock-qpu": ["mock-qpu"], "qpu": ["qpu"], "chain": ["qpu", "neal"],
                      "gpu-sa": ["gpu-sa", "neal"]}
