"""Conversions between protobuf messages and domain values (numpy arrays, dicts).

Imports nothing of the domain (no scikit-learn, no samplers), so clients start fast: the QSVR
parameters are the fields of ``QSVRParams`` (``tests/test_gateway_integration.py`` checks they are
:data:`qpu_gateway.qsvr.PARAM_NAMES`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from numpy.typing import NDArray

from qpu_gateway.errors import InvalidArgumentError
from qpu_gateway.v1 import gateway_pb2 as pb

if TYPE_CHECKING:
    from qpu_gateway.service import ModelRecord

__all__ = [
    "WIRE_PARAMS", "matrix_from_proto", "matrix_to_proto", "params_from_proto", "record_to_proto",
    "wire_uint",
]

WIRE_PARAMS = tuple(f.name for f in pb.QSVRParams.DESCRIPTOR.fields)
_OPTIONAL = tuple(p for p in WIRE_PARAMS if p != "ensemble")


def wire_uint(name: str, value: Any, bits: int) -> int:
    """``value`` as an int for a ``uint{bits}`` wire field; ``TypeError``/``ValueError`` naming
    ``name`` and the rule (protobuf's own error names neither)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer in [0, 2**{bits}), got {value!r}")
    if not 0 <= value < 2**bits:
        raise ValueError(f"{name} must be an integer in [0, 2**{bits}), got {value}")
    return int(value)


def matrix_from_proto(field: str, m: pb.Matrix) -> NDArray[np.float64]:
    """A row-major ``Matrix`` -> (rows, cols) array; ``InvalidArgumentError`` names ``field``."""
    n = len(m.values)
    if m.rows * m.cols != n:
        raise InvalidArgumentError(
            field, f"rows*cols = {m.rows}*{m.cols} = {m.rows * m.cols} but {n} values were sent"
        )
    if n == 0:
        raise InvalidArgumentError(field, f"must not be empty (rows={m.rows}, cols={m.cols})")
    return np.asarray(m.values, dtype=np.float64).reshape(m.rows, m.cols)


def matrix_to_proto(a: NDArray[np.float64]) -> pb.Matrix:
    """A 2-D array -> row-major ``Matrix``."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"a must be 2-D, got shape {a.shape}")
    return pb.Matrix(rows=a.shape[0], cols=a.shape[1], values=a.ravel().tolist())


def params_from_proto(p: pb.QSVRParams) -> dict[str, Any]:
    """Only the fields the caller set (unset optional = server default)."""
    out: dict[str, Any] = {name: getattr(p, name) for name in _OPTIONAL if p.HasField(name)}
    if p.ensemble:
        out["ensemble"] = p.ensemble
    return out


def record_to_proto(r: ModelRecord) -> pb.ModelInfo:
    """A stored model's metadata -> ``ModelInfo``."""
    info = r.info
    ts = Timestamp()
    ts.FromNanoseconds(round(r.created_at * 1e9))
    params = {k: v for k, v in info["params"].items() if v is not None}
    msg = pb.ModelInfo(
        model_id=r.model_id,
        version=r.version,
        backend=info["backend"],
        n_train=info["n_train"],
        n_features=info["n_features"],
        num_variables=info["num_variables"],
        train_r2=info["train_r2"],
        best_energy=info["best_energy"],
        build_seconds=info["build_seconds"],
        sample_seconds=info["sample_seconds"],
        members=info["members"],
        fallback=info["fallback"],
        fallback_reason=info["fallback_reason"],
        created_at=ts,
        params=pb.QSVRParams(**params),
        member_energies=info["member_energies"],
        num_reads=info["num_reads"],
        distinct_solutions=info["distinct_solutions"],
        qpu_access_time_us=info.get("qpu_access_time_us", 0.0),
        chain_break_fraction=info.get("chain_break_fraction", 0.0),
        max_chain_length=info.get("max_chain_length", 0),
        qubits_used=info.get("qubits_used", 0),
        embedding_cache_hit=info.get("embedding_cache_hit", False),
        attempted_backends=info.get("attempted_backends", [info["backend"]]),
        feature_names=info.get("feature_names", []),
    )
    if info.get("seed") is not None:
        msg.seed = info["seed"]
    return msg
