"""Running a study: the gateway child, Ray, the Tuner; :func:`optimize` from Python."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hpo_node.study.build import (
    build_scheduler,
    build_searcher,
    fixed_param_space,
    n_trials,
    param_space,
)
from hpo_node.study.config import StudyConfig, apply_overrides, redact_storage
from hpo_node.study.load import load_study, study_from_dict
from hpo_node.study.outputs import StudyResult, print_summary, summarize, trial_rows, write_outputs
from qpu_gateway.process import GatewayProcess

logger = logging.getLogger(__name__)

GATEWAY_WAIT_S = 10.0


class GatewayUnreachable(ConnectionError):
    """The gateway named by ``--gateway`` / ``[gateway] address`` does not answer SERVING."""


def _check_gateway(client_cls: Any, address: str, token: str | None, conn: Mapping[str, str],
                   wait_s: float) -> None:
    """Wait ``wait_s`` for ``address`` to answer SERVING; :class:`GatewayUnreachable` (one line)
    otherwise."""
    try:
        with client_cls(address, timeout=wait_s, token=token, **conn) as client:
            client.wait_until_serving(timeout=wait_s)
    except (TimeoutError, ValueError, OSError) as exc:
        reason = "not SERVING" if isinstance(exc, TimeoutError) else str(exc).splitlines()[0]
        raise GatewayUnreachable(
            f"cannot reach the qpu-gateway at {address}: {reason} after {wait_s:g} s. Start it "
            "(qpu-gateway serve), fix the address, or leave out --gateway to let hpo-node start "
            "its own"
        ) from None


def _excluded_outputs(folder: Path, study_dir: Path, *others: Path | None) -> tuple[str, ...]:
    """The study's output folder (and ``others``: a local Ray storage elsewhere), those inside
    the shipped ``folder`` (gitignore syntax)."""
    folder = folder.resolve()
    found: list[str] = []
    study = study_dir.resolve()
    for path in (study_dir, *others):
        if path is None or (path is not study_dir and path.resolve().is_relative_to(study)):
            continue
        out = path.resolve()
        if out.is_relative_to(folder) and out != folder:
            entry = "/" + out.relative_to(folder).as_posix()
            if entry not in found:
                found.append(entry)
    return tuple(found)


def _restored_scheduler(tuner: Any) -> Any:
    """The scheduler object a restored ``Tuner`` runs (unpickled from its ``tuner.pkl``)."""
    from hpo_node.integrations.ray_tune import CoreTrialScheduler

    sched = getattr(getattr(getattr(tuner, "_local_tuner", None), "_tune_config", None),
                    "scheduler", None)
    if not isinstance(sched, CoreTrialScheduler):
        raise RuntimeError("could not find the restored study's scheduler in the Ray Tuner")
    return sched


def _restored_trace(tuner: Any) -> Any:
    """The :class:`~hpo_node.study.trace.EpochTrace` among a restored ``Tuner``'s callbacks."""
    from hpo_node.study.trace import EpochTrace

    run_config = getattr(getattr(tuner, "_local_tuner", None), "_run_config", None)
    for cb in getattr(run_config, "callbacks", None) or ():
        if isinstance(cb, EpochTrace):
            return cb
    return None


def run_study(
    cfg: StudyConfig,
    *,
    gateway: str | None = None,
    ray_address: str | None = None,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    progress_every_s: float = 5.0,
    stream: str = "stdout",
) -> StudyResult:
    """Run (or with ``resume`` continue) the study; see the module docstring.

    ``callbacks``: extra Tune callbacks, or callables that take the study's scheduler and return
    one (ignored on ``resume``: a restored study runs the callbacks it was started with).
    """
    import ray
    from ray import tune
    from ray.tune.callback import Callback
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from hpo_node.integrations.ray_tune import ProgressCallback, SchedulerStateCallback
    from hpo_node.study.trace import EpochTrace
    from hpo_node.trainables import code_folder, runtime_env, ship_by_value

    out = getattr(sys, stream)
    study_dir = cfg.study_dir
    study_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune warns for every resumed trial whose result.json is not in its storage yet; harmless.
    logging.getLogger("ray.tune.logger.logger").setLevel(logging.ERROR)
    t0 = time.monotonic()
    child: GatewayProcess | None = None
    started_ray = False
    address = None
    try:
        if cfg.needs_gateway:
            if gateway is not None:
                address = gateway
            elif cfg.gateway != "auto":
                address = cfg.gateway
            else:
                child = GatewayProcess(
                    study_dir / "gateway.sqlite", "--backend", cfg.gateway_backend,
                    log_path=study_dir / "gateway.log",
                )
                address = child.start().address
                print(f"qpu-gateway started on {address} (backend {cfg.gateway_backend}, "
                      f"log {child.log_path})", file=out, flush=True)
            if child is None:
                from qpu_gateway.client import GatewayClient

                conn = dict(cfg.gateway_connection)
                token_env = conn.pop("token_env", None)
                token = os.environ.get(token_env) if token_env else None
                _check_gateway(GatewayClient, address, token, conn, GATEWAY_WAIT_S)
                print(f"using qpu-gateway at {address}", file=out, flush=True)
        fn = cfg.trainable_callable
        folder = code_folder(fn)
        if not ray.is_initialized():
            env = None
            if folder is not None:
                # every worker, on every node, imports the trainable from this copy of its folder
                env = runtime_env(folder, _excluded_outputs(folder, study_dir,
                                                            cfg.local_storage_dir))
                print(f"shipping {folder} to the Ray workers (runtime_env working_dir)", file=out,
                      flush=True)
            if ray_address is not None:
                ray.init(address=ray_address, log_to_driver=False, runtime_env=env)
            else:
                # address="local": a new Ray even when /tmp/ray/ray_current_cluster names another
                ray.init(address="local", num_cpus=cfg.num_cpus or os.cpu_count() or 1,
                         include_dashboard=False, runtime_env=env,
                         log_to_driver=False, configure_logging=False)
            started_ray = True
        elif folder is not None:
            # a Ray someone else started: its job's runtime_env is fixed, so send the code itself
            names = ship_by_value(folder)
            logger.info("Ray was already started: modules %s of %s are sent by value (files "
                        "beside them are not; start Ray with runtime_env={'working_dir': ...} "
                        "for those)", names, folder)
        resources = ray.cluster_resources()
        slots = int(resources.get("CPU", 1) // cfg.cpu) if cfg.cpu > 0 else 1
        if cfg.gpu > 0:
            slots = min(slots, int(resources.get("GPU", 0) // cfg.gpu))
        if slots < 1:
            raise ValueError(
                f"resources per trial (cpu {cfg.cpu}, gpu {cfg.gpu}) exceed the cluster's "
                f"(cpu {resources.get('CPU', 0)}, gpu {resources.get('GPU', 0)})"
            )
        # a local folder (absolute) or a URI (s3://, gs://, file://) that Ray's pyarrow reads
        storage = cfg.ray_storage
        experiment = cfg.ray_experiment
        if cfg.storage is not None:
            print(f"Ray experiment storage: {redact_storage(experiment)}", file=out, flush=True)
        trainable = tune.with_resources(fn, {"cpu": cfg.cpu, "gpu": cfg.gpu})
        if resume and tune.Tuner.can_restore(experiment):
            tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True)
            scheduler = _restored_scheduler(tuner)
            trace = _restored_trace(tuner) or EpochTrace(cfg.metric, cfg.resource_attr)
            predictor = getattr(scheduler, "predictor", None)
            if address is not None and predictor is not None:
                inner = getattr(predictor, "factory", None)
                if hasattr(inner, "address"):
                    inner.address = address
            restored_alg = getattr(getattr(getattr(tuner, "_local_tuner", None), "_tune_config",
                                           None), "search_alg", None)
            if hasattr(restored_alg, "attach"):
                restored_alg.attach(scheduler)
            print(f"resuming {redact_storage(experiment)} ({len(scheduler.records)} trials "
                  "known)", file=out, flush=True)
        else:
            if resume:
                print(f"nothing to resume at {redact_storage(experiment)}; starting the study",
                      file=out, flush=True)
            scheduler = build_scheduler(cfg, address)
            trace = EpochTrace(cfg.metric, cfg.resource_attr)
            scheduler.max_concurrent = slots
            n = n_trials(cfg)
            for note in cfg.notes:
                if logger.hasHandlers():  # else logging's last resort repeats the printed line
                    logger.warning("%s", note)
                print(note, file=out, flush=True)
            print(f"study {cfg.name}: {cfg.algorithm}, searcher {cfg.searcher}, {n} "
                  f"configurations, R = {cfg.max_resource} epochs, eta = {cfg.eta}, {slots} "
                  "trial(s) at a time", file=out, flush=True)
            if cfg.searcher == "random":
                search_alg: Any = BasicVariantGenerator(random_state=cfg.seed)
                space = param_space(cfg)
            else:
                # No ConcurrencyLimiter: the scheduler bounds concurrency (hpo_node.integrations.ray_search)
                search_alg = build_searcher(cfg, scheduler)
                space = fixed_param_space(cfg)
            tuner = tune.Tuner(
                trainable,
                param_space=space,
                tune_config=tune.TuneConfig(
                    scheduler=scheduler,
                    search_alg=search_alg,
                    num_samples=n,
                    time_budget_s=cfg.time_budget_s,
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name=cfg.name,
                    storage_path=storage,
                    verbose=0,
                    callbacks=[
                        SchedulerStateCallback(scheduler),
                        ProgressCallback(scheduler, progress_every_s, stream),
                        trace,
                        *(c if isinstance(c, Callback) else c(scheduler) for c in callbacks),
                    ],
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                    # a failed trial is restarted from its last checkpoint (twice at most)
                    failure_config=tune.FailureConfig(max_failures=2),
                ),
            )
        tuner.fit()
        summary = summarize(cfg, scheduler, time.monotonic() - t0, address,
                            redact_storage(experiment))
        write_outputs(cfg, scheduler, summary, trace.events)
    finally:
        if started_ray:
            ray.shutdown()
        if child is not None:
            code = child.stop()
            print(f"qpu-gateway stopped (exit {code})", file=out, flush=True)
    print_summary(summary, study_dir, out)
    best = scheduler.best()
    return StudyResult(
        study_dir, summary, scheduler,
        best_config=None if best is None else dict(scheduler.records[best[0]].config),
        best_value=None if best is None else best[1],
        trials=trial_rows(scheduler, cfg),
    )


def optimize(
    trainable: Callable[..., Any] | None,
    study: str | Path | Mapping[str, Any],
    *,
    overrides: Mapping[str, Any] | None = None,
    gateway: str | None = None,
    ray_address: str | None = None,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    progress_every_s: float = 5.0,
) -> StudyResult:
    """Run a study from Python: what ``hpo-node run`` does, with ``trainable`` given from code.

    ``trainable``: a Ray Tune function trainable (``def train(config): ... tune.report(...)``),
    or ``None`` for the TOML's ``[trainable] function`` (default: the digits trainable).
    ``study``: a study TOML file or the same document as a dict (``{"study": {...}, "space":
    {...}, ...}``); ``overrides``: ``{"section.key": value}`` as ``--set``. Returns the
    :class:`StudyResult` (best config, per-trial rows, the output folder).
    """
    if isinstance(study, str | Path):
        cfg = load_study(study, overrides, trainable=trainable)
    elif isinstance(study, Mapping):
        cfg = study_from_dict(apply_overrides(study, overrides), trainable=trainable)
    else:
        raise TypeError(f"study must be a TOML path or a dict, got {type(study).__name__}")
    return run_study(cfg, gateway=gateway, ray_address=ray_address, resume=resume,
                     callbacks=callbacks, progress_every_s=progress_every_s)

