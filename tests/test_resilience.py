"""The gateway under faults, load and bad input, through real server processes."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import signal
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qpu_gateway.client import GatewayClient
from qpu_gateway.convert import matrix_to_proto
from qpu_gateway.v1 import gateway_pb2 as pb
from qpu_gateway.v1 import gateway_pb2_grpc as pb_grpc
from tests.conftest import GatewayProcess, free_port

ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.RESOURCE_EXHAUSTED}


def _data(n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).random((n, 3))
    return x, x.sum(axis=1)


def _config(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_metrics_and_request_ids(tmp_path: Path) -> None:
    proc = GatewayProcess(tmp_path / "m.sqlite", "--metrics-port", "0", "--log-format", "json").start()
    try:
        x, y = _data()
        with GatewayClient(proc.address) as client:
            info = client.fit(x, y, num_reads=20, num_sweeps=10)
            client.predict(info.model_id, x)
            with pytest.raises(grpc.RpcError):
                client.predict("missing", x)
        with grpc.insecure_channel(proc.address) as channel:
            stub = pb_grpc.GatewayStub(channel)
            _, call = stub.ListModels.with_call(pb.ListModelsRequest(),
                                                metadata=(("x-request-id", "req-42"),))
            assert dict(call.trailing_metadata())["x-request-id"] == "req-42"
        port = re.search(r"metrics on http://127.0.0.1:(\d+)/metrics", proc.log()).group(1)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        proc.stop()
    assert 'qpu_gateway_requests_total{code="OK",method="Fit"} 1.0' in text
    assert 'qpu_gateway_requests_total{code="NOT_FOUND",method="Predict"} 1.0' in text
    assert 'qpu_gateway_fits_total{backend="neal",outcome="ok"} 1.0' in text
    assert "qpu_gateway_request_seconds_bucket" in text and "qpu_gateway_in_flight" in text
    assert "qpu_gateway_stored_versions 1.0" in text
    records = [json.loads(line) for line in proc.log().splitlines() if line.startswith("{")]
    fit_logs = [r for r in records if r["message"].startswith("fit model_id=")]
    assert fit_logs and fit_logs[0]["request_id"] not in ("", "-")


def test_backend_fallback_and_the_workers_lines_carry_the_fits_request_id(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "g.toml", '[server]\nbackends = ["qpu", "neal"]\n'
                  '[backends.qpu]\ntoken = "qhpo-test-token-0123456789"\n'
                  'endpoint = "http://127.0.0.1:1/sapi/v2/"\nrequest_timeout = 1\n'
                  'http_retry_total = 0\n')
    proc = GatewayProcess(tmp_path / "m.sqlite", "--config", cfg, "--log-format", "json").start()
    try:
        x, y = _data()
        with grpc.insecure_channel(proc.address) as channel:
            stub = pb_grpc.GatewayStub(channel)
            stub.Fit(pb.FitRequest(x=matrix_to_proto(x), y=y.tolist(),
                                   params=pb.QSVRParams(num_reads=20, num_sweeps=10)),
                     metadata=(("x-request-id", "fit-7"),), timeout=120)
    finally:
        proc.stop()
    records = [json.loads(line) for line in proc.log().splitlines() if line.startswith("{")]
    fallback = [r for r in records if r["message"].startswith("backend qpu failed, falling back")]
    assert fallback and fallback[0]["request_id"] == "fit-7"
    worker = [r for r in records if r["pid"] != fallback[0]["pid"]]  # a sampling worker's lines
    assert worker and all(r["request_id"] == "fit-7" for r in worker)


def test_busy_fit_pool_refuses_excess_fits_while_predicts_keep_working(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "g.toml", "[server]\nmax_concurrent_fits = 1\nmax_queued_fits = 0\n")
    proc = GatewayProcess(tmp_path / "m.sqlite", "--config", cfg).start()
    try:
        x, y = _data(20)
        with GatewayClient(proc.address, timeout=60) as client:
            model = client.fit(x, y, num_reads=10, num_sweeps=10).model_id
            long_fit = threading.Thread(target=_quiet, args=(lambda: client.fit(
                x, y, num_reads=100_000, num_sweeps=1000, timeout=5),))
            long_fit.start()
            time.sleep(0.5)
            with pytest.raises(grpc.RpcError) as busy:
                client.fit(x, y, num_reads=10, num_sweeps=10)
            assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_concurrent_fits" in busy.value.details()
            for _ in range(20):
                assert client.predict(model, x)[0].shape == (20,)
            long_fit.join()
    finally:
        proc.stop()


def test_excess_fit_waits_for_a_slot_within_its_deadline(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "g.toml", "[server]\nmax_concurrent_fits = 1\nmax_queued_fits = 1\n")
    proc = GatewayProcess(tmp_path / "m.sqlite", "--config", cfg).start()
    try:
        x, y = _data(20)
        with GatewayClient(proc.address, timeout=120) as client:
            first = threading.Thread(target=client.fit, args=(x, y), kwargs={"num_reads": 3000})
            first.start()
            time.sleep(0.3)
            queued = client.fit(x, y, num_reads=10, num_sweeps=10, timeout=120)
            first.join()
            assert queued.version == 1 and len(client.list_models()) == 2
    finally:
        proc.stop()


def test_many_concurrent_predict_clients_get_no_errors(gateway_address: str) -> None:
    x, y = _data(20)
    with GatewayClient(gateway_address) as admin:
        model = admin.fit(x, y, num_reads=50, num_sweeps=20).model_id
    errors: list[BaseException] = []
    answers: list[np.ndarray] = []

    def client_loop() -> None:
        with GatewayClient(gateway_address, timeout=60) as client:
            for _ in range(20):
                try:
                    answers.append(client.predict(model, x[:1])[0])
                except grpc.RpcError as exc:
                    errors.append(exc)

    threads = [threading.Thread(target=client_loop) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(answers) == 64 * 20
    assert all(np.array_equal(a, answers[0]) for a in answers)


def test_fit_past_its_deadline_is_stopped_and_frees_its_slot(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "g.toml", "[server]\nmax_concurrent_fits = 1\nmax_queued_fits = 0\n")
    proc = GatewayProcess(tmp_path / "m.sqlite", "--config", cfg).start()
    try:
        x, y = _data(20)
        with GatewayClient(proc.address, timeout=60) as client:
            with pytest.raises(grpc.RpcError) as late:
                client.fit(x, y, num_reads=100_000, num_sweeps=1000, timeout=0.5)
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # 100k reads x 1000 sweeps would take minutes; the slot frees within seconds.
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.fit(x, y, num_reads=10, num_sweeps=10)
                    break
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert time.monotonic() < deadline, "the abandoned Fit kept its slot"
                    time.sleep(0.1)
            assert len(client.list_models()) == 1
    finally:
        proc.stop()


def test_sigterm_lets_an_in_flight_fit_finish_then_refuses_calls(tmp_path: Path) -> None:
    store = tmp_path / "m.sqlite"
    # A grace long enough for the Fit on a loaded machine (its worker runs at a lower priority).
    cfg = _config(tmp_path / "g.toml", "[server]\ngrace_seconds = 60.0\n")
    proc = GatewayProcess(store, "--config", cfg).start()
    x, y = _data(20)
    result: dict[str, object] = {}
    client = GatewayClient(proc.address, timeout=60)

    def fit() -> None:
        try:
            result["info"] = client.fit(x, y, model_id="in-flight", num_reads=3000, num_sweeps=100)
        except grpc.RpcError as exc:
            result["error"] = exc.code()

    worker = threading.Thread(target=fit)
    worker.start()
    time.sleep(0.4)
    proc.proc.send_signal(signal.SIGTERM)
    worker.join(60)
    assert proc.proc.wait(30) == 0
    client.close()
    assert "info" in result, result
    assert "store closed" in proc.log()
    again = GatewayProcess(store).start()
    try:
        with GatewayClient(again.address) as c:
            assert c.get_model("in-flight").version == 1
    finally:
        again.stop()


def _check_store(address: str, x: np.ndarray, acknowledged: dict[tuple[str, int], np.ndarray]) -> None:
    """Every acknowledged version loads and predicts as before; every listed model loads."""
    with GatewayClient(address, timeout=30) as client:
        for key, expected in acknowledged.items():
            mean = client.predict(key[0], x, version=key[1])[0]
            assert mean.shape == (len(x),) and np.isfinite(mean).all()
            if expected is not None:
                np.testing.assert_array_equal(mean, expected)
            acknowledged[key] = mean
        for info in client.list_models():
            assert client.predict(info.model_id, x)[0].shape == (len(x),)


# Each kill restarts the server (its sampling workers warm up first): 10 random moments per run;
# QHPO_KILLS raises it for a longer soak.
KILLS = int(os.environ.get("QHPO_KILLS", "10"))


def test_kill_9_during_fits_never_loses_or_corrupts_a_model(tmp_path: Path) -> None:
    store = tmp_path / "m.sqlite"
    rng = random.Random(7)
    x, y = _data(20)
    acknowledged: dict[tuple[str, int], np.ndarray | None] = {}
    for i in range(KILLS):
        proc = GatewayProcess(store).start()
        _check_store(proc.address, x, acknowledged)
        done: list[tuple[str, int]] = []
        with GatewayClient(proc.address, timeout=30) as client:

            def fit(client=client, done=done, i=i) -> None:
                for j in range(3):
                    info = client.fit(x, y, model_id=f"m{i}-{j}", num_reads=rng.choice([200, 800, 2000]))
                    done.append((info.model_id, info.version))

            worker = threading.Thread(target=_quiet, args=(fit,))
            worker.start()
            time.sleep(rng.uniform(0.05, 1.2))
            proc.stop(signal.SIGKILL)
            worker.join(30)
        acknowledged.update(dict.fromkeys(done))
    proc = GatewayProcess(store).start()
    try:
        _check_store(proc.address, x, acknowledged)
    finally:
        proc.stop()
    assert acknowledged, "no Fit completed before any kill; the test exercised nothing"


def _quiet(fn) -> None:
    """Run ``fn`` and ignore the gRPC error it ends with (the server is being killed)."""
    with contextlib.suppress(grpc.RpcError):
        fn()


def _matrix() -> st.SearchStrategy[pb.Matrix]:
    values = st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(math.nan)),
                      max_size=80)
    dims = st.one_of(st.integers(0, 12), st.integers(0, 2**32 - 1))
    return st.builds(lambda r, c, v: pb.Matrix(rows=r, cols=c, values=v), dims, dims, values)


def _consistent_matrix() -> st.SearchStrategy[pb.Matrix]:
    return st.integers(1, 8).flatmap(lambda r: st.integers(1, 4).flatmap(lambda c: st.lists(
        st.floats(-1e6, 1e6), min_size=r * c, max_size=r * c).map(
        lambda v: pb.Matrix(rows=r, cols=c, values=v))))


_ids = st.one_of(st.just(""), st.just("fuzz-model"), st.text(max_size=20))
_params = st.builds(
    lambda **kw: pb.QSVRParams(**{k: v for k, v in kw.items() if v is not None}),
    k=st.none() | st.integers(0, 2**32 - 1), base=st.none() | st.floats(),
    k0=st.none() | st.floats(), xi=st.none() | st.floats(), gamma=st.none() | st.floats(),
    epsilon=st.none() | st.floats(), c=st.none() | st.floats(),
    num_reads=st.none() | st.integers(0, 2**32 - 1), top_k=st.none() | st.integers(0, 2**32 - 1),
    num_sweeps=st.none() | st.integers(0, 2**32 - 1),
    ensemble=st.sampled_from(["", "mean", "best", "vote", "energy_softmax"]),
)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("fuzz")
    cfg = _config(d / "g.toml", "[server]\nmax_num_reads = 20\nmax_num_sweeps = 20\nmax_train_rows = 10\n"
                                "max_message_bytes = 65536\nmax_concurrent_fits = 2\nmax_queued_fits = 8\n")
    proc = GatewayProcess(d / "m.sqlite", "--config", cfg).start()
    channel = grpc.insecure_channel(proc.address)
    stub = pb_grpc.GatewayStub(channel)
    x, y = _data(6)
    stub.Fit(pb.FitRequest(model_id="fuzz-model", x=pb.Matrix(rows=6, cols=3, values=x.ravel().tolist()),
                           y=y.tolist(), params=pb.QSVRParams(num_reads=10, num_sweeps=10)), timeout=30)
    yield stub
    channel.close()
    with GatewayClient(proc.address) as client:
        assert client.health() == "SERVING"
    proc.stop()


def _call(fn, request) -> grpc.StatusCode:
    try:
        fn(request, timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED, (exc.code(), exc.details(), request)
        return exc.code()
    return grpc.StatusCode.OK


FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(st.builds(pb.FitRequest, model_id=_ids, x=st.one_of(_matrix(), _consistent_matrix()),
                 y=st.lists(st.floats(), max_size=10), params=_params,
                 backend=st.sampled_from(["", "neal", "no-such-backend"])))
def test_fuzz_fit(fuzz_server, request: pb.FitRequest) -> None:
    _call(fuzz_server.Fit, request)


@FUZZ
@given(st.builds(pb.PredictRequest, model_id=_ids, x=st.one_of(_matrix(), _consistent_matrix()),
                 version=st.none() | st.integers(0, 2**32 - 1)))
def test_fuzz_predict(fuzz_server, request: pb.PredictRequest) -> None:
    if request.version is None:
        request.ClearField("version")
    _call(fuzz_server.Predict, request)


@FUZZ
@given(st.builds(pb.GetModelRequest, model_id=_ids, version=st.integers(0, 2**32 - 1)))
def test_fuzz_get_model(fuzz_server, request: pb.GetModelRequest) -> None:
    _call(fuzz_server.GetModel, request)


@FUZZ
@given(st.builds(pb.ListModelsRequest, model_id=_ids))
def test_fuzz_list_models(fuzz_server, request: pb.ListModelsRequest) -> None:
    _call(fuzz_server.ListModels, request)


@FUZZ
@given(st.builds(pb.DeleteModelRequest, model_id=st.text(max_size=20)))
def test_fuzz_delete_model(fuzz_server, request: pb.DeleteModelRequest) -> None:
    _call(fuzz_server.DeleteModel, request)


def test_oversized_message_is_resource_exhausted(fuzz_server) -> None:
    big = pb.PredictRequest(model_id="fuzz-model", x=pb.Matrix(rows=10000, cols=3, values=[0.0] * 30000))
    assert _call(fuzz_server.Predict, big) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_reply_over_max_message_bytes_is_invalid_argument_naming_the_field_and_counted(
    tmp_path: Path,
) -> None:
    cfg = _config(tmp_path / "g.toml", "[server]\nmax_message_bytes = 65536\n")
    proc = GatewayProcess(tmp_path / "m.sqlite", "--config", cfg, "--metrics-port", "0").start()
    names = [f"{i:03d}".ljust(128, "n") for i in range(200)]  # about 26 kB of ModelInfo each
    try:
        with GatewayClient(proc.address) as client:
            x, y = _data(2)
            wide = np.random.default_rng(0).random((2, 200))
            for _ in range(3):
                client.fit(wide, y, feature_names=names, num_reads=10, num_sweeps=10)
            one = client.fit(x[:, :1], y, num_reads=10, num_sweeps=10).model_id
            assert client.predict(one, np.zeros((4000, 1)))[0].shape == (4000,)  # 64 kB: fits
            with pytest.raises(grpc.RpcError) as rows:  # an 80 kB request, a 96 kB reply
                client.predict(one, np.zeros((6000, 1)))
            with pytest.raises(grpc.RpcError) as page:
                client.list_models(page_size=4)
            fit = int(re.search(r"the first (\d) models", page.value.details()).group(1))
            assert fit in (2, 3)  # 2 wide ones, and the narrow one when it comes within them
            assert len(client.list_models(page_size=fit)) == 4
        port = re.search(r"metrics on http://127.0.0.1:(\d+)/metrics", proc.log()).group(1)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        proc.stop()
    for err, field, advice in ((rows.value, "x", "send at most 4094 rows per Predict"),
                               (page.value, "page_size", "ask for a smaller page_size")):
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert err.details().startswith(f"{field}: the reply for ") and advice in err.details()
        assert "max_message_bytes = 65536" in err.details()
        assert [f for f, _ in GatewayClient.field_violations(err)] == [field]
    assert 'qpu_gateway_requests_total{code="INVALID_ARGUMENT",method="Predict"} 1.0' in text
    assert 'qpu_gateway_requests_total{code="INVALID_ARGUMENT",method="ListModels"} 1.0' in text
    assert "Traceback" not in proc.log() and "Predict INVALID_ARGUMENT: x: the reply" in proc.log()


def _restartable(tmp_path: Path) -> tuple[GatewayProcess, GatewayClient, str, np.ndarray, np.ndarray]:
    """A gateway on a fixed address (so that a restart is the same address), a client of it,
    one fitted model's id and its training data."""
    proc = GatewayProcess(tmp_path / "m.sqlite", bind=f"127.0.0.1:{free_port()}").start()
    x, y = _data()
    client = GatewayClient(proc.bind, timeout=30)
    return proc, client, client.fit(x, y, num_reads=20, num_sweeps=10).model_id, x, y


def _restart(proc: GatewayProcess) -> GatewayProcess:
    """A new gateway on ``proc``'s store and address (``proc`` is stopped)."""
    return GatewayProcess(proc.store, bind=proc.bind).start()


def test_client_retries_predict_across_a_server_restart_but_not_fit(tmp_path: Path) -> None:
    proc, client, model, x, y = _restartable(tmp_path)
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def stream() -> None:
        for _ in range(60):
            try:
                results.append(client.predict(model, x)[0])
            except grpc.RpcError as exc:
                errors.append(exc)
            time.sleep(0.02)

    reader = threading.Thread(target=stream)
    reader.start()
    time.sleep(0.3)
    proc.stop()
    with pytest.raises(grpc.RpcError) as down:
        client.fit(x, y, num_reads=20, timeout=5)
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE
    proc = _restart(proc)
    reader.join(60)
    try:
        assert errors == [] and len(results) == 60
        assert all(np.array_equal(r, results[0]) for r in results)
        assert [m.version for m in client.list_models(model)] == [1]
    finally:
        client.close()
        proc.stop()


def test_client_predicts_from_many_threads_survive_a_server_restart(tmp_path: Path) -> None:
    # A stopping server ends the calls it has not finished with CANCELLED (a few in
    # every restart under six threads); the client retries those reads as it does UNAVAILABLE.
    proc, client, model, x, _y = _restartable(tmp_path)
    stop = threading.Event()
    codes: list[grpc.StatusCode] = []

    def hammer() -> None:
        while not stop.is_set():
            try:
                client.predict(model, x)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        proc.stop()
        proc = _restart(proc)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        client.close()
        proc.stop()
    assert [c for c in codes if c != grpc.StatusCode.OK] == []
    assert len(codes) > 100


def test_unexpected_error_is_internal_with_a_correlation_id_and_serving_goes_on(tmp_path: Path) -> None:
    import sqlite3

    store = tmp_path / "m.sqlite"
    proc = GatewayProcess(store).start()
    try:
        x, y = _data()
        with GatewayClient(proc.address) as client:
            good = client.fit(x, y, num_reads=20, num_sweeps=10).model_id
            with sqlite3.connect(store) as conn:
                info = conn.execute("SELECT info FROM models WHERE model_id = ?", (good,)).fetchone()[0]
                conn.execute("INSERT INTO models VALUES ('tampered', 1, 0.0, ?, ?)",
                             (info, json.dumps({"format": "qhpo.qsvr", "version": 1})))
            with pytest.raises(grpc.RpcError) as broken:
                client.predict("tampered", x)
            assert broken.value.code() == grpc.StatusCode.INTERNAL
            cid = re.search(r"correlation id (\w+)", broken.value.details()).group(1)
            assert client.predict(good, x)[0].shape == (12,)
            assert client.health() == "SERVING"
    finally:
        proc.stop()
    assert f"correlation id {cid}" in proc.log() and "Traceback" in proc.log()
