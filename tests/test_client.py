"""GatewayClient: an idempotent call past its deadline is "unreachable" only without a connection."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import pytest

from qpu_gateway.client import GatewayClient, UnreachableError
from qpu_gateway.v1 import gateway_pb2 as pb
from qpu_gateway.v1 import gateway_pb2_grpc as pb_grpc
from tests.conftest import free_port


@pytest.fixture()
def silent_listener() -> Iterator[str]:
    """``127.0.0.1:PORT`` of a TCP socket that accepts connections (the kernel's backlog) but
    never speaks HTTP/2."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture()
def slow_gateway() -> Iterator[str]:
    """``127.0.0.1:PORT`` of a real gRPC Gateway whose ListModels answers after 30 s."""
    release = threading.Event()

    class Slow(pb_grpc.GatewayServicer):
        def ListModels(self, request: Any, context: Any) -> pb.ListModelsReply:
            release.wait(30)
            return pb.ListModelsReply()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_GatewayServicer_to_server(Slow(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        release.set()
        server.stop(0)


@pytest.mark.parametrize("where", ["nothing listening", "silent listener"])
def test_a_call_that_never_connected_is_unreachable_soon_after_its_deadline(
    request: pytest.FixtureRequest, where: str
) -> None:
    address = (f"127.0.0.1:{free_port()}" if where == "nothing listening"
               else request.getfixturevalue("silent_listener"))
    start = time.monotonic()
    with GatewayClient(address, timeout=1) as client, pytest.raises(UnreachableError) as err:
        client.list_models()
    # the call's deadline, then a short look at the channel (not a second wait of its own)
    assert time.monotonic() - start < 10
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert err.value.details().startswith(f"could not connect to {address} within 1 s")


def test_a_slow_gateway_stays_deadline_exceeded(slow_gateway: str) -> None:
    with GatewayClient(slow_gateway, timeout=0.5) as client, pytest.raises(grpc.RpcError) as err:
        client.list_models()
    assert not isinstance(err.value, UnreachableError)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda gw: gw.fit([[0.0], [1.0]], [0.0, 1.0], seed=-1),
         "seed must be an integer in [0, 2**64), got -1"),
        (lambda gw: gw.fit([[0.0], [1.0]], [0.0, 1.0], k=-1),
         "params.k must be an integer in [0, 2**32), got -1"),
        (lambda gw: gw.fit([[0.0], [1.0]], [0.0, 1.0], num_reads=2**32),
         f"params.num_reads must be an integer in [0, 2**32), got {2**32}"),
        (lambda gw: gw.predict("m", [[0.0]], version=-1),
         "version must be an integer in [0, 2**32), got -1"),
        (lambda gw: gw.get_model("m", version=-1),
         "version must be an integer in [0, 2**32), got -1"),
        (lambda gw: gw.list_models(page_size=-1),
         "page_size must be an integer in [0, 2**32), got -1"),
    ],
)
def test_client_out_of_range_integer_names_the_field_and_the_rule(call: Any, message: str) -> None:
    with GatewayClient("127.0.0.1:9") as gw, pytest.raises(ValueError) as err:
        call(gw)
    assert str(err.value) == message


def test_client_non_integer_param_is_a_type_error_naming_the_field() -> None:
    with GatewayClient("127.0.0.1:9") as gw, pytest.raises(TypeError, match=r"^params\.k must be an integer"):
        gw.fit([[0.0], [1.0]], [0.0, 1.0], k=1.5)


def test_client_fit_reads_a_1d_x_as_one_feature_per_row(gateway_address: str) -> None:
    x = np.linspace(0.0, 1.0, 20)
    with GatewayClient(gateway_address) as gw:
        info = gw.fit(x, 2 * x, model_id="client-1d", num_reads=20)
        mean, _ = gw.predict("client-1d", x[:, None])
    assert (info.n_train, info.n_features) == (20, 1) and mean.shape == (20,)


def test_client_fit_refuses_a_1d_x_with_other_than_one_value_per_y() -> None:
    with GatewayClient("127.0.0.1:9") as gw, pytest.raises(ValueError, match=r"^x must be \(N, F\)"):
        gw.fit([0.0, 1.0, 2.0], [0.0, 1.0])
