"""A user's own Ray Tune trainable for tests/test_deploy_multinode.py, outside the hpo_node package.

Deterministic: the loss at epoch ``e`` is ``x**2 + 0.1 + 1/e`` for the configuration's ``x``, so a
trial that is paused, checkpointed and resumed elsewhere reports exactly the curve of one that ran
straight through. Each report names the Ray node that ran the epoch and the epoch the trial was
restored at (0: started fresh).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

CHECKPOINT_VERSION = 1


def train(config: dict[str, Any]) -> None:
    epoch = restored = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = json.loads((Path(d) / "state.json").read_text())
        if state["version"] != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version must be {CHECKPOINT_VERSION}, got {state['version']}")
        epoch = restored = int(state["epoch"])
    node = ray.get_runtime_context().get_node_id()
    while epoch < int(config["max_epochs"]):
        epoch += 1
        time.sleep(float(config["epoch_s"]))
        loss = float(config["x"]) ** 2 + 0.1 + 1.0 / epoch
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "state.json").write_text(json.dumps({"version": CHECKPOINT_VERSION,
                                                            "epoch": epoch}))
            tune.report({"epoch": epoch, "val_loss": loss, "node": node, "restored_at": restored},
                        checkpoint=tune.Checkpoint.from_directory(d))
