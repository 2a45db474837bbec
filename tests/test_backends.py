"""Backends, fallback chain and circuit breaker, in-process (all offline)."""

from __future__ import annotations

import logging
from pathlib import Path

import dimod
import numpy as np
import pytest
from dwave.cloud import exceptions as cloud
from dwave.system.testing import MockDWaveSampler
from hypothesis import given
from hypothesis import strategies as st

from qpu_gateway.backends import BackendRegistry, register, unregister
from qpu_gateway.backends._embedded import EmbeddedQPUSampler, EmbeddingCache
from qpu_gateway.breaker import CircuitBreaker
from qpu_gateway.errors import AllBackendsFailedError, BackendFailure, DeadlineExceededError
from qpu_gateway.qsvr import QSVR
from qpu_gateway.redact import install_log_redaction
from qpu_gateway.seeds import bounded_seed
from qpu_gateway.service import GatewayService
from qpu_gateway.store import ModelStore

CLOUD_FAILURES = [
    cloud.SolverFailureError("solver failed"),
    cloud.SolverOfflineError("solver offline"),
    cloud.SolverNotFoundError("solver not found"),
    cloud.RequestTimeout("request timed out"),
    cloud.PollingTimeout("polling timed out"),
    cloud.ProblemUploadError("upload failed"),
    cloud.SAPIError("Too many requests: resource limit", error_code=429),
]


class FailingQPU(MockDWaveSampler):
    """A small Pegasus mock whose sampling raises a given cloud exception."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(topology_type="pegasus", topology_shape=[4], parameter_warnings=False)
        self.exc = exc
        self.calls = 0

    def sample(self, bqm: dimod.BinaryQuadraticModel, **kwargs: object) -> dimod.SampleSet:
        self.calls += 1
        raise self.exc


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _data(n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.random((n, 2))
    return x, x.sum(axis=1)


@pytest.fixture
def faulty(tmp_path: Path):
    """Registers backend ``faulty`` (the qpu code path on a failing mock); yields a setter."""
    state: dict[str, FailingQPU] = {}

    def install(exc: BaseException) -> FailingQPU:
        qpu = FailingQPU(exc)
        state["qpu"] = qpu
        return qpu

    def factory(settings: object) -> EmbeddedQPUSampler:
        return EmbeddedQPUSampler(lambda: state["qpu"], solver_id="faulty",
                                  cache=EmbeddingCache(tmp_path / "emb"))

    register("faulty", factory)
    yield install
    unregister("faulty")


@pytest.mark.parametrize("exc", CLOUD_FAILURES, ids=lambda e: type(e).__name__)
def test_backend_cloud_failure_falls_back_to_next_backend(faulty, exc: BaseException) -> None:
    qpu = faulty(exc)
    service = GatewayService(ModelStore(":memory:"), BackendRegistry(), chain=["faulty", "neal"])
    x, y = _data()
    record = service.fit(x, y, params={"k": 1, "num_reads": 20, "num_sweeps": 10}, seed=1)
    assert qpu.calls == 1
    assert record.info["backend"] == "neal" and record.info["fallback"] is True
    reason = record.info["fallback_reason"]
    assert reason.startswith(f"faulty: sampling on 'faulty' failed: {type(exc).__name__}")
    assert record.info["attempted_backends"] == ["faulty", "neal"]
    assert service.predict(record.model_id, x)[0].shape == (3,)


def test_backend_breaker_opens_after_m_failures_and_closes_after_cooldown(faulty) -> None:
    qpu = faulty(cloud.SolverOfflineError("offline"))
    clock = Clock()
    service = GatewayService(
        ModelStore(":memory:"), BackendRegistry(), chain=["faulty", "neal"],
        breaker_failures=2, breaker_cooldown_seconds=30.0, monotonic=clock,
    )
    x, y = _data()
    fast = {"k": 1, "num_reads": 10, "num_sweeps": 10}
    service.fit(x, y, params=fast)
    service.fit(x, y, params=fast)
    assert qpu.calls == 2 and service.breaker("faulty").is_open
    skipped = service.fit(x, y, params=fast)
    assert qpu.calls == 2
    assert "faulty: skipped (circuit open" in skipped.info["fallback_reason"]
    assert skipped.info["attempted_backends"] == ["neal"] and skipped.info["fallback"] is True
    clock.now += 31.0
    assert not service.breaker("faulty").is_open
    service.fit(x, y, params=fast)
    assert qpu.calls == 3


def test_backend_all_failing_is_reported_with_every_reason(faulty) -> None:
    faulty(cloud.SolverFailureError("boom"))
    service = GatewayService(ModelStore(":memory:"), BackendRegistry(), chain=["faulty"])
    x, y = _data()
    with pytest.raises(AllBackendsFailedError, match=r"every backend failed: faulty: .*SolverFailureError"):
        service.fit(x, y, params={"k": 1})
    assert service.list()[0] == []


def test_mock_qpu_problem_too_large_to_embed_falls_back(tmp_path: Path) -> None:
    registry = BackendRegistry({"mock-qpu": {"topology_shape": 2, "embedding_cache_dir": str(tmp_path)}})
    service = GatewayService(ModelStore(":memory:"), registry, chain=["mock-qpu", "neal"])
    x, y = _data(20)
    record = service.fit(x, y, params={"num_reads": 20, "num_sweeps": 10})
    assert record.info["backend"] == "neal" and record.info["fallback"] is True
    assert "no clique embedding of 120 variables" in record.info["fallback_reason"]


def test_mock_qpu_embedding_is_cached_on_disk(tmp_path: Path) -> None:
    settings = {"mock-qpu": {"embedding_cache_dir": str(tmp_path), "substitute_sweeps": 10}}
    service = GatewayService(ModelStore(":memory:"), BackendRegistry(settings), chain=["mock-qpu"])
    x, y = _data(10)
    first = service.fit(x, y, params={"num_reads": 20})
    second = service.fit(x, y, params={"num_reads": 20})
    sampler = service.registry.sampler("mock-qpu")
    assert sampler.cache.searches == 1
    assert (first.info["embedding_cache_hit"], second.info["embedding_cache_hit"]) == (False, True)
    assert list(tmp_path.glob("mock-pegasus16-60.json"))
    fresh = GatewayService(ModelStore(":memory:"), BackendRegistry(settings), chain=["mock-qpu"])
    assert fresh.fit(x, y, params={"num_reads": 20}).info["embedding_cache_hit"] is True
    assert fresh.registry.sampler("mock-qpu").cache.searches == 0


def test_mock_qpu_reports_chain_and_timing_statistics(tmp_path: Path) -> None:
    registry = BackendRegistry({"mock-qpu": {"embedding_cache_dir": str(tmp_path)}})
    service = GatewayService(ModelStore(":memory:"), registry, chain=["mock-qpu"])
    x, y = _data(20)
    info = service.fit(x, y, params={"num_reads": 50}).info
    assert info["backend"] == "mock-qpu" and info["num_variables"] == 120
    assert info["max_chain_length"] > 1 and info["qubits_used"] >= 120
    assert 0.0 <= info["chain_break_fraction"] <= 1.0
    assert info["qpu_access_time_us"] > 0


def test_mock_qpu_max_abs_q_chain_strength_policy(tmp_path: Path) -> None:
    registry = BackendRegistry({"mock-qpu": {"embedding_cache_dir": str(tmp_path),
                                             "chain_strength": "max_abs_q",
                                             "chain_strength_multiple": 2.0}})
    sampler = registry.sampler("mock-qpu")
    bqm = dimod.BinaryQuadraticModel({0: 1.0, 1: -3.0}, {(0, 1): 0.5}, 0.0, "BINARY")
    assert sampler._chain(bqm) == pytest.approx(6.0)
    with pytest.raises(BackendFailure, match="chain_strength must be one of"):
        BackendRegistry({"mock-qpu": {"chain_strength": "strong"}}).sampler("mock-qpu")


def test_classical_backend_is_sklearn_svr_through_the_same_api() -> None:
    from sklearn.svm import SVR

    service = GatewayService(ModelStore(":memory:"), BackendRegistry(), chain=["classical"])
    rng = np.random.default_rng(1)
    x = rng.random((30, 3))
    y = np.sin(3 * x[:, 0]) + x[:, 1]
    record = service.fit(x, y)
    assert record.info["backend"] == "classical" and record.info["members"] == 1
    mean, std, _ = service.predict(record.model_id, x)
    from qpu_gateway.qsvr import (
        DEFAULT_GAMMA,
        DEFAULT_LINEAR_SHARE,
        DEFAULT_RELEVANCE_POWER,
        relevance_weights,
    )
    from qpu_gateway.qubo import rbf_kernel

    xs = (x - x.min(0)) / np.ptp(x, 0)
    ys = (y - y.min()) / np.ptp(y)
    xs = xs * np.sqrt(relevance_weights(xs, ys, DEFAULT_RELEVANCE_POWER))  # QSVR's input scaling
    u = xs - xs.mean(0)  # QSVR's kernel: RBF plus a share of centred linear kernel
    kmat = rbf_kernel(xs, xs, DEFAULT_GAMMA) + DEFAULT_LINEAR_SHARE / x.shape[1] * (u @ u.T)
    svr = SVR(kernel="precomputed", epsilon=0.02, C=record.info["params"]["c"])
    ref = svr.fit(kmat, ys).predict(kmat)
    np.testing.assert_allclose(mean, ref * np.ptp(y) + y.min(), atol=1e-6)
    assert np.all(std == 0)


def test_unknown_backend_settings_are_rejected() -> None:
    message = r"'qpu' cannot be built: ValueError: unknown settings \['tokn'\]"
    with pytest.raises(BackendFailure, match=message):
        BackendRegistry({"qpu": {"tokn": "x"}}).sampler("qpu")


def test_qpu_backend_does_not_connect_until_first_fit() -> None:
    sampler = BackendRegistry({"qpu": {"endpoint": "http://127.0.0.1:9/"}}).sampler("qpu")
    assert sampler._child is None


def test_neal_fit_past_its_deadline_is_stopped() -> None:
    service = GatewayService(ModelStore(":memory:"), BackendRegistry())
    x, y = _data(20)
    with pytest.raises(DeadlineExceededError):
        service.fit(x, y, params={"num_reads": 100_000, "num_sweeps": 1000}, timeout=0.2)
    assert service.list()[0] == []


def test_circuit_breaker_validates_arguments() -> None:
    with pytest.raises(ValueError, match="failure_threshold must be an integer >= 1, got 0"):
        CircuitBreaker(0)
    with pytest.raises(ValueError, match="cooldown_seconds must be >= 0, got -1"):
        CircuitBreaker(1, -1)


def test_qsvr_accepts_a_dual_solver_in_place_of_a_sampler() -> None:
    from qpu_gateway.backends.classical import ClassicalSVRSolver

    x, y = _data(10)
    model = QSVR(sampler=ClassicalSVRSolver()).fit(x, y)
    assert model.dual_coef_.shape == (1, 10) and model.fit_stats_["num_reads"] == 1


def test_mock_qpu_same_seed_same_model(tmp_path: Path) -> None:
    registry = BackendRegistry({"mock-qpu": {"embedding_cache_dir": str(tmp_path)}})
    service = GatewayService(ModelStore(":memory:"), registry, chain=["mock-qpu"])
    x, y = _data(8)
    a, b, c = (service.fit(x, y, params={"num_reads": 30}, seed=s) for s in (1, 1, 2))
    assert a.info["member_energies"] == b.info["member_energies"]
    assert a.info["member_energies"] != c.info["member_energies"]


@pytest.fixture
def no_dwave_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No D-Wave token anywhere: no DWAVE_* variables, no dwave.conf under HOME."""
    import os

    for name in [k for k in os.environ if k.startswith("DWAVE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))


def test_qpu_without_token_falls_back_to_neal_and_opens_the_breaker(
    tmp_path: Path, no_dwave_config: None
) -> None:
    registry = BackendRegistry({"qpu": {"embedding_cache_dir": str(tmp_path / "emb")}})
    service = GatewayService(ModelStore(":memory:"), registry, chain=["qpu", "neal"],
                             breaker_failures=2)
    x, y = _data(4)
    records = [service.fit(x, y, params={"num_reads": 20}, seed=i) for i in range(3)]
    assert [r.info["backend"] for r in records] == ["neal"] * 3
    for r in records[:2]:
        assert r.info["fallback"] and r.info["attempted_backends"] == ["qpu", "neal"]
        assert "API token not defined" in r.info["fallback_reason"]
    assert records[2].info["attempted_backends"] == ["neal"]
    assert "circuit open" in records[2].info["fallback_reason"]
    assert service.breaker("qpu").is_open


def test_backend_whose_factory_fails_is_a_backend_failure() -> None:
    def broken(settings: object) -> dimod.Sampler:
        raise RuntimeError("no such device: cuda:7")

    register("broken", broken)
    try:
        service = GatewayService(ModelStore(":memory:"), BackendRegistry(), chain=["broken", "neal"])
        x, y = _data(4)
        record = service.fit(x, y, params={"num_reads": 20})
    finally:
        unregister("broken")
    assert record.info["backend"] == "neal" and record.info["attempted_backends"] == ["broken", "neal"]
    assert "'broken' cannot be built: RuntimeError: no such device: cuda:7" in record.info["fallback_reason"]


@pytest.mark.parametrize("backend", ["neal", "mock-qpu"])
def test_any_uint64_seed_is_valid_and_reproducible(tmp_path: Path, backend: str) -> None:
    registry = BackendRegistry({"mock-qpu": {"embedding_cache_dir": str(tmp_path)}})
    service = GatewayService(ModelStore(":memory:"), registry, chain=[backend])
    x, y = _data(6)
    for seed in (2**31, 2**32 - 1, 2**32, 2**63 + 5, 2**64 - 1):
        a, b = (service.fit(x, y, params={"num_reads": 20}, seed=seed) for _ in range(2))
        assert a.info["seed"] == seed
        assert a.info["member_energies"] == b.info["member_energies"]


@given(st.integers(0, 2**64 - 1), st.integers(2, 2**64))
def test_bounded_seed_is_in_range_deterministic_and_identity_below_the_bound(seed: int, bound: int) -> None:
    mapped = bounded_seed(seed, bound)
    assert mapped is not None and 0 <= mapped < bound
    assert mapped == bounded_seed(seed, bound)
    if seed < bound:
        assert mapped == seed


def test_bounded_seed_rejects_seeds_outside_uint64() -> None:
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\), got -1"):
        bounded_seed(-1)
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\), got 18446744073709551616"):
        bounded_seed(2**64)
    assert bounded_seed(None) is None


def test_qpu_token_is_in_no_log_record_of_a_real_connection_attempt(
    tmp_path: Path, no_dwave_config: None, caplog: pytest.LogCaptureFixture
) -> None:
    """dwave.cloud logs its config, token included, at DEBUG: every record is scrubbed."""
    secret = "qhpo-test-secret-7f3a9c2e51"
    install_log_redaction()
    registry = BackendRegistry({"qpu": {
        "token": secret, "endpoint": "http://127.0.0.1:1/sapi/v2/", "request_timeout": 1,
        "http_retry_total": 0, "embedding_cache_dir": str(tmp_path / "emb"),
    }})
    service = GatewayService(ModelStore(":memory:"), registry, chain=["qpu", "neal"])
    x, y = _data(4)
    with caplog.at_level(logging.DEBUG):
        record = service.fit(x, y, params={"num_reads": 20})
    assert record.info["backend"] == "neal" and "qpu: cannot reach solver" in record.info["fallback_reason"]
    # dwave.cloud calls a refused connection a timeout: the reason names the real cause
    assert "(cause: ConnectionRefusedError: [Errno 111] Connection refused)" in record.info["fallback_reason"]
    cloud_records = [r for r in caplog.records if r.name.startswith("dwave.cloud")]
    assert len(cloud_records) >= 5
    assert any("'token': '***'" in r.getMessage() for r in cloud_records)
    for r in caplog.records:
        assert secret not in r.getMessage() and secret not in (r.exc_text or "")
    assert secret not in caplog.text and secret not in record.info["fallback_reason"]


def test_a_library_user_logging_at_debug_never_sees_a_registered_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No CLI involved: creating a backend with a token is enough to scrub every log record."""
    secret = "qhpo-library-secret-51c0ffee"
    BackendRegistry({"hybrid": {"token": secret}}).sampler("hybrid")
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("some.library").debug("config: %s", {"token": secret})
        try:
            raise RuntimeError(f"failed with token={secret}")
        except RuntimeError:
            logging.getLogger("some.library").exception("boom")
    assert caplog.records and secret not in caplog.text
    assert "config: {'token': '***'}" in caplog.text and "token=***" in caplog.text
