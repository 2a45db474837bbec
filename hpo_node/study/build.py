"""Building a study's parts from its config: Tune's space, the scheduler, the searcher."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from hpo_node.algorithms import REGISTRY, build, get_algorithm
from hpo_node.core import did_you_mean, hyperband_brackets
from hpo_node.study.config import StudyConfig


def param_space(cfg: StudyConfig) -> dict[str, Any]:
    """Ray Tune's ``param_space``: sampled domains, fixed trainable entries, ``max_epochs = R``."""
    return {**cfg.trainable, **cfg.space.tune_domains(), "max_epochs": cfg.max_resource}


def fixed_param_space(cfg: StudyConfig) -> dict[str, Any]:
    """Tune's ``param_space`` with a searcher: the fixed entries only (the searcher suggests the
    ``[space]`` entries)."""
    return {**cfg.trainable, "max_epochs": cfg.max_resource}


def build_searcher(cfg: StudyConfig, scheduler: Any = None) -> Any:
    """The study's :class:`hpo_node.integrations.ray_search.TuneSearcher` (``cfg.searcher`` other than
    ``random``), attached to ``scheduler`` when given."""
    from hpo_node.integrations.ray_search import StudySpace, TuneSearcher
    from hpo_node.search import make_searcher

    space = StudySpace(cfg.space)  # the searchers' view of cfg.space
    try:
        inner = make_searcher(cfg.searcher, space.space, seed=cfg.seed, **cfg.searcher_params)
    except TypeError as exc:
        raise TypeError(
            f"algorithm.searcher_params must be options of the {cfg.searcher!r} searcher, "
            f"got {cfg.searcher_params!r} ({exc})"
        ) from exc
    size = space.space.size
    if cfg.fixed_trials and size is not None:
        largest = max(rounds[0][0] for _, rounds in hyperband_brackets(cfg.max_resource, cfg.eta))
        if size < largest:
            raise ValueError(
                f"space: {size} distinct configurations, fewer than the {largest} that a "
                f"{cfg.algorithm} bracket (R = {cfg.max_resource}, eta = {cfg.eta}) starts with at "
                f"once; searcher {cfg.searcher!r} never proposes a pending configuration twice. "
                "Widen the space, or use asha / swift-asha or searcher = 'random'"
            )
    out = TuneSearcher(inner, space, metric=cfg.metric, mode=cfg.mode, max_trials=n_trials(cfg))
    if scheduler is not None:
        out.attach(scheduler)
    return out


def hparam_encoder(cfg: StudyConfig) -> Callable[[Mapping[str, Any]], dict[str, float]]:
    """Trial config -> numeric hyperparameters for the core (:meth:`hpo_node.space.Space.encode`:
    choices as their index, loguniform as log10)."""
    return cfg.space.encode


def n_trials(cfg: StudyConfig) -> int:
    """Configurations the study generates."""
    return get_algorithm(cfg.algorithm).trials_needed(cfg.max_resource, cfg.eta, cfg.trials)


# What the registry passes to each Ray core's constructor itself (not ``algorithm.params``), and
# the setting that gives it.
_SET_ELSEWHERE = {"max_resource": "algorithm.max_resource", "eta": "algorithm.eta",
                  "n_trials": "study.trials", "predictor": "[predictor]", "seed": "study.seed"}


def _core_class(algorithm: str) -> type:
    """The core scheduler class behind a Ray algorithm of the registry."""
    cores = {name: a.core for name, a in REGISTRY.items() if a.ray and a.core is not None}
    if algorithm not in cores:
        raise ValueError(f"algorithm must be one of {', '.join(map(repr, sorted(cores)))}, got "
                         f"{algorithm!r}")
    return cores[algorithm]


def algorithm_options(algorithm: str) -> tuple[str, ...]:
    """The keys ``algorithm.params`` may hold for a Ray ``algorithm``: its core's constructor
    arguments (from the signature) but those the study sets itself (:data:`_SET_ELSEWHERE`)."""
    params = inspect.signature(_core_class(algorithm)).parameters
    return tuple(sorted(
        name for name, p in params.items()
        if name not in _SET_ELSEWHERE and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ))


def check_algorithm_params(algorithm: str, params: Mapping[str, Any]) -> None:
    """``TypeError`` (as for an unknown keyword argument) naming ``algorithm.params.<key>`` for
    a key that is not an option of the algorithm's core (its close match and the valid keys
    listed, or the setting that gives it)."""
    valid = algorithm_options(algorithm)
    for key in params:
        if key in _SET_ELSEWHERE:
            raise TypeError(f"algorithm.params.{key}: not an option here, "
                             f"{_SET_ELSEWHERE[key]} sets it")
        if key not in valid:
            raise TypeError(f"algorithm.params.{key}: {algorithm} has no option {key!r}"
                             f"{did_you_mean([key], valid)}; its options: {', '.join(valid)}")


def _core_error(exc: Exception, params: Mapping[str, Any]) -> Exception:
    """A core constructor's error about one of ``params``, prefixed ``algorithm.params.`` (its
    messages start with the option's name), else ``exc`` itself."""
    text = str(exc)
    for key in sorted(params, key=len, reverse=True):
        if text.startswith((f"{key} ", f"{key}=")):
            return type(exc)(f"algorithm.params.{text}")
    return exc


def build_scheduler(cfg: StudyConfig, gateway_address: str | None) -> Any:
    """The study's :class:`hpo_node.integrations.ray_tune.CoreTrialScheduler` over the registry's
    core (:mod:`hpo_node.algorithms`), with the guarded predictor and its prediction log when the
    algorithm needs one (``scheduler.predictor``: that factory; ``None`` otherwise)."""
    from hpo_node.integrations.ray_tune import CoreTrialScheduler
    from hpo_node.predictors import make_predictor_factory
    from hpo_node.resilient import GatewayFactory, PredictionLog, guarded_factory

    check_algorithm_params(cfg.algorithm, cfg.algorithm_params)
    log = factory = None
    if cfg.uses_predictor:
        log = PredictionLog(retry_after=cfg.retry_after_s)
        if cfg.predictor == "gateway":
            if gateway_address is None:
                raise ValueError(
                    f"a gateway address is needed for {cfg.algorithm} with the gateway"
                )
            inner: Any = GatewayFactory(
                gateway_address, timeout=cfg.predictor_timeout_s, **cfg.gateway_connection,
                **cfg.predictor_params,
            )
        else:
            inner = make_predictor_factory(cfg.predictor, **cfg.predictor_params)
        factory = guarded_factory(inner, log)
    try:
        core = build(cfg.algorithm, max_resource=cfg.max_resource, eta=cfg.eta,
                     n_trials=n_trials(cfg), predictor=factory, seed=cfg.seed,
                     options=cfg.algorithm_params, ray=True)
    except (ValueError, TypeError) as exc:
        raise _core_error(exc, cfg.algorithm_params) from None
    scheduler = CoreTrialScheduler(core, metric=cfg.metric, mode=cfg.mode,
                                   resource_attr=cfg.resource_attr, hparams=hparam_encoder(cfg),
                                   log=log, retry_alike=False)
    scheduler.predictor = factory
    return scheduler


def check_study(cfg: StudyConfig) -> StudyConfig:
    """Build the scheduler (and searcher) once, so that bad options fail before anything
    starts; returns ``cfg``, with a note in ``cfg.notes`` when too few trials for any to reach R,
    and a Swift ``d`` too large for the study adapted (and said in ``cfg.notes``) when
    ``[algorithm] params`` does not set it (:func:`swift_d`)."""
    address = "127.0.0.1:1" if cfg.needs_gateway else None
    scheduler = build_scheduler(cfg, gateway_address=address)
    too_few = getattr(scheduler.core, "too_few_trials_note", None)
    note = None if too_few is None else too_few(n_trials(cfg), "study.trials")
    if note is not None:
        cfg = replace(cfg, notes=(*cfg.notes, note))
    if cfg.uses_predictor:
        d, note = swift_d(cfg, scheduler.core)
        if note is not None:
            params = cfg.algorithm_params if d is None else {**cfg.algorithm_params, "d": d}
            cfg = replace(cfg, algorithm_params=params, notes=(*cfg.notes, note))
            build_scheduler(cfg, gateway_address=address)
    if cfg.searcher != "random":
        build_searcher(cfg)
    return cfg


def swift_d(cfg: StudyConfig, core: Any) -> tuple[int | None, str | None]:
    """``(d, note)`` for a Swift study whose ``d`` no rung ever reaches: the rule
    :func:`hpo_node.integrations.ray_tune.swift_d_rule` (the Ray adapter's too), with the TOML
    keys in its note."""
    from hpo_node.integrations.ray_tune import swift_d_rule

    return swift_d_rule(core, n_trials(cfg), "d" in cfg.algorithm_params,
                        d_key="algorithm.params.d", trials_key="study.trials",
                        resource_key="algorithm.max_resource")
