"""The qpu-gateway command line: configuration precedence, CSV fit/predict against a server."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qpu_gateway.config import load_config


def test_config_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    cfg_file = tmp_path / "gw.toml"
    cfg_file.write_text(
        '[server]\nbackend = "exact"\nstore = "from-file.sqlite"\n[backends.neal]\nnum_sweeps = 50\n'
    )
    assert load_config(env={}).backend == "neal"
    assert load_config(cfg_file, env={}).backend == "exact"
    assert load_config(cfg_file, env={}).backends == {"neal": {"num_sweeps": 50}}
    assert load_config(cfg_file, env={"QPU_GATEWAY_BACKEND": "neal"}).backend == "neal"
    flags = load_config(cfg_file, env={"QPU_GATEWAY_BACKEND": "neal"}, overrides={"backend": "exact"})
    assert flags.backend == "exact" and flags.store == "from-file.sqlite"


def test_config_rejects_unknown_keys_and_backends(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nbakend = "neal"\n')
    with pytest.raises(ValueError, match="unknown \\[server\\] keys \\['bakend'\\]"):
        load_config(bad, env={})
    with pytest.raises(ValueError, match="backend must be one of"):
        load_config(env={"QPU_GATEWAY_BACKEND": "warp-drive"})


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qpu_gateway", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_fit_and_predict_csv_files(gateway_address: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((15, 3))
    y = 10 + x.sum(axis=1)
    train = tmp_path / "train.csv"
    with open(train, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["a", "b", "c", "final_loss"])
        w.writerows(np.column_stack([x, y]).tolist())
    fit = _run("fit", "--gateway", gateway_address, "--data", str(train), "--target", "final_loss",
               "--model-id", "cli-model", "--seed", "1", "--param", "num_reads=50",
               "--param", "gamma=0.5")
    assert fit.returncode == 0, fit.stderr
    info = json.loads(fit.stdout)
    assert info["modelId"] == "cli-model" and info["params"]["gamma"] == 0.5
    out = tmp_path / "pred.csv"
    pred = _run("predict", "--gateway", gateway_address, "--model-id", "cli-model",
                "--data", str(train), "--drop", "final_loss", "--out", str(out))
    assert pred.returncode == 0, pred.stderr
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 15 and {"mean", "std"} <= set(rows[0])
    missing = _run("predict", "--gateway", gateway_address, "--model-id", "nope", "--data", str(train))
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr


def test_example_gateway_config_loads() -> None:
    cfg = load_config(Path(__file__).resolve().parents[1] / "examples" / "gateway.toml", env={})
    assert cfg.backend == "neal" and cfg.allowed_backends == ["neal", "exact"]


def test_cli_health_exit_code_tells_serving_from_down(gateway_address: str) -> None:
    from tests.conftest import free_port

    up = _run("health", "--gateway", gateway_address, "--service", "qpu_gateway.v1.Gateway")
    assert up.returncode == 0 and up.stdout.strip() == "SERVING"
    down = _run("health", "--gateway", f"127.0.0.1:{free_port()}", "--timeout", "2")
    assert down.returncode == 1 and "UNAVAILABLE" in down.stderr
    waited = _run("health", "--gateway", f"127.0.0.1:{free_port()}", "--wait", "1")
    assert waited.returncode == 1 and "not SERVING after 1" in waited.stderr
