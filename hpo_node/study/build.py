"""Building a study's parts from its config: Tune's space, the scheduler, the searcher."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from hpo_node.algorithms import build, get_algorithm
from hpo_node.core import hyperband_brackets
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


def build_scheduler(cfg: StudyConfig, gateway_address: str | None) -> Any:
    """The study's :class:`hpo_node.integrations.ray_tune.CoreTrialScheduler` over the registry's
    core (:mod:`hpo_node.algorithms`), with the guarded predictor and its prediction log when the
    algorithm needs one (``scheduler.predictor``: that factory; ``None`` otherwise)."""
    from hpo_node.integrations.ray_tune import CoreTrialScheduler
    from hpo_node.predictors import make_predictor_factory
    from hpo_node.resilient import GatewayFactory, PredictionLog, guarded_factory

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
    core = build(cfg.algorithm, max_resource=cfg.max_resource, eta=cfg.eta,
                 n_trials=n_trials(cfg), predictor=factory, seed=cfg.seed,
                 options=cfg.algorithm_params, ray=True)
    scheduler = CoreTrialScheduler(core, metric=cfg.metric, mode=cfg.mode,
                                   resource_attr=cfg.resource_attr, hparams=hparam_encoder(cfg),
                                   log=log)
    scheduler.predictor = factory
    return scheduler


def check_study(cfg: StudyConfig) -> StudyConfig:
    """Build the scheduler (and searcher) once, so that bad options fail before anything
    starts; returns ``cfg``, with a Swift ``d`` too large for the study adapted (and said in
    ``cfg.notes``) when ``[algorithm] params`` does not set it (:func:`swift_d`)."""
    address = "127.0.0.1:1" if cfg.needs_gateway else None
    scheduler = build_scheduler(cfg, gateway_address=address)
    if cfg.uses_predictor:
        d, note = swift_d(cfg, scheduler.core)
        if note is not None:
            params = cfg.algorithm_params if d is None else {**cfg.algorithm_params, "d": d}
            cfg = replace(cfg, algorithm_params=params, notes=(*cfg.notes, note))
            build_scheduler(cfg, gateway_address=address)
    if cfg.searcher != "random":
        build_searcher(cfg)
    return cfg


def _judged_per_rung(cfg: StudyConfig, rungs: Sequence[int]) -> dict[int, int]:
    """Trials that reach each rung resource above the lowest, over the whole study: with
    Swift-ASHA ``floor(n / eta^k)`` at rung ``k``; with Swift-Hyperband the trials of every bracket
    still running when it gets there."""
    if cfg.fixed_trials:
        out = dict.fromkeys(rungs[1:], 0)
        for _, rounds in hyperband_brackets(cfg.max_resource, cfg.eta):
            for r in out:
                first = next((n for n, res in rounds if res >= r), 0)
                out[r] += first
        return out
    n = n_trials(cfg)
    return {r: n // cfg.eta**k for k, r in enumerate(rungs) if k >= 1}


def swift_d(cfg: StudyConfig, core: Any) -> tuple[int | None, str | None]:
    """``(d, note)`` for a Swift study whose ``d`` no rung ever reaches.

    A Swift predictor for a rung is fitted once ``d`` trials reached it, and only the trials
    judged after that get a prediction, so a rung that at most ``m <= d`` trials reach never gives
    one. When no rung gives one: ``d`` unset in ``[algorithm] params`` -> ``(max(2, m // 2),
    note)`` (half the largest rung's trials fit the predictor, half are judged by it); ``d`` set,
    or ``m < 3`` -> ``(None, warning)``. ``(None, None)`` when nothing is wrong (or ``scale_free``,
    whose predictor is fitted on windows of every curve).
    """
    d = int(core.d)
    if getattr(core, "scale_free", False):
        return None, None
    judged = _judged_per_rung(cfg, list(core.rungs) if hasattr(core, "rungs") else sorted(
        {r for _, rounds in hyperband_brackets(cfg.max_resource, cfg.eta) for _, r in rounds}))
    m = max(judged.values(), default=0)
    if m > d:
        return None, None
    where = (f"{cfg.algorithm} with {n_trials(cfg)} configurations, R = {cfg.max_resource}, "
             f"eta = {cfg.eta}: at most {m} trials reach a rung, so with d = {d} no trial would "
             "ever get a prediction")
    more = ("a larger algorithm.max_resource" if cfg.fixed_trials else
            f"more study.trials (at least {3 * cfg.eta} for any prediction)")
    if "d" not in cfg.algorithm_params and m >= 3:
        new = max(2, m // 2)
        return new, (f"note: {where}; d adapted to {new} (set algorithm.params.d to choose, or "
                     f"give {more})")
    fix = f"lower algorithm.params.d below {m}, or give {more}" if m >= 3 else f"give {more}"
    return None, (f"warning: {where}; the study runs as plain "
                  f"{cfg.algorithm.removeprefix('swift-')}: {fix}")
