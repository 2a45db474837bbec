"""Shared fixtures: real gateway server processes and the shared learning-curve data.

``GatewayProcess`` is :class:`qpu_gateway.process.GatewayProcess`, re-exported for the tests.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import settings

from qpu_gateway.process import GatewayProcess

# Locally, hypothesis explores new examples on every run (that is how fuzzing found the k = 2^32
# allocation). CI sets HYPOTHESIS_PROFILE=ci: the same examples every run, so a red CI is
# reproducible.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REPO = Path(__file__).resolve().parents[1]
MLPF_CSV = REPO / "data" / "mlpf_delphes_curves.csv"
"""The MLPF Delphes learning curves (data/README.md): 296 rows, ``loss_0 .. loss_99``."""


# With QHPO_TEST_WORKERS=2, scripts/test.sh runs the suite on two xdist workers (--dist loadgroup).
# The modules that start Ray (a local Ray, a study, a Ray cluster, Slurm) all go to one worker, one
# after another: two Rays starting at once on a 2-core machine time out. A module is recognised by
# what it calls.
_STARTS_RAY = re.compile(
    r'ray_local|run_study\(|run_main\(|optimize\(|tune\.Tuner|ray\.init|ray start|sbatch|"run",'
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    starts_ray: dict[Path, bool] = {}
    for item in items:
        path = Path(item.path)
        if path not in starts_ray:
            starts_ray[path] = bool(_STARTS_RAY.search(path.read_text()))
        if starts_ray[path]:
            item.add_marker(pytest.mark.xdist_group("ray"))


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def gateway_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A session-wide gateway process (neal backend, its own SQLite store)."""
    store = tmp_path_factory.mktemp("gateway") / "models.sqlite"
    proc = GatewayProcess(store).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def gateway_address(gateway_process: GatewayProcess) -> str:
    """``127.0.0.1:PORT`` of the session-wide gateway process."""
    return gateway_process.address


@pytest.fixture(scope="session")
def mlpf_curves() -> np.ndarray:
    """The MLPF learning curves, (296, 100)."""
    import pandas as pd

    df = pd.read_csv(MLPF_CSV)
    return df[[f"loss_{i}" for i in range(100)]].to_numpy(dtype=np.float64)


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """One local Ray per test module (2 CPUs, no dashboard); its studies reuse it."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    yield
    ray.shutdown()


# A user's trainable, written as the Ray Tune docs show; ``flaw`` selects one contract violation.
USER_TRAINABLE = '''
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
            metrics["epoch"] = epoch - 1 if flaw == "counts-from-0" else epoch
        if flaw == "no-checkpoint":
            tune.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "epoch"), "w") as f:
                f.write(str(epoch))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
'''


# A study's trainable (a TOML's [trainable] function): resumes from its checkpoint, trains to
# ``max_epochs``, loss ``x / epoch``.
STUDY_TRAINABLE = '''
import os
import tempfile

from ray import tune


def train(config):
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            with open(os.path.join(d, "epoch")) as f:
                start = int(f.read())
    for epoch in range(start + 1, config["max_epochs"] + 1):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "epoch"), "w") as f:
                f.write(str(epoch))
            tune.report({"epoch": epoch, "val_loss": config["x"] / epoch},
                        checkpoint=tune.Checkpoint.from_directory(d))
'''

def user_module(folder: Path, name: str, source: str) -> Any:
    """Import ``folder/name.py`` (written from ``source``) and ship it to Ray's workers by value."""
    import importlib.util
    import sys

    import ray.cloudpickle

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    ray.cloudpickle.register_pickle_by_value(module)
    return module
