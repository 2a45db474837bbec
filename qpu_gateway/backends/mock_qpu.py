"""``mock-qpu``: the ``qpu`` code path on ``dwave.system.testing.MockDWaveSampler``.

An Advantage-sized Pegasus P16 graph; the same clique embedding, chains, unembedding and
statistics as ``qpu``, offline, with no token. Annealing on the embedded problem is substituted by
simulated annealing (``substitute_sweeps`` sweeps per read) or steepest descent.

Any uint64 ``seed`` is accepted (the substitute annealer takes seeds below 2^31; larger ones are
mapped with :func:`qpu_gateway.seeds.bounded_seed`).

Settings: ``topology_shape`` (default 16), ``substitute`` (``simulated_annealing`` |
``steepest_descent``), ``substitute_sweeps``, plus ``qpu``'s embedding settings.

Unlike ``qpu`` (uniform torque compensation), the default chain strength here is
``max_abs_q`` x 3. With uniform torque compensation, the simulated-annealing substitute broke 45%
of the chains on the MLPF QSVR problem (R² 0.69 over 6 splits); with 3 x max|Q| it broke 6.5%
(R² 0.80). Measured with 1000 reads and 100 sweeps; see benchmarks/README.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dimod

from qpu_gateway.backends._embedded import EmbeddedQPUSampler, EmbeddingCache, embedded_settings
from qpu_gateway.backends.qpu import EMBED_KEYS, default_cache_dir
from qpu_gateway.seeds import bounded_seed

__all__ = ["create"]

MOCK_KEYS = {"topology_shape", "substitute", "substitute_sweeps"}


def create(settings: Mapping[str, Any]) -> dimod.Sampler:
    s = embedded_settings(settings, MOCK_KEYS | EMBED_KEYS)
    shape = int(s.get("topology_shape", 16))
    substitute = s.get("substitute", "simulated_annealing")
    if substitute not in ("simulated_annealing", "steepest_descent"):
        raise ValueError(
            f"substitute must be simulated_annealing or steepest_descent, got {substitute!r}"
        )
    sweeps = int(s.get("substitute_sweeps", 100))

    def build() -> dimod.Sampler:
        from dwave.system.testing import MockDWaveSampler

        if substitute == "steepest_descent":
            return MockDWaveSampler(
                topology_type="pegasus", topology_shape=[shape], parameter_warnings=False
            )
        from dwave.samplers import SimulatedAnnealingSampler

        return MockDWaveSampler(
            topology_type="pegasus",
            topology_shape=[shape],
            parameter_warnings=False,
            substitute_sampler=SimulatedAnnealingSampler(),
            substitute_kwargs={"num_sweeps": sweeps},
        )

    def reseed(child: dimod.Sampler, seed: int | None) -> None:
        if substitute == "simulated_annealing":
            child.substitute_kwargs["seed"] = bounded_seed(seed)

    return EmbeddedQPUSampler(
        build,
        solver_id=f"mock-pegasus{shape}",
        cache=EmbeddingCache(s.get("embedding_cache_dir") or default_cache_dir()),
        chain_strength=s.get("chain_strength", "max_abs_q"),
        chain_strength_multiple=float(s.get("chain_strength_multiple", 3.0)),
        annealing_time=s.get("annealing_time"),
        auto_scale=bool(s.get("auto_scale", True)),
        reseed=reseed,
    )
