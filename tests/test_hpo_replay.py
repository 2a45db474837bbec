"""Replay simulator, table loading, Optuna peers and the ``hpo-node`` command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpo_node.algorithms import make_driver
from hpo_node.cli import main
from hpo_node.hyperband import Hyperband
from hpo_node.replay import CurveTable, simulate
from hpo_node.synthetic import synthetic_table
from tests.conftest import MLPF_CSV


def _write_csv(path: Path, rows: int = 200, epochs: int = 27, seed: int = 0) -> Path:
    table = synthetic_table(rows, epochs, seed=seed)
    df = pd.DataFrame(table.hparams, columns=list(table.hparam_names))
    df["optimizer"] = np.where(table.hparams[:, 0] > 0.5, "adam", "sgd")
    for e in range(epochs):
        df[f"loss_{e}"] = table.curves[:, e]
    for e in range(epochs):
        df[f"acc_{e}"] = 1.0 - table.curves[:, e]
    df.to_csv(path, index=False)
    return path


def test_table_reads_metric_columns_and_ignores_other_metrics(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "t.csv")
    table = CurveTable.from_csv(path)
    assert table.curves.shape == (200, 27)
    assert table.hparam_names == ("lr", "width", "optimizer")
    acc = CurveTable.from_csv(path, metric="acc", mode="max")
    assert acc.hparam_names == table.hparam_names
    np.testing.assert_allclose(acc.to_metric(acc.best_final_loss()), 1 - table.best_final_loss())
    with pytest.raises(ValueError, match="metric must name per-epoch columns"):
        CurveTable.from_csv(path, metric="f1")


def test_table_reads_epochs_numbered_from_one_as_from_zero(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "t.csv", epochs=9)
    df = pd.read_csv(path)
    df.rename(columns={f"{m}_{e}": f"{m}_{e + 1}" for m in ("loss", "acc") for e in range(9)}
              ).to_csv(tmp_path / "one.csv", index=False)
    zero, one = CurveTable.from_csv(path), CurveTable.from_csv(tmp_path / "one.csv")
    np.testing.assert_array_equal(one.curves, zero.curves)
    assert one.hparam_names == ("lr", "width", "optimizer")  # acc_1.. is not a hyperparameter
    df.assign(units_1=4, units_2=8).to_csv(tmp_path / "layers.csv", index=False)
    assert CurveTable.from_csv(tmp_path / "layers.csv").hparam_names == (
        "lr", "width", "optimizer", "units_1", "units_2")  # not epochs of another metric
    df.rename(columns={"loss_3": "loss_30"}).to_csv(tmp_path / "gap.csv", index=False)
    with pytest.raises(ValueError, match=r"<metric>_1\.\. \(consecutive\)"):
        CurveTable.from_csv(tmp_path / "gap.csv")


def test_mode_max_regret_is_in_metric_units(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "t.csv")
    loss = CurveTable.from_csv(path)
    acc = CurveTable.from_csv(path, metric="acc", mode="max")
    a = simulate(loss, Hyperband(27, 3), seed=4, max_resource=27)
    b = simulate(acc, Hyperband(27, 3), seed=4, max_resource=27)
    assert a.epochs == b.epochs
    assert b.best_loss == pytest.approx(1 - a.best_loss)
    assert b.regret == pytest.approx(a.regret) and b.regret >= 0


def test_simulate_rejects_too_small_table_and_too_large_resource() -> None:
    table = synthetic_table(50, 100, seed=0)
    with pytest.raises(ValueError, match="needs 163 configurations"):
        simulate(table, Hyperband(100, 2), seed=0, max_resource=100)
    with pytest.raises(ValueError, match="max_resource must be <= the table's 100 epochs"):
        simulate(table, Hyperband(200, 2), seed=0, max_resource=200)


def test_more_workers_shorten_asha_makespan() -> None:
    table = synthetic_table(200, 27, seed=1)
    one = simulate(table, make_driver("asha", max_resource=27, eta=3), seed=0, max_resource=27)
    eight = simulate(
        table, make_driver("asha", max_resource=27, eta=3), seed=0, max_resource=27, workers=8
    )
    assert one.makespan == one.epochs
    assert eight.makespan < one.makespan / 3


@pytest.mark.parametrize("name", ["optuna-sha", "optuna-hyperband"])
def test_optuna_peers_replay_deterministically(name: str) -> None:
    table = synthetic_table(200, 27, seed=2)
    runs = [
        simulate(
            table,
            make_driver(name, max_resource=27, eta=3, seed=5),
            seed=5,
            max_resource=27,
            workers=2,
        )
        for _ in range(2)
    ]
    assert runs[0].epochs == runs[1].epochs and runs[0].trace == runs[1].trace
    assert runs[0].epochs < runs[0].trials_started * 27
    assert runs[0].best_loss is not None


def test_cli_simulate_json_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_csv(tmp_path / "t.csv")
    rc = main(
        ["simulate", "--data", str(path), "--algorithm", "hyperband", "--max-resource", "27",
         "--eta", "3", "--seeds", "3", "--json"]
    )
    assert rc == 0
    obj = json.loads(capsys.readouterr().out)
    assert set(obj) == {"algorithm", "runs", "summary"}
    assert obj["algorithm"] == "hyperband"
    assert [r["seed"] for r in obj["runs"]] == [0, 1, 2]
    assert all(set(r) == {"seed", "epochs", "best_loss", "regret", "makespan"} for r in obj["runs"])
    assert set(obj["summary"]) == {"epochs_mean", "best_loss_mean", "regret_mean", "makespan_mean"}
    assert obj["summary"]["epochs_mean"] == sum(r["epochs"] for r in obj["runs"]) / 3


def test_cli_simulate_mode_max_and_single_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write_csv(tmp_path / "t.csv")
    rc = main(
        ["simulate", "--data", str(path), "--metric", "acc", "--mode", "max", "--algorithm",
         "swift-asha", "--eta", "3", "--workers", "4", "--seed", "9", "--json"]
    )
    assert rc == 0
    obj = json.loads(capsys.readouterr().out)
    assert [r["seed"] for r in obj["runs"]] == [9]
    assert obj["runs"][0]["best_loss"] > 0.5 and obj["runs"][0]["regret"] >= 0


def test_cli_reports_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_csv(tmp_path / "t.csv")
    rc = main(["simulate", "--data", str(path), "--algorithm", "hyperband", "--eta", "1"])
    assert rc == 2
    assert "eta must be >= 2, got 1" in capsys.readouterr().err


def test_cli_compare_writes_table_png_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write_csv(tmp_path / "t.csv")
    out = tmp_path / "out"
    rc = main(
        ["compare", "--data", str(path), "--algorithms", "hyperband,asha,optuna-sha",
         "--eta", "3", "--seeds", "2", "--workers", "2", "--out", str(out)]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert text.startswith("| algorithm | epochs |")
    assert "| hyperband |" in text and "| optuna-sha |" in text and " ± " in text
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    raw = json.loads((out / "compare.json").read_text())
    assert set(raw["results"]) == {"hyperband", "asha", "optuna-sha"}
    assert len(raw["results"]["asha"]) == 2


def test_cli_compare_names_the_metric_of_a_maximized_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--metric acc --mode max``: the table's best column and the plot's axis say acc, not
    loss (the values are accuracies)."""
    from matplotlib.axes import Axes

    labels: list[str] = []
    set_ylabel = Axes.set_ylabel
    monkeypatch.setattr(Axes, "set_ylabel",
                        lambda ax, text, *a, **k: labels.append(text) or set_ylabel(ax, text))
    path = _write_csv(tmp_path / "t.csv")
    assert main(["compare", "--data", str(path), "--metric", "acc", "--mode", "max",
                 "--algorithms", "asha", "--eta", "3", "--seeds", "1",
                 "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.startswith(
        "| algorithm | epochs | best acc | regret | makespan | predictor fits |")
    assert labels == ["best final acc found (mean over seeds)"]


def test_mlpf_table_and_hyperband_3213_on_it() -> None:
    table = CurveTable.from_csv(MLPF_CSV)
    assert table.curves.shape == (296, 100)
    assert len(table.hparam_names) == 7
    assert table.best_final_loss() == pytest.approx(442.2677, abs=1e-3)
    for seed in range(3):
        run = simulate(table, Hyperband(100, 2), seed=seed, max_resource=100, workers=4)
        assert run.epochs == 3213
        assert 442.26 <= run.best_loss <= 443.5


def test_subsampled_table_keeps_every_step_th_epoch() -> None:
    table = synthetic_table(10, 100, seed=0)
    sub = table.subsample_epochs(4)
    assert sub.n_epochs == 25
    np.testing.assert_array_equal(sub.curves[:, -1], table.curves[:, -1])
    np.testing.assert_array_equal(sub.curves[:, 0], table.curves[:, 3])


def test_cli_set_passes_scheduler_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write_csv(tmp_path / "t.csv")
    base = ["simulate", "--data", str(path), "--algorithm", "swift-hyperband", "--eta", "3",
            "--seed", "1", "--json"]
    assert main(base) == 0
    default = json.loads(capsys.readouterr().out)["runs"][0]["epochs"]
    assert main([*base, "--set", "known_curve=0.25", "--set", "d=5"]) == 0
    tuned = json.loads(capsys.readouterr().out)["runs"][0]["epochs"]
    assert tuned != default
    assert main([*base, "--set", "bogus"]) == 2
    assert "--set must be KEY=VALUE" in capsys.readouterr().err


def test_cli_feature_options_change_the_predictor_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write_csv(tmp_path / "t.csv")
    base = ["simulate", "--data", str(path), "--algorithm", "swift-hyperband", "--eta", "3",
            "--seed", "2", "--set", "d=5", "--set", "rule=paper", "--json"]
    outs = []
    for extra in ([], ["--feature-points", "3", "--feature-diffs", "2", "--feature-hparams"]):
        assert main([*base, *extra]) == 0
        outs.append(json.loads(capsys.readouterr().out)["runs"][0])
    assert outs[0] != outs[1]


def test_cli_compare_oracle_ceiling_and_one_epoch_floor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write_csv(tmp_path / "t.csv", rows=120)
    common = ["compare", "--data", str(path), "--algorithms",
              "asha,hyperband,swift-hyperband,swift-asha,one-epoch", "--eta", "3", "--seeds", "2",
              "--workers", "2"]
    assert main([*common, "--predictor", "oracle", "--out", str(tmp_path / "o")]) == 0
    capsys.readouterr()
    raw = json.loads((tmp_path / "o" / "compare.json").read_text())["results"]
    asha, hb, swift, one = (raw[k] for k in ("asha", "hyperband", "swift-hyperband", "one-epoch"))
    table = CurveTable.from_csv(path)
    for h, s in zip(hb, swift, strict=True):
        assert s["epochs"] < h["epochs"] and s["best_loss"] <= h["best_loss"] + 1e-12
    # swift-asha's default gate takes the oracle as its forecaster (its curve fits call none)
    for a, s in zip(asha, raw["swift-asha"], strict=True):
        assert s["epochs"] < a["epochs"] and s["best_loss"] <= a["best_loss"] + 1e-12
    n = asha[0]["trials_started"]
    assert all(r["epochs"] == n + (n // 27) * 26 for r in one)  # 1 epoch each, top n/eta^3 to R
    assert table.n_epochs == 27


def test_cli_set_scoped_to_one_algorithm_in_compare(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--set ALGORITHM.KEY=VALUE`` reaches that algorithm only (an unscoped z would be refused
    by Hyperband, which has no band)."""
    path = _write_csv(tmp_path / "t.csv", rows=120)
    base = ["compare", "--data", str(path), "--algorithms", "hyperband,swift-hyperband",
            "--eta", "3", "--seeds", "1"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--set", "swift-hyperband.z=0", "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    a, b = (json.loads((tmp_path / d / "compare.json").read_text())["results"] for d in "ab")
    assert a["hyperband"][0]["epochs"] == b["hyperband"][0]["epochs"]
    assert a["swift-hyperband"][0]["epochs"] > b["swift-hyperband"][0]["epochs"]
    assert main([*base, "--set", "z=0"]) == 2
    assert main([*base, "--set", "swift-hyperbnd.z=0"]) == 2
    assert "not an algorithm" in capsys.readouterr().err
