"""Swift-Hyperband's forecast rule: the horizon-calibrated band of its forecaster (issue 14)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from hpo_node.core import Decision, Job
from hpo_node.forecast import FinalLossForecaster, HorizonForecaster
from hpo_node.hyperband import Hyperband, SwiftHyperband
from hpo_node.predictors import PredictorSupport, SVRPredictor
from hpo_node.replay import simulate
from hpo_node.synthetic import synthetic_table


def _fitted(cls: type[FinalLossForecaster], curves: np.ndarray) -> FinalLossForecaster:
    forecaster = cls(PredictorSupport(SVRPredictor, 0), 100, z=1.0, min_pairs=15)
    known = {f"t{j}": list(c) for j, c in enumerate(curves)}
    assert forecaster.update(known, list(known))
    return forecaster


def _normalised_errors(forecaster: FinalLossForecaster, curves: np.ndarray, e: int) -> np.ndarray:
    """``log(mean / true) / log(mean / low)`` of the forecasts at R from epoch ``e`` (z = 1)."""
    band = forecaster.forecast([list(c[:e]) for c in curves])
    return np.log(band[:, 1] / curves[:, -1]) / np.log(band[:, 1] / band[:, 0])


@pytest.mark.parametrize("table_seed", [3, 11])
def test_horizon_forecaster_band_matches_held_out_errors_at_every_horizon(table_seed: int) -> None:
    table = synthetic_table(160, 100, table_seed, noise=0.01)
    known, other = table.curves[:60], table.curves[60:]
    calibrated = _fitted(HorizonForecaster, known)
    steps_band = _fitted(FinalLossForecaster, known)
    for e in (4, 12, 40):
        rms = float(np.sqrt(np.mean(_normalised_errors(calibrated, other, e) ** 2)))
        assert 0.6 <= rms <= 1.5, (e, rms)
    # the sqrt(steps) band under-states the error of a forecast from far away
    early = float(np.sqrt(np.mean(_normalised_errors(steps_band, other, 4) ** 2)))
    assert early > 1.8


def test_horizon_forecaster_band_is_wider_for_a_curve_with_more_drop_ahead() -> None:
    table = synthetic_table(120, 100, 5, noise=0.01)
    forecaster = _fitted(HorizonForecaster, table.curves[:60])
    candidates = [list(c[:10]) for c in table.curves[60:]]
    band = forecaster.forecast(candidates)
    half = np.log(band[:, 1] / band[:, 0])
    drop = np.log(np.array([c[-1] for c in candidates]) / band[:, 1])
    assert np.corrcoef(np.abs(drop), half)[0, 1] > 0.9
    # and wider from an earlier epoch for the same curve
    curve = table.curves[60]
    widths = [float(np.log(b[1] / b[0])) for b in forecaster.forecast(
        [list(curve[:e]) for e in (3, 10, 30)])]
    assert widths[0] > widths[1] > widths[2]


def test_horizon_forecaster_without_calibrated_horizons_is_the_step_band() -> None:
    """Two-epoch curves give no held-out forecast of at least 2 epochs: the parent's band."""
    curves = synthetic_table(30, 100, 2).curves[:, :2]
    calibrated = _fitted(HorizonForecaster, curves)
    steps_band = _fitted(FinalLossForecaster, curves)
    assert calibrated._horizons == []  # type: ignore[attr-defined]
    probe = [list(c[:2]) for c in synthetic_table(40, 100, 8).curves]
    np.testing.assert_array_equal(calibrated.forecast(probe), steps_band.forecast(probe))


@pytest.mark.parametrize(
    ("n_epochs", "table_seed", "noise", "run_seed"),
    [(100, 11, 0.01, 7), (12, 11, 0.005, 0)],
)
def test_swift_hyperband_defaults_keep_hyperbands_best_where_the_step_band_lost_it(
    n_epochs: int, table_seed: int, noise: float, run_seed: int
) -> None:
    """The two seeds that missed issue 14's figure: a slow starter that ends best was stopped at
    an early decision point (synthetic-11 seed 7, synthetic-12ep-11 seed 0)."""
    table = synthetic_table(300, n_epochs, table_seed, noise=noise)
    plain = simulate(table, Hyperband(n_epochs, 2), seed=run_seed, max_resource=n_epochs)
    swift = simulate(table, SwiftHyperband(n_epochs, 2, SVRPredictor, seed=run_seed),
                     seed=run_seed, max_resource=n_epochs)
    assert swift.best_loss == plain.best_loss
    assert swift.epochs < 0.8 * plain.epochs


class _Swapper:
    """Drives a fresh Swift-Hyperband, logging jobs and decisions; after the ``restore_at``-th
    report it swaps in a copy restored from the JSON state dict, after ``pickle_at`` a pickled copy."""

    def __init__(self, restore_at: int = 0, pickle_at: int = 0) -> None:
        self.driver = self.build()
        self.restore_at, self.pickle_at = restore_at, pickle_at
        self.log: list[object] = []
        self.reports = 0
        self.horizons_at_restore: list[tuple[float, float, float]] = []

    @staticmethod
    def build() -> SwiftHyperband:
        return SwiftHyperband(100, 2, SVRPredictor, seed=7)

    def __getattr__(self, name: str) -> object:
        return getattr(self.driver, name)

    def next_job(self) -> Job | None:
        job = self.driver.next_job()
        self.log.append(job)
        return job

    def report(self, trial_id: str, resource: int, loss: float) -> Decision:
        decision = self.driver.report(trial_id, resource, loss)
        self.log.append((trial_id, resource, decision))
        self.reports += 1
        if self.reports == self.restore_at:
            self.horizons_at_restore = list(self.driver._forecaster._horizons)
            fresh = self.build()
            fresh.load_state_dict(json.loads(json.dumps(self.driver.state_dict())))
            self.driver = fresh
        if self.reports == self.pickle_at:
            self.driver = pickle.loads(pickle.dumps(self.driver))
        return decision


def test_swift_hyperband_restored_or_unpickled_mid_run_rebuilds_the_same_calibration() -> None:
    table = synthetic_table(300, 100, 11, noise=0.01)
    full = _Swapper()
    simulate(table, full, seed=7, max_resource=100)  # type: ignore[arg-type]
    swapped = _Swapper(restore_at=600, pickle_at=1200)
    simulate(table, swapped, seed=7, max_resource=100)  # type: ignore[arg-type]
    assert swapped.horizons_at_restore, "no calibrated horizon yet: the test restores too early"
    assert swapped.log == full.log
    assert swapped.driver._forecaster._horizons == full.driver._forecaster._horizons
