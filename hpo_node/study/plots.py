"""A study's pictures: ``curves.png`` (every learning curve) and ``best_vs_epochs.png``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpo_node.study.config import StudyConfig

# outcome -> (legend label, line style); the order is the legend's
_STYLES: dict[str, tuple[str, dict[str, Any]]] = {
    "finished": ("reached R", {"color": "tab:green", "lw": 1.2, "alpha": 0.8}),
    "stopped": ("stopped by the algorithm", {"color": "tab:gray", "lw": 0.8, "alpha": 0.6}),
    "stopped-by-prediction": ("stopped by prediction",
                              {"color": "tab:red", "lw": 1.0, "ls": "--", "alpha": 0.8}),
    "stopped-early": ("stopped at a decision point without a prediction",
                      {"color": "tab:orange", "lw": 1.0, "ls": "-.", "alpha": 0.8}),
    "error": ("failed", {"color": "black", "lw": 1.0, "ls": ":", "alpha": 0.8}),
    "other": ("not finished (budget, interruption)", {"color": "tab:purple", "lw": 0.8,
                                                      "alpha": 0.6}),
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(cfg: StudyConfig, n: int) -> str:
    searcher = "" if cfg.searcher == "random" else f", searcher {cfg.searcher}"
    predictor = f", predictor {cfg.predictor}" if cfg.uses_predictor else ""
    return (f"{cfg.name}: {cfg.algorithm}{searcher}{predictor}, {n} trials, "
            f"R = {cfg.max_resource}, eta = {cfg.eta}")


def _log_scale(values: Sequence[float], cfg: StudyConfig) -> bool:
    return cfg.mode == "min" and bool(values) and min(values) > 0


def plot_curves(scheduler: Any, cfg: StudyConfig, path: Path,
                best: tuple[str, float] | None = None) -> None:
    """Every trial's curve, styled by outcome (a trial stopped after one epoch is a dot); trials
    stopped by prediction end in ``x``, with the predicted metric as ``o`` at the epoch it was
    predicted for (the next rung, or R for the forecast rules and the gate); the best
    trial at R drawn over the rest. The legend stands beside the axes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 5.5))
    shown: set[str] = set()
    finite: list[float] = []
    predicted = False
    for tid, rec in scheduler.records.items():
        if not rec.curve or (best is not None and tid == best[0]):
            continue
        ys = [math.nan if v is None else float(v) for v in rec.curve]
        finite += [y for y in ys if not math.isnan(y)]
        xs = list(range(1, len(ys) + 1))
        kind = rec.status if rec.status in _STYLES else "other"
        label, style = _STYLES[kind]
        ax.plot(xs, ys, marker="o" if len(ys) == 1 else None, ms=3,
                label=None if kind in shown else label, **style)
        shown.add(kind)
        if kind == "stopped-by-prediction":
            ax.plot(xs[-1], ys[-1], "x", color="tab:red", ms=6)
            if rec.predicted is not None:
                predicted = True
                at = rec.target if rec.predicted_epoch is None else rec.predicted_epoch
                ax.plot(at, rec.predicted, "o", mfc="none", color="tab:red", ms=5)
    if predicted:
        ax.plot([], [], "o", mfc="none", color="tab:red", ms=5,
                label=f"the prediction that stopped it (predicted {cfg.metric} at the epoch "
                      "it is for)")
    if best is not None:
        rec = scheduler.records[best[0]]
        ys = [math.nan if v is None else float(v) for v in rec.curve]
        finite += [y for y in ys if not math.isnan(y)]
        ax.plot(range(1, len(ys) + 1), ys, color="tab:blue", lw=2.6, zorder=5,
                label=f"best: {best[0]}, {cfg.metric} {best[1]:.4g}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(cfg.metric)
    if _log_scale(finite, cfg):
        ax.set_yscale("log")
    ax.set_xlim(0.5, cfg.max_resource + 0.5)
    ax.set_title(_title(cfg, len(scheduler.records)), fontsize=10)
    order = [label for label, _ in _STYLES.values()]
    handles, labels = ax.get_legend_handles_labels()
    ranked = sorted(zip(labels, handles, strict=True),
                    key=lambda lh: order.index(lh[0]) if lh[0] in order else len(order))
    ax.legend([h for _, h in ranked], [lb for lb, _ in ranked], loc="upper left",
              bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def best_vs_epochs(events: Sequence[tuple[str, int, float | None]], max_resource: int,
                   mode: str) -> list[tuple[int, float | None, float | None]]:
    """``(epochs consumed, best value at any epoch, best value at R)`` after each epoch, from
    :class:`hpo_node.study.trace.EpochTrace` events (``None`` while there is none)."""
    better = max if mode == "max" else min
    any_best: float | None = None
    final_best: float | None = None
    out = []
    for k, (_, epoch, value) in enumerate(events, start=1):
        if value is not None:
            any_best = value if any_best is None else better(any_best, value)
            if epoch == max_resource:
                final_best = value if final_best is None else better(final_best, value)
        out.append((k, any_best, final_best))
    return out


def plot_best_vs_epochs(rows: Sequence[tuple[int, float | None, float | None]],
                        cfg: StudyConfig, n_trials: int, path: Path) -> None:
    """Best value found vs epochs consumed (step plots): at R (what the study returns) and at any
    epoch; the x-axis spans the epochs used, annotated with what training every trial to R
    would use."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    xs = [r[0] for r in rows]
    for i, label, style in ((2, f"best {cfg.metric} at R = {cfg.max_resource}",
                             {"color": "tab:blue", "lw": 2.0}),
                            (1, f"best {cfg.metric} at any epoch",
                             {"color": "tab:gray", "lw": 1.0, "ls": "--"})):
        ys = [math.nan if r[i] is None else r[i] for r in rows]
        ax.step(xs, ys, where="post", label=label, **style)
        # a dot where the best changes, so a best found at the last epoch is seen too
        changes = [(x, y) for k, (x, y) in enumerate(zip(xs, ys, strict=True))
                   if not math.isnan(y) and (k == 0 or y != ys[k - 1])]
        if changes:
            ax.plot(*zip(*changes, strict=True), ls="none", marker="o", ms=3.5,
                    color=style["color"])
    finite = [v for r in rows for v in r[1:] if v is not None]
    if _log_scale(finite, cfg):
        ax.set_yscale("log")
    full = n_trials * cfg.max_resource
    used = xs[-1] if xs else 0
    ax.annotate(f"{used} epochs used; every trial to R would use {full}", (0.99, 0.97),
                xycoords="axes fraction", ha="right", va="top", fontsize=8)
    ax.set_xlim(0, max(used, 1) * 1.02)
    ax.set_xlabel("epochs consumed")
    ax.set_ylabel(cfg.metric)
    ax.set_title(_title(cfg, n_trials), fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
