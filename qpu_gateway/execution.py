"""Where a Fit's sampling runs: in the calling thread, or in a pool of worker processes.

A Fit tries the backends of its chain one :class:`Attempt` at a time. An executor runs one
attempt and returns the fitted model's state dict (:meth:`QSVR.get_state`), or raises the domain
error the attempt ended with, or :class:`Interrupted` once ``stop()`` turns true (deadline passed,
caller cancelled, server shutting down) -- and only after the attempt's work has really stopped.

- :class:`InlineExecutor` samples in the calling thread (library use, tests of the domain).
- :class:`SamplingPool` samples in ``size`` worker processes started by a ``forkserver`` (never a
  fork of the server process, whose gRPC threads would not survive it), warmed at start-up
  (imports, samplers of the chain) and run at a lower CPU priority than the server. A stop first
  asks the worker to interrupt its sampler; a worker that has not answered ``stop_grace``
  seconds later is killed and replaced. Workers die with the server, however it ends (``kill
  -9`` included), sampling or not: each holds the read end of a *lifeline* pipe whose only write
  end is the server's, and a thread of the worker SIGKILLs it when that pipe closes (a sampler
  must release the GIL for that thread to run: neal and the QPU client do). ``PR_SET_PDEATHSIG``
  is set too but fires only with ``start_method="spawn"``: under the default forkserver a
  worker's parent is the forkserver, which every worker keeps alive.

Start-up: the forkserver's imports (about a second: scikit-learn, SciPy, dimod) are the same as the
server's own, so ``qpu-gateway serve`` calls :func:`start_forkserver` before importing them, and
the two processes import in parallel. This module itself imports none of them (the workers'
modules are imported where they are used), so that call comes first.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Final, Protocol

from qpu_gateway.backends import BackendRegistry
from qpu_gateway.errors import BackendFailure, ProblemTooLargeError, ShuttingDownError
from qpu_gateway.observability import json_logging, request_id, worker_logging

if TYPE_CHECKING:
    import dimod
    import numpy as np
    from numpy.typing import NDArray

__all__ = [
    "Attempt",
    "Executor",
    "InlineExecutor",
    "Interrupted",
    "SamplingPool",
    "WorkerFailedError",
    "default_workers",
    "run_attempt",
    "start_forkserver",
]

log = logging.getLogger("qpu_gateway.execution")
_POLL_SECONDS: Final = 0.02
_PRELOAD: Final = ["numpy", "dimod", "dwave.samplers", "qpu_gateway.qsvr", "qpu_gateway.execution"]


class Interrupted(Exception):
    """The attempt was stopped before it finished (its work has stopped; nothing to store)."""


class WorkerFailedError(RuntimeError):
    """A sampling worker died or raised an error that is not a domain error."""


@dataclass(frozen=True)
class Attempt:
    """One Fit on one backend. x: (N, F), y: (N,); ``deadline`` in ``time.monotonic()`` seconds
    (one clock for every process of the machine)."""

    backend: str
    x: NDArray[np.float64]
    y: NDArray[np.float64]
    params: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None
    deadline: float | None = None


def run_attempt(
    registry: BackendRegistry, attempt: Attempt, interrupted: Callable[[], bool]
) -> dict[str, Any]:
    """Fit a QSVR on ``attempt.backend``; its state dict, or :class:`Interrupted`."""
    from qpu_gateway.qsvr import QSVR, DualSolver

    deadline = attempt.deadline

    def stop() -> bool:
        return interrupted() or (deadline is not None and time.monotonic() > deadline)

    if stop():
        raise Interrupted
    model = QSVR(**dict(attempt.params), random_state=attempt.seed)
    sampler = registry.sampler(attempt.backend)
    model.sampler = sampler if isinstance(sampler, DualSolver) else _stoppable()(sampler, stop)
    timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
    model.fit(attempt.x, attempt.y, timeout=timeout, interrupt_function=stop)
    if stop():
        raise Interrupted
    return model.get_state()


@functools.cache
def _stoppable() -> type[dimod.Sampler]:
    """The class ``_Stoppable(child, stop)``, defined on first use (it subclasses a dimod class)."""
    from qpu_gateway.backends._wrap import WrappedSampler

    class _Stoppable(WrappedSampler):
        """Wraps a sampler: an interrupted sampling raises :class:`Interrupted` at once instead
        of handing its partial samples to the (then wasted) decoding."""

        def __init__(self, child: dimod.Sampler, stop: Callable[[], bool]) -> None:
            super().__init__(child)
            self.stop = stop

        def sample(self, bqm: dimod.BinaryQuadraticModel, **kwargs: Any) -> dimod.SampleSet:
            sampleset = self.child.sample(bqm, **kwargs)
            if self.stop():
                raise Interrupted
            return sampleset

    return _Stoppable


class Executor(Protocol):
    """Runs one attempt; see the module docstring."""

    def run(self, attempt: Attempt, stop: Callable[[], bool]) -> dict[str, Any]: ...

    def wait_ready(self, timeout: float) -> bool: ...

    def close(self, grace: float = 0.0) -> None: ...


class InlineExecutor:
    """Samples in the calling thread with ``registry``'s samplers."""

    def __init__(self, registry: BackendRegistry) -> None:
        self.registry = registry

    def run(self, attempt: Attempt, stop: Callable[[], bool]) -> dict[str, Any]:
        return run_attempt(self.registry, attempt, stop)

    def wait_ready(self, timeout: float) -> bool:
        """Always ready."""
        return True

    def close(self, grace: float = 0.0) -> None:
        """Nothing to release."""


def start_forkserver() -> None:
    """Start the forkserver of :class:`SamplingPool` now (if not running): it imports the workers'
    modules in the background while the caller goes on. A pool started later forks from it."""
    multiprocessing.get_context("forkserver").set_forkserver_preload(_PRELOAD)
    multiprocessing.forkserver.ensure_running()


def default_workers() -> int:
    """Sampling workers when the configuration names none: one per CPU core."""
    return max(1, os.cpu_count() or 1)


# Domain errors a worker may end with, re-raised as themselves in the server.
_DOMAIN_ERRORS: Final[dict[str, type[Exception]]] = {
    "BackendFailure": BackendFailure,
    "ProblemTooLargeError": ProblemTooLargeError,
}


@dataclass(eq=False)
class _Worker:
    proc: multiprocessing.process.BaseProcess
    conn: Connection
    cancel: Any  # multiprocessing.Event
    lifeline: Connection  # the server's (only) write end; closing it kills the worker
    ready: bool = False


class SamplingPool:
    """``size`` sampling worker processes; one attempt per worker at a time.

    Parameters
    ----------
    size : worker processes (>= 1).
    settings : backend name -> its settings (the ``[backends.NAME]`` tables).
    warm : backends whose samplers each worker creates at start-up.
    stop_grace : seconds a stopped worker may take to interrupt its sampler before it is killed.
    nice : CPU priority increment of the workers (so the server's Predicts and health checks win).
    start_method : ``"forkserver"`` (default) or ``"spawn"``; never ``"fork"``.
    """

    def __init__(
        self,
        size: int,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        warm: Sequence[str] = (),
        stop_grace: float = 0.25,
        nice: int = 5,
        start_method: str = "forkserver",
    ) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"sampling_workers must be an integer >= 1, got {size!r}")
        if start_method not in ("forkserver", "spawn"):
            raise ValueError(f"start_method must be 'forkserver' or 'spawn', got {start_method!r}")
        if not stop_grace >= 0:
            raise ValueError(f"stop_grace must be >= 0, got {stop_grace!r}")
        self.size = size
        self.settings = {k: dict(v) for k, v in (settings or {}).items()}
        self.warm = list(warm)
        self.stop_grace = float(stop_grace)
        self.nice = int(nice)
        self._ctx = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            self._ctx.set_forkserver_preload(_PRELOAD)
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._workers: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False
        # With start_method="spawn", workers die with the thread that started them
        # (PR_SET_PDEATHSIG): one long-lived thread starts them all.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sampling-spawn")

    def start(self) -> SamplingPool:
        """Start every worker in the background (a Fit takes the first warm one); returns self."""
        for _ in range(self.size):
            self._spawner.submit(lambda: self._idle.put(self._spawn_now()))
        return self

    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        with self._lock:
            return sorted(w.proc.pid for w in self._workers if w.proc.pid is not None)

    def wait_ready(self, timeout: float) -> bool:
        """Wait until every idle worker finished warming up; False on timeout."""
        end = time.monotonic() + timeout
        while len(self._workers) < self.size and time.monotonic() < end:
            time.sleep(_POLL_SECONDS)
        with self._lock:
            workers = list(self._workers)
        for w in workers:
            while not w.ready and time.monotonic() < end:
                self._poll_ready(w, min(_POLL_SECONDS * 5, max(end - time.monotonic(), 0)))
        return all(w.ready for w in workers)

    def _spawn(self) -> _Worker:
        return self._spawner.submit(self._spawn_now).result()

    def _spawn_now(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        held, lifeline = self._ctx.Pipe(duplex=False)
        cancel = self._ctx.Event()
        proc = self._ctx.Process(
            target=_worker_main,
            args=(child, cancel, self.settings, self.warm, self.nice, logging.getLogger().level,
                  json_logging(), held),
            name="qpu-gateway-sampler", daemon=True,
        )
        proc.start()
        child.close()
        held.close()
        worker = _Worker(proc, parent, cancel, lifeline)
        with self._lock:
            closed = self._closed
            if not closed:
                self._workers.add(worker)
        if closed:  # close() already took its list of workers: this one is not in it
            _kill(worker)
        return worker

    def _poll_ready(self, worker: _Worker, timeout: float) -> None:
        if worker.conn.poll(timeout):
            try:
                worker.conn.recv()
            except (EOFError, OSError):
                return
            worker.ready = True

    def _acquire(self, stop: Callable[[], bool]) -> _Worker:
        while True:
            if self._closed:
                raise ShuttingDownError("the gateway is shutting down")
            try:
                worker = self._idle.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if stop():
                    raise Interrupted from None
                continue
            while not worker.ready and worker.proc.is_alive() and not stop():
                self._poll_ready(worker, _POLL_SECONDS)
            if worker.ready:
                return worker
            if not worker.proc.is_alive():
                self._replace(worker)
                continue
            self._idle.put(worker)
            raise Interrupted

    def run(self, attempt: Attempt, stop: Callable[[], bool]) -> dict[str, Any]:
        """Run ``attempt`` on an idle worker (waiting for one while ``stop()`` is false)."""
        worker = self._acquire(stop)
        healthy = False
        try:
            worker.cancel.clear()
            worker.conn.send(("fit", attempt, request_id.get()))  # its log lines carry the id
            reply = self._wait(worker, stop)
            healthy = True
        finally:
            if healthy:
                self._idle.put(worker)
            else:
                self._replace(worker)
        if reply[0] == "ok":
            return dict(reply[1])
        if reply[0] == "interrupted":
            raise Interrupted
        error = _DOMAIN_ERRORS.get(reply[1])
        if error is not None:
            raise error(reply[2])
        if reply[1] == "NonFiniteProblemError":
            from qpu_gateway.qsvr import NonFiniteProblemError

            raise NonFiniteProblemError(reply[2])
        raise WorkerFailedError(f"sampling worker failed: {reply[1]}: {reply[2]}")

    def _wait(self, worker: _Worker, stop: Callable[[], bool]) -> tuple[Any, ...]:
        """The worker's reply; ``Interrupted`` (after the work stopped) once ``stop()``."""
        while True:
            try:
                if worker.conn.poll(_POLL_SECONDS):
                    return tuple(worker.conn.recv())
            except (EOFError, OSError):
                raise WorkerFailedError(
                    f"sampling worker {worker.proc.pid} died (exit code {worker.proc.exitcode})"
                ) from None
            if not worker.proc.is_alive() and not worker.conn.poll(0):
                raise WorkerFailedError(
                    f"sampling worker {worker.proc.pid} died (exit code {worker.proc.exitcode})"
                )
            if stop():
                worker.cancel.set()
                with contextlib.suppress(EOFError, OSError):
                    if worker.conn.poll(self.stop_grace):
                        worker.conn.recv()
                        return ("interrupted",)
                raise Interrupted  # the finally of run() kills and replaces the worker

    def _replace(self, worker: _Worker) -> None:
        with self._lock:
            self._workers.discard(worker)
        _kill(worker)
        if not self._closed:
            with contextlib.suppress(RuntimeError):  # close() shut the spawner down meanwhile
                self._idle.put(self._spawn())

    def close(self, grace: float = 0.0) -> None:
        """Stop every worker: idle ones at once, busy ones after ``grace`` seconds at most."""
        self._closed = True
        # no spawn after this: queued ones are cancelled, a running one finishes first (and
        # _spawn_now kills what it started once the pool is closed)
        self._spawner.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            workers = list(self._workers)
            self._workers.clear()
        for w in workers:
            w.cancel.set()
            with contextlib.suppress(OSError, ValueError):
                w.conn.send(("stop",))
        end = time.monotonic() + grace
        for w in workers:
            w.proc.join(max(end - time.monotonic(), 0.0))
            _kill(w)


def _kill(worker: _Worker) -> None:
    if worker.proc.is_alive():
        worker.proc.kill()
    worker.proc.join(5.0)
    with contextlib.suppress(OSError):
        worker.conn.close()
    with contextlib.suppress(OSError):
        worker.lifeline.close()


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no orphans sampling on)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _die_with_server(lifeline: Connection) -> None:
    """SIGKILL this worker as soon as the server's end of ``lifeline`` closes (nothing is ever
    sent on it: any outcome of the read means the server is gone or dropped this worker)."""

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            lifeline.recv_bytes()
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def _worker_main(
    conn: Connection, cancel: Any, settings: Mapping[str, Mapping[str, Any]],
    warm: Sequence[str], nice: int, log_level: int, json_lines: bool, lifeline: Connection,
) -> None:
    """A sampling worker: warm up, say ready, then run attempts until told to stop (or the
    server's end of ``lifeline`` closes)."""
    _die_with_parent()
    _die_with_server(lifeline)
    worker_logging(log_level, json_lines)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
    for module in _PRELOAD:  # a Fit's modules: imported already when forked from the forkserver
        importlib.import_module(module)
    _stoppable()
    registry = BackendRegistry(settings)
    for name in warm:
        with contextlib.suppress(Exception):
            registry.sampler(name)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] != "fit":
            return
        rid = request_id.set(message[2])
        try:
            reply: tuple[Any, ...] = ("ok", run_attempt(registry, message[1], cancel.is_set))
        except Interrupted:
            reply = ("interrupted",)
        except Exception as exc:
            reply = ("error", type(exc).__name__, str(exc))
        finally:
            request_id.reset(rid)
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
