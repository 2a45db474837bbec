"""GuardedPredictor: a gateway outage makes Swift the plain algorithm, and predictions resume."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import numpy as np
import pytest

from hpo_node.asha import ASHA, SwiftASHA
from hpo_node.hyperband import Hyperband, SwiftHyperband
from hpo_node.replay import simulate
from hpo_node.resilient import GatewayFactory, GuardedPredictor, PredictionLog, guarded_factory
from hpo_node.synthetic import synthetic_table
from tests.conftest import GatewayProcess


def _closed_port_address() -> str:
    """``127.0.0.1:PORT`` where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    curves = np.cumsum(rng.uniform(-0.1, 0.0, size=(12, 4)), axis=1) + 1.0
    return curves, curves[:, -1] * 0.9


def test_hpo_ray_resilient_outage_counted_and_predictions_resume(tmp_path: Path) -> None:
    store = tmp_path / "gw.sqlite"
    first = GatewayProcess(store).start()
    log = PredictionLog(retry_after=0.0)
    pred = GuardedPredictor(GatewayFactory(first.address, timeout=5.0, num_reads=50), log)
    curves, targets = _data()
    try:
        pred.fit(curves, targets, seed=0)
        mean, spread = pred.predict(curves[:3])
        assert np.all(np.isfinite(mean)) and mean.shape == (3,) and spread.shape == (3,)
        first.stop(signal.SIGKILL)
        down_mean, down_spread = pred.predict(curves[:3])
        assert np.all(down_mean == -np.inf) and np.all(down_spread == 0.0)
        pred.predict(curves[:2])
        c = log.counters()
        # the second call refits a fresh predictor first (the failed one was dropped)
        assert c["outages"] == 1 and c["predicts_failed"] == 1 and c["fits_failed"] == 1
        assert c["decisions_with_prediction"] == 3 and c["decisions_without_prediction"] == 5
        port = first.address.rsplit(":", 1)[1]
        second = GatewayProcess(store, "--address", f"127.0.0.1:{port}").start()
        try:
            again, _ = pred.predict(curves[:3])
            assert np.allclose(again, mean)
            c = log.counters()
            assert c["recoveries"] == 1 and c["decisions_with_prediction"] == 6
        finally:
            pred.close()
            second.stop()
    finally:
        first.stop()


def test_hpo_ray_resilient_failed_fit_is_retried_at_predict(tmp_path: Path) -> None:
    address = _closed_port_address()
    log = PredictionLog(retry_after=0.0)
    pred = GuardedPredictor(GatewayFactory(address, timeout=5.0, num_reads=50), log)
    curves, targets = _data()
    pred.fit(curves, targets, seed=0)
    assert log.counters()["fits_failed"] == 1
    assert np.all(pred.predict(curves[:2])[0] == -np.inf)
    assert log.counters()["fits_failed"] == 2
    host, port = address.rsplit(":", 1)
    gw = GatewayProcess(tmp_path / "gw.sqlite", "--address", f"{host}:{port}").start()
    try:
        mean, _ = pred.predict(curves[:2])
        assert np.all(np.isfinite(mean))
        assert log.counters()["fits_ok"] == 1 and log.counters()["recoveries"] == 1
    finally:
        pred.close()
        gw.stop()


def test_hpo_ray_resilient_skips_calls_during_retry_after() -> None:
    now = [0.0]
    log = PredictionLog(retry_after=10.0, clock=lambda: now[0])
    pred = GuardedPredictor(GatewayFactory(_closed_port_address(), timeout=2.0), log)
    curves, targets = _data()
    pred.fit(curves, targets)
    pred.predict(curves)
    pred.predict(curves)
    c = log.counters()
    assert c["fits_failed"] == 1 and c["predicts_failed"] == 0
    assert c["decisions_without_prediction"] == 2 * len(curves)
    now[0] = 10.0
    pred.predict(curves)
    assert log.counters()["fits_failed"] == 2


@pytest.mark.parametrize("name", ["swift-asha", "swift-hyperband"])
def test_hpo_ray_resilient_unreachable_gateway_is_the_plain_algorithm(name: str) -> None:
    """Swift with an unreachable gateway replays exactly like ASHA / Hyperband."""
    table = synthetic_table(120, 27, seed=3)
    log = PredictionLog(retry_after=3600.0)
    factory = guarded_factory(GatewayFactory(_closed_port_address(), timeout=2.0), log)
    if name == "swift-asha":
        swift, plain = SwiftASHA(27, 3, 60, factory, rule="paper", d=3, seed=0), ASHA(27, 3, 60)
    else:
        swift, plain = SwiftHyperband(27, 3, factory, d=3, seed=0), Hyperband(27, 3)
    a = simulate(table, swift, seed=5, max_resource=27, workers=3)
    b = simulate(table, plain, seed=5, max_resource=27, workers=3)
    assert log.counters()["decisions_without_prediction"] >= 1
    assert log.counters()["decisions_with_prediction"] == 0
    assert a.epochs == b.epochs
    assert a.best_loss == b.best_loss
    if name == "swift-asha":
        assert a.trace == b.trace
        assert [swift.rung_members(k) for k in range(len(swift.rungs))] == [
            plain.rung_members(k) for k in range(len(plain.rungs))
        ]


def test_hpo_ray_resilient_public_gateway_factory_is_guarded() -> None:
    from hpo_node.predictors import make_predictor_factory

    factory = make_predictor_factory("gateway", gateway=_closed_port_address(), timeout=0.5)
    predictor = factory()
    curves, targets = _data()
    predictor.fit(curves, targets, seed=0)  # no grpc.RpcError: the outage is logged
    mean, spread = predictor.predict(curves[:3])
    assert np.all(mean == -np.inf) and np.all(spread == 0.0)
    counts = factory.log.counters()
    assert counts["outages"] == 1 and counts["fits_failed"] == 1
    assert counts["decisions_without_prediction"] == 3


def test_hpo_ray_resilient_swift_schedulers_guard_a_raw_gateway_factory() -> None:
    """A user's own ``lambda: GatewayPredictor(...)`` is guarded by the Ray schedulers too."""
    from hpo_node.integrations.ray_tune import SwiftASHAScheduler, SwiftHyperbandScheduler
    from hpo_node.predictors import GatewayPredictor

    address = _closed_port_address()
    for cls in (SwiftASHAScheduler, SwiftHyperbandScheduler):
        scheduler = cls(9, 3, predictor=lambda: GatewayPredictor(address, timeout=0.5))
        assert isinstance(scheduler.log, PredictionLog)
        model = scheduler.predictor()
        curves, targets = _data()
        model.fit(curves, targets, seed=0)
        mean, _ = model.predict(curves[:2])
        assert np.all(mean == -np.inf)
        assert scheduler.log.counters()["outages"] == 1


def test_hpo_ray_resilient_two_studies_on_one_gateway_keep_their_own_models(
    gateway_address: str,
) -> None:
    """Two studies (processes) each fit a model on the same gateway; the second one's cleanup
    leaves the first one's model alone."""
    import subprocess
    import sys

    from qpu_gateway.client import GatewayClient

    def study(close: bool) -> str:
        code = (
            "import numpy as np\n"
            "from hpo_node.predictors import make_predictor_factory\n"
            f"p = make_predictor_factory('gateway', gateway={gateway_address!r}, num_reads=20)()\n"
            "c = np.cumsum(np.random.default_rng(1).uniform(-0.1, 0, (12, 4)), axis=1) + 1\n"
            "p.fit(c, c[:, -1], seed=0)\n"
            "print(p.inner.model_id)\n"
            + ("p.close()\n" if close else "")
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120, check=True)
        return done.stdout.strip().splitlines()[-1]

    first = study(close=False)
    second = study(close=True)  # the second study's cleanup
    assert first != second
    with GatewayClient(gateway_address, timeout=10) as client:
        ids = {m.model_id for m in client.list_models()}
    assert first in ids and second not in ids
