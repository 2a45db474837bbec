"""The order in which a study's epochs were reported (for ``best_vs_epochs.png``)."""

from __future__ import annotations

import math
from typing import Any

from ray.tune.callback import Callback

TRACE_VERSION = 1


class EpochTrace(Callback):
    """Records ``(trial_id, epoch, value)`` for each new epoch Tune receives, in arrival order.

    A result whose ``resource_attr`` is not above the trial's last recorded epoch (Tune repeats
    the last result when a trial ends) is not a new epoch. Its state travels with Tune's experiment
    snapshots, so a resumed study keeps the epochs of the interrupted run.
    """

    def __init__(self, metric: str, resource_attr: str = "epoch") -> None:
        self.metric = metric
        self.resource_attr = resource_attr
        self.events: list[tuple[str, int, float | None]] = []
        self._last: dict[str, int] = {}

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any,
                        result: dict[str, Any], **info: Any) -> None:
        tid = trial.trial_id
        epoch, value = result.get(self.resource_attr), result.get(self.metric)
        if isinstance(epoch, bool) or not isinstance(epoch, int | float) or value is None:
            return
        if int(epoch) <= self._last.get(tid, 0):
            return
        self._last[tid] = int(epoch)
        v = float(value)
        self.events.append((tid, int(epoch), v if math.isfinite(v) else None))

    def get_state(self) -> dict[str, Any] | None:
        return {"version": TRACE_VERSION, "events": [list(e) for e in self.events]}

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("version") != TRACE_VERSION:
            raise ValueError(f"trace version must be {TRACE_VERSION}, got {state.get('version')!r}")
        self.events = [(str(t), int(e), v) for t, e, v in state["events"]]
        self._last = {}
        for tid, epoch, _ in self.events:
            self._last[tid] = max(epoch, self._last.get(tid, 0))
