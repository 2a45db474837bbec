"""``qpu-gateway serve`` as a child process: for studies, examples, benchmarks and tests.

The child binds ``HOST:0`` (a free port) unless told otherwise; :meth:`GatewayProcess.start`
returns once the server logged ``serving on HOST:PORT``, which it does only after it started
with its health status SERVING. :meth:`GatewayProcess.stop` is graceful (SIGTERM: in-flight
calls finish, the store closes) and kills after a timeout.

The child never outlives its parent, even one killed with SIGKILL (else a resumed study would
start a second gateway on the same store): on Linux it asks the kernel for SIGTERM when the parent
dies (``prctl(PR_SET_PDEATHSIG)``; only when started from the main thread, as the signal follows
the thread that started the child), and everywhere a thread polls the parent's pid every
``PARENT_POLL_S`` seconds and sends the child SIGTERM once the parent is gone.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["GatewayProcess"]

_SERVING = re.compile(r"serving on (\S+:\d+)")
PARENT_POLL_S = 1.0
_PR_SET_PDEATHSIG = 1
_CHILD = (
    "import sys; from qpu_gateway.process import _serve_child; "
    "sys.exit(_serve_child(int(sys.argv[1]), sys.argv[2] == '1', sys.argv[3:]))"
)


def _set_parent_death_signal(sig: int) -> bool:
    """Linux: ask the kernel to send ``sig`` to this process when its parent dies."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int, interval: float) -> None:
    """SIGTERM to this process once ``parent`` is no longer its parent (it died)."""
    while os.getppid() == parent:
        time.sleep(interval)
    os.kill(os.getpid(), signal.SIGTERM)


def _serve_child(parent: int, death_signal: bool, argv: list[str]) -> int:
    """The child's entry point: bind its life to ``parent``, then run ``qpu-gateway argv``."""
    if death_signal:
        _set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the watch began
        return 1
    threading.Thread(target=_watch_parent, args=(parent, PARENT_POLL_S), daemon=True,
                     name="parent-watch").start()
    from qpu_gateway.cli import main

    return main(argv)


class GatewayProcess:
    """A ``python -m qpu_gateway serve`` child process.

    Parameters
    ----------
    store : SQLite file of the child's model store.
    *extra : further ``serve`` arguments (e.g. ``"--config", path`` or ``"--backend", "neal"``).
    log_path : where the child's output goes (default: next to the store, one file per instance).
    bind : ``--address`` of the child (default ``127.0.0.1:0``: a free port).
    env : environment additions for the child.
    """

    def __init__(
        self,
        store: str | Path,
        *extra: str,
        log_path: str | Path | None = None,
        bind: str = "127.0.0.1:0",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.store = Path(store)
        self.extra = extra
        self.log_path = (
            Path(log_path) if log_path else self.store.with_suffix(f".{time.monotonic_ns()}.log")
        )
        self.bind = bind
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""

    def start(self, timeout: float = 60.0) -> GatewayProcess:
        """Start the child and wait until it serves; ``RuntimeError`` with its log otherwise."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # PR_SET_PDEATHSIG fires when the *thread* that started the child ends: only from main
        death_signal = threading.current_thread() is threading.main_thread()
        cmd = [sys.executable, "-c", _CHILD, str(os.getpid()), "1" if death_signal else "0",
               "serve", "--address", self.bind, "--store", str(self.store), *self.extra]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, **self.env})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = _SERVING.search(self.log())
            if m:
                self.address = m.group(1)
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the gateway did not start; see {self.log_path}:\n{self.log()}")

    def log(self) -> str:
        """The child's output so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Send ``sig`` (graceful SIGTERM by default), SIGKILL after ``timeout``; the exit code."""
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

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
