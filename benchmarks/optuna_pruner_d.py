"""Swift's Optuna pruner with a small ``d`` against the default and Optuna's own pruner.

A plain Optuna study (``RandomSampler``, one seed per row) on a noisy power-law objective, the
kind of small study where lowering ``d`` looks tempting: each pruner's best value, trials that
reached R, steps used and (Swift) predictor fits. One run per seed; no timing.

    nice -n 5 .venv/bin/python benchmarks/optuna_pruner_d.py --max-resource 27 --trials 60 --seeds 5
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna

from hpo_node.integrations.optuna_pruner import SwiftPruner
from hpo_node.predictors import make_predictor_factory


def _objective(max_resource: int) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        width = trial.suggest_int("width", 8, 128, log=True)
        rng = np.random.default_rng(trial.number)
        final = 0.05 + 0.3 * (math.log10(lr) + 2) ** 2 + 0.02 / width
        value = math.inf
        for step in range(1, max_resource + 1):
            value = final + (1.0 - final) * step**-0.8 + rng.normal(0, 0.005)
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    return objective


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-resource", type=int, default=27)
    p.add_argument("--trials", type=int, default=60)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--eta", type=int, default=3)
    a = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    r, eta = a.max_resource, a.eta
    pruners: dict[str, Callable[[int], Any]] = {
        "optuna SHA": lambda s: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=eta),
        "swift d=4": lambda s: SwiftPruner(r, eta, make_predictor_factory("svr"), d=4, seed=s),
        "swift d=15": lambda s: SwiftPruner(r, eta, make_predictor_factory("svr"), seed=s),
    }
    print("| seed | " + " | ".join(f"{n}: best, at R, steps, fits" for n in pruners) + " |")
    print("|---" * (len(pruners) + 1) + "|")
    for seed in range(a.seeds):
        cells = []
        for make in pruners.values():
            pruner = make(seed)
            study = optuna.create_study(pruner=pruner,
                                        sampler=optuna.samplers.RandomSampler(seed=seed))
            study.optimize(_objective(r), n_trials=a.trials)
            steps = [len(t.intermediate_values) for t in study.trials]
            fits = pruner.log.counters()["fits_ok"] if isinstance(pruner, SwiftPruner) else "-"
            cells.append(f"{study.best_value:.4f}, {sum(s == r for s in steps)}, {sum(steps)}, "
                         f"{fits}")
        print(f"| {seed} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
