"""Swift-ASHA variants vs ASHA (W = 8) on the issue-3 table and the cross-check tables.

Rows: ASHA; the published Swift-ASHA rule (stop at the decision point when the predicted loss at
the rung is above the rung's current cutoff); ``defer=True`` (pause instead of stop, only when
ASHA would not promote the trial now, resume it when it would) with a perfect predictor (the
table's true loss at the rung: the ceiling of the rule) and with the scale-free SVR predictor.
Prints one markdown table per data table: epochs saved vs ASHA, mean regret, and per-seed
regret worse / better than ASHA.

    .venv/bin/python benchmarks/results/issue3_swift_asha.py --seeds 10
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hpo_replay import DATA, runs

from hpo_node.algorithms import default_n_trials
from hpo_node.asha import ASHA, SwiftASHA
from hpo_node.predictors import make_predictor_factory
from hpo_node.replay import CurveTable, Driver, RunResult
from hpo_node.synthetic import synthetic_table


def true_score(table: CurveTable) -> type[SwiftASHA]:
    """Ceiling instrument: Swift-ASHA whose score is the table's true loss at the rung."""

    class TrueScore(SwiftASHA):
        def _score(self, trial_id: str, dp: int, r_to: int) -> float | None:
            return float(table.curves[int(trial_id.split("-")[1]), r_to - 1])

    return TrueScore


VARIANTS: dict[str, dict[str, Any]] = {
    "published rule, svr, known_curve=0.5": {},
    "published rule, true loss, known_curve=0.5": {"_true": True},
    "published rule, true loss, known_curve=0.25": {"_true": True, "known_curve": 0.25},
    "defer, true loss, known_curve=0.5": {"_true": True, "defer": True},
    "defer, true loss, known_curve=0.25": {"_true": True, "defer": True, "known_curve": 0.25},
    "defer, svr (whole curves, d=15), known_curve=0.5": {"defer": True},
    "scale_free, svr, known_curve=0.5 (stop rule)": {"scale_free": True, "refit_every": 5},
    "defer + scale_free, svr, known_curve=0.5": {"defer": True, "scale_free": True, "refit_every": 5},
    "defer + scale_free, svr, known_curve=0.5, top_rung=False": {
        "defer": True, "scale_free": True, "refit_every": 5, "top_rung": False,
    },
    "defer + scale_free, svr, known_curve=0.25": {
        "defer": True, "scale_free": True, "refit_every": 5, "known_curve": 0.25,
    },
    "defer + scale_free, svr, known_curve=0.25, top_rung=False": {
        "defer": True, "scale_free": True, "refit_every": 5, "known_curve": 0.25, "top_rung": False,
    },
    "defer + scale_free, svr, known_curve=0.25, z=1, 8 bootstraps": {
        "defer": True, "scale_free": True, "refit_every": 5, "known_curve": 0.25, "z": 1.0,
        "_pp": {"n_bootstrap": 8},
    },
}


def row(label: str, rs: list[RunResult], base: list[RunResult]) -> str:
    e = np.mean([r.epochs for r in rs])
    g = np.mean([r.regret for r in rs])
    worse = sum(1 for a, b in zip(base, rs, strict=True) if b.regret > a.regret + 1e-12)
    better = sum(1 for a, b in zip(base, rs, strict=True) if b.regret < a.regret - 1e-12)
    saved = 100 * (1 - e / np.mean([r.epochs for r in base]))
    return f"| {label} | {e:.1f} | {saved:.1f}% | {g:.4g} | {worse} / {better} |"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, default=10)
    args = p.parse_args()
    mlpf = CurveTable.from_csv(DATA)
    tables = {
        "MLPF Delphes, R = 100": (mlpf, 100),
        "synthetic seed 11 (noise 0.01), R = 100": (synthetic_table(300, 100, 11, noise=0.01), 100),
        "synthetic seed 12 (noise 0.003), R = 100": (synthetic_table(300, 100, 12, noise=0.003), 100),
        "MLPF every 2nd epoch, R = 50": (mlpf.subsample_epochs(2), 50),
    }
    for title, (table, r) in tables.items():
        n = default_n_trials("asha", r, 2)
        base = runs(table, lambda s, r=r, n=n: ASHA(r, 2, n), args.seeds, r, 8)
        print(f"\n#### {title}, eta = 2, W = 8, {args.seeds} seeds\n")
        print("| variant | epochs | fewer than ASHA | mean regret | seeds worse / better than ASHA |")
        print("|---|---|---|---|---|")
        print(row("asha", base, base))
        for label, opts in VARIANTS.items():
            o = dict(opts)
            cls = true_score(table) if o.pop("_true", False) else SwiftASHA
            f = make_predictor_factory("svr", **o.pop("_pp", {}))
            build: Callable[[int], Driver] = lambda s, c=cls, f=f, o=o, r=r, n=n: c(  # noqa: E731
                r, 2, n, f, rule="paper", seed=s, **o
            )
            print(row(label, runs(table, build, args.seeds, r, 8), base), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
