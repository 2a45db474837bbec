"""The digits study on Ray Tune: epochs used and best validation loss, swift-asha vs asha vs hyperband.

Every run is ``examples/digits.toml`` (R = 27 epochs, eta = 3, MLP or small CNN on load_digits)
with the algorithm and ``study.seed`` replaced. The ASHA variants get as many configurations as
Hyperband samples (49 for R = 27, eta = 3), and a seed draws the same configurations for every
algorithm (Ray's BasicVariantGenerator with ``random_state = seed``), so the three algorithms
search the same pool. Swift-ASHA predicts through a qpu-gateway child process (neal).

    .venv/bin/python benchmarks/hpo_digits.py --seeds 3

Writes ``<tag>.json`` (every run's summary) and ``<tag>.md`` (the table) to ``--out``
(default ``benchmarks/results``); each study's own outputs go under ``--runs``
(default ``results/hpo_digits/<algorithm>-seed<k>/``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from hpo_node.study import load_study, run_study

REPO = Path(__file__).resolve().parents[1]
ALGORITHMS = ("swift-asha", "asha", "hyperband")


def run(
    algorithm: str, seed: int, runs: Path, config: Path, asha_trials: int | None
) -> dict[str, Any]:
    trials = None if algorithm == "hyperband" else asha_trials
    suffix = "" if trials is None else f"-{trials}"
    overrides: dict[str, Any] = {
        "study.name": f"{algorithm}{suffix}-seed{seed}",
        "study.output_dir": str(runs),
        "study.seed": seed,
        "study.trials": trials,
        "algorithm.name": algorithm,
    }
    if algorithm != "swift-asha":
        overrides["algorithm.params"] = {}
    cfg = load_study(config, overrides)
    res = run_study(cfg, progress_every_s=30.0, overwrite=True)
    return res.summary


def _fmt(vals: list[float]) -> str:
    a = np.asarray(vals, dtype=np.float64)
    return f"{a.mean():.4g} ± {a.std():.2g}"


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = [
        "| algorithm | epochs used | best val_loss at R | trials reaching R | stopped by prediction "
        "| wall s | per seed (epochs / best) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        epochs = [r["epochs_used"] for r in runs]
        best = [r["best"]["val_loss"] for r in runs]
        finished = [r["trials_by_decision"].get("finished", 0) for r in runs]
        by_pred = [r["trials_by_decision"].get("stopped-by-prediction", 0) for r in runs]
        wall = [r["wall_seconds"] for r in runs]
        per_seed = ", ".join(f"{e} / {b:.4f}" for e, b in zip(epochs, best, strict=True))
        lines.append(
            f"| {name} | {_fmt(epochs)} | {_fmt(best)} | {_fmt(finished)} | {_fmt(by_pred)} "
            f"| {_fmt(wall)} | {per_seed} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--algorithms", default=",".join(ALGORITHMS))
    p.add_argument("--config", type=Path, default=REPO / "examples" / "digits.toml")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--asha-trials", type=int, default=None,
                   help="configurations of the ASHA variants (default: as many as Hyperband's)")
    p.add_argument("--tag", default="hpo_digits", help="name of the .json/.md outputs")
    p.add_argument("--runs", type=Path, default=REPO / "results" / "hpo_digits",
                   help="study output directories (Ray experiments, trials.csv, curves.png)")
    args = p.parse_args()
    import ray

    args.out.mkdir(parents=True, exist_ok=True)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    results: dict[str, list[dict[str, Any]]] = {}
    t0 = time.monotonic()
    try:
        for seed in range(args.seeds):
            for name in args.algorithms.split(","):
                results.setdefault(name, []).append(
                    run(name, seed, args.runs, args.config, args.asha_trials)
                )
    finally:
        ray.shutdown()
    md = table(results)
    (args.out / f"{args.tag}.json").write_text(json.dumps(results, indent=1))
    (args.out / f"{args.tag}.md").write_text(md + "\n")
    print(md)
    print(f"\n{sum(len(v) for v in results.values())} studies in {time.monotonic() - t0:.0f} s; "
          f"wrote {args.out / (args.tag + '.json')} and {args.out / (args.tag + '.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
