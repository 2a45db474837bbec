"""The QPU code path shared by ``qpu`` and ``mock-qpu``.

The QSVR QUBO is dense, so it is embedded as a clique. Clique embeddings come from minorminer's
``busclique`` and are cached on disk per (solver, number of variables). Chains get a configurable
strength. The sampleset is unembedded (majority vote on broken chains), and chain-break, embedding
and QPU-timing statistics go into ``sampleset.info["qhpo_stats"]``. Cloud errors become
:class:`~qpu_gateway.errors.BackendFailure` with messages that never contain the token; so does any
failure to build or connect the client (no token, unknown solver or region, bad config file).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dimod
import numpy as np

from qpu_gateway.errors import BackendFailure, DeadlineExceededError, ProblemTooLargeError
from qpu_gateway.redact import add_secret, scrub

__all__ = ["CHAIN_POLICIES", "EmbeddedQPUSampler", "EmbeddingCache", "cloud_failures"]

CHAIN_POLICIES = ("uniform_torque_compensation", "max_abs_q")


def cloud_failures() -> tuple[type[BaseException], ...]:
    """The dwave.cloud exceptions after which the gateway falls back to the next backend."""
    from dwave.cloud import exceptions as e

    return (
        e.SolverError,  # SolverFailureError, SolverOfflineError, SolverNotFoundError, auth errors
        e.RequestTimeout,
        e.PollingTimeout,  # not a subclass of Timeout
        e.Timeout,
        e.ProblemUploadError,
        e.SAPIError,  # SAPI errors, including resource limits (HTTP 429)
        e.InvalidAPIResponseError,
        e.ConfigFileError,
        e.CanceledFutureError,
        OSError,  # connection errors (requests' ConnectionError is an OSError)
    )


def _root_cause(exc: BaseException) -> str:
    """``" (cause: Type: message)"`` of the innermost exception ``exc`` was raised from, when
    it says more than ``exc`` (dwave.cloud reports a refused connection as "RequestTimeout: API
    request timed out"); else ``""``."""
    root, seen = exc, {id(exc)}
    while (nxt := root.__cause__ or root.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        root = nxt
    if root is exc or str(root) in str(exc):
        return ""
    return f" (cause: {type(root).__name__}: {root})"


class EmbeddingCache:
    """Clique embeddings on disk: ``<directory>/<solver>-<n>.json``, written atomically."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self.searches = 0

    def _path(self, solver_id: str, n: int) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", solver_id)
        return self.directory / f"{safe}-{n}.json"

    def get(self, solver_id: str, n: int, graph: Any) -> tuple[dict[int, list[int]], bool]:
        """The clique embedding of ``n`` variables (labels 0..n-1) and whether it was cached."""
        path = self._path(solver_id, n)
        with self._lock:
            if path.exists():
                data = json.loads(path.read_text())
                return {int(k): list(v) for k, v in data["embedding"].items()}, True
            from minorminer import busclique

            self.searches += 1
            emb = busclique.find_clique_embedding(n, graph, use_cache=False)
            if not emb:
                raise ProblemTooLargeError(
                    f"no clique embedding of {n} variables exists on solver {solver_id!r}"
                )
            embedding = {int(k): [int(q) for q in v] for k, v in emb.items()}
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                json.dump({"format": "qhpo.clique-embedding", "version": 1, "solver": solver_id,
                           "num_variables": n, "embedding": embedding}, fh)
            os.replace(tmp, path)
            return embedding, False


class EmbeddedQPUSampler(dimod.Sampler):
    """A structured (QPU or mock) sampler behind a cached clique embedding.

    Parameters
    ----------
    child_factory : creates the structured sampler on first use (connecting lazily).
    solver_id : key of the embedding cache when the child has no solver name.
    cache : the on-disk embedding cache.
    chain_strength : ``uniform_torque_compensation`` or ``max_abs_q``.
    chain_strength_multiple : for ``max_abs_q``, chain strength = multiple * max |Q_ij|.
    annealing_time : microseconds per anneal (``None``: the solver's default).
    auto_scale : let the solver scale biases into its range.
    secrets : strings that must never appear in a log or an error message (the token); they are
        registered with :func:`qpu_gateway.redact.add_secret`.
    reseed : for simulated devices, ``reseed(child, seed)`` makes the next call reproducible;
        calls are then serialised. A real QPU takes no seed.
    """

    def __init__(
        self,
        child_factory: Callable[[], dimod.Sampler],
        *,
        solver_id: str,
        cache: EmbeddingCache,
        chain_strength: str = "uniform_torque_compensation",
        chain_strength_multiple: float = 1.0,
        annealing_time: float | None = None,
        auto_scale: bool = True,
        secrets: list[str] | None = None,
        reseed: Callable[[dimod.Sampler, int | None], None] | None = None,
    ) -> None:
        if chain_strength not in CHAIN_POLICIES:
            raise ValueError(f"chain_strength must be one of {CHAIN_POLICIES}, got {chain_strength!r}")
        if not chain_strength_multiple > 0:
            raise ValueError(f"chain_strength_multiple must be > 0, got {chain_strength_multiple!r}")
        if annealing_time is not None and not annealing_time > 0:
            raise ValueError(f"annealing_time must be > 0 microseconds, got {annealing_time!r}")
        self._factory = child_factory
        self._child: dimod.Sampler | None = None
        self._child_lock = threading.Lock()
        self.solver_id = solver_id
        self.cache = cache
        self.chain_strength = chain_strength
        self.chain_strength_multiple = float(chain_strength_multiple)
        self.annealing_time = annealing_time
        self.auto_scale = auto_scale
        for secret in secrets or []:
            add_secret(secret)
        self._reseed = reseed
        self._sample_lock = threading.Lock()

    @property
    def parameters(self) -> dict[str, list[Any]]:
        params: dict[str, list[Any]] = {"num_reads": [], "timeout": []}
        if self._reseed is not None:
            params["seed"] = []
        return params

    @property
    def properties(self) -> dict[str, Any]:
        return {"solver_id": self.solver_id}

    def _failure(self, what: str, exc: BaseException) -> BackendFailure:
        return BackendFailure(scrub(f"{what}: {type(exc).__name__}: {exc}{_root_cause(exc)}"))

    def child(self) -> dimod.Sampler:
        """The structured sampler, created (and connected) on first use.

        Any failure to create it (no token: ``ValueError``; unreachable endpoint, unknown solver
        or region: cloud errors) is a :class:`BackendFailure`, so the Fit falls back.
        """
        with self._child_lock:
            if self._child is None:
                try:
                    self._child = self._factory()
                except Exception as exc:
                    raise self._failure(f"cannot reach solver {self.solver_id!r}", exc) from None
            return self._child

    def sample(
        self, bqm: dimod.BinaryQuadraticModel, *, num_reads: int = 100, timeout: float | None = None,
        seed: int | None = None, **kwargs: Any,
    ) -> dimod.SampleSet:
        """Embed, sample, unembed. ``timeout`` (seconds) bounds the wait for the solver."""
        if self._reseed is None:
            return self._sample(bqm, num_reads, timeout)
        with self._sample_lock:
            self._reseed(self.child(), seed)
            return self._sample(bqm, num_reads, timeout)

    def _sample(
        self, bqm: dimod.BinaryQuadraticModel, num_reads: int, timeout: float | None
    ) -> dimod.SampleSet:
        from dwave.system import FixedEmbeddingComposite

        deadline = None if timeout is None else time.monotonic() + timeout
        child = self.child()
        solver_id = getattr(getattr(child, "solver", None), "name", None) or self.solver_id
        n = bqm.num_variables
        if set(bqm.variables) != set(range(n)):
            bqm = bqm.relabel_variables({v: i for i, v in enumerate(bqm.variables)}, inplace=False)
        embedding, hit = self.cache.get(solver_id, n, child.to_networkx_graph())
        composite = FixedEmbeddingComposite(child, embedding)
        params: dict[str, Any] = {"num_reads": int(num_reads), "chain_strength": self._chain(bqm)}
        accepted = child.parameters
        if "auto_scale" in accepted:
            params["auto_scale"] = self.auto_scale
        if self.annealing_time is not None and "annealing_time" in accepted:
            params["annealing_time"] = self.annealing_time
        try:
            sampleset = composite.sample(bqm, **params)
            while not sampleset.done():
                if deadline is not None and time.monotonic() > deadline:
                    raise DeadlineExceededError(
                        f"the solver did not answer within the deadline ({timeout:.1f}s)"
                    )
                time.sleep(0.01)
            sampleset.resolve()
        except cloud_failures() as exc:
            raise self._failure(f"sampling on {solver_id!r} failed", exc) from None
        chains = [len(c) for c in embedding.values()]
        timing = sampleset.info.get("timing", {})
        cbf = sampleset.record.chain_break_fraction if "chain_break_fraction" in (
            sampleset.record.dtype.names or ()) else np.zeros(1)
        sampleset.info["qhpo_stats"] = {
            "qpu_access_time_us": float(timing.get("qpu_access_time", 0.0)),
            "chain_break_fraction": float(np.mean(cbf)),
            "max_chain_length": max(chains),
            "qubits_used": sum(chains),
            "embedding_cache_hit": bool(hit),
        }
        return sampleset

    def _chain(self, bqm: dimod.BinaryQuadraticModel) -> Any:
        if self.chain_strength == "max_abs_q":
            biases = [abs(b) for b in bqm.quadratic.values()] + [abs(b) for b in bqm.linear.values()]
            return self.chain_strength_multiple * max(biases, default=1.0)
        from dwave.embedding.chain_strength import uniform_torque_compensation

        return uniform_torque_compensation


def embedded_settings(settings: Mapping[str, Any], allowed: set[str]) -> dict[str, Any]:
    """Validate a backend's TOML settings against the keys it knows."""
    unknown = set(settings) - allowed
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; known: {sorted(allowed)}")
    return dict(settings)
