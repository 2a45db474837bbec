"""Gateway under load: concurrent Predict clients, and Predict latency while Fits run.

Starts a real ``qpu-gateway serve`` process (neal, SQLite in a temporary directory), fits one
model (N=20 curves, 25 features), then:

1. ``--clients`` threads, each with its own channel, send ``--requests`` one-row Predicts each:
   errors, p50/p99 latency, throughput.
2. The same with two Fits (1000 reads each, back to back) running the whole time: Predict p99.

Client and server share the machine; on 2 cores the clients' Python overhead is part of what is
measured.

    .venv/bin/python benchmarks/load.py --clients 64 --requests 200
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from qpu_gateway.client import GatewayClient
from qpu_gateway.process import GatewayProcess


def storm(address: str, model: str, x: np.ndarray, clients: int, requests: int,
          ) -> tuple[np.ndarray, int, float]:
    """Latencies (s), error count and wall seconds of ``clients`` x ``requests`` Predicts."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    barrier = threading.Barrier(clients + 1)

    def worker(i: int) -> None:
        with GatewayClient(address, timeout=60) as client:
            client.predict(model, x)
            barrier.wait()
            for _ in range(requests):
                t0 = time.perf_counter()
                try:
                    client.predict(model, x)
                except Exception:
                    errors[i] += 1
                latencies[i].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return np.concatenate([np.asarray(v) for v in latencies]), sum(errors), time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--requests", type=int, default=200)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    xt, yt = rng.random((20, 25)), rng.random(20)
    with tempfile.TemporaryDirectory() as d, GatewayProcess(Path(d) / "m.sqlite") as gateway:
        address = gateway.address
        with GatewayClient(address, timeout=120) as admin:
            model = admin.fit(xt, yt, seed=0).model_id
            one = xt[:1]
            lat, errors, wall = storm(address, model, one, args.clients, args.requests)
            n = args.clients * args.requests
            print("| figure | value |\n|---|---|")
            print(f"| {args.clients} clients x {args.requests} one-row Predicts: errors "
                  f"| {errors} of {n} |")
            print(f"| Predict p50 / p99 | {np.percentile(lat, 50) * 1e3:.2f} ms / "
                  f"{np.percentile(lat, 99) * 1e3:.2f} ms |")
            print(f"| throughput | {n / wall:.0f} Predicts/s |")

            stop = threading.Event()
            fits = [0]

            def fitter() -> None:
                with GatewayClient(address, timeout=120) as c:
                    while not stop.is_set():
                        c.fit(xt, yt, num_reads=1000)
                        fits[0] += 1

            fitters = [threading.Thread(target=fitter) for _ in range(2)]
            for t in fitters:
                t.start()
            time.sleep(0.5)
            lat2, errors2, wall2 = storm(address, model, one, args.clients, args.requests)
            stop.set()
            for t in fitters:
                t.join()
            print(f"| same, while 2 Fits run (1000 reads each; {fits[0]} Fits done): errors | "
                  f"{errors2} of {n} |")
            print(f"| Predict p50 / p99 while Fits run | {np.percentile(lat2, 50) * 1e3:.2f} ms / "
                  f"{np.percentile(lat2, 99) * 1e3:.2f} ms |")
            print(f"| throughput while Fits run | {n / wall2:.0f} Predicts/s |")


if __name__ == "__main__":
    main()
