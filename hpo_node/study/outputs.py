"""A study's outputs: trials.csv, best.json, summary.json, curves.png."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo_node.study.config import StudyConfig


def trial_rows(scheduler: Any, cfg: StudyConfig) -> list[dict[str, Any]]:
    """One dict per trial (the rows of ``trials.csv``): outcome, epochs, last/final/best metric,
    prediction when stopped by it, and every config entry as ``config.<name>``."""
    keys = sorted({k for r in scheduler.records.values() for k in r.config})
    r_max = cfg.max_resource
    m = cfg.metric
    rows = []
    for tid, rec in scheduler.records.items():
        finite = [v for v in rec.curve if v is not None]
        best = (max(finite) if cfg.mode == "max" else min(finite)) if finite else None
        rows.append({
            "trial_id": tid,
            "decision": rec.status,
            "epochs": len(rec.curve),
            f"last_{m}": rec.curve[-1] if rec.curve else None,
            f"final_{m}": rec.curve[r_max - 1] if len(rec.curve) >= r_max else None,
            f"best_{m}": best,
            f"predicted_{m}": rec.predicted,
            "predicted_spread": rec.predicted_spread,
            "diverged": int(rec.diverged),
            "jobs": rec.jobs,
            **{f"config.{k}": rec.config.get(k) for k in keys},
        })
    return rows


def write_trials_csv(scheduler: Any, cfg: StudyConfig, path: Path) -> None:
    """:func:`trial_rows` as CSV (empty cells for ``None``)."""
    rows = trial_rows(scheduler, cfg)
    with open(path, "w", newline="") as fh:
        if not rows:
            return
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for row in rows:
            w.writerow({k: _cell(v) for k, v in row.items()})


def _cell(v: Any) -> Any:
    return "" if v is None else v


def plot_curves(scheduler: Any, cfg: StudyConfig, path: Path) -> None:
    """Every learning curve; trials stopped by prediction dashed with an ``x`` at their end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    styles = {
        "finished": {"color": "tab:green", "lw": 1.6, "alpha": 0.9},
        "stopped-by-prediction": {"color": "tab:red", "lw": 1.0, "ls": "--", "alpha": 0.8},
    }
    labelled: set[str] = set()
    for rec in scheduler.records.values():
        if not rec.curve:
            continue
        ys = [math.nan if v is None else v for v in rec.curve]
        xs = list(range(1, len(ys) + 1))
        kind = rec.status if rec.status in styles else "other"
        style = styles.get(kind, {"color": "tab:gray", "lw": 0.8, "alpha": 0.5})
        label = {"finished": f"reached R = {cfg.max_resource}",
                 "stopped-by-prediction": "stopped by prediction",
                 "other": "stopped by the algorithm / other"}[kind]
        ax.plot(xs, ys, label=None if kind in labelled else label, **style)
        labelled.add(kind)
        if kind == "stopped-by-prediction":
            ax.plot(xs[-1], ys[-1], "x", color="tab:red", ms=7)
            if rec.predicted is not None:
                ax.plot(rec.target, rec.predicted, "o", mfc="none", color="tab:red", ms=5)
    ax.set_xlabel("epoch")
    ax.set_ylabel(cfg.metric)
    ax.set_yscale("log" if cfg.mode == "min" else "linear")
    ax.set_title(f"{cfg.name}: {cfg.algorithm}, R = {cfg.max_resource}, eta = {cfg.eta} "
                 "(o: predicted loss at the rung)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass
class StudyResult:
    """What :func:`run_study` and :func:`optimize` return.

    ``study_dir``: where the outputs went (``trials.csv``, ``best.json``, ``curves.png``,
    ``summary.json``); ``best_config``/``best_value``: the best trial at ``max_resource``
    (``None`` if no trial got there); ``trials``: the rows of ``trials.csv``; ``summary``: the
    content of ``summary.json``; ``scheduler``: the Ray Tune scheduler with every trial's record.
    """

    study_dir: Path
    summary: dict[str, Any]
    scheduler: Any
    best_config: dict[str, Any] | None = None
    best_value: float | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)


def summarize(cfg: StudyConfig, scheduler: Any, wall_s: float, gateway: str | None,
             experiment_dir: Path) -> dict[str, Any]:
    counts = scheduler.status_counts()
    epochs_by = {}
    for rec in scheduler.records.values():
        epochs_by[rec.status] = epochs_by.get(rec.status, 0) + len(rec.curve)
    n = len(scheduler.records)
    best = scheduler.best()
    return {
        "study": cfg.name,
        "algorithm": cfg.algorithm,
        "searcher": cfg.searcher,
        "max_resource": cfg.max_resource,
        "eta": cfg.eta,
        "seed": cfg.seed,
        "trials": n,
        "trials_by_decision": counts,
        "epochs_used": scheduler.epochs_used(),
        "epochs_by_decision": epochs_by,
        "epochs_if_every_trial_ran_to_R": n * cfg.max_resource,
        "best": None if best is None else {"trial_id": best[0], cfg.metric: best[1]},
        "predictor": scheduler.log.counters() if scheduler.log is not None else None,
        "predictor_calls": scheduler.core.predictor_calls(),
        "gateway": gateway,
        "notes": list(cfg.notes),
        "wall_seconds": wall_s,
        "ray_experiment_dir": str(experiment_dir),
    }


def write_outputs(cfg: StudyConfig, scheduler: Any, summary: dict[str, Any]) -> None:
    """``trials.csv``, ``best.json``, ``curves.png``, ``summary.json``, ``scheduler_state.json``."""
    d = cfg.study_dir
    write_trials_csv(scheduler, cfg, d / "trials.csv")
    best = scheduler.best()
    best_obj: dict[str, Any] = {"metric": cfg.metric, "mode": cfg.mode, "found": best is not None}
    if best is not None:
        rec = scheduler.records[best[0]]
        best_obj.update(trial_id=best[0], value=best[1], epochs=len(rec.curve), config=rec.config)
    (d / "best.json").write_text(json.dumps(best_obj, indent=2))
    plot_curves(scheduler, cfg, d / "curves.png")
    (d / "summary.json").write_text(json.dumps(summary, indent=2))
    scheduler.save(str(d / "scheduler_state.json"))



def print_summary(summary: dict[str, Any], study_dir: Path, out: Any) -> None:
    by = summary["trials_by_decision"]
    print(f"\nepochs used: {summary['epochs_used']} "
          f"(every trial to R would be {summary['epochs_if_every_trial_ran_to_R']}); "
          f"trials: " + ", ".join(f"{k} {v}" for k, v in sorted(by.items())), file=out)
    if summary["best"] is not None:
        print(f"best: {summary['best']}", file=out)
    if summary["predictor"] is not None:
        p = summary["predictor"]
        print(f"predictor: {p['decisions_with_prediction']} decisions with a prediction, "
              f"{p['decisions_without_prediction']} without (outages {p['outages']})", file=out)
    print(f"wrote {study_dir}/trials.csv, best.json, curves.png, summary.json "
          f"in {summary['wall_seconds']:.1f} s", file=out, flush=True)

