"""Engine-agnostic scheduler core: decisions, jobs, the scheduler interface and shared helpers.

Every algorithm (random search, SHA, Hyperband, ASHA and the predictor-assisted Swift variants)
implements :class:`Scheduler`. An execution engine (the replay simulator, a Ray Tune adapter, an
Optuna pruner) drives it with these calls:

* :meth:`Scheduler.add_trial` registers a configuration that may be started (pending);
* :meth:`Scheduler.next_job` says what a free worker should do next: start a pending trial or resume
  a paused one, training it up to ``Job.resource``; ``None`` means "nothing to start now";
* :meth:`Scheduler.report` receives ``(trial_id, resource, loss)`` after every unit of resource
  (epoch) and answers a :class:`Decision`. Below the job's target it answers ``CONTINUE``
  (schedulers with a decision point may answer ``PAUSE``/``STOP`` earlier); at the target it answers
  ``PAUSE`` (the trial waits, it may be resumed later) or ``STOP`` (the trial is finished);
* :meth:`Scheduler.drain_stopped` lists paused trials the scheduler has since given up on, so that an
  engine can release them;
* :meth:`Scheduler.fail` tells it that a trial was lost (its trainable raised): it is stopped
  where it is and nothing waits for it.

Resources are integers (epochs). A trial resumed from ``r_prev`` to ``r`` trains ``r - r_prev`` more
epochs: nothing is retrained. Losses are "lower is better"; engines negate metrics to maximise.

:meth:`Scheduler.state_dict` returns a versioned, JSON-serialisable checkpoint; loading it into a
scheduler built with the same constructor arguments resumes the run identically.
"""

from __future__ import annotations

import difflib
import enum
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

STATE_VERSION = 1


class Decision(enum.Enum):
    """What a trial does after reporting a result."""

    CONTINUE = "continue"
    PAUSE = "pause"
    STOP = "stop"


@dataclass(frozen=True)
class Job:
    """Train ``trial_id`` from its current resource on, one unit at a time.

    ``resource`` is where the scheduler will decide next; an engine keeps training while
    :meth:`Scheduler.report` answers ``CONTINUE`` (a scheduler may extend the job past
    ``resource``, e.g. Swift-Hyperband continuing a trial from its decision point to the round's
    target). ``resume`` is ``True`` when the trial trained before (a promotion).
    """

    trial_id: str
    resource: int
    resume: bool


class TrialState(enum.Enum):
    """Life cycle of a trial inside a scheduler."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


# ---------------------------------------------------------------------------------------------
# Validation helpers: every message names the argument, its value and the rule.


def check_int(name: str, value: Any, minimum: int) -> int:
    """Return ``value`` as int; ``TypeError`` unless an integer, ``ValueError`` below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_float(
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as float inside ``[low, high]`` (ends open as requested), else raise."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    lo_bad = v <= low if low_open else v < low
    hi_bad = v >= high if high_open else v > high
    if math.isnan(v) or lo_bad or hi_bad:
        lb = "(" if low_open else "["
        hb = ")" if high_open else "]"
        raise ValueError(f"{name} must be in {lb}{low}, {high}{hb}, got {value}")
    return v


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else ``ValueError``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return str(value)


def did_you_mean(unknown: Sequence[Any], known: Sequence[str]) -> str:
    """`` (did you mean 'key'?)`` naming the close matches among ``known`` of the ``unknown``
    keys (:func:`difflib.get_close_matches`; each match ``for`` its key when several are
    unknown), else ``""``."""
    pairs = [(k, m[0]) for k in unknown
             if (m := difflib.get_close_matches(str(k), list(known), n=1))]
    if not pairs:
        return ""
    if len(unknown) == 1:
        return f" (did you mean {pairs[0][1]!r}?)"
    return " (did you mean " + ", ".join(f"{m!r} for {k!r}" for k, m in pairs) + "?)"


# ---------------------------------------------------------------------------------------------
# Resource schedules (Li et al. 2018, "Hyperband", JMLR 18; Li et al. 2020, "ASHA", MLSys).


def s_max_for(max_resource: int, min_resource: int, eta: int) -> int:
    """``floor(log_eta(R / r))`` computed exactly with integers."""
    s = 0
    while min_resource * eta ** (s + 1) <= max_resource:
        s += 1
    return s


def rung_resource(max_resource: int, eta: int, exponent: int) -> int:
    """``R * eta**(-exponent)`` rounded half-to-even, at least 1.

    Half-to-even (Python's ``round``) is the rounding of the Hyperband reference implementations;
    with R = 100, eta = 2 it yields the published 3213 epochs per Hyperband run.
    """
    return max(1, round(Fraction(max_resource, eta**exponent)))


def hyperband_brackets(
    max_resource: int, eta: int, min_resource: int = 1
) -> list[tuple[int, list[tuple[int, int]]]]:
    """Brackets of Hyperband: ``[(s, [(n_i, r_i), ...]), ...]`` for ``s = s_max, ..., 0``.

    ``s_max = floor(log_eta(R/r))``, ``B = (s_max + 1) R``, ``n = ceil(B/R * eta**s / (s+1))``,
    ``n_i = floor(n eta**-i)``, ``r_i = R eta**(i-s)`` (Li et al. 2018, Algorithm 1).
    """
    s_max = s_max_for(max_resource, min_resource, eta)
    out = []
    for s in range(s_max, -1, -1):
        n = -((-(s_max + 1) * eta**s) // (s + 1))
        rounds = [(n // eta**i, rung_resource(max_resource, eta, s - i)) for i in range(s + 1)]
        out.append((s, rounds))
    return out


def bracket_cost(rounds: Sequence[tuple[int, int]]) -> int:
    """Epochs of one synchronous SHA bracket with resumption: ``sum n_i (r_i - r_{i-1})``."""
    total, prev = 0, 0
    for n_i, r_i in rounds:
        total += n_i * (r_i - prev)
        prev = r_i
    return total


def decision_point(r_prev: int, r_target: int, known_curve: float) -> int:
    """``r_prev + ceil((r_target - r_prev) * known_curve)`` (García Amboage et al. 2023)."""
    return r_prev + math.ceil((r_target - r_prev) * known_curve - 1e-12)


def top_k(ids: Sequence[str], losses: Mapping[str, float], k: int) -> list[str]:
    """The ``k`` ids with the lowest loss; ties keep the order of ``ids`` (stable)."""
    order = sorted(range(len(ids)), key=lambda j: (losses[ids[j]], j))
    return [ids[j] for j in order[:k]]


# ---------------------------------------------------------------------------------------------


class Scheduler(ABC):
    """Base of every algorithm: trial bookkeeping, report validation, checkpointing.

    Subclasses implement :meth:`_next_job`, :meth:`_on_report` and the ``_extra_state`` pair.
    A trial's full reported curve is kept (``curve[j]`` = loss after ``j + 1`` units), the Swift
    predictors need it.
    """

    name: ClassVar[str] = "base"

    def __init__(self, max_resource: int) -> None:
        self.max_resource = check_int("max_resource", max_resource, 1)
        self._order: list[str] = []
        self._state: dict[str, TrialState] = {}
        self._curve: dict[str, list[float]] = {}
        self._hparams: dict[str, dict[str, float]] = {}
        self._target: dict[str, int] = {}
        self._pending: list[str] = []
        self._stopped_out: list[str] = []
        self._predicted: dict[str, tuple[float, float, int | None]] = {}

    # -- public interface --------------------------------------------------------------------

    def add_trial(self, trial_id: str, hparams: Mapping[str, float] | None = None) -> None:
        """Register a configuration that the scheduler may start (FIFO order)."""
        if not isinstance(trial_id, str) or not trial_id:
            raise TypeError(f"trial_id must be a non-empty str, got {trial_id!r}")
        if trial_id in self._state:
            raise ValueError(f"trial_id must be new, got {trial_id!r} which was already added")
        self._order.append(trial_id)
        self._state[trial_id] = TrialState.PENDING
        self._curve[trial_id] = []
        self._hparams[trial_id] = {str(k): float(v) for k, v in (hparams or {}).items()}
        self._pending.append(trial_id)

    def set_hparams(self, trial_id: str, hparams: Mapping[str, float]) -> None:
        """Attach the configuration of a trial added without one (an engine whose searcher chooses
        it when the trial starts); allowed until the trial's first report."""
        if trial_id not in self._state:
            raise ValueError(f"trial_id must name an added trial, got {trial_id!r}")
        if self._curve[trial_id]:
            raise ValueError(f"trial_id must not have reported yet, got {trial_id!r}")
        self._hparams[trial_id] = {str(k): float(v) for k, v in hparams.items()}

    def next_job(self) -> Job | None:
        """What a free worker should run next, or ``None`` when nothing can start now."""
        job = self._next_job()
        if job is not None:
            tid = job.trial_id
            if tid in self._pending:
                self._pending.remove(tid)
            self._predicted.pop(tid, None)
            self._state[tid] = TrialState.RUNNING
            self._target[tid] = job.resource
        return job

    def report(self, trial_id: str, resource: int, loss: float) -> Decision:
        """Record ``loss`` of ``trial_id`` after ``resource`` units and decide what it does next.

        Reports must come one unit at a time (``resource`` = previous resource + 1) for a running
        trial; the loss must be finite.
        """
        if self._state.get(trial_id) != TrialState.RUNNING:
            state = self._state.get(trial_id)
            raise ValueError(
                f"trial_id must name a running trial, got {trial_id!r} "
                f"(state {state.value if state else 'unknown'})"
            )
        expected = len(self._curve[trial_id]) + 1
        if resource != expected:
            raise ValueError(
                f"resource must be the next unit {expected} for trial {trial_id!r}, got {resource}"
            )
        loss = float(loss)
        if not math.isfinite(loss):
            raise ValueError(f"loss must be finite, got {loss}")
        self._curve[trial_id].append(loss)
        decision = self._on_report(trial_id, resource, loss)
        if decision != Decision.CONTINUE:
            self._state[trial_id] = (
                TrialState.PAUSED if decision == Decision.PAUSE else TrialState.STOPPED
            )
        elif resource >= self._target[trial_id]:
            raise RuntimeError(f"{self.name}: CONTINUE past the job target of {trial_id!r}")
        return decision

    def fail(self, trial_id: str) -> None:
        """The engine lost ``trial_id`` for good (its trainable raised and will not be retried):
        the trial is stopped where it is, never started, resumed or promoted again, and no
        barrier waits for it; its reported curve is kept. Stopping a stopped trial does nothing.
        """
        state = self._state.get(trial_id)
        if state is None:
            raise ValueError(f"trial_id must name an added trial, got {trial_id!r}")
        if state == TrialState.STOPPED:
            return
        if trial_id in self._pending:
            self._pending.remove(trial_id)
        self._predicted.pop(trial_id, None)
        self._state[trial_id] = TrialState.STOPPED
        self._on_fail(trial_id)

    def drain_stopped(self) -> list[str]:
        """Paused trials the scheduler has stopped since the last call (engines release them)."""
        out, self._stopped_out = self._stopped_out, []
        return out

    def prediction(self, trial_id: str) -> tuple[float, float] | None:
        """``(mean, spread)`` of the predicted loss by which the scheduler paused or stopped
        ``trial_id`` (spread: the predictor's, or the half-width of a forecast band), or ``None``
        when no prediction decided its current pause or stop. Engines report it with the trial."""
        hit = self._predicted.get(trial_id)
        return None if hit is None else (hit[0], hit[1])

    def prediction_at(self, trial_id: str) -> int | None:
        """The resource (epoch) that :meth:`prediction` forecasts the loss at: the next rung
        (``rule="paper"``) or ``max_resource`` (forecast rules, the gate); ``None`` without a
        prediction, or for one restored from a checkpoint that predates this record."""
        hit = self._predicted.get(trial_id)
        return None if hit is None else hit[2]

    @property
    def n_pending(self) -> int:
        """Number of added trials not started yet."""
        return len(self._pending)

    def trials_needed(self) -> int | None:
        """How many configurations a complete run consumes, or ``None`` when unbounded."""
        return None

    def predictor_calls(self) -> dict[str, int]:
        """Predictor ``fit``/``predict`` call counts (zero for algorithms without predictor)."""
        return {"fit": 0, "predict": 0}

    def close(self) -> None:
        """Release external resources (predictor models on a gateway); the state is kept."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Versioned JSON-serialisable checkpoint of the whole scheduler state."""
        return {
            "version": STATE_VERSION,
            "algorithm": self.name,
            "order": list(self._order),
            "state": {t: s.value for t, s in self._state.items()},
            "curve": {t: list(c) for t, c in self._curve.items()},
            "hparams": {t: dict(h) for t, h in self._hparams.items()},
            "target": dict(self._target),
            "pending": list(self._pending),
            "stopped_out": list(self._stopped_out),
            "predicted": {t: list(v) for t, v in self._predicted.items()},
            "extra": self._extra_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a checkpoint made by :meth:`state_dict` of the same algorithm."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping, got {type(state).__name__}")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"state version must be {STATE_VERSION}, got {state.get('version')!r}")
        if state.get("algorithm") != self.name:
            raise ValueError(
                f"state algorithm must be {self.name!r}, got {state.get('algorithm')!r}"
            )
        self._order = list(state["order"])
        self._state = {t: TrialState(v) for t, v in state["state"].items()}
        self._curve = {t: [float(x) for x in c] for t, c in state["curve"].items()}
        self._hparams = {t: dict(h) for t, h in state["hparams"].items()}
        self._target = {t: int(v) for t, v in state["target"].items()}
        self._pending = list(state["pending"])
        self._stopped_out = list(state["stopped_out"])
        self._predicted = {
            t: (float(v[0]), float(v[1]), int(v[2]) if len(v) > 2 and v[2] is not None else None)
            for t, v in state.get("predicted", {}).items()
        }
        self._load_extra_state(state["extra"])

    # -- helpers for subclasses ---------------------------------------------------------------

    def _take_pending(self) -> str | None:
        return self._pending[0] if self._pending else None

    def _resource(self, trial_id: str) -> int:
        return len(self._curve[trial_id])

    def _loss_at(self, trial_id: str, resource: int) -> float:
        return self._curve[trial_id][resource - 1]

    def _record_prediction(self, trial_id: str, mean: float, margin: float, at: int) -> None:
        """Remember the prediction (of the loss at resource ``at``) by which ``trial_id`` is
        being paused or stopped."""
        self._predicted[trial_id] = (float(mean), float(margin), int(at))

    def _stop_paused(self, trial_id: str) -> None:
        if self._state[trial_id] == TrialState.PAUSED:
            self._state[trial_id] = TrialState.STOPPED
            self._stopped_out.append(trial_id)

    def _on_fail(self, trial_id: str) -> None:
        """Hook of :meth:`fail` (the trial's state is already ``STOPPED``): drop it from what the
        algorithm waits for or may resume; the base keeps nothing else."""
        return None

    @abstractmethod
    def _next_job(self) -> Job | None: ...

    @abstractmethod
    def _on_report(self, trial_id: str, resource: int, loss: float) -> Decision: ...

    @abstractmethod
    def _extra_state(self) -> dict[str, Any]: ...

    @abstractmethod
    def _load_extra_state(self, extra: Mapping[str, Any]) -> None: ...
