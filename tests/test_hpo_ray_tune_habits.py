"""Ray Tune habits with hpo_node's schedulers, from a user's own Tuner script: Tune's searchers,
concurrency limits, ``Tuner.restore`` without our callback, and a scheduler reused for a second
study."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import ray
from ray import tune
from ray.tune.callback import Callback
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from hpo_node.integrations.ray_tune import ASHAScheduler, HyperbandScheduler
from tests.conftest import USER_TRAINABLE, user_module
from tests.ray_callbacks import InterruptOnce

# ASHA, R = 3, eta = 3 over six configurations: 6 epochs at rung 1, then the best two train
# epochs 2 and 3 (2 x 2 more): 10 epochs, whatever the order.
EPOCHS = 10


def _tuner(tmp_path: Path, scheduler: ASHAScheduler, search_alg: Any = None,
           callbacks: tuple[Callback, ...] = (), **tune_config: Any) -> tune.Tuner:
    """The user's Tuner: metric and mode in TuneConfig, no hpo_node callback."""
    train = user_module(tmp_path, "my_habits_trainable", USER_TRAINABLE).train
    return tune.Tuner(
        train,
        param_space={"x": tune.uniform(0.1, 1.0), "flaw": "none"},
        tune_config=tune.TuneConfig(scheduler=scheduler, search_alg=search_alg, num_samples=6,
                                    metric="val_loss", mode="min", reuse_actors=True,
                                    **tune_config),
        run_config=tune.RunConfig(name="habits", storage_path=str(tmp_path / "ray"), verbose=0,
                                  callbacks=list(callbacks)),
    )


def test_ray_tune_habits_optuna_search_runs_the_asha_schedule(tmp_path: Path,
                                                              ray_local: Any) -> None:
    scheduler = ASHAScheduler(3, 3, 6)
    results = _tuner(tmp_path, scheduler, OptunaSearch(seed=0)).fit()
    assert results.num_errors == 0
    assert scheduler.epochs_used() == EPOCHS
    assert scheduler.status_counts() == {"stopped": 4, "finished": 2}
    assert scheduler.best() is not None


@pytest.mark.parametrize(
    ("search_alg", "tune_config", "limit"),
    [
        (lambda: ConcurrencyLimiter(OptunaSearch(), 2), {}, "ConcurrencyLimiter"),
        (lambda: BasicVariantGenerator(max_concurrent=2), {}, "BasicVariantGenerator"),
        (lambda: None, {"max_concurrent_trials": 2}, "BasicVariantGenerator"),
    ],
)
def test_ray_tune_habits_concurrency_limits_are_refused_with_the_reason(
    tmp_path: Path, ray_local: Any, search_alg: Any, tune_config: dict[str, Any], limit: str
) -> None:
    scheduler = ASHAScheduler(3, 3, 6)
    tuner = _tuner(tmp_path, scheduler, search_alg(), **tune_config)
    with pytest.raises(ValueError, match=rf"{limit}\(max_concurrent=2\).*holds at rungs as "
                                         r"running.*ASHAScheduler\(\.\.\., max_concurrent=2\)"):
        tuner.fit()
    assert scheduler.epochs_used() == 0


def test_ray_tune_habits_scheduler_reused_for_a_second_fit_is_refused(
    tmp_path: Path, ray_local: Any
) -> None:
    scheduler = ASHAScheduler(3, 3, 6)
    _tuner(tmp_path / "first", scheduler).fit()
    assert scheduler.epochs_used() == EPOCHS
    with pytest.raises(ValueError, match=r"already ran a study \(6 trials\).*create a new one"):
        _tuner(tmp_path / "second", scheduler).fit()
    assert scheduler.epochs_used() == EPOCHS


def _restored_scheduler(tuner: tune.Tuner) -> ASHAScheduler:
    return tuner._local_tuner._tune_config.scheduler  # the one unpickled from tuner.pkl


def test_ray_tune_habits_tuner_restore_without_our_callback_resumes_the_rungs(
    tmp_path: Path, ray_local: Any
) -> None:
    scheduler = ASHAScheduler(3, 3, 6)
    _tuner(tmp_path, scheduler, callbacks=(InterruptOnce(4, tmp_path / "interrupted"),)).fit()
    before = scheduler.epochs_used()
    assert 0 < before < EPOCHS
    train = user_module(tmp_path, "my_habits_trainable", USER_TRAINABLE).train
    tuner = tune.Tuner.restore(str(tmp_path / "ray" / "habits"), trainable=train,
                               resume_unfinished=True)
    tuner.fit()
    restored = _restored_scheduler(tuner)
    # every epoch trained once over both runs: the rungs came back from the snapshot
    assert restored.epochs_used() == EPOCHS
    assert restored.status_counts() == {"stopped": 4, "finished": 2}


def test_ray_tune_habits_tuner_restore_without_any_saved_state_is_refused(
    tmp_path: Path, ray_local: Any
) -> None:
    scheduler = ASHAScheduler(3, 3, 6)
    _tuner(tmp_path, scheduler, callbacks=(InterruptOnce(4, tmp_path / "interrupted"),)).fit()
    # an experiment of older versions: no scheduler state in the snapshot (nor in the copy Ray
    # keeps in this session's folder, which a restore in a new process would not have)
    experiment = tmp_path / "ray" / "habits"
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    for folder in (experiment, *session.glob("artifacts/*/habits/driver_artifacts")):
        for state in folder.glob("callback-states-*.pkl"):
            state.unlink()
    train = user_module(tmp_path, "my_habits_trainable", USER_TRAINABLE).train
    tuner = tune.Tuner.restore(str(experiment), trainable=train, resume_unfinished=True)
    with pytest.raises(ValueError, match=r"Tuner.restore: trial \w+ has results but this "
                                         r"scheduler's state was not saved"):
        tuner.fit()


def test_ray_tune_habits_hyperband_with_too_few_samples_is_refused(
    tmp_path: Path, ray_local: Any
) -> None:
    scheduler = HyperbandScheduler(9, 3)  # brackets of 9, 5 and 3 configurations
    tuner = _tuner(tmp_path, scheduler)  # num_samples=6
    with pytest.raises(ValueError, match=r"hyperband \(max_resource 9\) runs 17 configurations, "
                                         r"but the searcher made 6: set "
                                         r"TuneConfig\(num_samples=17\)"):
        tuner.fit()
    assert scheduler.epochs_used() == 0



def test_ray_tune_habits_too_few_samples_for_any_trial_to_reach_r_is_warned(
    tmp_path: Path, ray_local: Any, caplog: Any
) -> None:
    """ASHA over 6 samples at R = 9, eta = 3 (rungs 1, 3, 9) promotes 2 to epoch 3 and none to
    9: the scheduler says so once the searcher has made its trials (as ``hpo-node run`` does
    before it starts), and the run ends with no best."""
    scheduler = ASHAScheduler(9, 3)
    with caplog.at_level(logging.WARNING, logger="hpo_node.integrations.ray_tune"):
        _tuner(tmp_path, scheduler).fit()  # num_samples=6
    note = ("warning: TuneConfig(num_samples) = 6 is fewer than the 9 that asha needs for any trial to "
            "reach max_resource = 9 (each rung promotes its best 1/eta: rungs at 1, 3, 9 epochs, "
            "eta = 3): the study will find no best at R; give at least 9")
    assert scheduler.notes == (note,)
    assert [r.getMessage() for r in caplog.records].count(note) == 1
    assert scheduler.best() is None and scheduler.epochs_used() == 6 + 2 * 2


class _OthersAtTheEnd(Callback):
    """The Tune status of every other trial when the winner reports its last epoch."""

    def __init__(self, last: int) -> None:
        self.last = last
        self.others: list[str] = []

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict,
                        **info: Any) -> None:
        if result["epoch"] == self.last:
            self.others = [t.status for t in trials if t is not trial]


def test_ray_tune_habits_a_trial_its_own_report_eliminates_is_stopped_not_paused(
    tmp_path: Path, ray_local: Any
) -> None:
    # SHA, R = 3, eta = 3, three trials one at a time (loss x / epoch): the third, the worst, ends
    # the round with its report; the round's barrier stops it at once instead of pausing it
    # (checkpointed, held PAUSED in Tune to the end of the study).
    from hpo_node.hyperband import SuccessiveHalving
    from hpo_node.integrations.ray_tune import CoreTrialScheduler

    train = user_module(tmp_path, "my_sha_trainable", USER_TRAINABLE).train
    scheduler = CoreTrialScheduler(SuccessiveHalving(3, eta=3, n_trials=3), metric="val_loss",
                                   mode="min", max_concurrent=1)
    seen = _OthersAtTheEnd(3)
    tune.Tuner(
        train,
        param_space={"x": tune.grid_search([0.1, 0.5, 0.9]), "flaw": "none"},
        tune_config=tune.TuneConfig(scheduler=scheduler, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), verbose=0,
                                  callbacks=[seen]),
    ).fit()
    assert scheduler.epochs_used() == 5
    assert seen.others == ["TERMINATED", "TERMINATED"]
