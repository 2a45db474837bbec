"""Gateway speed, as ratios measured in one run (machines are shared and noisy).

- QUBO build for N=20, K=3: vectorised (Kronecker products) vs a loop-based reference build.
- Fit for N=20 with 1000 reads on one core: the default sweeps vs dwave-samplers' default (1000).
- Predict of 1000 rows in-process; Predict of one row over gRPC on localhost (p50, p99);
  predictions per second over gRPC in batches of 1000 rows; Fit over gRPC end to end.

    .venv/bin/python benchmarks/gateway_speed.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from qpu_gateway.client import GatewayClient
from qpu_gateway.process import GatewayProcess
from qpu_gateway.qsvr import DEFAULT_NUM_SWEEPS, QSVR
from qpu_gateway.qubo import build_svr_qubo, precision_weights, rbf_kernel


def loop_qubo(kmat: np.ndarray, y: np.ndarray, k: int, base: float, k0: float, xi: float,
              eps: float) -> np.ndarray:
    """The QUBO built entry by entry with Python loops (the shape of a first implementation)."""
    n = len(y)
    p = precision_weights(k, base, k0)
    q = np.zeros((2 * k * n, 2 * k * n))
    for s in range(2):
        for t in range(2):
            sign = 1.0 if s == t else -1.0
            for i in range(n):
                for j in range(n):
                    for a in range(k):
                        for b in range(k):
                            q[k * (s * n + i) + a, k * (t * n + j) + b] += (
                                sign * p[a] * p[b] * (0.5 * kmat[i, j] + xi)
                            )
    for i in range(n):
        for a in range(k):
            q[k * i + a, k * i + a] += p[a] * (eps - y[i])
            q[k * (n + i) + a, k * (n + i) + a] += p[a] * (eps + y[i])
    return np.triu(q) + np.triu(q.T, 1)


def timeit(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grpc-calls", type=int, default=2000)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    x, y = rng.random((20, 25)), rng.random(20)
    kmat = rbf_kernel(x, x, 0.1)

    vec = timeit(lambda: build_svr_qubo(kmat, y), 200)
    loop = timeit(lambda: loop_qubo(kmat, y, 3, 0.5, 0.005, 0.01, 0.02), 5)
    np.testing.assert_allclose(build_svr_qubo(kmat, y), loop_qubo(kmat, y, 3, 0.5, 0.005, 0.01, 0.02),
                               atol=1e-12)
    print("| figure | value |\n|---|---|")
    print(f"| QUBO build N=20 K=3, vectorised | {vec * 1e3:.3f} ms |")
    print(f"| QUBO build N=20 K=3, loop reference | {loop * 1e3:.1f} ms |")
    print(f"| ratio loop / vectorised | {loop / vec:.0f}x |")

    fit_default = timeit(lambda: QSVR(random_state=1).fit(x, y), 3)
    fit_1000 = timeit(lambda: QSVR(num_sweeps=1000, random_state=1).fit(x, y), 3)
    print(f"| Fit N=20, 1000 reads, {DEFAULT_NUM_SWEEPS} sweeps (default), in-process "
          f"| {fit_default:.3f} s |")
    print(f"| Fit N=20, 1000 reads, 1000 sweeps (dwave-samplers default) | {fit_1000:.3f} s |")
    print(f"| ratio | {fit_1000 / fit_default:.1f}x |")

    model = QSVR(random_state=1).fit(x, y)
    rows = rng.random((1000, 25))
    pred = timeit(lambda: model.predict(rows, return_std=True), 200)
    print(f"| Predict 1000 rows in-process (mean and std) | {pred * 1e3:.3f} ms |")

    with tempfile.TemporaryDirectory() as tmp:
        gateway = GatewayProcess(Path(tmp) / "m.sqlite").start()
        try:
            address = gateway.address
            with GatewayClient(address) as client:
                client.wait_until_serving()
                t0 = time.perf_counter()
                info = client.fit(x, y, seed=1)
                fit_grpc = time.perf_counter() - t0
                one = rows[:1]
                for _ in range(50):
                    client.predict(info.model_id, one)
                lat = []
                for _ in range(args.grpc_calls):
                    t0 = time.perf_counter()
                    client.predict(info.model_id, one)
                    lat.append(time.perf_counter() - t0)
                batch = timeit(lambda: client.predict(info.model_id, rows), 50)
            lat_ms = np.array(lat) * 1e3
            print(f"| Fit N=20, 1000 reads over gRPC, end to end | {fit_grpc:.3f} s |")
            print(f"| Predict 1 row over gRPC, p50 | {np.percentile(lat_ms, 50):.3f} ms |")
            print(f"| Predict 1 row over gRPC, p99 | {np.percentile(lat_ms, 99):.3f} ms |")
            print(f"| Predict 1 row over gRPC, sequential calls/s | {len(lat) / lat_ms.sum() * 1e3:.0f} |")
            print(f"| Predict over gRPC in batches of 1000 rows, predictions/s | {1000 / batch:.0f} |")
        finally:
            gateway.stop()


if __name__ == "__main__":
    main()
