"""A user's own trainables, as a user runs them: the example folders copied outside the repo, run
by the installed ``hpo-node run`` (a subprocess: its own Ray, the folder shipped as the job's
runtime_env, its own gateway child process) and by :func:`hpo_node.study.optimize` from Python
(the module imported from the copied folder, Ray already started by the caller)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hpo_node.study import load_study, optimize
from hpo_node.trainables import load_trainable
from qpu_gateway.client import GatewayClient
from tests.conftest import STUDY_TRAINABLE
from tests.ray_callbacks import InterruptOnce

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
HPO_NODE = Path(sys.executable).with_name("hpo-node")
OUTPUTS = ("trials.csv", "best.json", "summary.json", "curves.png", "best_vs_epochs.png",
           "best_vs_epochs.csv")
# (example folder, its trainable, its hyperparameters, TOML overrides that keep the test short)
TORCH = ("torch_regression", "regression_trainable:train", {"lr", "weight_decay", "width",
                                                           "batch_size"}, {"data_seed"})
OSCILLATOR = ("oscillator", "oscillator_fit:fit", {"omega0", "lr", "beta1"},
              {"steps_per_epoch", "data_seed"})


def _user_folder(tmp_path: Path, name: str) -> Path:
    """The example folder, copied where a user would keep it (outside the repository)."""
    folder = tmp_path / "my_project" / name
    shutil.copytree(EXAMPLES / name, folder)
    return folder


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _check_outputs(study_dir: Path, space: set[str], constants: set[str], algorithm: str,
                   n: int) -> dict[str, Any]:
    for name in OUTPUTS:
        assert (study_dir / name).stat().st_size > 0, name
    rows = _rows(study_dir / "trials.csv")
    assert len(rows) == n
    keys = {k.removeprefix("config.") for k in rows[0] if k.startswith("config.")}
    assert keys == space | constants | {"max_epochs"}
    summary = json.loads((study_dir / "summary.json").read_text())
    assert summary["algorithm"] == algorithm and summary["trials"] == n
    assert summary["trials_by_decision"].get("error", 0) == 0
    assert summary["epochs_used"] == sum(int(r["epochs"]) for r in rows)
    # one best_vs_epochs row per epoch trained, in the order Tune received them
    trace = _rows(study_dir / "best_vs_epochs.csv")
    assert [int(r["epochs"]) for r in trace] == list(range(1, summary["epochs_used"] + 1))
    best = json.loads((study_dir / "best.json").read_text())
    assert best["found"] and set(best["config"]) == space | constants | {"max_epochs"}
    final = [float(r["final_val_loss"]) for r in rows if r["final_val_loss"]]
    assert best["value"] == min(final)
    assert float(trace[-1]["best_val_loss_at_R"]) == best["value"]
    return summary


def _run_cli(folder: Path, cwd: Path, *sets: str) -> subprocess.CompletedProcess[str]:
    args = [str(HPO_NODE), "run", str(folder / "study.toml"), "--progress-every", "60"]
    for s in sets:
        args += ["--set", s]
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=400)


@pytest.mark.parametrize(("example", "algorithm"), [(TORCH, "swift-asha"), (OSCILLATOR, "asha")])
def test_hpo_user_study_cli_runs_a_trainable_beside_its_toml(
    tmp_path: Path, example: tuple[str, str, set[str], set[str]], algorithm: str
) -> None:
    name, function, space, constants = example
    folder = _user_folder(tmp_path, name)
    cwd = tmp_path / "elsewhere"  # not the folder: the module must be found beside the TOML
    cwd.mkdir()
    # swift-asha: the published rule, whose per-rung predictors are fitted on the gateway
    sets = ['algorithm.params={rule="paper"}'] if algorithm.startswith("swift") else []
    proc = _run_cli(folder, cwd, f'algorithm.name="{algorithm}"', "study.trials=18", *sets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"shipping {folder.resolve()} to the Ray workers" in proc.stdout
    assert f"; trainable {function}\n" in proc.stdout  # the user's, named
    if algorithm.startswith("swift"):
        assert "qpu-gateway started on" in proc.stdout and "qpu-gateway stopped (exit 0)" in (
            proc.stdout)
    study_dir = cwd / "results" / load_study(folder / "study.toml").name
    summary = _check_outputs(study_dir, space, constants, algorithm, 18)
    if algorithm.startswith("swift"):
        # d = 15 would give no prediction with 18 trials: adapted, said, and predictions made
        assert summary["notes"] and "d adapted to 3" in summary["notes"][0]
        assert summary["notes"][0] in proc.stdout and summary["notes"][0] not in proc.stderr
        assert summary["predictor"]["decisions_with_prediction"] >= 1
        assert summary["predictor"]["fits_ok"] >= 1


@pytest.mark.parametrize(("example", "algorithm"), [(OSCILLATOR, "swift-asha"), (TORCH, "asha")])
def test_hpo_user_study_python_entry_point_with_a_callable(
    tmp_path: Path, ray_local: Any, gateway_address: str,
    example: tuple[str, str, set[str], set[str]], algorithm: str,
) -> None:
    name, function, space, constants = example
    folder = _user_folder(tmp_path, name)
    # the user's own import of their trainable, from their folder
    train = load_trainable(function, folder)
    assert Path(train.__code__.co_filename).resolve().parent == folder.resolve()
    out = tmp_path / "out"
    # swift-asha: the published rule, whose per-rung predictors are fitted on the gateway
    rule = {"algorithm.params": {"rule": "paper"}} if algorithm.startswith("swift") else {}
    with GatewayClient(gateway_address) as client:
        before = {m.model_id for m in client.list_models()}
        res = optimize(train, folder / "study.toml", gateway=gateway_address,
                       overrides={"algorithm.name": algorithm, "study.trials": 18,
                                  "study.output_dir": str(out), **rule})
        # the study's predictor models are deleted when it ends (they held its curves)
        assert {m.model_id for m in client.list_models()} == before
    assert res.study_dir == out / load_study(folder / "study.toml").name
    summary = _check_outputs(res.study_dir, space, constants, algorithm, 18)
    assert res.summary == summary
    assert len(res.trials) == 18 and {f"config.{k}" for k in space} <= set(res.trials[0])
    best = json.loads((res.study_dir / "best.json").read_text())
    assert res.best_config == best["config"] and res.best_value == best["value"]
    if algorithm.startswith("swift"):
        assert summary["gateway"] == gateway_address
        assert summary["predictor"]["decisions_with_prediction"] >= 1


# A trainable that reports a metric besides the study's (train_loss), as users' trainables do.
EXTRA_METRIC_TRAINABLE = STUDY_TRAINABLE.replace(
    '"val_loss": config["x"] / epoch}',
    '"val_loss": config["x"] / epoch, "train_loss": config["x"] / (2 * epoch)}')


def _extra_metric_study(tmp_path: Path) -> Path:
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "extra_metric_trainable.py").write_text(EXTRA_METRIC_TRAINABLE)
    toml = folder / "study.toml"
    toml.write_text(
        f'[study]\nname = "tiny"\noutput_dir = "{tmp_path / "results"}"\ntrials = 9\n'
        '[algorithm]\nname = "asha"\nmax_resource = 3\neta = 3\n'
        '[resources]\ncpu = 2\n'
        '[trainable]\nfunction = "extra_metric_trainable:train"\n'
        '[space]\nx = { type = "uniform", low = 0.1, high = 1.0 }\n'
    )
    return toml


def test_hpo_user_study_python_interrupt_says_how_to_resume(tmp_path: Path, ray_local: Any,
                                                            capsys: Any) -> None:
    """After Ctrl-C, ``optimize`` says to continue with ``resume=True`` (the command prints its
    own ``--resume`` line); that call continues the study."""
    toml = _extra_metric_study(tmp_path)
    marker = tmp_path / "interrupted"
    first = optimize(None, toml, callbacks=[InterruptOnce(5, marker)], progress_every_s=60)
    assert marker.exists() and first.interrupted
    out = capsys.readouterr().out
    assert ("study 'tiny' interrupted; continue it with optimize(..., resume=True) (the same "
            "study and trainable)\n") in out
    assert "--resume" not in out
    second = optimize(None, toml, resume=True, progress_every_s=60)
    assert not second.interrupted and second.summary["epochs_used"] == 15
    assert "interrupted; continue it" not in capsys.readouterr().out


def test_hpo_user_study_ctrl_c_twice_still_writes_the_outputs(tmp_path: Path,
                                                               capsys: Any) -> None:
    """A second Ctrl-C stops Tune at once (it raises out of ``fit``); the study still writes
    trials.csv and summary.json (``interrupted``) as after one, as the README promises (it wrote
    none). The study starts its own Ray, as ``hpo-node run`` does, and shuts it down: in a Ray
    the caller started, Tune's actors outlive a second Ctrl-C and hold its CPUs."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    toml = _extra_metric_study(tmp_path)
    marker = tmp_path / "interrupted"
    first = optimize(None, toml, callbacks=[InterruptOnce(5, marker, times=2)],
                     progress_every_s=60)
    assert marker.exists() and first.interrupted
    assert json.loads((first.study_dir / "summary.json").read_text())["interrupted"] is True
    assert _rows(first.study_dir / "trials.csv")
    assert "interrupted; continue it with optimize(..., resume=True)" in capsys.readouterr().out
    assert not ray.is_initialized()


def test_hpo_user_study_extra_metrics_are_in_rays_trial_files(tmp_path: Path,
                                                              ray_local: Any) -> None:
    """What docs/outputs.md says of a metric reported besides study.metric: not in trials.csv,
    in every trial's progress.csv and result.json under <study>/ray/<name>/<trial folder>/."""
    res = optimize(None, _extra_metric_study(tmp_path), progress_every_s=60)
    assert not any("train_loss" in column for column in _rows(res.study_dir / "trials.csv")[0])
    trial_dirs = sorted(p.parent for p in (res.study_dir / "ray" / "tiny").glob("*/result.json"))
    assert len(trial_dirs) == 9
    assert all(d.name.startswith("train_") for d in trial_dirs)
    for d in trial_dirs:
        progress = _rows(d / "progress.csv")
        assert [float(r["train_loss"]) * 2 for r in progress] == pytest.approx(
            [float(r["val_loss"]) for r in progress])
        results = [json.loads(line) for line in (d / "result.json").read_text().splitlines()]
        assert [r["train_loss"] for r in results] == [float(r["train_loss"]) for r in progress]
    # the folder names hold the trial ids of trials.csv; Ray's analysis reads them all
    from ray.tune import ExperimentAnalysis

    ids = {r["trial_id"] for r in res.trials}
    assert {next(i for i in ids if f"_{i}_" in d.name) for d in trial_dirs} == ids
    frames = ExperimentAnalysis(res.summary["ray_experiment_dir"]).trial_dataframes
    assert set(frames) == ids and all("train_loss" in f.columns for f in frames.values())
