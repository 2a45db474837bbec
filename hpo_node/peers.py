"""Optuna's pruners as replay peers: ``optuna-sha`` and ``optuna-hyperband``.

Each trial is an Optuna trial (``study.ask()``) that trains towards R, calls ``trial.report(loss,
epoch)`` after every epoch and stops when ``trial.should_prune()`` says so; a trial reaching R is
told its final loss. Pruner settings mirror ours: ``SuccessiveHalvingPruner(min_resource=1,
reduction_factor=eta)`` and ``HyperbandPruner(min_resource=1, max_resource=R,
reduction_factor=eta)``. These peers are not resumable (no ``state_dict``): Optuna keeps its own
study storage.

``sampler="tpe"`` makes the peer Optuna's ``TPESampler`` (seeded, default settings) with its pruner,
e.g. ``TPESampler + HyperbandPruner`` (BOHB-like, as Optuna recommends pairing them). Rows are then
chosen by :meth:`OptunaPeer.row_selector`, passed to the replay as its ``searcher``: each new
trial's parameters are suggested by Optuna (``trial.suggest_float`` / ``suggest_int`` /
``suggest_categorical`` on the table's :class:`hpo_node.search.SearchSpace`, so inside Optuna's
own bracket of the Hyperband pruner), and the replayed curve is that of the unused row nearest to
the suggestion in the space's normalised encoding (:meth:`SearchSpace.distance`). The Optuna trial
keeps the suggested values: Optuna models a nearest-neighbour surrogate of the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from hpo_node.core import Decision, Job, check_choice, check_int
from hpo_node.search import Categorical, Config, FloatArray, Int, Searcher, SearchSpace

OPTUNA_PEERS = ("optuna-sha", "optuna-hyperband")
OPTUNA_SAMPLERS = ("random", "tpe")


class OptunaPeer:
    """Drives an Optuna pruner through ``trial.report`` / ``should_prune`` in the replay."""

    def __init__(
        self,
        name: str,
        max_resource: int,
        eta: int,
        n_trials: int,
        seed: int = 0,
        sampler: str = "random",
    ) -> None:
        import optuna

        self.name = check_choice("name", name, OPTUNA_PEERS)
        self.sampler = check_choice("sampler", sampler, OPTUNA_SAMPLERS)
        self.seed = check_int("seed", seed, 0)
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
                sampler=(
                    optuna.samplers.RandomSampler(seed=seed)
                    if self.sampler == "random"
                    else optuna.samplers.TPESampler(seed=seed)
                ),
            )
        finally:
            optuna.logging.set_verbosity(level)
        self._pending: list[str] = []
        self._trials: dict[str, Any] = {}
        self._last: Any = None

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
        self._trials[tid] = self._last = self._study.ask()
        return Job(tid, self.max_resource, resume=False)

    def row_selector(self, space: SearchSpace) -> OptunaRowSelector:
        """The replay ``searcher`` that lets this peer's sampler choose the rows (see the module
        doc); rows are chosen right after :meth:`next_job` started the trial."""
        return OptunaRowSelector(space, self)

    def suggest_config(self, space: SearchSpace) -> Config:
        """Parameters of the trial started last, suggested by the peer's sampler."""
        trial = self._last
        if trial is None:
            raise RuntimeError("no Optuna trial was started: call next_job before choosing a row")
        out: Config = {}
        for name, p in space.params.items():
            if isinstance(p, Categorical):
                out[name] = trial.suggest_categorical(name, list(p.choices))
            elif isinstance(p, Int):
                out[name] = trial.suggest_int(name, int(p.low), int(p.high), log=p.log)
            else:
                out[name] = trial.suggest_float(name, p.low, p.high, log=p.log)
        self._last = None
        return out

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


class OptunaRowSelector(Searcher):
    """Replay searcher for an :class:`OptunaPeer`: the row nearest to the peer's suggestion.

    Only :meth:`select` is meaningful; observations and pending marks are kept as by any
    searcher but unused (Optuna learns from the peer's reports).
    """

    name: ClassVar[str] = "optuna-tpe"

    def __init__(self, space: SearchSpace, peer: OptunaPeer) -> None:
        if not isinstance(peer, OptunaPeer):
            raise TypeError(f"peer must be an OptunaPeer, got {type(peer).__name__}")
        super().__init__(space, seed=peer.seed)
        self.peer = peer

    def select(self, candidates: Sequence[Mapping[str, Any]]) -> int:
        if len(candidates) == 0:
            raise ValueError("candidates must hold at least 1 configuration, got 0")
        configs = [dict(c) for c in candidates]
        u = self.space.encode(configs)
        v = self.space.encode([self.peer.suggest_config(self.space)])[0]
        i = self._best(-self.space.distance(u, v), configs)
        if i is None:
            raise RuntimeError(f"{self.name}: every one of the {len(configs)} candidates is pending")
        self._mark(configs[i])
        return i

    def suggest(self) -> Config:
        raise NotImplementedError("OptunaRowSelector only chooses among candidates (select)")

    def _score(self, data: tuple[FloatArray, FloatArray], u: FloatArray) -> FloatArray:
        return np.zeros(len(u))
