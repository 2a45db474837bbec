"""The gateway's execution model through real ``qpu-gateway serve`` processes: Fits sample in
worker processes, stop at their deadline, cancel or shutdown and then store nothing; Predicts,
reads and health stay fast; the store is checked, locked and never reuses a version."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from qpu_gateway.client import GatewayClient
from qpu_gateway.store import ModelStore
from qpu_gateway.v1 import gateway_pb2 as pb
from qpu_gateway.v1 import gateway_pb2_grpc as pb_grpc
from tests.conftest import GatewayProcess

SERVER = """[server]
max_concurrent_fits = 1
max_queued_fits = 2
sampling_workers = 1
max_num_reads = 1000000
max_num_sweeps = 100000000
grace_seconds = 1.0
"""
# One read of 200 variables x 10^7 sweeps: minutes of sampling that checks no interrupt.
STUCK = {"k": 1, "num_reads": 1, "num_sweeps": 10_000_000}
# Seconds of sampling in many short reads (interruptible between reads).
MEDIUM = {"k": 1, "num_reads": 20_000, "num_sweeps": 100}
SMALL = {"k": 1, "num_reads": 10, "num_sweeps": 10}
# Sampling that only a deadline ends (10^6 short reads), interruptible between reads.
COOPERATIVE = {"k": 1, "num_reads": 1_000_000, "num_sweeps": 10}


def _request(model_id: str, rows: int, params: dict, **kw: object) -> pb.FitRequest:
    x = np.random.default_rng(rows).random((rows, 3))
    return pb.FitRequest(model_id=model_id, x=pb.Matrix(rows=rows, cols=3, values=x.ravel().tolist()),
                         y=x.sum(axis=1).tolist(), params=pb.QSVRParams(**params), **kw)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    d = tmp_path_factory.mktemp("execution")
    (d / "g.toml").write_text(SERVER)
    proc = GatewayProcess(d / "m.sqlite", "--config", str(d / "g.toml")).start(timeout=180)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def stub(server: GatewayProcess) -> Iterator[pb_grpc.GatewayStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.GatewayStub(channel)


def _versions(stub: pb_grpc.GatewayStub, model_id: str) -> list[int]:
    reply = stub.ListModels(pb.ListModelsRequest(model_id=model_id), timeout=30)
    return [m.version for m in reply.models]


def _idle(stub: pb_grpc.GatewayStub, within: float) -> float:
    """Seconds until a small Fit runs (the one sampling worker is free again)."""
    start = time.monotonic()
    stub.Fit(_request("probe", 8, SMALL), timeout=within)
    return time.monotonic() - start


def _latencies(call: Callable[[], object], seconds: float) -> list[float]:
    out: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.monotonic()
        call()
        out.append(time.monotonic() - start)
        time.sleep(0.02)
    return out


def test_predicts_and_health_stay_fast_while_a_big_fit_samples(
    server: GatewayProcess, stub: pb_grpc.GatewayStub
) -> None:
    small = stub.Fit(_request("fast", 20, SMALL), timeout=60).model
    rows = pb.Matrix(rows=5, cols=3, values=[0.5] * 15)
    big = stub.Fit.future(_request("big", 100, STUCK), timeout=6)
    time.sleep(1.0)
    with GatewayClient(server.address, timeout=30) as client:
        predict = _latencies(lambda: stub.Predict(
            pb.PredictRequest(model_id=small.model_id, x=rows), timeout=30), 2.0)
        health = _latencies(client.health, 1.0)
    assert not big.done(), "the big Fit ended before the measurement"
    assert max(predict) < 1.0 and max(health) < 1.0, (max(predict), max(health))
    with pytest.raises(grpc.RpcError) as late:
        big.result()
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert _idle(stub, 30) < 10
    assert _versions(stub, "big") == []


def test_fit_stuck_in_sampling_past_its_deadline_is_killed_and_stores_nothing(
    stub: pb_grpc.GatewayStub,
) -> None:
    with pytest.raises(grpc.RpcError) as late:
        stub.Fit(_request("stuck", 100, STUCK), timeout=1.0)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # Before: the sampling thread ran on for minutes, holding the only Fit slot's thread.
    assert _idle(stub, 30) < 10
    assert _versions(stub, "stuck") == []


def test_cancelled_fit_stops_stores_nothing_and_frees_its_slot(stub: pb_grpc.GatewayStub) -> None:
    for name, params in (("cancel-medium", MEDIUM), ("cancel-stuck", STUCK)):
        call = stub.Fit.future(_request(name, 10 if params is MEDIUM else 100, params), timeout=60)
        time.sleep(0.5)
        assert call.cancel()
        assert _idle(stub, 30) < 10
        time.sleep(1.0)
        assert _versions(stub, name) == [], f"{name}: a cancelled Fit stored a version"


def test_queued_fit_deadline_counts_from_arrival_and_a_late_fit_stores_nothing(
    stub: pb_grpc.GatewayStub,
) -> None:
    # The first Fit holds the only slot for 2 s (its deadline); the queued one, sent with 3 s,
    # needs about 2 s of sampling. Before, its budget restarted when it left the queue: it ran
    # on after its caller had been told DEADLINE_EXCEEDED, and stored.
    first = stub.Fit.future(_request("queue-first", 10, COOPERATIVE), timeout=2.0)
    time.sleep(0.3)
    outcome = "OK"
    start = time.monotonic()
    try:
        stub.Fit(_request("queued", 10, {"k": 1, "num_reads": 13_000, "num_sweeps": 100}),
                 timeout=3.0)
    except grpc.RpcError as exc:
        outcome = exc.code().name
    waited = time.monotonic() - start
    with contextlib.suppress(grpc.RpcError):
        first.result()
    assert _idle(stub, 60) < 30
    time.sleep(3.0)
    if outcome == "OK":
        assert waited < 3.0 and _versions(stub, "queued") == [1]
    else:
        assert outcome in ("DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")
        assert _versions(stub, "queued") == [], "the client was told the Fit failed, yet it stored"
    assert _versions(stub, "queue-first") == []


def test_queued_fit_without_a_slot_before_its_deadline_is_resource_exhausted_for_the_caller(
    stub: pb_grpc.GatewayStub,
) -> None:
    # The first Fit holds the only slot past the queued one's deadline. The queue gives up just
    # before that deadline, so the caller learns "busy" (RESOURCE_EXHAUSTED), not DEADLINE_EXCEEDED
    # (which would say its own Fit was too slow).
    first = stub.Fit.future(_request("hold-slot", 100, STUCK), timeout=6.0)
    time.sleep(0.5)
    with pytest.raises(grpc.RpcError) as busy:
        stub.Fit(_request("queued-busy", 10, SMALL), timeout=1.5)
    assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "freed within the deadline" in busy.value.details()
    first.cancel()
    assert _idle(stub, 30) < 10
    assert _versions(stub, "queued-busy") == []


def test_idempotency_key_makes_a_retried_fit_store_once(stub: pb_grpc.GatewayStub) -> None:
    request = _request("", 12, SMALL, idempotency_key="study-7/trial-3/fit")
    first = stub.Fit(request, timeout=60).model
    again = stub.Fit(request, timeout=60).model
    assert (again.model_id, again.version) == (first.model_id, first.version)
    assert _versions(stub, first.model_id) == [first.version]
    other = _request("", 13, SMALL, idempotency_key="study-7/trial-3/fit")
    with pytest.raises(grpc.RpcError) as clash:
        stub.Fit(other, timeout=60)
    assert clash.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "idempotency_key" in clash.value.details() and "different request" in clash.value.details()


def test_idempotency_key_through_the_python_client(server: GatewayProcess) -> None:
    x = np.random.default_rng(5).random((10, 3))
    with GatewayClient(server.address, timeout=60) as gw:
        first = gw.fit(x, x.sum(axis=1), idempotency_key="client-retry", **SMALL)
        again = gw.fit(x, x.sum(axis=1), idempotency_key="client-retry", **SMALL)
        assert (again.model_id, again.version) == (first.model_id, first.version)
        assert [m.version for m in gw.list_models(model_id=first.model_id)] == [first.version]


def test_outside_write_lock_blocks_neither_health_nor_reads(
    server: GatewayProcess, stub: pb_grpc.GatewayStub
) -> None:
    model = stub.Fit(_request("locked", 8, SMALL), timeout=60).model
    outside = sqlite3.connect(server.store, isolation_level=None, timeout=10)
    outside.execute("BEGIN IMMEDIATE")
    fit = stub.Fit.future(_request("locked", 8, SMALL), timeout=60)
    try:
        time.sleep(1.0)  # the Fit has sampled and waits for the write lock
        with GatewayClient(server.address, timeout=30) as client:
            reads = _latencies(lambda: stub.GetModel(
                pb.GetModelRequest(model_id=model.model_id, version=1), timeout=30), 1.0)
            health = _latencies(client.health, 0.5)
            assert client.health() == "SERVING"
        assert not fit.done(), "the Fit did not wait for the outside lock"
    finally:
        outside.execute("ROLLBACK")
        outside.close()
    assert max(reads) < 1.0 and max(health) < 1.0, (max(reads), max(health))
    assert fit.result().model.version == 2


def test_second_server_on_a_store_exits_with_one_clear_line(server: GatewayProcess) -> None:
    second = GatewayProcess(server.store, log_path=server.store.with_suffix(".second.log"))
    try:
        with pytest.raises(RuntimeError):
            second.start(timeout=120)
    finally:
        second.stop()
    assert second.proc is not None and second.proc.returncode == 2
    lines = second.log().strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in second.log(), second.log()
    assert f"store {server.store} is in use by another gateway (pid" in lines[0]


def test_corrupt_store_at_start_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    _store_with_models(path)
    _corrupt(path)
    proc = GatewayProcess(path)
    try:
        with pytest.raises(RuntimeError):
            proc.start(timeout=120)
    finally:
        proc.stop()
    lines = proc.log().strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.log(), proc.log()
    assert lines[0].startswith(f"qpu-gateway: store {path} ")


def test_health_is_not_serving_while_the_store_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    _store_with_models(path)
    proc = GatewayProcess(path).start(timeout=180)
    try:
        with GatewayClient(proc.address, timeout=30) as client:
            assert client.health() == "SERVING"
            _corrupt(path)
            deadline = time.monotonic() + 20
            while client.health() == "SERVING" and time.monotonic() < deadline:
                time.sleep(0.2)
            assert client.health() == "NOT_SERVING"
            assert client.health("qpu_gateway.v1.Gateway") == "NOT_SERVING"
    finally:
        proc.stop()
    assert "cannot serve: corrupt" in proc.log()


def test_sigterm_stops_a_fit_stuck_in_sampling_within_the_grace(tmp_path: Path) -> None:
    (tmp_path / "g.toml").write_text(SERVER)
    proc = GatewayProcess(tmp_path / "m.sqlite", "--config", str(tmp_path / "g.toml"))
    proc.start(timeout=180)
    with grpc.insecure_channel(proc.address) as channel:
        call = pb_grpc.GatewayStub(channel).Fit.future(_request("term", 100, STUCK), timeout=600)
        time.sleep(1.0)
        start = time.monotonic()
        assert proc.stop(timeout=60) == 0
        stopped = time.monotonic() - start
        with contextlib.suppress(grpc.RpcError):
            call.result()
    assert stopped < 1.0 + 5.0, f"shutdown took {stopped:.1f} s with a 1 s grace"
    assert "store closed" in proc.log()
    store = ModelStore(tmp_path / "m.sqlite")
    assert store.count() == 0
    store.close()


def _stat(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` after the command name: state, ppid, ... (``["X"]``: gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ["X"]


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (reads /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(int(stat.parent.name))
        if fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_of_the_server_ends_its_busy_sampling_worker(tmp_path: Path) -> None:
    """kill -9 of the server mid-Fit: the worker stuck in one long read (and the forkserver it
    kept alive) are gone within seconds, not when the sampling would have ended."""
    (tmp_path / "g.toml").write_text(SERVER)
    proc = GatewayProcess(tmp_path / "m.sqlite", "--config", str(tmp_path / "g.toml"))
    proc.start(timeout=180)
    assert proc.proc is not None
    below: set[int] = set()
    try:
        with grpc.insecure_channel(proc.address) as channel:
            call = pb_grpc.GatewayStub(channel).Fit.future(_request("kill", 100, STUCK), timeout=600)
            time.sleep(1.5)
            assert not call.done(), "the Fit ended before the server was killed"
            below = _descendants(proc.proc.pid)
            assert below, "the server started no sampling processes"
            os.kill(proc.proc.pid, signal.SIGKILL)
            proc.proc.wait(10)
            with contextlib.suppress(grpc.RpcError):
                call.result()
        deadline = time.monotonic() + 15
        while (left := {p for p in below if _stat(p)[0] not in ("Z", "X")}) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
        assert not left, f"processes {sorted(left)} outlived the killed server"
    finally:
        for p in below | ({proc.proc.pid} if proc.proc.poll() is None else set()):
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
    store = ModelStore(tmp_path / "m.sqlite")
    assert store.count() == 0
    store.close()


def _store_with_models(path: Path) -> None:
    store = ModelStore(path)
    for i in range(30):
        store.put(f"m{i}", {"i": i}, {"w": list(range(200))}, 1.0)
    store.close()


def _corrupt(path: Path) -> None:
    """Overwrite every page after the first two (the header and the schema) with garbage."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for i in range(2 * page, len(data)):
        data[i] = (i * 7 + 13) % 256
    with open(path, "r+b") as fh:
        fh.write(bytes(data))
