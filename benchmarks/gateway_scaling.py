"""How far one gateway goes: Swift-ASHA replays on MLPF driving a real ``qpu-gateway serve``.

1. One study per W (simulated workers, ``--workers``): Swift-ASHA (R = 100, eta = 2, seed 0) on
   the MLPF Delphes table, once with the ``gateway`` predictor (a ``qpu-gateway serve`` child,
   neal, ``--sampling-workers S``) and once with the same QSVR in-process (``qsvr``). Reported:
   Fits and Predicts, their rates (per wall second of the gateway run), the latency of the
   decisions that called the predictor (p50/p99), the study's wall time through the gateway over
   its wall time in-process (slowdown), and whether the two runs made the same decisions (same
   epochs and best loss: the gateway's QSVR is the in-process one, seeded alike).
2. Saturation (``--concurrency``): K studies with W workers each, in K processes, all against one
   gateway at once: aggregate Fits/s and decision latency; the gateway is saturated where the
   aggregate rate stops rising with K.

In the replay one epoch takes no wall time, so a study spends its wall time in decisions: the
slowdown is that of the decision path, an upper bound for a study whose epochs take real time.
Fits/s at saturation is the gateway's capacity; the sizing rule in benchmarks/README.md turns it
into trials per gateway.

    nice -n 10 .venv/bin/python benchmarks/gateway_scaling.py --reads 100 --out results/scaling
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _data import MLPF as DATA

from hpo_node.algorithms import make_driver
from hpo_node.core import Decision, Job
from hpo_node.replay import CurveTable, simulate
from qpu_gateway.process import GatewayProcess

R, ETA, SEED = 100, 2, 0


class TimedDriver:
    """A replay driver that times each report that called the predictor: ``fit_latencies``
    (the decision fitted a model, and predicted), ``predict_latencies`` (predicted only)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.fit_latencies: list[float] = []
        self.predict_latencies: list[float] = []

    def add_trial(self, trial_id: str, hparams: dict[str, float] | None = None) -> None:
        self.inner.add_trial(trial_id, hparams)

    def set_hparams(self, trial_id: str, hparams: dict[str, float]) -> None:
        self.inner.set_hparams(trial_id, hparams)

    def next_job(self) -> Job | None:
        return self.inner.next_job()

    def report(self, trial_id: str, resource: int, loss: float) -> Decision:
        before = self.inner.predictor_calls()
        t0 = time.perf_counter()
        decision = self.inner.report(trial_id, resource, loss)
        spent = time.perf_counter() - t0
        after = self.inner.predictor_calls()
        if after.get("fit", 0) != before.get("fit", 0):
            self.fit_latencies.append(spent)
        elif after.get("predict", 0) != before.get("predict", 0):
            self.predict_latencies.append(spent)
        return decision

    def trials_needed(self) -> int | None:
        return self.inner.trials_needed()

    def predictor_calls(self) -> dict[str, int]:
        return self.inner.predictor_calls()

    def close(self) -> None:
        self.inner.close()


@dataclass
class Run:
    """One replayed study: counts, wall seconds, latencies (s) of the decisions that fitted and of
    those that only predicted."""

    workers: int
    predictor: str
    fits: int
    predicts: int
    epochs: int
    best_loss: float | None
    wall_s: float
    fit_latencies: list[float]
    predict_latencies: list[float]


def replay(workers: int, predictor: str, gateway: str | None, reads: int, data: Path) -> Run:
    """One Swift-ASHA study on the table ``data`` (MLPF) with ``workers`` simulated workers."""
    table = CurveTable.from_csv(data)
    params: dict[str, Any] = {"num_reads": reads}
    if predictor == "gateway":
        # GatewayPredictor numbers its models per process (hpo-node-0, -1, ...): studies in
        # several processes need prefixes of their own, or they overwrite each other's models
        params["model_prefix"] = f"scaling-{os.getpid()}-{workers}"
    driver = TimedDriver(make_driver("swift-asha", max_resource=R, eta=ETA, seed=SEED,
                                     predictor=predictor, gateway=gateway,
                                     predictor_params=params))
    t0 = time.perf_counter()
    try:
        res = simulate(table, driver, seed=SEED, max_resource=R, workers=workers)
    finally:
        driver.close()
    return Run(workers, predictor, res.predictor_fits, res.predictor_predicts, res.epochs,
               res.best_loss, time.perf_counter() - t0, driver.fit_latencies,
               driver.predict_latencies)


def _lat(values: list[float]) -> str:
    """``p50 / p99`` in ms."""
    if not values:
        return "-"
    p50, p99 = np.percentile(values, [50, 99]) * 1000
    return f"{p50:.0f} / {p99:.0f}"


def gateway_commit() -> str:
    out = subprocess.run(["git", "log", "-1", "--format=%h %cI", "--", "qpu_gateway"],
                         cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                         check=False)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "qpu_gateway"],
                           cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                           check=False).stdout.strip()
    return out.stdout.strip() + (" (+ uncommitted changes)" if dirty else "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="8,32,128,512", help="simulated workers W per study")
    p.add_argument("--concurrency", default="1,2,4", help="studies K at once against one gateway")
    p.add_argument("--concurrency-workers", type=int, default=32, help="W of each of the K studies")
    p.add_argument("--reads", type=int, default=100, help="QSVR num_reads of every Fit")
    p.add_argument("--sampling-workers", type=int, default=2, help="the gateway's sampling workers")
    p.add_argument("--data", type=Path, default=DATA, help="learning-curve table (default: MLPF)")
    p.add_argument("--out", type=Path, default=None, help="write the raw numbers here as JSON")
    args = p.parse_args()
    ws = [int(w) for w in args.workers.split(",") if w]
    ks = [int(k) for k in args.concurrency.split(",") if k]
    load = os.getloadavg()
    print(f"gateway code: {gateway_commit()}; load average at start {load[0]:.2f}, "
          f"{load[1]:.2f}, {load[2]:.2f}; {os.cpu_count()} CPUs", flush=True)
    raw: dict[str, Any] = {"reads": args.reads, "sampling_workers": args.sampling_workers,
                           "gateway_commit": gateway_commit(), "studies": [], "concurrent": []}
    with tempfile.TemporaryDirectory() as tmp, GatewayProcess(
        Path(tmp) / "store.sqlite", "--backend", "neal", "--sampling-workers",
        str(args.sampling_workers),
    ) as gw:
        print(f"\n### One study per W (Swift-ASHA, MLPF, R = {R}, eta = {ETA}, seed {SEED}, "
              f"{args.reads} reads, neal, {args.sampling_workers} sampling workers)\n")
        print("| W | epochs | Fits | Predicts | Fits/s | Predicts/s | Fit decision p50 / p99 ms | "
              "Predict decision p50 / p99 ms | wall s gateway | wall s in-process | slowdown | "
              "same decisions |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
        for w in ws:
            g = replay(w, "gateway", gw.address, args.reads, args.data)
            q = replay(w, "qsvr", None, args.reads, args.data)
            same = (g.epochs, g.best_loss, g.fits) == (q.epochs, q.best_loss, q.fits)
            print(f"| {w} | {g.epochs} | {g.fits} | {g.predicts} | {g.fits / g.wall_s:.2f} | "
                  f"{g.predicts / g.wall_s:.2f} | {_lat(g.fit_latencies)} | "
                  f"{_lat(g.predict_latencies)} | {g.wall_s:.1f} | {q.wall_s:.1f} | "
                  f"{g.wall_s / q.wall_s:.2f} | {'yes' if same else 'no'} |", flush=True)
            raw["studies"].append({"gateway": asdict(g), "in_process": asdict(q)})
        cw = args.concurrency_workers
        print(f"\n### K studies at once (W = {cw} each) against the one gateway\n")
        print("| K | simulated workers | Fits | Predicts | wall s | aggregate Fits/s | "
              "aggregate Predicts/s | Fit decision p50 / p99 ms | Predict decision p50 / p99 ms |")
        print("|---|---|---|---|---|---|---|---|---|", flush=True)
        for k in ks:
            t0 = time.perf_counter()
            with ProcessPoolExecutor(k) as pool:
                runs = list(pool.map(replay, [cw] * k, ["gateway"] * k, [gw.address] * k,
                                     [args.reads] * k, [args.data] * k))
            wall = time.perf_counter() - t0
            fits = sum(r.fits for r in runs)
            predicts = sum(r.predicts for r in runs)
            fit_lat = [x for r in runs for x in r.fit_latencies]
            predict_lat = [x for r in runs for x in r.predict_latencies]
            print(f"| {k} | {k * cw} | {fits} | {predicts} | {wall:.1f} | {fits / wall:.2f} | "
                  f"{predicts / wall:.1f} | {_lat(fit_lat)} | {_lat(predict_lat)} |", flush=True)
            raw["concurrent"].append({"k": k, "wall_s": wall, "runs": [asdict(r) for r in runs]})
    load = os.getloadavg()
    print(f"\nload average at end {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gateway_scaling.json").write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    sys.exit(main())
