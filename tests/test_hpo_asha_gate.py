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
from hpo_node.curvefit import CANDIDATES, STATE_FORMAT, GateForecaster, ordering_error
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


def _mapped(table: CurveTable, scale: float, shift: float) -> CurveTable:
    """The table with every loss ``L`` replaced by ``scale L + shift`` (``shift = -2``: minus an
    accuracy ``2 - L``, every loss < 0, as Ray Tune's ``mode="max"`` feeds it)."""
    return CurveTable.from_arrays(scale * table.curves + shift, table.hparams, table.hparam_names)


def _row(table: CurveTable, loss: float) -> int:
    return int(np.argmin(np.abs(table.curves[:, -1] - loss)))


@PROPERTY
@given(
    seed=st.integers(0, 1000),
    workers=st.integers(1, 5),
    forecaster=st.sampled_from(["auto", "last", "smooth", "pow3"]),
    negated=st.booleans(),
)
def test_gate_never_pauses_the_trial_leading_at_its_resource(
    seed: int, workers: int, forecaster: str, negated: bool
) -> None:
    table = _small_table(seed, rows=120)
    if negated:  # every loss < 0: the forecasters work in loss units
        table = _mapped(table, 1.0, -2.0)
    rec = Watcher(_gate(_svr, seed, forecaster=forecaster))
    simulate(table, rec, seed=seed, max_resource=27, workers=workers)
    for trial_id, resource, _ in rec.mid_pauses:
        assert not rec.leads(trial_id, resource), (trial_id, resource)


@PROPERTY
@given(
    seed=st.integers(0, 1000),
    workers=st.integers(1, 5),
    eta=st.sampled_from([2, 3]),
    negated=st.booleans(),
)
def test_gate_with_the_oracle_pauses_only_trials_truly_worse_than_the_runs_best(
    seed: int, workers: int, eta: int, negated: bool
) -> None:
    """With the oracle every forecast is the true loss at R, so a guard dominates a trial only
    when it is truly better at R, and every guard reaches R (a trial at R, or the champion,
    which is replaced only by a truly better one and trained to R when nothing else can run).
    Guaranteed: every trial the gate paused (on its way to a rung) or held (instead of a
    promotion) and that never reached R is truly worse at R than the run's best loss, so the
    run's best is the best true loss at R among the trials that reached R or that the gate
    judged: the gate never loses a trial that would have beaten the run. (Not guaranteed: that
    the gate keeps whoever ASHA would bring to R; ASHA's own rung cuts still apply.) Also with
    every loss < 0 (compared as losses)."""
    table = _small_table(seed, rows=120)
    if negated:
        table = _mapped(table, 1.0, -2.0)
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
                fresh = _gate(_svr, 3)
                fresh.load_state_dict(json.loads(json.dumps(self.driver.state_dict())))
                self.driver = fresh
        return decision


@pytest.mark.parametrize("how", ["state", "pickle"])
def test_gate_decides_identically_after_a_mid_run_restore(how: str) -> None:
    table = _small_table(3, rows=120)
    full = Recorder(_gate(_svr, 3))
    simulate(table, full, seed=3, max_resource=27, workers=2)
    fc = full.driver._forecaster
    assert fc.version >= 3 and full.driver.state_dict()["extra"]["committed"]  # champion forced
    reports = sum(1 for e in full.log if e[0] == "report")
    refit_after = []
    for frac in (0.4, 0.75, 0.97):
        rec = _Restore(_gate(_svr, 3), int(reports * frac), how)
        simulate(table, rec, seed=3, max_resource=27, workers=2)
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
    assert extra["forecaster"]["format"] == STATE_FORMAT
    assert extra["forecaster"]["chosen"] in CANDIDATES
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


def test_gate_forecaster_last_corrects_the_loss_at_e_by_the_held_out_drop_to_r() -> None:
    # Curves that keep falling: "last" (the loss at e) is biased high for the loss at R, and the
    # calibration's bias per doubling moves the mean forecast down, further from farther away.
    t = np.arange(1, 33, dtype=np.float64)
    rates = np.linspace(0.3, 0.8, 40)
    table = {f"t-{j}": list(0.2 + np.exp(-r * np.log1p(t))) for j, r in enumerate(rates)}
    ids = list(table)
    known = {k: c[: 8 + 8 * (j % 4)] for j, (k, c) in enumerate(table.items())}
    fc = GateForecaster("last", 32, z=0.35, seed=0)
    assert fc.update(known, ids)
    curve = table["t-7"]
    low2, mean2, high2 = fc.forecast([curve[:2]])[0]
    low4, mean4, high4 = fc.forecast([curve[:4]])[0]
    assert low2 < mean2 < high2 and low4 < mean4 < high4
    assert mean2 < curve[1] and mean4 < curve[3]
    assert curve[1] - mean2 > curve[3] - mean4 > 0
    assert abs(math.log(mean4 / curve[31])) < abs(math.log(curve[3] / curve[31]))


@pytest.mark.parametrize("seed", [0, 2])
def test_gate_on_a_negated_table_pauses_and_finds_the_positive_tables_best(seed: int) -> None:
    """Every loss < 0 (minus an accuracy): the gate runs in loss units, pauses trials, brings the
    positive table's best configuration (and ASHA's) to R and saves epochs vs ASHA (fewer than
    in log space here: 159 and 156 epochs vs 158 and 128, ASHA 172)."""
    table = _small_table(seed, rows=120)
    neg = _mapped(table, 1.0, -2.0)
    pos = simulate(table, _gate(_svr, seed), seed=seed, max_resource=27, workers=2)
    rec = Recorder(_gate(_svr, seed))
    run = simulate(neg, rec, seed=seed, max_resource=27, workers=2)
    plain = simulate(neg, ASHA(27, 3, 60), seed=seed, max_resource=27, workers=2)
    fc = rec.driver._forecaster
    assert fc.version >= 3 and not fc.log_space
    assert any(e[0] == "report" and e[3] == Decision.PAUSE for e in rec.log)
    assert run.best_loss is not None and pos.best_loss is not None
    assert plain.best_loss is not None
    assert _row(neg, run.best_loss) == _row(table, pos.best_loss) == _row(neg, plain.best_loss)
    assert run.epochs < plain.epochs


def test_gate_in_loss_units_decides_the_same_on_a_rescaled_table() -> None:
    """Loss units are standardised losses: scaling every loss by 4 (exact in floating point)
    changes no decision."""
    neg = _mapped(_small_table(1, rows=120), 1.0, -2.0)
    one, four = Recorder(_gate(_svr, 1)), Recorder(_gate(_svr, 1))
    simulate(neg, one, seed=1, max_resource=27, workers=2)
    simulate(_mapped(neg, 4.0, 0.0), four, seed=1, max_resource=27, workers=2)
    assert one.log == four.log


class _Modes(Recorder):
    """Logs the forecaster's (version, log_space) after each report, with the loss."""

    def __init__(self, driver: Any) -> None:
        super().__init__(driver)
        self.modes: list[tuple[int, bool, float]] = []

    def report(self, trial_id: str, resource: int, loss: float) -> Decision:
        decision = Recorder.report(self, trial_id, resource, loss)
        fc = self.driver._forecaster
        self.modes.append((fc.version, fc.log_space, loss))
        return decision


def test_gate_switches_to_loss_units_when_losses_turn_non_positive_mid_run() -> None:
    """Losses ``L - 0.25``: the first one <= 0 arrives (report 150) when the forecaster was
    fitted 6 times in log space; it refits in loss units at the next forecast."""
    table = _mapped(_small_table(0, rows=120), 1.0, -0.25)
    rec = _Modes(_gate(_svr, 0))
    run = simulate(table, rec, seed=0, max_resource=27, workers=2)
    first = next(i for i, (_, _, loss) in enumerate(rec.modes) if loss <= 0)
    version, log_space, _ = rec.modes[first - 1]
    assert version >= 3 and log_space
    assert rec.modes[first + 1][:2] == (version + 1, False)
    assert not any(m[1] for m in rec.modes[first + 1:])
    plain = simulate(table, ASHA(27, 3, 60), seed=0, max_resource=27, workers=2)
    assert run.best_loss == plain.best_loss
    assert run.best_loss is not None and run.best_loss < 0
    step = _gate(_svr, 0, forecaster="predictor")  # the step model: loss units at its next refit
    assert simulate(table, step, seed=0, max_resource=27, workers=2).best_loss is not None
    assert not step._forecaster.log_space


def test_gate_forecaster_refits_in_loss_units_at_the_first_non_positive_loss() -> None:
    table = _small_table(3, rows=60)
    ids = [f"t-{j}" for j in range(24)]
    curves = {t: list(table.curves[j, : 2 + j % 12]) for j, t in enumerate(ids)}
    fc = GateForecaster("auto", 27, z=0.35, seed=3)
    assert fc.update(curves, ids) and fc.log_space and fc.units(0.5) == math.log(0.5)
    assert math.isnan(fc.units(-1.0))
    queries = [[*c[:4], -0.1] for c in list(curves.values())[:6]]
    assert np.all(np.isnan(fc.forecast(queries)))  # log space: never the log of a loss <= 0
    assert not fc.update(curves, ids)  # no growth and every loss > 0: no refit
    curves["t-0"] = [*curves["t-0"], -0.1]
    assert fc.update(curves, ids) and fc.version == 2 and not fc.log_space
    band = fc.forecast(queries)
    assert np.all(np.isfinite(band)) and np.all(band[:, 0] <= band[:, 2])
    every = np.concatenate([np.asarray(c) for c in curves.values()])
    assert fc.units(float(np.median(every))) == 0.0
    state = json.loads(json.dumps(fc.state()))
    assert state["format"] == STATE_FORMAT and state["affine"] is not None
    back = GateForecaster("auto", 27, z=0.35, seed=99)
    back.load(state)
    assert not back.log_space and back.state() == fc.state()
    assert np.array_equal(back.forecast(queries), band)
    longer = {t: [*c, *(c[-1:] * 6)] for t, c in curves.items()}
    assert back.update(longer, ids) == fc.update(longer, ids)
    assert np.array_equal(back.forecast(queries), fc.forecast(queries))
    assert back.state() == fc.state()
    old = {k: v for k, v in state.items() if k != "affine"} | {"format": 1}
    back.load(old)  # a checkpoint from before loss units: log space, refitted at once
    assert back.log_space
    assert back.update(curves, ids) and not back.log_space


def test_gate_decides_identically_after_a_restore_in_loss_units() -> None:
    """Losses turn <= 0 mid-run (as above): restored from a checkpoint in log space (before the
    switch) and from one in loss units, the run decides as without a restore."""
    table = _mapped(_small_table(0, rows=120), 1.0, -0.25)
    full = Recorder(_gate(_svr, 0))
    simulate(table, full, seed=0, max_resource=27, workers=2)
    end = full.driver.state_dict()["extra"]["forecaster"]
    assert end["affine"] is not None
    reports = sum(1 for e in full.log if e[0] == "report")
    for at in (60, 152, reports - 8):  # the first loss <= 0: report 150
        rec = Recorder(_gate(_svr, 0), restore_after=at, rebuild=lambda: _gate(_svr, 0))
        simulate(table, rec, seed=0, max_resource=27, workers=2)
        assert rec.log == full.log
        assert rec.driver.state_dict()["extra"]["forecaster"] == end


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


def test_gate_is_swift_ashas_default_and_the_published_rule_stays_selectable() -> None:
    from hpo_node.algorithms import make_driver

    driver = make_driver("swift-asha", max_resource=27, eta=3, n_trials=30, seed=1)
    assert isinstance(driver, SwiftASHA) and driver.rule == "gate" and driver.z == 0.35
    assert driver.forecaster == "auto" and driver.protect == 0.125
    assert isinstance(driver, Scheduler)
    assert SwiftASHA(27, 3, 30, _svr, rule="paper").rule == "paper"
    assert SwiftASHA(27, 3, 30, _svr, mode="stopping").rule == "paper"  # no stopping gate
    with pytest.raises(ValueError, match="protect is an option of rule='gate'"):
        SwiftASHA(27, 3, 30, _svr, rule="paper", protect=0.1)
    with pytest.raises(ValueError, match="protect must be"):
        SwiftASHA(27, 3, 30, _svr, protect=1.5)
    run = simulate(_small_table(1, rows=80), driver, seed=1, max_resource=27, workers=3)
    assert run.best_loss is not None and math.isfinite(run.best_loss)


def test_gate_with_curve_fits_needs_no_predictor_and_the_other_rules_do() -> None:
    table = _small_table(2, rows=120)
    plain = simulate(table, ASHA(27, 3, 60), seed=2, max_resource=27, workers=2)
    run = simulate(table, SwiftASHA(27, 3, 60, None, seed=2), seed=2, max_resource=27, workers=2)
    assert run.epochs < plain.epochs and run.predictor_fits == 0
    with_svr = simulate(table, SwiftASHA(27, 3, 60, _svr, seed=2), seed=2, max_resource=27,
                        workers=2)
    assert (with_svr.epochs, with_svr.best_loss) == (run.epochs, run.best_loss)
    for kw in ({"rule": "paper"}, {"rule": "forecast"}, {"forecaster": "predictor"}):
        with pytest.raises(TypeError, match="predictor must be a callable returning a Predictor"):
            SwiftASHA(27, 3, 60, None, **kw)


def test_registry_puts_every_swift_asha_decision_on_the_predictor_for_an_oracle() -> None:
    from hpo_node.algorithms import REGISTRY

    swift = REGISTRY["swift-asha"]
    assert swift.predictor_options({}) == {"forecaster": "predictor"}
    assert swift.predictor_options({"rule": "gate", "forecaster": "last"})["forecaster"] == "last"
    assert swift.predictor_options({"rule": "paper"}) == {"rule": "paper"}
    assert swift.predictor_options({"mode": "stopping"}) == {"mode": "stopping"}  # paper rule
    assert REGISTRY["swift-hyperband"].predictor_options({"z": 1.0}) == {"z": 1.0}
    built = SwiftASHA(27, 3, 30, _oracle_for(_small_table(3, rows=60)),
                      **swift.predictor_options({}))
    assert built.forecaster == "predictor" and swift.uses_predictor(swift.predictor_options({}))


def test_gate_records_the_forecast_of_every_trial_it_pauses_or_holds() -> None:
    table = _small_table(4, rows=200)
    sched = SwiftASHA(27, 2, 170, None, seed=4)
    simulate(table, sched, seed=4, max_resource=27, workers=3)
    held = [t for k in range(1, len(sched.rungs)) for t in sched.waiting(k)
            if t in sched.promoted(k - 1)]
    waiting = [t for k in range(len(sched.rungs)) for t in sched.waiting(k)]
    assert held and len(waiting) > len(held)  # both kinds happen on this table
    for t in waiting:
        mean, half_width = sched.prediction(t)
        assert math.isfinite(mean) and half_width >= 0.0


def test_asha_gives_a_lost_trials_promotion_slot_to_the_next_in_line() -> None:
    sched = ASHA(9, 3, 3)  # rungs 1, 3, 9: one promotion out of the three at rung 1
    for i in range(3):
        sched.add_trial(f"t{i}", {})
    jobs = [sched.next_job() for _ in range(3)]
    for job, loss in zip(jobs, (0.1, 0.2, 0.3), strict=True):
        assert sched.report(job.trial_id, 1, loss) == Decision.PAUSE
    first = sched.next_job()
    assert (first.trial_id, first.resource) == ("t0", 3)
    sched.fail("t0")  # its trainable raised at epoch 2 for good
    second = sched.next_job()
    assert (second.trial_id, second.resource) == ("t1", 3)
    assert sched.promoted(0) == ["t1"] and sched.next_job() is None
    restored = ASHA(9, 3, 3)
    restored.load_state_dict(json.loads(json.dumps(sched.state_dict())))
    assert restored.next_job() is None and restored.promoted(0) == ["t1"]
