"""The SLURM batch script run for real on one node: only ``srun``/``scontrol`` are stand-ins.

There is no SLURM here. ``srun`` is replaced by a script that runs the step locally (dropping its
options) and ``scontrol show hostnames`` by one that prints this host; everything else is real: the
gateway, ``ray start --head --block``, the health-check waits, the study through ``hpo-node run``,
and the cleanup, after which none of the processes the script started is left.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SBATCH = REPO / "deploy" / "slurm" / "hpo_study.sbatch"
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow

SRUN = """#!/usr/bin/env bash
# stand-in for srun on a one-node allocation: run the step here
while [ $# -gt 0 ]; do
  case "$1" in
    -w) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
exec "$@"
"""

SCONTROL = """#!/usr/bin/env bash
# stand-in for `scontrol show hostnames`: a one-node allocation, this host
[ "$1 $2" = "show hostnames" ] && hostname && exit 0
exit 1
"""

RUN_MAIN = """#!/usr/bin/env bash
# hpo-node with the `run` subcommand through hpo_node.study.run_main
[ "$1" = run ] && shift
exec {py} -c 'import sys; from hpo_node.study import run_main; sys.exit(run_main(sys.argv[1:]))' "$@"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def _pids_with(marker: str) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True)
    return [int(line.split(None, 1)[0]) for line in out.stdout.splitlines() if marker in line]


def test_deploy_slurm_script_runs_a_study_on_one_node(tmp_path: Path) -> None:
    shims = tmp_path / "bin"
    venv = tmp_path / "venv" / "bin"
    shims.mkdir()
    venv.mkdir(parents=True)
    _exe(shims / "srun", SRUN)
    _exe(shims / "scontrol", SCONTROL)
    _exe(venv / "python", f'#!/usr/bin/env bash\nexec {sys.executable} "$@"\n')
    (venv / "ray").symlink_to(VENV_BIN / "ray")
    wired = subprocess.run([str(VENV_BIN / "hpo-node"), "run", "--help"], capture_output=True,
                           check=False).returncode == 0
    if wired:
        (venv / "hpo-node").symlink_to(VENV_BIN / "hpo-node")
    else:
        _exe(venv / "hpo-node", RUN_MAIN.format(py=sys.executable))
    config = tmp_path / "study.toml"
    config.write_text(
        '[study]\nname = "slurm"\n'
        f'output_dir = "{tmp_path / "results"}"\nseed = 0\ntrials = 9\n'
        '[algorithm]\nname = "swift-asha"\nmax_resource = 9\neta = 3\nparams = { d = 3 }\n'
        "[predictor]\nparams = { num_reads = 100 }\n"
        '[trainable]\nmodel = "mlp"\n'
        '[space]\nlr = { type = "loguniform", low = 1e-4, high = 3e-2 }\n'
    )
    ray_port, gateway_port = _free_port(), _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
        "PATH": f"{shims}:{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "node1",
        "SLURM_JOB_ID": "4242",
        "SLURM_CPUS_PER_TASK": "2",
        "QHPO_REPO": str(tmp_path),
        "QHPO_VENV": str(venv.parent),
        "QHPO_RAY_PORT": str(ray_port),
        "QHPO_GATEWAY_PORT": str(gateway_port),
        "QHPO_WAIT_TIMEOUT": "120",
    }
    run = subprocess.run(["bash", str(SBATCH), str(config)], env=env, capture_output=True,
                         text=True, timeout=400, check=False)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log
    assert "ray head: healthy" in log and "ray cluster (1 node(s)): healthy" in log
    assert re.search(rf"qpu-gateway on \S+:{gateway_port}: healthy", log)
    assert "study finished" in log and "cleaning up (exit status 0)" in log
    summary = json.loads((tmp_path / "results" / "slurm" / "summary.json").read_text())
    assert summary["epochs_used"] == 21  # ASHA over 9 configurations, R = 9, eta = 3
    assert summary["gateway"].endswith(f":{gateway_port}")
    run_dir = tmp_path / "results" / "slurm-4242"
    assert "serving on" in (run_dir / "gateway.log").read_text()
    assert not _pids_with(f"--port={ray_port}")
    assert not _pids_with(f"0.0.0.0:{gateway_port}")
    current = Path("/tmp/ray/ray_current_cluster")
    assert not (current.exists() and current.read_text().strip().endswith(f":{ray_port}"))
