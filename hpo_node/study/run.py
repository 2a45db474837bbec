"""Running a study: the gateway child, Ray, the Tuner; :func:`optimize` from Python."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpo_node.core import check_choice
from hpo_node.study.build import (
    build_scheduler,
    build_searcher,
    fixed_param_space,
    n_trials,
    param_space,
)
from hpo_node.study.config import (
    RESUME_MAY_CHANGE,
    StudyConfig,
    apply_overrides,
    redact_storage,
    study_identity,
)
from hpo_node.study.load import load_study, study_from_dict
from hpo_node.study.outputs import (
    StudyResult,
    errored_trials,
    print_summary,
    succeeded,
    summarize,
    trial_rows,
    write_outputs,
)
from qpu_gateway.process import GatewayProcess

logger = logging.getLogger(__name__)

GATEWAY_WAIT_S = 10.0


@dataclass(frozen=True)
class _Rerun:
    """How a caller's messages name the ways to run a study again, and the gateway setting:
    ``hpo-node run``'s flags, or a Python function's arguments."""

    resume: str
    overwrite: str
    call: str  # a whole call with one of those: "{}" is the argument
    rename: str  # the call with another study.name: "{name}" is a suggestion
    gateway: str  # what names the running gateway to use

    def run(self, arg: str) -> str:
        """The call (or command line) with ``arg``."""
        return self.call.format(arg)


_RERUN = {
    "hpo-node run": _Rerun("--resume", "--overwrite", "{}", "--set study.name='\"{name}\"'",
                           "--gateway"),
    "optimize": _Rerun("resume=True", "overwrite=True", "optimize(..., {})",
                       "optimize(..., overrides={{'study.name': '{name}'}})", "gateway="),
    "run_study": _Rerun("resume=True", "overwrite=True", "run_study(cfg, {})",
                        "run_study(dataclasses.replace(cfg, name='{name}'))", "gateway="),
}


class GatewayUnreachable(ConnectionError):
    """The gateway named by ``--gateway`` / ``[gateway] address`` does not answer SERVING."""


class StudyFailed(RuntimeError):
    """Every trial of a study failed (its trainable raised; the message names the first error),
    or every value every trial reported was non-finite. The study's outputs are written before
    it is raised."""


def _all_failed(scheduler: Any, study_dir: Path) -> StudyFailed:
    errors = errored_trials(scheduler)
    first = (f"; the first, trial {errors[0]['trial_id']}: "
             f"{errors[0]['error'] or 'unknown error'}") if errors else ""
    return StudyFailed(
        f"every trial that ran failed ({len(errors)} of {len(scheduler.records)} ended in "
        f"error{first}). "
        f"Fix the trainable (run it once by hand with one config); trials.csv in {study_dir} "
        "lists each trial's error"
    )


def _all_non_finite(scheduler: Any) -> bool:
    """Whether trials reported epochs and every value reported was non-finite."""
    curves = [rec.curve for rec in scheduler.records.values() if rec.curve]
    return bool(curves) and all(v is None for c in curves for v in c)


def _missing_key(cfg: StudyConfig, exc: Any) -> ValueError:
    """The config error for a trainable that never reports ``study.metric`` or
    ``study.resource_attr`` (a :class:`TrainableContractError` with ``missing``)."""
    setting = f"study.{exc.missing}"
    return ValueError(
        f"{setting} = {exc.key!r}: the trainable does not report it; it reports "
        f"{list(exc.reported)}. Set {setting} to one of those, or report {exc.key!r} every "
        f"epoch: tune.report({{{cfg.resource_attr!r}: epoch, {cfg.metric!r}: value}}, "
        "checkpoint=...)"
    )


def _check_gateway(client_cls: Any, address: str, token: str | None, conn: Mapping[str, str],
                   wait_s: float, given_by: str = "--gateway") -> None:
    """Wait ``wait_s`` for ``address`` to answer SERVING; :class:`GatewayUnreachable` (one line)
    otherwise, saying to leave out ``given_by`` (the flag, argument or key that named it)."""
    try:
        with client_cls(address, timeout=wait_s, token=token, **conn) as client:
            client.wait_until_serving(timeout=wait_s)
    except (TimeoutError, ValueError, OSError) as exc:
        reason = "not SERVING" if isinstance(exc, TimeoutError) else str(exc).splitlines()[0]
        raise GatewayUnreachable(
            f"cannot reach the qpu-gateway at {address}: {reason} after {wait_s:g} s. Start it "
            f"(qpu-gateway serve), fix the address, or {_leave_out(given_by)} to let hpo-node "
            "start its own"
        ) from None


def _leave_out(given_by: str) -> str:
    """How to stop naming a gateway: the TOML key set back to ``auto``, else the flag or argument
    left out."""
    if given_by == "gateway.address":
        return "set gateway.address = \"auto\""
    return f"leave out {given_by}"


PREFLIGHT_MODEL = "hpo-node-preflight-no-such-model"


def _check_token(client_cls: Any, address: str, token: str | None, conn: Mapping[str, str],
                 token_env: str | None, wait_s: float) -> None:
    """Check that the gateway lets this study fit models, before anything trains: one
    ``DeleteModel`` of a model that does not exist (``NOT_FOUND``: allowed), which needs the
    scope that ``Fit`` needs (``admin``). ``ValueError`` (one line) when the gateway refuses the
    token (``UNAUTHENTICATED``, ``PERMISSION_DENIED``); other errors are left to the study's
    guarded predictor."""
    import grpc

    from hpo_node.resilient import auth_error

    try:
        with client_cls(address, timeout=wait_s, token=token, **conn) as client:
            client.delete_model(PREFLIGHT_MODEL, timeout=wait_s)
    except grpc.RpcError as exc:
        refused = auth_error(exc)
        if refused is None:
            return
        source = (f"the token from ${token_env} (gateway.token_env)" if token_env else
                  "no token (gateway.token_env is not set)")
        if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
            fix = "the Swift predictor fits models, which needs a token with the 'admin' scope"
        else:
            fix = ("set gateway.token_env to a variable holding one of the gateway's tokens, with "
                   "the 'admin' scope (the Swift predictor fits models)")
        raise ValueError(
            f"the qpu-gateway at {address} refused {source} ({refused}): {fix}"
        ) from None


# What a study writes in its folder (removed by --overwrite, with the local Ray experiment).
STUDY_FILES = ("study.json", "summary.json", "trials.csv", "best.json", "curves.png",
               "best_vs_epochs.png", "best_vs_epochs.csv", "scheduler_state.json",
               "gateway.sqlite", "gateway.sqlite-wal", "gateway.sqlite-shm", "gateway.log")


def _existing_study(cfg: StudyConfig) -> bool:
    """``cfg.study_dir`` holds a study (its ``study.json`` or ``summary.json``) or its Ray
    experiment exists."""
    from ray import tune

    d = cfg.study_dir
    if (d / "study.json").exists() or (d / "summary.json").exists():
        return True
    local = cfg.local_storage_dir
    if local is not None:
        return (local / cfg.name).exists()
    try:
        return bool(tune.Tuner.can_restore(cfg.ray_experiment))
    except Exception:  # an unreachable store: Ray reports it when the study starts
        return False


def _clear_study(cfg: StudyConfig, overwrite: str = "--overwrite") -> None:
    """``--overwrite``: remove the study's outputs and its local Ray experiment (``overwrite``
    names the option in the error for storage it cannot delete)."""
    import shutil

    local = cfg.local_storage_dir
    if local is None:
        raise ValueError(
            f"{overwrite} cannot delete the Ray experiment {redact_storage(cfg.ray_experiment)}: "
            "delete it yourself, or choose another study.name"
        )
    if (local / cfg.name).exists():
        shutil.rmtree(local / cfg.name)
    for name in STUDY_FILES:
        (cfg.study_dir / name).unlink(missing_ok=True)


def _check_resume(cfg: StudyConfig, words: _Rerun = _RERUN["hpo-node run"]) -> None:
    """``ValueError`` (one line) when the study in ``cfg.study_dir`` was started with a config
    that differs from ``cfg`` in what changes the study (:func:`study_identity`); the keys of
    :data:`RESUME_MAY_CHANGE` may differ. A study without ``study.json`` is compared on its
    ``summary.json``'s algorithm, searcher, R, eta and seed. ``words``: how the caller names
    resume and overwrite."""
    import json

    d = cfg.study_dir
    new = study_identity(cfg)
    if (d / "study.json").exists():
        old = json.loads((d / "study.json").read_text())["identity"]
    elif (d / "summary.json").exists():
        summary = json.loads((d / "summary.json").read_text())
        keys = {"algorithm": "algorithm.name", "searcher": "algorithm.searcher",
                "max_resource": "algorithm.max_resource", "eta": "algorithm.eta",
                "seed": "study.seed"}
        old = {key: summary[k] for k, key in keys.items() if k in summary}
    else:
        return
    differ = [f"{k} {old[k]!r} -> {new.get(k)!r}" for k in old if old[k] != new.get(k)]
    if differ:
        raise ValueError(
            f"{words.resume}: {d} was started with another config ({'; '.join(differ)}): resume "
            f"it with the config it was started with (a resume may change only "
            f"{', '.join(RESUME_MAY_CHANGE)}), or start over with {words.overwrite} or another "
            "study.name"
        )


def _trainable_name(cfg: StudyConfig) -> str:
    """``module:function`` of the study's trainable, saying when it is the built-in one."""
    fn = cfg.trainable_callable
    name = f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
    if cfg.trainable_fn is None:
        return f"{name} (the built-in digits model: no [trainable] function given)"
    return name


def _write_identity(cfg: StudyConfig) -> None:
    import json

    (cfg.study_dir / "study.json").write_text(
        json.dumps({"version": 1, "identity": study_identity(cfg)}, indent=2))


class _SigintWatch:
    """Tells whether Ctrl-C (SIGINT) interrupted ``tuner.fit()``.

    Tune catches the first SIGINT, saves the experiment and returns from ``fit`` normally; its
    handler puts back the one it found, ours, so ours in place after ``fit`` means it fired. A
    SIGINT that reaches ours (a second Ctrl-C, or Tune's handler off) raises
    ``KeyboardInterrupt`` out of ``fit``; the study then writes its outputs as after one."""

    def __init__(self) -> None:
        self.interrupted = False
        self._main = threading.current_thread() is threading.main_thread()
        self._tune_catches = self._main and not int(
            os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0"))
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        self.interrupted = True
        raise KeyboardInterrupt

    def __enter__(self) -> _SigintWatch:
        if self._main:
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._main:
            if self._tune_catches and signal.getsignal(signal.SIGINT) == self._handler:
                self.interrupted = True
            signal.signal(signal.SIGINT, self._previous)


@contextlib.contextmanager
def _tune_env() -> Iterator[None]:
    """Tune's settings while a study runs (unless the user set them): a failed trial is one line
    (the scheduler's, with the exception and its error file), not Tune's full traceback; no
    warning that trials which never started have no metrics, no closing list of trials that did
    not complete nor Tune's restore hint after Ctrl-C; a slow decision is one warning; a
    result without ``study.metric`` is left to the scheduler, whose error names the keys the
    trainable reports (Tune's own check would end the study with a traceback)."""
    values = {"TUNE_PRINT_ALL_TRIAL_ERRORS": "0", "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1"}
    added = [k for k in values if k not in os.environ]
    os.environ.update({k: values[k] for k in added})
    controller = logging.getLogger("ray.tune.execution.tune_controller")
    controller.addFilter(_no_contract_traceback)
    controller.addFilter(_slow_decision_warning)
    util = logging.getLogger("ray.tune.utils.util")
    util.addFilter(_slow_decision_warning)
    analysis = logging.getLogger("ray.tune.analysis.experiment_analysis")
    analysis.addFilter(_no_fetch_warning)
    tune_log = logging.getLogger("ray.tune.tune")
    tune_log.addFilter(_no_tune_ending)
    try:
        yield
    finally:
        tune_log.removeFilter(_no_tune_ending)
        controller.removeFilter(_no_contract_traceback)
        controller.removeFilter(_slow_decision_warning)
        util.removeFilter(_slow_decision_warning)
        analysis.removeFilter(_no_fetch_warning)
        for k in added:
            os.environ.pop(k, None)


def _quiet_trial_progress() -> list[Any]:
    """A ``TrialProgressCallback`` that prints nothing, in place of the one Tune's old output
    (``RAY_AIR_NEW_OUTPUT=0``, the study's default) adds with ``verbose=0``: that one prints
    "Trial ... completed. Last result:" for every trial stopped before it started (a study ending
    at its time budget, trials failing alike and not retried); the study's progress lines are
    :class:`ProgressCallback`'s. Empty with Tune's new output (it refuses the callback)."""
    if os.environ.get("RAY_AIR_NEW_OUTPUT") != "0":
        return []
    from ray.tune.progress_reporter import TrialProgressCallback

    class QuietTrialProgress(TrialProgressCallback):
        def on_trial_result(self, *args: Any, **kwargs: Any) -> None:
            return None

        def on_trial_error(self, *args: Any, **kwargs: Any) -> None:
            return None

        def on_trial_complete(self, *args: Any, **kwargs: Any) -> None:
            return None

    return [QuietTrialProgress()]


def _slow_decision_warning(record: logging.LogRecord) -> bool:
    """Tune's warnings of a slow result, one line: the scheduler's (what a Swift decision that
    fits its predictor costs) says so; "process_trial_result(s)" (the sum of the scheduler's,
    the searcher's and the callbacks' times, each warned of alone) and its advice to report
    less often (the trainable's reports are not what is slow) are dropped."""
    text = record.getMessage()
    if text.startswith(("The `process_trial_result` operation took", "Processing trial results")):
        return False
    if text.startswith("The `scheduler.on_trial_result` operation took"):
        record.msg = (f"{text.split(', which')[0]}: the study's scheduler deciding on a result "
                      "(a Swift decision that fits the predictor waits for the fit)")
        record.args = ()
    return True


def _no_tune_ending(record: logging.LogRecord) -> bool:
    """Drop Tune's closing "Trials did not complete: [...]" and, after Ctrl-C, "Resume experiment
    with: Tuner.restore(...)": the study says how each trial ended (trials.csv, its error lines)
    and how to resume it (``--resume`` / ``resume=True``)."""
    text = record.getMessage()
    return not (text.startswith("Trials did not complete") or "Resume experiment with:" in text)


def _no_fetch_warning(record: logging.LogRecord) -> bool:
    """Drop Tune's "Failed to fetch metrics for N trial(s)" (trials that never started have no
    result file; the study's outputs come from the scheduler's records)."""
    return not record.getMessage().startswith("Failed to fetch metrics for")


def _no_contract_traceback(record: logging.LogRecord) -> bool:
    """Drop Tune's "Error stopping trial" traceback of a trainable-contract violation: the study
    ends with its one line (the violation raised in the scheduler's ``on_trial_complete``)."""
    from hpo_node.integrations.ray_tune import TrainableContractError

    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, TrainableContractError)


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
    overwrite: bool = False,
    callbacks: Sequence[Any] = (),
    progress_every_s: float = 5.0,
    stream: str = "stdout",
    caller: str = "run_study",
) -> StudyResult:
    """Run (or with ``resume`` continue) the study; see the module docstring.

    A study folder that already holds a study is refused (``ValueError``) unless ``resume``
    (whose config must then match the saved ``study.json``: :func:`_check_resume`) or
    ``overwrite`` (its outputs and local Ray experiment are deleted first).
    ``callbacks``: extra Tune callbacks, or callables that take the study's scheduler and return
    one (ignored on ``resume``: a restored study runs the callbacks it was started with).
    The result's ``interrupted`` is true when Ctrl-C stopped the study (resume it with
    ``resume=True``).
    ``caller``: ``"run_study"``, ``"optimize"`` or ``"hpo-node run"``, what the messages name
    (``run_study(cfg, resume=True)``, ``optimize(..., resume=True)``, ``--resume``, and the like
    for ``overwrite``, another ``study.name`` and ``gateway``); a Python caller is also told, on
    ``stream`` (and as a logged warning), how to continue an interrupted study.

    A trial whose trainable raises is retried twice from its last checkpoint, then ends in error
    (decision ``error`` in ``trials.csv``, with the exception's message) and the study goes on;
    :class:`StudyFailed` (after the outputs are written) when every trial that ran failed, or
    reported nothing but NaN/inf. A
    trainable that never reports ``study.metric`` (or ``study.resource_attr``) is a
    ``ValueError`` (the study folder it started is cleared); another broken rule of the trainable
    contract a :class:`~hpo_node.integrations.ray_tune.TrainableContractError`.
    """
    import ray
    from ray import tune
    from ray.tune.callback import Callback
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from hpo_node.integrations.ray_tune import (
        ProgressCallback,
        SchedulerStateCallback,
        TrainableContractError,
    )
    from hpo_node.study.trace import EpochTrace
    from hpo_node.trainables import code_folder, runtime_env, ship_by_value

    words = _RERUN[check_choice("caller", caller, tuple(_RERUN))]
    out = getattr(sys, stream)
    study_dir = cfg.study_dir
    if resume and overwrite:
        raise ValueError(f"{words.resume} and {words.overwrite} exclude each other: continue the "
                         "study, or delete it and start over")
    if resume:
        _check_resume(cfg, words)
    elif _existing_study(cfg):
        if not overwrite:
            raise ValueError(
                f"{study_dir} already holds study {cfg.name!r}: continue it with "
                f"{words.run(words.resume)}, or start over with {words.run(words.overwrite)} "
                f"(deletes it) or another study.name "
                f"({words.rename.format(name=f'{cfg.name}-2')})"
            )
        _clear_study(cfg, words.overwrite)
        print(f"{words.overwrite}: removed the previous study {cfg.name!r} in {study_dir}",
              file=out, flush=True)
    study_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune warns for every resumed trial whose result.json is not in its storage yet; harmless.
    logging.getLogger("ray.tune.logger.logger").setLevel(logging.ERROR)
    t0 = time.monotonic()
    child: GatewayProcess | None = None
    started_ray = False
    discard = False  # a fresh study that ended on a config error: its folder is cleared
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
                _check_gateway(GatewayClient, address, token, conn, GATEWAY_WAIT_S,
                               words.gateway if gateway is not None else "gateway.address")
                _check_token(GatewayClient, address, token, conn, token_env, GATEWAY_WAIT_S)
                print(f"using qpu-gateway at {address}", file=out, flush=True)
        elif gateway is not None:
            print(f"note: {cfg.algorithm} with algorithm.params {dict(cfg.algorithm_params)} "
                  f"calls no predictor; {words.gateway} is not used", file=out, flush=True)
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
            with _tune_env():  # its trials that never started have no metrics to fetch either
                tuner = tune.Tuner.restore(experiment, trainable=trainable,
                                           resume_unfinished=True)
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
            print(f"resuming {redact_storage(experiment)} (its trials and the scheduler's state "
                  "come from its last snapshot)", file=out, flush=True)
        else:
            if resume:
                print(f"nothing to resume at {redact_storage(experiment)}; starting the study",
                      file=out, flush=True)
            scheduler = build_scheduler(cfg, address)
            trace = EpochTrace(cfg.metric, cfg.resource_attr)
            _write_identity(cfg)
            scheduler.max_concurrent = slots
            n = n_trials(cfg)
            for note in cfg.notes:
                if logger.hasHandlers():  # else logging's last resort repeats the printed line
                    logger.warning("%s", note)
                print(note, file=out, flush=True)
            print(f"study {cfg.name}: {cfg.algorithm}, searcher {cfg.searcher}, {n} "
                  f"configurations, R = {cfg.max_resource} epochs, eta = {cfg.eta}, {slots} "
                  f"trial(s) at a time; trainable {_trainable_name(cfg)}", file=out, flush=True)
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
                        *_quiet_trial_progress(),
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
        with _SigintWatch() as watch, _tune_env():
            try:
                tuner.fit()
            except KeyboardInterrupt:
                pass  # a second Ctrl-C: Tune stopped at once; the outputs so far are still written
            except TrainableContractError as exc:
                if exc.missing is not None:
                    discard = not resume and cfg.local_storage_dir is not None
                    raise _missing_key(cfg, exc) from None
                raise
        summary = summarize(cfg, scheduler, time.monotonic() - t0, address,
                            redact_storage(experiment))
        summary["interrupted"] = watch.interrupted
        write_outputs(cfg, scheduler, summary, trace.events)
        scheduler.core.close()  # the study's predictor models leave the gateway (resume refits)
    finally:
        if started_ray:
            ray.shutdown()
        if child is not None:
            code = child.stop()
            print(f"qpu-gateway stopped (exit {code})", file=out, flush=True)
        if discard:  # so that the corrected config runs without --overwrite
            _clear_study(cfg, words.overwrite)
    print_summary(summary, study_dir, out)
    if watch.interrupted and caller != "hpo-node run":  # the command prints its own line
        hint = (f"study {cfg.name!r} interrupted; continue it with {words.run(words.resume)} "
                "(the same study and trainable)")
        if logger.hasHandlers():  # else logging's last resort repeats the printed line
            logger.warning("%s", hint)
        print(hint, file=out, flush=True)
    if not watch.interrupted and errored_trials(scheduler) and not succeeded(scheduler):
        raise _all_failed(scheduler, study_dir)
    if not watch.interrupted and _all_non_finite(scheduler):
        raise StudyFailed(
            f"every trial reported a non-finite {cfg.metric} (NaN or inf) at every epoch, so "
            "nothing was learned about the configurations. Fix the trainable (run it once by hand "
            f"with one config); trials.csv in {study_dir} marks such trials diverged = 1"
        )
    best = scheduler.best()
    return StudyResult(
        study_dir, summary, scheduler,
        best_config=None if best is None else dict(scheduler.records[best[0]].config),
        best_value=None if best is None else best[1],
        trials=trial_rows(scheduler, cfg),
        interrupted=watch.interrupted,
    )


def optimize(
    trainable: Callable[..., Any] | None,
    study: str | Path | Mapping[str, Any],
    *,
    overrides: Mapping[str, Any] | None = None,
    gateway: str | None = None,
    ray_address: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Sequence[Any] = (),
    progress_every_s: float = 5.0,
) -> StudyResult:
    """Run a study from Python: what ``hpo-node run`` does, with ``trainable`` given from code.

    ``trainable``: a Ray Tune function trainable (``def train(config): ... tune.report(...)``),
    or ``None`` for the TOML's ``[trainable] function`` (default: the digits trainable).
    ``study``: a study TOML file or the same document as a dict (``{"study": {...}, "space":
    {...}, ...}``); ``overrides``: ``{"section.key": value}`` as ``--set`` (a longer path sets
    one key of a table: ``{"algorithm.params.d": 4}``). Returns the :class:`StudyResult` (best
    config, per-trial rows, the output folder). A second run of a study name is refused unless
    ``resume`` (continue it) or ``overwrite`` (start over); after Ctrl-C (the result's
    ``interrupted``) a line says to continue with ``resume=True``.
    """
    if isinstance(study, str | Path):
        cfg = load_study(study, overrides, trainable=trainable)
    elif isinstance(study, Mapping):
        cfg = study_from_dict(apply_overrides(study, overrides), trainable=trainable)
    else:
        raise TypeError(f"study must be a TOML path or a dict, got {type(study).__name__}")
    return run_study(cfg, gateway=gateway, ray_address=ray_address, resume=resume,
                     overwrite=overwrite, callbacks=callbacks, progress_every_s=progress_every_s,
                     caller="optimize")

