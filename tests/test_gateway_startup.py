"""``qpu-gateway serve`` start-up: the sampling workers' forkserver can start before the server's
own heavy imports (so the two import in parallel), the pool then forks from that one forkserver,
and the serve path loads no optional backend's dependencies."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from qpu_gateway.backends import BackendRegistry
from qpu_gateway.execution import Attempt, SamplingPool, run_attempt
from tests.conftest import REPO


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
