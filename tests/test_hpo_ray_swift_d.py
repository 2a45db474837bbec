"""The Ray adapter's Swift schedulers apply the study's ``d`` rule (``swift_d_rule``): a ``d``
that no rung reaches is adapted, or warned about, as ``hpo-node run`` does (no Ray started)."""

from __future__ import annotations

import logging
from typing import Any

from hpo_node.integrations.ray_tune import (
    SwiftASHAScheduler,
    SwiftHyperbandScheduler,
    swift_d_rule,
)
from hpo_node.predictors import make_predictor_factory
from hpo_node.study import study_from_dict
from hpo_node.study.build import build_scheduler


def test_hpo_ray_swift_d_adapted_in_an_own_tuner_scheduler(caplog: Any) -> None:
    factory = make_predictor_factory("gateway", gateway="127.0.0.1:1")
    with caplog.at_level(logging.WARNING, logger="hpo_node.integrations.ray_tune"):
        sched = SwiftASHAScheduler(max_resource=9, eta=3, n_trials=27, predictor=factory,
                                   max_concurrent=2, options={"rule": "paper"})
    assert sched.core.d == 4
    note = ("note: swift-asha with 27 configurations, R = 9, eta = 3: at most 9 trials reach a "
            "rung, so with d = 15 no trial would ever get a prediction; d adapted to 4 (set "
            "options['d'] to choose, or give more n_trials (at least 48 for d = 15))")
    assert sched.notes == (note,)
    assert [r.getMessage() for r in caplog.records] == [note]


def test_hpo_ray_swift_d_set_by_the_user_is_kept_with_a_warning(caplog: Any) -> None:
    factory = make_predictor_factory("svr")
    with caplog.at_level(logging.WARNING, logger="hpo_node.integrations.ray_tune"):
        sched = SwiftASHAScheduler(max_resource=9, eta=3, n_trials=27, predictor=factory,
                                   options={"d": 12, "rule": "paper"})
    assert sched.core.d == 12
    assert sched.notes[0].startswith("warning: swift-asha with 27 configurations")
    assert sched.notes[0].endswith("the study runs as plain asha: lower options['d'] below 9, or "
                                   "give more n_trials (at least 39 for d = 12)")
    assert caplog.records[0].levelno == logging.WARNING
    hb = SwiftHyperbandScheduler(max_resource=9, eta=3, predictor=factory)
    assert hb.core.d == 5 and "d adapted to 5" in hb.notes[0]
    big = SwiftASHAScheduler(max_resource=9, eta=3, n_trials=243, predictor=factory,
                             options={"rule": "paper"})
    assert big.core.d == 15 and big.notes == ()


def test_hpo_ray_swift_d_one_rule_for_the_study_and_the_adapter() -> None:
    doc = {"study": {"name": "s", "trials": 27},
           "algorithm": {"name": "swift-asha", "max_resource": 9, "eta": 3,
                         "params": {"rule": "paper"}},
           "predictor": {"kind": "svr"},
           "space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1}}}
    cfg = study_from_dict(doc)
    own = SwiftASHAScheduler(max_resource=9, eta=3, n_trials=27,
                             predictor=make_predictor_factory("svr"), options={"rule": "paper"})
    assert cfg.algorithm_params["d"] == own.core.d == 4
    core = build_scheduler(study_from_dict({**doc, "algorithm": {**doc["algorithm"],
                                                                 "params": {"rule": "paper",
                                                                            "d": 15}}}),
                           None).core
    d, note = swift_d_rule(core, 27, True)
    assert d is None and note is not None and "lower options['d'] below 9" in note


def test_hpo_ray_swift_d_without_n_trials_warns_once_the_trials_are_made(caplog: Any) -> None:
    from types import SimpleNamespace

    from hpo_node.integrations.ray_tune import TrialRecord

    sched = SwiftASHAScheduler(max_resource=9, eta=3, predictor=make_predictor_factory("svr"),
                               options={"rule": "paper"})
    assert sched.core.d == 15 and sched.notes == ()  # Tune's num_samples: unknown here
    sched.records = {f"t{i}": TrialRecord(config={}) for i in range(27)}
    controller = SimpleNamespace(search_alg=SimpleNamespace(is_finished=lambda: True))
    with caplog.at_level(logging.WARNING, logger="hpo_node.integrations.ray_tune"):
        sched._check_supply(controller)
    (note,) = sched.notes
    assert note.startswith("warning: swift-asha with 27 configurations, R = 9, eta = 3: at most 9 "
                           "trials reach a rung, so with d = 15 no trial would ever get a "
                           "prediction; the study runs as plain asha: lower options['d'] below 9")
    assert "more TuneConfig(num_samples)" in note
    assert [r.getMessage() for r in caplog.records] == [note]


def test_hpo_ray_swift_d_not_applied_to_the_gate_with_a_curve_fit_forecaster(caplog: Any) -> None:
    """The champion gate's curve fits use no per-rung predictor, so ``d`` concerns them not: no
    adaptation, no note; with ``forecaster="predictor"`` (whose first fit waits for ``d``
    windows) the rule applies as for the other rules."""
    factory = make_predictor_factory("svr")
    with caplog.at_level(logging.WARNING, logger="hpo_node.integrations.ray_tune"):
        gate = SwiftASHAScheduler(max_resource=9, eta=3, n_trials=27, predictor=factory,
                                  options={"rule": "gate"})
        pinned = SwiftASHAScheduler(max_resource=9, eta=3, n_trials=27, predictor=factory,
                                    options={"rule": "gate", "forecaster": "last", "d": 12})
    assert gate.core.forecaster == "auto" and gate.core.d == 15 and gate.notes == ()
    assert pinned.core.d == 12 and pinned.notes == ()
    assert swift_d_rule(gate.core, 27, False) == (None, None)
    assert caplog.records == []
    step = SwiftASHAScheduler(max_resource=9, eta=3, n_trials=27, predictor=factory,
                              options={"rule": "gate", "forecaster": "predictor"})
    assert step.core.d == 4 and "d adapted to 4" in step.notes[0]
