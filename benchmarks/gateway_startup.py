"""Start-up time of ``qpu-gateway serve``: seconds from starting the command to a health check
answering SERVING (embedded defaults: neal backend, a fresh SQLite store, a free port).

Each run starts the command as a child and polls ``grpc.health.v1.Health/Check`` every 10 ms on a
fresh channel with a local subchannel pool and 10 ms reconnect backoff (one long-lived channel
would only see SERVING at its next reconnect: 1 s, 2.6 s, 5.2 s ... after the first refusal).
``log s`` is when the server logged ``serving on`` (its clock, 1 ms resolution).

- ``--compare DIR``: runs alternate with the ``qpu_gateway`` package in DIR (put first on
  ``PYTHONPATH``), e.g. the parent commit's: ``git archive HEAD~1 qpu_gateway | tar -x -C DIR``.
- ``--probe``: also start ``qpu-gateway health --wait 60`` with the server, as a deployment
  script would, and time its exit (it polls on one channel, so it sees the reconnect backoff);
  ``--probe-lead S`` starts it S seconds before the server (a script waiting for a restart).
- ``--first-fit``: after SERVING, time a first and a second small Fit and a Predict (a warm
  server answers the first as fast as the second).
- ``--imports``: import time per package, ``-X importtime`` summed over each package's modules,
  of the server process and of the sampling workers' forkserver (``execution._PRELOAD``).

    .venv/bin/python benchmarks/gateway_startup.py --runs 7 --compare /tmp/before --imports
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qpu_gateway.client import GatewayClient
from qpu_gateway.execution import _PRELOAD

HERE = "this checkout"
SERVER_IMPORTS = (
    "import qpu_gateway.cli, qpu_gateway.config, qpu_gateway.execution, qpu_gateway.server, "
    "qpu_gateway.backends.neal"
)
_LOGGED = re.compile(r"^(\S+ \S+) INFO qpu_gateway .*serving on", re.MULTILINE)
MEASURES = {
    "serving": "start -> health SERVING",
    "log": "start -> 'serving on' logged",
    "probe": "start -> `health --wait` exits 0",
    "probe_late": "SERVING -> `health --wait` exits 0",
    "fit1": "first Fit after SERVING",
    "fit2": "second Fit",
    "predict": "Predict of 20 rows",
}
_POLL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 10),
    ("grpc.min_reconnect_backoff_ms", 10),
    ("grpc.max_reconnect_backoff_ms", 10),
]


def free_port() -> int:
    """A port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command() -> list[str]:
    """``qpu-gateway`` as installed next to this interpreter, else ``python -m qpu_gateway``."""
    script = Path(sys.executable).with_name("qpu-gateway")
    return [str(script)] if script.exists() else [sys.executable, "-m", "qpu_gateway"]


def environment(source: str | None) -> dict[str, str]:
    """This environment, with ``source`` (a folder holding ``qpu_gateway``) first on the path."""
    env = dict(os.environ)
    env.pop("QPU_GATEWAY_TOKENS", None)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    return env


def serving(address: str) -> bool:
    """One health check on a fresh channel: True when it answers SERVING."""
    with grpc.insecure_channel(address, options=_POLL_OPTIONS) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=0.5
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def first_fits(address: str) -> tuple[float, float, float]:
    """Seconds of a first Fit, a second Fit and a Predict (20 rows, 3 features, 100 reads)."""
    rng = np.random.default_rng(0)
    x = rng.random((20, 3))
    y = x.sum(axis=1)
    out = []
    with GatewayClient(address, timeout=120) as client:
        for i in range(2):
            t0 = time.perf_counter()
            info = client.fit(x, y, model_id=f"m{i}", seed=i, num_reads=100, k=1)
            out.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        client.predict(info.model_id, x)
        out.append(time.perf_counter() - t0)
    return out[0], out[1], out[2]


def one_run(
    source: str | None, probe: bool, fit: bool, probe_lead: float = 0.0
) -> dict[str, float]:
    """Start the server, wait for SERVING, optionally Fit, stop it; the timings in seconds."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = environment(source)
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "serve.log"
        waiter = (
            subprocess.Popen([*command(), "health", "--gateway", address, "--wait", "60"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            if probe else None
        )
        time.sleep(probe_lead if probe else 0.0)
        with open(log_path, "wb") as log:
            wall0 = time.time()
            t0 = time.perf_counter()
            server = subprocess.Popen(
                [*command(), "serve", "--address", address, "--store", f"{tmp}/m.sqlite"],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        result: dict[str, float] = {}
        try:
            while not serving(address):
                if server.poll() is not None:
                    raise RuntimeError(f"the server exited:\n{log_path.read_text()}")
                if time.perf_counter() - t0 > 120:
                    raise RuntimeError(f"not SERVING after 120 s:\n{log_path.read_text()}")
                time.sleep(0.01)
            result["serving"] = time.perf_counter() - t0
            if waiter is not None:
                waiter.wait(90)
                result["probe"] = time.perf_counter() - t0
                result["probe_late"] = result["probe"] - result["serving"]
                if waiter.returncode != 0:
                    raise RuntimeError(f"qpu-gateway health --wait exited {waiter.returncode}")
            m = _LOGGED.search(log_path.read_text())
            if m:
                logged = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                result["log"] = logged - wall0
            if fit:
                result["fit1"], result["fit2"], result["predict"] = first_fits(address)
        finally:
            if waiter is not None and waiter.poll() is None:
                waiter.kill()
            server.send_signal(signal.SIGTERM)
            code = server.wait(60)
        if code != 0:
            raise RuntimeError(f"the server exited {code} on SIGTERM:\n{log_path.read_text()}")
    return result


def import_times(code: str, source: str | None) -> tuple[float, dict[str, float]]:
    """Total and per-top-level-package seconds of ``-X importtime`` (self times summed)."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=environment(source),
                         capture_output=True, text=True, check=True).stderr
    per: dict[str, float] = defaultdict(float)
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[0].startswith("import time:") or "self" in parts[0]:
            continue
        names = parts[2].strip().split(".")
        key = ".".join(names[:2] if names[0] in ("dwave", "google", "qpu_gateway") else names[:1])
        per[key] += int(parts[0].split(":")[1]) / 1e6
    return sum(per.values()), dict(per)


def print_imports(sources: dict[str, str | None], top: int = 10) -> None:
    """Import-time table of the server process and of the forkserver, per source."""
    preload = "import " + ", ".join(_PRELOAD)
    for what, code in (("server process", SERVER_IMPORTS), ("forkserver preload", preload)):
        for label, source in sources.items():
            total, per = import_times(code, source)
            best = sorted(per.items(), key=lambda kv: -kv[1])[:top]
            print(f"\nimports of the {what} ({label}): {total:.3f} s in all; by package:")
            print("  " + ", ".join(f"{name} {sec:.3f}" for name, sec in best))


def summary(label: str, key: str, runs: list[dict[str, float]]) -> str:
    """A table row: median, min and max seconds of ``key`` over ``runs`` ('' when none has it)."""
    values = [r[key] for r in runs if key in r]
    if not values:
        return ""
    return (f"| {label} | {MEASURES[key]} | {len(values)} | {statistics.median(values):.3f} | "
            f"{min(values):.3f} | {max(values):.3f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=7, help="start-ups per source")
    p.add_argument("--compare", help="a folder with another qpu_gateway package; runs alternate")
    p.add_argument("--probe", action="store_true", help="also time qpu-gateway health --wait")
    p.add_argument("--probe-lead", type=float, default=0.0,
                   help="with --probe: start the probe this many seconds before the server")
    p.add_argument("--first-fit", action="store_true", help="time a first Fit after SERVING")
    p.add_argument("--imports", action="store_true", help="print the import-time breakdown")
    args = p.parse_args()
    if args.runs < 1:
        raise ValueError(f"--runs must be >= 1, got {args.runs}")
    if not args.probe_lead >= 0:
        raise ValueError(f"--probe-lead must be >= 0 seconds, got {args.probe_lead}")
    sources: dict[str, str | None] = {HERE: None}
    if args.compare:
        if not (Path(args.compare) / "qpu_gateway" / "__init__.py").exists():
            raise ValueError(f"--compare must be a folder holding qpu_gateway/, got {args.compare!r}")
        sources[f"compare ({args.compare})"] = str(Path(args.compare).resolve())
    print(f"command: {' '.join(command())} serve; cpu cores: {os.cpu_count()}; "
          f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in sources}
    one_run(None, False, False)  # warm the file cache; not counted
    for i in range(args.runs):
        for label, source in sources.items():
            r = one_run(source, args.probe, args.first_fit, args.probe_lead)
            runs[label].append(r)
            print(f"run {i + 1} {label}: " + " ".join(f"{k}={v:.3f}" for k, v in r.items()),
                  flush=True)
    print("\n| code | seconds | runs | median | min | max |\n|---|---|---|---|---|---|")
    for label in sources:
        for key in MEASURES:
            line = summary(label, key, runs[label])
            if line:
                print(line)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.imports:
        print_imports(sources)


if __name__ == "__main__":
    main()
