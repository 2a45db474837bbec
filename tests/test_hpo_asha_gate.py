"""Swift-ASHA's champion gate (``rule="gate"``) and its curve-fit forecasters (issue 14)."""

from __future__ import annotations

import json
import math
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpo_node.asha import ASHA, SwiftASHA
from hpo_node.core import Decision, Scheduler
from hpo_node.curvefit import CANDIDATES, GateForecaster, ordering_error
from hpo_node.hyperband import SwiftHyperband
from hpo_node.predictors import SVRPredictor
from hpo_node.replay import CurveTable, simulate
from tests.test_hpo_schedulers import Recorder, Watcher, _oracle_for, _small_table

PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _svr() -> SVRPredictor:
    return SVRPredictor()


def _gate(predictor: Any, seed: int, eta: int = 3, forecaster: str = "auto") -> SwiftASHA:
    return SwiftASHA(27, eta, 60, predictor, rule="gate", forecaster=forecaster, seed=seed)


def _final(table: CurveTable, trial_id: str) -> float:
    return float(table.curves[int(trial_id.split("-")[1]), 26])


@PROPERTY
@given(
    seed=st.integers(0, 1000),
    workers=st.integers(1, 5),
    forecaster=st.sampled_from(["auto", "last", "smooth", "pow3"]),
)
def test_gate_never_pauses_the_trial_leading_at_its_resource(
    seed: int, workers: int, forecaster: str
) -> None:
    table = _small_table(seed, rows=120)
    rec = Watcher(_gate(_svr, seed, forecaster=forecaster))
    simulate(table, rec, seed=seed, max_resource=27, workers=workers)
    for trial_id, resource, _ in rec.mid_pauses:
        assert not rec.leads(trial_id, resource), (trial_id, resource)


@PROPERTY
@given(seed=st.integers(0, 1000), workers=st.integers(1, 5), eta=st.sampled_from([2, 3]))
def test_gate_with_the_oracle_pauses_only_trials_truly_worse_than_the_runs_best(
    seed: int, workers: int, eta: int
) -> None:
    """With the oracle every forecast is the true loss at R, so a guard dominates a trial only
    when it is truly better at R, and every guard reaches R (a trial at R, or the champion,
    which is replaced only by a truly better one and trained to R when nothing else can run).
    Guaranteed: every trial the gate paused (on its way to a rung) or held (instead of a
    promotion) and that never reached R is truly worse at R than the run's best loss, so the
    run's best is the best true loss at R among the trials that reached R or that the gate
    judged: the gate never loses a trial that would have beaten the run. (Not guaranteed: that
    the gate keeps whoever ASHA would bring to R; ASHA's own rung cuts still apply.)"""
    table = _small_table(seed, rows=120)
    sched = _gate(_oracle_for(table), seed, eta, forecaster="predictor")
    rec = Watcher(sched)
    run = simulate(table, rec, seed=seed, max_resource=27, workers=workers)
    assert run.best_loss is not None
    judged = {t for t, _, _ in rec.mid_pauses}
    judged |= {t for k in range(len(sched.rungs)) for t in sched.waiting(k)}
    lost = [t for t in judged if len(rec.curves[t]) < 27]
    assert all(_final(table, t) > run.best_loss for t in lost)
    reached = [_final(table, t) for t, c in rec.curves.items() if len(c) == 27]
    assert run.best_loss == min(reached + [_final(table, t) for t in judged])


def test_gate_with_the_oracle_saves_epochs_at_asha_s_best_loss() -> None:
    for seed in (3, 4):
        table = _small_table(seed, rows=120)
        plain = simulate(table, ASHA(27, 3, 60), seed=seed, max_resource=27, workers=2)
        run = simulate(table, _gate(_oracle_for(table), seed, forecaster="predictor"), seed=seed,
                       max_resource=27, workers=2)
        assert run.epochs < plain.epochs
        assert run.best_loss is not None and plain.best_loss is not None
        assert run.best_loss <= plain.best_loss + 1e-12


class _Restore(Recorder):
    """Swaps in a copy after ``at`` reports: a state round trip (JSON) or a pickle."""

    def __init__(self, driver: Any, at: int, how: str) -> None:
        super().__init__(driver)
        self.at, self.how = at, how

    def report(self, trial_id: str, resource: int, loss: float) -> Decision:
        decision = Recorder.report(self, trial_id, resource, loss)
        if sum(1 for e in self.log if e[0] == "report") == self.at:
            self.restored_at = self.driver._forecaster.version
            if self.how == "pickle":
                self.driver = pickle.loads(pickle.dumps(self.driver))
            else:
                fresh = _gate(_svr, 6)
                fresh.load_state_dict(json.loads(json.dumps(self.driver.state_dict())))
                self.driver = fresh
        return decision


@pytest.mark.parametrize("how", ["state", "pickle"])
def test_gate_decides_identically_after_a_mid_run_restore(how: str) -> None:
    table = _small_table(6, rows=120)
    full = Recorder(_gate(_svr, 6))
    simulate(table, full, seed=6, max_resource=27, workers=2)
    fc = full.driver._forecaster
    assert fc.version >= 3 and full.driver.state_dict()["extra"]["committed"]  # champion forced
    reports = sum(1 for e in full.log if e[0] == "report")
    refit_after = []
    for frac in (0.4, 0.75, 0.97):
        rec = _Restore(_gate(_svr, 6), int(reports * frac), how)
        simulate(table, rec, seed=6, max_resource=27, workers=2)
        assert rec.restored_at >= 1 and rec.log == full.log
        refit_after.append(rec.restored_at < fc.version)
    assert any(refit_after)  # a restored forecaster refitted, from the restored generator


def test_gate_state_holds_champion_and_checkpoints_without_it_load() -> None:
    table = _small_table(5, rows=120)

    class Snapshot(Recorder):
        """Keeps the first checkpoint that names a champion."""

        state: dict[str, Any] | None = None

        def report(self, trial_id: str, resource: int, loss: float) -> Decision:
            decision = Recorder.report(self, trial_id, resource, loss)
            if self.state is None and self.driver.state_dict()["extra"]["champion"]:
                self.state = json.loads(json.dumps(self.driver.state_dict()))
            return decision

    rec = Snapshot(_gate(_svr, 5))
    simulate(table, rec, seed=5, max_resource=27, workers=2)
    assert rec.state is not None
    extra = rec.state["extra"]
    assert isinstance(extra["committed"], list)
    assert extra["forecaster"]["format"] == 1 and extra["forecaster"]["chosen"] in CANDIDATES
    for rule in ("gate", "forecast", "paper"):  # checkpoints written before the gate existed
        state = json.loads(json.dumps(rec.state))
        del state["extra"]["champion"], state["extra"]["committed"]
        if rule != "gate":
            state["extra"]["forecaster"] = None
        again = SwiftASHA(27, 3, 60, _svr, rule=rule, seed=5)
        again.load_state_dict(state)
        assert again.state_dict()["extra"]["champion"] is None


def test_gate_forecaster_checkpoint_forecasts_identically_without_refitting() -> None:
    table = _small_table(2, rows=60)
    ids = [f"t-{j}" for j in range(24)]
    curves = {t: list(table.curves[j, : 2 + j % 12]) for j, t in enumerate(ids)}
    fc = GateForecaster("auto", 27, z=0.35, seed=2)
    assert fc.update(curves, ids) and fc.version == 1
    state = json.loads(json.dumps(fc.state()))
    longer = {t: list(table.curves[j, : 4 + j % 12]) for j, t in enumerate(ids)}
    back = GateForecaster("auto", 27, z=0.35, seed=99)
    back.load(state)
    queries = [c[:5] for c in longer.values()]
    assert np.array_equal(back.forecast(queries), fc.forecast(queries), equal_nan=True)
    assert back.update(longer, ids) == fc.update(longer, ids)
    assert np.array_equal(back.forecast(queries), fc.forecast(queries), equal_nan=True)
    assert back.state() == fc.state()
    with pytest.raises(ValueError, match="forecaster state format must be 1"):
        back.load({"ids": [], "lens": [], "pairs": 0, "seed": 1})


def test_gate_refuses_non_positive_losses() -> None:
    fc = GateForecaster("last", 27, z=0.35, min_epochs=4)
    with pytest.raises(ValueError, match=r"loss must be > 0 .*got -0\.5 from trial 'b'"):
        fc.update({"a": [1.0, 0.9], "b": [0.1, -0.5]}, ["a", "b"])
    sched = _gate(_svr, 0)
    sched.add_trial("t-0")
    job = sched.next_job()
    assert job is not None
    with pytest.raises(ValueError, match=r"loss must be > 0 with rule='gate'.*got 0\.0"):
        sched.report("t-0", 1, 0.0)


def test_ordering_error_counts_horizon_weighted_top_quarter_pairs() -> None:
    # from e = 1 to m = 4: curve 0 truly best, forecast worst against both others
    rows = [(0, 1, 4, 3.0, 1.0), (1, 1, 4, 2.0, 2.0), (2, 1, 4, 1.0, 3.0)]
    wrong, total = ordering_error(rows)
    assert (wrong, total) == (4.0, 4.0)  # pairs (0, 1), (0, 2), weight log2(4) each
    assert ordering_error([(a, e, t, y, y) for a, e, t, _, y in rows]) == (0.0, 4.0)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: SwiftASHA(27, 3, 30, _svr, rule="gate", forecaster="knn"),
         "forecaster must be one of 'auto', 'last', 'smooth', 'pow3', 'smooth\\+pow3', "
         "'predictor', got 'knn'"),
        (lambda: SwiftASHA(27, 3, 30, _svr, rule="forecast", forecaster="last"),
         "forecaster is an option of rule='gate', got rule='forecast'"),
        (lambda: SwiftHyperband(27, 3, _svr, rule="gate"),
         "rule must be one of 'forecast', 'paper', got 'gate'"),
        (lambda: SwiftASHA(27, 3, 30, _svr, rule="gate", z=-0.1), "z must be in"),
        (lambda: SwiftASHA(27, 3, 30, _svr, rule="gate", defer=True),
         "options of rule='paper', got rule='gate'"),
        (lambda: GateForecaster("step", 27, z=0.35), "name must be 'auto' or one of"),
    ],
)
def test_gate_constructor_rejects_bad_arguments(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_gate_is_selectable_by_name_and_keeps_the_default_rule() -> None:
    from hpo_node.algorithms import make_driver

    driver = make_driver("swift-asha", max_resource=27, eta=3, n_trials=30, seed=1,
                         options={"rule": "gate"})
    assert isinstance(driver, SwiftASHA) and driver.rule == "gate" and driver.z == 0.35
    assert isinstance(driver, Scheduler)
    assert SwiftASHA(27, 3, 30, _svr).rule == "paper"
    run = simulate(_small_table(1, rows=80), driver, seed=1, max_resource=27, workers=3)
    assert run.best_loss is not None and math.isfinite(run.best_loss)
