"""``hpo-node run`` configuration errors found before anything trains: a TOML syntax error, an
unset ``gateway.token_env``, a token the gateway refuses, a second run of a study name, a
``--resume`` with another config (no Ray is started by these tests)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpo_node.study import apply_overrides, load_study, optimize, run_main, run_study
from hpo_node.study.run import _write_identity
from qpu_gateway.process import GatewayProcess

ADMIN = "admin-token-0123456789abcdef"
PREDICT = "predict-token-0123456789abcdef"

STUDY = (
    '[study]\nname = "s"\ntrials = 27\noutput_dir = "{out}"\n'
    '[algorithm]\nname = "swift-asha"\nmax_resource = 9\n'
    'params = {{ rule = "paper" }}\n'  # the published rule: the gateway fits its predictors
    '[space]\nlr = {{ type = "loguniform", low = 1e-4, high = 1e-1 }}\n'
)


def _toml(tmp_path: Path, extra: str = "") -> Path:
    toml = tmp_path / "s.toml"
    toml.write_text(STUDY.format(out=tmp_path / "results") + extra)
    return toml


def test_hpo_study_cli_toml_syntax_error_names_the_file(tmp_path: Path, capsys: Any) -> None:
    toml = tmp_path / "broken.toml"
    toml.write_text("[study]\nname = \"s\"\ntrials = 27\nseed = x\n")
    assert run_main([str(toml)]) == 2
    err = capsys.readouterr().err
    assert err == f"hpo-node run: error: {toml}: Invalid value (at line 4, column 8)\n"
    with pytest.raises(ValueError, match=r"broken\.toml: "):
        load_study(toml)


def test_hpo_study_cli_unset_token_env_is_a_config_error(tmp_path: Path, capsys: Any,
                                                         monkeypatch: Any) -> None:
    monkeypatch.delenv("MY_GW_TOKEN", raising=False)
    toml = _toml(tmp_path, '[gateway]\naddress = "127.0.0.1:1"\ntoken_env = "MY_GW_TOKEN"\n')
    assert run_main([str(toml)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hpo-node run: error: gateway.token_env: environment variable "
                          "'MY_GW_TOKEN' is not set;") and err.count("\n") == 1
    monkeypatch.setenv("MY_GW_TOKEN", "x")
    assert load_study(toml).gateway_connection == {"token_env": "MY_GW_TOKEN"}
    # without the gateway predictor the variable is not needed
    monkeypatch.delenv("MY_GW_TOKEN")
    assert load_study(toml, {"algorithm.name": "asha", "algorithm.params": {}}).algorithm == "asha"
    assert not load_study(toml, {"algorithm.params": {}}).uses_predictor  # swift-asha's gate


@pytest.fixture(scope="module")
def token_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway that wants tokens: an admin one and a predict-only one."""
    d = tmp_path_factory.mktemp("token-gw")
    tokens = d / "tokens.txt"
    tokens.write_text(f"admin:{ADMIN}\npredict:{PREDICT}\n")
    os.chmod(tokens, 0o600)
    proc = GatewayProcess(d / "m.sqlite", "--tokens-file", str(tokens)).start()
    yield proc
    proc.stop()


@pytest.mark.parametrize(("token", "expected"), [
    ("wrong-token-0123456789abcdef", "(UNAUTHENTICATED: unknown token): set gateway.token_env"),
    (PREDICT, "(PERMISSION_DENIED: this token's scope 'predict' does not allow DeleteModel "
              "(needs 'admin')): the Swift predictor fits models, which needs a token with the "
              "'admin' scope"),
    (None, "refused no token (gateway.token_env is not set) (UNAUTHENTICATED: missing bearer "
           "token)"),
])
def test_hpo_study_cli_refused_token_fails_before_training(
    tmp_path: Path, capsys: Any, monkeypatch: Any, token_gateway: GatewayProcess,
    token: str | None, expected: str,
) -> None:
    import hpo_node.study.run as run_mod

    def no_ray(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Ray must not start")

    monkeypatch.setattr("ray.init", no_ray)
    monkeypatch.setattr(run_mod, "GATEWAY_WAIT_S", 5.0)
    extra = f'[gateway]\naddress = "{token_gateway.address}"\n'
    if token is not None:
        monkeypatch.setenv("MY_GW_TOKEN", token)
        extra += 'token_env = "MY_GW_TOKEN"\n'
    assert run_main([str(_toml(tmp_path, extra))]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hpo-node run: error: the qpu-gateway at {token_gateway.address} "
                          "refused "), err
    assert expected in err and err.count("\n") == 1
    assert token is None or token not in err


def test_hpo_study_cli_admin_token_passes_the_check(tmp_path: Path, monkeypatch: Any,
                                                    token_gateway: GatewayProcess) -> None:
    from hpo_node.study.run import _check_token
    from qpu_gateway.client import GatewayClient

    _check_token(GatewayClient, token_gateway.address, ADMIN, {}, "MY_GW_TOKEN", 5.0)


def test_hpo_study_cli_second_run_of_a_name_is_refused(tmp_path: Path, capsys: Any) -> None:
    toml = _toml(tmp_path, '[predictor]\nkind = "svr"\n')
    study = tmp_path / "results" / "s"
    study.mkdir(parents=True)
    (study / "summary.json").write_text("{}")
    assert run_main([str(toml)]) == 2
    err = capsys.readouterr().err
    assert err == (f"hpo-node run: error: {study} already holds study 's': continue it with "
                   "--resume, or start over with --overwrite (deletes it) or another study.name "
                   "(--set study.name='\"s-2\"')\n")
    with pytest.raises(SystemExit) as info:  # argparse: not both
        run_main([str(toml), "--resume", "--overwrite"])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_hpo_study_cli_resume_refuses_another_config(tmp_path: Path, capsys: Any) -> None:
    toml = _toml(tmp_path, '[predictor]\nkind = "svr"\n')
    cfg = load_study(toml)
    cfg.study_dir.mkdir(parents=True)
    _write_identity(cfg)
    saved = json.loads((cfg.study_dir / "study.json").read_text())["identity"]
    assert saved["algorithm.name"] == "swift-asha" and saved["algorithm.params"] == {"rule": "paper", "d": 4}
    assert run_main([str(toml), "--resume", "--set", 'algorithm.name="asha"',
                     "--set", "algorithm.params={}", "--set", "study.seed=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"hpo-node run: error: --resume: {cfg.study_dir} was started with another config "
        "(study.seed 0 -> 3; algorithm.name 'swift-asha' -> 'asha'; ")
    assert "a resume may change only study.time_budget_s, study.num_cpus" in err
    assert err.count("\n") == 1
    # a study without study.json: its summary.json is compared
    (cfg.study_dir / "study.json").unlink()
    (cfg.study_dir / "summary.json").write_text(json.dumps({"algorithm": "swift-asha", "eta": 3}))
    assert run_main([str(toml), "--resume", "--set", 'algorithm.name="asha"',
                     "--set", "algorithm.params={}"]) == 2
    assert "algorithm.name 'swift-asha' -> 'asha'" in capsys.readouterr().err


@pytest.mark.parametrize(("params", "expected"), [
    ('{rul="gate"}', "hpo-node run: error: algorithm.params.rul: swift-asha has no option 'rul' "
                     "(did you mean 'rule'?); its options: d, defer, early_stopping_rate, "
                     "fallback, forecaster, known_curve, max_windows, min_resource, mode, "
                     "protect, refit_every, rule, scale_free, top_rung, z\n"),
    ('{rule="x"}', "hpo-node run: error: algorithm.params.rule must be one of 'forecast', "
                   "'paper', 'gate', got 'x'\n"),
    ("{d=1}", "hpo-node run: error: algorithm.params.d must be >= 2, got 1\n"),
    ("{seed=3}", "hpo-node run: error: algorithm.params.seed: not an option here, study.seed "
                 "sets it\n"),
])
def test_hpo_study_cli_bad_algorithm_params_name_the_key(tmp_path: Path, capsys: Any,
                                                         params: str, expected: str) -> None:
    toml = _toml(tmp_path, '[predictor]\nkind = "svr"\n')
    assert run_main([str(toml), "--set", f"algorithm.params={params}"]) == 2
    assert capsys.readouterr().err == expected
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("algorithm", ["asha", "hyperband", "swift-asha", "swift-hyperband"])
def test_hpo_study_cli_algorithm_options_come_from_the_constructor(algorithm: str) -> None:
    import inspect

    from hpo_node.study.build import _core_class, algorithm_options

    options = algorithm_options(algorithm)
    assert "min_resource" in options
    assert not {"self", "max_resource", "eta", "n_trials", "predictor", "seed"} & set(options)
    assert set(options) < set(inspect.signature(_core_class(algorithm)).parameters)
    with pytest.raises(ValueError, match=r"algorithm must be one of 'asha', 'hyperband'"):
        _core_class("random")


def test_hpo_study_cli_set_reaches_into_nested_tables(tmp_path: Path, capsys: Any) -> None:
    """``--set algorithm.params.d=4`` sets ``d`` in the TOML's params table (the key the Swift d
    note names), keeping its other entries; a bad or unknown key there is named in full."""
    toml = _toml(tmp_path, '[predictor]\nkind = "svr"\n')
    note = load_study(toml).notes[0]
    assert "set algorithm.params.d to choose" in note
    assert load_study(toml, {"algorithm.params.d": 3}).algorithm_params == {"rule": "paper",
                                                                            "d": 3}
    assert run_main([str(toml), "--set", "algorithm.params.d=1"]) == 2
    assert capsys.readouterr().err == ("hpo-node run: error: algorithm.params.d must be >= 2, "
                                       "got 1\n")
    assert run_main([str(toml), "--set", "algorithm.params.dd=4"]) == 2
    assert capsys.readouterr().err.startswith(
        "hpo-node run: error: algorithm.params.dd: swift-asha has no option 'dd' (did you mean "
        "'d'?); its options: d, ")
    # any depth, a missing table created, a whole table then one of its keys
    cfg = load_study(toml, {"space.lr.high": 0.05, "algorithm.searcher": "tpe",
                            "algorithm.searcher_params.gamma": 0.2,
                            "algorithm.params": {"rule": "gate"}, "algorithm.params.z": 1.5})
    assert cfg.space["lr"].spec()["high"] == 0.05 and cfg.searcher_params == {"gamma": 0.2}
    assert cfg.algorithm_params == {"rule": "gate", "z": 1.5}
    doc = {"algorithm": {"name": "asha", "params": {"rule": "paper"}}}
    assert apply_overrides(doc, {"algorithm.params.d": 4})["algorithm"]["params"] == {
        "rule": "paper", "d": 4}
    assert doc == {"algorithm": {"name": "asha", "params": {"rule": "paper"}}}  # not changed
    with pytest.raises(TypeError, match=r"algorithm.name must be a table to override "
                                        r"'algorithm.name.x', got 'asha'"):
        apply_overrides(doc, {"algorithm.name.x": 1})
    assert run_main([str(toml), "--set", "algorithm..d=4"]) == 2
    assert "override must be SECTION.KEY=VALUE" in capsys.readouterr().err
    # a quoted TOML key is one key, dots and all (a trainable's "model.lr" option)
    doc = {"trainable": {"params": {"model.lr": 0.1, "model": {"lr": 9}}}}
    assert apply_overrides(doc, {'trainable.params."model.lr"': 0.2})["trainable"]["params"] == {
        "model.lr": 0.2, "model": {"lr": 9}}
    assert apply_overrides(doc, {"trainable.params.model.lr": 8})["trainable"]["params"] == {
        "model.lr": 0.1, "model": {"lr": 8}}
    for bad in ("study", 'study."seed', "study.seed = 1", "a.b\nc.d"):
        with pytest.raises(ValueError, match=r"override must be SECTION\.KEY=VALUE"):
            apply_overrides(doc, {bad: 1})
    with pytest.raises(ValueError, match=r"quote a key that holds characters other than"):
        apply_overrides(doc, {"trainable.params.lr@x": 1})
    assert apply_overrides(doc, {'trainable.params."lr@x"': 1})["trainable"]["params"]["lr@x"] == 1


def test_hpo_study_optimize_second_run_names_the_python_arguments(tmp_path: Path) -> None:
    """From Python, the refusals name ``resume=True`` / ``overwrite=True``, not the CLI's flags
    (``hpo-node run`` keeps its own: test_hpo_study_cli_second_run_of_a_name_is_refused)."""
    toml = _toml(tmp_path, '[predictor]\nkind = "svr"\n')
    cfg = load_study(toml)
    cfg.study_dir.mkdir(parents=True)
    (cfg.study_dir / "summary.json").write_text("{}")
    with pytest.raises(ValueError) as info:
        optimize(None, toml)
    assert str(info.value) == (
        f"{cfg.study_dir} already holds study 's': continue it with optimize(..., resume=True), "
        "or start over with optimize(..., overwrite=True) (deletes it) or another study.name "
        "(optimize(..., overrides={'study.name': 's-2'}))")
    with pytest.raises(ValueError, match=r"continue it with run_study\(cfg, resume=True\), .* "
                                         r"\(run_study\(dataclasses.replace\(cfg, name='s-2'\)\)\)"):
        run_study(cfg)
    _write_identity(cfg)
    with pytest.raises(ValueError) as info:
        optimize(None, toml, resume=True, overrides={"study.seed": 3})
    assert str(info.value).startswith(f"resume=True: {cfg.study_dir} was started with another "
                                      "config (study.seed 0 -> 3)")
    assert str(info.value).endswith("or start over with overwrite=True or another study.name")
    with pytest.raises(ValueError, match=r"^resume=True and overwrite=True exclude each other"):
        optimize(None, toml, resume=True, overwrite=True)


@pytest.mark.parametrize("algorithm", ["asha", "swift-asha"])
def test_hpo_study_too_few_trials_for_any_to_reach_r_is_said_before_it_starts(
        tmp_path: Path, algorithm: str) -> None:
    """With fewer than eta^(rungs - 1) trials no trial is ever promoted to R: a note (printed
    when the study starts) says so and how many are needed (the study used to end with no best,
    saying nothing)."""
    toml = _toml(tmp_path)
    over = {"algorithm.name": algorithm, "algorithm.params": {}}
    cfg = load_study(toml, {**over, "study.trials": 8})
    assert (f"warning: study.trials = 8 is fewer than the 9 that {algorithm} needs for any trial to reach "
            "max_resource = 9 (each rung promotes its best 1/eta: rungs at 1, 3, 9 epochs, eta = "
            "3): the study will find no best at R; give at least 9") in cfg.notes
    assert not load_study(toml, {**over, "study.trials": 9}).notes


@pytest.mark.parametrize(("module", "code", "says"), [
    ("broken_syntax", "def train(config)\n    pass\n", "SyntaxError: expected ':' ("),
    ("broken_import", "from json import no_such_name\n\n\ndef train(config):\n    pass\n",
     "at {file}:1: ImportError: cannot import name 'no_such_name' from 'json'"),
    ("broken_data", "import numpy\n\nDATA = numpy.load('data.npy')\n\n\ndef train(config):\n"
     "    pass\n", "at {file}:3: FileNotFoundError: [Errno 2] No such file or directory: "),
])
def test_hpo_study_cli_trainable_module_that_fails_to_import_is_one_line(
        tmp_path: Path, capsys: Any, module: str, code: str, says: str) -> None:
    """A trainable module whose own code raises on import (a syntax error, a bad import, a data
    file missing at its top level) is one line naming trainable.function, the module, the line
    and the error (it was a traceback, or a bare "[Errno 2]" read as a config error)."""
    (tmp_path / f"{module}.py").write_text(code)
    toml = _toml(tmp_path, f'[trainable]\nfunction = "{module}:train"\n')
    assert run_main([str(toml), "--set", "algorithm.params={}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hpo-node run: error: trainable.function: importing {module!r} failed")
    assert says.format(file=tmp_path / f"{module}.py") in err and err.count("\n") == 1
