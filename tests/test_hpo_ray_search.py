"""Our searchers as Ray Tune searchers (hpo_node.integrations.ray_search): adapter, real Ray studies."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from ray.tune.search import Searcher as RaySearcher

from hpo_node.integrations.ray_search import StudySpace, TuneSearcher
from hpo_node.search import Categorical, Int, make_searcher
from hpo_node.study import run_study, study_from_dict

SPEC: dict[str, dict[str, Any]] = {
    "lr": {"type": "loguniform", "low": 1e-4, "high": 3e-2},
    "dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
    "batch_size": {"type": "quniform", "low": 32, "high": 128, "q": 32},
    "model": {"type": "choice", "values": ["mlp", "cnn"]},
}


def _adapter(name: str = "tpe", seed: int = 0, **kw: Any) -> TuneSearcher:
    space = StudySpace(SPEC)
    inner = make_searcher(name, space.space, seed=seed, min_points=3)
    return TuneSearcher(inner, space, metric="val_loss", mode="min", **kw)


def _loss(config: dict[str, Any], epoch: int) -> float:
    return abs(config["lr"] - 0.01) + 0.001 * config["batch_size"] / 32 + 1.0 / epoch


def _run(adapter: TuneSearcher, start: int, n: int) -> list[dict[str, Any]]:
    """Suggest ``n`` trials one after another, each reporting 3 epochs then completing."""
    out = []
    for k in range(start, start + n):
        tid = f"t{k}"
        c = adapter.suggest(tid)
        assert isinstance(c, dict)
        out.append(c)
        for e in (1, 2):
            adapter.on_trial_result(tid, {"epoch": e, "val_loss": _loss(c, e)})
        adapter.on_trial_complete(tid, {"epoch": 3, "val_loss": _loss(c, 3)})
    return out


def test_ray_search_study_space_maps_every_type() -> None:
    space = StudySpace(SPEC)
    p = space.space.params
    assert p["lr"].log and not p["dropout"].log
    assert p["batch_size"] == Int(1, 4)
    assert p["model"] == Categorical(("mlp", "cnn"))
    trial = space.to_trial({"lr": 1e-3, "dropout": 0.1, "batch_size": 3, "model": "cnn"})
    assert trial == {"lr": 1e-3, "dropout": 0.1, "batch_size": 96, "model": "cnn"}
    assert isinstance(trial["batch_size"], int)
    assert StudySpace({"x": {"type": "quniform", "low": 0.1, "high": 0.35, "q": 0.1}}).to_trial(
        {"x": 3}) == {"x": 0.3}
    with pytest.raises(ValueError, match=r"space.x: \[low, high\] = \[0.1, 0.2\] must contain a "
                                         r"multiple of q = 0.5"):
        StudySpace({"x": {"type": "quniform", "low": 0.1, "high": 0.2, "q": 0.5}})


def test_ray_search_adapter_feeds_multi_fidelity_observations() -> None:
    a = _adapter(max_trials=5)
    _run(a, 0, 4)
    obs = a.inner.state_dict()["observations"]
    assert sorted({r for r, _, _ in obs}) == [1, 2, 3]
    assert len(obs) == 12
    assert a.inner.pending == []
    _run(a, 4, 1)
    assert a.suggest("t5") == RaySearcher.FINISHED


def test_ray_search_adapter_save_restore_round_trip_resumes(tmp_path: Path) -> None:
    a = _adapter(seed=3)
    _run(a, 0, 6)
    a.suggest("t6")  # pending at the checkpoint
    path = tmp_path / "searcher.json"
    a.save(str(path))
    json.loads(path.read_text())  # plain JSON
    b = _adapter(seed=3)
    b.restore(str(path))
    assert b.configs == a.configs and b.inner.pending == a.inner.pending
    a.on_trial_complete("t6", {"epoch": 1, "val_loss": 2.0})
    b.on_trial_complete("t6", {"epoch": 1, "val_loss": 2.0})
    assert _run(a, 7, 5) == _run(b, 7, 5)


def test_ray_search_adapter_never_suggests_a_pending_configuration_twice() -> None:
    spec = {"m": {"type": "choice", "values": ["a", "b", "c"]},
            "k": {"type": "quniform", "low": 1, "high": 2, "q": 1}}
    space = StudySpace(spec)
    a = TuneSearcher(make_searcher("tpe", space.space, seed=0, min_points=2), space,
                     metric="val_loss", mode="min")
    seen = [a.suggest(f"t{k}") for k in range(6)]
    assert len({json.dumps(c, sort_keys=True) for c in seen}) == 6
    assert a.suggest("t6") is None  # all six are pending: wait
    a.on_trial_complete("t2", {"epoch": 1, "val_loss": 0.5})
    assert a.suggest("t7") == seen[2]  # the only one released
    for k in (0, 1, 3, 4, 5, 7):
        a.on_trial_complete(f"t{k}", {"epoch": 1, "val_loss": 1.0})
    assert a.suggest("t8") is not None


def test_ray_search_adapter_rejects_bad_arguments() -> None:
    space = StudySpace(SPEC)
    with pytest.raises(TypeError, match=r"inner must be an hpo_node.search.Searcher, got dict"):
        TuneSearcher({}, space)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"max_trials must be >= 1, got 0"):
        TuneSearcher(make_searcher("tpe", space.space), space, max_trials=0)
    with pytest.raises(ValueError, match=r"mode must be one of 'min', 'max', got 'best'"):
        TuneSearcher(make_searcher("tpe", space.space), space, mode="best")
    with pytest.raises(ValueError, match=r"state version must be 1, got 7"):
        _adapter().set_state({"version": 7})
    other = StudySpace({"lr": SPEC["lr"]})
    with pytest.raises(ValueError, match=r"inner must search the study's space: its parameters are \['lr'\]"):
        TuneSearcher(make_searcher("tpe", other.space), space)
    with pytest.raises(TypeError, match=r"resource_attr must be a non-empty string, got None"):
        TuneSearcher(make_searcher("tpe", space.space), space, resource_attr=None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Real Ray studies (tiny digits budgets)


def _study(tmp_path: Path, algorithm: str, **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "study": {"name": f"tpe-{algorithm}", "output_dir": str(tmp_path / "results"), "seed": 0,
                  "num_cpus": 2, "time_budget_s": 240},  # the budget only guards against a hang
        "algorithm": {"name": algorithm, "max_resource": 4, "eta": 2, "searcher": "tpe",
                      "searcher_params": {"min_points": 3}},
        "predictor": {"kind": "gateway", "timeout_s": 10.0, "retry_after_s": 30.0,
                      "params": {"num_reads": 100}},
        "gateway": {"address": "auto"},
        "resources": {"cpu": 1},
        "trainable": {"model": "mlp", "hidden": 32},
        "space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 3e-2},
                  "batch_size": {"type": "quniform", "low": 32, "high": 128, "q": 32}},
    }
    for dotted, value in over.items():
        section, key = dotted.split("__")
        doc[section][key] = value
    return doc


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _check_outputs(res: Any, n: int) -> list[dict[str, str]]:
    rows = _rows(res.study_dir / "trials.csv")
    assert len(rows) == n  # bounded by the study's trials
    assert all(r["decision"] in ("finished", "stopped", "stopped-early", "stopped-by-prediction")
               for r in rows), {r["decision"] for r in rows}
    configs = {(r["config.lr"], r["config.batch_size"]) for r in rows}
    assert len(configs) == n
    assert all(int(r["config.batch_size"]) in (32, 64, 96, 128) for r in rows)
    assert res.summary["searcher"] == "tpe"
    return rows


@pytest.mark.slow
def test_ray_search_tpe_with_swift_asha_study_writes_trials_csv(
    tmp_path: Path, ray_local: Any, gateway_address: str
) -> None:
    doc = _study(tmp_path, "swift-asha", study__trials=12, algorithm__params={"d": 3})
    res = run_study(study_from_dict(doc), gateway=gateway_address)
    rows = _check_outputs(res, 12)
    assert any(r["decision"] == "finished" for r in rows)
    assert res.summary["epochs_used"] == sum(int(r["epochs"]) for r in rows)
    assert res.scheduler.core.n_pending == 0


@pytest.mark.slow
def test_ray_search_tpe_with_hyperband_study_finishes(tmp_path: Path, ray_local: Any) -> None:
    doc = _study(tmp_path, "hyperband")
    doc["gateway"]["address"] = "none"
    res = run_study(study_from_dict(doc))
    # R = 4, eta = 2: brackets of 4, 3 and 3 configurations; 28 epochs with resumption
    rows = _check_outputs(res, 10)
    assert res.summary["epochs_used"] == 28
    assert res.scheduler.core.finished
    assert sum(r["decision"] == "finished" for r in rows) == 5
