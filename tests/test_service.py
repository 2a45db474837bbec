"""GatewayService: validation naming the field, versions, cache invalidation."""

from __future__ import annotations

import numpy as np
import pytest

from qpu_gateway.backends import BackendRegistry
from qpu_gateway.errors import InvalidArgumentError, ModelNotFoundError, PermissionDeniedError
from qpu_gateway.service import FitLimits, GatewayService
from qpu_gateway.store import ModelStore

FAST = {"num_reads": 20, "num_sweeps": 20}


@pytest.fixture
def service() -> GatewayService:
    return GatewayService(ModelStore(":memory:"), BackendRegistry(), allowed_backends=["neal"])


def _data(n: int = 12, f: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.random((n, f))
    return x, x.sum(axis=1)


def test_service_fit_then_predict_and_versions(service: GatewayService) -> None:
    x, y = _data()
    first = service.fit(x, y, model_id="curve-model", params=FAST, seed=1)
    second = service.fit(x, y, model_id="curve-model", params=FAST, seed=2)
    assert (first.version, second.version) == (1, 2)
    mean, std, version = service.predict("curve-model", x[:4])
    assert mean.shape == std.shape == (4,) and version == 2
    assert service.predict("curve-model", x[:4], version=1)[2] == 1
    assert service.get("curve-model").info["params"]["num_reads"] == 20
    assert service.delete("curve-model") == 2
    with pytest.raises(ModelNotFoundError):
        service.predict("curve-model", x[:4])


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "field"),
    [
        (np.zeros((0, 3)), np.zeros(0), {}, "x"),
        (np.array([[1.0, np.nan]]), np.zeros(1), {}, "x"),
        (np.ones((3, 2)), np.ones(2), {}, "y"),
        (np.ones((2, 2)), np.array([1.0, np.inf]), {}, "y"),
        (np.ones((2, 2)), np.ones(2), {"params": {"k": 0}}, "params.k"),
        (np.ones((2, 2)), np.ones(2), {"params": {"base": -1.0}}, "params.base"),
        (np.ones((2, 2)), np.ones(2), {"params": {"ensemble": "vote"}}, "params.ensemble"),
        (np.ones((2, 2)), np.ones(2), {"params": {"bogus": 1}}, "params"),
        (np.ones((2, 2)), np.ones(2), {"model_id": "has space"}, "model_id"),
        (np.ones((2, 2)), np.ones(2), {"backend": "no-such"}, "backend"),
    ],
)
def test_service_fit_rejects_bad_input_naming_the_field(
    service: GatewayService, x: np.ndarray, y: np.ndarray, kwargs: dict, field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        service.fit(x, y, **kwargs)
    assert info.value.field == field
    assert str(info.value).startswith(field + ":")
    assert service.list()[0] == []


def test_service_refuses_backends_outside_the_allowed_list(service: GatewayService) -> None:
    x, y = _data(3, 1)
    with pytest.raises(PermissionDeniedError, match="'exact' is not allowed"):
        service.fit(x, y, backend="exact", params={"k": 1})


def test_service_predict_rejects_wrong_feature_count(service: GatewayService) -> None:
    x, y = _data()
    rec = service.fit(x, y, params=FAST)
    with pytest.raises(InvalidArgumentError, match="x: has 2 columns but model"):
        service.predict(rec.model_id, x[:, :2])


def test_service_serves_models_from_the_store_after_restart(tmp_path) -> None:
    path = tmp_path / "m.sqlite"
    x, y = _data()
    first = GatewayService(ModelStore(path), BackendRegistry())
    rec = first.fit(x, y, params=FAST, seed=4)
    expected = first.predict(rec.model_id, x)[0]
    first.store.close()
    second = GatewayService(ModelStore(path), BackendRegistry())
    np.testing.assert_array_equal(second.predict(rec.model_id, x)[0], expected)


@pytest.mark.parametrize(
    ("rows", "params", "field", "message"),
    [
        (40, {}, "x", "max_qubo_variables = 200"),
        (5, {"num_reads": 1001}, "params.num_reads", "max_num_reads = 1000"),
        (5, {"num_sweeps": 501}, "params.num_sweeps", "max_num_sweeps = 500"),
        (5, {"base": 1e-300, "k": 3, "k0": -5.0}, "params.base", "finite, positive weights"),
        (60, {"k": 1}, "x", "max_train_rows = 50"),
    ],
)
def test_service_enforces_limits_naming_field_and_limit(
    rows: int, params: dict, field: str, message: str
) -> None:
    limits = FitLimits(max_qubo_variables=200, max_num_reads=1000, max_num_sweeps=500,
                       max_train_rows=50)
    service = GatewayService(ModelStore(":memory:"), BackendRegistry(), limits=limits)
    x, y = _data(rows, 2)
    with pytest.raises(InvalidArgumentError, match=message) as info:
        service.fit(x, y, params=params)
    assert info.value.field == field


def test_service_exact_backend_refuses_large_problems_as_invalid_argument(service) -> None:
    big = GatewayService(ModelStore(":memory:"), BackendRegistry(), allowed_backends=["exact"])
    x, y = _data(5, 2)
    message = r"x: too many rows for backend\(s\): exact: the exact backend"
    with pytest.raises(InvalidArgumentError, match=message):
        big.fit(x, y, backend="exact")


@pytest.mark.parametrize(
    ("params", "y", "field"),
    [
        ({"k": 2**32 - 1}, None, "x"),  # found by fuzzing: once allocated arange(k) before limits
        ({"xi": 1e308}, None, "params"),
        ({"epsilon": 1e308}, None, "params"),
        ({}, np.array([-1.7e308, 1.7e308, 0.0]), "y"),
    ],
)
def test_service_rejects_overflowing_requests_before_allocating(
    service: GatewayService, params: dict, y: np.ndarray | None, field: str
) -> None:
    x = np.random.default_rng(0).random((3, 2))
    with pytest.raises(InvalidArgumentError) as info:
        service.fit(x, x.sum(axis=1) if y is None else y, params={"num_reads": 10, **params})
    assert info.value.field == field


def test_service_enforces_feature_and_predict_row_limits() -> None:
    limits = FitLimits(max_features=3, max_predict_rows=5)
    service = GatewayService(ModelStore(":memory:"), BackendRegistry(), limits=limits)
    x, y = _data(8, 4)
    with pytest.raises(InvalidArgumentError, match="max_features = 3"):
        service.fit(x, y, params=FAST)
    rec = service.fit(x[:, :3], y, params=FAST)
    with pytest.raises(InvalidArgumentError, match="max_predict_rows = 5"):
        service.predict(rec.model_id, x[:, :3])
    assert service.predict(rec.model_id, x[:5, :3])[0].shape == (5,)


def test_service_list_pages_cover_every_model_once_even_when_models_change() -> None:
    service = GatewayService(ModelStore(":memory:"), BackendRegistry())
    x, y = _data(4, 2)
    for i in range(7):
        service.fit(x, y, model_id=f"m{i}", params={"k": 1, "num_reads": 5, "num_sweeps": 5})
    first, token = service.list(page_size=3)
    assert [r.model_id for r in first] == ["m0", "m1", "m2"] and token
    service.delete("m0")
    second, token = service.list(page_size=3, page_token=token)
    third, last = service.list(page_size=3, page_token=token)
    assert [r.model_id for r in second + third] == ["m3", "m4", "m5", "m6"] and last == ""
    with pytest.raises(InvalidArgumentError, match="page_token: belongs to another listing"):
        service.list("m1", page_token=token)
    with pytest.raises(InvalidArgumentError, match="page_token: is not a token"):
        service.list(page_token="garbage!")
    with pytest.raises(InvalidArgumentError, match="page_size: must be in"):
        service.list(page_size=5000)
