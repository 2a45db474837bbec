"""Domain errors of the gateway; the gRPC layer maps each to one status code."""

from __future__ import annotations

__all__ = [
    "AllBackendsFailedError",
    "BackendFailure",
    "DeadlineExceededError",
    "GatewayError",
    "InvalidArgumentError",
    "ModelNotFoundError",
    "PermissionDeniedError",
    "ProblemTooLargeError",
    "ShuttingDownError",
    "StoreBusyError",
]


class GatewayError(Exception):
    """Base class of the errors the gateway reports to its callers."""


class InvalidArgumentError(GatewayError, ValueError):
    """A request field is invalid; ``field`` names it (e.g. ``x``, ``params.k``) and
    ``description`` says which rule it broke."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.description = message

    def __reduce__(self) -> tuple[type[InvalidArgumentError], tuple[str, str]]:
        return type(self), (self.field, self.description)


class ModelNotFoundError(GatewayError, KeyError):
    """No stored model (or version) has the requested id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "model not found"


class PermissionDeniedError(GatewayError):
    """The request asks for something the server's configuration does not allow; ``field``
    names the request field that asks for it (e.g. ``backend``; "" when none) and
    ``description`` says why."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.description = message

    def __reduce__(self) -> tuple[type[PermissionDeniedError], tuple[str, str]]:
        return type(self), (self.description, self.field)


class ProblemTooLargeError(GatewayError, ValueError):
    """A backend cannot take a problem of this size (variables, qubits, memory)."""


class BackendFailure(GatewayError):
    """A backend could not produce samples (solver offline, timeout, upload error, ...).

    The message is safe to show: backends build it without credentials. The gateway falls back
    to the next backend of its chain.
    """


class AllBackendsFailedError(GatewayError):
    """Every backend of the chain failed or was skipped by its circuit breaker."""


class DeadlineExceededError(GatewayError):
    """The caller's deadline passed before the work finished; the work was stopped."""


class ShuttingDownError(GatewayError):
    """The server is shutting down; the call was stopped and stored nothing."""


class StoreBusyError(GatewayError):
    """The model store stayed locked by another process past its busy timeout; nothing was
    written, and the call may be retried."""
