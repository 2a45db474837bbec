"""A study's pictures, summary lines and log lines, from a scheduler's trial records (no Ray)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hpo_node.integrations.ray_tune import TrialRecord
from hpo_node.study import study_from_dict
from hpo_node.study.outputs import print_summary
from hpo_node.study.plots import best_vs_epochs, plot_best_vs_epochs, plot_curves


def _legend(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The legend texts of every figure saved from now on (in place of the saved file)."""
    from matplotlib.figure import Figure

    seen: list[list[str]] = []

    def savefig(fig: Figure, *args: Any, **kwargs: Any) -> None:
        seen.append([t.get_text() for ax in fig.axes if ax.get_legend() is not None
                     for t in ax.get_legend().get_texts()])

    monkeypatch.setattr(Figure, "savefig", savefig)
    return seen


def test_hpo_study_curves_legend_names_the_study_metric(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The marker of the prediction that stopped a trial is labelled with ``study.metric`` (an
    accuracy, mode = "max"), not "loss"."""
    cfg = study_from_dict({
        "study": {"name": "acc", "trials": 9, "metric": "val_accuracy", "mode": "max"},
        "algorithm": {"name": "asha", "max_resource": 9, "eta": 3},
        "space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1}},
    })
    records = {
        "t1": TrialRecord({"lr": 0.01}, status="finished", curve=[0.5, 0.7, 0.9] * 3),
        "t2": TrialRecord({"lr": 0.001}, status="stopped-by-prediction", curve=[0.3, 0.35],
                          predicted=0.5, predicted_epoch=3, target=3),
    }
    legends = _legend(monkeypatch)
    plot_curves(SimpleNamespace(records=records), cfg, tmp_path / "curves.png",
                best=("t1", 0.9))
    (labels,) = legends
    assert ("the prediction that stopped it (predicted val_accuracy at the epoch it is for)"
            in labels)
    assert not any("loss" in label for label in labels), labels


def test_hpo_study_best_vs_epochs_shows_a_best_at_r_found_at_the_last_epoch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The only trial at R finished at the last epoch consumed: its one point is drawn as a
    marker (a step line through one point drew nothing)."""
    from matplotlib.figure import Figure

    cfg = study_from_dict({
        "study": {"name": "b", "trials": 9},
        "algorithm": {"name": "asha", "max_resource": 3, "eta": 3},
        "space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1}},
    })
    events = [("t1", 1, 0.5), ("t2", 1, 0.4), ("t2", 2, 0.3), ("t2", 3, 0.2)]
    drawn: list[tuple[Any, Any]] = []

    def savefig(fig: Figure, *args: Any, **kwargs: Any) -> None:
        drawn.extend((line.get_marker(), list(line.get_ydata())) for ax in fig.axes
                     for line in ax.get_lines())

    monkeypatch.setattr(Figure, "savefig", savefig)
    rows = best_vs_epochs(events, 3, "min")
    assert [r[2] for r in rows] == [None, None, None, 0.2]
    plot_best_vs_epochs(rows, cfg, 9, tmp_path / "best.png")
    assert ("o", [0.2]) in drawn
    assert ("o", [0.5, 0.4, 0.3, 0.2]) in drawn


def test_hpo_study_summary_without_a_trial_at_r_says_so(capsys: pytest.CaptureFixture[str],
                                                         tmp_path: Path) -> None:
    summary = {"epochs_used": 7, "epochs_if_every_trial_ran_to_R": 27, "max_resource": 9,
               "trials_by_decision": {"error": 1, "stopped": 2}, "best": None, "errors": [],
               "predictor": None, "wall_seconds": 1.0}
    print_summary(summary, tmp_path, sys.stdout)
    assert ("best: none, no trial reached max_resource = 9 (how far each got: trials.csv; "
            'best.json says "found": false)\n') in capsys.readouterr().out


def test_hpo_study_tune_log_lines_that_mislead_a_study_user_are_dropped_or_reworded() -> None:
    """A slow Swift decision (the predictor's fit) made Tune warn four times, advising to report
    less often; during a study it is one line that says what was slow. Tune's closing list of
    incomplete trials and its Tuner.restore hint (the study prints its own --resume line) are
    dropped."""
    import logging

    from hpo_node.study.run import _tune_env

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    util = logging.getLogger("ray.tune.utils.util")
    controller = logging.getLogger("ray.tune.execution.tune_controller")
    tune_log = logging.getLogger("ray.tune.tune")
    keep = Keep()
    for log in (util, controller, tune_log):
        log.addHandler(keep)
    try:
        with _tune_env():
            tune_log.error("Trials did not complete: %s", ["train_3f2a_00001"])
            tune_log.warning("Experiment has been interrupted, but the most recent state was "
                             "saved.\nResume experiment with: Tuner.restore(path=...)")
            for name in ("scheduler.on_trial_result", "process_trial_result"):
                util.warning("The `%s` operation took %.3f s, which may be a performance "
                             "bottleneck.", name, 3.722)
            controller.warning("Processing trial results took 3.722 s, which may be a performance "
                               "bottleneck. Please consider reporting results less frequently to "
                               "Ray Tune.")
            util.warning("The `callbacks.on_trial_result` operation took 1.000 s, which may be a "
                         "performance bottleneck.")
        util.warning("The `process_trial_result` operation took 1.000 s, outside a study.")
    finally:
        for log in (util, controller, tune_log):
            log.removeHandler(keep)
    assert seen == [
        "The `scheduler.on_trial_result` operation took 3.722 s: the study's scheduler deciding "
        "on a result (a Swift decision that fits the predictor waits for the fit)",
        "The `callbacks.on_trial_result` operation took 1.000 s, which may be a performance "
        "bottleneck.",
        "The `process_trial_result` operation took 1.000 s, outside a study.",
    ]
