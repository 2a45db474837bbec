"""The qpu-gateway command line: configuration precedence, CSV fit/predict against a server."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from qpu_gateway.client import GatewayClient
from qpu_gateway.config import load_config
from tests._certs import make_pki
from tests.conftest import REPO, GatewayProcess

ADMIN = "cli-admin-token-0123456789abcdef"
PREDICT = "cli-predict-token-0123456789abcdef"


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


@pytest.mark.parametrize(("body", "message"), [
    ('[severs]\naddress = "0.0.0.0:1"\n', "unknown sections or top-level keys ['severs']"),
    ('address = "0.0.0.0:1"\n[server]\n', "unknown sections or top-level keys ['address']"),
    ('[backends.nael]\nnum_sweeps = 5\n', "unknown backend sections ['backends.nael']"),
    ('[server]\nreflection = "false"\n', "reflection must be true or false, got 'false'"),
    ('[server]\ngrace_seconds = "5"\n', "grace_seconds must be a number, got '5'"),
    ('[server]\nmetrics_port = "9577"\n', "metrics_port must be an integer (or unset), got '9577'"),
    ('[server]\nbackends = "neal"\n', "backends must be a list of backend names, got 'neal'"),
    ('[server]\nallowed_backends = ["neal", 3]\n', "allowed_backends must be a list of strings"),
])
def test_config_mistakes_outside_server_keys_and_wrong_types_are_named(
    tmp_path: Path, body: str, message: str
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(body)
    with pytest.raises(ValueError) as err:
        load_config(bad, env={})
    assert message in str(err.value)


def test_config_fit_queue_wait_seconds_from_the_file_and_validated(tmp_path: Path) -> None:
    cfg_file = tmp_path / "gw.toml"
    assert load_config(env={}).fit_queue_wait_seconds == 30.0
    cfg_file.write_text("[server]\nfit_queue_wait_seconds = 0\n")
    assert load_config(cfg_file, env={}).fit_queue_wait_seconds == 0
    for bad in ("-1.0", "nan", "inf"):
        cfg_file.write_text(f"[server]\nfit_queue_wait_seconds = {bad}\n")
        with pytest.raises(ValueError, match="fit_queue_wait_seconds must be a finite number >= 0"):
            load_config(cfg_file, env={})


def test_serve_config_type_mistake_is_one_line_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[server]\ngrace_seconds = "5"\n')
    out = _run("serve", "--config", str(cfg), "--store", str(tmp_path / "m.sqlite"))
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "qpu-gateway: grace_seconds must be a number, got '5'"]
    assert not list(tmp_path.glob("m.sqlite*"))


def test_serve_address_port_out_of_range_is_one_line_naming_address_exit_2(tmp_path: Path) -> None:
    out = _run("serve", "--address", "127.0.0.1:99999", "--store", str(tmp_path / "m.sqlite"))
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "qpu-gateway: address: port must be in [0, 65535], got '127.0.0.1:99999'"]
    assert not list(tmp_path.glob("m.sqlite*"))


def test_config_in_code_takes_paths_for_file_settings_only(tmp_path: Path) -> None:
    from qpu_gateway.config import GatewayConfig

    files = ("store", "tls_cert", "tls_key", "tls_client_ca", "tokens_file")
    cfg = GatewayConfig(**{name: tmp_path / name for name in files}).validate()
    assert {name: getattr(cfg, name) for name in files} == {name: str(tmp_path / name) for name in files}
    assert load_config(env={}, overrides={"store": tmp_path / "n.sqlite"}).store == str(tmp_path / "n.sqlite")
    with pytest.raises(TypeError, match=r"^address must be a string, got the path"):
        GatewayConfig(address=Path("127.0.0.1:50051")).validate()
    with pytest.raises(TypeError, match=r"^metrics_host must be a string, got the path"):
        load_config(env={}, overrides={"metrics_host": Path("localhost")})


@pytest.mark.parametrize("busy", ["address", "metrics port"])
def test_serve_that_cannot_bind_leaves_no_new_store_behind_and_keeps_an_old_one(
    tmp_path: Path, busy: str
) -> None:
    import socket

    from qpu_gateway.store import ModelStore

    old = ModelStore(tmp_path / "old.sqlite")
    old.put("a", {"n": 1}, {"s": 1}, 1.0)
    old.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        flags = (["--address", f"127.0.0.1:{port}"] if busy == "address" else
                 ["--address", "127.0.0.1:0", "--metrics-port", str(port), "--sampling-workers", "1"])
        for store in ("new.sqlite", "old.sqlite"):
            out = _run("serve", "--store", str(tmp_path / store), *flags)
            assert out.returncode == 2, out.stderr
            assert out.stderr.strip().splitlines()[-1].startswith(
                "qpu-gateway: " + ("cannot listen" if busy == "address" else "metrics: cannot listen"))
    assert not list(tmp_path.glob("new.sqlite*"))
    kept = ModelStore(tmp_path / "old.sqlite")
    assert kept.count() == 1
    kept.close()


def test_a_failed_start_reports_its_own_error_not_one_deleting_its_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from qpu_gateway.cli import _abandon
    from qpu_gateway.store import ModelStore

    def denied(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(13, "Permission denied")

    store = ModelStore(tmp_path / "new.sqlite")
    monkeypatch.setattr(Path, "unlink", denied)
    with pytest.raises(RuntimeError, match="the start's own error"):
        try:
            raise RuntimeError("the start's own error")
        finally:
            _abandon(store)
    assert any(r.levelname == "WARNING" and "could not delete" in r.getMessage()
               for r in caplog.records)


def test_cli_log_flags_work_before_or_after_the_subcommand() -> None:
    from qpu_gateway.cli import _parser

    before = _parser().parse_args(["--log-level", "debug", "--log-format", "json", "health"])
    after = _parser().parse_args(["health", "--log-level", "warning"])
    assert (before.log_level, before.log_format) == ("DEBUG", "json")
    assert after.log_level == "WARNING"
    assert _parser().parse_args(["health", "--log-level", "warn"]).log_level == "WARN"
    bad = _run("--log-level", "BOGUS", "health")
    assert bad.returncode == 2 and "invalid choice: 'BOGUS'" in bad.stderr and "Traceback" not in bad.stderr


_WARNS_IN_MAIN = """
import sys, warnings
import qpu_gateway.cli as cli

def warn(args):
    warnings.warn("overflow encountered in multiply", RuntimeWarning)
    return 0

cli._health = warn
sys.exit(cli.main(["--log-format", "json", "health"]))
"""
_WARNS_IN_A_WORKER = """
import logging, warnings
from qpu_gateway.observability import worker_logging

worker_logging(logging.INFO, json_lines=True)
warnings.warn("overflow encountered in multiply", RuntimeWarning)
"""


@pytest.mark.parametrize("code", [_WARNS_IN_MAIN, _WARNS_IN_A_WORKER], ids=["main", "worker"])
def test_cli_json_log_carries_python_warnings_as_json_objects(code: str) -> None:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert all(line.startswith("{") for line in lines), lines
    records = [json.loads(line) for line in lines]
    assert [(r["logger"], r["level"]) for r in records] == [("py.warnings", "WARNING")]
    assert "RuntimeWarning: overflow encountered in multiply" in records[0]["message"]


def test_cli_read_commands_fail_fast_and_the_client_names_an_unreachable_gateway() -> None:
    import time

    import grpc

    from tests.conftest import free_port

    address = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    out = _run("models", "--gateway", address)  # the default deadline is 60 s
    assert out.returncode == 1 and "UNAVAILABLE" in out.stderr
    assert time.monotonic() - start < 30
    with GatewayClient(address, timeout=2) as client, pytest.raises(grpc.RpcError) as err:
        client.list_models()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"could not connect to {address} within 2 s" in err.value.details()


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``qpu-gateway ARGS`` with this environment (less any token) plus ``env``."""
    base = {k: v for k, v in os.environ.items() if k != "QPU_GATEWAY_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "qpu_gateway", *args], capture_output=True, text=True, timeout=120,
        env={**base, **(env or {})},
    )


def _write_csv(path: Path, header: list[str], rows: np.ndarray) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows.tolist())
    return path


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (["--param", "bogus=1"], "--param bogus=1: unknown QSVR parameter 'bogus' (known: k, "),
        (["--param", "k=abc"], "--param k=abc: k must be an integer in [0, 2**32), got 'abc'"),
        (["--param", "k=-3"], "--param k=-3: k must be an integer in [0, 2**32), got '-3'"),
        (["--param", "gamma=wide"], "--param gamma=wide: gamma must be a number, got 'wide'"),
        (["--param", "gamma"], "--param expects NAME=VALUE, got 'gamma'"),
        (["--seed", "-1"], "--seed must be an integer in [0, 2**64), got -1"),
        (["--seed", str(2**64)], f"--seed must be an integer in [0, 2**64), got {2**64}"),
    ],
)
def test_cli_fit_bad_param_or_seed_is_one_line_naming_the_flag_exit_2(
    tmp_path: Path, flags: list[str], line: str
) -> None:
    data = _write_csv(tmp_path / "t.csv", ["a", "y"], np.array([[0.0, 1.0], [1.0, 2.0]]))
    out = _run("fit", "--gateway", "127.0.0.1:9", "--data", str(data), "--target", "y", *flags)
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1, out.stderr
    assert out.stderr.startswith("qpu-gateway: " + line), out.stderr


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
    assert info["model_id"] == "cli-model" and info["params"]["gamma"] == 0.5
    out = tmp_path / "pred.csv"
    pred = _run("predict", "--gateway", gateway_address, "--model-id", "cli-model",
                "--data", str(train), "--drop", "final_loss", "--out", str(out))
    assert pred.returncode == 0, pred.stderr
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 15 and {"mean", "std"} <= set(rows[0])
    missing = _run("predict", "--gateway", gateway_address, "--model-id", "nope", "--data", str(train))
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr


def test_cli_json_uses_the_proto_field_names_and_a_closed_stdout_is_quiet(
    gateway_address: str, tmp_path: Path
) -> None:
    x = np.random.default_rng(4).random((6, 2))
    train = _write_csv(tmp_path / "t.csv", ["a", "b", "y"], np.column_stack([x, x.sum(axis=1)]))
    fit = _run("fit", "--gateway", gateway_address, "--data", str(train), "--target", "y",
               "--model-id", "cli-json", "--param", "num_reads=20")
    assert fit.returncode == 0, fit.stderr
    info = json.loads(fit.stdout)
    assert info["model_id"] == "cli-json" and info["n_train"] == 6 and "train_r2" in info
    assert "modelId" not in fit.stdout
    # `qpu-gateway models | head -0`: the reader is gone before the listing is written
    proc = subprocess.Popen([sys.executable, "-m", "qpu_gateway", "models", "--gateway",
                             gateway_address], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert err.decode() == "" and proc.returncode == 141


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
    unknown = _run("health", "--gateway", gateway_address, "--service", "bogus")
    assert unknown.returncode == 1 and "no service 'bogus'" in unknown.stderr


def test_cli_predict_matches_csv_columns_by_the_models_feature_names(
    gateway_address: str, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    x = rng.random((12, 3))
    train = _write_csv(tmp_path / "train.csv", ["a", "b", "c", "y"], np.column_stack([x, 5 * x[:, 0]]))
    fit = _run("fit", "--gateway", gateway_address, "--data", str(train), "--target", "y",
               "--model-id", "cli-names", "--seed", "3", "--param", "num_reads=40")
    assert fit.returncode == 0, fit.stderr
    assert json.loads(fit.stdout)["feature_names"] == ["a", "b", "c"]
    shuffled = tmp_path / "rows.csv"
    with open(shuffled, "w", newline="") as fh:  # other order, plus a column that is no number
        w = csv.writer(fh)
        w.writerow(["c", "trial", "a", "b"])
        w.writerows([[c, f"trial-{i}", a, b] for i, (a, b, c) in enumerate(x.tolist())])
    out = tmp_path / "pred.csv"
    pred = _run("predict", "--gateway", gateway_address, "--model-id", "cli-names",
                "--data", str(shuffled), "--out", str(out))
    assert pred.returncode == 0, pred.stderr
    with open(out, newline="") as fh:
        got = np.array([float(r["mean"]) for r in csv.DictReader(fh)])
    with GatewayClient(gateway_address) as client:
        want, _ = client.predict("cli-names", x)
    np.testing.assert_allclose(got, want)
    lacking = _write_csv(tmp_path / "lacking.csv", ["a", "c"], x[:, [0, 2]])
    missing = _run("predict", "--gateway", gateway_address, "--model-id", "cli-names",
                   "--data", str(lacking))
    assert missing.returncode != 0
    assert "lacking.csv: no column 'b', which the model was fitted with" in missing.stderr


def test_cli_fit_and_predict_read_a_csv_with_a_utf8_byte_order_mark(
    gateway_address: str, tmp_path: Path
) -> None:
    x = np.random.default_rng(5).random((8, 2))
    train = tmp_path / "excel.csv"
    with open(train, "w", newline="", encoding="utf-8-sig") as fh:  # Excel's "CSV UTF-8"
        w = csv.writer(fh)
        w.writerow(["a", "b", "y"])
        w.writerows(np.column_stack([x, x.sum(axis=1)]).tolist())
    fit = _run("fit", "--gateway", gateway_address, "--data", str(train), "--target", "y",
               "--model-id", "cli-bom", "--param", "num_reads=20")
    assert fit.returncode == 0, fit.stderr
    assert json.loads(fit.stdout)["feature_names"] == ["a", "b"]
    pred = _run("predict", "--gateway", gateway_address, "--model-id", "cli-bom",
                "--data", str(train))
    assert pred.returncode == 0, pred.stderr
    assert len(pred.stdout.splitlines()) == 9


def test_cli_fit_drop_skips_text_columns_and_a_text_column_suggests_it(
    gateway_address: str, tmp_path: Path
) -> None:
    x = np.random.default_rng(6).random((8, 2))
    train = tmp_path / "ids.csv"
    with open(train, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "a", "b", "y"])
        w.writerows([[f"cfg{i}", a, b, a + b] for i, (a, b) in enumerate(x.tolist())])
    refused = _run("fit", "--gateway", gateway_address, "--data", str(train), "--target", "y")
    assert refused.returncode != 0 and refused.stderr.strip().endswith(
        "row 2, column 'id': 'cfg0' is not a number (not a feature? --drop id)"), refused.stderr
    fit = _run("fit", "--gateway", gateway_address, "--data", str(train), "--target", "y",
               "--drop", "id", "--model-id", "cli-drop", "--param", "num_reads=20")
    assert fit.returncode == 0, fit.stderr
    assert json.loads(fit.stdout)["feature_names"] == ["a", "b"]
    typo = _run("fit", "--gateway", gateway_address, "--data", str(train), "--target", "y",
                "--drop", "ID")
    assert typo.returncode != 0 and "--drop 'ID': no such column" in typo.stderr


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, dict[str, str]]]:
    """A mutual-TLS gateway with an admin and a predict token."""
    d = tmp_path_factory.mktemp("cli-mtls")
    pki = make_pki(d)
    tokens = d / "tokens.txt"
    tokens.write_text(f"admin:{ADMIN}\npredict:{PREDICT}\n")
    os.chmod(tokens, 0o600)
    proc = GatewayProcess(d / "m.sqlite", "--tls-cert", pki["server"], "--tls-key", pki["server_key"],
                          "--tls-client-ca", pki["ca"], "--tokens-file", str(tokens)).start()
    yield proc, pki
    proc.stop()


def test_cli_every_client_subcommand_speaks_tls_with_a_token(
    secured: tuple[GatewayProcess, dict[str, str]], tmp_path: Path
) -> None:
    proc, pki = secured
    tls = ["--gateway", proc.address, "--tls-ca", pki["ca"], "--tls-cert", pki["client"],
           "--tls-key", pki["client_key"]]
    admin_file = tmp_path / "admin.token"
    admin_file.write_text(ADMIN + "\n")
    os.chmod(admin_file, 0o600)
    x = np.random.default_rng(2).random((8, 2))
    train = _write_csv(tmp_path / "t.csv", ["p", "q", "y"], np.column_stack([x, x.sum(axis=1)]))
    fit_args = ["fit", *tls, "--data", str(train), "--target", "y", "--model-id", "tls-m",
                "--param", "num_reads=30"]
    denied = _run(*fit_args, env={"QPU_GATEWAY_TOKEN": PREDICT})
    assert denied.returncode == 1 and "PERMISSION_DENIED" in denied.stderr
    fit = _run(*fit_args, "--token-file", str(admin_file))
    assert fit.returncode == 0, fit.stderr
    as_predict = {"QPU_GATEWAY_TOKEN": PREDICT}
    pred = _run("predict", *tls, "--model-id", "tls-m", "--data", str(train), env=as_predict)
    assert pred.returncode == 0 and len(pred.stdout.splitlines()) == 9, pred.stderr
    listed = _run("models", *tls, "--token-env", "MY_TOKEN", env={"MY_TOKEN": PREDICT})
    assert listed.returncode == 0 and json.loads(listed.stdout)[0]["model_id"] == "tls-m", listed.stderr
    health = _run("health", *tls)
    assert health.returncode == 0 and health.stdout.strip() == "SERVING", health.stderr
    no_token = _run("models", *tls)
    assert no_token.returncode == 1 and "UNAUTHENTICATED" in no_token.stderr
    deleted = _run("delete", *tls, "--model-id", "tls-m", "--token-file", str(admin_file))
    assert deleted.returncode == 0 and "deleted 1 version(s)" in deleted.stdout, deleted.stderr
    os.chmod(admin_file, 0o644)
    loose = _run("delete", *tls, "--model-id", "tls-m", "--token-file", str(admin_file))
    assert loose.returncode == 2 and "chmod 600" in loose.stderr and ADMIN not in loose.stderr
    plain = _run("health", "--gateway", proc.address, "--timeout", "3")
    assert plain.returncode == 1


def test_cli_tls_client_without_a_certificate_at_a_mutual_tls_gateway_gets_a_hint(
    secured: tuple[GatewayProcess, dict[str, str]]
) -> None:
    proc, pki = secured
    for extra in (["--timeout", "3"], ["--wait", "2"]):
        out = _run("health", "--gateway", proc.address, "--tls-ca", pki["ca"], *extra)
        assert out.returncode == 1 and "Socket closed" in out.stderr, out.stderr
        assert "pass --tls-cert and --tls-key" in out.stderr


def _docker_healthcheck() -> list[str]:
    text = (REPO / "deploy" / "docker" / "gateway.Dockerfile").read_text()
    return json.loads(text.split("HEALTHCHECK", 1)[1].split("CMD", 1)[1].splitlines()[0])


def test_deploy_health_checks_reach_a_tls_gateway(
    secured: tuple[GatewayProcess, dict[str, str]]
) -> None:
    """The Docker HEALTHCHECK, compose healthcheck and Kubernetes TLS probes, run as written
    (the gateway's port and the certificate paths mapped onto this test's)."""
    import yaml

    proc, pki = secured
    port = proc.address.rsplit(":", 1)[1]
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
    deployment = yaml.safe_load((REPO / "deploy" / "k8s" / "gateway-tls.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    paths = {"/tls/ca.crt": pki["ca"]}
    k8s_env = {k: paths.get(v, v) for k, v in env.items() if k.startswith("QPU_GATEWAY_TLS_")}
    k8s_env["QPU_GATEWAY_TLS_SERVER_NAME"] = "localhost"  # the name the test certificate holds
    mtls = {"QPU_GATEWAY_TLS_CERT": pki["client"], "QPU_GATEWAY_TLS_KEY": pki["client_key"]}
    checks = {
        "docker": (_docker_healthcheck(), {"QPU_GATEWAY_TLS_CA": pki["ca"]}),
        "compose": (compose["services"]["gateway"]["healthcheck"]["test"][1:],
                    {"QPU_GATEWAY_TLS_CA": pki["ca"]}),
        **{probe: (container[probe]["exec"]["command"], k8s_env)
           for probe in ("startupProbe", "livenessProbe", "readinessProbe")},
    }
    assert "/tls/ca.crt" in env.values() and "--tls-cert" in container["args"]
    for name, (command, tls_env) in checks.items():
        assert command[:2] == ["qpu-gateway", "health"], name
        args = [a.replace(":50051", f":{port}") for a in command[1:]]
        ok = _run(*args, env={**tls_env, **mtls})
        assert ok.returncode == 0 and ok.stdout.strip() == "SERVING", (name, ok.stderr)
    plain = _run(*[a.replace(":50051", f":{port}") for a in _docker_healthcheck()[1:]])
    assert plain.returncode == 1  # without the TLS variables, the same check fails


def test_serve_with_a_backend_that_cannot_be_built_exits_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[server]\nbackend = "neal"\n[backends.neal]\nbogus = 1\n')
    out = _run("serve", "--config", str(cfg), "--store", str(tmp_path / "m.sqlite"),
               "--address", "127.0.0.1:0")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert "backend 'neal' cannot be built: ValueError: unknown neal settings: ['bogus']" in lines[0]
