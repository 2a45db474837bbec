"""Backends side by side on the R² protocol (design brief §4): neal, mock-qpu, classical.

Each backend fits the same splits (20 training curves, first 25% of the curve -> final loss) with
the reference parameters and 1000 reads; prints R² and the backend's statistics.

    .venv/bin/python benchmarks/gateway_backends.py --splits 20
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from _data import load_mlpf, r2, split

from qpu_gateway.backends import BackendRegistry
from qpu_gateway.service import GatewayService
from qpu_gateway.store import ModelStore


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--splits", type=int, default=20)
    p.add_argument("--backends", default="neal,mock-qpu,classical")
    args = p.parse_args()
    x, y = load_mlpf()
    names = args.backends.split(",")
    with tempfile.TemporaryDirectory() as cache:
        registry = BackendRegistry({"mock-qpu": {"embedding_cache_dir": cache}})
        service = GatewayService(ModelStore(":memory:"), registry, chain=names[:1],
                                 allowed_backends=names)
        rows: dict[str, dict[str, list[float]]] = {n: {} for n in names}
        for seed in range(args.splits):
            tr, te = split(len(y), seed)
            for name in names:
                t0 = time.perf_counter()
                rec = service.fit(x[tr], y[tr], backend=name, seed=seed)
                seconds = time.perf_counter() - t0
                mean = service.predict(rec.model_id, x[te])[0]
                stats = rows[name]
                for key, value in (("r2", r2(y[te], mean)), ("fit_s", seconds),
                                   ("energy", rec.info["best_energy"]),
                                   ("cbf", rec.info["chain_break_fraction"]),
                                   ("chain", rec.info["max_chain_length"]),
                                   ("qubits", rec.info["qubits_used"])):
                    stats.setdefault(key, []).append(value)
    print(f"R² protocol, {args.splits} splits, reference parameters, 1000 reads\n")
    print("| backend | R² mean | R² min | R² std | best energy (mean) | Fit s (mean) "
          "| chain-break fraction | longest chain | qubits |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, s in rows.items():
        print(f"| {name} | {np.mean(s['r2']):.4f} | {np.min(s['r2']):.4f} | {np.std(s['r2']):.4f} "
              f"| {np.mean(s['energy']):.3f} | {np.mean(s['fit_s']):.3f} | {np.mean(s['cbf']):.3f} "
              f"| {int(np.max(s['chain']))} | {int(np.max(s['qubits']))} |")


if __name__ == "__main__":
    main()
