"""The trainable contract (hpo_node.integrations.ray_tune): each violation by a user's own
trainable ends the study at its first occurrence with a TrainableContractError naming the rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ray import tune

from hpo_node.integrations.ray_tune import (
    ASHAScheduler,
    SchedulerStateCallback,
    TrainableContractError,
)
from tests.conftest import USER_TRAINABLE, user_module


def _fit(tmp_path: Path, flaw: str) -> ASHAScheduler:
    """ASHA, R = 3, eta = 3, three trials (x = 0.1, 0.5, 0.9; loss x / epoch): the first is
    promoted from epoch 1 to epoch 3 once the third reported, so it resumes from its checkpoint
    (a trial promoted as it pauses trains on without one). One trial at a time, so that the third
    to report is the third started."""
    train = user_module(tmp_path, f"my_trainable_{flaw.replace('-', '_')}", USER_TRAINABLE).train
    scheduler = ASHAScheduler(3, 3, 3, metric="val_loss", mode="min", max_concurrent=1)
    tuner = tune.Tuner(
        train,
        param_space={"x": tune.grid_search([0.1, 0.5, 0.9]), "flaw": flaw},
        tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=1, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), verbose=0,
                                  callbacks=[SchedulerStateCallback(scheduler)]),
    )
    tuner.fit()
    return scheduler


def test_ray_contract_compliant_trainable_finishes(tmp_path: Path, ray_local: Any) -> None:
    scheduler = _fit(tmp_path, "none")
    assert scheduler.violation is None
    assert scheduler.best() is not None
    # 3 trials x epoch 1, then the promoted one continues with epochs 2 and 3 (no epoch twice)
    assert scheduler.epochs_used() == 5
    assert scheduler.status_counts() == {"stopped": 2, "finished": 1}


@pytest.mark.parametrize(
    ("flaw", "message"),
    [
        ("no-checkpoint", r"resumed after epoch 1 but reported epoch=1: it restarted instead of "
                          r"continuing \(it saved no checkpoint\).*rule 2"),
        ("ignores-checkpoint", r"restarted instead of continuing \(it did not restore the "
                               r"checkpoint of epoch 1 Tune gave it.*rule 2"),
        ("no-epoch-key", r"reported no 'epoch' \(resource_attr\); it reported \['val_loss'\].*"
                         r"rule 1"),
        ("returns-early", r"returned after epoch 2 of max_resource 3 without being stopped.*"
                          r"rule 3"),
        ("counts-from-0", r"reported epoch=0 \(resource_attr\): epochs count from 1.*rule 1"),
    ],
)
def test_ray_contract_violation_ends_the_study_with_the_rule(
    tmp_path: Path, ray_local: Any, flaw: str, message: str
) -> None:
    with pytest.raises(TrainableContractError, match=message):
        _fit(tmp_path, flaw)
