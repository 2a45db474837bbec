"""Research instrument: the champion gate with forecasts learned across the population of curves
(issue 14, session 8; benchmarks/README.md, "Session 8"). Not in the library.

Two candidates in :mod:`hpo_node.curvefit`'s interface (``fit(curves)``, ``predict(prefixes,
target)`` on log curves), run under the library's gate (:func:`gate_variants.compare`, W = 8,
eta = 2, against ASHA) as the forecaster's only candidate (the library's held-out calibration
and band unchanged):

- ``cv`` (a ceiling, not a forecaster): per ``(e, t)`` a ridge regression of ``log L(t) - log
  L(e)`` on the log curve at ``e * (1, 3/4, 1/2, 3/8, 1/4, 1/8)`` minus ``log L(e)`` and on
  ``log L(e)`` itself, fitted on the *whole table* by 5-fold cross-validation over its rows (a
  trial's forecast comes from the fold that did not contain it; the row is found by its
  prefix). It is what a population model could do if every curve were known to R. ``cv-shape``:
  the same without the level ``log L(e)`` (a scale-free model, as a prior fitted on other
  tables would be).
- ``ar`` (what a run can do): a doubling autoregression fitted on the curves known at the refit:
  ``log L(2e) - log L(e)`` on ``(1, log L(e), and the drops over the last three doublings)``,
  one ridge model per ``floor(log2 e)`` with >= 20 pairs (a higher ``k`` uses the highest fitted
  one), iterated from ``e`` to the target (the last step interpolated in ``log2 t``). ``ar-hold``:
  iterated only up to ``2^(k_max + 1)`` (``k_max`` the highest fitted ``k``), held there beyond
  (the calibration's bias per doubling covers the rest, as for ``last``).

    cd benchmarks && nice -n 5 ../.venv/bin/python gate_population.py --tables synthetic-12 \
        --forecaster cv --variants ",rmin=2"
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
from gate_variants import compare
from hpo_rules import load
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold

from hpo_node import curvefit

FloatArray = curvefit.FloatArray

FRACTIONS = (1.0, 0.75, 0.5, 0.375, 0.25, 0.125)
"""Where :class:`TableRidge` reads a prefix of length ``e``: ``e * f``, rounded, at least 1."""


class TableRidge(curvefit.Last):
    """The ``cv`` ceiling (module doc) for the table set by :meth:`use`."""

    log_curves: FloatArray = np.zeros((0, 0))
    level = True
    _cache: ClassVar[dict[tuple[int, int], FloatArray]] = {}

    @classmethod
    def use(cls, curves: FloatArray, level: bool) -> None:
        """Fit on ``curves`` ``(rows, epochs)`` (losses; lazily, per ``(e, t)``)."""
        cls.log_curves, cls.level, cls._cache = np.log(curves), level, {}

    def _features(self, e: int) -> FloatArray:
        lc = self.log_curves
        idx = sorted({max(0, round(e * f) - 1) for f in FRACTIONS})
        x = lc[:, idx] - lc[:, [e - 1]]
        return np.c_[x, lc[:, e - 1]] if self.level else x

    def _cv(self, e: int, t: int) -> FloatArray:
        if (e, t) not in self._cache:
            lc = self.log_curves
            x, y = self._features(e), lc[:, t - 1] - lc[:, e - 1]
            out = np.zeros(y.shape[0])
            for tr, te in KFold(5, shuffle=True, random_state=0).split(x):
                model = Ridge(alpha=1e-3).fit(x[tr], y[tr])
                out[te] = model.predict(x[te]) + lc[te, e - 1]
            self._cache[(e, t)] = out
        return self._cache[(e, t)]

    def _row(self, p: FloatArray) -> int:
        e = p.shape[0]
        return int(np.flatnonzero(np.all(np.abs(self.log_curves[:, :e] - p) < 1e-9, axis=1))[0])

    def predict(self, prefixes: list[FloatArray], target: int | None = None) -> FloatArray:
        r = target or self.max_resource
        return np.array([float(p[min(r, p.shape[0]) - 1]) if p.shape[0] >= r
                         else float(self._cv(p.shape[0], r)[self._row(p)]) for p in prefixes])


def _at(c: FloatArray, x: float) -> float:
    """The log curve ``c`` at epoch ``x`` (1-based, linear between epochs, clamped)."""
    x = min(max(x, 1.0), float(c.shape[0]))
    i = int(x)
    f = x - i
    return float(c[i - 1]) if f == 0 or i >= c.shape[0] else float((1 - f) * c[i - 1] + f * c[i])


def _phi(value: Callable[[float], float], e: float) -> FloatArray:
    """``(1, log L(e), drops over the last three doublings)``, shape ``(5,)``."""
    v = [value(e / 2**j) for j in range(4)]
    return np.array([1.0, v[0], v[0] - v[1], v[1] - v[2], v[2] - v[3]])


class DoublingAR(curvefit.Last):
    """The ``ar`` candidate (module doc)."""

    min_pairs = 20
    ridge = 1e-3
    hold = False

    def __init__(self, max_resource: int) -> None:
        super().__init__(max_resource)
        self.coef: dict[int, FloatArray] = {}

    def fit(self, curves: list[FloatArray]) -> None:
        rows: dict[int, list[tuple[FloatArray, float]]] = {}
        for c in curves:
            for e in range(1, c.shape[0] // 2 + 1):
                rows.setdefault(int(math.log2(e)), []).append(
                    (_phi(lambda x, c=c: _at(c, x), e), float(c[2 * e - 1] - c[e - 1])))
        self.coef = {}
        for k, rs in sorted(rows.items()):
            if len(rs) >= self.min_pairs:
                x = np.array([r[0] for r in rs])
                y = np.array([r[1] for r in rs])
                a = x.T @ x + self.ridge * len(rs) * np.diag([0.0, 1, 1, 1, 1])
                self.coef[k] = np.linalg.solve(a, x.T @ y)

    def _coef(self, e: float) -> FloatArray:
        below = [j for j in self.coef if j <= int(math.log2(e))]
        return self.coef[max(below) if below else min(self.coef)]

    def _one(self, p: FloatArray, t: int) -> float:
        e = p.shape[0]
        if t <= e or not self.coef:
            return float(p[min(t, e) - 1])
        if self.hold:
            t = min(t, max(e, 2 ** (max(self.coef) + 1)))
            if t <= e:
                return float(p[-1])
        ahead: dict[float, float] = {}

        def value(x: float) -> float:
            return _at(p, x) if x <= e else ahead[x]

        at, cur = float(e), float(p[-1])
        while True:
            nxt = cur + float(_phi(value, at) @ self._coef(at))
            if 2 * at >= t:
                return cur + math.log2(t / at) * (nxt - cur)
            at, cur = 2 * at, nxt
            ahead[at] = cur

    def predict(self, prefixes: list[FloatArray], target: int | None = None) -> FloatArray:
        return np.array([self._one(p, target or self.max_resource) for p in prefixes])

    def predict_targets(self, prefix: FloatArray, targets: Sequence[int]) -> list[float]:
        return [self._one(prefix, t) for t in targets]


class HeldAR(DoublingAR):
    """The ``ar-hold`` candidate (module doc)."""

    hold = True


def run(table_name: str, forecaster: str, variants: Sequence[str], seeds: int) -> list[str]:
    """One :func:`gate_variants.compare` line per variant, ``forecaster`` the only candidate."""
    table = load(table_name)[0]
    cls: type[curvefit.Last] = {"ar": DoublingAR, "ar-hold": HeldAR}.get(forecaster, TableRidge)
    if cls is TableRidge:
        TableRidge.use(table.curves, level=forecaster == "cv")
    saved = curvefit.AUTO, dict(curvefit.CANDIDATES)
    curvefit.CANDIDATES[forecaster] = cls
    curvefit.AUTO = (forecaster,)
    try:
        return [compare(table_name, range(seeds), v, False).replace(
            f"| {v or 'library gate'} |", f"| {forecaster} {v} |") for v in variants]
    finally:
        curvefit.AUTO = saved[0]
        curvefit.CANDIDATES.clear()
        curvefit.CANDIDATES.update(saved[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tables", default="synthetic-12")
    p.add_argument("--forecaster", choices=("cv", "cv-shape", "ar", "ar-hold"), default="cv")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--variants", default="", help="gate_variants.py variants, comma-separated")
    a = p.parse_args()
    print("| table | forecaster, variant | fewer than asha | regret (asha) | seeds worse | "
          "seeds better | s |")
    print("|---|---|---|---|---|---|---|")
    for table in a.tables.split(","):
        for line in run(table, a.forecaster, a.variants.split(","), a.seeds):
            print(line, flush=True)


if __name__ == "__main__":
    main()
