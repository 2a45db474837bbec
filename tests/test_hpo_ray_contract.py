"""The trainable contract (hpo_node.integrations.ray_tune): each violation by a user's own
trainable ends the study at its first occurrence with a TrainableContractError naming the rule."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ray import tune

from hpo_node.integrations.ray_tune import (
    ASHAScheduler,
    SchedulerStateCallback,
    TrainableContractError,
)

# A user's trainable, written as the Ray Tune docs show; ``flaw`` selects one contract violation.
TRAINABLE = '''
import os
import tempfile

from ray import tune


def train(config):
    flaw = config["flaw"]
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None and flaw != "ignores-checkpoint":
        with checkpoint.as_directory() as d:
            with open(os.path.join(d, "epoch")) as f:
                start = int(f.read())
    last = 2 if flaw == "returns-early" else 3
    for epoch in range(start + 1, last + 1):
        metrics = {"val_loss": config["x"] / epoch}
        if flaw != "no-epoch-key":
            metrics["epoch"] = epoch
        if flaw == "no-checkpoint":
            tune.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "epoch"), "w") as f:
                f.write(str(epoch))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
'''


def user_module(folder: Path, name: str, source: str) -> ModuleType:
    """Import ``folder/name.py`` (written from ``source``) and ship it to Ray's workers by value."""
    import ray.cloudpickle

    path = folder / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    ray.cloudpickle.register_pickle_by_value(module)
    return module


def _fit(tmp_path: Path, flaw: str) -> ASHAScheduler:
    """ASHA, R = 3, eta = 3, three trials: one is promoted from epoch 1 to epoch 3."""
    train = user_module(tmp_path, f"my_trainable_{flaw.replace('-', '_')}", TRAINABLE).train
    scheduler = ASHAScheduler(3, 3, 3, metric="val_loss", mode="min")
    tuner = tune.Tuner(
        train,
        param_space={"x": tune.uniform(0.1, 1.0), "flaw": flaw},
        tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=3, reuse_actors=True),
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
                               r"checkpoint Tune gave it.*rule 2"),
        ("no-epoch-key", r"reported no 'epoch' \(resource_attr\); it reported \['val_loss'\].*"
                         r"rule 1"),
        ("returns-early", r"returned after epoch 2 of max_resource 3 without being stopped.*"
                          r"rule 3"),
    ],
)
def test_ray_contract_violation_ends_the_study_with_the_rule(
    tmp_path: Path, ray_local: Any, flaw: str, message: str
) -> None:
    with pytest.raises(TrainableContractError, match=message):
        _fit(tmp_path, flaw)
