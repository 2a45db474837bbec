"""The search space's types as Ray Tune samples them and as the searchers and the core see them."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pytest

from hpo_node.search import Int
from hpo_node.space import Space


def _draws(spec: dict[str, Any], n: int = 6000) -> Counter[Any]:
    domain = Space.parse({"x": spec}).tune_domains()["x"]
    rng = np.random.default_rng(0)
    return Counter(domain.sample(random_state=rng) for _ in range(n))


@pytest.mark.parametrize(("spec", "values"), [
    ({"type": "quniform", "low": 1, "high": 3, "q": 1}, [1, 2, 3]),
    ({"type": "quniform", "low": 8, "high": 32, "q": 8}, [8, 16, 24, 32]),
    ({"type": "quniform", "low": 0.0, "high": 0.5, "q": 0.1}, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]),
    ({"type": "quniform", "low": 0.5, "high": 3.7, "q": 1}, [1, 2, 3]),
    ({"type": "int", "low": 1, "high": 3}, [1, 2, 3]),
])
def test_space_quantised_types_draw_every_value_equally_often(spec: dict[str, Any],
                                                             values: list[float]) -> None:
    """``high`` included and the end values as likely as the others (Ray's ``qrandint`` never
    draws ``high`` with ``q = 1``; rounding gives the ends half the weight)."""
    counts = _draws(spec)
    assert sorted(counts) == pytest.approx(values)
    expected = sum(counts.values()) / len(values)
    assert all(abs(c - expected) < 0.1 * expected for c in counts.values()), counts
    assert all(isinstance(v, int) for v in counts) == float(spec.get("q", 1)).is_integer()


@pytest.mark.parametrize("spec", [
    {"type": "int", "low": 1, "high": 4},
    {"type": "int", "low": 1, "high": 8, "log": True},
    {"type": "quniform", "low": 16, "high": 128, "q": 16},
])
def test_space_searchers_random_candidates_draw_the_ends_as_often(spec: dict[str, Any]) -> None:
    """What every searcher decodes from a uniform draw (its random candidates) gives the end
    values their full share (rounding ``low + u (high - low)`` gave them half)."""
    space = Space.parse({"x": spec})
    grid = space.search_space()
    u = grid.sample(np.random.default_rng(0), 8000)
    draws = np.array([space.to_trial(grid.decode(row))["x"] for row in u], dtype=float)
    if spec.get("log"):  # log-uniform over [1, 9): 1 takes log(2)/log(9) of the draws
        assert abs(np.mean(draws == 1) - math.log(2) / math.log(9)) < 0.02
        assert abs(np.mean(draws == 8) - math.log(9 / 8) / math.log(9)) < 0.01
        return
    counts = Counter(draws)
    expected = len(draws) / len(counts)
    assert all(abs(c - expected) < 0.1 * expected for c in counts.values()), counts


def test_space_int_log_is_log_uniform_over_the_integers() -> None:
    counts = _draws({"type": "int", "low": 16, "high": 1024, "log": True})
    draws = np.array(list(counts.elements()))
    assert draws.min() >= 16 and draws.max() <= 1024 and 1024 in counts
    assert abs(np.mean(draws < 128) - 0.5) < 0.03  # 128 = sqrt(16 * 1024)


def test_space_int_for_searchers_and_the_core() -> None:
    space = Space.parse({"width": {"type": "int", "low": 16, "high": 1024, "log": True},
                         "depth": {"type": "int", "low": 1, "high": 4}})
    params = space.search_space().params
    assert params["width"] == Int(16, 1024, log=True) and params["depth"] == Int(1, 4)
    trial = space.to_trial({"width": 63.6, "depth": 2.0})
    assert trial == {"width": 64, "depth": 2} and all(isinstance(v, int) for v in trial.values())
    assert space.encode({"width": 100, "depth": 3}) == {"width": 2.0, "depth": 3.0}
    assert space.size == 1009 * 4
    assert Space.parse(space.spec()) == space


@pytest.mark.parametrize(("spec", "exc", "match"), [
    ({"type": "int", "low": 1.5, "high": 4}, TypeError, r"space\.x\.low must be an integer, got 1\.5"),
    ({"type": "int", "high": 4}, ValueError, r"space\.x\.low is missing: it must be an integer"),
    ({"type": "int", "low": 4, "high": 4}, ValueError, r"space\.x: low must be < high"),
    ({"type": "int", "low": 0, "high": 4, "log": True}, ValueError,
     r"space\.x\.low must be >= 1 with log = true, got 0"),
    ({"type": "int", "low": 1, "high": 4, "log": "yes"}, TypeError,
     r"space\.x\.log must be true or false, got 'yes'"),
    ({"type": "int", "low": 1, "high": 4, "q": 2}, ValueError, r"\[space\.x\] has unknown keys \['q'\]"),
    ({"type": "int", "low": 1, "hihg": 4}, ValueError,
     r"\[space\.x\] has unknown keys \['hihg'\] \(did you mean 'high'\?\)"),
])
def test_space_int_rejects_bad_tables_naming_the_key(spec: dict[str, Any], exc: type,
                                                     match: str) -> None:
    with pytest.raises(exc, match=match):
        Space.parse({"x": spec})


def test_space_quniform_with_many_fractional_multiples_samples_the_grid() -> None:
    """Beyond the listed multiples, Ray's ``quniform`` on the multiples inside the bounds (bounds
    off the grid are accepted, as for a short list)."""
    domain = Space.parse({"x": {"type": "quniform", "low": 0.05, "high": 20000, "q": 0.1}}
                         ).tune_domains()["x"]
    rng = np.random.default_rng(0)
    draws = [domain.sample(random_state=rng) for _ in range(200)]
    assert all(0.1 <= v <= 20000 and math.isclose(v * 10, round(v * 10)) for v in draws)
