"""Research instrument: a champion gate for Swift-ASHA, and what forecast accuracy it needs (issue 14).

Not a shipped rule (benchmarks/README.md, "Swift-ASHA: the champion gate"). :class:`ChampionGate`
is Swift-ASHA's forecast rule plus a gate: a trial is paused (on its way to a rung, or instead of
a promotion) when its optimistic forecast at R is above the pessimistic forecast of a *guarded*
trial, both forecast from the same resource ``min(r, r_guard)`` (so a bias shared by forecasts
from one resource cancels). Guarded: every trial that reached R and the *champion*, the trial
whose forecast is best (it changes only when another trial dominates it at the same resource);
when nothing else can run, the champion is trained to R, so every pause is backed by a trial
that reaches R. ``old=True`` keeps today's rung cut as a second reason to pause. ``noise > 0``
replaces the forecasts by the table's true loss at R times log-normal noise of ``noise`` times
the spread measured for the ``svr`` forecasts per resource (unbiased): the accuracy the gate
needs. ``fc=NAME`` replaces the step model by a candidate of the forecaster bake-off
(``asha_forecasters.py``, :class:`asha_forecasters.GateForecaster`: per-resource bias and band
calibrated on held-out curves; ``fc=auto`` picks the candidate at each refit by held-out
top-quarter pair ordering; the last column gives the share of refits per pick).
``final=1|2``: a guard that reached R (its loss there known) dominates a trial only if that
loss is also below the trial's optimistic forecast (``2``: checked only when the guard's own
forecast from the shared resource was too optimistic by more than ``tol``, log): a guard whose
curve turned up late no longer pauses everyone. ``own=1``: a guard that got further than the
shared resource dominates only if its pessimistic forecast from its own newest resource is also
below the trial's optimistic one (a fast starter whose curve has flattened stops pausing late
bloomers); ``own=2``: that only when its mean forecast from there is above the one from the
shared resource by more than ``tol`` (log). ``rmin=N``: no pause from a shared resource below
N. ``zcal=1``, ``reach=X``: ``GateForecaster``'s held-out band floor and horizon reach
(``asha_forecasters.py``). ``top=Q``: a trial within the best share ``Q`` of the trials at
its resource is never paused there (the library's ``protect``). ``sweep=S``: when nothing else
can run, the paused trial that no guard dominates at ``S`` times the band, with the best
optimistic forecast, goes on to the next rung (tried and rejected, benchmarks/README.md).

    .venv/bin/python benchmarks/asha_gates.py --table mlpf --seeds 10 \
        --variants svr:z=0.25:old=1,oracle:old=1,noisy:noise=0.5:z=1
    .venv/bin/python benchmarks/asha_gates.py --table mlpf --seeds 10 \
        --variants svr:fc=last:z=0.5,svr:fc=smooth+pow3:z=0.5:final=2:tol=0.02
"""

from __future__ import annotations

import argparse
import math
import zlib
from typing import Any

import numpy as np
from asha_forecasters import GateForecaster
from hpo_replay import runs
from hpo_rules import load

from hpo_node.asha import ASHA, SwiftASHA
from hpo_node.core import Job, TrialState
from hpo_node.forecast import HorizonForecaster
from hpo_node.predictors import make_predictor_factory
from hpo_node.replay import RunResult

# Spread (log) of the svr forecasts at R around their bias on MLPF, by floor(log2(resource)).
SVR_SPREAD = {0: 0.12, 1: 0.05, 2: 0.013, 3: 0.009, 4: 0.005, 5: 0.004, 6: 0.004}


class ChampionGate(SwiftASHA):
    """Swift-ASHA (forecast rule) with the champion gate (module doc)."""

    def __init__(
        self, *args: Any, old: bool = False, horizon: bool = False, noise: float = 0.0,
        fc: str = "", p: float = 0.5, final: int = 0, tol: float = 0.0, zcal: int = 0,
        reach: float = 0.0, rmin: int = 1, own: int = 0, top: float = 0.0, sweep: float = 0.0, **kw: Any,
    ) -> None:
        super().__init__(*args, rule="forecast", **kw)
        self.old = old
        self.top = self.protect = top  # the library's protection (SwiftASHA._protected)
        self.sweep = sweep
        self.rmin = rmin
        self.own = own
        self.final = final
        self.tol = tol
        self.noise = noise
        if horizon:
            self._forecaster = HorizonForecaster(
                self._support, self.max_resource, z=self.z, min_pairs=self.d,
                max_windows=self.max_windows,
            )
        if fc:
            self._forecaster = GateForecaster(
                fc, self.max_resource, z=self.z, p=p, seed=int(kw.get("seed") or 0),
                zcal=bool(zcal), reach=reach,
            )
        self.counts = {"paused": 0, "held": 0, "forced": 0, "champions": 0, "resumed": 0,
                       "swept": 0}

    def _band(self, keys: list[tuple[str, int]]) -> np.ndarray:
        exact = super()._band(keys)
        if not self.noise:
            return exact
        out = exact.copy()
        for i, (t, r) in enumerate(keys):
            if r >= self.max_resource:
                continue
            sd = self.noise * SVR_SPREAD[min(6, int(math.log2(max(r, 1))))]
            eps = np.random.default_rng(zlib.crc32(f"{t}:{r}".encode())).standard_normal() * sd
            m = math.log(exact[i, 1]) + eps
            out[i] = np.exp([m - self.z * sd, m, m + self.z * sd])
        return out

    def _dominates(self, g: str, t: str, r: int) -> bool:
        """``g``'s pessimistic forecast is below ``t``'s optimistic one, both from one resource."""
        rc = min(r, self._resource(g))
        if rc < max(1, self.rmin):
            return False
        b = self._band([(t, rc), (g, rc)])
        if not (np.isfinite(b[0, 0]) and np.isfinite(b[1, 2]) and b[0, 0] > b[1, 2]):
            return False
        if self.own and self._resource(g) > rc:
            low, mean, high = self._band([(g, self._resource(g))])[0]
            held_up = self.own == 2 and math.log(mean) <= math.log(b[1, 1]) + self.tol
            if not held_up and not (np.isfinite(high) and b[0, 0] > high):
                return False  # g's forecast from its newest resource does not hold up
        if not self.final or self._resource(g) < self.max_resource:
            return True
        truth = self._curve[g][self.max_resource - 1]
        if self.final == 2 and math.log(truth) <= math.log(b[1, 1]) + self.tol:
            return True  # g's forecast from rc was not too optimistic (by more than tol, log)
        low = self._band([(t, rc if self.final == 2 else r)])[0, 0]
        return bool(np.isfinite(low) and low > truth)  # t must also miss g's loss at R

    def _observe(self, t: str, r: int) -> None:
        """The library's champion rule (``SwiftASHA._observe``), counted."""
        before = self._champ
        super()._observe(t, r)
        if self._champ is not None and self._champ != before:
            self.counts["champions"] += 1

    def _on_report(self, trial_id: str, resource: int, loss: float) -> Any:
        self._observe(trial_id, resource)
        return super()._on_report(trial_id, resource, loss)

    def _cannot_make_cut(self, trial_id: str, resource: int, k: int) -> bool:
        if trial_id == self._champ or self._leads(trial_id, resource):
            return False
        if self._gated(trial_id, resource):
            self.counts["paused"] += 1
            return True
        return self.old and super()._cannot_make_cut(trial_id, resource, k)

    def _forecast_resumable(self, k: int) -> str | None:
        waiting = self._waiting[k]
        for t, r in sorted(waiting.items(), key=lambda x: self._order.index(x[0])):
            if self._state[t] != TrialState.PAUSED or self._gated(t, int(r)):
                continue
            if self.old and SwiftASHA._cannot_make_cut(self, t, int(r), k):
                continue
            self.counts["resumed"] += 1
            return t
        return None

    def _promotable(self, k: int) -> str | None:
        while True:
            t = super()._promotable(k)
            if t is None or not self._gated(t, self.rungs[k]):
                return t
            self.counts["held"] += 1
            self._promoted[k].append(t)
            self._phantom[k + 1].append(t)
            self._waiting[k + 1][t] = float(self.rungs[k])

    def _next_job(self) -> Job | None:
        job = super()._next_job()
        if job is not None:
            return job
        job = self._force_champion()  # the library's: the paused champion to R
        if job is not None:
            self.counts["forced"] += 1
            return job
        if self.sweep and not any(s == TrialState.RUNNING for s in self._state.values()):
            return self._swept()
        return None


    def _swept(self) -> Job | None:
        """``sweep=1``: when nothing else can run, the paused trial that no guard dominates with
        the best optimistic forecast goes on to the next rung."""
        z = self._forecaster.z
        self._forecaster.z, self._forecasts = z * self.sweep, {}
        try:
            free = [t for t, st in self._state.items() if st == TrialState.PAUSED
                    and t not in self._committed and self._resource(t) < self.max_resource
                    and not self._gated(t, self._resource(t))]
            low = self._band([(t, self._resource(t)) for t in free])[:, 0] if free else None
        finally:
            self._forecaster.z, self._forecasts = z, {}
        if not free or low is None:
            return None
        t = free[int(np.argmin(np.where(np.isnan(low), np.inf, low)))]
        r = self._resource(t)
        for waiting in self._waiting:
            waiting.pop(t, None)
        self._from[t] = r
        self.counts["swept"] = self.counts.get("swept", 0) + 1
        return Job(t, min(x for x in self.rungs if x > r), resume=True)


def _line(label: str, rs: list[RunResult], ref: list[RunResult] | None, extra: str = "") -> str:
    epochs = float(np.mean([r.epochs for r in rs]))
    regret = float(np.mean([np.nan if r.regret is None else r.regret for r in rs]))
    out = f"| {label} | {epochs:.1f} | {regret:.4g} |"
    if ref is None:
        return out + " | | |"
    fewer = 100 * (1 - epochs / np.mean([r.epochs for r in ref]))
    worse = sum(a.regret is None or a.regret > b.regret + 1e-12 for a, b in zip(rs, ref, strict=True))
    return out + f" {fewer:.1f}% | {worse} | {extra}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", default="mlpf")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--variants", default="svr:z=0.25:old=1,oracle:old=1",
                   help="PREDICTOR[:z=Z][:old=0|1][:horizon=0|1][:noise=S][:fc=NAME][:p=P]"
                        "[:final=0|1|2][:tol=T][:own=0|1][:rmin=N][:zcal=0|1][:reach=X], "
                        "comma-separated; PREDICTOR svr, oracle or "
                        "noisy (the oracle with noise S); fc: a candidate of asha_forecasters.py "
                        "as the forecaster, its band growing as horizon**P; final=1: a guard at "
                        "R dominates a trial only if its loss at R is also below the trial's "
                        "optimistic forecast; final=2: that only if the guard's forecast from "
                        "the shared resource was too optimistic by more than T (log); own=1, "
                        "rmin=N, zcal=1, reach=X: see the module doc")
    a = p.parse_args()
    table, r_max, n = load(a.table)
    factories = {
        "svr": make_predictor_factory("svr"),
        "oracle": make_predictor_factory("oracle", curves=table.curves, max_resource=r_max),
    }
    factories["noisy"] = factories["oracle"]
    print(f"### {a.table}, R = {r_max}, eta = 2, W = {a.workers}, {a.seeds} seeds\n")
    print("| rule | epochs | regret | fewer than asha | seeds worse | per run |\n|---|---|---|---|---|---|")
    ref = runs(table, lambda s: ASHA(r_max, 2, n), a.seeds, r_max, a.workers)
    print(_line("asha", ref, None), flush=True)
    for variant in a.variants.split(","):
        name, *opts = variant.split(":")
        kw: dict[str, Any] = {}
        for o in opts:
            key, value = o.split("=")
            if key == "fc":
                kw[key] = value
            else:
                floats = ("z", "noise", "p", "tol", "reach", "top", "sweep")
                kw[key] = float(value) if key in floats else int(value)
        drivers: list[ChampionGate] = []

        def build(
            seed: int, name: str = name, kw: dict[str, Any] = kw,
            drivers: list[ChampionGate] = drivers,
        ) -> ChampionGate:
            d = ChampionGate(r_max, 2, n, factories[name], seed=seed, **kw)
            drivers.append(d)
            return d

        rs = runs(table, build, a.seeds, r_max, a.workers)
        per_run = " ".join(
            f"{k} {np.mean([d.counts[k] for d in drivers]):.1f}" for k in drivers[0].counts
        )
        picks = [c for d in drivers for c in getattr(d._forecaster, "choices", [])]
        if picks:
            per_run += "; picks " + " ".join(
                f"{c} {picks.count(c) / len(picks):.0%}" for c in sorted(set(picks))
            )
        print(_line(f"champion gate {variant}", rs, ref, per_run), flush=True)


if __name__ == "__main__":
    main()
