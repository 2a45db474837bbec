"""Shared fixtures: real gateway server processes and the shared learning-curve data."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# Locally, hypothesis explores new examples on every run (that is how fuzzing found the k = 2^32
# allocation). CI sets HYPOTHESIS_PROFILE=ci: the same examples every run, so a red CI is
# reproducible.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "mlpf_delphes_curves.csv"
_SERVING = re.compile(r"serving on (\S+:\d+)")


class GatewayProcess:
    """A real ``qpu-gateway serve`` child process on a free port (``python -m qpu_gateway``)."""

    def __init__(
        self, store: Path, *extra: str, env: dict[str, str] | None = None, bind: str = "127.0.0.1:0"
    ) -> None:
        self.store = store
        self.extra = extra
        self.env = env
        self.bind = bind
        self.log_path = store.with_suffix(f".{time.monotonic_ns()}.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""

    def start(self, timeout: float = 60.0) -> GatewayProcess:
        cmd = [sys.executable, "-m", "qpu_gateway", "serve", "--address", self.bind,
               "--store", str(self.store), *self.extra]
        env = {**os.environ, **(self.env or {})}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = _SERVING.search(self.log_path.read_text(errors="replace"))
            if m:
                self.address = m.group(1)
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gateway did not start; log:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def gateway_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A session-wide gateway process (neal backend, its own SQLite store)."""
    store = tmp_path_factory.mktemp("gateway") / "models.sqlite"
    proc = GatewayProcess(store).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def gateway_address(gateway_process: GatewayProcess) -> str:
    """``127.0.0.1:PORT`` of the session-wide gateway process."""
    return gateway_process.address


@pytest.fixture(scope="session")
def mlpf_curves() -> np.ndarray:
    """The MLPF learning curves, (296, 100); skips when ../shared/data is absent."""
    if not SHARED_DATA.exists():
        pytest.skip(f"shared learning-curve data not found at {SHARED_DATA}")
    import pandas as pd

    df = pd.read_csv(SHARED_DATA)
    return df[[f"loss_{i}" for i in range(100)]].to_numpy(dtype=np.float64)
