"""QSVR on ``gpu-sa``: Fit latency through the gateway, and R² with more training curves.

1. Fit latency end to end (client → gRPC → QUBO → anneal → ensemble → SQLite → reply) of a
   ``qpu-gateway serve`` child process with ``gpu-sa``, then with ``neal``, for N = 20 MLPF curves
   (first 25% as features), default parameters (1000 reads, 100 sweeps, K = 3): one warm-up
   Fit (it compiles the kernel), then ``--fits`` timed Fits.
2. The R² protocol of design.md §4 with N = 20, 50, 100 training curves per split: QSVR on
   ``gpu-sa``, on ``neal`` (``--neal-max`` bounds the sizes it is run on) and scikit-learn SVR on
   the same kernel and scaling (its time column includes its prediction of the test curves).

    .venv/bin/python benchmarks/gpu_sa_fit.py --sizes 20,50,100 --splits 10
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _data import load_mlpf, r2, split, svr_baseline

from qpu_gateway.backends.gpu_sa import TorchAnnealer
from qpu_gateway.backends.neal import create as create_neal
from qpu_gateway.client import GatewayClient
from qpu_gateway.process import GatewayProcess
from qpu_gateway.qsvr import QSVR


def fit_latency(backend: str, x: np.ndarray, y: np.ndarray, fits: int) -> list[float]:
    """Seconds of each timed Fit of (x, y) through a gateway child serving ``backend``."""
    with tempfile.TemporaryDirectory() as tmp:
        gateway = GatewayProcess(Path(tmp) / "models.sqlite", "--backend", backend).start()
        try:
            with GatewayClient(gateway.address, timeout=120) as client:
                client.fit(x, y, seed=0)
                seconds = []
                for seed in range(1, fits + 1):
                    t0 = time.perf_counter()
                    client.fit(x, y, seed=seed)
                    seconds.append(time.perf_counter() - t0)
        finally:
            gateway.stop()
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="20,50,100", help="training curves N per split")
    p.add_argument("--splits", type=int, default=10)
    p.add_argument("--fits", type=int, default=20, help="timed gateway Fits per backend (0: none)")
    p.add_argument("--neal-max", type=int, default=100, help="largest N fitted with neal")
    p.add_argument("--gamma", type=float, default=0.1)
    args = p.parse_args()
    x, y = load_mlpf()
    gpu = TorchAnnealer()
    print(f"gpu-sa device: {gpu.properties['device']}, kernel {gpu.properties['kernel']}\n")

    print("| backend | Fit N=20 p50 ms | p90 ms | min ms |\n|---|---|---|---|")
    for backend in ("gpu-sa", "neal") if args.fits else ():
        s = np.asarray(fit_latency(backend, x[:20], y[:20], args.fits)) * 1e3
        print(f"| {backend} | {np.median(s):.1f} | {np.percentile(s, 90):.1f} | {s.min():.1f} |",
              flush=True)

    print(f"\nR² over {args.splits} splits (train N curves, test on the rest), gamma={args.gamma}\n")
    print("| N | QUBO variables | model | mean R² | min | std | mean fit s |\n|---|---|---|---|---|---|---|")
    samplers = {"QSVR gpu-sa": gpu, "QSVR neal": create_neal({})}
    for n_train in (int(v) for v in args.sizes.split(",")):
        scores: dict[str, list[float]] = {}
        seconds: dict[str, list[float]] = {}
        for seed in range(args.splits):
            tr, te = split(len(y), seed, n_train=n_train)
            t0 = time.perf_counter()
            pred = svr_baseline(x[tr], y[tr], x[te], args.gamma)
            seconds.setdefault("sklearn SVR", []).append(time.perf_counter() - t0)
            scores.setdefault("sklearn SVR", []).append(r2(y[te], pred))
            for name, sampler in samplers.items():
                if name == "QSVR neal" and n_train > args.neal_max:
                    continue
                t0 = time.perf_counter()
                model = QSVR(gamma=args.gamma, sampler=sampler, random_state=seed).fit(x[tr], y[tr])
                seconds.setdefault(name, []).append(time.perf_counter() - t0)
                scores.setdefault(name, []).append(r2(y[te], model.predict(x[te])))
        for name, values in scores.items():
            v = np.asarray(values)
            print(f"| {n_train} | {6 * n_train} | {name} | {v.mean():.4f} | {v.min():.4f} | {v.std():.4f} "
                  f"| {np.mean(seconds[name]):.3f} |", flush=True)


if __name__ == "__main__":
    main()
