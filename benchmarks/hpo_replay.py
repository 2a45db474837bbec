"""Replay benchmark of the hpo_node schedulers (issue 3 figures).

The Swift rows are the published rule (``rule="paper"``) and its issue-3 options; issue 14's
forecast rule (today's default) is benchmarked by ``benchmarks/hpo_rules.py``.

Runs on the MLPF Delphes table (``<repo>/data/mlpf_delphes_curves.csv``), R = 100,
eta = 2, seeds 0..N-1, and as cross-checks on tables the defaults were not chosen on: two synthetic
tables (:func:`hpo_node.synthetic.synthetic_table`) and the MLPF table sub-sampled to every 2nd
epoch (R = 50). Prints markdown and writes the raw numbers as JSON.

    .venv/bin/python benchmarks/hpo_replay.py --seeds 10 --predictors svr,qsvr --out results/hpo
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

from hpo_node.algorithms import default_n_trials, make_driver
from hpo_node.asha import ASHA, SwiftASHA
from hpo_node.hyperband import Hyperband, SwiftHyperband
from hpo_node.predictors import make_predictor_factory
from hpo_node.replay import CurveTable, Driver, RunResult, simulate
from hpo_node.synthetic import synthetic_table


class OraclePredictor:
    """Upper-bound instrument, not a predictor: looks the true loss at the target up in the table.

    ``fit`` finds the target resource from the first training pair, ``predict`` returns the table's
    loss of each partial curve's row at that resource (spread 0). Rows are identified by their
    curve prefix, which is unique in the tables used here.
    """

    def __init__(self, table: CurveTable) -> None:
        self.table = table
        self.resource = 0

    def _row(self, curve: np.ndarray) -> int:
        hits = np.flatnonzero(np.all(self.table.curves[:, : curve.shape[0]] == curve, axis=1))
        return int(hits[0])

    def fit(self, curves: Any, targets: Any, hparams: Any = None, seed: int = 0) -> None:
        row = self._row(np.asarray(curves)[0])
        self.resource = int(np.flatnonzero(self.table.curves[row] == targets[0])[0]) + 1

    def predict(self, curves: Any, hparams: Any = None) -> tuple[np.ndarray, np.ndarray]:
        mean = self.table.curves[[self._row(c) for c in np.asarray(curves)], self.resource - 1]
        return mean, np.zeros_like(mean)


def runs(
    table: CurveTable, build: Callable[[int], Driver], seeds: int, r_max: int, workers: int
) -> list[RunResult]:
    out = []
    for seed in range(seeds):
        driver = build(seed)
        try:
            out.append(simulate(table, driver, seed=seed, max_resource=r_max, workers=workers))
        finally:
            driver.close()
    return out


def stats(rs: list[RunResult]) -> dict[str, Any]:
    def arr(key: str) -> np.ndarray:
        return np.array([getattr(r, key) for r in rs], dtype=np.float64)

    reports = arr("reports").sum()
    return {
        "epochs": [r.epochs for r in rs],
        "best_loss": [r.best_loss for r in rs],
        "epochs_mean": float(arr("epochs").mean()),
        "epochs_min": int(arr("epochs").min()),
        "epochs_max": int(arr("epochs").max()),
        "best_loss_mean": float(arr("best_loss").mean()),
        "best_loss_min": float(arr("best_loss").min()),
        "best_loss_max": float(arr("best_loss").max()),
        "regret_mean": float(arr("regret").mean()),
        "makespan_mean": float(arr("makespan").mean()),
        "fits_mean": float(arr("predictor_fits").mean()),
        "predicts_mean": float(arr("predictor_predicts").mean()),
        "latency_us": float(1e6 * arr("decision_seconds").sum() / reports),
        "epochs_per_s": float(arr("epochs").sum() / arr("wall_seconds").sum()),
    }


def line(name: str, s: dict[str, Any], ref: dict[str, Any] | None = None) -> str:
    saving = "" if ref is None else f"{100 * (1 - s['epochs_mean'] / ref['epochs_mean']):.1f}%"
    dloss = (
        ""
        if ref is None
        else f"{100 * (s['best_loss_mean'] - ref['best_loss_mean']) / abs(ref['best_loss_mean']):+.3f}%"
    )
    return (
        f"| {name} | {s['epochs_mean']:.1f} ({s['epochs_min']}–{s['epochs_max']}) | {saving} | "
        f"{s['best_loss_mean']:.4f} ({s['best_loss_min']:.4f}–{s['best_loss_max']:.4f}) | {dloss} | "
        f"{s['regret_mean']:.4g} | {s['makespan_mean']:.1f} | {s['fits_mean']:.1f} | "
        f"{s['latency_us']:.0f} | {s['epochs_per_s']:.0f} |"
    )


HEAD = (
    "| algorithm | epochs mean (min–max) | fewer epochs | best final loss mean (min–max) | "
    "Δ best vs ref | regret mean | makespan mean | predictor fits | decision µs/report | "
    "sim. epochs/s |\n|---|---|---|---|---|---|---|---|---|---|"
)


def suite(
    table: CurveTable, r_max: int, eta: int, seeds: int, predictors: list[str], full: bool
) -> dict[str, dict[str, Any]]:
    """All configurations on one table; keys are row labels."""
    res: dict[str, dict[str, Any]] = {}
    n = default_n_trials("asha", r_max, eta)
    svr = make_predictor_factory("svr")
    res["hyperband W=1"] = stats(runs(table, lambda s: Hyperband(r_max, eta), seeds, r_max, 1))
    for pred in predictors:
        factory = make_predictor_factory(pred)
        for kc in (0.5, 0.25):
            res[f"swift-hyperband {pred} known_curve={kc} W=1"] = stats(
                runs(
                    table,
                    lambda s, f=factory, kc=kc: SwiftHyperband(
                        r_max, eta, f, rule="paper", known_curve=kc, seed=s
                    ),
                    seeds,
                    r_max,
                    1,
                )
            )
    for pred in predictors:
        factory = make_predictor_factory(pred)
        for kc in (0.5, 0.25) if pred == "svr" else (0.25,):
            res[f"swift-hyperband {pred} scale_free known_curve={kc} W=1"] = stats(
                runs(
                    table,
                    lambda s, f=factory, kc=kc: SwiftHyperband(
                        r_max, eta, f, rule="paper", known_curve=kc, scale_free=True, seed=s
                    ),
                    seeds,
                    r_max,
                    1,
                )
            )
    res["swift-hyperband svr known_curve=0.25 d=10 W=1"] = stats(
        runs(
            table,
            lambda s: SwiftHyperband(r_max, eta, svr, rule="paper", known_curve=0.25, d=10, seed=s),
            seeds,
            r_max,
            1,
        )
    )
    res["swift-hyperband svr fallback=last-value W=1"] = stats(
        runs(
            table,
            lambda s: SwiftHyperband(r_max, eta, svr, rule="paper", fallback="last-value", seed=s),
            seeds,
            r_max,
            1,
        )
    )
    oracle = lambda: OraclePredictor(table)  # noqa: E731
    for kc in (0.5, 0.25):
        res[f"swift-hyperband oracle known_curve={kc} W=1"] = stats(
            runs(
                table,
                lambda s, kc=kc: SwiftHyperband(r_max, eta, oracle, rule="paper", known_curve=kc, seed=s),
                seeds,
                r_max,
                1,
            )
        )
    res["hyperband W=8"] = stats(runs(table, lambda s: Hyperband(r_max, eta), seeds, r_max, 8))
    res["asha W=8"] = stats(runs(table, lambda s: ASHA(r_max, eta, n), seeds, r_max, 8))
    for kc in (0.5, 0.25):
        res[f"swift-asha svr known_curve={kc} W=8"] = stats(
            runs(
                table,
                lambda s, kc=kc: SwiftASHA(r_max, eta, n, svr, rule="paper", known_curve=kc, seed=s),
                seeds,
                r_max,
                8,
            )
        )
    res["swift-asha svr d=5 W=8"] = stats(
        runs(table, lambda s: SwiftASHA(r_max, eta, n, svr, rule="paper", d=5, seed=s), seeds, r_max, 8)
    )
    res["swift-asha svr fallback=last-value W=8"] = stats(
        runs(
            table,
            lambda s: SwiftASHA(r_max, eta, n, svr, rule="paper", fallback="last-value", seed=s),
            seeds,
            r_max,
            8,
        )
    )
    for kc in (0.5, 0.25):
        res[f"swift-asha svr defer scale_free known_curve={kc} W=8"] = stats(
            runs(
                table,
                lambda s, kc=kc: SwiftASHA(
                    r_max, eta, n, svr, rule="paper", known_curve=kc, defer=True, scale_free=True,
                    refit_every=5, seed=s,
                ),
                seeds,
                r_max,
                8,
            )
        )
    res["swift-asha oracle known_curve=0.5 W=8"] = stats(
        runs(table, lambda s: SwiftASHA(r_max, eta, n, oracle, rule="paper", seed=s), seeds, r_max, 8)
    )
    if full:
        if "qsvr" in predictors:
            qsvr = make_predictor_factory("qsvr")
            res["swift-asha qsvr known_curve=0.5 W=8"] = stats(
                runs(table, lambda s: SwiftASHA(r_max, eta, n, qsvr, rule="paper", seed=s), seeds, r_max, 8)
            )
        for name in ("asha-stopping", "random", "optuna-sha", "optuna-hyperband"):
            res[f"{name} W=8"] = stats(
                runs(
                    table,
                    lambda s, name=name: make_driver(name, max_resource=r_max, eta=eta, seed=s),
                    seeds,
                    r_max,
                    8,
                )
            )
    return res


def table_md(title: str, res: dict[str, dict[str, Any]]) -> str:
    out = [f"### {title}", "", HEAD]
    for label, s in res.items():
        if label.startswith("swift-hyperband"):
            ref = res["hyperband W=1"]
        elif label.startswith("swift-asha"):
            ref = res["asha W=8"]
        else:
            ref = None
        out.append(line(label, s, ref))
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--predictors", default="svr,qsvr")
    p.add_argument("--out", type=Path, default=Path("results/hpo"))
    p.add_argument("--skip-cross-check", action="store_true")
    args = p.parse_args()
    if not DATA.exists():
        print(f"skipped: MLPF table not found at {DATA}", file=sys.stderr)
        return 0
    preds = [x for x in args.predictors.split(",") if x]
    warm = synthetic_table(60, 9, seed=0)
    for pred in preds:
        if pred != "gateway":
            runs(warm, lambda s, p=pred: make_driver("swift-hyperband", max_resource=9, eta=3,
                                                      predictor=p, options={"d": 5}), 1, 9, 1)
    t0 = time.perf_counter()
    mlpf = CurveTable.from_csv(DATA)
    report: dict[str, Any] = {"seeds": args.seeds, "tables": {}}
    md = []
    res = suite(mlpf, 100, 2, args.seeds, preds, full=True)
    report["tables"]["mlpf R=100"] = res
    md.append(table_md("MLPF Delphes, R = 100, eta = 2", res))
    if not args.skip_cross_check:
        others = {
            "synthetic seed 11 (noise 0.01), R = 100": (synthetic_table(300, 100, 11, noise=0.01), 100),
            "synthetic seed 12 (noise 0.003), R = 100": (synthetic_table(300, 100, 12, noise=0.003), 100),
            "MLPF every 2nd epoch, R = 50": (mlpf.subsample_epochs(2), 50),
        }
        for title, (table, r_max) in others.items():
            res = suite(table, r_max, 2, args.seeds, ["svr"], full=False)
            report["tables"][title] = res
            md.append(table_md(title, res))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hpo_replay.json").write_text(json.dumps(report, indent=1))
    print("\n\n".join(md))
    print(f"\nwall time {time.perf_counter() - t0:.0f} s; raw numbers in {args.out / 'hpo_replay.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
