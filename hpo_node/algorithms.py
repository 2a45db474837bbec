"""Algorithms by name, for the command line and the benchmarks."""

from __future__ import annotations

from typing import Any

from hpo_node.asha import ASHA, SwiftASHA
from hpo_node.core import bracket_cost, check_choice, check_int, hyperband_brackets
from hpo_node.hyperband import Hyperband, RandomSearch, SuccessiveHalving, SwiftHyperband
from hpo_node.peers import OPTUNA_PEERS, OptunaPeer
from hpo_node.predictors import CurveFeatures, make_predictor_factory
from hpo_node.replay import Driver

ALGORITHMS = (
    "random",
    "sha",
    "hyperband",
    "asha",
    "asha-stopping",
    "swift-hyperband",
    "swift-asha",
    *OPTUNA_PEERS,
)


def default_n_trials(name: str, max_resource: int, eta: int) -> int:
    """Configurations a run consumes unless told otherwise.

    ``hyperband`` and ``swift-hyperband`` fix their own; ``asha`` variants and the Optuna peers use
    as many configurations as Hyperband samples (163 for R = 100, eta = 2); ``random`` gets
    Hyperband's epoch budget, ``floor(hyperband epochs / R)`` full trainings; ``sha`` the smallest
    ``n`` its bracket accepts times ``eta``.
    """
    brackets = hyperband_brackets(max_resource, eta)
    if name == "random":
        return max(1, sum(bracket_cost(b) for _, b in brackets) // max_resource)
    if name == "sha":
        return eta ** (brackets[0][0] + 1)
    return sum(b[0][0] for _, b in brackets)


def make_driver(
    name: str,
    *,
    max_resource: int,
    eta: int,
    seed: int = 0,
    n_trials: int | None = None,
    predictor: str = "svr",
    gateway: str | None = None,
    features: CurveFeatures | None = None,
    predictor_params: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
) -> Driver:
    """Build a fresh scheduler (or Optuna peer) ``name``; ``options`` go to its constructor."""
    check_choice("algorithm", name, ALGORITHMS)
    check_int("max_resource", max_resource, 1)
    check_int("eta", eta, 2)
    n = default_n_trials(name, max_resource, eta) if n_trials is None else n_trials
    opts = dict(options or {})
    if name in OPTUNA_PEERS:
        return OptunaPeer(name, max_resource, eta, n, seed=seed, **opts)
    if name == "random":
        return RandomSearch(max_resource, n)
    if name == "sha":
        return SuccessiveHalving(max_resource, eta, n, **opts)
    if name == "hyperband":
        return Hyperband(max_resource, eta, **opts)
    if name == "asha":
        return ASHA(max_resource, eta, n, **opts)
    if name == "asha-stopping":
        return ASHA(max_resource, eta, n, mode="stopping", **opts)
    factory = make_predictor_factory(
        predictor, features=features, gateway=gateway, **(predictor_params or {})
    )
    if name == "swift-hyperband":
        return SwiftHyperband(max_resource, eta, factory, seed=seed, **opts)
    return SwiftASHA(max_resource, eta, n, factory, seed=seed, **opts)
