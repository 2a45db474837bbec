"""Decision time of Swift-ASHA's default rule (the champion gate) against ASHA as a study grows.

Replays ``synthetic_table(n, 27, 5)`` (R = 27, eta = 3, W = 8, seed 0) for each ``n`` and prints
the scheduler's decision seconds per report and their ratio to ASHA's, measured in one run
(issue 14; benchmarks/README.md).

    nice -n 5 .venv/bin/python benchmarks/gate_scaling.py --trials 300,1000,3000
"""

from __future__ import annotations

import argparse

from hpo_node.asha import ASHA, SwiftASHA
from hpo_node.replay import simulate
from hpo_node.synthetic import synthetic_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", default="300,1000,3000", help="comma-separated study sizes n")
    a = p.parse_args()
    print("| n | asha epochs | gate epochs | asha ms/report | gate ms/report | gate / asha |")
    print("|---|---|---|---|---|---|")
    for n in (int(x) for x in a.trials.split(",")):
        table = synthetic_table(n, 27, 5)
        plain = simulate(table, ASHA(27, 3, n), seed=0, max_resource=27, workers=8)
        gate = simulate(table, SwiftASHA(27, 3, n, None, seed=0), seed=0, max_resource=27,
                        workers=8)
        ms = [1000 * r.decision_seconds / r.reports for r in (plain, gate)]
        print(f"| {n} | {plain.epochs} | {gate.epochs} | {ms[0]:.3f} | {ms[1]:.2f} | "
              f"{ms[1] / ms[0]:.0f}x |", flush=True)


if __name__ == "__main__":
    main()
