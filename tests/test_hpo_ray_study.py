"""End-to-end Ray Tune studies: real torch trainables, the real gateway, real interruptions."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from ray.tune.callback import Callback

from hpo_node.study import load_study, run_main, run_study, study_from_dict
from tests.conftest import GatewayProcess
from tests.ray_callbacks import InterruptOnce

pytestmark = pytest.mark.slow


def _study(tmp_path: Path, algorithm: str, **over: Any) -> dict[str, Any]:
    """A tiny digits study: one trial at a time (resources.cpu = 2), so event order is fixed."""
    doc: dict[str, Any] = {
        "study": {"name": "tiny", "output_dir": str(tmp_path / "results"), "seed": 0,
                  "trials": 27, "num_cpus": 2},
        "algorithm": {"name": algorithm, "max_resource": 9, "eta": 3},
        "predictor": {"kind": "gateway", "timeout_s": 10.0, "retry_after_s": 30.0,
                      "params": {"num_reads": 100}},
        "gateway": {"address": "auto"},
        "resources": {"cpu": 2},
        "trainable": {"model": "mlp", "hidden": 32},
        "space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 3e-2},
                  "batch_size": {"type": "quniform", "low": 32, "high": 128, "q": 32}},
    }
    if algorithm == "swift-asha":  # the published rule: per-rung predictors on the gateway
        doc["algorithm"]["params"] = {"rule": "paper", "d": 3}
    for dotted, value in over.items():
        section, key = dotted.split("__")
        doc[section][key] = value
    return doc


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


class ResultLog(Callback):
    """Every (trial, epoch, val_loss) Tune received, independent of the scheduler."""

    def __init__(self) -> None:
        self.seen: dict[str, list[tuple[int, float]]] = {}
        self.order: list[tuple[str, int]] = []  # (trial, pid of the process that trained it)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict,
                        **info: Any) -> None:
        self.seen.setdefault(trial.trial_id, []).append((int(result["epoch"]),
                                                         float(result["val_loss"])))
        self.order.append((trial.trial_id, int(result["pid"])))

    def restarts_with_nothing_between(self) -> list[str]:
        """Trials whose next epoch came from a new process although no other trial trained in
        between: paused and then promoted at once, a checkpoint round trip for nothing."""
        return [t for (t, pid), (t2, pid2) in zip(self.order, self.order[1:], strict=False)
                if t == t2 and pid != pid2]


class KillGatewayAfterPrediction(Callback):
    """SIGKILLs the gateway (by pid) as soon as the scheduler got its first prediction."""

    def __init__(self, scheduler: Any, pid: int) -> None:
        self.scheduler = scheduler
        self.pid = pid
        self.at_kill: dict[str, int] | None = None

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict,
                        **info: Any) -> None:
        counts = self.scheduler.log.counters()
        if self.at_kill is None and counts["predicts_ok"] >= 1:
            os.kill(self.pid, signal.SIGKILL)
            self.at_kill = counts


def test_hpo_ray_study_end_to_end_with_gateway(tmp_path: Path, ray_local: Any,
                                               gateway_address: str) -> None:
    cfg = study_from_dict(_study(tmp_path, "swift-asha"))
    results = ResultLog()
    res = run_study(cfg, gateway=gateway_address, callbacks=[results])
    d = res.study_dir
    for name in ("trials.csv", "best.json", "curves.png", "summary.json", "scheduler_state.json"):
        assert (d / name).exists(), name
    summary = json.loads((d / "summary.json").read_text())
    rows = _rows(d / "trials.csv")
    assert len(rows) == 27
    assert summary["predictor"]["fits_ok"] >= 1
    assert summary["predictor"]["decisions_with_prediction"] >= 1
    assert summary["predictor"]["decisions_without_prediction"] == 0
    by_pred = [r for r in rows if r["decision"] == "stopped-by-prediction"]
    assert by_pred, "no trial was stopped by prediction"
    for r in by_pred:
        assert r["predicted_val_loss"] != "" and r["predicted_spread"] != ""
        assert int(r["epochs"]) in (2, 6)  # decision points of the rungs 1 -> 3 and 3 -> 9
        assert int(r["predicted_epoch"]) == {2: 3, 6: 9}[int(r["epochs"])]  # the rung ahead
    # every epoch Tune received is in trials.csv, and nothing else
    assert sum(int(r["epochs"]) for r in rows) == summary["epochs_used"]
    assert {r["trial_id"]: int(r["epochs"]) for r in rows if int(r["epochs"])} == {
        t: len(v) for t, v in results.seen.items()
    }
    assert sum(1 for r in rows if r["decision"] == "finished") >= 1
    best = json.loads((d / "best.json").read_text())
    assert best["found"] and best["epochs"] == 9
    assert best["value"] == min(float(r["final_val_loss"]) for r in rows if r["final_val_loss"])


def test_hpo_ray_study_gateway_killed_mid_study(tmp_path: Path, ray_local: Any) -> None:
    proc = GatewayProcess(tmp_path / "gw.sqlite").start()
    try:
        cfg = study_from_dict(_study(tmp_path, "swift-asha"))
        results = ResultLog()
        killers: list[KillGatewayAfterPrediction] = []

        def killer(scheduler: Any) -> KillGatewayAfterPrediction:
            killers.append(KillGatewayAfterPrediction(scheduler, proc.proc.pid))
            return killers[0]

        res = run_study(cfg, gateway=proc.address, callbacks=[results, killer])
    finally:
        proc.stop()
    at_kill = killers[0].at_kill
    assert at_kill is not None, "the gateway was never asked for a prediction"
    assert proc.proc.returncode == -signal.SIGKILL
    summary = res.summary
    counts = summary["predictor"]
    # nothing predicted after the kill; the decisions after it were made without prediction
    assert counts["decisions_with_prediction"] == at_kill["decisions_with_prediction"]
    assert counts["predicts_ok"] == at_kill["predicts_ok"]
    assert counts["decisions_without_prediction"] >= 1
    assert counts["outages"] == 1
    # the study finished: ASHA's promotion quotas were filled down to R
    rows = _rows(res.study_dir / "trials.csv")
    assert not [r for r in rows if r["decision"] in ("running", "paused", "pending", "error")]
    assert any(r["decision"] == "finished" for r in rows)
    # no reported result lost
    curves = {r["trial_id"]: int(r["epochs"]) for r in rows if int(r["epochs"])}
    assert curves == {t: len(v) for t, v in results.seen.items()}
    for t, seen in results.seen.items():
        assert [e for e, _ in seen] == list(range(1, len(seen) + 1)), t


class FirstStepProbe(Callback):
    """Writes the scheduler's view at the first step of each run (a JSON line per run)."""

    def __init__(self, scheduler: Any, path: str) -> None:
        self.scheduler = scheduler
        self.path = path
        self.done = False

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if not self.done:
            self.done = True
            with open(self.path, "a") as fh:
                fh.write(json.dumps({"epochs": self.scheduler.epochs_used(),
                                     "core": self.scheduler.core.state_dict()}) + "\n")


@pytest.mark.parametrize("searcher", ["random", "tpe"])
def test_hpo_ray_study_interrupt_and_tuner_restore(tmp_path: Path, ray_local: Any, searcher: str) -> None:
    cfg = study_from_dict(_study(tmp_path, "asha", study__trials=9, algorithm__searcher=searcher))
    probe_path = str(tmp_path / "probe.jsonl")
    marker = str(tmp_path / "interrupted")
    first = run_study(
        cfg,
        callbacks=[InterruptOnce(8, marker), lambda s: FirstStepProbe(s, probe_path)],
    )
    assert os.path.exists(marker)
    interrupted = json.loads((first.study_dir / "scheduler_state.json").read_text())
    epochs_before = first.scheduler.epochs_used()
    assert 0 < epochs_before < 21
    second = run_study(cfg, resume=True)
    probes = [json.loads(line) for line in Path(probe_path).read_text().splitlines()]
    assert len(probes) == 2, "the restored study did not run the callbacks it was started with"
    assert probes[0]["epochs"] == 0
    # the restored scheduler starts where the interrupted one stopped: same rungs and curves
    assert probes[1]["epochs"] == epochs_before
    assert probes[1]["core"]["extra"]["members"] == interrupted["core"]["extra"]["members"]
    assert probes[1]["core"]["curve"] == interrupted["core"]["curve"]
    # ASHA over 9 configurations, R = 9, eta = 3 trains 9 * 1 + 3 * 2 + 1 * 6 epochs in total,
    # whatever the order: nothing was retrained after the restore and nothing was lost.
    assert second.scheduler.epochs_used() == 21
    rows = _rows(second.study_dir / "trials.csv")
    assert sorted(int(r["epochs"]) for r in rows) == [1] * 6 + [3] * 2 + [9]
    assert [r["decision"] for r in rows].count("finished") == 1
    # the restored searcher knows what it suggested before: nine distinct configurations
    assert len({(r["config.lr"], r["config.batch_size"]) for r in rows}) == 9


def test_hpo_ray_study_swift_asha_default_gate_runs_without_a_gateway(
    tmp_path: Path, ray_local: Any
) -> None:
    """Swift-ASHA's default rule (the champion gate) forecasts with curve fits: the study starts
    no gateway, calls no predictor, and pauses, resumes and finishes trials on Ray."""
    cfg = study_from_dict(_study(tmp_path, "swift-asha", algorithm__params={}))
    assert not cfg.uses_predictor and not cfg.needs_gateway
    results = ResultLog()
    res = run_study(cfg, callbacks=[results])
    assert res.scheduler.core.rule == "gate" and res.summary["notes"] == []
    assert res.summary["predictor_calls"] == {"fit": 0, "predict": 0}
    rows = _rows(res.study_dir / "trials.csv")
    assert len(rows) == 27
    assert sum(int(r["epochs"]) for r in rows) == res.summary["epochs_used"]
    assert {r["trial_id"]: int(r["epochs"]) for r in rows if int(r["epochs"])} == {
        t: len(v) for t, v in results.seen.items()
    }
    best = json.loads((res.study_dir / "best.json").read_text())
    assert best["found"] and best["epochs"] == 9


def test_hpo_ray_study_hyperband_epochs_match_the_schedule(tmp_path: Path, ray_local: Any) -> None:
    cfg = study_from_dict(_study(tmp_path, "hyperband", study__trials=None))
    res = run_study(cfg)
    # Hyperband R = 9, eta = 3: brackets cost 21 + 21 + 27 epochs over 9 + 5 + 3 configurations
    assert res.summary["trials"] == 17
    assert res.summary["epochs_used"] == 69
    rows = _rows(res.study_dir / "trials.csv")
    assert [r["decision"] for r in rows].count("finished") == 5


def test_hpo_ray_study_load_example_config() -> None:
    cfg = load_study(Path(__file__).resolve().parents[1] / "examples" / "digits.toml")
    assert cfg.algorithm == "swift-asha" and cfg.needs_gateway
    assert cfg.study_dir.name == "digits"


def _write_toml(path: Path, doc: dict[str, Any]) -> Path:
    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, str):
            return json.dumps(v)
        return repr(v)

    lines = []
    for section, table in doc.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {value(v)}" for k, v in table.items() if v is not None]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_hpo_ray_study_run_main_starts_and_stops_its_gateway(
    tmp_path: Path, ray_local: Any, capsys: Any
) -> None:
    doc = _study(tmp_path, "swift-asha", study__trials=12)
    config = _write_toml(tmp_path / "study.toml", doc)
    assert run_main([str(config), "--progress-every", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"qpu-gateway started on 127\.0\.0\.1:\d+", out)
    assert "qpu-gateway stopped (exit 0)" in out
    assert re.search(r"\] running \d+ +paused \d+ +pending \d+ \| stopped \d+", out)
    d = tmp_path / "results" / "tiny"
    assert (d / "gateway.sqlite").exists() and "serving on" in (d / "gateway.log").read_text()
    summary = json.loads((d / "summary.json").read_text())
    assert summary["gateway"] and summary["predictor"]["fits_ok"] >= 1
    assert len(_rows(d / "trials.csv")) == 12


def test_hpo_ray_study_time_budget_ends_the_study(tmp_path: Path, ray_local: Any) -> None:
    doc = _study(tmp_path, "asha", study__trials=200, study__time_budget_s=6.0)
    cfg = study_from_dict(doc)
    results = ResultLog()
    res = run_study(cfg, callbacks=[results])
    rows = _rows(res.study_dir / "trials.csv")
    assert len(rows) == 200
    # the budget ended it early: configurations were left unstarted, and nothing reported is lost
    assert sum(r["decision"] == "pending" for r in rows) > 0
    assert {r["trial_id"]: int(r["epochs"]) for r in rows if int(r["epochs"])} == {
        t: len(v) for t, v in results.seen.items()
    }
    assert json.loads((res.study_dir / "summary.json").read_text())["epochs_used"] == sum(
        len(v) for v in results.seen.values()
    )


def test_hpo_ray_study_swift_hyperband_with_gateway(tmp_path: Path, ray_local: Any,
                                                    gateway_address: str) -> None:
    doc = _study(tmp_path, "swift-hyperband", study__trials=None)
    doc["algorithm"]["params"] = {"d": 3}
    results = ResultLog()
    res = run_study(study_from_dict(doc), gateway=gateway_address, callbacks=[results])
    rows = _rows(res.study_dir / "trials.csv")
    assert len(rows) == 17  # Hyperband's configurations for R = 9, eta = 3
    # a round of one trial has decision points too: the trial trains through them in its process
    assert results.restarts_with_nothing_between() == []
    assert not [r for r in rows if r["decision"] in ("running", "paused", "pending", "error")]
    counts = res.summary["predictor"]
    assert counts["fits_ok"] >= 1 and counts["decisions_with_prediction"] >= 1
    # predictions only remove epochs: never more than Hyperband's 69
    assert res.summary["epochs_used"] <= 69
    for r in rows:
        if r["decision"] == "stopped-by-prediction":
            assert r["predicted_val_loss"] != ""
            # the forecast rule's decision points, 1/8, 1/4, 1/2 of each round, below R = 9:
            # 0 -> 3: 1, 2; 1 -> 3: 2; 3 -> 9: 4, 5, 6; 0 -> 9 (the last bracket): 2, 3, 5
            assert int(r["epochs"]) in (1, 2, 3, 4, 5, 6)
    assert [r["decision"] for r in rows].count("finished") >= 1


def test_hpo_ray_study_resume_uses_the_new_gateway(tmp_path: Path, ray_local: Any) -> None:
    cfg = study_from_dict(_study(tmp_path, "swift-asha"))
    marker = str(tmp_path / "interrupted")
    first_gw = GatewayProcess(tmp_path / "gw1.sqlite").start()
    try:
        first = run_study(cfg, gateway=first_gw.address, callbacks=[InterruptOnce(8, marker)])
    finally:
        first_gw.stop()
    assert os.path.exists(marker) and first.scheduler.epochs_used() < 40
    second_gw = GatewayProcess(tmp_path / "gw2.sqlite").start()
    try:
        second = run_study(cfg, gateway=second_gw.address, resume=True)
    finally:
        second_gw.stop()
    counts = second.summary["predictor"]
    # the restored scheduler predicted through the second gateway; the first one was gone
    assert counts["decisions_with_prediction"] > first.summary["predictor"]["decisions_with_prediction"]
    assert counts["fits_failed"] == 0 and counts["decisions_without_prediction"] == 0
    assert second.summary["gateway"] == second_gw.address
    rows = _rows(second.study_dir / "trials.csv")
    assert not [r for r in rows if r["decision"] in ("running", "paused", "pending", "error")]
