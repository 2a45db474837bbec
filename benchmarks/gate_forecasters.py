"""Research forecasters for the champion gate (issue 14, session 7), not in the library.

- :func:`add_pow4`: the bake-off's ``pow4`` candidate (:class:`asha_forecasters.Pow4`:
  ``log(c + a (1 + t / tau)**-alpha)``, Domhan, Springenberg & Hutter, IJCAI 2015; the family
  :func:`hpo_node.synthetic.synthetic_table` draws from) joins the ``auto`` choice.
- :class:`PerResource`: ``GateForecaster("auto")`` with the candidate chosen *per* ``k = floor(log2
  e)`` (the library chooses one for every resource, and its held-out pairs from one and two epochs,
  where every candidate is the loss at ``e``, decide most choices: "last" wins the ties).

Used by ``gate_variants.py`` (options ``fc=perk``, ``pow4=1``) and ``asha_forecasters.py``-style
bake-offs; results in benchmarks/README.md ("Session 7").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from hpo_node import curvefit as cf

FloatArray = cf.FloatArray


def add_pow4() -> None:
    """Make ``pow4`` (:class:`asha_forecasters.Pow4`) a candidate of the library's ``auto``
    choice (process-wide)."""
    from asha_forecasters import Pow4

    cf.CANDIDATES["pow4"] = Pow4
    if "pow4" not in cf.AUTO:
        cf.AUTO = (*cf.AUTO, "pow4")


class PerResource(cf.GateForecaster):
    """``GateForecaster("auto")`` choosing its candidate per ``k = floor(log2 e)`` (module doc);
    no checkpoint (research only)."""

    def update(self, curves: Mapping[str, Sequence[float]], order: Sequence[str]) -> bool:
        known = self._due(curves, order)
        if known is None:
            return False
        held = self._held_out(cf.AUTO, known, int(self.rng.integers(2**31 - 1)), True)
        ks = sorted({int(math.log2(row[1])) for nm in cf.AUTO for row in held[nm]})
        self._pick: dict[int, str] = {}
        for k in ks:
            score = {}
            for nm in cf.AUTO:
                wrong, total = cf.ordering_error([r for r in held[nm] if int(math.log2(r[1])) == k])
                score[nm] = wrong / total if total else math.inf
            self._pick[k] = min(cf.AUTO, key=lambda nm: score[nm])
        self.choices.append(",".join(f"{k}:{v}" for k, v in self._pick.items()))
        self._models: dict[str, cf.Last] = {}
        for nm in set(self._pick.values()) or {"last"}:
            self._models[nm] = cf.CANDIDATES[nm](self.max_resource)
            self._models[nm].fit(known)
        self._model = next(iter(self._models.values()))
        self._chosen = "auto"
        found: dict[int, list[tuple[float, float]]] = {}
        for k, nm in self._pick.items():
            for i, e, t, pred, truth in held[nm]:
                if int(math.log2(e)) == k and t == known[i].shape[0]:
                    found.setdefault(k, []).append((pred - truth, math.log2(t / e)))
        self._calibrate(found)
        self.version += 1
        return True

    def forecast(self, curves: Sequence[Sequence[float]]) -> FloatArray:
        out = np.full((len(curves), 3), np.nan)
        r = self.max_resource
        for j, c in enumerate(curves):
            if len(c) >= r:
                out[j] = c[r - 1]
        if self._model is None or not self._cal or not self._pick:
            return out
        last, last_pick = max(self._cal), max(self._pick)
        for j, c in enumerate(curves):
            if not 0 < len(c) < r or (self._affine is None and min(c) <= 0):
                continue
            a = np.asarray(c, dtype=np.float64)
            shift, scale = self._affine or (0.0, 1.0)
            pre = np.log(a) if self._affine is None else (a - shift) / scale
            e = len(c)
            k = int(math.log2(e))
            if min(self._cal) > k:
                continue
            mean = float(self._models[self._pick[min(last_pick, k)]].predict([pre], r)[0])
            b, sd = self._cal[min(last, k)]
            h = math.log2(r / e)
            m = mean - b * h
            w = self.z * sd * h**self.p
            band = np.array([m - w, m, m + w])
            out[j] = np.exp(band) if self._affine is None else band * scale + shift
        return out
