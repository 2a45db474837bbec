"""``GatewayProcess``: the gateway child never outlives the driver that started it, even when the
driver is killed with SIGKILL (as ``hpo-node run`` starts its gateway)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

# A user's driver: starts a gateway (from the main thread, or from another thread, where only the
# parent watch applies), prints the child's pid, and waits to be killed.
DRIVER = '''
import sys, threading, time
from qpu_gateway.process import GatewayProcess

gw = GatewayProcess(sys.argv[1])
if sys.argv[2] == "thread":
    t = threading.Thread(target=gw.start)
    t.start()
    t.join()
else:
    gw.start()
print(gw.proc.pid, gw.address, flush=True)
time.sleep(600)
'''


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("started_from", ["main", "thread"])
def test_gateway_process_child_stops_when_its_driver_is_killed(
    tmp_path: Path, started_from: str
) -> None:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    driver = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "models.sqlite"), started_from],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert driver.stdout is not None
        line = driver.stdout.readline().split()
        child = int(line[0])
        assert _alive(child)
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
        deadline = time.monotonic() + 20
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), f"the gateway (pid {child}) outlived its killed driver"
        log = next(tmp_path.glob("models.*.log")).read_text()
        assert "serving on" in log
    finally:
        driver.kill()
        if "child" in locals() and _alive(child):
            os.kill(child, signal.SIGKILL)
