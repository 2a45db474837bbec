"""Our searchers (:mod:`hpo_node.search`) as Ray Tune searchers, combined with our schedulers.

:class:`TuneSearcher` is a ``ray.tune.search.Searcher`` over an engine-agnostic
:class:`hpo_node.search.Searcher`:

* ``suggest(trial_id)`` returns the searcher's next configuration (the sampled entries; the fixed
  ones come from Tune's ``param_space``); it is pending from then on;
* ``on_trial_result`` feeds every reported epoch to ``observe(config, epoch, loss)``
  (multi-fidelity); a trial the scheduler paused is released, a resumed one is pending again;
* ``on_trial_complete`` observes the last result, if any, and releases the configuration;
* ``save`` / ``restore`` write / read the searcher's ``state_dict`` and the trials' configurations
  as JSON (Tune calls them with its experiment snapshots and on ``Tuner.restore``).

Trials on demand. Tune creates a trial each time ``suggest`` returns a configuration, and
:class:`hpo_node.integrations.ray_tune.CoreTrialScheduler` holds every new trial back until its
core starts it. If the
searcher suggested everything at once, every configuration would be chosen before any result. With
a scheduler attached (:meth:`TuneSearcher.attach`), the searcher suggests only what the core is
about to start:

* asynchronous cores (ASHA, Swift-ASHA): one configuration waiting (``lookahead``), chosen when the
  previous one starts;
* synchronous cores (Hyperband, Swift-Hyperband): a bracket starts only with all its ``n``
  configurations pending, so once nothing runs or waits for a promotion (the previous bracket is
  over) the searcher suggests the next bracket's ``n`` at once, with every result so far — as in
  BOHB. Suggesting nothing there would deadlock: the bracket waits for trials while Tune waits for
  the scheduler.

The scheduler's ``more_trials`` hook keeps the study from ending while the searcher can still
supply trials. The total is bounded by ``max_trials`` (the study's ``trials``, or what Hyperband's
brackets consume); ``suggest`` answers ``FINISHED`` after it. Tune's ``ConcurrencyLimiter`` is
deliberately not used: it counts paused trials (waiting at a rung for a promotion) as running and
would stop suggesting while the scheduler waits for new trials; concurrency is bounded by the
scheduler's ``max_concurrent`` instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher as RaySearcher

from hpo_node.core import check_choice, check_int
from hpo_node.integrations.ray_tune import CoreTrialScheduler, merge_metric_mode
from hpo_node.search import AllPending, Searcher
from hpo_node.space import Space

ADAPTER_STATE_VERSION = 1


class StudySpace:
    """A study's ``[space]`` (an :class:`hpo_node.space.Space`, or its TOML tables) as the
    :class:`SearchSpace` of our searchers; :meth:`to_trial` turns a searcher configuration into
    trial values. The mapping of each type lives in :mod:`hpo_node.space` (``quniform``: an
    :class:`Int` over the multiples ``k q`` inside ``[low, high]``).
    """

    def __init__(self, spec: Space | Mapping[str, Mapping[str, Any]]) -> None:
        self.spec = Space.parse(spec)
        self.space = self.spec.search_space()

    def to_trial(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Searcher configuration -> the trial's values (quantised entries as ``k q``)."""
        return self.spec.to_trial(config)


class TuneSearcher(RaySearcher):
    """A Ray Tune ``Searcher`` over an :class:`hpo_node.search.Searcher` (see the module doc).

    ``inner``: our searcher on ``study_space.space``; ``max_trials``: configurations in all
    (``None``: unbounded, Tune's ``num_samples`` decides); ``resource_attr``: the result key with
    the resource (epochs); ``lookahead``: configurations kept waiting for an asynchronous scheduler.
    Without :meth:`attach` every ``suggest`` call is answered (plain Tune schedulers).
    """

    def __init__(
        self,
        inner: Searcher,
        study_space: StudySpace,
        *,
        metric: str | None = None,
        mode: str | None = None,
        resource_attr: str = "epoch",
        max_trials: int | None = None,
        lookahead: int = 1,
    ) -> None:
        if not isinstance(inner, Searcher):
            raise TypeError(f"inner must be an hpo_node.search.Searcher, got {type(inner).__name__}")
        if not isinstance(study_space, StudySpace):
            raise TypeError(f"study_space must be a StudySpace, got {type(study_space).__name__}")
        if inner.space.names != study_space.space.names:
            raise ValueError(
                f"inner must search the study's space: its parameters are {list(inner.space.names)}, "
                f"the study's {list(study_space.space.names)}"
            )
        if not isinstance(resource_attr, str) or not resource_attr:
            raise TypeError(f"resource_attr must be a non-empty string, got {resource_attr!r}")
        if mode is not None:
            check_choice("mode", mode, ("min", "max"))
        super().__init__(metric=metric, mode=mode)
        self.inner = inner
        self.study_space = study_space
        self.resource_attr = resource_attr
        self.max_trials = None if max_trials is None else check_int("max_trials", max_trials, 1)
        self.lookahead = check_int("lookahead", lookahead, 1)
        self.scheduler: CoreTrialScheduler | None = None
        self.configs: dict[str, dict[str, Any]] = {}
        self._done: set[str] = set()
        self._exhausted = False

    def attach(self, scheduler: CoreTrialScheduler) -> None:
        """Suggest only what ``scheduler``'s core is about to start (see the module doc)."""
        if not isinstance(scheduler, CoreTrialScheduler):
            raise TypeError(
                f"scheduler must be a CoreTrialScheduler, got {type(scheduler).__name__}"
            )
        self.scheduler = scheduler
        scheduler.more_trials = self.more_trials

    # -- Ray Tune interface ------------------------------------------------------------------

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        merged = merge_metric_mode(self._metric, self._mode, metric, mode)
        if merged is None:
            return False
        self._metric, self._mode = merged
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if trial_id in self.configs:
            return self.study_space.to_trial(self.configs[trial_id])
        if not self._may_create():
            return RaySearcher.FINISHED
        if self.scheduler is not None and self.wanted() <= 0:
            return None
        try:
            config = self.inner.suggest()
        except AllPending:
            # Every configuration of a small discrete space is pending: wait while some trial can
            # still release one; otherwise no new configuration can come.
            if self._live():
                return None
            self._exhausted = True
            return RaySearcher.FINISHED
        self.configs[trial_id] = config
        return self.study_space.to_trial(config)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        config = self.configs.get(trial_id)
        if config is None or trial_id in self._done:
            return
        self._observe(config, result)
        rec = None if self.scheduler is None else self.scheduler.records.get(trial_id)
        if rec is not None and rec.status == "paused":
            self.inner.release(config)
        else:
            self.inner.hold(config)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        config = self.configs.get(trial_id)
        if config is None:
            return
        if result and not error:
            self._observe(config, result)
        self.inner.release(config)
        self._done.add(trial_id)

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps(self.get_state()))

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(json.loads(Path(checkpoint_path).read_text()))

    # -- state ---------------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """Versioned JSON-serialisable state: the searcher's ``state_dict`` and the trials."""
        return {
            "version": ADAPTER_STATE_VERSION,
            "searcher": self.inner.state_dict(),
            "configs": self.configs,
            "done": sorted(self._done),
            "exhausted": self._exhausted,
        }

    def set_state(self, state: dict) -> None:
        """Restore :meth:`get_state`."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping, got {type(state).__name__}")
        if state.get("version") != ADAPTER_STATE_VERSION:
            raise ValueError(
                f"state version must be {ADAPTER_STATE_VERSION}, got {state.get('version')!r}"
            )
        self.inner.load_state_dict(state["searcher"])
        self.configs = {str(t): dict(c) for t, c in state["configs"].items()}
        self._done = set(state["done"])
        self._exhausted = bool(state.get("exhausted", False))

    # -- trials on demand ----------------------------------------------------------------------

    def _may_create(self) -> bool:
        if self._exhausted:
            return False
        return self.max_trials is None or len(self.configs) < self.max_trials

    def _live(self) -> bool:
        """Some trial may still release its configuration (it runs or waits)."""
        if self.scheduler is None:
            return any(t not in self._done for t in self.configs)
        return any(r.status in ("running", "paused") for r in self.scheduler.records.values())

    def more_trials(self) -> bool:
        """Whether trials the attached scheduler waits for can still come from this searcher."""
        return self._may_create() and self.wanted() > 0

    def wanted(self) -> int:
        """Configurations the attached scheduler's core needs now, beyond those already waiting."""
        sched = self.scheduler
        if sched is None:
            return 1
        core = sched.core
        waiting = core.n_pending
        brackets = getattr(core, "brackets", None)  # the synchronous cores' plan
        if brackets is None:
            return self.lookahead - waiting
        if self._live():
            return 0
        taken = len(sched.records) - waiting
        total = 0
        for rounds in brackets:
            total += rounds[0][0]
            if total > taken:
                return total - taken - waiting
        return 0

    def _observe(self, config: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        metric = self._metric
        if metric is None or metric not in result or self.resource_attr not in result:
            return
        resource, value = result[self.resource_attr], float(result[metric])
        if isinstance(resource, bool) or not float(resource).is_integer() or resource < 1:
            return
        if not math.isfinite(value):
            return
        self.inner.observe(config, int(resource), -value if self._mode == "max" else value)
