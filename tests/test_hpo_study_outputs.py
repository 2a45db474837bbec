"""A study's pictures, drawn from a scheduler's trial records (no Ray)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hpo_node.integrations.ray_tune import TrialRecord
from hpo_node.study import study_from_dict
from hpo_node.study.plots import plot_curves


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
