"""The gateway's execution model under load: latency while big Fits run, throughput against the
number of sampling workers, and how fast a stopped Fit releases the CPU.

Each part starts real ``qpu-gateway serve`` processes (neal, SQLite in a temporary directory):

1. ``latency``: Predict (10 rows, 100-row model) and health p50/p99, measured in turn for
   ``--seconds`` from the moment 0, 1 or 2 big Fits (1000 rows at k = 1, default reads and
   sweeps: the QUBO build, then minutes of sampling; stopped by their deadline) are sent.
2. ``throughput``: N = 20 reference Fits (20 rows, 25 features, 1000 reads) sent at once, with
   one client sending Predicts meanwhile: Fits/s and Predicts/s for each number of workers.
3. ``stop``: a Fit stuck in one long read, stopped by its deadline and by a client cancel, and
   a cancelled Fit of some seconds: seconds until no thread of the server's process tree (server,
   forkserver, workers) is runnable, and the versions stored (0 expected).

``--pythonpath DIR`` runs the server from another checkout (e.g. a ``git worktree`` of the code
before the change) for a before/after comparison in one run; such a server gets no
``sampling_workers`` key. The machine is shared: every figure is printed with the 1-minute load
average at the time.

    nice -n 10 .venv/bin/python benchmarks/gateway_load.py latency throughput stop
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path

import grpc
import numpy as np

from qpu_gateway.client import GatewayClient
from qpu_gateway.process import GatewayProcess
from qpu_gateway.v1 import gateway_pb2 as pb
from qpu_gateway.v1 import gateway_pb2_grpc as pb_grpc


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def fit_request(rows: int, cols: int, params: dict, model_id: str = "", seed: int = 0) -> pb.FitRequest:
    x = np.random.default_rng(seed).random((rows, cols))
    return pb.FitRequest(model_id=model_id, x=pb.Matrix(rows=rows, cols=cols, values=x.ravel().tolist()),
                         y=x.sum(axis=1).tolist(), params=pb.QSVRParams(**params), seed=seed)


class CheckoutGatewayProcess(GatewayProcess):
    """``python -m qpu_gateway serve`` of whatever checkout ``PYTHONPATH`` names (one whose
    ``qpu_gateway.process`` may predate this one's child entry point)."""

    def start(self, timeout: float = 60.0) -> GatewayProcess:
        cmd = [sys.executable, "-m", "qpu_gateway", "serve", "--address", self.bind,
               "--store", str(self.store), *self.extra]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, **self.env})
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.proc.poll() is None:
            m = re.search(r"serving on (\S+:\d+)", self.log())
            if m:
                self.address = m.group(1)
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the gateway did not start:\n{self.log()}")


@contextmanager
def gateway(workers: int | None, concurrent: int, pythonpath: str | None) -> Iterator[GatewayProcess]:
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "g.toml"
        text = (f"[server]\nmax_concurrent_fits = {concurrent}\nmax_queued_fits = 32\n"
                "max_num_sweeps = 100000000\nmax_num_reads = 1000000\ngrace_seconds = 1.0\n")
        if workers is not None:
            text += f"sampling_workers = {workers}\n"
        cfg.write_text(text)
        # PYTHONSAFEPATH: the child must not import this checkout from its working directory.
        env = {"PYTHONPATH": pythonpath, "PYTHONSAFEPATH": "1"} if pythonpath else {}
        kind = CheckoutGatewayProcess if pythonpath else GatewayProcess
        proc = kind(Path(d) / "m.sqlite", "--config", str(cfg), env=env).start(timeout=300)
        try:
            yield proc
        finally:
            proc.stop()


def timed(calls: list[Callable[[], object]], seconds: float) -> list[np.ndarray]:
    """Latencies of each of ``calls``, called in turn for ``seconds``."""
    out: list[list[float]] = [[] for _ in calls]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for call, lat in zip(calls, out, strict=True):
            t0 = time.perf_counter()
            call()
            lat.append(time.perf_counter() - t0)
        time.sleep(0.01)
    return [np.asarray(v) for v in out]


def ms(a: np.ndarray, q: float) -> str:
    return f"{np.percentile(a, q) * 1e3:.1f}"


def part_latency(args: argparse.Namespace) -> None:
    print("\n### Predict and health latency while big Fits run\n")
    print("| server | big Fits running | Predict p50 / p99 ms | health p50 / p99 ms | max ms | "
          "load avg |\n|---|---|---|---|---|---|")
    for label, path, workers in servers(args, 2):
        with gateway(workers, 2, path) as gw, grpc.insecure_channel(gw.address) as ch:
            stub = pb_grpc.GatewayStub(ch)
            model = stub.Fit(fit_request(100, 10, {"num_reads": 100}), timeout=300).model.model_id
            rows = pb.Matrix(rows=10, cols=10, values=np.random.default_rng(1).random(100).tolist())
            with GatewayClient(gw.address, timeout=120) as client:
                for n in (0, 1, 2):
                    big = [stub.Fit.future(fit_request(1000, 10, {"k": 1}, seed=i),
                                           timeout=args.seconds + 5) for i in range(n)]
                    time.sleep(0.2 if n else 0.0)
                    request = pb.PredictRequest(model_id=model, x=rows)
                    pred, health = timed([partial(stub.Predict, request, timeout=120),
                                          client.health], args.seconds)
                    running = sum(not f.done() for f in big)
                    print(f"| {label} | {n} ({running} still sampling at the end) | {ms(pred, 50)} / "
                          f"{ms(pred, 99)} | {ms(health, 50)} / {ms(health, 99)} | "
                          f"{max(pred.max(), health.max()) * 1e3:.0f} | {load()} |", flush=True)
                    for f in big:
                        with suppress(grpc.RpcError):
                            f.result()


def part_throughput(args: argparse.Namespace) -> None:
    print("\n### Fits/s and Predicts/s against sampling workers (N = 20 reference Fits)\n")
    print("| sampling workers | 20 Fits wall s | Fits/s | Predicts/s meanwhile | Predict p99 ms | "
          "load avg |\n|---|---|---|---|---|---|")
    for workers in args.workers:
        with gateway(workers, workers, None) as gw, grpc.insecure_channel(gw.address) as ch:
            stub = pb_grpc.GatewayStub(ch)
            model = stub.Fit(fit_request(20, 25, {"num_reads": 10}), timeout=300).model.model_id
            row = pb.Matrix(rows=1, cols=25, values=[0.5] * 25)
            stop = threading.Event()
            lat: list[float] = []
            reader = threading.Thread(target=predict_loop, args=(
                stub, pb.PredictRequest(model_id=model, x=row), stop, lat))
            reader.start()
            t0 = time.perf_counter()
            futures = [stub.Fit.future(fit_request(20, 25, {"num_reads": 1000}, seed=i), timeout=600)
                       for i in range(20)]
            for f in futures:
                f.result()
            wall = time.perf_counter() - t0
            stop.set()
            reader.join()
            print(f"| {workers} | {wall:.2f} | {20 / wall:.2f} | {len(lat) / wall:.0f} | "
                  f"{np.percentile(lat, 99) * 1e3:.1f} | {load()} |", flush=True)


def predict_loop(stub: pb_grpc.GatewayStub, request: pb.PredictRequest, stop: threading.Event,
                 lat: list[float]) -> None:
    """Send ``request`` until ``stop``; append each latency to ``lat``."""
    while not stop.is_set():
        t0 = time.perf_counter()
        stub.Predict(request, timeout=120)
        lat.append(time.perf_counter() - t0)


def tree(root: int) -> list[int]:
    """``root`` and its live descendants (the server, its forkserver and workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [root], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def running_threads(root: int) -> int:
    """Threads of the tree that are running or runnable (state R): a busy sampler counts even
    while other engineers' processes hold the cores."""
    n = 0
    for pid in tree(root):
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                state = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            n += state == "R"
    return n


def seconds_until_idle(root: int, since: float, limit: float = 120.0) -> float:
    """Seconds from ``since`` until no thread of the tree is runnable in 10 samples over 0.25 s."""
    while time.monotonic() - since < limit:
        t0 = time.monotonic()
        busy = False
        for _ in range(10):
            busy = busy or running_threads(root) > 0
            time.sleep(0.025)
        if not busy:
            return t0 - since
    return float("inf")


def part_stop(args: argparse.Namespace) -> None:
    print("\n### After a deadline or a cancel: CPU idle again, versions stored\n")
    print("| server | stopped by | s until CPU idle | versions stored | load avg |\n|---|---|---|---|---|")
    stuck = fit_request(200, 3, {"k": 1, "num_reads": 1, "num_sweeps": 10_000_000}, "stopped")
    # Seconds of many short reads: before, a cancelled one ran to its end and stored.
    finishing = fit_request(10, 3, {"k": 1, "num_reads": 150_000, "num_sweeps": 100}, "stopped")
    cases = (("deadline", stuck), ("cancel", stuck), ("cancel (finite Fit)", finishing))
    for label, path, workers in servers(args, 1):
        for how, request in cases:
            with gateway(workers, 1, path) as gw, grpc.insecure_channel(gw.address) as ch:
                stub = pb_grpc.GatewayStub(ch)
                pid = gw.proc.pid if gw.proc is not None else 0
                call = stub.Fit.future(request, timeout=2.0 if how == "deadline" else 600)
                time.sleep(2.0)
                if how != "deadline" and not call.cancel():
                    how += " (it had finished)"
                since = time.monotonic()
                idle = seconds_until_idle(pid, since, args.idle_limit)
                time.sleep(1.0 if request is stuck else 10.0)
                versions = len(stub.ListModels(pb.ListModelsRequest(model_id="stopped"),
                                               timeout=60).models)
                shown = f"{idle:.2f}" if np.isfinite(idle) else f"> {args.idle_limit:.0f}"
                print(f"| {label} | {how} | {shown} | {versions} | {load()} |", flush=True)


def servers(args: argparse.Namespace, workers: int) -> list[tuple[str, str | None, int | None]]:
    out: list[tuple[str, str | None, int | None]] = [("this checkout", None, workers)]
    if args.pythonpath:
        out.insert(0, (f"before ({args.pythonpath})", args.pythonpath, None))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("parts", nargs="*", default=["latency", "throughput", "stop"],
                   choices=["latency", "throughput", "stop"])
    p.add_argument("--seconds", type=float, default=10.0, help="measurement window per row")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--pythonpath", help="run the 'before' server from this checkout")
    p.add_argument("--idle-limit", type=float, default=60.0)
    args = p.parse_args()
    for part in args.parts:
        {"latency": part_latency, "throughput": part_throughput, "stop": part_stop}[part](args)


if __name__ == "__main__":
    main()
