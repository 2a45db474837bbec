"""The SLURM batch script under a real Slurm: ``sbatch deploy/slurm/hpo_study.sbatch`` end to end.

The test starts its own one-host cluster from a config in a temporary directory: ``munged`` with a
fresh key, ``slurmctld`` and one ``slurmd`` per node (Debian's build has ``MULTIPLE_SLURMD``, so two
nodes share this host, each with its own port and spool directory). The job is a tiny Swift-ASHA
study of a user's own trainable (``tests/multinode_user``, copied to a fresh folder): the script
starts the gateway and the Ray head on the first node and a Ray worker on the second with
``srun``, waits on their health checks, runs ``hpo-node run`` (which ships the user's folder to
both nodes) and stops its steps. The daemons are stopped by their PIDs at the end.

It skips, saying why, where Slurm or munge is not installed (``.ci/run`` installs Debian's
``slurm-wlm`` and ``munge``) or the test is not root (``slurmd`` starts job steps as their user).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SBATCH = REPO / "deploy" / "slurm" / "hpo_study.sbatch"
# a user's folder: its own trainable and the study TOML naming it (shared with the multi-node test)
USER = REPO / "tests" / "multinode_user"
VENV = Path(sys.executable).parent.parent
TOOLS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol",
         "sinfo", "srun")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

SLURM_CONF = """\
ClusterName=qhpotest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge.socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd-%n.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
{nodes}
PartitionName=test Nodes={names} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""



@dataclass
class Cluster:
    """A running one-host Slurm cluster: its config, its nodes, the daemons' environment."""

    root: Path
    nodes: list[str]
    env: dict[str, str]

    def run(self, *args: str) -> str:
        return subprocess.run(args, env=self.env, capture_output=True, text=True, check=True,
                              timeout=30).stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pids_with(marker: str) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True)
    return [int(line.split(None, 1)[0]) for line in out.stdout.splitlines() if marker in line]


def _skip_reason() -> str | None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return (f"Slurm/munge not installed (missing {', '.join(missing)}): install Debian's "
                "slurm-wlm and munge (`apt-get install slurm-wlm munge`, as .ci/run does)")
    if os.geteuid() != 0:
        return (f"slurmd must run as root to start job steps as their user; this test runs as "
                f"uid {os.geteuid()}")
    return None


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_for(what: str, check: object, timeout: float, procs: list[subprocess.Popen[bytes]],
              logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        dead = [p.args for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            tails = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in logs if p.exists())
            raise RuntimeError(f"{what}: {'exited: ' + str(dead) if dead else 'timed out'}\n{tails}")
        time.sleep(0.5)


@pytest.fixture
def slurm() -> Iterator[Cluster]:
    """munged + slurmctld + one slurmd per node (two where the build allows), all on this host."""
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    # Short: munge's and slurmd's UNIX sockets live here (108-byte path limit).
    root = Path(tempfile.mkdtemp(prefix="qhpo-slurm-", dir="/tmp"))
    for sub in ("state", "spool/n1", "spool/n2"):
        (root / sub).mkdir(parents=True)
    host = socket.gethostname().split(".")[0]
    names = ["n1", "n2"]
    nodes = "\n".join(
        f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={_free_port()} CPUs=2 "
        "State=UNKNOWN" for n in names
    )
    (root / "slurm.conf").write_text(SLURM_CONF.format(
        host=host, ctld_port=_free_port(), root=root, nodes=nodes, names=",".join(names)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "RAY_"))}
    env["SLURM_CONF"] = str(root / "slurm.conf")
    key = root / "munge.key"
    subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True)
    key.chmod(0o600)
    procs: list[subprocess.Popen[bytes]] = []
    cluster = Cluster(root, names, env)
    logs = [root / "munged.log", root / "slurmctld.log", *(root / f"slurmd-{n}.log" for n in names)]
    try:
        procs.append(subprocess.Popen(
            ["munged", "--foreground", "--force", f"--key-file={key}",
             f"--socket={root / 'munge.socket'}", f"--pid-file={root / 'munged.pid'}",
             f"--log-file={root / 'munged.log'}", f"--seed-file={root / 'munged.seed'}"],
            env=env))
        _wait_for("munged", (root / "munge.socket").exists, 30, procs, logs)
        procs.append(subprocess.Popen(["slurmctld", "-D"], env=env))

        def config() -> str | None:
            try:
                return cluster.run("scontrol", "show", "config")
            except subprocess.CalledProcessError:
                return None

        _wait_for("slurmctld", lambda: config() is not None, 60, procs, logs)
        multiple = re.search(r"MULTIPLE_SLURMD\s*=\s*Yes", config() or "") is not None
        cluster.nodes = names if multiple else names[:1]
        for n in cluster.nodes:
            procs.append(subprocess.Popen(["slurmd", "-D", "-N", n], env=env))

        def idle() -> bool:
            states = cluster.run("sinfo", "--noheader", "--Node", "--format=%N %t").split()
            return all(f"{n} idle" in " ".join(states) for n in cluster.nodes)

        _wait_for("slurmd", idle, 60, procs, logs)
        yield cluster
    finally:
        subprocess.run(["scancel", "--quiet", "--user=root"], env=env, check=False,
                       capture_output=True)
        deadline = time.monotonic() + 60
        while procs and time.monotonic() < deadline and subprocess.run(
            ["squeue", "--noheader"], env=env, capture_output=True, text=True, check=False
        ).stdout.strip():
            time.sleep(1)
        _stop(procs[:0:-1])  # the slurmds, slurmctld
        _stop(procs[:1])  # munged
        shutil.rmtree(root, ignore_errors=True)


def test_deploy_slurm_sbatch_runs_a_study_across_nodes(slurm: Cluster, tmp_path: Path) -> None:
    work = tmp_path / "repo"
    shutil.copytree(USER, work)
    ray_port, gateway_port = _free_port(), _free_port()
    env = {
        **slurm.env,  # as deploy/README.md says for a user's own folder: the submit directory
        "QHPO_VENV": str(VENV),
        "QHPO_RAY_PORT": str(ray_port),
        "QHPO_GATEWAY_PORT": str(gateway_port),
        "QHPO_WAIT_TIMEOUT": "180",
    }
    n = len(slurm.nodes)
    run = subprocess.run(
        ["sbatch", "--wait", f"--nodes={n}", "--cpus-per-task=1", str(SBATCH), "study.toml",
         "--set", "study.name=slurm"],
        cwd=work, env=env, capture_output=True, text=True, timeout=420, check=False,
    )
    job = re.search(r"Submitted batch job (\d+)", run.stdout)
    assert job, run.stdout + run.stderr
    job_id = job.group(1)
    out = (work / f"qhpo-study-{job_id}.out").read_text()
    run_dir = work / "results" / f"slurm-{job_id}"
    step_logs = {p.name: p.read_text() for p in sorted(run_dir.glob("*.log"))}
    context = out + "".join(f"\n--- {k}\n{v[-3000:]}" for k, v in step_logs.items())
    assert run.returncode == 0, context
    state = slurm.run("scontrol", "show", "job", job_id)
    assert "JobState=COMPLETED" in state and "ExitCode=0:0" in state, state
    assert f"allocation: {n} node(s) ({' '.join(slurm.nodes)})" in out, context
    assert "ray head: healthy" in out and f"ray cluster ({n} node(s)): healthy" in out, context
    assert re.search(rf"qpu-gateway on \S+:{gateway_port}: healthy", out), context
    assert "study finished" in out and "cleaning up (exit status 0)" in out, context
    assert "stopped" in out.splitlines()[-1], context
    assert "runtime_env working_dir" in out, context  # the user's folder shipped to the nodes
    summary = json.loads((work / "results" / "slurm" / "summary.json").read_text())
    # Which node each trial ran on is tests/test_deploy_multinode.py's check: here, on a loaded
    # machine, the short study can end before the second node's worker has set up the shipped
    # folder.
    assert summary["trials"] == 9 and summary["gateway"].endswith(f":{gateway_port}")
    assert "serving on" in step_logs["gateway.log"]
    expected = {"gateway.log", "ray-head.log"} | ({"ray-workers.log"} if n > 1 else set())
    assert set(step_logs) == expected
    # every step stopped on the SIGTERM the script sent it, none had to be killed
    for name, text in step_logs.items():
        assert "Killed" not in text and "forcing job termination" not in text, (name, text)
    assert not _pids_with(f"--port={ray_port}")
    assert not _pids_with(f"0.0.0.0:{gateway_port}")
    current = Path("/tmp/ray/ray_current_cluster")
    assert not (current.exists() and current.read_text().strip().endswith(f":{ray_port}"))
