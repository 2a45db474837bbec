"""Optuna's pruners as replay peers: ``optuna-sha`` and ``optuna-hyperband``.

Each trial is an Optuna trial (``study.ask()``) that trains towards R, calls ``trial.report(loss,
epoch)`` after every epoch and stops when ``trial.should_prune()`` says so; a trial reaching R is
told its final loss. Pruner settings mirror ours: ``SuccessiveHalvingPruner(min_resource=1,
reduction_factor=eta)`` and ``HyperbandPruner(min_resource=1, max_resource=R,
reduction_factor=eta)``. These peers are not resumable (no ``state_dict``): Optuna keeps its own
study storage.
"""

from __future__ import annotations

from typing import Any

from hpo_node.core import Decision, Job, check_choice, check_int

OPTUNA_PEERS = ("optuna-sha", "optuna-hyperband")


class OptunaPeer:
    """Drives an Optuna pruner through ``trial.report`` / ``should_prune`` in the replay."""

    def __init__(
        self, name: str, max_resource: int, eta: int, n_trials: int, seed: int = 0
    ) -> None:
        import optuna

        self.name = check_choice("name", name, OPTUNA_PEERS)
        self.max_resource = check_int("max_resource", max_resource, 1)
        self.eta = check_int("eta", eta, 2)
        self.n_trials = check_int("n_trials", n_trials, 1)
        if name == "optuna-sha":
            pruner: Any = optuna.pruners.SuccessiveHalvingPruner(
                min_resource=1, reduction_factor=self.eta
            )
        else:
            pruner = optuna.pruners.HyperbandPruner(
                min_resource=1, max_resource=self.max_resource, reduction_factor=self.eta
            )
        level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            self._study = optuna.create_study(
                study_name=f"replay-{self.name}-{seed}",
                direction="minimize",
                pruner=pruner,
                sampler=optuna.samplers.RandomSampler(seed=seed),
            )
        finally:
            optuna.logging.set_verbosity(level)
        self._pending: list[str] = []
        self._trials: dict[str, Any] = {}

    def add_trial(self, trial_id: str, hparams: dict[str, float] | None = None) -> None:
        self._pending.append(trial_id)

    def set_hparams(self, trial_id: str, hparams: dict[str, float]) -> None:
        """Optuna draws its own parameters; the table's are not needed."""

    def trials_needed(self) -> int:
        return self.n_trials

    def predictor_calls(self) -> dict[str, int]:
        return {"fit": 0, "predict": 0}

    def close(self) -> None:
        """Nothing to release (the study is in memory)."""

    def next_job(self) -> Job | None:
        if not self._pending:
            return None
        tid = self._pending.pop(0)
        self._trials[tid] = self._study.ask()
        return Job(tid, self.max_resource, resume=False)

    def report(self, trial_id: str, resource: int, loss: float) -> Decision:
        import optuna

        trial = self._trials[trial_id]
        if resource >= self.max_resource:
            self._study.tell(trial, loss)
            return Decision.STOP
        trial.report(loss, resource)
        if trial.should_prune():
            self._study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return Decision.STOP
        return Decision.CONTINUE
