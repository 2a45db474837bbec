"""``qpu``: a D-Wave QPU (Advantage) through dwave-system's ``DWaveSampler``.

Settings (``[backends.qpu]``; each also from ``DWAVE_*`` environment variables or a dwave.conf
profile, as the cloud client reads them): ``token``, ``solver``, ``region``, ``endpoint``,
``profile``, ``config_file``, ``request_timeout``, ``polling_timeout``, ``proxy``,
``http_retry_total``, ``http_retry_backoff_max``; and the embedding:
``chain_strength`` (``uniform_torque_compensation`` | ``max_abs_q``), ``chain_strength_multiple``,
``annealing_time`` (µs), ``auto_scale``, ``embedding_cache_dir``. The client connects on the first
Fit, not at start-up; a failure to connect (no token, unknown solver or region, unreachable
endpoint) is a backend failure: the Fit falls back to the next backend of the chain. The token,
wherever it comes from, is registered with :mod:`qpu_gateway.redact`, so it never appears in logs
(the cloud client's own included), errors or replies.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dimod

from qpu_gateway.backends._embedded import EmbeddedQPUSampler, EmbeddingCache, embedded_settings
from qpu_gateway.redact import add_secret

__all__ = ["create", "default_cache_dir", "register_cloud_token"]

CLOUD_KEYS = {"token", "solver", "region", "endpoint", "profile", "config_file", "request_timeout",
              "polling_timeout", "proxy", "http_retry_total", "http_retry_backoff_max"}
EMBED_KEYS = {"chain_strength", "chain_strength_multiple", "annealing_time", "auto_scale",
              "embedding_cache_dir"}


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/qhpo/embeddings`` (``~/.cache/qhpo/embeddings``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qhpo" / "embeddings"


def register_cloud_token(cloud: Mapping[str, Any]) -> None:
    """Register as secrets the token of ``cloud`` and the one its config file or profile holds."""
    from dwave.cloud.config import load_config

    add_secret(cloud.get("token"))
    add_secret(os.environ.get("DWAVE_API_TOKEN"))
    resolved = load_config(config_file=cloud.get("config_file"), profile=cloud.get("profile"))
    add_secret(resolved.get("token"))


def create(settings: Mapping[str, Any]) -> dimod.Sampler:
    s = embedded_settings(settings, CLOUD_KEYS | EMBED_KEYS)
    cloud = {k: v for k, v in s.items() if k in CLOUD_KEYS}

    def connect() -> dimod.Sampler:
        from dwave.system import DWaveSampler

        register_cloud_token(cloud)
        return DWaveSampler(**cloud)

    return EmbeddedQPUSampler(
        connect,
        solver_id=str(cloud.get("solver", "qpu")),
        cache=EmbeddingCache(s.get("embedding_cache_dir") or default_cache_dir()),
        chain_strength=s.get("chain_strength", "uniform_torque_compensation"),
        chain_strength_multiple=float(s.get("chain_strength_multiple", 1.0)),
        annealing_time=s.get("annealing_time"),
        auto_scale=bool(s.get("auto_scale", True)),
        secrets=[str(cloud.get("token", "")), os.environ.get("DWAVE_API_TOKEN", "")],
    )
