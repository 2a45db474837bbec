"""Sampling executors: real worker processes that stop, die and come back as documented."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from qpu_gateway.backends import BackendRegistry
from qpu_gateway.errors import ProblemTooLargeError
from qpu_gateway.execution import (
    Attempt,
    InlineExecutor,
    Interrupted,
    SamplingPool,
    WorkerFailedError,
    run_attempt,
)
from qpu_gateway.qsvr import QSVR


def _attempt(rows: int, backend: str = "neal", **params: int) -> Attempt:
    x = np.random.default_rng(rows).random((rows, 3))
    return Attempt(backend, x, x.sum(axis=1), {"k": 1, **params}, seed=5)


# One read of 200 variables x 10^7 sweeps runs for minutes and checks no interrupt: only a kill
# stops it.
STUCK = _attempt(100, num_reads=1, num_sweeps=10_000_000)
# Many short reads: the sampler checks its interrupt between reads.
COOPERATIVE = _attempt(10, num_reads=100_000, num_sweeps=10)


@pytest.fixture(scope="module")
def pool() -> Iterator[SamplingPool]:
    pool = SamplingPool(1, stop_grace=0.3).start()
    assert pool.wait_ready(120), "the sampling worker did not warm up"
    yield pool
    pool.close()


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[1].split()[0] not in ("Z", "X")


def _after(seconds: float):
    end = time.monotonic() + seconds
    return lambda: time.monotonic() > end


def test_sampling_pool_fits_in_another_process_exactly_as_inline(pool: SamplingPool) -> None:
    attempt = _attempt(12, num_reads=20, num_sweeps=20)
    state = pool.run(attempt, lambda: False)
    assert os.getpid() not in pool.pids()
    inline = InlineExecutor(BackendRegistry()).run(attempt, lambda: False)
    assert state["dual_coef"] == inline["dual_coef"]
    assert QSVR.from_state(state).predict(attempt.x).shape == (12,)


def test_sampling_pool_kills_a_worker_stuck_in_one_read_and_replaces_it(pool: SamplingPool) -> None:
    (before,) = pool.pids()
    start = time.monotonic()
    with pytest.raises(Interrupted):
        pool.run(STUCK, _after(1.0))
    assert time.monotonic() - start < 1.0 + 0.3 + 2.0, "the stuck worker was not killed in time"
    assert not _alive(before)
    (after,) = pool.pids()
    assert after != before
    assert pool.run(_attempt(8, num_reads=10, num_sweeps=10), lambda: False)["format"] == "qhpo.qsvr"


def test_sampling_pool_interrupts_a_cooperative_sampler_without_a_kill(pool: SamplingPool) -> None:
    (before,) = pool.pids()
    start = time.monotonic()
    with pytest.raises(Interrupted):
        pool.run(COOPERATIVE, _after(0.5))
    assert time.monotonic() - start < 0.5 + 0.3 + 2.0
    assert pool.pids() == [before] and _alive(before)


def test_sampling_pool_reraises_domain_errors_and_stays_usable(pool: SamplingPool) -> None:
    with pytest.raises(ProblemTooLargeError, match="exact backend"):
        pool.run(_attempt(5, "exact", k=3), lambda: False)
    assert pool.run(_attempt(8, num_reads=10, num_sweeps=10), lambda: False)["format"] == "qhpo.qsvr"


def test_sampling_pool_reports_a_worker_that_died_and_replaces_it(pool: SamplingPool) -> None:
    (victim,) = pool.pids()
    threading.Timer(0.5, os.kill, (victim, signal.SIGKILL)).start()
    with pytest.raises(WorkerFailedError, match=f"sampling worker {victim} died"):
        pool.run(STUCK, lambda: False)
    assert pool.pids() != [victim]
    assert pool.run(_attempt(8, num_reads=10, num_sweeps=10), lambda: False)["format"] == "qhpo.qsvr"


def test_sampling_pool_close_stops_busy_workers_within_the_grace() -> None:
    pool = SamplingPool(1, stop_grace=0.1).start()
    assert pool.wait_ready(120)
    (pid,) = pool.pids()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            pool.run(STUCK, lambda: False)
        except BaseException as exc:  # inspected below
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(0.5)
    start = time.monotonic()
    pool.close(grace=0.5)
    worker.join(10)
    assert time.monotonic() - start < 3.0 and not _alive(pid)
    assert errors and isinstance(errors[0], (WorkerFailedError, Interrupted))
    assert pool.pids() == []


def test_run_attempt_stops_at_its_deadline_inline() -> None:
    attempt = Attempt(COOPERATIVE.backend, COOPERATIVE.x, COOPERATIVE.y, COOPERATIVE.params,
                      deadline=time.monotonic() + 0.3)
    start = time.monotonic()
    with pytest.raises(Interrupted):
        run_attempt(BackendRegistry(), attempt, lambda: False)
    assert time.monotonic() - start < 3.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 0}, "sampling_workers must be an integer >= 1, got 0"),
        ({"size": 1, "start_method": "fork"}, "start_method must be 'forkserver' or 'spawn'"),
        ({"size": 1, "stop_grace": -1.0}, "stop_grace must be >= 0"),
    ],
)
def test_sampling_pool_validates_its_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingPool(**kwargs)


def _samplers() -> set[int]:
    """Live sampling workers of this process: the children of its forkserver."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    servers = []
    for c in children.get(os.getpid(), []):
        try:
            if b"multiprocessing.forkserver" in Path(f"/proc/{c}/cmdline").read_bytes():
                servers.append(c)
        except OSError:
            continue
    return {w for f in servers for w in children.get(f, []) if _alive(w)}


def test_sampling_pool_closed_while_starting_leaves_no_worker_behind() -> None:
    before = _samplers()
    pool = SamplingPool(2)
    pool.start()
    pool.close()  # the workers are still being started
    deadline = time.monotonic() + 10
    while (left := _samplers() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"workers {sorted(left)} outlived the pool's close()"
    assert pool.pids() == []
