"""The one registry of algorithms: name -> builder, needs a predictor, trials needed.

The replay (:func:`make_driver`, ``hpo-node simulate/compare``), the Ray Tune adapter
(:func:`hpo_node.integrations.ray_tune.make_core`) and the study (``[algorithm] name``) all read
:data:`REGISTRY`; adding an algorithm is one :class:`Algorithm` entry here. ``ray`` marks the
algorithms that are :class:`hpo_node.core.Scheduler` cores a Ray Tune study can run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hpo_node.asha import ASHA, SwiftASHA, swift_asha_calls_predictor, swift_asha_on_predictor
from hpo_node.core import bracket_cost, check_choice, check_int, hyperband_brackets
from hpo_node.hyperband import (
    Hyperband,
    OneEpoch,
    RandomSearch,
    SuccessiveHalving,
    SwiftHyperband,
)
from hpo_node.peers import OPTUNA_PEERS, OptunaPeer
from hpo_node.predictors import CurveFeatures, Predictor, make_predictor_factory
from hpo_node.replay import Driver

PredictorFactory = Callable[[], Predictor]


@dataclass(frozen=True)
class BuildArgs:
    """What a builder gets: ``n_trials`` (``None``: the algorithm's own default or, for ASHA, no
    limit), ``predictor`` a factory when the algorithm needs one, ``options`` the constructor
    options of ``[algorithm] params``."""

    name: str
    max_resource: int
    eta: int
    n_trials: int | None
    seed: int | None
    predictor: PredictorFactory | None
    options: dict[str, Any]


def _hyperband_trials(max_resource: int, eta: int) -> int:
    return sum(b[0][0] for _, b in hyperband_brackets(max_resource, eta))


@dataclass(frozen=True)
class Algorithm:
    """One registry entry.

    ``build``: the scheduler (or Optuna peer) from :class:`BuildArgs`; ``needs_predictor``: takes
    a final-loss predictor factory (the Swift variants); ``fixed_trials``: generates its own
    number of configurations (Hyperband's brackets), so a study must not set ``trials``;
    ``default_trials(max_resource, eta)``: configurations used unless told otherwise; ``ray``:
    a core that :mod:`hpo_node.integrations.ray_tune` can run; ``calls_predictor(options)``:
    whether the scheduler built with ``options`` calls its predictor (default: when it takes one);
    ``on_predictor(options)``: the options that put every decision on the predictor (default:
    ``options``; an oracle predictor then gives the rule's ceiling); ``core``: the scheduler
    class ``build`` makes (its constructor's arguments are the valid ``options``).
    """

    name: str
    build: Callable[[BuildArgs], Driver]
    needs_predictor: bool = False
    fixed_trials: bool = False
    default_trials: Callable[[int, int], int] = _hyperband_trials
    ray: bool = False
    calls_predictor: Callable[[Mapping[str, Any]], bool] | None = None
    on_predictor: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    core: type | None = None

    def uses_predictor(self, options: Mapping[str, Any] | None = None) -> bool:
        """Whether the scheduler built with ``options`` calls a predictor (a study then starts
        or reaches its gateway)."""
        if not self.needs_predictor:
            return False
        return True if self.calls_predictor is None else self.calls_predictor(dict(options or {}))

    def predictor_options(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``options`` with every decision on the predictor (``on_predictor``), e.g. for the
        ceiling of a rule with an oracle predictor."""
        opts = dict(options or {})
        return opts if self.on_predictor is None else self.on_predictor(opts)

    def trials_needed(self, max_resource: int, eta: int, n_trials: int | None = None) -> int:
        """Configurations a run generates: the fixed number, ``n_trials``, or the default."""
        check_int("max_resource", max_resource, 1)
        check_int("eta", eta, 2)
        if self.fixed_trials or n_trials is None:
            return self.default_trials(max_resource, eta)
        return check_int("n_trials", n_trials, 1)


def _random_trials(max_resource: int, eta: int) -> int:
    epochs = sum(bracket_cost(b) for _, b in hyperband_brackets(max_resource, eta))
    return max(1, epochs // max_resource)


def _sha_trials(max_resource: int, eta: int) -> int:
    return eta ** (hyperband_brackets(max_resource, eta)[0][0] + 1)


def _peer(a: BuildArgs) -> Driver:
    return OptunaPeer(a.name, a.max_resource, a.eta, a.n_trials, seed=a.seed or 0, **a.options)


_ENTRIES = (
    Algorithm("random", lambda a: RandomSearch(a.max_resource, a.n_trials),
              default_trials=_random_trials),
    Algorithm("sha", lambda a: SuccessiveHalving(a.max_resource, a.eta, a.n_trials, **a.options),
              default_trials=_sha_trials),
    Algorithm("hyperband", lambda a: Hyperband(a.max_resource, a.eta, **a.options),
              fixed_trials=True, ray=True, core=Hyperband),
    Algorithm("asha", lambda a: ASHA(a.max_resource, a.eta, a.n_trials, **a.options), ray=True,
              core=ASHA),
    Algorithm("asha-stopping",
              lambda a: ASHA(a.max_resource, a.eta, a.n_trials, mode="stopping", **a.options)),
    Algorithm("swift-hyperband",
              lambda a: SwiftHyperband(a.max_resource, a.eta, a.predictor, seed=a.seed,
                                       **a.options),
              needs_predictor=True, fixed_trials=True, ray=True, core=SwiftHyperband),
    Algorithm("swift-asha",
              lambda a: SwiftASHA(a.max_resource, a.eta, a.n_trials, a.predictor, seed=a.seed,
                                  **a.options),
              needs_predictor=True, ray=True, calls_predictor=swift_asha_calls_predictor,
              on_predictor=swift_asha_on_predictor, core=SwiftASHA),
    Algorithm("one-epoch",
              lambda a: OneEpoch(a.max_resource, a.eta, a.n_trials, **a.options)),
    *(Algorithm(name, _peer) for name in OPTUNA_PEERS),
)
REGISTRY: dict[str, Algorithm] = {a.name: a for a in _ENTRIES}
ALGORITHMS = tuple(REGISTRY)
RAY_ALGORITHMS = tuple(name for name, a in REGISTRY.items() if a.ray)


def get_algorithm(name: str, *, ray: bool = False, key: str = "algorithm") -> Algorithm:
    """The registry entry ``name`` (``ray``: among :data:`RAY_ALGORITHMS` only); ``ValueError``
    naming ``key`` otherwise."""
    check_choice(key, name, RAY_ALGORITHMS if ray else ALGORITHMS)
    return REGISTRY[name]


def default_n_trials(name: str, max_resource: int, eta: int) -> int:
    """Configurations a run consumes unless told otherwise.

    ``hyperband`` and ``swift-hyperband`` fix their own; ``asha`` variants and the Optuna peers use
    as many configurations as Hyperband samples (163 for R = 100, eta = 2); ``random`` gets
    Hyperband's epoch budget, ``floor(hyperband epochs / R)`` full trainings; ``sha`` the smallest
    ``n`` its bracket accepts times ``eta``.
    """
    return get_algorithm(name).default_trials(max_resource, eta)


def build(
    name: str,
    *,
    max_resource: int,
    eta: int,
    n_trials: int | None = None,
    predictor: PredictorFactory | None = None,
    seed: int | None = None,
    options: Mapping[str, Any] | None = None,
    ray: bool = False,
) -> Driver:
    """A fresh scheduler ``name`` (``options`` go to its constructor); ``predictor`` is the
    factory an algorithm with ``needs_predictor`` takes (its constructor says when it is
    required: Swift-ASHA's default gate calls none); ``ray``: only the Ray Tune cores."""
    algo = get_algorithm(name, ray=ray)
    check_int("max_resource", max_resource, 1)
    check_int("eta", eta, 2)
    return algo.build(BuildArgs(name, max_resource, eta, n_trials, seed,
                                predictor if algo.needs_predictor else None, dict(options or {})))


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
    """Build a fresh scheduler (or Optuna peer) ``name`` for the replay; ``predictor`` names the
    predictor kind of the Swift variants (:func:`hpo_node.predictors.make_predictor_factory`)."""
    algo = get_algorithm(name)
    factory = None
    if algo.needs_predictor:
        factory = make_predictor_factory(
            predictor, features=features, gateway=gateway, **(predictor_params or {})
        )
    n = algo.trials_needed(max_resource, eta, n_trials)
    return build(name, max_resource=max_resource, eta=eta, n_trials=n, predictor=factory,
                 seed=seed, options=options)
