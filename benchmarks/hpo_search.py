"""Replay benchmark of searcher x scheduler pairs (issue 8 figures).

On the MLPF Delphes table (``<repo>/../shared/data/mlpf_delphes_curves.csv``), R = 100, eta = 2,
seeds 0..N-1, W = 1: best final loss found and epochs consumed per pair, epochs until the best
final loss found is within ``--within`` (relative, default 0.5%) of the table's best at R, and
epochs until it is the table's best. Optuna's
``TPESampler + HyperbandPruner`` is not a replay peer yet (the replay's Optuna peers sample with
``RandomSampler``); that comparison is still open. Prints markdown and writes raw numbers as JSON.

    .venv/bin/python benchmarks/hpo_search.py --seeds 10 --out results/hpo_search
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from hpo_node.algorithms import make_driver
from hpo_node.replay import CurveTable, RunResult, simulate
from hpo_node.search import SEARCHERS, SearchSpace, make_searcher

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mlpf_delphes_curves.csv"


def epochs_to_within(run: RunResult, target: float, mode: str) -> int | None:
    """Epochs consumed when the best final metric found first reached ``target`` (None: never)."""
    for epochs, best in run.trace:
        if (best <= target) if mode == "min" else (best >= target):
            return epochs
    return None


def _fmt(vals: list[float]) -> str:
    a = np.asarray(vals, dtype=np.float64)
    return f"{a.mean():.6g} ± {a.std():.3g}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--searchers", default=",".join(SEARCHERS))
    p.add_argument("--algorithms", default="hyperband,swift-hyperband,asha,swift-asha")
    p.add_argument("--max-resource", type=int, default=100)
    p.add_argument("--eta", type=int, default=2)
    p.add_argument("--within", type=float, default=0.005)
    p.add_argument("--out", type=Path, default=Path("results/hpo_search"))
    args = p.parse_args()
    if not args.data.exists():
        print(f"skipped: learning-curve table {args.data} not found (../shared/data is absent)")
        return 0
    table = CurveTable.from_csv(args.data)
    space = SearchSpace.from_table(table.hparams, table.hparam_names, table.categorical)
    r = args.max_resource
    best = table.to_metric(table.best_final_loss(r))
    target = best * (1 + args.within) if best >= 0 else best * (1 - args.within)
    raw: dict[str, list[dict]] = {}
    lines = [
        "| searcher + scheduler | epochs | best loss | regret | epochs to within "
        f"{100 * args.within:g}% (runs reaching it) | epochs to the best (runs reaching it) | "
        "wall s per run |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in args.searchers.split(","):
        for a in args.algorithms.split(","):
            runs, reach, found = [], [], []
            t0 = time.perf_counter()
            for seed in range(args.seeds):
                driver = make_driver(a, max_resource=r, eta=args.eta, seed=seed)
                searcher = None if s == "random" else make_searcher(s, space, seed=seed)
                run = simulate(table, driver, seed=seed, max_resource=r, searcher=searcher)
                driver.close()
                runs.append(run)
                reach.append(epochs_to_within(run, target, table.mode))
                found.append(epochs_to_within(run, best, table.mode))
            wall = (time.perf_counter() - t0) / args.seeds
            hit = [e for e in reach if e is not None]
            hit_best = [e for e in found if e is not None]
            label = f"{s}+{a}"
            raw[label] = [
                {**x.to_dict(), "epochs_to_within": e, "epochs_to_best": f}
                for x, e, f in zip(runs, reach, found, strict=True)
            ]
            lines.append(
                f"| {label} | {_fmt([x.epochs for x in runs])} | "
                f"{_fmt([x.best_loss for x in runs])} | {_fmt([x.regret for x in runs])} | "
                f"{_fmt(hit) if hit else 'n/a'} ({len(hit)}/{len(runs)}) | "
                f"{_fmt(hit_best) if hit_best else 'n/a'} ({len(hit_best)}/{len(runs)}) | {wall:.2f} |"
            )
            print(lines[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"data": str(args.data), "max_resource": r, "eta": args.eta, "within": args.within}
    (args.out / "hpo_search.json").write_text(json.dumps({**meta, "results": raw}, indent=1))
    print(f"\ntable best at R = {r}: {best:.6g}; target {target:.6g}\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
