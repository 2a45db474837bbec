"""Backend registry: a name -> a factory returning a ``dimod.Sampler``.

Each backend is one module exposing ``create(settings: Mapping[str, Any]) -> dimod.Sampler``.
Modules are imported on first use, so a backend's heavy dependencies (cloud client, CUDA) load
only when configured. Add a backend by adding a module and one line to ``_BUILTIN``, or at run
time with :func:`register`. A factory that fails (bad settings, a missing dependency) is a
:class:`~qpu_gateway.errors.BackendFailure` naming the backend: a Fit falls back past it, and
``qpu-gateway serve`` refuses to start with one line.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from qpu_gateway.errors import BackendFailure
from qpu_gateway.redact import scrub

if TYPE_CHECKING:  # dimod (with networkx) loads with the first backend module, not with the registry
    import dimod

__all__ = ["BackendRegistry", "available_backends", "register", "unregister"]

SamplerFactory = Callable[[Mapping[str, Any]], Any]  # -> dimod.Sampler or qsvr.DualSolver

_BUILTIN: dict[str, str] = {
    "neal": "qpu_gateway.backends.neal",
    "exact": "qpu_gateway.backends.exact",
    "qpu": "qpu_gateway.backends.qpu",
    "mock-qpu": "qpu_gateway.backends.mock_qpu",
    "hybrid": "qpu_gateway.backends.hybrid",
    "classical": "qpu_gateway.backends.classical",
    "gpu-sa": "qpu_gateway.backends.gpu_sa",
}
_EXTRA: dict[str, SamplerFactory] = {}


def register(name: str, factory: SamplerFactory) -> None:
    """Register a backend factory under ``name`` (replacing one of the same name)."""
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"backend name must be non-empty alphanumeric/-/_, got {name!r}")
    _EXTRA[name] = factory


def unregister(name: str) -> None:
    """Remove a backend added with :func:`register` (built-in backends stay)."""
    _EXTRA.pop(name, None)


def available_backends() -> list[str]:
    """Names of every known backend."""
    return sorted({*_BUILTIN, *_EXTRA})


def _factory(name: str) -> SamplerFactory:
    if name in _EXTRA:
        return _EXTRA[name]
    if name in _BUILTIN:
        return importlib.import_module(_BUILTIN[name]).create
    raise KeyError(name)


class BackendRegistry:
    """Creates each configured backend's sampler once and hands it out by name.

    ``settings`` maps backend name -> that backend's settings (from the TOML config).
    """

    def __init__(self, settings: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._settings = {k: dict(v) for k, v in (settings or {}).items()}
        self._samplers: dict[str, dimod.Sampler] = {}
        self._lock = threading.Lock()

    def sampler(self, name: str) -> dimod.Sampler:
        """The sampler of backend ``name``; ``KeyError`` for an unknown name,
        :class:`BackendFailure` (its cause attached) when the factory fails."""
        with self._lock:
            if name not in self._samplers:
                factory = _factory(name)
                try:
                    self._samplers[name] = factory(self._settings.get(name, {}))
                except Exception as exc:
                    raise BackendFailure(
                        scrub(f"backend {name!r} cannot be built: {type(exc).__name__}: {exc}")
                    ) from exc
            return self._samplers[name]
