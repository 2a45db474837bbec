"""Gateway configuration: defaults < TOML file < environment < command line.

Example (``examples/gateway.toml``)::

    [server]
    address = "127.0.0.1:50051"
    backend = "neal"                  # or QPU_GATEWAY_BACKEND, or --backend
    # backends = ["qpu", "neal"]      # instead of `backend`: an ordered fallback chain
    store = "qpu_gateway_models.sqlite"
    reflection = true
    allowed_backends = ["neal", "exact"]   # a request may name these; absent: any backend
    grace_seconds = 5.0
    max_qubo_variables = 2048         # 2*k*rows; the dense QUBO takes 8*n^2 bytes
    max_num_reads = 100000
    max_num_sweeps = 100000
    breaker_failures = 3              # consecutive failures that open a backend's breaker
    breaker_cooldown_seconds = 60.0   # how long an open breaker skips the backend

    [backends.neal]                   # passed to the backend's factory
    beta_range = [0.1, 10.0]
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from qpu_gateway.backends import available_backends

__all__ = ["ENV_BACKEND", "ENV_STORE", "GatewayConfig", "load_config"]

ENV_BACKEND = "QPU_GATEWAY_BACKEND"
ENV_STORE = "QPU_GATEWAY_STORE"
_SERVER_KEYS = {
    "address", "backend", "backends", "store", "reflection", "allowed_backends", "grace_seconds",
    "max_qubo_variables", "max_num_reads", "max_num_sweeps", "breaker_failures",
    "breaker_cooldown_seconds",
}


@dataclass(frozen=True)
class GatewayConfig:
    """Resolved server configuration."""

    address: str = "127.0.0.1:50051"
    chain: list[str] = field(default_factory=lambda: ["neal"])
    store: str = "qpu_gateway_models.sqlite"
    reflection: bool = True
    allowed_backends: list[str] | None = None
    grace_seconds: float = 5.0
    max_qubo_variables: int = 2048
    max_num_reads: int = 100_000
    max_num_sweeps: int = 100_000
    breaker_failures: int = 3
    breaker_cooldown_seconds: float = 60.0
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def backend(self) -> str:
        """The first backend of the chain."""
        return self.chain[0]

    def validate(self) -> GatewayConfig:
        """Raise ``ValueError`` naming the setting when one is invalid; return self."""
        known = available_backends()
        if not self.chain:
            raise ValueError("backends must name at least one backend")
        for name in self.chain:
            if name not in known:
                raise ValueError(f"backend must be one of {known}, got {name!r}")
        if len(set(self.chain)) != len(self.chain):
            raise ValueError(f"backends must not repeat a backend, got {self.chain}")
        if not isinstance(self.breaker_failures, int) or self.breaker_failures < 1:
            raise ValueError(f"breaker_failures must be an integer >= 1, got {self.breaker_failures!r}")
        if not self.breaker_cooldown_seconds >= 0:
            raise ValueError(
                f"breaker_cooldown_seconds must be >= 0, got {self.breaker_cooldown_seconds!r}"
            )
        for name in self.allowed_backends or []:
            if name not in known:
                raise ValueError(f"allowed_backends: unknown backend {name!r}; known: {known}")
        if self.grace_seconds < 0:
            raise ValueError(f"grace_seconds must be >= 0, got {self.grace_seconds}")
        for name in ("max_qubo_variables", "max_num_reads", "max_num_sweeps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not self.address or ":" not in self.address:
            raise ValueError(f"address must be HOST:PORT, got {self.address!r}")
        return self


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> GatewayConfig:
    """Build the configuration from a TOML file, the environment and explicit overrides."""
    cfg = GatewayConfig()
    if path is not None:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        server = data.get("server", {})
        unknown = set(server) - _SERVER_KEYS
        if unknown:
            raise ValueError(f"{path}: unknown [server] keys {sorted(unknown)}")
        backends = data.get("backends", {})
        if not isinstance(backends, dict) or not all(isinstance(v, dict) for v in backends.values()):
            raise ValueError(f"{path}: [backends.NAME] sections must be tables")
        server = dict(server)
        if "backend" in server and "backends" in server:
            raise ValueError(f"{path}: set either [server] backend or backends, not both")
        if "backend" in server:
            server["chain"] = [server.pop("backend")]
        if "backends" in server:
            server["chain"] = list(server.pop("backends"))
        cfg = replace(cfg, **server, backends=backends)
    env = os.environ if env is None else env
    if env.get(ENV_BACKEND):
        cfg = replace(cfg, chain=[env[ENV_BACKEND]])
    if env.get(ENV_STORE):
        cfg = replace(cfg, store=env[ENV_STORE])
    over = {k: v for k, v in (overrides or {}).items() if v is not None}
    if "backend" in over:
        over["chain"] = [over.pop("backend")]
    cfg = replace(cfg, **over)
    return cfg.validate()
