"""SwiftPruner on real Optuna studies: torch digits trainers, predictions from the real gateway."""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
import pytest

from hpo_node.integrations.optuna_pruner import SwiftPruner
from hpo_node.predictors import SVRPredictor
from hpo_node.trainables import DigitsTrainer, load_digits_split

R, ETA = 9, 3


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_digits_split(0.25, seed=0)


def _objective(data: Any, epochs_log: list[int]) -> Any:
    def objective(trial: optuna.Trial) -> float:
        cfg = {
            "model": "mlp",
            "hidden": 32,
            "lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
            "batch_size": trial.suggest_int("batch_size", 32, 128, step=32),
            "seed": trial.number,
        }
        trainer = DigitsTrainer(cfg, device="cpu", data=data)
        loss = float("inf")
        for epoch in range(1, R + 1):
            loss = trainer.step()["val_loss"]
            epochs_log.append(trial.number)
            trial.report(loss, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return loss

    return objective


def _study(pruner: SwiftPruner, seed: int = 0) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        direction="minimize", pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=seed)
    )


def test_hpo_optuna_pruner_swift_prunes_with_gateway(gateway_address: str, digits: Any) -> None:
    pruner = SwiftPruner.with_gateway(
        gateway_address, R, ETA, d=3, seed=0, predictor_params={"num_reads": 100}
    )
    assert pruner.rungs == [1, 3, 9]
    assert pruner.decision_points() == {2: 3, 6: 9}
    epochs: list[int] = []
    study = _study(pruner)
    study.optimize(_objective(digits, epochs), n_trials=30)
    pruner.close()
    reasons = pruner.pruned_reasons()
    states = {t.number: t.state for t in study.trials}
    assert pruner.log is not None
    counts = pruner.log.counters()
    assert counts["fits_ok"] >= 1 and counts["decisions_with_prediction"] >= 1
    assert counts["decisions_without_prediction"] == 0
    by_prediction = [k for k, v in reasons.items() if v == "prediction"]
    assert by_prediction, "no trial was pruned by a prediction"
    for key in by_prediction:
        number = int(key.rsplit(":", 1)[1])
        assert states[number] == optuna.trial.TrialState.PRUNED
        r_to, mean, _ = pruner.predictions[key]
        trial = study.trials[number]
        # pruned at the decision point, before the rung it was predicted for
        assert max(trial.intermediate_values) < r_to
        assert np.isfinite(mean)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and all(len(t.intermediate_values) == R for t in complete)
    assert len(epochs) == sum(len(t.intermediate_values) for t in study.trials)


def test_hpo_optuna_pruner_rung_rule_is_asha_stopping(digits: Any) -> None:
    """With a predictor that never has enough curves (d too large) the pruner is ASHA-stopping."""
    pruner = SwiftPruner(R, ETA, lambda: SVRPredictor(), d=1000)
    study = _study(pruner, seed=1)
    study.optimize(_objective(digits, []), n_trials=12)
    losses_at: dict[int, list[float]] = {r: [] for r in pruner.rungs}
    for t in sorted(study.trials, key=lambda t: t.number):
        for r in pruner.rungs:
            if r in t.intermediate_values:
                loss = t.intermediate_values[r]
                losses_at[r].append(loss)
                cut = float(np.quantile(losses_at[r], 1 / ETA))
                pruned_here = (
                    t.state == optuna.trial.TrialState.PRUNED and max(t.intermediate_values) == r
                )
                assert pruned_here == (loss > cut and r < R), (t.number, r)
    assert set(pruner.pruned_reasons().values()) <= {"rung"}
    assert pruner.predictor_calls() == {"fit": 0, "predict": 0}


def test_hpo_optuna_pruner_requires_a_predictor() -> None:
    with pytest.raises(TypeError, match="predictor"):
        SwiftPruner(R, ETA, None)
    with pytest.raises(ValueError, match="known_curve"):
        SwiftPruner(R, ETA, lambda: SVRPredictor(), known_curve=0.0)


def _closed_port_address() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


def _synthetic_objective(first_step: int = 1, every: int = 1) -> Any:
    """Curves ``a / epoch + b`` (fast), reported every ``every`` epochs at step
    ``epoch - 1 + first_step``."""

    def objective(trial: optuna.Trial) -> float:
        a = trial.suggest_float("a", 0.1, 1.0)
        b = trial.suggest_float("b", 0.0, 1.0)
        loss = float("inf")
        for epoch in range(1, R + 1):
            loss = a / epoch + b
            if epoch % every == 0:
                trial.report(loss, epoch - 1 + first_step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        return loss

    return objective


def test_hpo_optuna_pruner_guards_a_raw_gateway_factory() -> None:
    """A user's own ``lambda: GatewayPredictor(...)`` to a dead gateway: the study runs as
    ASHA-stopping, and the pruner's log counts the decisions made without prediction."""
    from hpo_node.predictors import GatewayPredictor

    address = _closed_port_address()
    pruner = SwiftPruner(R, ETA, lambda: GatewayPredictor(address, timeout=0.5), d=2,
                         refit_every=100)
    study = _study(pruner, seed=2)
    study.optimize(_synthetic_objective(), n_trials=12)
    assert pruner.log is not None
    counts = pruner.log.counters()
    assert counts["outages"] >= 1 and counts["decisions_without_prediction"] >= 1
    assert counts["decisions_with_prediction"] == 0
    assert "prediction" not in pruner.pruned_reasons().values()
    assert any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def _outcome(first_step: int, every: int, d: int = 3) -> tuple[list[Any], dict[str, str], int]:
    pruner = SwiftPruner(R, ETA, lambda: SVRPredictor(), d=d, seed=0)
    study = _study(pruner, seed=3)
    study.optimize(_synthetic_objective(first_step, every), n_trials=20)
    reasons = {k.rsplit(":", 1)[1]: v for k, v in pruner.pruned_reasons().items()}
    return [t.state for t in study.trials], reasons, pruner.predictor_calls()["predict"]


def test_hpo_optuna_pruner_steps_from_zero_decide_as_steps_from_one() -> None:
    states_1, reasons_1, predicts_1 = _outcome(first_step=1, every=1)
    states_0, reasons_0, predicts_0 = _outcome(first_step=0, every=1)
    assert "prediction" in reasons_1.values() and "rung" in reasons_1.values()
    assert (states_0, reasons_0, predicts_0) == (states_1, reasons_1, predicts_1)


@pytest.mark.parametrize("first_step", [0, 1])
def test_hpo_optuna_pruner_reports_every_k_epochs(first_step: int) -> None:
    """Reports at epochs 3, 6, 9: each rung is judged by the first value at or after it."""
    pruner = SwiftPruner(R, ETA, lambda: SVRPredictor(), d=1000)
    study = _study(pruner, seed=3)
    study.optimize(_synthetic_objective(first_step, every=3), n_trials=20)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert pruned and complete
    assert set(pruner.pruned_reasons().values()) == {"rung"}
    # a trial pruned at its first report (epoch 3) was judged at rungs 1 and 3 by that value
    assert all(len(t.intermediate_values) in (1, 2) for t in pruned)
    assert all(len(t.intermediate_values) == 3 for t in complete)



def test_hpo_optuna_pruner_predictions_are_in_the_units_of_a_maximized_study() -> None:
    """In a ``direction="maximize"`` study the pruner works on the negated values; the
    predictions it reports are the accuracies themselves (they had the sign flipped)."""
    from hpo_node.synthetic import synthetic_table

    curves = np.asarray(synthetic_table(60, 9, 3).curves)
    pruner = SwiftPruner(9, 3, lambda: SVRPredictor(), d=3, seed=0)

    def objective(trial: optuna.Trial) -> float:
        row = curves[trial.suggest_int("row", 0, 59)]
        for epoch in range(1, 10):
            trial.report(1.0 - row[epoch - 1], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return 1.0 - row[8]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=pruner,
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=40)
    assert pruner.predictions
    for key, (_, mean, _) in pruner.predictions.items():
        last = study.trials[int(key.rsplit(":", 1)[1])].intermediate_values
        reported = last[max(last)]
        assert abs(mean - reported) < abs(mean + reported), (key, mean, reported)
