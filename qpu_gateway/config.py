"""Gateway configuration: defaults < TOML file < environment < command line.

Example (``examples/gateway.toml``)::

    [server]
    address = "127.0.0.1:50051"
    backend = "neal"                  # or QPU_GATEWAY_BACKEND, or --backend
    # backends = ["qpu", "neal"]      # instead of `backend`: an ordered fallback chain
    store = "qpu_gateway_models.sqlite"
    reflection = true
    allowed_backends = ["neal", "exact"]   # a request may name these too; absent: only the chain
    grace_seconds = 5.0               # SIGTERM: in-flight calls may finish within this
    drain_seconds = 0.0               # SIGTERM: first serve this long with health NOT_SERVING
    max_qubo_variables = 2048         # 2*k*rows; the dense QUBO takes 8*n^2 bytes
    max_num_reads = 100000
    max_num_sweeps = 100000
    breaker_failures = 3              # consecutive failures that open a backend's breaker
    breaker_cooldown_seconds = 60.0   # how long an open breaker skips the backend
    max_train_rows = 1000             # per Fit; also max_features, max_predict_rows
    max_predict_cells = 10000000      # Predict rows x the model's training rows
    max_message_bytes = 16777216      # larger requests: RESOURCE_EXHAUSTED; a Predict or
                                      # ListModels reply that would be larger: INVALID_ARGUMENT
    max_concurrent_fits = 2           # Fits admitted at once; more wait within their deadline
    sampling_workers = 2              # sampling processes (default: min(max_concurrent_fits, cores))
    max_queued_fits = 8               # ... up to this many; beyond: RESOURCE_EXHAUSTED
    fit_queue_wait_seconds = 30.0     # ... a Fit without a deadline waits this long (0: refused)
    tls_cert = "server.pem"           # TLS; with tls_client_ca: mutual TLS
    tls_key = "server.key"
    tokens_file = "tokens.txt"        # SCOPE:TOKEN lines (chmod 600); QPU_GATEWAY_TOKENS adds more
    metrics_port = 9464               # Prometheus /metrics (plain HTTP, no authentication)
    metrics_host = "127.0.0.1"        # its listen address; "0.0.0.0" for a scraper in a
                                      # container network (trusted networks only)

    [backends.neal]                   # passed to the backend's factory
    beta_range = [0.1, 10.0]
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final

from qpu_gateway.backends import available_backends
from qpu_gateway.service import FitLimits

__all__ = ["ENV_BACKEND", "ENV_STORE", "GatewayConfig", "load_config"]

ENV_BACKEND = "QPU_GATEWAY_BACKEND"
ENV_STORE = "QPU_GATEWAY_STORE"
_SERVER_KEYS = {
    "address", "backend", "backends", "store", "reflection", "allowed_backends", "grace_seconds",
    "max_qubo_variables", "max_num_reads", "max_num_sweeps", "breaker_failures",
    "breaker_cooldown_seconds", "max_train_rows", "max_features", "max_predict_rows",
    "max_message_bytes", "max_concurrent_fits", "max_queued_fits", "tls_cert", "tls_key",
    "max_predict_cells", "sampling_workers",
    "tls_client_ca", "tokens_file", "metrics_port", "metrics_host", "drain_seconds",
    "fit_queue_wait_seconds",
}
_POSITIVE_INTS = ("max_message_bytes", "max_concurrent_fits")
# The file settings: in code these may be paths (``os.PathLike``), kept as ``str``.
_PATH_FIELDS: Final = ("store", "tls_cert", "tls_key", "tls_client_ca", "tokens_file")


@dataclass(frozen=True)
class GatewayConfig:
    """Resolved server configuration. The file settings (``store``, ``tls_cert``, ``tls_key``,
    ``tls_client_ca``, ``tokens_file``) may be given as paths; they are kept as ``str``."""

    address: str = "127.0.0.1:50051"
    chain: list[str] = field(default_factory=lambda: ["neal"])
    store: str = "qpu_gateway_models.sqlite"
    reflection: bool = True
    allowed_backends: list[str] | None = None
    grace_seconds: float = 5.0
    drain_seconds: float = 0.0
    max_qubo_variables: int = FitLimits.max_qubo_variables
    max_num_reads: int = FitLimits.max_num_reads
    max_num_sweeps: int = FitLimits.max_num_sweeps
    breaker_failures: int = 3
    breaker_cooldown_seconds: float = 60.0
    max_train_rows: int = FitLimits.max_train_rows
    max_features: int = FitLimits.max_features
    max_predict_rows: int = FitLimits.max_predict_rows
    max_predict_cells: int = FitLimits.max_predict_cells
    max_message_bytes: int = 16 * 1024 * 1024
    max_concurrent_fits: int = 2
    max_queued_fits: int = 8
    fit_queue_wait_seconds: float = 30.0
    sampling_workers: int | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    tokens_file: str | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in _PATH_FIELDS:
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))

    @property
    def backend(self) -> str:
        """The first backend of the chain."""
        return self.chain[0]

    def fit_limits(self) -> FitLimits:
        """The per-request limits of this configuration (validated by ``FitLimits``)."""
        return FitLimits(**{f.name: getattr(self, f.name) for f in fields(FitLimits)})

    def validate(self) -> GatewayConfig:
        """Raise ``ValueError`` naming the setting when one is invalid; return self."""
        _check_types(self)
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
        if not isinstance(self.drain_seconds, int | float) or not self.drain_seconds >= 0:
            raise ValueError(f"drain_seconds must be a number >= 0, got {self.drain_seconds!r}")
        self.fit_limits()
        for name in _POSITIVE_INTS:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not isinstance(self.max_queued_fits, int) or self.max_queued_fits < 0:
            raise ValueError(f"max_queued_fits must be an integer >= 0, got {self.max_queued_fits!r}")
        if not 0 <= self.fit_queue_wait_seconds < float("inf"):
            raise ValueError(f"fit_queue_wait_seconds must be a finite number >= 0, got "
                             f"{self.fit_queue_wait_seconds!r}")
        if self.sampling_workers is not None and (
            not isinstance(self.sampling_workers, int) or self.sampling_workers < 1
        ):
            raise ValueError(f"sampling_workers must be an integer >= 1, got {self.sampling_workers!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
        if self.metrics_port is not None and not 0 <= self.metrics_port < 65536:
            raise ValueError(f"metrics_port must be in [0, 65535], got {self.metrics_port}")
        if not isinstance(self.metrics_host, str) or not self.metrics_host.strip():
            raise ValueError(f"metrics_host must be a host name or address, got {self.metrics_host!r}")
        if not self.address or ":" not in self.address:
            raise ValueError(f"address must be HOST:PORT, got {self.address!r}")
        port = self.address.rpartition(":")[2]
        if (not self.address.startswith(("unix:", "unix-abstract:")) and port.isdigit()
                and not 0 <= int(port) < 65536):
            raise ValueError(f"address: port must be in [0, 65535], got {self.address!r}")
        return self


_TYPE_NAMES = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
               "list[str]": "a list of strings", "dict[str, dict[str, Any]]": "a table of tables"}


def _is(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "list[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, dict)


def _check_types(cfg: GatewayConfig) -> None:
    """``ValueError`` naming the first setting whose value has the wrong type (from the field's
    annotation: a TOML string where a number or boolean belongs, e.g. ``reflection = "false"``);
    ``TypeError`` for a path given to a string setting that is not a file setting."""
    for f in fields(cfg):
        kind, _, optional = str(f.type).partition(" | ")
        value = getattr(cfg, f.name)
        if (optional and value is None) or _is(value, kind):
            continue
        name = "backends" if f.name == "chain" else f.name
        if kind == "str" and isinstance(value, os.PathLike):
            raise TypeError(f"{name} must be a string, got the path {value!r} (paths are taken "
                            f"only by {', '.join(_PATH_FIELDS)})")
        none = " (or unset)" if optional else ""
        raise ValueError(f"{name} must be {_TYPE_NAMES[kind]}{none}, got {value!r}")


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
        stray = sorted(set(data) - {"server", "backends"})
        if stray:
            raise ValueError(
                f"{path}: unknown sections or top-level keys {stray}: a gateway config has "
                "[server] and [backends.NAME] sections only (a key above [server] belongs in it)"
            )
        server = data.get("server", {})
        unknown = set(server) - _SERVER_KEYS
        if unknown:
            raise ValueError(f"{path}: unknown [server] keys {sorted(unknown)}")
        backends = data.get("backends", {})
        if not isinstance(backends, dict) or not all(isinstance(v, dict) for v in backends.values()):
            raise ValueError(f"{path}: [backends.NAME] sections must be tables")
        known = available_backends()
        odd = sorted(set(backends) - set(known))
        if odd:
            raise ValueError(
                f"{path}: unknown backend sections {[f'backends.{b}' for b in odd]}; known "
                f"backends: {known}"
            )
        server = dict(server)
        if "backend" in server and "backends" in server:
            raise ValueError(f"{path}: set either [server] backend or backends, not both")
        if "backend" in server:
            server["chain"] = [server.pop("backend")]
        if "backends" in server:
            chain = server.pop("backends")
            if not isinstance(chain, list):
                raise ValueError(f"{path}: [server] backends must be a list of backend names, "
                                 f"got {chain!r} (one backend: backend = \"NAME\")")
            server["chain"] = chain
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
