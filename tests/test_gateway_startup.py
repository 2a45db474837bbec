"""``qpu-gateway serve`` start-up and shutdown: the sampling workers' forkserver can start before
the server's own heavy imports (so the two import in parallel), the pool then forks from that one
forkserver, and the serve path loads no optional backend's dependencies; a busy gRPC or metrics
address ends the start with one line naming it, the gRPC port is never shared, and a SIGTERM
drain keeps answering health checks NOT_SERVING."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from qpu_gateway.backends import BackendRegistry
from qpu_gateway.client import GatewayClient
from qpu_gateway.config import load_config
from qpu_gateway.execution import Attempt, SamplingPool, run_attempt
from qpu_gateway.observability import Metrics
from qpu_gateway.server import create_server
from qpu_gateway.service import GatewayService
from qpu_gateway.store import ModelStore
from tests._certs import make_pki
from tests.conftest import REPO, GatewayProcess


def _modules_after(code: str) -> set[str]:
    """Names in ``sys.modules`` of a fresh interpreter after running ``code``."""
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def _packages(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_execution_and_the_registry_import_no_sampling_or_model_libraries() -> None:
    loaded = _packages(_modules_after(
        "import qpu_gateway.cli, qpu_gateway.execution, qpu_gateway.backends"
    ))
    assert not loaded & {"dimod", "dwave", "sklearn", "scipy", "networkx", "pandas"}, loaded


def test_the_serve_path_loads_no_optional_backend_dependencies() -> None:
    modules = _modules_after(
        "import qpu_gateway.cli, qpu_gateway.config, qpu_gateway.server, qpu_gateway.service, "
        "qpu_gateway.execution, qpu_gateway.backends.neal"
    )
    loaded = _packages(modules)
    assert {"sklearn", "dimod"} <= loaded  # a Predict and a Fit's validation need them
    assert not loaded & {"torch", "triton", "ray", "minorminer"}, loaded
    assert "dwave.samplers" in modules
    assert not {"dwave.system", "dwave.cloud"} & modules  # qpu, hybrid, mock-qpu only


DRIVER = """
import os
from pathlib import Path
from qpu_gateway.execution import SamplingPool, start_forkserver

def ppid(pid):
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

def children(pid):
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return {int(c) for t in tasks for c in (t / "children").read_text().split()}

start_forkserver()
start_forkserver()  # idempotent
pool = SamplingPool(2).start()
assert pool.wait_ready(120)
forkservers = {ppid(w) for w in pool.pids()}
ours = children(os.getpid())
pool.close()
print(len(forkservers), forkservers <= ours, len(ours))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_pool_forks_its_workers_from_the_forkserver_started_before_it() -> None:
    out = subprocess.run([sys.executable, "-c", DRIVER], capture_output=True, text=True,
                         check=True, cwd=REPO, timeout=180).stdout.split()
    # one forkserver, a child of ours, parent of both workers; our other child: the resource tracker
    assert out == ["1", "True", "2"], out


def test_a_spawned_worker_fits_like_the_inline_executor() -> None:
    """A spawned worker has only what it imports itself (no forkserver preload)."""
    x = np.random.default_rng(3).random((8, 3))
    attempt = Attempt("neal", x, x.sum(axis=1), {"k": 1, "num_reads": 20}, seed=5)
    pool = SamplingPool(1, start_method="spawn").start()
    try:
        assert pool.wait_ready(120)
        state = pool.run(attempt, lambda: False)
    finally:
        pool.close()
    assert state["dual_coef"] == run_attempt(BackendRegistry(), attempt, lambda: False)["dual_coef"]


def test_client_channel_bounds_the_reconnect_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    import grpc

    from qpu_gateway.client import RECONNECT_OPTIONS, GatewayClient

    real = grpc.insecure_channel
    seen: list[dict[str, object]] = []

    def spy(address: str, options: list[tuple[str, object]]) -> grpc.Channel:
        seen.append(dict(options))
        assert len(seen[-1]) == len(options)  # one value per key
        return real(address, options=options)

    monkeypatch.setattr(grpc, "insecure_channel", spy)
    with GatewayClient("127.0.0.1:9"):
        pass
    with GatewayClient("127.0.0.1:9", options=[("grpc.max_reconnect_backoff_ms", 500)]):
        pass
    assert all(seen[0][k] == v for k, v in RECONNECT_OPTIONS)
    assert seen[1]["grpc.max_reconnect_backoff_ms"] == 500  # the caller's value replaces ours
    assert seen[1]["grpc.initial_reconnect_backoff_ms"] == dict(RECONNECT_OPTIONS)[
        "grpc.initial_reconnect_backoff_ms"]


@contextmanager
def _listening() -> Iterator[int]:
    """A port on 127.0.0.1 that another process listens on, for the duration."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qpu_gateway", "serve", "--store", str(tmp_path / "m.sqlite"),
         "--sampling-workers", "1", *args],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )


def test_serve_on_a_busy_address_exits_with_one_line_naming_it(tmp_path: Path) -> None:
    with _listening() as port:
        done = _serve(tmp_path, "--address", f"127.0.0.1:{port}")
    assert done.returncode != 0
    assert done.stderr.splitlines() == [
        f"qpu-gateway: cannot listen on 127.0.0.1:{port}: the address is already in use "
        "(another gateway?)"
    ]


@pytest.mark.parametrize(
    ("cert", "key", "start"),
    [
        ("junk", "server_key", "tls_cert: {junk} holds no PEM certificate ("),
        ("server", "junk", "tls_key: {junk} holds no PEM private key ("),
        ("server", "client_key",
         "tls_key: {client_key} is not the private key of tls_cert {server} (the two do not match)"),
    ],
)
def test_serve_with_a_bad_tls_certificate_or_key_exits_2_with_one_line_naming_it(
    tmp_path: Path, cert: str, key: str, start: str
) -> None:
    files = make_pki(tmp_path)
    files["junk"] = str(tmp_path / "junk.pem")
    Path(files["junk"]).write_text("not PEM\n")
    done = _serve(tmp_path, "--address", "127.0.0.1:0", "--tls-cert", files[cert],
                  "--tls-key", files[key])
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("qpu-gateway: " + start.format(**files)), lines
    assert not (tmp_path / "m.sqlite").exists()


def test_serve_with_a_busy_metrics_port_exits_with_one_line_naming_it(tmp_path: Path) -> None:
    with _listening() as port:
        done = _serve(tmp_path, "--address", "127.0.0.1:0", "--metrics-port", str(port))
    assert done.returncode != 0
    assert done.stderr.splitlines() == [
        f"qpu-gateway: metrics: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_metrics_close_releases_the_port_for_an_in_process_caller() -> None:
    # the CLI closes the metrics server when a start fails after it opened: a caller that runs the
    # gateway in its own process keeps no listener behind
    metrics = Metrics()
    port = metrics.serve(0)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert b"qpu_gateway_stored_versions" in reply.read()
    with pytest.raises(RuntimeError, match="already served"):
        metrics.serve(0)
    metrics.close()
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))
    metrics.close()  # a second close is a no-op
    assert metrics.serve(port) == port  # the port is free again
    metrics.close()


def test_create_server_never_shares_its_port() -> None:
    async def run() -> None:
        gateway = await create_server(GatewayService(ModelStore(":memory:"), BackendRegistry()),
                                      "127.0.0.1:0")
        await gateway.start()
        address = f"127.0.0.1:{gateway.port}"
        try:
            with pytest.raises(OSError, match=re.escape(f"cannot listen on {address}")):
                await create_server(GatewayService(ModelStore(":memory:"), BackendRegistry()),
                                    address)
            # gRPC's default (SO_REUSEPORT) would let a socket that asks for it share the port
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                with pytest.raises(OSError):
                    sock.bind(("127.0.0.1", gateway.port))
        finally:
            await gateway.stop(0)

    asyncio.run(run())


def test_config_metrics_host_and_drain_seconds(tmp_path: Path) -> None:
    assert (load_config(env={}).metrics_host, load_config(env={}).drain_seconds) == ("127.0.0.1", 0.0)
    toml = tmp_path / "g.toml"
    toml.write_text('[server]\nmetrics_host = "0.0.0.0"\ndrain_seconds = 1.5\n')
    cfg = load_config(toml, env={})
    assert (cfg.metrics_host, cfg.drain_seconds) == ("0.0.0.0", 1.5)
    assert load_config(toml, env={}, overrides={"metrics_host": "::"}).metrics_host == "::"
    with pytest.raises(ValueError, match="metrics_host"):
        load_config(env={}, overrides={"metrics_host": " "})
    with pytest.raises(ValueError, match="drain_seconds must be a number >= 0"):
        load_config(env={}, overrides={"drain_seconds": -1})


def test_sigterm_drain_answers_health_not_serving_then_stops(tmp_path: Path) -> None:
    proc = GatewayProcess(tmp_path / "m.sqlite", "--drain-seconds", "3", "--metrics-port", "0",
                          "--metrics-host", "0.0.0.0").start()
    try:
        assert re.search(r"metrics on http://0\.0\.0\.0:\d+/metrics", proc.log())
        with GatewayClient(proc.address, timeout=5) as client:
            assert client.health() == "SERVING"
            proc.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            assert client.health() == "NOT_SERVING"
        assert proc.proc.wait(30) == 0
    finally:
        proc.stop()
    assert "drain 3.0s" in proc.log() and "store closed" in proc.log()
