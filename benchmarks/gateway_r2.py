"""R² protocol (design brief §4) for QSVR on simulated annealing, side by side with sklearn SVR.

On ../shared/data/mlpf_delphes_curves.csv: per split, 20 random training curves, features = first
25% of the curve, target = final loss, R² on every other curve. Each QSVR fit keeps the 16 lowest
distinct solutions so that ensembles of the best 1, 2, 4, 8, 16 members and every combination
method are scored on the same fit.

    .venv/bin/python benchmarks/gateway_r2.py --splits 50 --sweeps 100,200,1000 --gammas 0.1,0.03
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _data import load_mlpf, r2, split, svr_baseline

from qpu_gateway.ensemble import ENSEMBLE_METHODS, member_weights
from qpu_gateway.qsvr import QSVR

SIZES = (1, 2, 4, 8, 16)


def _summary(values: list[float]) -> str:
    v = np.asarray(values)
    return (
        f"{v.mean():.4f} | {np.percentile(v, 5):.4f} | {v.min():.4f} | {v.std():.4f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--splits", type=int, default=50)
    p.add_argument("--sweeps", default="100,200,1000")
    p.add_argument("--gammas", default="0.1,0.03")
    p.add_argument("--reads", type=int, default=1000)
    args = p.parse_args()
    x, y = load_mlpf()
    sweeps = [int(s) for s in args.sweeps.split(",")]
    gammas = [float(g) for g in args.gammas.split(",")]

    rows: dict[str, list[float]] = {}
    fit_seconds: dict[str, list[float]] = {}
    for seed in range(args.splits):
        tr, te = split(len(y), seed)
        for gamma in gammas:
            pred = svr_baseline(x[tr], y[tr], x[te], gamma)
            rows.setdefault(f"sklearn SVR, gamma={gamma}", []).append(r2(y[te], pred))
            for sw in sweeps:
                t0 = time.perf_counter()
                model = QSVR(gamma=gamma, num_reads=args.reads, num_sweeps=sw, top_k=16,
                             random_state=seed).fit(x[tr], y[tr])
                fit_seconds.setdefault(f"gamma={gamma}, sweeps={sw}", []).append(
                    time.perf_counter() - t0
                )
                members = model.predict_members(x[te])
                for size in SIZES:
                    m = min(size, members.shape[0])
                    for method in ENSEMBLE_METHODS:
                        if size == 1 and method != "mean":
                            continue
                        w = member_weights(method, model.member_energies_[:m],
                                           model.member_train_mse_[:m])
                        key = f"QSVR gamma={gamma}, sweeps={sw}, top_k={size}, {method}"
                        rows.setdefault(key, []).append(r2(y[te], w @ members[:m]))

    print(f"R² over {args.splits} splits, 20 training curves, {args.reads} reads\n")
    print("| model | mean | 5th pct | min | std |\n|---|---|---|---|---|")
    for key, values in rows.items():
        print(f"| {key} | {_summary(values)} |")
    print("\n| QSVR fit | mean seconds |\n|---|---|")
    for key, values in fit_seconds.items():
        print(f"| {key} | {np.mean(values):.3f} |")


if __name__ == "__main__":
    main()
