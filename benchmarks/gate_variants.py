"""Research instrument: the library's champion gate with one change at a time (issue 14).

:class:`GateVariant` is ``SwiftASHA(rule="gate")`` (:mod:`hpo_node.asha`) with options that are
*not* in the library, each tried on the replay tables to close the synthetic-12 gap and rejected
(benchmarks/README.md, "Swift-ASHA on synthetic-12: one late bloomer"):

- ``hold=skip|keep``: a promotion the gate holds uses no ASHA slot (the library's ``consume``
  counts it as promoted and waiting at the next rung). ``skip``: the next trial in ASHA's order
  is considered in its place; ``keep``: it keeps its place in the top ``floor(size / eta)``,
  the slot stays free until it is no longer dominated or the rung grows.
- ``p=P``: the band of :class:`hpo_node.curvefit.GateForecaster` grows as ``horizon**P``
  (library: 0.5).
- ``rmin=N``: no pause from a shared resource below ``N`` epochs.
- ``protect1=Q``: the best share ``Q`` at epoch 1 is never paused there (elsewhere the
  library's ``protect``).
- ``band1=F``: forecasts from epoch 1 have a band ``F`` times as wide (log).
- ``catchup=1``: when nothing else can run and every configuration has started, rung by rung
  (top first) the best paused trial that ASHA would promote if held trials used no slot, and
  that no guard dominates, goes on to the next rung.
- ``hp=K``: a trial's forecast from ``r`` is shifted by the mean revision (log forecast from the
  newest resource minus log forecast from ``r``) of its ``K`` nearest trials in rank-scaled
  hyperparameter space that trained at least ``2 r`` epochs (at least 3 needed).
- ``fc=perk``: the candidate of the forecaster's ``auto`` choice is chosen per ``k =
  floor(log2 e)`` (:class:`gate_forecasters.PerResource`); ``pow4=1``: the ``pow4`` family
  joins the candidates (:class:`gate_forecasters.Pow4`); ``oracle=1``: forecasts are the
  table's true loss at R (``forecaster="predictor"`` with the table oracle: the ceiling).
- ``hpl=K`` alone: a trial's optimistic forecast from ``r`` is at most the best mean forecast at
  R of its ``K`` nearest hyperparameter neighbours (rank-scaled) that trained ``max(2 r,
  hplr)`` epochs (``hplr`` default 4), also when a paused trial is checked for resuming.
- ``hpl=K:hpq=Q``: a trial is never paused or held from below ``hplr`` epochs while its
  *neighbour estimate* (the mean of the mean forecasts at R, from their newest resource, of its
  ``K`` nearest neighbours among the trials with ``>= hplr`` epochs) is within the best share
  ``Q`` of every started trial's; checked at the pause or hold, not when a paused trial is
  checked for resuming (estimates move, so re-checking them resumes most paused trials).
  ``hpc=1`` instead of ``hpq``: protected while the best such neighbour forecast is at or below
  the champion's mean forecast.

Any other ``key=value`` is a ``SwiftASHA`` keyword (``z``, ``protect``). One line per table and
variant: fewer epochs than ASHA, mean regret (ASHA's), the seeds worse / better than ASHA.
``--trace`` also prints, per seed worse than ASHA, where ASHA's winner was paused or held.

    nice -n 5 .venv/bin/python benchmarks/gate_variants.py --tables synthetic-12,mlpf --seeds 10 \
        --variants "",hold=skip,band1=2
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from gate_forecasters import PerResource, add_pow4
from hpo_rules import load

from hpo_node import curvefit
from hpo_node.asha import ASHA, SwiftASHA
from hpo_node.core import Job, TrialState
from hpo_node.curvefit import GateForecaster
from hpo_node.predictors import make_predictor_factory
from hpo_node.replay import RunResult, simulate

OPTIONS = {"hold": str, "p": float, "rmin": int, "protect1": float, "band1": float,
           "catchup": int, "hp": int, "z": float, "protect": float, "hpl": int, "hplr": int,
           "hpq": float, "hpc": int, "fc": str, "pow4": int, "oracle": int}


class GateVariant(SwiftASHA):
    """The library's gate with the research options of the module doc."""

    def __init__(
        self, *args: Any, hold: str = "consume", p: float = 0.5, rmin: int = 1,
        protect1: float | None = None, band1: float = 1.0, catchup: int = 0, hp: int = 0,
        hpl: int = 0, hplr: int = 4, hpq: float = 0.0, hpc: int = 0, fc: str = "library",
        watch: str | None = None, **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        if hold not in ("consume", "skip", "keep"):
            raise ValueError(f"hold must be 'consume', 'skip' or 'keep', got {hold!r}")
        if fc not in ("library", "perk"):
            raise ValueError(f"fc must be 'library' or 'perk', got {fc!r}")
        if self.forecaster != "predictor":
            self._forecaster = (PerResource if fc == "perk" else GateForecaster)(
                self.forecaster, self.max_resource, z=self.z, p=p, seed=int(kw.get("seed") or 0)
            )
        self.hold, self.rmin, self.protect1, self.band1 = hold, rmin, protect1, band1
        self.catchup, self.hp, self.watch = catchup, hp, watch
        self.hpl, self.hplr, self.hpq = hpl, hplr, hpq
        self.hpc = hpc
        self._hpq_est: dict[str, float] = {}
        self._hpq_at = -1
        self._resuming_now = False
        self._hpl_cache: dict[tuple[str, int], float] = {}
        self._hpl_at = -1
        self.events: list[str] = []  # where ``watch`` was paused or held
        self._rank_x: dict[str, np.ndarray] = {}

    # -- pauses ------------------------------------------------------------------------------

    def _dominates(self, g: str, t: str, r: int) -> bool:
        if min(r, self._resource(g)) < self.rmin:
            return False
        return super()._dominates(g, t, r)

    def _protected(self, t: str, r: int) -> bool:
        if (self.hpq or self.hpc) and not self._resuming_now and self._hp_protected(t, r):
            return True
        if self.protect1 is None or r != 1:
            return super()._protected(t, r)
        at_r = self._losses_at(r)
        return int(np.searchsorted(at_r, self._loss_at(t, r), side="left")) < (
            self.protect1 * at_r.shape[0]
        )

    def _cannot_make_cut(self, trial_id: str, resource: int, k: int) -> bool:
        out = super()._cannot_make_cut(trial_id, resource, k)
        if out and trial_id == self.watch:
            self.events.append(f"paused at {resource} ({self._rank(trial_id, resource)})")
        return out

    def _rank(self, t: str, r: int) -> str:
        at_r = self._losses_at(r)
        return f"rank {int(np.searchsorted(at_r, self._loss_at(t, r))) + 1} of {at_r.shape[0]}"

    # -- forecasts ---------------------------------------------------------------------------

    def _band(self, keys: list[tuple[str, int]]) -> np.ndarray:
        b = super()._band(keys)
        if not self.hp and self.band1 == 1.0 and not self.hpl:
            return b
        b = b.copy()
        for i, (t, r) in enumerate(keys):
            if r >= self.max_resource or not np.all(np.isfinite(b[i])) or b[i, 0] <= 0:
                continue
            if self.hp:
                b[i] = b[i] * np.exp(self._revision(t, r))
            if self.hpl and not self.hpq:
                b[i, 0] = min(b[i, 0], self._hp_low(t, r))
            if self.band1 != 1.0 and r == 1:
                m = np.log(b[i, 1])
                w = self.band1 * (m - np.log(b[i, 0]))
                b[i] = np.exp([m - w, m, m + w])
        return b

    def _hp_low(self, t: str, r: int) -> float:
        """Best mean forecast at R of ``t``'s ``hpl`` nearest hyperparameter neighbours that
        trained at least ``max(2 r, hplr)`` epochs (inf with fewer than ``hpl`` such)."""
        if self._hpl_at != self._reports:
            self._hpl_cache, self._hpl_at = {}, self._reports
        key = (t, r)
        if key in self._hpl_cache:
            return self._hpl_cache[key]
        x = self._ranks()
        need = max(2 * r, self.hplr)
        pool = [j for j in self._order if j != t and self._resource(j) >= need]
        out = np.inf
        if len(pool) >= self.hpl:
            dist = np.array([float(((x[j] - x[t]) ** 2).sum()) for j in pool])
            near = [pool[q] for q in np.argsort(dist, kind="stable")[: self.hpl]]
            f = SwiftASHA._band(self, [(j, self._resource(j)) for j in near])[:, 1]
            f = f[np.isfinite(f)]
            if f.size:
                out = float(f.min())
        self._hpl_cache[key] = out
        return out

    def _forecast_resumable(self, k: int) -> str | None:
        self._resuming_now = True
        try:
            return super()._forecast_resumable(k)
        finally:
            self._resuming_now = False

    def _hp_protected(self, t: str, r: int) -> bool:
        """Whether ``t``'s neighbour estimate ranks in the best ``hpq`` share of the trials at
        ``r``."""
        if r >= self.hplr:
            return False
        est = self._hp_estimates()
        if t not in est:
            return False
        if self.hpc:
            c = self._champion()
            if c is None or c == t:
                return False
            cm = float(SwiftASHA._band(self, [(c, self._resource(c))])[0, 1])
            return bool(est[t] <= cm)
        at_r = list(est.values())
        return sum(v < est[t] for v in at_r) < self.hpq * len(at_r)

    def _hp_estimates(self) -> dict[str, float]:
        """Per started trial: mean of the mean forecasts at R (newest resource) of its ``hpl``
        nearest neighbours among the trials with >= ``hplr`` epochs (none: too few such)."""
        if self._hpq_at == self._reports:
            return self._hpq_est
        self._hpq_at, self._hpq_est = self._reports, {}
        pool = [j for j in self._order if self._resource(j) >= self.hplr]
        if len(pool) < self.hpl + 1:
            return self._hpq_est
        f = SwiftASHA._band(self, [(j, self._resource(j)) for j in pool])[:, 1]
        ok = np.isfinite(f)
        pool = [j for j, o in zip(pool, ok, strict=True) if o]
        f = f[ok]
        if len(pool) < self.hpl + 1:
            return self._hpq_est
        x = self._ranks()
        px = np.array([x[j] for j in pool])
        for t in self._order:
            d = ((px - x[t]) ** 2).sum(axis=1)
            near = [q for q in np.argsort(d, kind="stable") if pool[q] != t][: self.hpl]
            self._hpq_est[t] = float(np.min(f[near]) if self.hpc else np.mean(f[near]))
        return self._hpq_est

    def _ranks(self) -> dict[str, np.ndarray]:
        if len(self._rank_x) != len(self._hparams):
            ids = list(self._hparams)
            names = sorted({k for h in self._hparams.values() for k in h})
            m = np.array([[float(self._hparams[j].get(k, 0.0)) for k in names] for j in ids])
            ranks = np.argsort(np.argsort(m, axis=0, kind="stable"), axis=0) / max(len(ids) - 1, 1)
            self._rank_x = {j: ranks[q] for q, j in enumerate(ids)}
        return self._rank_x

    def _revision(self, t: str, r: int) -> float:
        """Mean log revision of the forecasts of ``t``'s ``hp`` hyperparameter neighbours."""
        x = self._ranks()
        pool = [j for j in self._order if j != t and self._resource(j) >= max(2 * r, r + 1)]
        if len(pool) < 3:
            return 0.0
        dist = np.array([float(((x[j] - x[t]) ** 2).sum()) for j in pool])
        near = [pool[q] for q in np.argsort(dist, kind="stable")[: self.hp]]
        f = SwiftASHA._band(self, [(j, r) for j in near] + [(j, self._resource(j)) for j in near])
        old, new = f[: len(near), 1], f[len(near):, 1]
        ok = np.isfinite(old) & np.isfinite(new) & (old > 0) & (new > 0)
        return float(np.mean(np.log(new[ok]) - np.log(old[ok]))) if ok.sum() >= 3 else 0.0

    # -- promotions --------------------------------------------------------------------------

    def _promotable(self, k: int) -> str | None:
        if self.hold == "consume":
            before = set(self._promoted[k])
            out = super()._promotable(k)
            if self.watch in self._promoted[k] and self.watch not in before and out != self.watch:
                self.events.append(f"held at {self.rungs[k]} ({self._rank(self.watch, self.rungs[k])})")
            return out
        quota = self.rung_size(k) // self.eta
        if len(self._promoted[k]) + len(self._resuming[k]) >= quota:
            return None
        return self._in_order(k, quota, held=set(), skip_gated=self.hold == "skip")

    def _in_order(self, k: int, quota: int, held: set[str], skip_gated: bool) -> str | None:
        """The best paused, unpromoted, undominated member of rung ``k`` among its ``quota``
        best (trials in ``held``, and with ``skip_gated`` dominated ones, take no place)."""
        members, losses = self._members[k], self._losses[k]
        done, seen = set(self._promoted[k]), 0
        for j in sorted(range(len(members)), key=lambda q: (losses[members[q]], q)):
            if seen >= quota:
                break
            t = members[j]
            free = (t not in done and self._state[t] == TrialState.PAUSED
                    and self._resource(t) == self.rungs[k])
            if t in held or (free and self._gated(t, self.rungs[k])):
                if t not in held and not skip_gated:
                    seen += 1
                continue
            seen += 1
            if free:
                return t
        return None

    def _next_job(self) -> Job | None:
        job = super()._next_job()
        if job is not None or not self.catchup:
            return job
        if any(s == TrialState.RUNNING for s in self._state.values()):
            return None
        if self.n_trials is not None and self._started < self.n_trials:
            return None
        for k in range(len(self.rungs) - 2, -1, -1):
            held = {t for t in self._promoted[k]
                    if t in self._waiting[k + 1] and self._state[t] == TrialState.PAUSED}
            if len(self._promoted[k]) - len(held) >= self.rung_size(k) // self.eta:
                continue
            t = self._in_order(k, self.rung_size(k) // self.eta, held, skip_gated=True)
            if t is not None:
                self._promoted[k].append(t)
                self._from[t] = self._resource(t)
                return Job(t, self.rungs[k + 1], resume=True)
        return None


def _parse(variant: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in filter(None, variant.split(":")):
        key, value = item.split("=")
        if key not in OPTIONS:
            raise ValueError(f"unknown option {key!r}; options: {', '.join(OPTIONS)}")
        out[key] = OPTIONS[key](value)
    return out


def _winner(table: Any, run: ASHA) -> str:
    return min(run.rung_members(len(run.rungs) - 1), key=lambda t: run.rung_loss(-1, t))


def compare(table_name: str, seeds: Sequence[int], variant: str, trace: bool) -> str:
    """One line: ``variant`` on ``table_name`` against ASHA (W = 8, eta = 2)."""
    table, r_max, n = load(table_name)
    kw = _parse(variant)
    if kw.pop("oracle", 0):
        kw.update(forecaster="predictor", predictor=make_predictor_factory(
            "oracle", curves=table.curves, max_resource=r_max))
    auto, candidates = curvefit.AUTO, dict(curvefit.CANDIDATES)
    if kw.pop("pow4", 0):
        add_pow4()
    try:
        return _compare(table, table_name, r_max, n, seeds, variant, kw, trace)
    finally:
        curvefit.AUTO = auto
        curvefit.CANDIDATES.clear()
        curvefit.CANDIDATES.update(candidates)


def _compare(table: Any, table_name: str, r_max: int, n: int, seeds: Sequence[int], variant: str,
             kw: dict[str, Any], trace: bool) -> str:
    ref: list[RunResult] = []
    winners: list[str] = []
    for s in seeds:
        a = ASHA(r_max, 2, n)
        ref.append(simulate(table, a, seed=s, max_resource=r_max, workers=8))
        winners.append(_winner(table, a))
    t0 = time.perf_counter()
    runs, notes = [], []
    for s, win in zip(seeds, winners, strict=True):
        d = GateVariant(r_max, 2, n, seed=s, watch=win, **kw)
        runs.append(simulate(table, d, seed=s, max_resource=r_max, workers=8))
        if trace and runs[-1].regret > ref[len(runs) - 1].regret + 1e-12:
            where = "; ".join(d.events) or f"ungated, left at {d._resource(win)} epochs"
            notes.append(f"  seed {s}: ASHA's winner {win} {where}")
    ea, eg = np.mean([r.epochs for r in ref]), np.mean([r.epochs for r in runs])
    ra, rg = np.mean([r.regret for r in ref]), np.mean([r.regret for r in runs])
    worse = [s for s, a, g in zip(seeds, ref, runs, strict=True) if g.regret > a.regret + 1e-12]
    better = [s for s, a, g in zip(seeds, ref, runs, strict=True) if g.regret < a.regret - 1e-12]
    line = (f"| {table_name} | {variant or 'library gate'} | {100 * (1 - eg / ea):.1f}% | "
            f"{rg:.4g} ({ra:.4g}) | {worse} | {better} | {time.perf_counter() - t0:.0f} |")
    return "\n".join([line, *notes])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tables", default="synthetic-12")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--variants", default="", help="comma-separated; each KEY=V[:KEY=V...]")
    p.add_argument("--trace", action="store_true")
    a = p.parse_args()
    print("| table | variant | fewer than asha | regret (asha) | seeds worse | seeds better | s |")
    print("|---|---|---|---|---|---|---|")
    for variant in a.variants.split(","):
        for table in a.tables.split(","):
            print(compare(table, range(a.seeds), variant, a.trace), flush=True)


if __name__ == "__main__":
    main()
