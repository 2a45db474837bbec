"""The gateway-only demo: qpu-gateway serving an HPO node's predictions, no Ray, no training.

1. Generates a table of synthetic learning curves.
2. Starts ``qpu-gateway serve`` as a child process (neal backend, SQLite store in the output
   directory) on a free port and waits for its health check.
3. QSVR as a service: fits the final loss from the first 25% of 20 curves over gRPC, predicts every
   other curve, reports R² and the ensemble's spread.
4. HPO: replays Hyperband and Swift-Hyperband on the curves, Swift asking the gateway for
   predicted final losses, and compares epochs consumed and best loss found.
5. Stops the gateway (SIGTERM: graceful) and writes everything to the output directory.

    .venv/bin/python examples/gateway_demo.py --out results/demo

(The main job, ``bash scripts/run.sh``, is a real Ray Tune study: ``hpo-node run``.)
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from hpo_node.synthetic import synthetic_table
from qpu_gateway.client import GatewayClient
from qpu_gateway.process import GatewayProcess

HPO_NODE = "import sys; from hpo_node.cli import main; sys.exit(main())"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/demo", help="output directory")
    p.add_argument("--rows", type=int, default=200, help="synthetic configurations")
    p.add_argument("--epochs", type=int, default=64, help="epochs per curve (R)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    table = synthetic_table(args.rows, args.epochs, seed=args.seed)
    curves_csv = out / "curves.csv"
    with open(curves_csv, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*table.hparam_names, *(f"loss_{e}" for e in range(args.epochs))])
        w.writerows(np.column_stack([table.hparams, table.curves]).tolist())
    print(f"[1/4] {args.rows} synthetic learning curves x {args.epochs} epochs -> {curves_csv}")

    gateway = GatewayProcess(out / "gateway.sqlite", "--backend", "neal",
                             log_path=out / "gateway.log").start()
    address = gateway.address
    try:
        with GatewayClient(address, timeout=120) as client:
            client.wait_until_serving()
            print(f"[2/4] qpu-gateway serving on {address} (backend neal, store {out / 'gateway.sqlite'})")

            known = max(1, args.epochs // 4)
            x, y = table.curves[:, :known], table.curves[:, -1]
            idx = np.random.default_rng(args.seed).permutation(len(y))
            train, test = idx[:20], idx[20:]
            info = client.fit(x[train], y[train], model_id="demo-final-loss", seed=args.seed)
            mean, std = client.predict(info.model_id, x[test])
            r2 = 1 - ((mean - y[test]) ** 2).sum() / ((y[test] - y[test].mean()) ** 2).sum()
            print(
                f"[3/4] QSVR fit over gRPC: {info.num_variables} binary variables, "
                f"{info.members} ensemble members, sampling {info.sample_seconds:.2f} s; "
                f"R² on {len(test)} unseen curves = {r2:.3f}, mean member spread = {std.mean():.4f}"
            )

            results = {}
            for algorithm, extra in (("hyperband", []),
                                     ("swift-hyperband", ["--predictor", "gateway", "--gateway", address])):
                run = subprocess.run(
                    [sys.executable, "-c", HPO_NODE, "simulate", "--data", str(curves_csv),
                     "--algorithm", algorithm, "--eta", "2", "--seed", str(args.seed), "--json",
                     *extra],
                    capture_output=True, text=True, check=False,
                )
                if run.returncode != 0:
                    raise SystemExit(f"hpo-node simulate {algorithm} failed:\n{run.stderr}")
                results[algorithm] = json.loads(run.stdout)
            hb, sw = (results[a]["summary"] for a in ("hyperband", "swift-hyperband"))
            saved = 1 - sw["epochs_mean"] / hb["epochs_mean"]
            print(
                f"[4/4] replayed HPO (R={args.epochs}, eta=2): hyperband {hb['epochs_mean']:.0f} epochs, "
                f"best loss {hb['best_loss_mean']:.4f}; swift-hyperband with gateway predictions "
                f"{sw['epochs_mean']:.0f} epochs ({saved:.0%} fewer), best loss {sw['best_loss_mean']:.4f}"
            )
            models = client.list_models()
            summary = {"address": address, "qsvr_r2": r2, "qsvr_model": info.model_id,
                       "stored_models": len(models), "replay": results}
            (out / "summary.json").write_text(json.dumps(summary, indent=2))
    finally:
        code = gateway.stop()
    print(f"done: gateway stopped (exit {code}); results in {out}/")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
