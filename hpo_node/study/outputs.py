"""A study's outputs: trials.csv, best.json, summary.json, curves.png."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo_node.study.config import StudyConfig


def trial_rows(scheduler: Any, cfg: StudyConfig) -> list[dict[str, Any]]:
    """One dict per trial (the rows of ``trials.csv``): outcome, epochs, last/final/best metric,
    prediction when stopped by it, failures and the last exception's one-line message (decision
    ``error``: the trainable raised), and every config entry as ``config.<name>``."""
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
            "predicted_epoch": rec.predicted_epoch,
            "diverged": int(rec.diverged),
            "jobs": rec.jobs,
            "failures": rec.failures,
            "error": rec.error_message if rec.status == "error" else None,
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


@dataclass
class StudyResult:
    """What :func:`run_study` and :func:`optimize` return.

    ``study_dir``: where the outputs went (``trials.csv``, ``best.json``, ``curves.png``,
    ``summary.json``); ``best_config``/``best_value``: the best trial at ``max_resource``
    (``None`` if no trial got there); ``trials``: the rows of ``trials.csv``; ``summary``: the
    content of ``summary.json``; ``scheduler``: the Ray Tune scheduler with every trial's record;
    ``interrupted``: Ctrl-C stopped the study (continue it with ``resume=True``, or
    ``hpo-node run --resume``).
    """

    study_dir: Path
    summary: dict[str, Any]
    scheduler: Any
    best_config: dict[str, Any] | None = None
    best_value: float | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False


def summarize(cfg: StudyConfig, scheduler: Any, wall_s: float, gateway: str | None,
             experiment_dir: str | Path) -> dict[str, Any]:
    """The content of ``summary.json``; ``experiment_dir``: Ray's experiment directory, a local
    path or a URI (``s3://bucket/prefix/<name>``), recorded as given (a ``Path`` would turn
    ``s3://`` into ``s3:/``)."""
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
        "best": None if best is None else {"trial_id": best[0], cfg.metric: best[1],
                                           "config": dict(scheduler.records[best[0]].config)},
        "errors": errored_trials(scheduler),
        "predictor": scheduler.log.counters() if scheduler.log is not None else None,
        "predictor_calls": scheduler.core.predictor_calls(),
        "gateway": gateway,
        "notes": list(cfg.notes),
        "wall_seconds": wall_s,
        "ray_experiment_dir": str(experiment_dir),
    }


def errored_trials(scheduler: Any) -> list[dict[str, Any]]:
    """``[{"trial_id", "error"}, ...]``: the trials that ended in error (their trainable raised
    and its retries ran out, or it broke the trainable contract), in the order they were added;
    ``error`` is the exception's one-line message (``None`` when unknown)."""
    return [{"trial_id": tid, "error": rec.error_message}
            for tid, rec in scheduler.records.items() if rec.status == "error"]


def succeeded(scheduler: Any) -> bool:
    """Whether at least one trial reported an epoch and did not end in error (with errored
    trials and none such, every trial that ran failed)."""
    return any(rec.curve and rec.status != "error" for rec in scheduler.records.values())


def write_outputs(cfg: StudyConfig, scheduler: Any, summary: dict[str, Any],
                  events: Sequence[tuple[str, int, float | None]] = ()) -> None:
    """``trials.csv``, ``best.json``, ``curves.png``, ``summary.json``, ``scheduler_state.json``,
    and from ``events`` (the epochs in arrival order, :class:`hpo_node.study.trace.EpochTrace`)
    ``best_vs_epochs.csv`` and ``best_vs_epochs.png``."""
    from hpo_node.study.plots import best_vs_epochs, plot_best_vs_epochs, plot_curves

    d = cfg.study_dir
    write_trials_csv(scheduler, cfg, d / "trials.csv")
    best = scheduler.best()
    best_obj: dict[str, Any] = {"metric": cfg.metric, "mode": cfg.mode, "found": best is not None}
    if best is not None:
        rec = scheduler.records[best[0]]
        best_obj.update(trial_id=best[0], value=best[1], epochs=len(rec.curve), config=rec.config)
    (d / "best.json").write_text(json.dumps(best_obj, indent=2))
    plot_curves(scheduler, cfg, d / "curves.png", best)
    rows = best_vs_epochs(events, cfg.max_resource, cfg.mode)
    with open(d / "best_vs_epochs.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epochs", f"best_{cfg.metric}_any_epoch", f"best_{cfg.metric}_at_R"])
        w.writerows([k, _cell(a), _cell(f)] for k, a, f in rows)
    plot_best_vs_epochs(rows, cfg, len(scheduler.records), d / "best_vs_epochs.png")
    (d / "summary.json").write_text(json.dumps(summary, indent=2))
    scheduler.save(str(d / "scheduler_state.json"))


def print_summary(summary: dict[str, Any], study_dir: Path, out: Any) -> None:
    by = summary["trials_by_decision"]
    print(f"\nepochs used: {summary['epochs_used']} "
          f"(every trial to R would be {summary['epochs_if_every_trial_ran_to_R']}); "
          f"trials: " + ", ".join(f"{k} {v}" for k, v in sorted(by.items())), file=out)
    if summary["best"] is not None:
        print(f"best: {summary['best']}", file=out)
    else:
        print(f"best: none, no trial reached max_resource = {summary['max_resource']} (how far "
              f"each got: trials.csv; best.json says \"found\": false)", file=out)
    errors = summary.get("errors") or []
    if errors:
        first = errors[0]
        print(f"errors: {len(errors)} trial(s) failed (decision 'error' in trials.csv); the first, "
              f"trial {first['trial_id']}: {first['error'] or 'unknown error'}", file=out)
    if summary["predictor"] is not None:
        p = summary["predictor"]
        print(f"predictor: {p['fits_ok']} fits, {p['decisions_with_prediction']} rows predicted, "
              f"{p['decisions_without_prediction']} answered without it (outages "
              f"{p['outages']})", file=out)
    print(f"the study took {summary['wall_seconds']:.1f} s; wrote {study_dir}/trials.csv, "
          "best.json, curves.png, best_vs_epochs.png/.csv, summary.json, scheduler_state.json",
          file=out, flush=True)

