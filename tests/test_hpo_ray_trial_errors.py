"""A user's trainable that raises: Tune's retries (FailureConfig) resume it from its checkpoint,
a trial whose retries ran out ends in error and the study goes on, under every Ray algorithm;
``hpo-node run`` shows the exception in one line, exits 0 unless every trial failed, and turns a
metric the trainable never reports into a one-line config error."""

from __future__ import annotations

import csv
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import ray
from hypothesis import given, settings
from hypothesis import strategies as st
from ray import tune
from ray.tune.callback import Callback

from hpo_node.algorithms import make_driver
from hpo_node.core import Decision, TrialState
from hpo_node.integrations.ray_tune import (
    ASHAScheduler,
    HyperbandScheduler,
    SwiftASHAScheduler,
    SwiftHyperbandScheduler,
)
from hpo_node.predictors import make_predictor_factory
from hpo_node.study import run_main
from tests.conftest import user_module

pytestmark = pytest.mark.slow

# plan[str(x)]: "at1" raises in epoch 1 (no checkpoint yet), "at2" in epoch 2 (after the
# checkpoint of epoch 1), "once1"/"once2" in epoch 1/2 of its first attempt only (a marker file
# remembers);
# "nan" reports NaN losses, "silent" returns without a report; anything else never raises. The
# loss is x / epoch.
RAISING = '''
import os
import tempfile

from ray import tune


def train(config):
    plan = config["plan"].get(str(config["x"]), "never")
    if plan == "silent":
        return
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            with open(os.path.join(d, "epoch")) as f:
                start = int(f.read())
    for epoch in range(start + 1, config["max_epochs"] + 1):
        marker = os.path.join(config["marker_dir"], str(config["x"]))
        if (plan == "at1" and epoch == 1) or (plan == "at2" and epoch == 2) or (
                plan == f"once{epoch}" and not os.path.exists(marker)):
            open(marker, "w").close()
            raise RuntimeError(f"boom at epoch {epoch}")
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "epoch"), "w") as f:
                f.write(str(epoch))
            loss = float("nan") if plan == "nan" else config["x"] / epoch
            tune.report({"epoch": epoch, config.get("key", "val_loss"): loss},
                        checkpoint=tune.Checkpoint.from_directory(d))
'''

# grid order (one trial at a time): the best trial at epoch 1 raises once promoted, the next best
# raises once in epoch 2, one trial raises before its first report
XS = [0.1, 0.5, 0.6, 0.2, 0.9, 0.7, 0.8]
PLAN = {"0.1": "at2", "0.2": "once2", "0.9": "at1"}


class ResultLog(Callback):
    """Every epoch Tune received, per trial (retries included)."""

    def __init__(self) -> None:
        self.seen: dict[str, list[int]] = {}

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict,
                        **info: Any) -> None:
        self.seen.setdefault(trial.trial_id, []).append(int(result["epoch"]))


def _scheduler(algorithm: str) -> Any:
    kw: dict[str, Any] = {"metric": "val_loss", "mode": "min", "max_concurrent": 1}
    if algorithm == "asha":
        return ASHAScheduler(3, 3, len(XS), **kw)
    if algorithm == "hyperband":
        return HyperbandScheduler(3, 3, **kw)
    if algorithm == "swift-asha":
        return SwiftASHAScheduler(3, 3, len(XS), **kw)
    return SwiftHyperbandScheduler(3, 3, make_predictor_factory("svr"), seed=0, **kw)


def _fit(tmp_path: Path, algorithm: str, max_failures: int) -> tuple[Any, ResultLog]:
    train = user_module(tmp_path, f"raising_{algorithm.replace('-', '_')}", RAISING).train
    scheduler = _scheduler(algorithm)
    n = scheduler.core.trials_needed()
    log = ResultLog()
    (tmp_path / "markers").mkdir()
    tuner = tune.Tuner(
        train,
        param_space={"x": tune.grid_search(XS[:n]), "plan": PLAN, "max_epochs": 3,
                     "marker_dir": str(tmp_path / "markers")},
        tune_config=tune.TuneConfig(scheduler=scheduler, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), verbose=0, callbacks=[log],
                                  failure_config=tune.FailureConfig(max_failures=max_failures)),
    )
    tuner.fit()
    return scheduler, log


@pytest.mark.parametrize(("algorithm", "max_failures"), [
    ("asha", 0), ("asha", 1), ("hyperband", 1), ("swift-asha", 1), ("swift-hyperband", 1),
])
def test_ray_trial_errors_study_goes_on_under_every_algorithm(
    tmp_path: Path, ray_local: Any, algorithm: str, max_failures: int
) -> None:
    scheduler, log = _fit(tmp_path, algorithm, max_failures)
    by_x = {rec.config["x"]: (tid, rec) for tid, rec in scheduler.records.items()}
    assert not scheduler._active and not scheduler._retrying
    statuses = {rec.status for rec in scheduler.records.values()}
    assert statuses <= {"finished", "stopped", "stopped-early", "stopped-by-prediction", "error"}
    for tid, rec in scheduler.records.items():
        # a retry resumes from its checkpoint: no epoch is reported twice or counted twice
        seen = log.seen.get(tid, [])
        assert seen == sorted(set(seen)) and len(rec.curve) == len(seen)
        if rec.status == "error":
            assert scheduler.core._state[tid] == TrialState.STOPPED
            assert rec.failures == 1 + max_failures
            assert rec.error_message == f"RuntimeError: boom at epoch {len(rec.curve) + 1}"
    tid, rec = by_x[0.9]
    assert rec.status == "error" and rec.curve == []
    if algorithm in ("asha", "hyperband"):  # the best at epoch 1 is promoted, then raises
        assert by_x[0.1][1].status == "error" and by_x[0.1][1].curve == [0.1]
    once = by_x.get(0.2)
    if once is not None and once[1].failures:
        # raised once in epoch 2: Tune's retry continues it from epoch 2; no retry, an error
        assert once[1].status == ("error" if max_failures == 0 else "finished")
        assert once[1].failures == 1
    if max_failures and algorithm in ("asha", "hyperband"):
        assert scheduler.best() == (by_x[0.2][0], pytest.approx(0.2 / 3))


def _toml(tmp_path: Path, name: str, plan: dict[str, str], trials: int = 3, **study: Any) -> Path:
    user_module(tmp_path / "proj", f"raising_{name}", RAISING)
    (tmp_path / "markers").mkdir(exist_ok=True)
    extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in study.items())
    plan_s = ", ".join(f'"{k}" = "{v}"' for k, v in plan.items())
    toml = tmp_path / "proj" / f"{name}.toml"
    toml.write_text(
        f'[study]\nname = "{name}"\ntrials = {trials}\nseed = 0\n'
        f'output_dir = "{tmp_path / "results"}"\n'
        f"{extra}"
        '[algorithm]\nname = "asha"\nmax_resource = 3\neta = 3\n'
        '[resources]\ncpu = 2\n'
        f'[trainable]\nfunction = "raising_{name}:train"\nmarker_dir = "{tmp_path / "markers"}"\n'
        f"plan = {{ {plan_s} }}\n"
        '[space]\nx = { type = "choice", values = [0.1, 0.5, 0.6] }\n'
    )
    return toml


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def fresh_ray() -> Any:
    """A local Ray of its own for each ``hpo-node run`` test: the own-Tuner tests above share
    the module's Ray, and after their failing trials a study there sometimes waited forever for
    a trial slot (seen in a CI-like run; not explained yet)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


def test_ray_trial_errors_hpo_node_run_reports_the_error_and_exits_0(
    tmp_path: Path, fresh_ray: Any, capsys: Any, caplog: Any
) -> None:
    toml = _toml(tmp_path, "some", {"0.5": "at1"})
    with caplog.at_level(logging.WARNING, logger="hpo_node.integrations.ray_tune"):
        assert run_main([str(toml), "--progress-every", "60"]) == 0
    out = capsys.readouterr().out
    rows = _rows(tmp_path / "results" / "some" / "trials.csv")
    errors = [r for r in rows if r["decision"] == "error"]
    assert errors and all(r["error"] == "RuntimeError: boom at epoch 1" for r in errors)
    # hpo-node run retries the first twice; the others failed alike before an epoch: not retried
    assert sorted(r["failures"] for r in errors) == ["1"] * (len(errors) - 1) + ["3"]
    assert any(r["decision"] != "error" for r in rows)
    assert (f"errors: {len(errors)} trial(s) failed (decision 'error' in trials.csv); the first, "
            f"trial {errors[0]['trial_id']}: RuntimeError: boom at epoch 1") in out
    failed = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(m.startswith(f"trial {errors[0]['trial_id']} failed: RuntimeError: boom at epoch "
                            "1 (error file ") for m in failed)
    retried = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("Tune retries it from its last checkpoint" in m for m in retried) == 2


def test_ray_trial_errors_every_trial_failing_is_one_line_and_exit_1(
    tmp_path: Path, fresh_ray: Any, capsys: Any
) -> None:
    toml = _toml(tmp_path, "all", {"0.1": "at1", "0.5": "at1", "0.6": "at1"}, trials=1)
    assert run_main([str(toml), "--progress-every", "60"]) == 1
    err = capsys.readouterr().err
    line = [ln for ln in err.splitlines() if ln.startswith("hpo-node run:")]
    assert len(line) == 1 and line[0].startswith(
        "hpo-node run: error: every trial that ran failed (1 of 1 ended in error; the first, "
        "trial ")
    assert "RuntimeError: boom at epoch 1)" in line[0] and "Traceback" not in err
    rows = _rows(tmp_path / "results" / "all" / "trials.csv")
    assert [(r["decision"], r["failures"]) for r in rows] == [("error", "3")]


def test_ray_trial_errors_an_error_another_trial_had_before_its_first_epoch_is_not_retried(
    tmp_path: Path, fresh_ray: Any, capsys: Any, caplog: Any
) -> None:
    toml = _toml(tmp_path, "same", {"0.1": "at1", "0.5": "at1", "0.6": "at1"}, trials=6)
    with caplog.at_level(logging.WARNING, logger="hpo_node.integrations.ray_tune"):
        assert run_main([str(toml), "--progress-every", "60"]) == 1
    captured = capsys.readouterr()
    line = [ln for ln in captured.err.splitlines() if ln.startswith("hpo-node run:")]
    assert len(line) == 1 and line[0].startswith(
        "hpo-node run: error: every trial that ran failed (6 of 6 ended in error; the first, ")
    assert "Traceback" not in captured.err
    assert caplog.text.count("failed alike before its first report") == 5
    rows = _rows(tmp_path / "results" / "same" / "trials.csv")
    # the first failing trial is retried twice (nothing to compare with yet), the others not
    assert sorted(int(r["failures"]) for r in rows) == [1, 1, 1, 1, 1, 3]
    assert all(r["decision"] == "error" and r["epochs"] == "0" for r in rows)
    assert "completed. Last result" not in captured.out


def test_ray_trial_errors_nothing_but_nan_is_one_line_and_exit_1(
    tmp_path: Path, fresh_ray: Any, capsys: Any, caplog: Any
) -> None:
    toml = _toml(tmp_path, "nan", {"0.1": "nan", "0.5": "nan", "0.6": "nan"}, trials=2)
    with caplog.at_level(logging.WARNING):
        assert run_main([str(toml), "--progress-every", "60"]) == 1
    out, err = capsys.readouterr()
    # two trials cannot reach R = 3 with eta = 3: said once, in the study's terms
    assert out.count("study.trials = 2 is fewer than the 3 that asha needs") == 1
    assert "TuneConfig(num_samples)" not in out + err + caplog.text
    assert err.splitlines()[-1].startswith(
        "hpo-node run: error: every trial reported a non-finite val_loss (NaN or inf) at every "
        "epoch")
    assert "Traceback" not in err
    rows = _rows(tmp_path / "results" / "nan" / "trials.csv")
    assert len(rows) == 2 and all(r["diverged"] == "1" for r in rows)


def test_ray_trial_errors_trainable_that_never_reports_is_one_line_and_exit_1(
    tmp_path: Path,
) -> None:
    """As a user runs it (``hpo-node run`` in its own process: Ray's own log lines included)."""
    toml = _toml(tmp_path, "silent", {"0.1": "silent", "0.5": "silent", "0.6": "silent"}, trials=1)
    run = subprocess.run([str(Path(sys.executable).parent / "hpo-node"), "run", str(toml),
                          "--progress-every", "60"], cwd=toml.parent, capture_output=True,
                         text=True, timeout=240, check=False)
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    last = run.stderr.splitlines()[-1]
    assert last.startswith("hpo-node run: error: trial ")
    assert ("returned without reporting anything: a trainable must call tune.report({'epoch': "
            "epoch, 'val_loss': value}, checkpoint=...) after every epoch") in last
    assert "Tune retries it" not in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_ray_trial_errors_unreported_metric_is_a_config_error(
    tmp_path: Path, fresh_ray: Any, capsys: Any
) -> None:
    toml = _toml(tmp_path, "metric", {}, metric="loss")
    assert run_main([str(toml), "--progress-every", "60"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        "hpo-node run: error: study.metric = 'loss': the trainable does not report it; it "
        "reports ['epoch', 'val_loss']. Set study.metric to one of those, or report 'loss' every "
        "epoch: tune.report({'epoch': epoch, 'loss': value}, checkpoint=...)"
    )
    assert "Traceback" not in err
    # the study folder is cleared: the corrected config runs without --overwrite
    assert not (tmp_path / "results" / "metric" / "study.json").exists()
    assert not (tmp_path / "results" / "metric" / "ray" / "metric").exists()


# -- the core: Scheduler.fail --------------------------------------------------------------------

RAY_CORES = [("asha", {}), ("hyperband", {}), ("swift-asha", {}),
             ("swift-asha", {"rule": "forecast"}), ("swift-asha", {"rule": "paper", "d": 3}),
             ("swift-hyperband", {}), ("swift-hyperband", {"rule": "paper", "d": 3})]


@pytest.mark.parametrize(("name", "options"), RAY_CORES)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_core_fail_lost_trials_never_block_the_run(name: str, options: dict[str, Any],
                                                    data: Any) -> None:
    """Trials lost at random epochs (``fail``) are never handed out again and the run ends with
    no trial running; the others are driven as an engine would (two workers)."""
    core = make_driver(name, max_resource=9, eta=3, seed=0, options=options,
                       n_trials=None if "hyperband" in name else 12)
    n = core.trials_needed() or 12
    losses = data.draw(st.lists(st.floats(0.1, 1.0), min_size=n, max_size=n))
    fail_at = data.draw(st.lists(st.sampled_from([0, 0, 1, 2, 5]), min_size=n, max_size=n))
    for i in range(n):
        core.add_trial(f"t{i}", {"x": losses[i]})
    running: list[str] = []
    lost: set[str] = set()
    for _ in range(10_000):
        while len(running) < 2 and (job := core.next_job()) is not None:
            assert job.trial_id not in lost
            running.append(job.trial_id)
        core.drain_stopped()
        if not running:
            break
        tid = running[data.draw(st.integers(0, len(running) - 1))]
        i = int(tid[1:])
        r = len(core._curve[tid]) + 1
        if r == fail_at[i]:
            core.fail(tid)
            core.fail(tid)  # a second time does nothing
            lost.add(tid)
            running.remove(tid)
        elif core.report(tid, r, losses[i] / r) != Decision.CONTINUE:
            running.remove(tid)
    assert not running
    assert all(core._state[t] == TrialState.STOPPED for t in lost)
    assert TrialState.RUNNING not in core._state.values()


def test_core_fail_unknown_trial_is_a_value_error() -> None:
    core = make_driver("asha", max_resource=3, eta=3, n_trials=3)
    core.add_trial("a")
    with pytest.raises(ValueError, match=r"trial_id must name an added trial, got 'b'"):
        core.fail("b")
    core.fail("a")  # pending: never started
    assert core.n_pending == 0 and core.next_job() is None


def _fit_not_retrying_alike(tmp_path: Path, xs: list[float], plan: dict[str, str],
                            max_concurrent: int) -> dict[float, Any]:
    """An own Tuner over ``xs`` (grid order) with ``retry_alike=False`` and two retries per
    trial; the scheduler's records by ``x``."""
    train = user_module(tmp_path, "raising_alike", RAISING).train
    scheduler = ASHAScheduler(3, 3, len(xs), metric="val_loss", mode="min",
                              max_concurrent=max_concurrent, retry_alike=False)
    (tmp_path / "markers").mkdir()
    tune.Tuner(
        train,
        param_space={"x": tune.grid_search(xs), "plan": plan, "max_epochs": 3,
                     "marker_dir": str(tmp_path / "markers")},
        tune_config=tune.TuneConfig(scheduler=scheduler, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=2)),
    ).fit()
    return {rec.config["x"]: rec for rec in scheduler.records.values()}


def test_ray_trial_errors_configuration_dependent_errors_skip_retries_and_the_study_goes_on(
    tmp_path: Path, fresh_ray: Any
) -> None:
    by_x = _fit_not_retrying_alike(tmp_path, [0.1, 0.5, 0.6, 0.7, 0.8, 0.9],
                                   {"0.5": "at1", "0.6": "at1", "0.7": "at1", "0.9": "at2"},
                                   max_concurrent=2)
    failing = sorted(by_x[x].failures for x in (0.5, 0.6, 0.7))
    assert all(by_x[x].status == "error" for x in (0.5, 0.6, 0.7))
    # the first is retried until its retries ran out; the others that fail after that are not
    # (two run at once: the other one may have been retried before)
    assert failing[-1] == 3 and failing[0] == 1 and failing[1] in (1, 2, 3)
    assert by_x[0.1].curve and by_x[0.8].curve
    if by_x[0.9].failures:  # after its first report: retried as usual
        assert by_x[0.9].failures == 3


def test_ray_trial_errors_an_error_that_passed_on_a_retry_is_always_retried(
    tmp_path: Path, fresh_ray: Any
) -> None:
    """A first-epoch error that went away on a retry (a passing one: a busy file system, a
    download) does not make other trials' same error final, even after a trial ran out of
    retries with it."""
    by_x = _fit_not_retrying_alike(tmp_path, [0.1, 0.5, 0.6],
                                   {"0.1": "once1", "0.5": "at1", "0.6": "at1"},
                                   max_concurrent=1)
    assert by_x[0.1].failures == 1 and by_x[0.1].curve
    assert [(by_x[x].status, by_x[x].failures) for x in (0.5, 0.6)] == [("error", 3)] * 2


def _pickled_failure(tmp_path: Path, exc: BaseException) -> Any:
    from types import SimpleNamespace

    from ray import cloudpickle

    path = tmp_path / "error.pkl"
    path.write_bytes(cloudpickle.dumps(exc))
    return SimpleNamespace(pickled_error_file=str(path), error_file=None)


def test_ray_trial_errors_ray_failures_are_told_by_class_not_name(tmp_path: Path) -> None:
    """torch's ``OutOfMemoryError`` (CUDA) is the trainable's own error, Ray's memory monitor's
    ``OutOfMemoryError`` and a lost actor are Ray's: only those are always retried."""
    from ray.exceptions import ActorDiedError, OutOfMemoryError, RayTaskError

    from hpo_node.integrations.ray_tune import _read_failure

    class CudaOutOfMemoryError(RuntimeError):
        pass

    CudaOutOfMemoryError.__name__ = "OutOfMemoryError"
    user = RayTaskError("train", "Traceback ...", CudaOutOfMemoryError("CUDA out of memory."))
    assert _read_failure(_pickled_failure(tmp_path, user)) == (
        "OutOfMemoryError: CUDA out of memory.", False)
    line, from_ray = _read_failure(_pickled_failure(tmp_path, OutOfMemoryError("memory monitor")))
    assert line == "OutOfMemoryError: memory monitor" and from_ray
    line, from_ray = _read_failure(_pickled_failure(tmp_path, ActorDiedError()))
    assert line is not None and line.startswith("ActorDiedError: ") and from_ray
    try:  # a class trainable whose setup raises: its actor dies in its creation task
        raise FileNotFoundError("data.csv")
    except FileNotFoundError as exc:
        setup = RayTaskError("Trainable.__init__", "Traceback (most recent call last):\n  File "
                             "\"t.py\", line 3\nFileNotFoundError: data.csv", exc)
    assert _read_failure(_pickled_failure(tmp_path, ActorDiedError(setup))) == (
        "FileNotFoundError: data.csv", False)


def test_ray_trial_errors_retry_alike_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="retry_alike must be True or False, got 'no'"):
        ASHAScheduler(3, 3, 3, retry_alike="no")
