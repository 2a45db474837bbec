"""End to end through a real ``qpu-gateway serve`` process on a free port."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from qpu_gateway.client import GatewayClient
from qpu_gateway.qsvr import DEFAULT_GAMMA, DEFAULT_LINEAR_MARGIN, DEFAULT_LINEAR_REACH, DEFAULT_LINEAR_SHARE
from qpu_gateway.v1 import gateway_pb2 as pb
from qpu_gateway.v1 import gateway_pb2_grpc as pb_grpc
from tests.conftest import GatewayProcess

FAST = {"num_reads": 100, "num_sweeps": 50}


def _curves(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a, b, c = rng.uniform(0.5, 2, n), rng.uniform(0.3, 1.0, n), rng.uniform(0.1, 0.5, n)
    t = np.arange(1, 41)
    curves = c[:, None] + a[:, None] * t[None, :] ** -b[:, None]
    return curves[:, :10], curves[:, -1]


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_gateway_health_is_serving_overall_and_for_the_service(gateway_address: str) -> None:
    with GatewayClient(gateway_address) as client:
        assert client.health() == "SERVING"
        assert client.health("qpu_gateway.v1.Gateway") == "SERVING"


def test_gateway_serves_reflection(gateway_address: str) -> None:
    with grpc.insecure_channel(gateway_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for r in replies for s in r.list_services_response.service}
    assert "qpu_gateway.v1.Gateway" in names


def test_gateway_serves_reflection_v1_as_well_as_v1alpha(gateway_address: str) -> None:
    """A v1 client (grpcurl asks v1 first) lists services and gets the Gateway's descriptor."""
    from google.protobuf import descriptor_pb2

    v1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
    requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="qpu_gateway.v1.Gateway"),
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="grpc.reflection.v1.ServerReflection")]
    with grpc.insecure_channel(gateway_address) as channel:
        call = channel.stream_stream(
            v1, request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        listed, gateway, itself = list(call(iter(requests), timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert {"qpu_gateway.v1.Gateway", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection", "grpc.health.v1.Health"} <= names
    files = [descriptor_pb2.FileDescriptorProto.FromString(b)
             for b in gateway.file_descriptor_response.file_descriptor_proto]
    assert any(f.package == "qpu_gateway.v1" and f.service[0].name == "Gateway" for f in files)
    files = [descriptor_pb2.FileDescriptorProto.FromString(b)
             for b in itself.file_descriptor_response.file_descriptor_proto]
    assert [f.package for f in files] == ["grpc.reflection.v1"]


@pytest.mark.parametrize(
    ("method", "payload"),
    [
        ("Fit", b"\xff\xff\xff\xff"),
        ("Predict", b"\x12\x05\x08"),  # field x: a 5-byte Matrix cut after 1 byte
        ("GetModel", b"\x0a\x02\xff\xfe"),  # model_id: not UTF-8
    ],
)
def test_gateway_undecodable_request_is_invalid_argument_without_traceback(
    gateway_process: GatewayProcess, method: str, payload: bytes
) -> None:
    before = len(gateway_process.log())
    with grpc.insecure_channel(gateway_process.address) as channel:
        call = channel.unary_unary(f"/qpu_gateway.v1.Gateway/{method}")
        code, details = _code(lambda: call(payload, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.startswith(f"the request is not a valid {method} request message")
    with GatewayClient(gateway_process.address) as client:
        assert client.health() == "SERVING"
    logged = gateway_process.log()[before:]
    assert "Traceback" not in logged and "not a valid" in logged


def test_gateway_fit_reference_kernel_over_the_wire(gateway_address: str) -> None:
    x, y = _curves(30)
    with GatewayClient(gateway_address) as client:
        info = client.fit(x[:20], y[:20], seed=3, linear_share=0.0, relevance_power=0.0, gamma=0.1,
                          linear_margin=0.0, linear_reach=0.0, **FAST)
        assert info.params.HasField("linear_share") and info.params.linear_share == 0.0
        assert (info.params.linear_margin, info.params.linear_reach) == (0.0, 0.0)
        assert (info.params.relevance_power, info.params.gamma) == (0.0, pytest.approx(0.1))
        mean, _ = client.predict(info.model_id, x[20:])
        assert mean.shape == (10,) and np.all(np.isfinite(mean))


def test_gateway_fit_then_predict_in_caller_units(gateway_address: str) -> None:
    x, y = _curves(60)
    y_units = 400 + 100 * y
    with GatewayClient(gateway_address) as client:
        info = client.fit(x[:20], y_units[:20], seed=7, **FAST)
        assert info.model_id and info.version == 1 and info.backend == "neal"
        assert (info.n_train, info.n_features, info.num_variables) == (20, 10, 120)
        assert 1 <= info.members <= info.params.top_k and not info.fallback and info.created_at.seconds > 0
        assert info.params.gamma == pytest.approx(DEFAULT_GAMMA) and info.params.num_reads == 100
        assert info.params.linear_share == pytest.approx(DEFAULT_LINEAR_SHARE)
        assert info.params.linear_margin == pytest.approx(DEFAULT_LINEAR_MARGIN)
        assert info.params.linear_reach == pytest.approx(DEFAULT_LINEAR_REACH)
        mean, std = client.predict(info.model_id, x[20:])
        assert mean.shape == std.shape == (40,) and np.all(std >= 0)
        r2 = 1 - ((mean - y_units[20:]) ** 2).sum() / ((y_units[20:] - y_units[20:].mean()) ** 2).sum()
        assert r2 > 0.7
        again = client.fit(x[:20], y_units[:20], model_id=info.model_id, seed=8, **FAST)
        assert again.version == 2
        assert [m.version for m in client.list_models(info.model_id)] == [1, 2]
        assert [m.version for m in client.list_models(info.model_id, page_size=1)] == [1, 2]
        assert client.get_model(info.model_id, version=1).seed == 7


def test_gateway_predict_far_outside_the_training_data_is_the_kernels_limit_not_nan(
    gateway_process: GatewayProcess,
) -> None:
    x = np.linspace(0, 1, 10)[:, None]
    with GatewayClient(gateway_process.address) as client:
        info = client.fit(x, np.sin(6 * x[:, 0]), seed=0)
        before = len(gateway_process.log())
        far = np.array([[1e308], [-1e308], [1.7976931348623157e308], [1e200]])
        mean, std = client.predict(info.model_id, far)
    assert np.isfinite(mean).all() and np.isfinite(std).all()
    assert np.all(mean == mean[0]) and np.all(std == std[0])  # every row: the far-away limit
    assert "Warning" not in gateway_process.log()[before:]  # no numpy overflow on the way


def test_gateway_unknown_model_is_not_found(gateway_address: str) -> None:
    with GatewayClient(gateway_address) as client:
        x = np.ones((1, 3))
        assert _code(lambda: client.predict("no-such-model", x))[0] == grpc.StatusCode.NOT_FOUND
        assert _code(lambda: client.get_model("no-such-model"))[0] == grpc.StatusCode.NOT_FOUND
        assert _code(lambda: client.delete_model("no-such-model"))[0] == grpc.StatusCode.NOT_FOUND


def _fit_request(**over) -> pb.FitRequest:
    req = pb.FitRequest(
        x=pb.Matrix(rows=3, cols=2, values=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
        y=[1.0, 2.0, 3.0],
        params=pb.QSVRParams(num_reads=10, num_sweeps=10),
    )
    for k, v in over.items():
        if k == "params":
            req.params.MergeFrom(v)
        else:
            getattr(req, k).CopyFrom(v) if hasattr(v, "DESCRIPTOR") else setattr(req, k, v)
    return req


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (_fit_request(x=pb.Matrix(rows=3, cols=2, values=[0.1] * 5)), "x"),
        (_fit_request(x=pb.Matrix(rows=0, cols=0, values=[])), "x"),
        (_fit_request(x=pb.Matrix(rows=3, cols=2, values=[0.1, math.nan, 0, 0, 0, 0])), "x"),
        (_fit_request(x=pb.Matrix(rows=3, cols=2, values=[0.1, math.inf, 0, 0, 0, 0])), "x"),
        (pb.FitRequest(x=pb.Matrix(rows=3, cols=2, values=[0.1] * 6), y=[1.0, 2.0]), "y"),
        (pb.FitRequest(x=pb.Matrix(rows=1, cols=1, values=[0.1]), y=[math.nan]), "y"),
        (pb.FitRequest(x=pb.Matrix(rows=10, cols=1, values=np.linspace(0, 1, 10).tolist()),
                       y=(np.sin(6 * np.linspace(0, 1, 10)) * 1e300).tolist()), "y"),
        (pb.FitRequest(x=pb.Matrix(rows=2, cols=1, values=[-1e308, 1e308]), y=[0.0, 1.0]), "x"),
        (pb.FitRequest(x=pb.Matrix(rows=1, cols=2, values=[0.1, 0.2]), y=[1.0]), "x"),
        (_fit_request(params=pb.QSVRParams(k=0)), "params.k"),
        (_fit_request(params=pb.QSVRParams(base=0.0)), "params.base"),
        (_fit_request(params=pb.QSVRParams(gamma=-1.0)), "params.gamma"),
        (_fit_request(params=pb.QSVRParams(relevance_power=-1.0)), "params.relevance_power"),
        (_fit_request(params=pb.QSVRParams(linear_share=math.inf)), "params.linear_share"),
        (_fit_request(params=pb.QSVRParams(linear_margin=-0.5)), "params.linear_margin"),
        (_fit_request(params=pb.QSVRParams(linear_reach=math.nan)), "params.linear_reach"),
        (_fit_request(params=pb.QSVRParams(top_k=0)), "params.top_k"),
        (_fit_request(params=pb.QSVRParams(num_reads=0)), "params.num_reads"),
        (_fit_request(params=pb.QSVRParams(ensemble="vote")), "params.ensemble"),
        (_fit_request(model_id="bad id/with slash"), "model_id"),
        (_fit_request(params=pb.QSVRParams(num_reads=10**9)), "params.num_reads"),
        (pb.FitRequest(x=pb.Matrix(rows=400, cols=1, values=[0.5] * 400), y=[1.0] * 400), "x"),
        (_fit_request(backend="no-such-backend"), "backend"),
        (pb.FitRequest(x=pb.Matrix(rows=1, cols=2, values=[0.1, 0.2]), y=[1.0], feature_names=["a"]),
         "feature_names"),
        (pb.FitRequest(x=pb.Matrix(rows=1, cols=2, values=[0.1, 0.2]), y=[1.0],
                       feature_names=["a", "a"]), "feature_names"),
    ],
)
def test_gateway_fit_bad_input_is_invalid_argument_naming_the_field(
    gateway_address: str, request_: pb.FitRequest, field: str
) -> None:
    with grpc.insecure_channel(gateway_address) as channel:
        stub = pb_grpc.GatewayStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Fit(request_, timeout=30)
    code, details = info.value.code(), info.value.details()
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(field + ":"), details
    assert GatewayClient.field_violations(info.value) == [(field, details[len(field) + 2:])]
    with GatewayClient(gateway_address) as client:
        assert client.health() == "SERVING"


def test_gateway_predict_bad_input_is_invalid_argument(gateway_address: str) -> None:
    x, y = _curves(20, 1)
    with GatewayClient(gateway_address) as client:
        info = client.fit(x, y, **FAST)
        with grpc.insecure_channel(gateway_address) as channel:
            stub = pb_grpc.GatewayStub(channel)
            for matrix, message in [
                (pb.Matrix(rows=2, cols=10, values=[0.0] * 19), "x: rows*cols"),
                (pb.Matrix(rows=1, cols=3, values=[0.0] * 3), "x: has 3 columns but model"),
                (pb.Matrix(rows=1, cols=10, values=[math.nan] + [0.0] * 9), "x: values must be finite"),
            ]:
                req = pb.PredictRequest(model_id=info.model_id, x=matrix)
                code, details = _code(lambda req=req: stub.Predict(req, timeout=10))
                assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(message), details
        assert client.predict(info.model_id, x[:1])[0].shape == (1,)


def test_gateway_models_survive_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "models.sqlite"
    x, y = _curves(20, 2)
    first = GatewayProcess(store).start()
    try:
        with GatewayClient(first.address) as client:
            info = client.fit(x, y, model_id="persisted", seed=3, **FAST)
            client.fit(x, y, model_id="persisted", seed=4, **FAST)
            before = client.predict("persisted", x, version=1)
    finally:
        assert first.stop() == 0
    assert "store closed" in first.log()
    second = GatewayProcess(store).start()
    try:
        with GatewayClient(second.address) as client:
            assert [m.version for m in client.list_models("persisted")] == [1, 2]
            after = client.predict("persisted", x, version=1)
            np.testing.assert_array_equal(after[0], before[0])
            np.testing.assert_array_equal(after[1], before[1])
            assert client.get_model("persisted", version=1).created_at == info.created_at
            assert client.delete_model("persisted") == 2
    finally:
        second.stop()


def test_gateway_reflection_can_be_switched_off(tmp_path: Path) -> None:
    proc = GatewayProcess(tmp_path / "m.sqlite", "--no-reflection").start()
    try:
        with grpc.insecure_channel(proc.address) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            req = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            code, _ = _code(lambda: list(stub.ServerReflectionInfo(req, timeout=5)))
            assert code == grpc.StatusCode.UNIMPLEMENTED
    finally:
        proc.stop()


def test_gateway_backend_comes_from_the_environment(tmp_path: Path) -> None:
    proc = GatewayProcess(tmp_path / "m.sqlite", env={"QPU_GATEWAY_BACKEND": "exact"}).start()
    try:
        assert "backend=exact" in proc.log()
        x, y = _curves(3, 3)
        with GatewayClient(proc.address) as client:
            info = client.fit(x, y, k=1, top_k=2)
            assert info.backend == "exact" and info.num_reads == 2**6
    finally:
        proc.stop()


def test_wire_params_are_the_qsvr_parameters() -> None:
    from qpu_gateway.convert import WIRE_PARAMS
    from qpu_gateway.qsvr import PARAM_NAMES

    assert sorted(WIRE_PARAMS) == sorted(PARAM_NAMES)


def test_client_cli_imports_no_sampler_or_scikit_learn() -> None:
    """``qpu-gateway health`` runs in probes with a 1-5 s budget: the client side stays light."""
    import subprocess
    import sys

    heavy = "('sklearn', 'dimod', 'torch', 'qpu_gateway.service')"
    code = f"import sys, qpu_gateway.cli, qpu_gateway.client; print([m for m in {heavy} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_gateway_undecodable_reflection_request_is_invalid_argument(
    gateway_process: GatewayProcess, version: str
) -> None:
    before = len(gateway_process.log())
    with grpc.insecure_channel(gateway_process.address) as channel:
        call = channel.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo")
        code, details = _code(lambda: list(call(iter([b"\xff\xff\xff"]), timeout=10)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "Traceback" not in gateway_process.log()[before:]


def test_gateway_health_watch_answers_and_refuses_undecodable_bytes(
    gateway_process: GatewayProcess,
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(gateway_process.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
        raw = channel.unary_stream("/grpc.health.v1.Health/Watch")
        code, _ = _code(lambda: list(raw(b"\xff\xff\xff", timeout=10)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
