"""Scheduler core: resource accounting, promotions, determinism, checkpoints, validation."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpo_node.algorithms import make_driver
from hpo_node.asha import ASHA, SwiftASHA
from hpo_node.core import Decision, Job, Scheduler, bracket_cost, hyperband_brackets
from hpo_node.hyperband import (
    Hyperband,
    OneEpoch,
    RandomSearch,
    SuccessiveHalving,
    SwiftHyperband,
    scale_free_window,
)
from hpo_node.predictors import SVRPredictor, make_predictor_factory
from hpo_node.replay import CurveTable, simulate
from hpo_node.synthetic import synthetic_table

FAST = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


class Recorder:
    """Wraps a driver; logs every job and decision, optionally swaps in a restored copy."""

    def __init__(self, driver: Any, restore_after: int | None = None, rebuild: Any = None) -> None:
        self.driver = driver
        self.log: list[tuple[Any, ...]] = []
        self.reached: dict[str, int] = {}
        self.restore_after = restore_after
        self.rebuild = rebuild
        self.checks: list[Any] = []

    def add_trial(self, trial_id: str, hparams: dict[str, float] | None = None) -> None:
        self.driver.add_trial(trial_id, hparams)

    def trials_needed(self) -> int | None:
        return self.driver.trials_needed()

    def predictor_calls(self) -> dict[str, int]:
        return self.driver.predictor_calls()

    def close(self) -> None:
        self.driver.close()

    def next_job(self) -> Job | None:
        job = self.driver.next_job()
        self.log.append(("job", job))
        for check in self.checks:
            check(self.driver, job)
        return job

    def report(self, trial_id: str, resource: int, loss: float) -> Decision:
        decision = self.driver.report(trial_id, resource, loss)
        self.reached[trial_id] = resource
        self.log.append(("report", trial_id, resource, decision))
        reports = sum(1 for e in self.log if e[0] == "report")
        if self.restore_after is not None and reports == self.restore_after:
            state = json.loads(json.dumps(self.driver.state_dict()))
            fresh = self.rebuild()
            fresh.load_state_dict(state)
            self.driver = fresh
        return decision


def _svr() -> SVRPredictor:
    return SVRPredictor()


def _build(name: str, r: int, eta: int, seed: int, n: int | None = None) -> Scheduler:
    if name == "swift-hyperband":
        return SwiftHyperband(r, eta, _svr, d=5, seed=seed)
    if name == "swift-hyperband-scale-free":
        return SwiftHyperband(
            r, eta, _svr, rule="paper", d=5, scale_free=True, max_windows=50, seed=seed
        )
    if name == "swift-hyperband-paper":
        return SwiftHyperband(r, eta, _svr, rule="paper", d=5, seed=seed)
    if name == "swift-asha":
        return SwiftASHA(r, eta, n, _svr, d=5, seed=seed)
    if name == "swift-asha-forecast":
        return SwiftASHA(r, eta, n, _svr, rule="forecast", d=5, seed=seed)
    if name == "swift-asha-defer":
        return SwiftASHA(
            r, eta, n, _svr, rule="paper", d=5, defer=True, scale_free=True, known_curve=0.25,
            max_windows=50, refit_every=3, seed=seed,
        )
    driver = make_driver(name, max_resource=r, eta=eta, seed=seed, n_trials=n)
    assert isinstance(driver, Scheduler)
    return driver


def test_hyperband_brackets_match_li_et_al() -> None:
    brackets = hyperband_brackets(100, 2)
    assert [s for s, _ in brackets] == [6, 5, 4, 3, 2, 1, 0]
    assert [b[0][0] for _, b in brackets] == [64, 38, 23, 14, 10, 7, 7]
    assert all(b[-1][1] == 100 for _, b in brackets)
    assert sum(bracket_cost(b) for _, b in brackets) == 3213


def test_hyperband_r100_eta2_costs_3213_epochs_in_replay() -> None:
    table = synthetic_table(200, 100, seed=3)
    for seed, workers in [(0, 1), (1, 8), (2, 3)]:
        run = simulate(table, Hyperband(100, 2), seed=seed, max_resource=100, workers=workers)
        assert run.epochs == 3213
        assert run.best_loss is not None


def test_hyperband_makespan_single_worker_equals_epochs() -> None:
    table = synthetic_table(200, 100, seed=3)
    run = simulate(table, Hyperband(100, 2), seed=0, max_resource=100, workers=1)
    assert run.makespan == run.epochs
    run8 = simulate(table, Hyperband(100, 2), seed=0, max_resource=100, workers=8)
    assert run.epochs / 8 <= run8.makespan < run.makespan


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Hyperband(100, eta=1), "eta must be >= 2, got 1"),
        (lambda: Hyperband(0, eta=2), "max_resource must be >= 1, got 0"),
        (lambda: Hyperband(10, eta=2, min_resource=20), "min_resource must be <= max_resource"),
        (lambda: SuccessiveHalving(100, 2, n_trials=3), "n_trials must be >= eta**(s_max - s)"),
        (lambda: SuccessiveHalving(100, 2, early_stopping_rate=9), "early_stopping_rate must be"),
        (lambda: ASHA(100, 2, 10, mode="fast"), "mode must be one of"),
        (lambda: RandomSearch(100, 0), "n_trials must be >= 1, got 0"),
        (lambda: SwiftHyperband(100, 2, _svr, k=0.0), "k must be in (0.0, 1.0], got 0.0"),
        (lambda: SwiftHyperband(100, 2, _svr, d=1), "d must be >= 2, got 1"),
        (lambda: SwiftHyperband(100, 2, _svr, known_curve=1.5), "known_curve must be in"),
        (lambda: SwiftHyperband(100, 2, _svr, threshold_quantile=-0.1), "threshold_quantile"),
        (lambda: SwiftASHA(100, 2, 10, _svr, z=-1.0), "z must be in [0.0, inf), got -1.0"),
        (lambda: SwiftASHA(100, 2, 10, _svr, refit_every=0), "refit_every must be >= 1, got 0"),
    ],
)
def test_constructors_reject_bad_arguments(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("*", r"\*")):
        build()


def test_constructors_reject_wrong_types() -> None:
    with pytest.raises(TypeError, match="eta must be an integer"):
        Hyperband(100, eta=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="predictor must be a callable"):
        SwiftHyperband(100, 2, None)


def test_report_rejects_unknown_trial_and_skipped_resource() -> None:
    sched = Hyperband(8, 2)
    with pytest.raises(ValueError, match="must name a running trial"):
        sched.report("nope", 1, 0.5)
    for j in range(sched.trials_needed()):
        sched.add_trial(f"t{j}")
    job = sched.next_job()
    assert job is not None and not job.resume
    with pytest.raises(ValueError, match="resource must be the next unit 1"):
        sched.report(job.trial_id, 2, 0.5)
    with pytest.raises(ValueError, match="loss must be finite"):
        sched.report(job.trial_id, 1, float("nan"))
    with pytest.raises(ValueError, match="trial_id must be new"):
        sched.add_trial("t0")


def test_sha_pauses_at_round_end_and_stops_at_max_resource() -> None:
    sched = SuccessiveHalving(4, 2, n_trials=4)
    for j in range(4):
        sched.add_trial(f"t{j}")
    jobs = [sched.next_job() for _ in range(4)]
    assert sched.next_job() is None
    assert [j.resource for j in jobs if j] == [1, 1, 1, 1]
    decisions = [sched.report(f"t{j}", 1, float(j)) for j in range(4)]
    assert decisions == [Decision.PAUSE] * 4
    nxt = [sched.next_job(), sched.next_job()]
    assert [(j.trial_id, j.resource, j.resume) for j in nxt if j] == [
        ("t0", 2, True),
        ("t1", 2, True),
    ]
    assert sorted(sched.drain_stopped()) == ["t2", "t3"]
    assert sched.report("t0", 2, 0.0) == Decision.PAUSE
    assert sched.report("t1", 2, 1.0) == Decision.PAUSE
    last = sched.next_job()
    assert last is not None and last.trial_id == "t0" and last.resource == 4
    assert sched.report("t0", 3, 0.0) == Decision.CONTINUE
    assert sched.report("t0", 4, 0.0) == Decision.STOP
    assert sched.next_job() is None and sched.finished


def _small_table(seed: int, rows: int = 120, epochs: int = 27) -> CurveTable:
    return synthetic_table(rows, epochs, seed=seed, noise=0.01)


@FAST
@given(
    seed=st.integers(0, 10_000),
    eta=st.sampled_from([2, 3]),
    workers=st.integers(1, 5),
)
def test_sha_survivors_are_floor_n_over_eta_and_were_in_top(
    seed: int, eta: int, workers: int
) -> None:
    table = _small_table(seed)
    sched = SuccessiveHalving(27, eta, n_trials=eta**4 if eta == 2 else 27)
    rec = Recorder(sched)
    simulate(table, rec, seed=seed, max_resource=27, workers=workers)
    rounds = sched.brackets[0]
    members = [str(j.trial_id) for kind, j, *_ in [(e[0], e[1]) for e in rec.log if e[0] == "job"]
               if j is not None and not j.resume]
    rows = {t: int(t.split("-")[1]) for t in members}
    for (n_i, r_i), (n_next, _) in itertools.pairwise(rounds):
        assert len(members) == n_i
        survivors = [t for t in members if rec.reached[t] > r_i]
        assert len(survivors) == n_i // eta
        losses = {t: table.curves[rows[t], r_i - 1] for t in members}
        cut = sorted(losses.values())[n_i // eta - 1]
        assert all(losses[t] <= cut for t in survivors)
        assert len(survivors) == n_next
        members = survivors


@FAST
@given(
    seed=st.integers(0, 10_000),
    eta=st.sampled_from([2, 3, 4]),
    workers=st.integers(1, 6),
    swift=st.sampled_from(["", "paper", "gate"]),
)
def test_asha_promotes_at_most_floor_n_over_eta_from_the_top(
    seed: int, eta: int, workers: int, swift: str
) -> None:
    table = _small_table(seed)
    sched = SwiftASHA(27, eta, 60, _svr, rule=swift, d=4, seed=seed) if swift else ASHA(27, eta, 60)
    rec = Recorder(sched)
    seen: list[int] = []

    def check(driver: ASHA, job: Job | None) -> None:
        if job is None or not job.resume:
            return
        k = driver.rungs.index(job.resource) - 1
        if k < 0 or rec.reached.get(job.trial_id) != driver.rungs[k]:
            return  # a trial paused on its way to a rung resumes (Swift's rules): no promotion
        if swift == "gate" and job.trial_id in driver.state_dict()["extra"]["committed"]:
            return  # the gate's champion, trained to R when nothing else can run
        members = driver.rung_members(k)
        quota = driver.rung_size(k) // eta
        promoted = driver.promoted(k)
        assert len(promoted) <= quota
        seen.append(k)
        if swift == "gate":  # a held promotion used its slot (from the top) when it was held
            assert job.trial_id in promoted
            return
        assert promoted[-1] == job.trial_id
        ranked = sorted(members, key=lambda t: driver.rung_loss(k, t))
        assert job.trial_id in ranked[:quota]

    rec.checks.append(check)
    simulate(table, rec, seed=seed, max_resource=27, workers=workers)
    assert seen, "no promotion happened"


ALGOS = [
    "random",
    "sha",
    "hyperband",
    "asha",
    "asha-stopping",
    "swift-hyperband",
    "swift-hyperband-scale-free",
    "swift-hyperband-paper",
    "swift-asha",
    "swift-asha-forecast",
    "swift-asha-defer",
]


@FAST
@given(
    seed=st.integers(0, 10_000),
    name=st.sampled_from(ALGOS),
    workers=st.integers(1, 6),
)
def test_epochs_consumed_equal_sum_of_increments(seed: int, name: str, workers: int) -> None:
    table = _small_table(seed, rows=80)
    sched = _build(name, 27, 3, seed, n=40 if name in ("random", "sha") else 30)
    rec = Recorder(sched)
    run = simulate(table, rec, seed=seed, max_resource=27, workers=workers)
    assert run.epochs == sum(rec.reached.values())
    starts = [e[1] for e in rec.log if e[0] == "job" and e[1] is not None and not e[1].resume]
    assert run.trials_started == len(starts)
    if name in ("hyperband", "sha", "random"):
        assert run.epochs == sum(bracket_cost(b) for b in sched.brackets)  # type: ignore[attr-defined]


def _trace(name: str, seed: int, workers: int) -> list[tuple[Any, ...]]:
    table = _small_table(7, rows=80)
    rec = Recorder(_build(name, 27, 3, seed, n=30))
    simulate(table, rec, seed=seed, max_resource=27, workers=workers)
    return rec.log


@pytest.mark.parametrize("name", ALGOS)
def test_same_seed_identical_different_seed_different(name: str) -> None:
    a = _trace(name, 11, 3)
    assert a == _trace(name, 11, 3)
    assert a != _trace(name, 12, 3)


@FAST
@given(
    name=st.sampled_from(ALGOS),
    seed=st.integers(0, 1000),
    workers=st.integers(1, 4),
    frac=st.floats(0.05, 0.95),
)
def test_state_dict_round_trip_mid_run_resumes_identically(
    name: str, seed: int, workers: int, frac: float
) -> None:
    table = _small_table(seed, rows=80)
    full = Recorder(_build(name, 27, 3, seed, n=30))
    base = simulate(table, full, seed=seed, max_resource=27, workers=workers)
    cut = max(1, int(base.reports * frac))
    rec = Recorder(
        _build(name, 27, 3, seed, n=30),
        restore_after=cut,
        rebuild=lambda: _build(name, 27, 3, seed, n=30),
    )
    again = simulate(table, rec, seed=seed, max_resource=27, workers=workers)
    assert rec.log == full.log
    assert (again.epochs, again.best_loss, again.makespan) == (
        base.epochs,
        base.best_loss,
        base.makespan,
    )


def test_load_state_dict_rejects_other_algorithm_and_version() -> None:
    state = Hyperband(27, 3).state_dict()
    with pytest.raises(ValueError, match="state algorithm must be 'asha'"):
        ASHA(27, 3, 10).load_state_dict(state)
    with pytest.raises(ValueError, match="state version must be 1, got 99"):
        Hyperband(27, 3).load_state_dict({**state, "version": 99})


def test_asha_stopping_variant_stops_below_quantile() -> None:
    sched = ASHA(4, 2, 3, mode="stopping")
    for j in range(3):
        sched.add_trial(f"t{j}")
    job = sched.next_job()
    assert job is not None and job.resource == 4
    assert sched.report("t0", 1, 0.5) == Decision.CONTINUE
    sched.next_job()
    assert sched.report("t1", 1, 0.9) == Decision.STOP
    sched.next_job()
    assert sched.report("t2", 1, 0.1) == Decision.CONTINUE


class OraclePredictor:
    """A perfect predictor: looks the true loss at the target resource up in the table."""

    def __init__(self, table: CurveTable) -> None:
        self.table = table
        self.resource = 0

    def _row(self, curve: np.ndarray) -> int:
        p = curve.shape[0]
        hits = np.flatnonzero(np.all(self.table.curves[:, :p] == curve, axis=1))
        return int(hits[0])

    def fit(self, curves: Any, targets: Any, hparams: Any = None, seed: int = 0) -> None:
        row = self._row(np.asarray(curves)[0])
        self.resource = int(np.flatnonzero(self.table.curves[row] == targets[0])[0]) + 1

    def predict(self, curves: Any, hparams: Any = None) -> tuple[np.ndarray, np.ndarray]:
        rows = [self._row(c) for c in np.asarray(curves)]
        mean = self.table.curves[rows, self.resource - 1]
        return mean, np.zeros_like(mean)


@FAST
@given(seed=st.integers(0, 10_000), workers=st.integers(1, 6), d=st.integers(2, 8))
def test_swift_hyperband_with_perfect_predictor_keeps_each_rounds_best(
    seed: int, workers: int, d: int
) -> None:
    table = _small_table(seed, rows=80, epochs=27)
    sched = SwiftHyperband(27, 3, lambda: OraclePredictor(table), rule="paper", d=d, seed=seed)
    rec = Recorder(sched)
    simulate(table, rec, seed=seed, max_resource=27, workers=workers)
    starts = [e[1].trial_id for e in rec.log if e[0] == "job" and e[1] and not e[1].resume]
    pos = 0
    stopped_early = 0
    for rounds in sched.brackets:
        members = starts[pos : pos + rounds[0][0]]
        pos += rounds[0][0]
        for n_i, r_i in rounds:
            assert len(members) == n_i
            rows = {t: int(t.split("-")[1]) for t in members}
            best = min(members, key=lambda t: table.curves[rows[t], r_i - 1])
            assert rec.reached[best] >= r_i
            stopped_early += sum(1 for t in members if rec.reached[t] < r_i)
            members = [t for t in members if rec.reached[t] > r_i]
    assert sched.predictor_calls()["predict"] == 0 or stopped_early > 0


def test_swift_without_a_fitted_predictor_reduces_to_its_base_algorithm() -> None:
    table = _small_table(5, rows=120)
    hb = simulate(table, Hyperband(27, 3), seed=1, max_resource=27, workers=3)
    swift = simulate(
        table, SwiftHyperband(27, 3, _svr, d=1000, seed=1), seed=1, max_resource=27, workers=3
    )
    assert swift.epochs == hb.epochs and swift.best_loss == hb.best_loss
    assert swift.predictor_fits == 0
    asha = simulate(table, ASHA(27, 3, 60), seed=1, max_resource=27, workers=3)
    sa = simulate(table, SwiftASHA(27, 3, 60, _svr, rule="paper", d=1000), seed=1, max_resource=27,
                  workers=3)
    assert (sa.epochs, sa.best_loss, sa.makespan) == (asha.epochs, asha.best_loss, asha.makespan)


def test_last_value_fallback_stops_trials_without_a_predictor() -> None:
    table = _small_table(5, rows=120)
    hb = simulate(table, Hyperband(27, 3), seed=1, max_resource=27)
    swift = simulate(
        table,
        SwiftHyperband(27, 3, _svr, rule="paper", d=1000, fallback="last-value", seed=1),
        seed=1,
        max_resource=27,
    )
    assert swift.predictor_fits == 0 and swift.epochs < hb.epochs
    asha = simulate(table, ASHA(27, 3, 60), seed=1, max_resource=27)
    sa = simulate(
        table,
        SwiftASHA(27, 3, 60, _svr, rule="paper", d=1000, fallback="last-value"),
        seed=1,
        max_resource=27,
    )
    assert sa.predictor_fits == 0 and sa.epochs < asha.epochs
    with pytest.raises(ValueError, match="fallback must be one of 'none', 'last-value', got 'x'"):
        SwiftASHA(27, 3, 60, _svr, fallback="x")


def test_scale_free_window_ignores_level_and_length() -> None:
    t = np.arange(1, 81, dtype=np.float64)
    curve = 2.0 + 5.0 * t**-0.7
    w = scale_free_window(curve[:40])
    assert w.shape == (10,) and w[-1] == 0.0 and np.all(np.diff(w) < 0)
    np.testing.assert_allclose(scale_free_window(3.0 * curve[:40]), w)
    pure = 5.0 * t**-0.7
    np.testing.assert_allclose(scale_free_window(pure[:40]), scale_free_window(pure[:80]), atol=0.02)
    with pytest.raises(ValueError, match="positive losses"):
        scale_free_window(-curve[:10])


def test_scale_free_swift_hyperband_predicts_where_whole_curves_are_too_few() -> None:
    table = _small_table(5, rows=120)
    plain = simulate(
        table,
        SwiftHyperband(27, 3, _svr, rule="paper", d=40, seed=1),
        seed=1,
        max_resource=27,
        workers=2,
    )
    windows = simulate(
        table,
        SwiftHyperband(27, 3, _svr, rule="paper", d=40, scale_free=True, seed=1),
        seed=1,
        max_resource=27,
        workers=2,
    )
    assert plain.predictor_fits == 0
    assert windows.predictor_fits > 0 and windows.epochs < plain.epochs
    with pytest.raises(TypeError, match="scale_free must be a bool"):
        SwiftHyperband(27, 3, _svr, rule="paper", scale_free=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_windows must be >= 2, got 1"):
        SwiftHyperband(27, 3, _svr, rule="paper", max_windows=1)
    sched = SwiftHyperband(27, 3, _svr, rule="paper", scale_free=True)
    for j in range(sched.trials_needed()):
        sched.add_trial(f"t{j}")
    job = sched.next_job()
    assert job is not None
    with pytest.raises(ValueError, match=r"loss must be > 0 with scale_free=True, got -0\.5"):
        sched.report(job.trial_id, 1, -0.5)
    assert sched.report(job.trial_id, 1, 0.5) == Decision.PAUSE


class _Exact:
    """Exact predictor for curves ``a + 1 / t`` (:func:`_parallel_curves`): learns the target
    resource ``r`` from one training pair and returns ``a + 1 / r``."""

    def fit(self, curves: Any, targets: Any, hparams: Any = None, seed: int = 0) -> None:
        c = np.asarray(curves, dtype=np.float64)
        self.dp = c.shape[1]
        self.inv_r = float(targets[0]) - (c[0, -1] - 1.0 / self.dp)

    def predict(self, curves: Any, hparams: Any = None) -> tuple[np.ndarray, np.ndarray]:
        mean = np.asarray(curves, dtype=np.float64)[:, -1] - 1.0 / self.dp + self.inv_r
        return mean, np.zeros_like(mean)


def _parallel_curves(levels: list[float], epochs: int) -> CurveTable:
    t = np.arange(1, epochs + 1, dtype=np.float64)
    return CurveTable.from_arrays(np.array([a + 1.0 / t for a in levels]))


def _levels() -> list[float]:
    return list(np.random.default_rng(3).permutation(np.linspace(0.05, 2.0, 40)))


def test_swift_asha_defer_pauses_worse_trials_and_resumes_them_for_a_free_slot() -> None:
    table = _parallel_curves(_levels(), 16)
    sched = SwiftASHA(16, 2, 40, _Exact, rule="paper", d=2, defer=True, top_rung=False)
    rec = Recorder(sched)
    run = simulate(table, rec, seed=1, max_resource=16, workers=1)
    deferred = {
        e[1] for e in rec.log if e[0] == "report" and e[3] == Decision.PAUSE and e[2] not in sched.rungs
    }
    waiting = {t for k in range(len(sched.rungs)) for t in sched.waiting(k)}
    resumed = deferred - waiting
    assert waiting and resumed
    assert all(rec.reached[t] in sched.rungs for t in resumed)
    assert all(rec.reached[t] not in sched.rungs for t in waiting)
    assert sched.waiting(len(sched.rungs) - 1) == []
    asha = simulate(table, ASHA(16, 2, 40), seed=1, max_resource=16, workers=1)
    assert run.epochs < asha.epochs
    assert run.best_loss == asha.best_loss == pytest.approx(0.05 + 1 / 16)


def test_swift_asha_defer_and_scale_free_options_are_validated() -> None:
    for flag in ("defer", "scale_free", "top_rung"):
        with pytest.raises(TypeError, match=f"{flag} must be a bool, got 1"):
            SwiftASHA(27, 3, 30, _svr, rule="paper", **{flag: 1})
    with pytest.raises(ValueError, match="max_windows must be >= 2, got 1"):
        SwiftASHA(27, 3, 30, _svr, rule="paper", max_windows=1)
    with pytest.raises(ValueError, match="fallback must be 'none' with defer=True"):
        SwiftASHA(27, 3, 30, _svr, rule="paper", defer=True, fallback="last-value")
    sched = SwiftASHA(27, 3, 30, _svr, rule="paper", scale_free=True)
    for j in range(30):
        sched.add_trial(f"t{j}")
    job = sched.next_job()
    assert job is not None
    with pytest.raises(ValueError, match=r"loss must be > 0 with scale_free=True, got 0\.0"):
        sched.report(job.trial_id, 1, 0.0)


def test_swift_asha_defer_state_round_trip_keeps_waiting_trials() -> None:
    table = _parallel_curves(_levels(), 16)

    def build() -> SwiftASHA:
        return SwiftASHA(16, 2, 40, _Exact, rule="paper", d=2, defer=True)

    full = Recorder(build())
    simulate(table, full, seed=0, max_resource=16, workers=2)
    pauses = [i for i, e in enumerate(full.log) if e[0] == "report" and e[3] == Decision.PAUSE]
    cut = sum(1 for e in full.log[: pauses[len(pauses) // 2]] if e[0] == "report") + 1
    rec = Recorder(build(), restore_after=cut, rebuild=build)
    simulate(table, rec, seed=0, max_resource=16, workers=2)
    assert rec.log == full.log
    state = json.loads(json.dumps(rec.driver.state_dict()))
    assert any(state["extra"]["waiting"]) and "resuming" in state["extra"]


def test_swift_asha_scale_free_resumes_identically_between_refits() -> None:
    """A model refitted after a restore sees the curves as they were at fit time (seed 12 and a
    restore after 54 reports once stopped a trial the uninterrupted run continued)."""

    def build() -> SwiftASHA:
        return SwiftASHA(27, 3, 60, _svr, rule="paper", d=3, scale_free=True, refit_every=25,
                         known_curve=0.25, seed=12)

    table = _small_table(12, rows=80)
    full = Recorder(build())
    simulate(table, full, seed=12, max_resource=27, workers=4)
    rec = Recorder(build(), restore_after=54, rebuild=build)
    simulate(table, rec, seed=12, max_resource=27, workers=4)
    assert rec.log == full.log


# -- the forecast rule (issue 14) ----------------------------------------------------------------


class Watcher(Recorder):
    """A Recorder that also keeps every trial's curve, its pauses on the way to a job's target
    and the trials stopped at a decision point (drained after each job)."""

    def __init__(self, driver: Any) -> None:
        super().__init__(driver)
        self.curves: dict[str, list[float]] = {}
        self.mid_pauses: list[tuple[str, int, int]] = []
        self.stopped: list[tuple[str, int]] = []
        self.targets: dict[str, int] = {}

    def next_job(self) -> Job | None:
        job = super().next_job()
        rounds = {r for b in getattr(self.driver, "brackets", []) for _, r in b}
        for t in self.driver.drain_stopped():
            if len(self.curves[t]) not in rounds:  # stopped at a decision point, not by SHA
                self.stopped.append((t, len(self.curves[t])))
        if job is not None:
            self.targets[job.trial_id] = job.resource
        return job

    def report(self, trial_id: str, resource: int, loss: float) -> Decision:
        self.curves.setdefault(trial_id, []).append(loss)
        decision = super().report(trial_id, resource, loss)
        if decision == Decision.PAUSE and resource < self.targets[trial_id]:
            self.mid_pauses.append((trial_id, resource, self.targets[trial_id]))
        return decision

    def leads(self, trial_id: str, resource: int) -> bool:
        mine = self.curves[trial_id][resource - 1]
        return all(c[resource - 1] >= mine for c in self.curves.values() if len(c) >= resource)


def _forecast_build(
    name: str, predictor: Any, seed: int, eta: int = 3, z: float | None = None
) -> Scheduler:
    if name == "swift-asha":
        return SwiftASHA(27, eta, 60, predictor, rule="forecast", d=4, z=z, seed=seed)
    return SwiftHyperband(27, eta, predictor, d=4, z=z, seed=seed)


def _oracle_for(table: CurveTable) -> Any:
    return make_predictor_factory("oracle", curves=table.curves, max_resource=27)


@FAST
@given(
    name=st.sampled_from(["swift-asha", "swift-hyperband"]),
    seed=st.integers(0, 1000),
    workers=st.integers(1, 5),
    z=st.sampled_from([0.0, 0.5]),
)
def test_forecast_rule_never_stops_the_incumbent_best(
    name: str, seed: int, workers: int, z: float
) -> None:
    table = _small_table(seed, rows=120)
    sched = _forecast_build(name, _svr, seed, z=z)
    rec = Watcher(sched)
    simulate(table, rec, seed=seed, max_resource=27, workers=workers)
    judged = [(t, r) for t, r, _ in rec.mid_pauses] + rec.stopped
    for trial_id, resource in judged:
        if resource < 27:
            assert not rec.leads(trial_id, resource), (trial_id, resource)


@FAST
@given(
    name=st.sampled_from(["swift-asha", "swift-hyperband"]),
    seed=st.integers(0, 1000),
    workers=st.integers(1, 5),
    eta=st.sampled_from([2, 3]),
)
def test_forecast_rule_with_the_oracle_keeps_whoever_makes_the_top_at_r(
    name: str, seed: int, workers: int, eta: int
) -> None:
    table = _small_table(seed, rows=120)
    sched = _forecast_build(name, _oracle_for(table), seed, eta)
    rec = Watcher(sched)
    simulate(table, rec, seed=seed, max_resource=27, workers=workers)
    final = {t: float(table.curves[int(t.split("-")[1]), 26]) for t in rec.curves}
    best = min(final, key=lambda t: final[t])
    judged = [(t, r) for t, r, _ in rec.mid_pauses] + [(t, r) for t, r in rec.stopped]
    assert best not in {t for t, r in judged if r < 27}
    if name != "swift-asha":
        return
    for trial_id, _, target in rec.mid_pauses:
        k = sched.rungs.index(target)
        # the rung's members then (a later arrival only adds better-or-worse company)
        members = [t for t in sched.rung_members(k) if t in final]
        better = sum(final[t] < final[trial_id] for t in members)
        at_r = [final[t] for t in sched.rung_members(len(sched.rungs) - 1)]
        assert better >= 1 or (at_r and min(at_r) < final[trial_id])


@pytest.mark.parametrize("name", ["swift-asha", "swift-hyperband"])
def test_forecast_rule_saves_epochs_with_the_oracle_and_is_selectable(name: str) -> None:
    table = _small_table(3, rows=120)
    base = ASHA(27, 3, 60) if name == "swift-asha" else Hyperband(27, 3)
    plain = simulate(table, base, seed=3, max_resource=27, workers=2)
    run = simulate(table, _forecast_build(name, _oracle_for(table), 3), seed=3, max_resource=27,
                   workers=2)
    assert run.epochs < plain.epochs and run.regret is not None
    assert run.regret <= plain.regret + 1e-12  # type: ignore[operator]
    paper = _build(name, 27, 3, 3, n=60) if name == "swift-asha" else SwiftHyperband(
        27, 3, _svr, rule="paper", seed=3)
    with pytest.raises(ValueError, match="rule must be one of 'forecast', 'paper'"):
        type(paper)(27, 3, *([60] if name == "swift-asha" else []), _svr, rule="windows")


def test_forecast_rule_refuses_paper_options() -> None:
    with pytest.raises(ValueError, match="options of rule='paper'"):
        SwiftASHA(27, 3, 30, _svr, rule="forecast", defer=True)
    with pytest.raises(ValueError, match="options of rule='paper'"):
        SwiftHyperband(27, 3, _svr, scale_free=True)


def test_one_epoch_trains_all_one_epoch_then_top_k_to_r() -> None:
    table = _small_table(4, rows=120)
    sched = OneEpoch(27, 3, 40, top_k=3)
    run = simulate(table, sched, seed=4, max_resource=27, workers=3)
    assert run.epochs == 40 + 3 * 26
    rows = np.random.default_rng(4).permutation(120)[:40]
    top = rows[np.argsort(table.curves[rows, 0], kind="stable")[:3]]
    assert run.best_loss == pytest.approx(float(table.curves[top, 26].min()))
    assert OneEpoch(100, 2, 163).top_k == 2
    with pytest.raises(ValueError, match="top_k must be <= n_trials"):
        OneEpoch(27, 3, 5, top_k=6)


@FAST
@given(seed=st.integers(0, 1000), eta=st.sampled_from([2, 3]), workers=st.integers(1, 4))
def test_swift_hyperband_forecast_rule_promotes_at_most_n_next_per_round(
    seed: int, eta: int, workers: int
) -> None:
    table = _small_table(seed, rows=120)
    sched = _forecast_build("swift-hyperband", _svr, seed, eta)
    rec = Recorder(sched)
    simulate(table, rec, seed=seed, max_resource=27, workers=workers)
    starts = [e[1].trial_id for e in rec.log if e[0] == "job" and e[1] and not e[1].resume]
    for rounds in sched.brackets:  # type: ignore[attr-defined]
        members, starts = starts[: rounds[0][0]], starts[rounds[0][0] :]
        for (_, r_i), (n_next, _) in itertools.pairwise(rounds):
            assert sum(rec.reached[t] > r_i for t in members) <= n_next


@pytest.mark.parametrize("name", ["swift-asha", "swift-hyperband"])
def test_forecast_rule_scheduler_pickles_mid_run_and_the_copy_decides_identically(
    name: str,
) -> None:
    import pickle

    table = _small_table(6, rows=120)
    full = Recorder(_forecast_build(name, _svr, 6))
    simulate(table, full, seed=6, max_resource=27, workers=2)

    class PickleRecorder(Recorder):
        """Swaps in a pickled copy after 150 reports (Ray Tune pickles its scheduler)."""

        def report(self, trial_id: str, resource: int, loss: float) -> Decision:
            decision = Recorder.report(self, trial_id, resource, loss)
            if sum(1 for e in self.log if e[0] == "report") == 150:
                assert self.driver.predictor_calls()["fit"] >= 1
                self.driver = pickle.loads(pickle.dumps(self.driver))
            return decision

    rec = PickleRecorder(_forecast_build(name, _svr, 6))
    simulate(table, rec, seed=6, max_resource=27, workers=2)
    assert rec.log == full.log


@pytest.mark.parametrize(
    "name", ["swift-asha", "swift-asha-forecast", "swift-hyperband", "swift-hyperband-paper"]
)
def test_swift_scheduler_prediction_names_what_stopped_or_paused_a_trial(name: str) -> None:
    table = _small_table(3, rows=120)
    sched = _build(name, 27, 3, 3, n=60)
    simulate(table, sched, seed=3, max_resource=27, workers=2)
    state = sched.state_dict()
    decided = {t for t in state["order"] if sched.prediction(t) is not None}
    assert decided, "no trial was stopped or paused by a prediction"
    for t in decided:
        mean, spread = sched.prediction(t)  # type: ignore[misc]
        assert math.isfinite(mean) and spread >= 0.0
        assert state["state"][t] in ("paused", "stopped") and len(state["curve"][t]) < 27
        # the epoch the prediction is for: ahead of the trial; R for the forecast rule and gate
        at = sched.prediction_at(t)
        assert at is not None and len(state["curve"][t]) < at <= 27
        assert at == 27 or name.endswith("paper")
    assert all(sched.prediction(t) is None for t in state["order"] if len(state["curve"][t]) == 27)
    again = _build(name, 27, 3, 3, n=60)
    again.load_state_dict(json.loads(json.dumps(state)))
    assert {t: again.prediction(t) for t in decided} == {t: sched.prediction(t) for t in decided}
    assert {t: again.prediction_at(t) for t in decided} == {
        t: sched.prediction_at(t) for t in decided}
    # a checkpoint from before the epoch was recorded: the prediction loads, its epoch is unknown
    old = {**state, "predicted": {t: v[:2] for t, v in state["predicted"].items()}}
    again.load_state_dict(json.loads(json.dumps(old)))
    assert all(again.prediction(t) == sched.prediction(t) and again.prediction_at(t) is None
               for t in decided)


def test_swift_asha_stopping_mode_never_pauses_and_stops_by_prediction() -> None:
    """``mode="stopping"`` (the Optuna pruner's core): trials run towards R and stop at a rung or
    at the decision point inside a rung interval; with too few curves it is ASHA-stopping."""
    table = _small_table(5, rows=120)
    plain = Recorder(ASHA(27, 3, 60, mode="stopping"))
    simulate(table, plain, seed=5, max_resource=27, workers=3)
    never = Recorder(SwiftASHA(27, 3, 60, _svr, mode="stopping", d=1000, seed=5))
    simulate(table, never, seed=5, max_resource=27, workers=3)
    assert never.log == plain.log
    sched = SwiftASHA(27, 3, 60, _svr, mode="stopping", d=4, seed=5)
    assert sched.decision_points() == {2: 3, 6: 9, 18: 27}
    rec = Recorder(sched)
    run = simulate(table, rec, seed=5, max_resource=27, workers=3)
    assert all(e[3] != Decision.PAUSE for e in rec.log if e[0] == "report")
    by_prediction = [t for t in sched.state_dict()["order"] if sched.prediction(t) is not None]
    assert by_prediction and all(rec.reached[t] in (2, 6, 18) for t in by_prediction)
    assert run.epochs < simulate(table, ASHA(27, 3, 60, mode="stopping"), seed=5,
                                 max_resource=27, workers=3).epochs
    with pytest.raises(ValueError, match="mode='stopping'"):
        SwiftASHA(27, 3, 60, _svr, rule="forecast", mode="stopping")
