"""Ray Tune schedulers over the engine-agnostic core: ``asha``, ``hyperband``, ``swift-asha``,
``swift-hyperband``.

:class:`CoreTrialScheduler` is a ``ray.tune.schedulers.TrialScheduler`` that drives one
:class:`hpo_node.core.Scheduler` with the calls the replay simulator makes (with several trials
at once, in the order Tune delivers their results):

* ``on_trial_add`` registers the Ray trial with the core (``add_trial``) and holds it ``PAUSED``:
  Ray starts every ``PENDING`` trial by itself, so only the trials the core hands out may run;
* ``choose_trial_to_run`` asks the core for the next job (``next_job``): a new trial or a promotion
  to resume from its checkpoint; at most ``max_concurrent`` trials are handed out at once;
* ``on_trial_result`` passes each epoch's loss to ``report`` and maps its decision to Ray's
  ``CONTINUE`` / ``PAUSE`` (Ray checkpoints the trial) / ``STOP``; paused trials the core gives up
  on (``drain_stopped``) are stopped in Ray. A trial the core pauses asks for the next job at
  once: when that is the trial's own promotion it goes on training (``CONTINUE``), when that
  job's barrier eliminated the trial itself it is stopped, not paused;
* once the core has nothing to run and nothing running, the remaining paused trials are stopped and
  the experiment ends.

The trainable contract
----------------------
Every trainable run under these schedulers (the user's function trainable, ``train_digits``)
must:

1. report once per epoch, the resource and the metric: ``tune.report({resource_attr: epoch,
   metric: value}, checkpoint=...)`` with ``epoch`` = 1, 2, ... (``resource_attr`` defaults to
   ``epoch``; Tune's own ``training_iteration`` counts reports and works too);
2. save a checkpoint with every report, and when started with one (``tune.get_checkpoint()`` is
   not ``None``) restore from it and continue at the next epoch: the schedulers pause trials at
   rungs and resume the promoted ones, and a trial that restarts from epoch 1 would train epochs
   twice;
3. train up to ``max_resource`` epochs unless the scheduler stops it (do not return early).

Each violation ends the study at its first occurrence with a :class:`TrainableContractError`
that names the trial and the rule (nothing is counted wrong). A non-finite metric (a diverged
model) is not a violation: it is fed to the core as the worst finite loss seen so far in the
study (``nonfinite_loss`` overrides) and the trial is marked.

A trainable that raises is not a violation either. Tune retries the trial from its last
checkpoint as its ``FailureConfig(max_failures)`` allows (the trial keeps its place in the core;
a retry that starts over instead of restoring the checkpoint breaks rule 2); once the retries
ran out the trial ends in error: the core stops it for good (:meth:`hpo_node.core.Scheduler.fail`:
never resumed or promoted, no barrier waits for it), its record says ``error`` with the
exception's one-line message (``TrialRecord.error_message``, also logged with the error file),
and the study goes on.

Checkpointing: :meth:`CoreTrialScheduler.get_state` holds the core's ``state_dict`` plus the
adapter's per-trial records; ``save``/``restore`` write/read it as JSON. Ray Tune does not
checkpoint schedulers (the one in ``tuner.pkl`` is the one from the start, which is how Ray's own
ASHA loses its rungs on ``Tuner.restore``, ray-project/ray#30838), so :class:`SchedulerStateCallback`
stores the state with every experiment snapshot and puts it back on ``Tuner.restore``: trials the
core had running are resumed first, paused ones wait for their promotion, and the rungs/brackets
continue where they were. The scheduler adds that callback to the Tuner itself when the user's
``RunConfig`` lacks it, and on ``Tuner.restore`` reads its state back from the snapshot either
way; an experiment whose snapshots hold no scheduler state is refused with a message.

Searchers: Tune's own (``BasicVariantGenerator``, ``OptunaSearch``, ...) work unchanged: every
trial they create is held until the core starts it. ``ConcurrencyLimiter`` is refused: it counts
the trials held at rungs as running, so the searcher stops suggesting while the core waits for new
configurations (the study would hang or end early); bound concurrency with ``max_concurrent``.
A scheduler holds one study: reusing it for a second ``Tuner.fit`` is refused.
"""

from __future__ import annotations

import json
import logging
import math
import os
import weakref
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune.callback import Callback
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from hpo_node.algorithms import build, get_algorithm
from hpo_node.core import Decision, Job, Scheduler, check_choice, check_int
from hpo_node.predictors import Predictor
from hpo_node.resilient import PredictionLog, ensure_guarded

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController

logger = logging.getLogger(__name__)

STATE_VERSION = 1
STATE_FILE = "hpo_node_scheduler.json"

CONTRACT = "the trainable contract: help(hpo_node.integrations.ray_tune)"

_TO_RAY = {
    Decision.CONTINUE: TrialScheduler.CONTINUE,
    Decision.PAUSE: TrialScheduler.PAUSE,
    Decision.STOP: TrialScheduler.STOP,
}


class TrainableContractError(RuntimeError):
    """A trainable broke the trainable contract (module doc); the message says which rule.

    ``missing``: the setting (``"metric"`` or ``"resource_attr"``) whose key ``key`` the
    trainable did not report (``None`` for the other rules); ``reported``: the keys it did report.
    """

    missing: str | None = None
    key: str | None = None
    reported: tuple[str, ...] = ()


@dataclass
class TrialRecord:
    """What the adapter knows of one trial (JSON-serialisable, part of the scheduler state).

    ``status``: ``pending`` (never started), ``running``, ``paused``, ``finished`` (reached
    max_resource), ``stopped`` (by the algorithm at a rung or barrier), ``stopped-by-prediction``,
    ``stopped-early`` (at a decision point without a prediction: the last-value fallback),
    ``error`` (its trainable raised and Tune's retries, if any, ran out or were skipped:
    ``retry_alike``; or it broke the trainable contract). ``curve``: the metric per epoch in its
    own units (``None`` where non-finite); ``losses``: what the core was given (lower is better,
    non-finite values replaced). ``failures``: how often its trainable raised (retries included);
    ``error_message``: the last exception's one-line message (``ExcType: message``), when known.
    """

    config: dict[str, Any]
    status: str = "pending"
    curve: list[float | None] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    target: int = 0
    jobs: int = 0
    predicted: float | None = None
    predicted_spread: float | None = None
    predicted_epoch: int | None = None
    diverged: bool = False
    failures: int = 0
    error_message: str | None = None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _is_tune_key(key: str) -> bool:
    """Keys Tune adds to every result (not the trainable's own)."""
    return key in _TUNE_KEYS or key.startswith("config/")


_TUNE_KEYS = frozenset({
    "timestamp", "checkpoint_dir_name", "should_checkpoint", "done", "training_iteration",
    "trial_id", "date", "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip",
    "time_since_restore", "iterations_since_restore", "experiment_tag", "config",
})


def error_line(trial: Trial) -> str | None:
    """``ExcType: message`` (first line) of the exception that failed ``trial``, read from its
    error files (Tune writes them before it tells the scheduler), ``None`` if unknown."""
    return _read_failure(trial)[0]


def _read_failure(trial: Trial) -> tuple[str | None, bool]:
    """(:func:`error_line`, whether Ray itself failed the trial: a worker, actor or node lost,
    Ray's memory monitor; classified by exception class, so a ``torch.cuda.OutOfMemoryError``
    is the trainable's own, and so is an actor that died in its creation task: a class
    trainable's ``setup`` raising)."""
    from ray import cloudpickle
    from ray.exceptions import RayError, RayTaskError, UserCodeException

    path = getattr(trial, "pickled_error_file", None)
    if path and os.path.exists(path):
        try:
            with open(path, "rb") as fh:
                exc = cloudpickle.load(fh)
        except Exception:  # a user's exception class that cannot be unpickled here
            pass
        else:
            cause = getattr(exc, "cause", None)
            if not isinstance(cause, BaseException):
                cause = exc
            if getattr(cause, "actor_init_failed", False):  # the text ends with the user's error
                return _last_error_line(str(cause).splitlines()), False
            from_ray = isinstance(cause, RayError) and not isinstance(
                cause, RayTaskError | UserCodeException)
            text = str(cause).strip().splitlines()
            name = type(cause).__name__
            return (f"{name}: {text[0]}" if text else name), from_ray
    path = getattr(trial, "error_file", None)
    if path and os.path.exists(path):
        try:
            return _last_error_line(Path(path).read_text().splitlines()), False
        except OSError:
            return None, False
    return None, False


def _last_error_line(lines: list[str]) -> str | None:
    """The last line of a traceback's text that is not a frame, a caret line or Tune's header
    (the ``ExcType: message`` line)."""
    for line in reversed([ln.strip() for ln in lines if ln.strip()]):
        if not line.startswith(("Failure #", "File ", "^", "~")):
            return line
    return None


def _has_progress(trial: Trial) -> bool:
    """Whether a trial Tune adds has run before (a ``Tuner.restore``)."""
    return trial.status != Trial.PENDING or bool(trial.last_result.get("training_iteration"))


def _check_searcher(search_alg: Any) -> None:
    """``ValueError`` for a Tune searcher that cannot work with a :class:`CoreTrialScheduler`."""
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    searcher = getattr(search_alg, "searcher", search_alg)
    for _ in range(8):  # wrappers (SearchGenerator, ConcurrencyLimiter, Repeater) nest a few deep
        if searcher is None:
            return
        limit = None
        if isinstance(searcher, ConcurrencyLimiter):
            limit = f"ConcurrencyLimiter(max_concurrent={searcher.max_concurrent})"
        elif isinstance(searcher, BasicVariantGenerator) and searcher.max_concurrent > 0:
            limit = f"BasicVariantGenerator(max_concurrent={searcher.max_concurrent})"
        if limit is not None:
            n = searcher.max_concurrent
            raise ValueError(
                f"{limit} (or TuneConfig(max_concurrent_trials={n})) cannot be used with an "
                "hpo_node scheduler: it counts the trials the scheduler holds at rungs as "
                "running, so no new trial comes while the scheduler waits for one, and the study "
                "hangs or ends early. Leave the searcher unlimited and bound concurrency with the "
                f"scheduler: e.g. ASHAScheduler(..., max_concurrent={n})"
            )
        searcher = getattr(searcher, "searcher", None)


def _saved_state(controller: Any) -> dict[str, Any] | None:
    """The scheduler state in the newest callback snapshot of a restored Tune run, if any."""
    from ray.tune.callback import CallbackList
    from ray.tune.utils.util import _load_newest_checkpoint

    storage = getattr(controller, "_storage", None)
    if storage is None:
        return None
    saved = _load_newest_checkpoint(
        storage.experiment_driver_staging_path, CallbackList.CKPT_FILE_TMPL.format("*")
    )
    for entry in (saved or {}).values():
        if isinstance(entry, Mapping) and isinstance(entry.get("scheduler"), str):
            state = json.loads(entry["scheduler"])
            if isinstance(state, dict) and state.get("version") == STATE_VERSION:
                return state
    return None


def merge_metric_mode(
    metric: str | None, mode: str | None, new_metric: str | None, new_mode: str | None
) -> tuple[str | None, str | None] | None:
    """Tune's ``set_search_properties`` rule: fill what is unset, refuse (``None``) a conflict.

    ``ValueError`` when the resulting ``mode`` is not ``min`` or ``max``.
    """
    if (metric and new_metric and new_metric != metric) or (mode and new_mode and new_mode != mode):
        return None
    mode = mode or new_mode
    if mode is not None:
        check_choice("mode", mode, ("min", "max"))
    return metric or new_metric, mode


def numeric_hparams(config: Mapping[str, Any]) -> dict[str, float]:
    """The numeric (non-bool) entries of a flat trial config, as floats."""
    out: dict[str, float] = {}
    for k, v in config.items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[str(k)] = float(v)
    return out


class CoreTrialScheduler(TrialScheduler):
    """A Ray Tune scheduler driving a :class:`hpo_node.core.Scheduler` (see the module doc).

    ``metric``/``mode`` may also come from ``TuneConfig``; ``max_concurrent`` bounds the trials
    handed to Ray at once (``None``: as many as Ray has resources for); ``hparams`` maps a trial
    config to the numeric hyperparameters the core sees (default :func:`numeric_hparams`);
    ``log`` is the :class:`hpo_node.resilient.PredictionLog` of the core's predictors, used to
    attribute stops to predictions and saved with the state. ``retry_alike=False``: a trial that
    fails before its first report with the one-line error another trial already failed with
    before its first report *on every retry until that trial's retries ran out* is not retried (a
    trainable that cannot run one epoch would fail alike every time); a line stops counting once
    a trial that failed with it reports, and Ray's own failures (a worker, actor or node lost,
    Ray's memory monitor; by exception class) are always retried. The counts are not part of the
    saved state (a restored study retries as usual until a trial runs out again). Tune files
    such a trial ``TERMINATED`` (its ``Result.error`` is ``None``); :attr:`records` says
    ``error`` with the message.
    """

    _supports_buffered_results = False

    def __init__(
        self,
        core: Scheduler,
        *,
        metric: str | None = None,
        mode: str | None = None,
        resource_attr: str = "epoch",
        max_concurrent: int | None = None,
        hparams: Callable[[Mapping[str, Any]], Mapping[str, float]] | None = None,
        log: PredictionLog | None = None,
        nonfinite_loss: float | None = None,
        retry_alike: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(core, Scheduler):
            raise TypeError(f"core must be an hpo_node.core.Scheduler, got {type(core).__name__}")
        if mode is not None:
            check_choice("mode", mode, ("min", "max"))
        if max_concurrent is not None:
            check_int("max_concurrent", max_concurrent, 1)
        if nonfinite_loss is not None and not math.isfinite(nonfinite_loss):
            raise ValueError(f"nonfinite_loss must be finite, got {nonfinite_loss}")
        if not isinstance(retry_alike, bool):
            raise TypeError(f"retry_alike must be True or False, got {retry_alike!r}")
        self.core = core
        self._metric = metric
        self._mode = mode
        self.resource_attr = resource_attr
        self.max_concurrent = max_concurrent
        self.hparams = hparams if hparams is not None else numeric_hparams
        self.log = log
        self.nonfinite_loss = nonfinite_loss
        self.retry_alike = retry_alike
        # error line of a failure before a trial's first report -> {trial: how often}
        self._early_errors: dict[str, dict[str, int]] = {}
        # failed trials whose Tune retry is skipped (retry_alike=False), until Tune re-adds them
        self._no_retry: set[str] = set()
        self.records: dict[str, TrialRecord] = {}
        self._active: list[str] = []
        self._worst: float | None = None
        self._finished = False
        self._trials: dict[str, Trial] = {}
        # trials (re)started by Ray whose first result is still to come -> the resource of the
        # checkpoint they start from (None: none, -1: unknown); the checkpoint rule of the contract
        self._starting: dict[str, int | None] = {}
        # trials with results from a restored state, not yet resumed in this run
        self._restored: set[str] = set()
        # failed trials Tune retries (FailureConfig), until it re-adds them (on_trial_add)
        self._retrying: set[str] = set()
        # set when a Tune run first uses this scheduler (weakly: not pickled); a second run is
        # refused
        self._ran = False
        self._run: weakref.ref[Any] | None = None
        # whether the searcher's supply of configurations was compared with the core's need
        self._supply_checked = False
        # a restore this scheduler cannot continue (raised at the next scheduling step)
        self._refused: ValueError | None = None
        # the first TrainableContractError of the study (it ends the study)
        self.violation: TrainableContractError | None = None
        # Set by a searcher that creates trials on demand (hpo_node.integrations.ray_search.TuneSearcher):
        # while it says more trials can come, the study does not end when the core is idle.
        self.more_trials: Callable[[], bool] | None = None
        # what building the scheduler adapted or warns about (Swift's d: swift_d_rule)
        self.notes: tuple[str, ...] = ()
        # a Swift scheduler without n_trials: d is checked once the searcher made every trial
        self._check_d_at_supply = False

    # -- Ray Tune interface ------------------------------------------------------------------

    @property
    def mode(self) -> str | None:
        return self._mode

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        merged = merge_metric_mode(self._metric, self._mode, metric, mode)
        if merged is None:
            return False
        self._metric, self._mode = merged
        return True

    def on_trial_add(self, tune_controller: TuneController, trial: Trial) -> None:
        self._join(tune_controller)
        tid = trial.trial_id
        self._trials[tid] = trial
        if not self.records and _has_progress(trial):
            # a Tuner.restore whose RunConfig lacked SchedulerStateCallback: the state is in the
            # snapshot if this scheduler added the callback itself
            state = _saved_state(getattr(tune_controller, "_tune_controller", tune_controller))
            if state is not None:
                self.set_state(state)
        if not self.records and _has_progress(trial) and self._refused is None:
            # Raised during a restore, Tune would log it and start the experiment afresh: the
            # next scheduling step raises it instead.
            self._refused = ValueError(
                f"Tuner.restore: trial {tid} has results but this scheduler's state was not "
                "saved with the experiment, so its rungs cannot be rebuilt. Start a new "
                "experiment; runs with this hpo_node version save the state by themselves "
                "(SchedulerStateCallback)"
            )
        if self._refused is not None:
            return
        if tid in self._retrying and tid in self._no_retry:
            self._no_retry.discard(tid)
            self._give_up(tid, self.records[tid])  # failed alike: not retried
            tune_controller.stop_trial(trial)
            return
        if tid in self._retrying:
            # Tune's retry of a failed trial (FailureConfig): Tune filed it PENDING and starts
            # it from its last checkpoint by itself; it keeps its place in the core (running).
            self._retrying.discard(tid)
            if tid in self._active:
                self._starting[tid] = self._checkpoint_resource(trial)
            elif self.records[tid].status != "paused":
                tune_controller.stop_trial(trial)
            # else paused by the core (it failed while saving its checkpoint): its next result
            # pauses it again (_on_result)
            return
        if tid not in self.records:
            rec = TrialRecord(config=_jsonable(dict(trial.config)))
            self.records[tid] = rec
            if trial.status in (Trial.TERMINATED, Trial.ERROR):
                # restored from an experiment snapshot newer than the scheduler's: it cannot run
                rec.status = "error" if trial.status == Trial.ERROR else "stopped"
                return
            self.core.add_trial(tid, self.hparams(trial.config))
        if trial.status in (Trial.PENDING, Trial.RUNNING):
            # Called before Tune files the trial by status: this keeps Tune from starting it.
            # Tune makes a trial's directory when it starts the trial; a trial held back and
            # never started (end of the time budget, interruption) needs one for the results.
            trial.init_local_path()
            trial.set_status(Trial.PAUSED)

    def on_trial_error(self, tune_controller: TuneController, trial: Trial) -> None:
        """A trial's trainable raised. Tune either retries it from its last checkpoint
        (``FailureConfig(max_failures)``; it has already stopped the trial, status ``ERROR``,
        and re-adds it next: ``on_trial_add``) or gives it up: then the core stops it for good
        (:meth:`hpo_node.core.Scheduler.fail`) and the record says ``error``."""
        tid = trial.trial_id
        rec = self.records.get(tid)
        message, from_ray = _read_failure(trial)
        where = f" (error file {trial.error_file})" if trial.error_file else ""
        if rec is None:
            logger.error("trial %s failed: %s%s", tid, message or "unknown error", where)
            return
        rec.failures += 1
        rec.error_message = message or rec.error_message
        alike = self._failed_alike(tid, rec, message, from_ray)
        if trial.status == Trial.ERROR:
            self._retrying.add(tid)
            if alike is not None:
                self._no_retry.add(tid)
                logger.error("trial %s failed: %s%s; not retried: trial %s failed alike before its "
                             "first report on every retry", tid, message, where, alike)
            elif tid in self._active and self.violation is None:  # a violation ends the study
                logger.warning("trial %s failed: %s; Tune retries it from its last checkpoint "
                               "(failure %d, max_failures %s)", tid, message or "unknown error",
                               rec.failures, getattr(trial, "max_failures", "?"))
            return
        self._give_up(tid, rec)
        logger.error("trial %s failed: %s%s", tid, message or "unknown error", where)

    def _failed_alike(self, tid: str, rec: TrialRecord, message: str | None,
                      from_ray: bool) -> str | None:
        """With ``retry_alike=False``: another trial that failed with ``message`` before its first
        report on every try until its retries ran out (a deterministic error, not a passing one)
        when ``tid`` just failed with it before its own first report (``None``: retry as usual).
        A line stops counting once any trial that failed with it reports; Ray's own failures
        never count."""
        if self.retry_alike or rec.curve or not message or from_ray:
            return None
        counts = self._early_errors.setdefault(message, {})
        counts[tid] = counts.get(tid, 0) + 1
        if any(self.records[other].curve for other in counts):
            return None
        return next((other for other, n in counts.items() if other != tid and n >= 2
                     and self.records[other].status == "error"), None)

    def _give_up(self, tid: str, rec: TrialRecord) -> None:
        """A trial lost for good: out of the running trials, stopped in the core."""
        self._retrying.discard(tid)
        self._starting.pop(tid, None)
        if tid in self._active:
            self._active.remove(tid)
        if rec.status in ("error", "stopped", "finished", "stopped-by-prediction",
                          "stopped-early"):
            return
        rec.status = "error"
        self.core.fail(tid)

    def on_trial_result(
        self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]
    ) -> str:
        # A contract violation stops the trial here; the next scheduling step raises it, which
        # ends Tuner.fit with the TrainableContractError itself (raised here, Tune would wrap it).
        if self.violation is None and self._refused is None:
            try:
                return self._on_result(tune_controller, trial, result)
            except TrainableContractError:
                self.records[trial.trial_id].status = "error"
        if trial.trial_id in self._active:
            self._active.remove(trial.trial_id)
        return TrialScheduler.STOP

    def _on_result(
        self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]
    ) -> str:
        tid = trial.trial_id
        rec = self.records[tid]
        if tid not in self._active:
            return TrialScheduler.PAUSE if rec.status == "paused" else TrialScheduler.STOP
        resource, value = self._resource_and_value(tid, result)
        known = len(rec.curve)
        if tid in self._starting and resource <= known and not result.get("done"):
            start = self._starting.pop(tid)
            restored = tid in self._restored
            if (start is None and not restored) or (
                start is not None and start >= 0 and resource != start + 1
            ):
                raise self._violated(self._restart_message(trial, resource, known, start))
            # A Tuner.restore can hold a result whose checkpoint was not saved yet: the trial
            # resumes from an older checkpoint (or none) and those epochs are trained again.
            again = (f"{self.resource_attr} {resource} is" if resource == known else
                     f"{self.resource_attr}s {resource}-{known} are")
            logger.warning("trial %s resumed from an older checkpoint after a restore: %s "
                           "trained again (counted once)", tid, again)
        self._starting.pop(tid, None)
        self._restored.discard(tid)
        if resource <= known:
            # Tune repeats the last result (with "done") when a function trainable returns
            return TrialScheduler.CONTINUE
        if resource != known + 1:
            raise self._violated(
                f"trial {tid} reported {self.resource_attr}={resource} after {known}: report "
                f"every epoch, one at a time ({CONTRACT}, rule 1)"
            )
        loss = self._loss(rec, value)
        decision = self.core.report(tid, resource, loss)
        rec.curve.append(value if math.isfinite(value) else None)
        rec.losses.append(loss)
        if decision == Decision.PAUSE:
            rec.status = "paused"
            self._active.remove(tid)
            if self._promoted_at_once(tid):
                decision = Decision.CONTINUE
        elif decision == Decision.STOP:
            self._active.remove(tid)
            if resource >= self.core.max_resource:
                rec.status = "finished"
            elif resource < rec.target:
                self._mark_early_stop(tid, rec)
            else:
                rec.status = "stopped"
        self._stop_drained(tune_controller)
        if decision == Decision.PAUSE and rec.status != "paused":
            # the job asked for at once reached a barrier that eliminated this very trial
            return TrialScheduler.STOP
        return _TO_RAY[decision]

    def on_trial_complete(
        self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]
    ) -> None:
        tid = trial.trial_id
        rec = self.records.get(tid)
        if rec is None or tid not in self._active:
            return
        rec.status = "error"
        if result.get("done") and self.violation is None:
            # The trainable returned by itself (Tune's time budget or an interruption stop it
            # without "done"). Raised here, the trial errors with the message, and the next
            # scheduling step ends the study with it.
            if not rec.curve:
                raise self._violated(
                    f"trial {tid} returned without reporting anything: a trainable must call "
                    f"tune.report({{{self.resource_attr!r}: epoch, {self._metric!r}: value}}, "
                    f"checkpoint=...) after every epoch ({CONTRACT}, rule 1)"
                )
            raise self._violated(
                f"trial {tid} returned after {self.resource_attr} {len(rec.curve)} of "
                f"max_resource {self.core.max_resource} without being stopped: a trainable must "
                f"train until max_resource unless the scheduler stops it ({CONTRACT}, rule 3)"
            )

    def on_trial_remove(self, tune_controller: TuneController, trial: Trial) -> None:
        logger.debug("trial %s removed", trial.trial_id)

    def choose_trial_to_run(self, tune_controller: TuneController) -> Trial | None:
        if self._refused is not None:
            raise self._refused
        if self.violation is not None:
            raise self.violation
        if not self._supply_checked:
            self._check_supply(tune_controller)
        for tid in self._active:
            trial = self._trials.get(tid)
            if trial is not None and trial.status == Trial.PAUSED:
                self._starting[tid] = self._checkpoint_resource(trial)
                return trial
        if self.max_concurrent is not None and len(self._live_active()) >= self.max_concurrent:
            return None
        job = self.core.next_job()
        self._stop_drained(tune_controller)
        if job is None:
            if self.more_trials is None or not self.more_trials():
                self._finish_if_idle(tune_controller)
            return None
        self._hand_out(job)
        trial = self._trials[job.trial_id]
        if trial.status != Trial.PAUSED:
            return None
        self._starting[job.trial_id] = self._checkpoint_resource(trial)
        return trial

    def debug_string(self) -> str:
        counts = self.status_counts()
        return f"{self.core.name} on Ray Tune: " + ", ".join(f"{k} {v}" for k, v in counts.items())

    def save(self, checkpoint_path: str) -> None:
        """Write :meth:`get_state` as JSON to ``checkpoint_path`` (atomically)."""
        path = Path(checkpoint_path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.get_state()))
        os.replace(tmp, path)

    def restore(self, checkpoint_path: str) -> None:
        """Load a state written by :meth:`save`."""
        self.set_state(json.loads(Path(checkpoint_path).read_text()))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_run"] = None
        return state

    # -- the Tune run ----------------------------------------------------------------------------

    def _join(self, tune_controller: TuneController) -> None:
        """On the first call from a Tune run: check its searcher, refuse a reused scheduler and
        make sure the state is saved with the snapshots (``on_trial_add`` loads it on a restore)."""
        controller = getattr(tune_controller, "_tune_controller", tune_controller)
        if self._run is not None and self._run() is controller:
            return
        if self._ran:
            raise ValueError(
                f"this {type(self).__name__} already ran a study ({len(self.records)} trials); "
                "a scheduler holds one study's state: create a new one for each Tuner"
            )
        _check_searcher(getattr(controller, "search_alg", None))
        self._run = weakref.ref(controller)
        self._ran = True
        callbacks = getattr(getattr(controller, "_callbacks", None), "_callbacks", None)
        if not isinstance(callbacks, list):
            return
        if any(isinstance(c, SchedulerStateCallback) and c.scheduler is self for c in callbacks):
            return
        callbacks.append(SchedulerStateCallback(self))

    def _check_supply(self, tune_controller: TuneController) -> None:
        """Once the searcher has made all its trials: ``ValueError`` if the core needs more
        (Hyperband runs a fixed number of configurations; with fewer it would start none)."""
        search_alg = getattr(tune_controller, "search_alg", None)
        finished = getattr(search_alg, "is_finished", None)
        if not callable(finished) or not finished():
            return
        self._supply_checked = True
        too_few = getattr(self.core, "too_few_trials_note", None)
        # with n_trials given, whoever gave it said so already (hpo-node run: study.trials)
        told = getattr(self.core, "n_trials", None) is not None
        note = None if too_few is None or told else too_few(len(self.records),
                                                            "TuneConfig(num_samples)")
        if note is not None:
            logger.warning("%s", note)
            self.notes = (*self.notes, note)
        if self._check_d_at_supply:
            # too late to adapt d (the core's predictors are built): warn
            _, note = swift_d_rule(self.core, len(self.records), True,
                                   trials_key="TuneConfig(num_samples)")
            if note is not None:
                logger.warning("%s", note)
                self.notes = (*self.notes, note)
        needed = self.core.trials_needed()
        if needed is not None and len(self.records) < needed:
            self._finished = True
            raise ValueError(
                f"{self.core.name} (max_resource {self.core.max_resource}) runs {needed} "
                f"configurations, but the searcher made {len(self.records)}: set "
                f"TuneConfig(num_samples={needed})"
            )

    # -- state ---------------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """Versioned JSON-serialisable state: the core's ``state_dict`` and the trial records."""
        return {
            "version": STATE_VERSION,
            "algorithm": self.core.name,
            "core": self.core.state_dict(),
            "records": {t: asdict(r) for t, r in self.records.items()},
            "active": list(self._active),
            "worst": self._worst,
            "finished": self._finished,
            "log": None if self.log is None else self.log.state(),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`get_state`; trials the core had running are resumed first."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping, got {type(state).__name__}")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"state version must be {STATE_VERSION}, got {state.get('version')!r}")
        if state.get("algorithm") != self.core.name:
            raise ValueError(
                f"state algorithm must be {self.core.name!r}, got {state.get('algorithm')!r}"
            )
        self.core.load_state_dict(state["core"])
        self.records = {t: TrialRecord(**r) for t, r in state["records"].items()}
        self._restored = {t for t, r in self.records.items() if r.curve}
        self._active = list(state["active"])
        self._worst = state["worst"]
        self._finished = bool(state["finished"])
        if self.log is not None and state.get("log") is not None:
            self.log.load(state["log"])

    # -- summaries -----------------------------------------------------------------------------

    def status_counts(self) -> dict[str, int]:
        """Number of trials per record status."""
        out: dict[str, int] = {}
        for rec in self.records.values():
            out[rec.status] = out.get(rec.status, 0) + 1
        return out

    def epochs_used(self) -> int:
        """Epochs reported so far over all trials."""
        return sum(len(r.curve) for r in self.records.values())

    def best(self) -> tuple[str, float] | None:
        """``(trial_id, metric)`` of the best value reported at ``max_resource``, if any."""
        best: tuple[str, float] | None = None
        r_max = self.core.max_resource
        for tid, rec in self.records.items():
            if len(rec.curve) >= r_max and rec.curve[r_max - 1] is not None:
                v = float(rec.curve[r_max - 1])  # type: ignore[arg-type]
                if best is None or self._better(v, best[1]):
                    best = (tid, v)
        return best

    def best_so_far(self) -> float | None:
        """Best metric value reported at any resource (progress display)."""
        vals = [v for r in self.records.values() for v in r.curve if v is not None]
        if not vals:
            return None
        return max(vals) if self._mode == "max" else min(vals)

    # -- internals -----------------------------------------------------------------------------

    def _better(self, a: float, b: float) -> bool:
        return a > b if self._mode == "max" else a < b

    def _hand_out(self, job: Job) -> None:
        rec = self.records[job.trial_id]
        rec.target = job.resource
        rec.jobs += 1
        rec.status = "running"
        self._active.append(job.trial_id)

    def _promoted_at_once(self, tid: str) -> bool:
        """Ask the core for its next job as soon as ``tid`` pauses, as Tune's next scheduling
        step would; ``True`` when that job is ``tid``'s own promotion, so the trial trains on
        (``CONTINUE``) instead of a checkpoint round trip. Ray keeps the actor of a paused trial
        only while another trial is staged, so resuming ``tid`` would start a new actor, seconds
        per resume once the searcher made every trial. Another trial's job is handed out here and
        started by :meth:`choose_trial_to_run`."""
        if self.max_concurrent is not None and len(self._live_active()) >= self.max_concurrent:
            return False
        job = self.core.next_job()
        if job is None:
            return False
        self._hand_out(job)
        return job.trial_id == tid

    def _live_active(self) -> list[str]:
        """Trials the core runs that Ray has not finished (waiting, starting or training)."""
        return [
            t
            for t in self._active
            if t in self._trials and self._trials[t].status not in (Trial.ERROR, Trial.TERMINATED)
        ]

    def _resource_and_value(self, tid: str, result: Mapping[str, Any]) -> tuple[int, float]:
        if self._metric is None:
            raise ValueError("metric must be set (CoreTrialScheduler(metric=...) or TuneConfig)")
        for key, what in ((self.resource_attr, "resource_attr"), (self._metric, "metric")):
            if key not in result:
                reported = sorted(k for k in result if not _is_tune_key(k))
                error = self._violated(
                    f"trial {tid} reported no {key!r} ({what}); it reported {reported}. Report "
                    f"it every epoch, e.g. tune.report({{{self.resource_attr!r}: epoch, "
                    f"{self._metric!r}: value}}), or set {what} to the key you report "
                    f"({CONTRACT}, rule 1)"
                )
                error.missing, error.key, error.reported = what, key, tuple(reported)
                raise error
        resource = result[self.resource_attr]
        if isinstance(resource, bool) or not float(resource).is_integer():
            raise self._violated(
                f"trial {tid} reported {self.resource_attr}={resource!r} (resource_attr): it must "
                f"be the epoch, an integer 1, 2, ... ({CONTRACT}, rule 1)"
            )
        if int(resource) < 1:
            raise self._violated(
                f"trial {tid} reported {self.resource_attr}={int(resource)} (resource_attr): epochs "
                f"count from 1, the first report of a trial is {self.resource_attr}=1; report "
                f"epoch + 1 if your loop counts from 0 ({CONTRACT}, rule 1)"
            )
        return int(resource), float(result[self._metric])

    def _violated(self, message: str) -> TrainableContractError:
        """Record a contract violation (the study ends with it) and return the error to raise."""
        self.violation = TrainableContractError(message)
        self._finished = True
        return self.violation

    def _checkpoint_resource(self, trial: Trial) -> int | None:
        """The resource of the checkpoint Tune starts ``trial`` from (None: none, -1: unknown)."""
        latest = trial.latest_checkpoint_result
        if latest is None or latest.checkpoint is None:
            return None
        value = (latest.metrics or {}).get(self.resource_attr)
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else -1

    def _restart_message(self, trial: Trial, resource: int, known: int, start: int | None) -> str:
        why = (
            "it saved no checkpoint"
            if start is None
            else f"it did not restore the checkpoint of {self.resource_attr} {start} Tune gave it "
            "(tune.get_checkpoint())"
        )
        return (
            f"trial {trial.trial_id} was resumed after {self.resource_attr} {known} but reported "
            f"{self.resource_attr}={resource}: it restarted instead of continuing ({why}), so "
            f"{known - resource + 1} epoch(s) would be trained twice. Save a checkpoint with every "
            f"report and restore it when tune.get_checkpoint() is not None ({CONTRACT}, rule 2)"
        )

    def _loss(self, rec: TrialRecord, value: float) -> float:
        loss = -value if self._mode == "max" else value
        if math.isfinite(loss):
            self._worst = loss if self._worst is None else max(self._worst, loss)
            return loss
        rec.diverged = True
        if self.nonfinite_loss is not None:
            return self.nonfinite_loss
        return self._worst if self._worst is not None else 0.0

    def _mark_early_stop(self, tid: str, rec: TrialRecord) -> None:
        hit = self.core.prediction(tid)
        if hit is None:
            rec.status = "stopped-early"
            return
        rec.status = "stopped-by-prediction"
        mean, spread = hit
        rec.predicted = -mean if self._mode == "max" else mean
        rec.predicted_spread = spread
        rec.predicted_epoch = self.core.prediction_at(tid)

    def _stop_drained(self, tune_controller: TuneController) -> None:
        for tid in self.core.drain_stopped():
            rec = self.records[tid]
            if rec.status == "paused":
                self._mark_early_stop(tid, rec)
                if rec.status == "stopped-early":
                    rec.status = "stopped"
            trial = self._trials.get(tid)
            if trial is not None and trial.status in (Trial.PAUSED, Trial.PENDING):
                tune_controller.stop_trial(trial)

    def _finish_if_idle(self, tune_controller: TuneController) -> None:
        if self._live_active():
            return
        if self._active:
            logger.error(
                "%d trial(s) failed while the algorithm waited for them; ending the study",
                len(self._active),
            )
        self._finished = True
        for tid, trial in self._trials.items():
            if trial.status in (Trial.PAUSED, Trial.PENDING):
                rec = self.records[tid]
                if rec.status == "paused":
                    self._mark_early_stop(tid, rec)
                    if rec.status == "stopped-early":
                        rec.status = "stopped"
                tune_controller.stop_trial(trial)


class SchedulerStateCallback(Callback):
    """Saves a :class:`CoreTrialScheduler`'s state with each Tune experiment snapshot, and closes
    its core when the run ends.

    Tune calls ``get_state`` when it writes the experiment state and ``set_state`` on
    ``Tuner.restore`` (before the restored trials are re-added), so the restored scheduler resumes
    from the snapshot rather than from its state at the start.
    """

    def __init__(self, scheduler: CoreTrialScheduler) -> None:
        if not isinstance(scheduler, CoreTrialScheduler):
            raise TypeError(
                f"scheduler must be a CoreTrialScheduler, got {type(scheduler).__name__}"
            )
        self.scheduler = scheduler

    def get_state(self) -> dict[str, Any] | None:
        return {"scheduler": json.dumps(self.scheduler.get_state())}

    def set_state(self, state: dict[str, Any]) -> None:
        self.scheduler.set_state(json.loads(state["scheduler"]))

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        """The run is over (finished or interrupted): the core's predictor models are deleted
        from the gateway (they are not checkpointed; a restored run refits them)."""
        self.scheduler.core.close()


class ProgressCallback(Callback):
    """Prints a progress line (:func:`progress_line`) every ``every_s`` seconds and at the end.

    ``stream`` names ``sys.stdout`` or ``sys.stderr`` (looked up at each print: Tune pickles its
    callbacks).
    """

    def __init__(self, scheduler: CoreTrialScheduler, every_s: float = 5.0,
                 stream: str = "stdout") -> None:
        self.scheduler = scheduler
        self.every_s = every_s
        self.stream = check_choice("stream", stream, ("stdout", "stderr"))
        self._t0: float | None = None
        self._last = 0.0

    def _print(self) -> None:
        import sys
        import time

        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        print(progress_line(self.scheduler, now - self._t0), file=getattr(sys, self.stream),
              flush=True)
        self._last = now

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        import time

        now = time.monotonic()
        if self._t0 is None:
            self._t0 = self._last = now
        if now - self._last >= self.every_s:
            self._print()

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self._print()


def progress_line(scheduler: CoreTrialScheduler, elapsed: float) -> str:
    """``[   12.3s] running 2  paused 5  pending 12 | stopped 7 (by prediction 3) ...``."""
    c = scheduler.status_counts()
    final = scheduler.best()
    any_epoch = scheduler.best_so_far()
    best_s = "n/a" if final is None else f"{final[1]:.4f}"
    best_s += "" if any_epoch is None else f" (any epoch {any_epoch:.4f})"
    stopped = c.get("stopped", 0) + c.get("stopped-early", 0) + c.get("stopped-by-prediction", 0)
    return (
        f"[{elapsed:7.1f}s] running {c.get('running', 0)}  paused {c.get('paused', 0)}  "
        f"pending {c.get('pending', 0)} | stopped {stopped} "
        f"(by prediction {c.get('stopped-by-prediction', 0)})  finished {c.get('finished', 0)}  "
        f"errors {c.get('error', 0)} | best {scheduler.metric} at R {best_s} | "
        f"epochs {scheduler.epochs_used()}"
    )


def make_core(
    name: str,
    *,
    max_resource: int,
    eta: int = 3,
    n_trials: int | None = None,
    predictor: Callable[[], Predictor] | None = None,
    seed: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> Scheduler:
    """The core scheduler behind a Ray algorithm name (:data:`hpo_node.algorithms.REGISTRY`);
    ``options`` go to its constructor."""
    return build(name, max_resource=max_resource, eta=eta, n_trials=n_trials, predictor=predictor,
                 seed=seed, options=options, ray=True)


class ASHAScheduler(CoreTrialScheduler):
    """Ray Tune scheduler: :class:`hpo_node.asha.ASHA` (promotion variant, ``n_trials`` configs)."""

    def __init__(
        self, max_resource: int, eta: int = 3, n_trials: int | None = None, **kwargs: Any
    ) -> None:
        options = kwargs.pop("options", None)
        super().__init__(make_core("asha", max_resource=max_resource, eta=eta,
                                   n_trials=n_trials, options=options), **kwargs)


class HyperbandScheduler(CoreTrialScheduler):
    """Ray Tune scheduler: synchronous :class:`hpo_node.hyperband.Hyperband`."""

    def __init__(self, max_resource: int, eta: int = 3, **kwargs: Any) -> None:
        options = kwargs.pop("options", None)
        super().__init__(
            make_core("hyperband", max_resource=max_resource, eta=eta, options=options), **kwargs
        )


class SwiftASHAScheduler(CoreTrialScheduler):
    """Ray Tune scheduler: :class:`hpo_node.asha.SwiftASHA` with ``predictor`` (a factory, made
    guarded: :func:`hpo_node.resilient.ensure_guarded`; ``log`` counts outages).

    With ``n_trials`` given, a ``d`` that no rung reaches is adapted when ``options`` leaves it
    unset, else warned about (:func:`swift_d_rule`, as ``hpo-node run`` does): the note is logged
    as a warning and kept in ``notes``. Without ``n_trials`` (Tune's ``num_samples`` decides) the
    check runs once the searcher has made every trial, and can only warn."""

    def __init__(
        self,
        max_resource: int,
        eta: int = 3,
        n_trials: int | None = None,
        predictor: Callable[[], Predictor] | None = None,
        *,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        options = kwargs.pop("options", None)
        if predictor is not None:
            predictor, kwargs["log"] = ensure_guarded(predictor, kwargs.get("log"))
        core, note = _swift_core("swift-asha", options, n_trials, max_resource=max_resource,
                                 eta=eta, predictor=predictor, seed=seed)
        super().__init__(core, **kwargs)
        self.predictor = predictor
        self.notes = () if note is None else (note,)
        self._check_d_at_supply = predictor is not None and n_trials is None


class SwiftHyperbandScheduler(CoreTrialScheduler):
    """Ray Tune scheduler: :class:`hpo_node.hyperband.SwiftHyperband` with ``predictor`` (made
    guarded, and ``d`` checked by :func:`swift_d_rule`, as in :class:`SwiftASHAScheduler`)."""

    def __init__(
        self,
        max_resource: int,
        eta: int = 3,
        predictor: Callable[[], Predictor] | None = None,
        *,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        options = kwargs.pop("options", None)
        if predictor is not None:
            predictor, kwargs["log"] = ensure_guarded(predictor, kwargs.get("log"))
        core, note = _swift_core("swift-hyperband", options, None, max_resource=max_resource,
                                 eta=eta, predictor=predictor, seed=seed)
        super().__init__(core, **kwargs)
        self.predictor = predictor
        self.notes = () if note is None else (note,)


def _judged_per_rung(core: Scheduler, fixed_trials: bool, n_trials: int) -> dict[int, int]:
    """Trials that reach each rung resource above the lowest, over the whole study: with
    Swift-ASHA ``floor(n / eta^k)`` at rung ``k``; with Swift-Hyperband the trials of every bracket
    still running when it gets there."""
    from hpo_node.core import hyperband_brackets

    r_max, eta = int(core.max_resource), int(core.eta)  # type: ignore[attr-defined]
    if fixed_trials:
        brackets = hyperband_brackets(r_max, eta)
        rungs = sorted({r for _, rounds in brackets for _, r in rounds})
        out = dict.fromkeys(rungs[1:], 0)
        for _, rounds in brackets:
            for r in out:
                out[r] += next((n for n, res in rounds if res >= r), 0)
        return out
    rungs = list(core.rungs)  # type: ignore[attr-defined]
    return {r: n_trials // eta**k for k, r in enumerate(rungs) if k >= 1}


def swift_d_rule(
    core: Scheduler,
    n_trials: int,
    d_given: bool,
    *,
    d_key: str = "options['d']",
    trials_key: str = "n_trials",
    resource_key: str = "max_resource",
) -> tuple[int | None, str | None]:
    """``(d, note)`` for a Swift study (``core``, ``n_trials`` configurations) whose ``d`` no
    rung ever reaches; the one rule of ``hpo-node run`` / ``optimize``
    (:func:`hpo_node.study.build.swift_d`) and of :class:`SwiftASHAScheduler` /
    :class:`SwiftHyperbandScheduler`.

    A Swift predictor for a rung is fitted once ``d`` trials reached it, and only the trials
    judged after that get a prediction, so a rung that at most ``m <= d`` trials reach never gives
    one. When no rung gives one: ``d`` not given (``d_given`` false) and ``m >= 3`` ->
    ``(max(2, m // 2), note)`` (half the largest rung's trials fit the predictor, half are judged
    by it); ``d`` given, or ``m < 3`` -> ``(None, warning)``. ``(None, None)`` when nothing is
    wrong (or ``scale_free``, whose predictor is fitted on windows of every curve, or
    ``rule="gate"`` with a curve-fit forecaster, which fits no predictor). The ``*_key``
    arguments name the settings in the messages.
    """
    if getattr(core, "scale_free", False) or not hasattr(core, "d"):
        return None, None
    if getattr(core, "rule", None) == "gate" and getattr(core, "forecaster", None) != "predictor":
        return None, None
    d = int(core.d)  # type: ignore[attr-defined]
    algo = get_algorithm(core.name, ray=True)
    judged = _judged_per_rung(core, algo.fixed_trials, n_trials)
    m = max(judged.values(), default=0)
    if m > d:
        return None, None
    eta = int(core.eta)  # type: ignore[attr-defined]
    where = (f"{core.name} with {n_trials} configurations, R = {core.max_resource}, "
             f"eta = {eta}: at most {m} trials reach a rung, so with d = {d} no trial would "
             "ever get a prediction")
    if algo.fixed_trials:
        more = f"a larger {resource_key}"
    elif d_given or m >= 3:  # the rung above the lowest gets n // eta: d + 1 need eta (d + 1)
        more = f"more {trials_key} (at least {eta * (d + 1)} for d = {d})"
    else:
        more = f"more {trials_key} (at least {3 * eta} for any prediction)"
    if not d_given and m >= 3:
        new = max(2, m // 2)
        return new, f"note: {where}; d adapted to {new} (set {d_key} to choose, or give {more})"
    fix = f"lower {d_key} below {m}, or give {more}" if m >= 3 else f"give {more}"
    return None, (f"warning: {where}; the study runs as plain "
                  f"{core.name.removeprefix('swift-')}: {fix}")


def _swift_core(name: str, options: Mapping[str, Any] | None, n_trials: int | None,
                **kwargs: Any) -> tuple[Scheduler, str | None]:
    """A Swift core with :func:`swift_d_rule` applied (``d`` adapted when ``options`` leaves it
    unset), and the rule's note, also logged as a warning (``None`` when nothing is wrong)."""
    options = dict(options or {})
    core = make_core(name, n_trials=n_trials, options=options, **kwargs)
    if kwargs.get("predictor") is None:
        return core, None
    needed = get_algorithm(name, ray=True).trials_needed(core.max_resource, kwargs["eta"],
                                                         n_trials)
    if n_trials is None and not get_algorithm(name, ray=True).fixed_trials:
        return core, None  # Tune's num_samples decides; unknown here
    d, note = swift_d_rule(core, needed, "d" in options)
    if note is None:
        return core, None
    if d is not None:
        core = make_core(name, n_trials=n_trials, options={**options, "d": d}, **kwargs)
    logger.warning("%s", note)
    return core, note


def trials_needed(name: str, max_resource: int, eta: int, n_trials: int | None) -> int:
    """Configurations a Ray study must generate for ``name`` (Hyperband fixes its own number)."""
    return get_algorithm(name, ray=True).trials_needed(max_resource, eta, n_trials)
