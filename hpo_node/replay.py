"""Learning-curve replay: a table of recorded curves as search space, an event-driven simulator.

Table format (``data/README.md``): per-epoch metric columns ``<metric>_<epoch>``, every
other column a hyperparameter. The simulator samples rows without replacement (by seed), feeds each
trial its recorded values epoch by epoch, and runs ``workers`` trials at once; one epoch is one
time unit. Internally values are losses (lower is better): for ``mode="max"`` the metric is negated
and converted back in the results.
"""

from __future__ import annotations

import heapq
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from hpo_node.core import Decision, Job, check_choice, check_int
from hpo_node.search import Searcher

_EPOCH_COL = re.compile(r"^(?P<metric>.+)_(?P<epoch>\d+)$")


@dataclass(frozen=True)
class CurveTable:
    """Recorded learning curves.

    ``curves`` ``(n_rows, n_epochs)`` in loss orientation (lower is better; the metric negated for
    ``mode="max"``), ``hparams`` ``(n_rows, n_hparams)`` numeric (categorical columns as codes,
    named in ``categorical``).
    """

    curves: NDArray[np.float64]
    hparams: NDArray[np.float64]
    hparam_names: tuple[str, ...]
    metric: str = "loss"
    mode: str = "min"
    categorical: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, ("min", "max"))
        if self.curves.ndim != 2 or self.curves.shape[0] < 1 or self.curves.shape[1] < 1:
            raise ValueError(f"curves must have shape (rows, epochs), got {self.curves.shape}")
        if not np.all(np.isfinite(self.curves)):
            raise ValueError("curves must be finite: the table has missing or infinite values")
        if self.hparams.shape[0] != self.curves.shape[0]:
            raise ValueError(
                f"hparams must have {self.curves.shape[0]} rows, got {self.hparams.shape[0]}"
            )
        unknown = [c for c in self.categorical if c not in self.hparam_names]
        if unknown:
            raise ValueError(f"categorical must name hparam columns {self.hparam_names}, got {unknown}")

    @property
    def n_rows(self) -> int:
        return int(self.curves.shape[0])

    @property
    def n_epochs(self) -> int:
        return int(self.curves.shape[1])

    def to_metric(self, loss: float) -> float:
        """Internal loss -> the metric's own units."""
        return loss if self.mode == "min" else -loss

    def best_final_loss(self, resource: int | None = None) -> float:
        """Best internal loss at ``resource`` (default: the last epoch) over all rows."""
        r = self.n_epochs if resource is None else resource
        return float(self.curves[:, r - 1].min())

    def hparams_of(self, row: int) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.hparam_names, self.hparams[row], strict=True)}

    def subsample_epochs(self, step: int) -> CurveTable:
        """Every ``step``-th epoch (epochs ``step, 2 step, ...``): a coarser table of the same runs."""
        check_int("step", step, 1)
        return CurveTable(
            self.curves[:, step - 1 :: step].copy(),
            self.hparams,
            self.hparam_names,
            self.metric,
            self.mode,
            self.categorical,
        )

    @classmethod
    def from_arrays(
        cls,
        curves: NDArray[np.float64],
        hparams: NDArray[np.float64] | None = None,
        hparam_names: Sequence[str] | None = None,
        *,
        metric: str = "loss",
        mode: str = "min",
        categorical: Sequence[str] = (),
    ) -> CurveTable:
        """Build a table from metric values ``(rows, epochs)`` in the metric's own units."""
        c = np.asarray(curves, dtype=np.float64)
        h = np.zeros((c.shape[0], 0)) if hparams is None else np.asarray(hparams, dtype=np.float64)
        names = tuple(hparam_names or (f"h{j}" for j in range(h.shape[1])))
        check_choice("mode", mode, ("min", "max"))
        return cls(c if mode == "min" else -c, h, names, metric, mode, tuple(categorical))

    @classmethod
    def from_csv(cls, path: str | Path, metric: str = "loss", mode: str = "min") -> CurveTable:
        """Read a ``<metric>_<epoch>`` CSV, epochs numbered consecutively from 0 or from 1 (the
        first column is the loss after one epoch either way); other metrics' columns numbered
        the same are ignored, every other column is a hyperparameter."""
        import pandas as pd

        df = pd.read_csv(path)
        per_epoch: dict[str, dict[int, str]] = {}
        for col in df.columns:
            m = _EPOCH_COL.match(str(col))
            if m:
                per_epoch.setdefault(m["metric"], {})[int(m["epoch"])] = str(col)
        metrics = {
            name: cols
            for name, cols in per_epoch.items()
            if len(cols) >= 2 and min(cols) in (0, 1)
            and sorted(cols) == list(range(min(cols), min(cols) + len(cols)))
        }
        if metric not in metrics:
            found = ", ".join(sorted(metrics)) or "none"
            raise ValueError(
                f"metric must name per-epoch columns <metric>_0.. or <metric>_1.. (consecutive) "
                f"in {path}, got {metric!r} (found: {found})"
            )
        # other metrics: the groups numbered as the metric's epochs (``units_1, units_2`` beside
        # ``loss_0..loss_26`` stay hyperparameters)
        epochs = sorted(metrics[metric])
        epoch_cols = {c for cols in metrics.values() if sorted(cols) == epochs
                      for c in cols.values()}
        names = [str(c) for c in df.columns if c not in epoch_cols]
        values = df[[metrics[metric][e] for e in epochs]].to_numpy(dtype=np.float64)
        h = np.empty((len(df), len(names)))
        categorical = []
        for j, n in enumerate(names):
            col = df[n]
            if col.dtype.kind in "biuf":
                h[:, j] = col.to_numpy(dtype=np.float64)
            else:
                h[:, j] = pd.factorize(col)[0]
                categorical.append(n)
        return cls.from_arrays(values, h, names, metric=metric, mode=mode, categorical=categorical)


class Driver(Protocol):
    """What the simulator drives: a :class:`hpo_node.core.Scheduler` or an Optuna peer."""

    def add_trial(self, trial_id: str, hparams: dict[str, float] | None = None) -> None: ...

    def set_hparams(self, trial_id: str, hparams: dict[str, float]) -> None: ...

    def next_job(self) -> Job | None: ...

    def report(self, trial_id: str, resource: int, loss: float) -> Decision: ...

    def trials_needed(self) -> int | None: ...

    def predictor_calls(self) -> dict[str, int]: ...

    def close(self) -> None: ...


@dataclass
class RunResult:
    """One replayed run. ``best_loss``/``regret`` in the metric's units (``None``: nothing reached
    R). ``trace`` = ``[(epochs consumed, best final loss so far), ...]`` at each improvement."""

    seed: int
    epochs: int
    best_loss: float | None
    regret: float | None
    makespan: int
    trials_started: int
    reports: int
    predictor_fits: int
    predictor_predicts: int
    decision_seconds: float
    wall_seconds: float
    trace: list[tuple[int, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def simulate(
    table: CurveTable,
    driver: Driver,
    *,
    seed: int,
    max_resource: int,
    workers: int = 1,
    searcher: Searcher | None = None,
) -> RunResult:
    """Replay one run of ``driver`` on ``table``.

    Without ``searcher`` (random search over the table), rows are drawn without replacement in the
    order of ``default_rng(seed).permutation``; as many are added as ``driver.trials_needed()``
    asks for. With a ``searcher``, the driver gets as many trials ``trial-<k>`` without
    configuration; when one first starts, the searcher selects its row among the rows not used yet
    (:meth:`Searcher.select`) and the driver receives its hyperparameters (``set_hparams``). The
    searcher observes every reported loss; a configuration stops being pending when its trial
    pauses or stops, and is pending again when its trial resumes. Events at the same simulated
    time are handled in worker order, then free workers ask for jobs in worker order, so a run is
    deterministic.
    """
    check_int("seed", seed, 0)
    r_max = check_int("max_resource", max_resource, 1)
    w = check_int("workers", workers, 1)
    if r_max > table.n_epochs:
        raise ValueError(f"max_resource must be <= the table's {table.n_epochs} epochs, got {r_max}")
    need = driver.trials_needed()
    if need is None:
        raise ValueError("driver must bound its number of trials (trials_needed() is None)")
    if need > table.n_rows:
        raise ValueError(
            f"the table has {table.n_rows} rows but the algorithm needs {need} configurations"
        )
    t0 = time.perf_counter()
    row_of: dict[str, int] = {}
    unused: list[int] = list(range(table.n_rows))
    if searcher is None:
        for row in np.random.default_rng(seed).permutation(table.n_rows)[:need]:
            tid = f"row-{int(row)}"
            row_of[tid] = int(row)
            driver.add_trial(tid, table.hparams_of(int(row)))
    else:
        for k in range(need):
            driver.add_trial(f"trial-{k}", None)

    def bind(tid: str, chooser: Searcher) -> None:
        i = chooser.select([table.hparams_of(r) for r in unused])
        row_of[tid] = unused.pop(i)
        driver.set_hparams(tid, table.hparams_of(row_of[tid]))

    progress: dict[str, int] = {}
    on_worker: dict[int, str] = {}
    free = list(range(w))
    events: list[tuple[int, int]] = []
    epochs = reports = started = 0
    best: float | None = None
    trace: list[tuple[int, float]] = []
    decision_s = 0.0
    now = 0

    def dispatch(at: int) -> float:
        nonlocal started
        spent = 0.0
        while free:
            t = time.perf_counter()
            job = driver.next_job()
            spent += time.perf_counter() - t
            if job is None:
                break
            if job.trial_id not in progress:
                if searcher is not None:
                    bind(job.trial_id, searcher)
                progress[job.trial_id] = 0
                started += 1
            elif searcher is not None:
                searcher.hold(table.hparams_of(row_of[job.trial_id]))
            wk = free.pop(0)
            on_worker[wk] = job.trial_id
            heapq.heappush(events, (at + 1, wk))
        return spent

    decision_s += dispatch(0)
    while events:
        now = events[0][0]
        batch = []
        while events and events[0][0] == now:
            batch.append(heapq.heappop(events)[1])
        for wk in sorted(batch):
            tid = on_worker[wk]
            res = progress[tid] + 1
            if res > r_max:
                raise RuntimeError(f"trial {tid} was continued past max_resource {r_max}")
            progress[tid] = res
            loss = float(table.curves[row_of[tid], res - 1])
            epochs += 1
            reports += 1
            t = time.perf_counter()
            decision = driver.report(tid, res, loss)
            if searcher is not None:
                config = table.hparams_of(row_of[tid])
                searcher.observe(config, res, loss)
                if decision != Decision.CONTINUE:
                    searcher.release(config)
            decision_s += time.perf_counter() - t
            if res == r_max and (best is None or loss < best):
                best = loss
                trace.append((epochs, table.to_metric(loss)))
            if decision == Decision.CONTINUE:
                heapq.heappush(events, (now + 1, wk))
            else:
                del on_worker[wk]
                free.append(wk)
        free.sort()
        decision_s += dispatch(now)
    calls = driver.predictor_calls()
    table_best = table.best_final_loss(r_max)
    return RunResult(
        seed=seed,
        epochs=epochs,
        best_loss=None if best is None else table.to_metric(best),
        regret=None if best is None else float(best - table_best),
        makespan=now,
        trials_started=started,
        reports=reports,
        predictor_fits=int(calls.get("fit", 0)),
        predictor_predicts=int(calls.get("predict", 0)),
        decision_seconds=decision_s,
        wall_seconds=time.perf_counter() - t0,
        trace=trace,
    )
