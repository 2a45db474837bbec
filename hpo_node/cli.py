"""``hpo-node`` command line: ``simulate`` and ``compare`` on a learning-curve table, and ``run``
(a study on Ray Tune, :mod:`hpo_node.study`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hpo_node.algorithms import ALGORITHMS, REGISTRY, make_driver
from hpo_node.peers import OptunaPeer
from hpo_node.predictors import PREDICTORS, CurveFeatures
from hpo_node.replay import CurveTable, Driver, RunResult, simulate
from hpo_node.search import SEARCHERS, Searcher, SearchSpace, make_searcher

_FIGURES = ("epochs", "best_loss", "regret", "makespan")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, help="learning-curve CSV")
    p.add_argument("--metric", default="loss", help="per-epoch metric name (default: loss)")
    p.add_argument("--mode", choices=("min", "max"), default="min", help="min: lower is better")
    p.add_argument("--max-resource", type=int, default=None, help="R (default: all epochs)")
    p.add_argument("--eta", type=int, default=2, help="reduction factor (default: 2)")
    p.add_argument("--workers", type=int, default=1, help="simulated workers W (default: 1)")
    p.add_argument("--trials", type=int, default=None, help="configurations (asha, random, optuna)")
    p.add_argument(
        "--predictor",
        choices=PREDICTORS,
        default="svr",
        help="Swift predictor; oracle: the table's true loss at R (a rule's ceiling)",
    )
    p.add_argument("--gateway", default=None, help="HOST:PORT of qpu-gateway (--predictor gateway)")
    p.add_argument("--num-reads", type=int, default=None, help="QSVR reads (qsvr, gateway)")
    p.add_argument(
        "--feature-points",
        type=int,
        default=25,
        help="down-sample the known curve to at most this many points, 0: all (default: 25)",
    )
    p.add_argument(
        "--feature-diffs",
        type=int,
        choices=(0, 1, 2),
        default=0,
        help="append first (1) or first and second (2) differences of the curve (default: 0)",
    )
    p.add_argument(
        "--feature-hparams", action="store_true", help="append the trial's hyperparameters"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="scheduler constructor argument, e.g. --set known_curve=0.25 --set d=10 (repeatable); "
        "ALGORITHM.KEY=VALUE applies to that algorithm only, e.g. --set swift-hyperband.z=1",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpo-node", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="replay one algorithm over seeds")
    _add_common(sim)
    sim.add_argument("--algorithm", required=True, choices=ALGORITHMS)
    sim.add_argument(
        "--searcher",
        choices=SEARCHERS,
        default=None,
        help="configuration searcher (default: random, the seeded permutation of the rows); "
        "when given, the result is labelled SEARCHER+ALGORITHM",
    )
    seeds = sim.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, default=None, help="run seeds 0 .. N-1")
    seeds.add_argument("--seed", type=int, default=None, help="run this one seed")
    sim.add_argument("--json", action="store_true", help="print one JSON object")
    cmp_ = sub.add_parser("compare", help="several algorithms on the same seeds")
    _add_common(cmp_)
    cmp_.add_argument("--algorithms", required=True, help="comma-separated algorithm names")
    cmp_.add_argument(
        "--searcher",
        default=None,
        help=f"comma-separated searchers among {', '.join(SEARCHERS)} (default: random); when "
        "given, every searcher runs with every algorithm and rows are labelled SEARCHER+ALGORITHM",
    )
    cmp_.add_argument("--seeds", type=int, default=10, help="run seeds 0 .. N-1 (default: 10)")
    cmp_.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    from hpo_node.study import add_run_parser

    add_run_parser(sub)
    return parser


def _searcher(name: str, table: CurveTable, seed: int, driver: Driver) -> Searcher | None:
    """``None`` for ``random``: the replay's seeded permutation of the rows (unchanged results).

    An Optuna peer built with ``--set sampler=tpe`` chooses its rows itself (its TPESampler's
    suggestions, nearest unused row); it cannot be combined with another ``--searcher``.
    """
    space = SearchSpace.from_table(table.hparams, table.hparam_names, table.categorical)
    if isinstance(driver, OptunaPeer) and driver.sampler != "random":
        if name != "random":
            raise ValueError(
                f"--searcher {name} cannot drive an Optuna peer with sampler={driver.sampler!r}: "
                "the peer's own sampler chooses its rows"
            )
        return driver.row_selector(space)
    if name == "random":
        return None
    return make_searcher(name, space, seed=seed)


def _runs(
    args: argparse.Namespace,
    table: CurveTable,
    name: str,
    seeds: list[int],
    searcher: str = "random",
) -> list[RunResult]:
    r_max = args.max_resource or table.n_epochs
    params: dict[str, Any] = {}
    if args.num_reads is not None:
        params["num_reads"] = args.num_reads
    if args.predictor == "oracle":  # the ceiling: the table's true losses, not a model
        params = {"curves": table.curves, "max_resource": r_max}
    options = _options(args.set, name)
    if args.predictor == "oracle":  # every decision on the oracle (the gate's curve fits call none)
        options = REGISTRY[name].predictor_options(options)
    features = CurveFeatures(
        max_points=args.feature_points or None,
        differences=args.feature_diffs,
        hparams=args.feature_hparams,
    )
    out = []
    for seed in seeds:
        driver = make_driver(
            name,
            max_resource=r_max,
            eta=args.eta,
            seed=seed,
            n_trials=args.trials,
            predictor=args.predictor,
            gateway=args.gateway,
            features=features,
            predictor_params=params,
            options=options,
        )
        try:
            out.append(
                simulate(
                    table,
                    driver,
                    seed=seed,
                    max_resource=r_max,
                    workers=args.workers,
                    searcher=_searcher(searcher, table, seed, driver),
                )
            )
        finally:
            driver.close()
    return out


def _options(items: list[str], algorithm: str) -> dict[str, Any]:
    """``--set`` items for ``algorithm``: ``KEY=VALUE`` (every algorithm) and
    ``ALGORITHM.KEY=VALUE`` (that algorithm only)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        scope, dot, name = key.rpartition(".")
        if dot and scope not in ALGORITHMS:
            raise ValueError(
                f"--set {item!r}: {scope!r} is not an algorithm (one of {', '.join(ALGORITHMS)})"
            )
        if not sep or not name:
            raise ValueError(f"--set must be KEY=VALUE or ALGORITHM.KEY=VALUE, got {item!r}")
        if dot and scope != algorithm:
            continue
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def summary(name: str, runs: list[RunResult]) -> dict[str, Any]:
    """The ``simulate --json`` object for one algorithm."""

    def mean(key: str) -> float | None:
        vals = [getattr(r, key) for r in runs]
        if any(v is None for v in vals):
            return None
        return float(np.mean(vals))

    return {
        "algorithm": name,
        "runs": [
            {
                "seed": r.seed,
                "epochs": r.epochs,
                "best_loss": r.best_loss,
                "regret": r.regret,
                "makespan": r.makespan,
            }
            for r in runs
        ],
        "summary": {f"{k}_mean": mean(k) for k in _FIGURES},
    }


def _cmd_simulate(args: argparse.Namespace) -> int:
    table = CurveTable.from_csv(args.data, args.metric, args.mode)
    n_seeds = args.seeds if args.seeds is not None else 1
    seeds = [args.seed] if args.seed is not None else list(range(n_seeds))
    runs = _runs(args, table, args.algorithm, seeds, args.searcher or "random")
    label = args.algorithm if args.searcher is None else f"{args.searcher}+{args.algorithm}"
    obj = summary(label, runs)
    if args.json:
        print(json.dumps(obj))
        return 0
    print(f"{label} on {args.data} ({len(runs)} seeds)")
    for r in runs:
        print(
            f"seed {r.seed}: epochs {r.epochs}  best {r.best_loss}  regret {r.regret}  "
            f"makespan {r.makespan}  predictor fits {r.predictor_fits} "
            f"predicts {r.predictor_predicts}"
        )
    for k, v in obj["summary"].items():
        print(f"{k}: {v}")
    return 0


def _fmt(vals: list[float | None]) -> str:
    if any(v is None for v in vals):
        return "n/a"
    a = np.asarray(vals, dtype=np.float64)
    return f"{a.mean():.6g} ± {a.std():.3g}"


def markdown_table(results: dict[str, list[RunResult]], metric: str = "loss") -> str:
    """Mean ± std (population) of each figure per algorithm, as a markdown table; ``metric``
    names the best value's column (the table's units)."""
    head = f"| algorithm | epochs | best {metric} | regret | makespan | predictor fits |"
    lines = [head, "|---|---|---|---|---|---|"]
    for name, runs in results.items():
        cells = [_fmt([getattr(r, k) for r in runs]) for k in _FIGURES]
        cells.append(_fmt([r.predictor_fits for r in runs]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict[str, list[RunResult]], path: Path, title: str,
         metric: str = "loss") -> None:
    """Best final ``metric`` found vs epochs consumed, mean over seeds, one line per
    algorithm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, runs in results.items():
        horizon = max(r.epochs for r in runs)
        grid = np.linspace(0, horizon, 200)
        curves = []
        for r in runs:
            if not r.trace:
                continue
            e = np.array([p[0] for p in r.trace], dtype=np.float64)
            v = np.array([p[1] for p in r.trace], dtype=np.float64)
            idx = np.searchsorted(e, grid, side="right") - 1
            curves.append(np.where(idx >= 0, v[np.clip(idx, 0, None)], np.nan))
        if curves:
            ax.plot(grid, np.array(curves).mean(axis=0), label=name)
    ax.set_xlabel("epochs consumed")
    ax.set_ylabel(f"best final {metric} found (mean over seeds)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _cmd_compare(args: argparse.Namespace) -> int:
    table = CurveTable.from_csv(args.data, args.metric, args.mode)
    names = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    bad = [a for a in names if a not in ALGORITHMS]
    if bad:
        raise ValueError(f"algorithms must be among {', '.join(ALGORITHMS)}, got {bad}")
    seeds = list(range(args.seeds))
    if args.searcher is None:
        results = {name: _runs(args, table, name, seeds) for name in names}
    else:
        searchers = [s.strip() for s in args.searcher.split(",") if s.strip()]
        bad = [s for s in searchers if s not in SEARCHERS]
        if bad or not searchers:
            raise ValueError(f"searcher must be among {', '.join(SEARCHERS)}, got {args.searcher!r}")
        results = {
            f"{s}+{name}": _runs(args, table, name, seeds, s) for s in searchers for name in names
        }
    args.out.mkdir(parents=True, exist_ok=True)
    raw = {
        "data": str(args.data),
        "metric": args.metric,
        "mode": args.mode,
        "max_resource": args.max_resource or table.n_epochs,
        "eta": args.eta,
        "workers": args.workers,
        "predictor": args.predictor,
        "results": {n: [r.to_dict() for r in runs] for n, runs in results.items()},
        "summaries": {n: summary(n, runs)["summary"] for n, runs in results.items()},
    }
    (args.out / "compare.json").write_text(json.dumps(raw, indent=1))
    plot(results, args.out / "compare.png", f"{args.data.name}, W={args.workers}, eta={args.eta}",
         args.metric)
    print(markdown_table(results, args.metric))
    print(f"\nwrote {args.out / 'compare.json'} and {args.out / 'compare.png'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hpo-node`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "run":
        from hpo_node.study import run_args

        return run_args(args)
    try:
        if args.command == "simulate":
            return _cmd_simulate(args)
        return _cmd_compare(args)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"hpo-node: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
