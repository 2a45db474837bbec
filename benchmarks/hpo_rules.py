"""Stopping rules of the Swift schedulers beside their ceiling and floor, one table per run (issue 14).

For one curve table: Hyperband (W = 1) and Swift-Hyperband with the forecast rule (the default),
its oracle ceiling (the table's true loss at R as the forecast) and the published rule; ASHA
(W = workers) and Swift-ASHA likewise; the one-epoch baseline (Egele et al. 2023) and Optuna's
pruners. Every rule runs with its class defaults; ``--asha-z`` / ``--hyperband-z`` add rows for
other band widths of the forecast rule. Seeds 0..N-1; a seed fixes the order of the table's rows.

    nice -n 10 .venv/bin/python benchmarks/hpo_rules.py --table mlpf --seeds 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _data import MLPF as DATA
from hpo_replay import runs  # the same seeds loop as the issue-3 tables

from hpo_node.asha import ASHA, SwiftASHA
from hpo_node.hyperband import Hyperband, OneEpoch, SwiftHyperband
from hpo_node.peers import OptunaPeer
from hpo_node.predictors import make_predictor_factory
from hpo_node.replay import CurveTable, Driver, RunResult
from hpo_node.synthetic import synthetic_table

TABLES = ("mlpf", "mlpf-2", "synthetic-11", "synthetic-12", "synthetic-12ep-11", "synthetic-12ep-12")


def load(name: str) -> tuple[CurveTable, int, int]:
    """Table, R and the number of configurations of the ASHA runs."""
    if name == "mlpf":
        return CurveTable.from_csv(DATA), 100, 163
    if name == "mlpf-2":
        return CurveTable.from_csv(DATA).subsample_epochs(2), 50, 84
    if name == "synthetic-11":
        return synthetic_table(300, 100, 11, noise=0.01), 100, 163
    if name == "synthetic-12":
        return synthetic_table(300, 100, 12, noise=0.003), 100, 163
    seed = int(name.rsplit("-", 1)[1])
    return synthetic_table(300, 12, seed), 12, 300


def stats(rs: list[RunResult], wall: float) -> dict[str, Any]:
    regrets = [np.nan if r.regret is None else r.regret for r in rs]
    best = [np.nan if r.best_loss is None else r.best_loss for r in rs]
    return {
        "epochs": [r.epochs for r in rs],
        "best_loss": best,
        "regret": regrets,
        "epochs_mean": float(np.mean([r.epochs for r in rs])),
        "best_mean": float(np.mean(best)),
        "regret_mean": float(np.mean(regrets)),
        "fits_mean": float(np.mean([r.predictor_fits for r in rs])),
        "wall_s": wall,
    }


def row(label: str, s: dict[str, Any], ref: dict[str, Any] | None) -> str:
    fewer = dbest = worse = ""
    if ref is not None:
        fewer = f"{100 * (1 - s['epochs_mean'] / ref['epochs_mean']):.1f}%"
        dbest = f"{100 * (s['best_mean'] - ref['best_mean']) / abs(ref['best_mean']):+.3f}%"
        worse = str(sum(a > b + 1e-12 for a, b in zip(s["regret"], ref["regret"], strict=True)))
    return (
        f"| {label} | {s['epochs_mean']:.1f} | {fewer} | {s['best_mean']:.6g} | {dbest} | "
        f"{s['regret_mean']:.4g} | {worse} | {s['fits_mean']:.1f} | {s['wall_s']:.1f} |"
    )


HEAD = (
    "| algorithm | epochs | fewer epochs | best loss | Δ best | regret | seeds worse | "
    "predictor fits | wall s |\n|---|---|---|---|---|---|---|---|---|"
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--table", choices=TABLES, default="mlpf")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--workers", type=int, default=8, help="W of the ASHA runs (Hyperband: 1)")
    p.add_argument("--eta", type=int, default=2)
    p.add_argument("--predictor", default="svr", help="svr or qsvr")
    p.add_argument("--asha-z", default="", help="extra z values of the forecast rule, comma-sep.")
    p.add_argument("--hyperband-z", default="", help="same for Swift-Hyperband")
    p.add_argument("--skip", default="", help="comma-separated groups to skip: hyperband, asha, "
                   "peers, paper")
    p.add_argument("--out", type=Path, default=None, help="write the raw numbers as JSON here")
    args = p.parse_args()
    if args.table.startswith("mlpf") and not DATA.exists():
        print(f"skipped: MLPF table not found at {DATA}", file=sys.stderr)
        return 0
    table, r_max, n = load(args.table)
    eta, w, seeds = args.eta, args.workers, args.seeds
    skip = {s for s in args.skip.split(",") if s}
    pred = make_predictor_factory(args.predictor)
    oracle = make_predictor_factory("oracle", curves=table.curves, max_resource=r_max)
    res: dict[str, dict[str, Any]] = {}
    refs: dict[str, str] = {}

    def add(label: str, build: Callable[[int], Driver], workers: int, ref: str | None) -> None:
        t0 = time.perf_counter()
        res[label] = stats(runs(table, build, seeds, r_max, workers), time.perf_counter() - t0)
        if ref is not None:
            refs[label] = ref
        print(row(label, res[label], res.get(ref) if ref else None), file=sys.stderr, flush=True)

    hb, asha = "hyperband W=1", f"asha W={w}"
    if "hyperband" not in skip:
        add(hb, lambda s: Hyperband(r_max, eta), 1, None)
        add(f"swift-hyperband {args.predictor} W=1",
            lambda s: SwiftHyperband(r_max, eta, pred, seed=s), 1, hb)
        for z in [float(x) for x in args.hyperband_z.split(",") if x]:
            add(f"swift-hyperband {args.predictor} z={z} W=1",
                lambda s, z=z: SwiftHyperband(r_max, eta, pred, z=z, seed=s), 1, hb)
        add("swift-hyperband oracle W=1", lambda s: SwiftHyperband(r_max, eta, oracle, seed=s), 1, hb)
        if "paper" not in skip:
            add(f"swift-hyperband {args.predictor} rule=paper W=1",
                lambda s: SwiftHyperband(r_max, eta, pred, rule="paper", seed=s), 1, hb)
    if "asha" not in skip:
        add(asha, lambda s: ASHA(r_max, eta, n), w, None)
        add(f"swift-asha {args.predictor} W={w}",
            lambda s: SwiftASHA(r_max, eta, n, pred, rule="forecast", seed=s), w, asha)
        for z in [float(x) for x in args.asha_z.split(",") if x]:
            add(f"swift-asha {args.predictor} z={z} W={w}",
                lambda s, z=z: SwiftASHA(r_max, eta, n, pred, rule="forecast", z=z, seed=s), w, asha)
        add(f"swift-asha oracle W={w}",
            lambda s: SwiftASHA(r_max, eta, n, oracle, rule="forecast", seed=s), w, asha)
        add(f"swift-asha rule=gate W={w}",
            lambda s: SwiftASHA(r_max, eta, n, pred, rule="gate", seed=s), w, asha)
        add(f"swift-asha rule=gate oracle W={w}",
            lambda s: SwiftASHA(r_max, eta, n, oracle, rule="gate", forecaster="predictor",
                                seed=s), w, asha)
        if "paper" not in skip:
            add(f"swift-asha {args.predictor} rule=paper W={w}",
                lambda s: SwiftASHA(r_max, eta, n, pred, rule="paper", seed=s), w, asha)
    add(f"one-epoch (top {OneEpoch(r_max, eta, n).top_k}) W={w}",
        lambda s: OneEpoch(r_max, eta, n), w, asha if "asha" not in skip else None)
    if "peers" not in skip:
        for name in ("optuna-sha", "optuna-hyperband"):
            add(f"{name} W={w}", lambda s, name=name: OptunaPeer(name, r_max, eta, n, seed=s), w,
                asha if "asha" not in skip else None)
    print(f"### {args.table}, R = {r_max}, eta = {eta}, {seeds} seeds, {n} configurations for the "
          f"ASHA runs\n\n{HEAD}")
    for label, s in res.items():
        print(row(label, s, res.get(refs[label]) if label in refs else None))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"table": args.table, "seeds": seeds, "results": res}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
