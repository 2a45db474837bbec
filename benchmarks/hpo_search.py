"""Replay benchmark of searcher x scheduler pairs (issue 8 figures).

On the MLPF Delphes table (``<repo>/data/mlpf_delphes_curves.csv``), R = 100, eta = 2,
seeds 0..N-1, W = 1: best final loss found and epochs consumed per pair, epochs until the best
final loss found is within ``--within`` (relative, default 0.5%) of the table's best at R, and
epochs until it is the table's best. The Optuna peer ``optuna-tpe+hyperband-pruner`` (Optuna's
``TPESampler + HyperbandPruner``, rows nearest to its suggestions: :mod:`hpo_node.peers`) runs
next to the pairs unless ``--no-optuna``; a second table compares it with ``tpe+swift-asha`` and
``tpe+hyperband`` (BOHB-like). Prints markdown, writes the raw numbers as JSON and the figure
``best_vs_epochs.png`` (mean best final loss found vs epochs consumed, one panel per scheduler).

    .venv/bin/python benchmarks/hpo_search.py --seeds 10 --out results/hpo_search
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _data import MLPF as DATA

from hpo_node.algorithms import default_n_trials, make_driver
from hpo_node.peers import OptunaPeer
from hpo_node.replay import CurveTable, RunResult, simulate
from hpo_node.search import SEARCHERS, SearchSpace, make_searcher

OPTUNA_LABEL = "optuna-tpe+hyperband-pruner"
COMPARED = ("tpe+swift-asha", OPTUNA_LABEL, "tpe+hyperband")


def epochs_to_within(run: RunResult, target: float, mode: str) -> int | None:
    """Epochs consumed when the best final metric found first reached ``target`` (None: never)."""
    for epochs, best in run.trace:
        if (best <= target) if mode == "min" else (best >= target):
            return epochs
    return None


def _fmt(vals: list[float]) -> str:
    a = np.asarray(vals, dtype=np.float64)
    return f"{a.mean():.6g} ± {a.std():.3g}"


def best_curve(runs: list[RunResult], grid: np.ndarray) -> np.ndarray:
    """Mean over runs of the best final metric found after each number of epochs in ``grid``
    (NaN until every run has trained one trial to R, and past the longest run)."""
    out = np.full((len(runs), grid.size), np.nan)
    for k, run in enumerate(runs):
        for epochs, best in run.trace:
            out[k, grid >= epochs] = best
    mean = out.mean(axis=0)
    mean[grid > max(run.epochs for run in runs)] = np.nan
    return mean


def plot(results: dict[str, list[RunResult]], schedulers: list[str], searchers: list[str],
         best: float, target: float, path: Path) -> None:
    """Best final loss found vs epochs consumed: one panel per scheduler, one line per searcher;
    the Optuna peer in the Hyperband panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = max(x.epochs for runs in results.values() for x in runs)
    grid = np.arange(1, top + 1)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True, sharey=True)
    for ax, a in zip(axes.flat, schedulers, strict=False):
        for s in searchers:
            label = f"{s}+{a}"
            if label in results:
                ax.plot(grid, best_curve(results[label], grid), label=s, lw=1.4)
        if a == "hyperband" and OPTUNA_LABEL in results:
            ax.plot(grid, best_curve(results[OPTUNA_LABEL], grid), "k--", lw=1.2,
                    label="Optuna TPESampler + HyperbandPruner")
        ax.axhline(best, color="gray", lw=0.8)
        ax.axhline(target, color="gray", lw=0.8, ls=":")
        ax.set_title(a)
        ax.set_xscale("log")
        ax.set_ylim(best - 0.002 * abs(best), best + 0.03 * abs(best))
        ax.legend(fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("epochs consumed")
    for ax in axes[:, 0]:
        ax.set_ylabel("best final loss found (mean over seeds)")
    fig.suptitle(f"MLPF replay, R = 100, eta = 2, {len(next(iter(results.values())))} seeds "
                 "(grey: table best; dotted: within 0.5%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    p.add_argument("--no-optuna", action="store_true",
                   help="skip the Optuna TPESampler + HyperbandPruner peer")
    args = p.parse_args()
    if not args.data.exists():
        print(f"skipped: learning-curve table {args.data} not found")
        return 0
    table = CurveTable.from_csv(args.data)
    space = SearchSpace.from_table(table.hparams, table.hparam_names, table.categorical)
    r = args.max_resource
    best = table.to_metric(table.best_final_loss(r))
    target = best * (1 + args.within) if best >= 0 else best * (1 - args.within)
    raw: dict[str, list[dict]] = {}
    results: dict[str, list[RunResult]] = {}
    lines = [
        "| searcher + scheduler | epochs | best loss | regret | epochs to within "
        f"{100 * args.within:g}% (runs reaching it) | epochs to the best (runs reaching it) | "
        "wall s per run |",
        "|---|---|---|---|---|---|---|",
    ]
    searchers = args.searchers.split(",")
    schedulers = args.algorithms.split(",")
    pairs = [(s, a) for s in searchers for a in schedulers]
    if not args.no_optuna:
        pairs.append(("optuna-tpe", "hyperband-pruner"))
    for s, a in pairs:
        runs, reach, found = [], [], []
        t0 = time.perf_counter()
        for seed in range(args.seeds):
            if s == "optuna-tpe":
                n = default_n_trials("optuna-hyperband", r, args.eta)
                peer = OptunaPeer("optuna-hyperband", r, args.eta, n, seed=seed, sampler="tpe")
                run = simulate(table, peer, seed=seed, max_resource=r,
                               searcher=peer.row_selector(space))
            else:
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
        results[label] = runs
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
    plot(results, schedulers, searchers, best, target, args.out / "best_vs_epochs.png")
    print(f"\ntable best at R = {r}: {best:.6g}; target {target:.6g}\n")
    print("\n".join(lines))
    compared = [c for c in COMPARED if c in raw]
    if compared:
        print(f"\n| {args.seeds} seeds | epochs to within {100 * args.within:g}% (runs reaching it) "
              "| median | epochs to the best (runs reaching it) | epochs | best loss |")
        print("|---|---|---|---|---|---|")
        for c in compared:
            e = [x["epochs_to_within"] for x in raw[c] if x["epochs_to_within"] is not None]
            f = [x["epochs_to_best"] for x in raw[c] if x["epochs_to_best"] is not None]
            print(f"| {c} | {_fmt(e) if e else 'n/a'} ({len(e)}/{len(raw[c])}) | "
                  f"{np.median(e) if e else 'n/a'} | {_fmt(f) if f else 'n/a'} "
                  f"({len(f)}/{len(raw[c])}) | {_fmt([x['epochs'] for x in raw[c]])} | "
                  f"{_fmt([x['best_loss'] for x in raw[c]])} |")
    print(f"\nwrote {args.out / 'hpo_search.json'} and {args.out / 'best_vs_epochs.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
