"""Study TOML validation, the search space, the run command's errors, and the digits trainer."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hpo_node.study import (
    hparam_encoder,
    load_study,
    n_trials,
    param_space,
    run_main,
    study_from_dict,
)
from hpo_node.trainables import DigitsTrainer, load_digits_split, resolve_config

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits.toml"

BASE: dict[str, Any] = {
    "study": {"name": "s", "trials": 9},
    "algorithm": {"name": "asha", "max_resource": 9, "eta": 3},
    "space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1}},
}


def _doc(**over: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    for dotted, value in over.items():
        if "__" not in dotted:
            doc[dotted] = value
            continue
        section, key = dotted.split("__")
        if value is None:
            doc.setdefault(section, {}).pop(key, None)
        else:
            doc.setdefault(section, {})[key] = value
    return doc


def test_hpo_study_config_example_parses() -> None:
    cfg = load_study(EXAMPLE)
    assert cfg.name == "digits" and cfg.algorithm == "swift-asha"
    assert cfg.max_resource == 27 and cfg.eta == 3 and cfg.trials == 243
    assert set(cfg.space) == {"model", "lr", "weight_decay", "batch_size", "hidden", "dropout"}
    assert cfg.needs_gateway and cfg.gateway == "auto"


@pytest.mark.parametrize(
    ("name", "algorithm", "trials"),
    [("digits-asha.toml", "asha", 243), ("digits-hyperband.toml", "hyperband", 49)],
)
def test_hpo_study_config_other_examples_parse(name: str, algorithm: str, trials: int) -> None:
    cfg = load_study(EXAMPLE.parent / name)
    assert cfg.algorithm == algorithm and not cfg.needs_gateway
    assert n_trials(cfg) == trials
    assert cfg.space == load_study(EXAMPLE).space


@pytest.mark.parametrize(
    ("over", "exc", "match"),
    [
        ({"algorithm__name": "bohb"}, ValueError, "algorithm.name must be one of"),
        ({"study__trials": 0}, ValueError, "study.trials must be >= 1"),
        ({"study__bogus": 1}, ValueError, r"\[study\] has unknown keys \['bogus'\]"),
        ({"study__sed": 1}, ValueError,
         r"\[study\] has unknown keys \['sed'\] \(did you mean 'seed'\?\); known: "),
        ({"studdy": {}}, ValueError,
         r"\[top level\] has unknown keys \['studdy'\] \(did you mean 'study'\?\)"),
        ({"space__learning_rat": {"type": "uniform", "low": 0, "high": 1}}, ValueError,
         r"\[space\] has unknown keys \['learning_rat'\]; known: \['activation'"),
        ({"space__lr": {"type": "loguniform", "low": 0.0, "high": 1.0}}, ValueError,
         "space.lr.low must be > 0 for loguniform"),
        ({"space__lr": {"type": "uniform", "low": 1.0, "high": 1.0}}, ValueError,
         "low must be < high"),
        ({"space__lr": {"type": "normal", "low": 0.0, "high": 1.0}}, ValueError,
         "space.lr.type must be one of"),
        ({"space__hidden": {"type": "choice", "values": []}}, ValueError,
         "space.hidden.values must be a non-empty list"),
        ({"space__batch_size": {"type": "quniform", "low": 16, "high": 64}}, ValueError,
         "space.batch_size.q is missing: it must be a number"),
        ({"space__colour": {"type": "choice", "values": [1]}}, ValueError,
         r"\[space\] has unknown keys \['colour'\]"),
        ({"trainable__lr": 0.1}, ValueError, r"keys \['lr'\] are both in"),
        ({"trainable__max_epochs": 3}, ValueError, "max_epochs is set from"),
        ({"algorithm__name": "hyperband"}, ValueError, "study.trials must be omitted"),
        ({"algorithm__name": "swift-asha", "algorithm__params": {"rule": "paper"},
          "gateway__address": "none"}, ValueError, "gateway.address must not be 'none'"),
        ({"gateway__address": "localhost"}, ValueError, "gateway.address must be"),
        ({"algorithm__params": {"eta_typo": 2}}, TypeError, "eta_typo"),
        ({"resources__cpu": 0}, ValueError, r"resources.cpu must be in \(0.0"),
        ({"algorithm__searcher": "bohb"}, ValueError,
         r"algorithm.searcher must be one of 'random', 'tpe', 'gp-ei', 'evolution', got 'bohb'"),
        ({"algorithm__searcher_params": {"gamma": 0.2}}, ValueError,
         r"algorithm.searcher_params must be empty for searcher = 'random'"),
        ({"algorithm__searcher": "tpe", "algorithm__searcher_params": {"gama": 0.2}}, TypeError,
         r"algorithm.searcher_params must be options of the 'tpe' searcher, got \{'gama': 0.2\}"),
        ({"algorithm__searcher": "tpe", "algorithm__searcher_params": {"gamma": 1.5}},
         ValueError, r"gamma must be in \(0.0, 1.0\), got 1.5"),
        ({"algorithm__searcher": "tpe", "algorithm__searcher_params": 3}, TypeError,
         "algorithm.searcher_params must be a table, got 3"),
        ({"algorithm__name": "hyperband", "algorithm__searcher": "tpe", "study__trials": None,
          "space": {"optimizer": {"type": "choice", "values": ["adam", "sgd"]}}}, ValueError,
         r"space: 2 distinct configurations, fewer than the \d+ that a hyperband bracket"),
    ],
)
def test_hpo_study_config_rejects_bad_entries(over: dict[str, Any], exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        study_from_dict(_doc(**over))


def test_hpo_study_config_searcher_key() -> None:
    assert study_from_dict(_doc()).searcher == "random"
    cfg = load_study(EXAMPLE.parent / "digits-tpe.toml")
    assert (cfg.searcher, cfg.algorithm, n_trials(cfg)) == ("tpe", "swift-asha", 81)
    assert cfg.space == load_study(EXAMPLE).space
    over = load_study(EXAMPLE, {"algorithm.searcher": "gp-ei",
                                "algorithm.searcher_params": {"liar": "mean"}})
    assert (over.searcher, over.searcher_params) == ("gp-ei", {"liar": "mean"})


def test_hpo_study_config_trials_per_algorithm() -> None:
    assert n_trials(study_from_dict(_doc())) == 9
    hb = _doc(algorithm__name="hyperband")
    del hb["study"]["trials"]
    assert n_trials(study_from_dict(hb)) == 17  # R = 9, eta = 3: 9 + 5 + 3
    asha = _doc()
    del asha["study"]["trials"]
    assert n_trials(study_from_dict(asha)) == 17  # as many as Hyperband samples


def test_hpo_study_config_param_space_samples_the_declared_domains() -> None:
    from ray.tune.search.sample import Categorical, Float, Integer

    cfg = load_study(EXAMPLE)
    space = param_space(cfg)
    assert space["max_epochs"] == 27 and space["optimizer"] == "adam"
    assert isinstance(space["lr"], Float) and isinstance(space["model"], Categorical)
    assert isinstance(space["batch_size"], Integer)
    rng = np.random.default_rng(0)
    draws = [space["batch_size"].sample(random_state=rng) for _ in range(200)]
    assert set(draws) == set(range(16, 129, 16))
    lrs = np.array([space["lr"].sample(random_state=rng) for _ in range(500)])
    assert lrs.min() >= 1e-4 and lrs.max() <= 3e-2
    assert np.mean(lrs < 1e-3) > 0.3  # log-uniform: a third of the draws in the first decade
    enc = hparam_encoder(cfg)
    h = enc({"model": "cnn", "lr": 1e-3, "weight_decay": 1e-4, "batch_size": 32, "hidden": 64,
             "dropout": 0.1, "optimizer": "adam", "max_epochs": 27})
    assert h == {"model": 1.0, "lr": -3.0, "weight_decay": -4.0, "batch_size": 32.0,
                 "hidden": 2.0, "dropout": 0.1}


def test_hpo_study_config_run_main_reports_config_errors(tmp_path: Path, capsys: Any) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[study]\nname = "x"\n[algorithm]\nname = "asha"\nmax_resource = 0\n'
                   '[space]\nlr = { type = "uniform", low = 0.1, high = 0.2 }\n')
    assert run_main([str(bad)]) == 2
    assert "algorithm.max_resource must be >= 1" in capsys.readouterr().err
    assert run_main([str(tmp_path / "missing.toml")]) == 2
    assert run_main([str(EXAMPLE), "--set", "study.trials=0"]) == 2
    assert "study.trials must be >= 1" in capsys.readouterr().err


def test_hpo_study_trainer_checkpoint_resumes_identically(tmp_path: Path) -> None:
    data = load_digits_split(0.25, seed=0)
    for model in ("mlp", "cnn"):
        cfg = {"model": model, "lr": 3e-3, "seed": 1, "batch_size": 64, "dropout": 0.1}
        straight = DigitsTrainer(cfg, device="cpu", data=data)
        ref = [straight.step() for _ in range(4)]
        first = DigitsTrainer(cfg, device="cpu", data=data)
        first.step(), first.step()
        first.save(tmp_path)
        resumed = DigitsTrainer(cfg, device="cpu", data=data)
        resumed.load(tmp_path)
        assert resumed.epoch == 2
        got = [resumed.step() for _ in range(2)]
        assert [g["epoch"] for g in got] == [3, 4]
        for g, r in zip(got, ref[2:], strict=True):
            assert g["val_loss"] == pytest.approx(r["val_loss"], rel=1e-5)
        assert ref[-1]["val_loss"] < ref[0]["val_loss"]


def test_hpo_study_trainer_split_and_validation() -> None:
    d = load_digits_split(0.25, seed=0)
    assert d.x_train.shape[1] == 64 and d.x_val.shape[0] == 450
    assert torch.allclose(d.x_train.mean(dim=0), torch.zeros(64), atol=1e-5)
    assert set(d.y_val.tolist()) == set(range(10))
    with pytest.raises(ValueError, match="model must be one of"):
        resolve_config({"model": "rnn"})
    with pytest.raises(ValueError, match="unknown keys"):
        resolve_config({"learning_rate": 0.1})
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        resolve_config({"batch_size": 0})
    trainer = DigitsTrainer({"seed": 0}, device="cpu", data=d)
    state = trainer.state_dict()
    state["version"] = 99
    with pytest.raises(ValueError, match="checkpoint version must be 1"):
        trainer.load_state_dict(state)


def test_hpo_study_config_add_run_parser_wires_into_a_cli(tmp_path: Path, capsys: Any) -> None:
    import argparse

    from hpo_node.study import add_run_parser, run_args

    parser = argparse.ArgumentParser(prog="hpo-node")
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_parser(sub)
    args = parser.parse_args(["run", str(EXAMPLE), "--gateway", "10.0.0.1:50051",
                              "--ray-address", "auto", "--set", "study.seed=2", "--resume"])
    assert args.command == "run" and args.config == EXAMPLE
    assert args.gateway == "10.0.0.1:50051" and args.ray_address == "auto" and args.resume
    bad = parser.parse_args(["run", str(EXAMPLE), "--set", "algorithm.name=bohb"])
    assert run_args(bad) == 2
    assert "algorithm.name must be one of" in capsys.readouterr().err


def test_hpo_study_config_gateway_connection_keys(monkeypatch: Any) -> None:
    monkeypatch.setenv("QHPO_TOKEN", "a-token")  # an unset token_env is refused
    cfg = load_study(EXAMPLE, {"gateway.address": "gw:50051", "gateway.token_env": "QHPO_TOKEN",
                               "gateway.tls_ca": "ca.pem"})
    assert cfg.gateway_connection == {"token_env": "QHPO_TOKEN", "tls_ca": "ca.pem"}
    with pytest.raises(ValueError, match="token"):
        load_study(EXAMPLE, {"gateway.token": "secret-on-disk"})


def _user_study(folder: Path, module: str, body: str, **trainable: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(body)
    toml = folder / "study.toml"
    consts = "".join(f"{k} = {v!r}\n" for k, v in trainable.items()).replace("'", '"')
    toml.write_text(
        '[study]\nname = "user"\ntrials = 9\n'
        '[algorithm]\nname = "asha"\nmax_resource = 9\n'
        f'[trainable]\nfunction = "{module}:train"\n{consts}'
        '[space]\nmy_rate = { type = "loguniform", low = 1e-3, high = 1.0 }\n'
        'kernel = { type = "choice", values = ["rbf", "poly"] }\n'
    )
    return toml


def test_hpo_study_config_user_function_is_found_beside_the_toml(tmp_path: Path) -> None:
    from hpo_node.trainables import code_folder

    toml = _user_study(tmp_path / "mine", "a1_user_trainable", "def train(config):\n    return 1\n",
                       scale=2.5, label="x")
    cfg = load_study(toml)
    assert cfg.function == "a1_user_trainable:train"
    assert cfg.trainable_callable.__module__ == "a1_user_trainable"
    assert cfg.trainable == {"scale": 2.5, "label": "x"}
    assert set(param_space(cfg)) == {"scale", "label", "my_rate", "kernel", "max_epochs"}
    assert code_folder(cfg.trainable_callable) == (tmp_path / "mine").resolve()
    # the digits trainable is installed: nothing to ship
    assert code_folder(load_study(EXAMPLE).trainable_callable) is None


def test_hpo_study_config_same_module_name_in_two_folders(tmp_path: Path) -> None:
    one = load_study(_user_study(tmp_path / "one", "a1_twin", "def train(config):\n    return 1\n"))
    two = load_study(_user_study(tmp_path / "two", "a1_twin", "def train(config):\n    return 2\n"))
    assert one.trainable_callable({}) == 1 and two.trainable_callable({}) == 2


@pytest.mark.parametrize(
    ("function", "match"),
    [
        ("no_colon", r"trainable.function must be 'module:callable'"),
        ("a1_absent_module:train", r"trainable.function: module 'a1_absent_module' not found"),
        ("a1_user_bad:missing", r"trainable.function: 'a1_user_bad' has no attribute 'missing'"),
        ("a1_user_bad:VALUE", r"trainable.function: 'a1_user_bad:VALUE' must name a callable"),
        ("a1_user_needs:train", r"trainable.function: importing 'a1_user_needs' failed: No "
                                r"module named 'a1_not_installed'"),
    ],
)
def test_hpo_study_config_user_function_errors_name_the_key(tmp_path: Path, function: str,
                                                            match: str) -> None:
    (tmp_path / "a1_user_bad.py").write_text("VALUE = 3\n")
    (tmp_path / "a1_user_needs.py").write_text("import a1_not_installed\n")
    doc = _doc(trainable={"function": function}, space={"anything": {"type": "uniform", "low": 0,
                                                                     "high": 1}})
    with pytest.raises(ValueError, match=match):
        study_from_dict(doc, tmp_path)


def test_hpo_study_config_misspelled_trainable_key_suggests_function() -> None:
    """A typo of ``function`` is not checked against the digits model's keys alone: the message
    lists ``function``, suggests it, and says that a user's trainable takes any keys."""
    with pytest.raises(ValueError) as info:
        study_from_dict(_doc(trainable={"functon": "mlp:train"}))
    msg = str(info.value)
    assert msg.startswith("[trainable] has unknown keys ['functon'] (did you mean 'function'?); "
                          "known: ['activation', ")
    assert "'function', " in msg.partition("known: ")[2]
    assert msg.endswith("as no trainable.function names your own trainable, function = "
                        '"module:callable", whose [trainable] and [space] may hold any keys)')
    # several unknown keys: each close match for its key
    with pytest.raises(ValueError, match=r"\(did you mean 'dropout' for 'droput', 'hidden' for "
                                         r"'hiden'\?\)"):
        study_from_dict(_doc(trainable={"droput": 0.1, "hiden": 32}))


def test_hpo_study_config_trainable_from_code(tmp_path: Path) -> None:
    def train(config: dict[str, Any]) -> None:
        return None

    doc = _doc(space={"anything": {"type": "uniform", "low": 0, "high": 1}})
    cfg = study_from_dict(doc, trainable=train)
    assert cfg.trainable_callable is train and set(cfg.space) == {"anything"}
    # the callable replaces the TOML's function (which is then not even imported)
    over = study_from_dict(_doc(trainable={"function": "a1_absent:f"}, space=doc["space"]),
                           trainable=train)
    assert over.trainable_callable is train and over.function is None and over.trainable == {}
    # without a user trainable, the digits keys are still checked
    with pytest.raises(ValueError, match=r"\[space\] has unknown keys \['anything'\]"):
        study_from_dict(doc)


def _swift(**over: Any) -> dict[str, Any]:
    doc = _doc(algorithm={"name": "swift-asha", "max_resource": 9, "eta": 3},
               predictor={"kind": "svr"})
    for dotted, value in over.items():
        section, key = dotted.split("__")
        doc[section][key] = value
    return doc


def test_hpo_study_config_swift_d_adapted_to_a_small_study() -> None:
    # the published rule's per-rung predictors: 6 trials reach rung 3 at most; d = 15
    cfg = study_from_dict(_swift(study__trials=18, algorithm__params={"rule": "paper"}))
    assert cfg.algorithm_params == {"rule": "paper", "d": 3}
    (note,) = cfg.notes
    assert note.startswith("note: swift-asha with 18 configurations") and "d adapted to 3" in note
    hb = _swift(algorithm__name="swift-hyperband")
    del hb["study"]["trials"]
    cfg = study_from_dict(hb)
    assert cfg.algorithm_params == {"d": 5} and "at most 11 trials reach a rung" in cfg.notes[0]
    # large enough: nothing said, nothing changed
    big = study_from_dict(_swift(study__trials=81, algorithm__params={"rule": "paper", "d": 6}))
    assert big.notes == () and big.algorithm_params == {"rule": "paper", "d": 6}
    # the default rule (the champion gate's curve fits) has no per-rung predictor: no d rule
    gate = study_from_dict(_swift(study__trials=18))
    assert gate.notes == () and gate.algorithm_params == {}


def test_hpo_study_config_swift_d_set_by_the_user_is_kept_with_a_warning() -> None:
    cfg = study_from_dict(_swift(study__trials=18, algorithm__params={"rule": "paper", "d": 7}))
    assert cfg.algorithm_params == {"rule": "paper", "d": 7}
    assert cfg.notes == (
        "warning: swift-asha with 18 configurations, R = 9, eta = 3: at most 6 trials reach a "
        "rung, so with d = 7 no trial would ever get a prediction; the study runs as plain asha: "
        "lower algorithm.params.d below 6, or give more study.trials (at least 24 for d = 7)",
    )
    tiny = study_from_dict(_swift(study__trials=6, algorithm__params={"rule": "paper"}))
    assert tiny.algorithm_params == {"rule": "paper"} and tiny.notes[-1].endswith(
        "give more study.trials (at least 9 for any prediction)")
    assert tiny.notes[0].startswith("warning: study.trials = 6 is fewer than the 9 that swift-asha needs")
    # d set by the user is kept: the trials for a prediction are those that d needs
    kept = study_from_dict(_swift(study__trials=6, algorithm__params={"rule": "paper", "d": 12}))
    assert kept.notes[-1].endswith("give more study.trials (at least 39 for d = 12)")


def test_hpo_study_config_hyperband_trials_refused_with_the_numbers() -> None:
    with pytest.raises(ValueError, match=r"study.trials must be omitted for hyperband: its "
                       r"brackets \(R = 9, eta = 3\) sample 17 configurations; got 9, fewer "
                       r"than the 17 its brackets need"):
        study_from_dict(_doc(algorithm__name="hyperband"))


def test_hpo_study_config_unreachable_gateway_is_one_line(tmp_path: Path, capsys: Any,
                                                          monkeypatch: Any) -> None:
    import hpo_node.study.run as run_mod
    from tests.conftest import free_port

    monkeypatch.setattr(run_mod, "GATEWAY_WAIT_S", 1.0)
    toml = tmp_path / "s.toml"
    toml.write_text(f'[study]\nname = "s"\ntrials = 27\noutput_dir = "{tmp_path}"\n'
                    '[algorithm]\nname = "swift-asha"\nmax_resource = 9\n'
                    'params = { rule = "paper" }\n'
                    '[space]\nlr = { type = "loguniform", low = 1e-4, high = 1e-1 }\n')
    address = f"127.0.0.1:{free_port()}"
    assert run_main([str(toml), "--gateway", address]) == 2
    err = capsys.readouterr().err
    assert err == (f"hpo-node run: error: cannot reach the qpu-gateway at {address}: not SERVING "
                   "after 1 s. Start it (qpu-gateway serve), fix the address, or leave out "
                   "--gateway to let hpo-node start its own\n")


def test_hpo_study_config_unreachable_gateway_from_python_names_the_setting(
        tmp_path: Path, monkeypatch: Any) -> None:
    """From Python the fix names the ``gateway=`` argument; a TOML ``gateway.address`` its key."""
    import hpo_node.study.run as run_mod
    from hpo_node.study import optimize
    from tests.conftest import free_port

    monkeypatch.setattr(run_mod, "GATEWAY_WAIT_S", 1.0)
    doc = _doc(study__output_dir=str(tmp_path), algorithm__name="swift-asha",
               algorithm__params={"rule": "paper"}, study__trials=27)
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match=r"fix the address, or leave out gateway= to let "
                                              r"hpo-node start its own$"):
        optimize(None, doc, gateway=address, overrides={"study.name": "a"})
    with pytest.raises(ConnectionError, match=r"fix the address, or set gateway.address = "
                                              r'"auto" to let hpo-node start its own$'):
        optimize(None, doc, overrides={"gateway.address": address, "study.name": "b"})


def test_hpo_study_config_swift_asha_default_gate_needs_no_gateway() -> None:
    """The default rule's curve fits call no predictor: no gateway to start or reach."""
    cfg = study_from_dict(_doc(algorithm__name="swift-asha", gateway__address="none"))
    assert not cfg.uses_predictor and not cfg.needs_gateway
    for params in ({"rule": "paper"}, {"rule": "forecast"}, {"forecaster": "predictor"}):
        paper = study_from_dict(_doc(algorithm__name="swift-asha", algorithm__params=params))
        assert paper.uses_predictor and paper.needs_gateway


def test_hpo_study_config_space_entry_without_type_says_it_is_missing() -> None:
    from hpo_node.space import Space

    missing = r"space\.lr\.type is missing: it must be one of 'loguniform', 'uniform'"
    with pytest.raises(ValueError, match=missing):
        Space.parse({"lr": {"low": 0.0, "high": 1.0}})
