import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Matrix(_message.Message):
    __slots__ = ("rows", "cols", "values")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    rows: int
    cols: int
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, rows: _Optional[int] = ..., cols: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class QSVRParams(_message.Message):
    __slots__ = ("k", "base", "k0", "xi", "gamma", "epsilon", "c", "num_reads", "top_k", "ensemble", "num_sweeps", "relevance_power", "linear_share", "linear_margin", "linear_reach")
    K_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    K0_FIELD_NUMBER: _ClassVar[int]
    XI_FIELD_NUMBER: _ClassVar[int]
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    C_FIELD_NUMBER: _ClassVar[int]
    NUM_READS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    ENSEMBLE_FIELD_NUMBER: _ClassVar[int]
    NUM_SWEEPS_FIELD_NUMBER: _ClassVar[int]
    RELEVANCE_POWER_FIELD_NUMBER: _ClassVar[int]
    LINEAR_SHARE_FIELD_NUMBER: _ClassVar[int]
    LINEAR_MARGIN_FIELD_NUMBER: _ClassVar[int]
    LINEAR_REACH_FIELD_NUMBER: _ClassVar[int]
    k: int
    base: float
    k0: float
    xi: float
    gamma: float
    epsilon: float
    c: float
    num_reads: int
    top_k: int
    ensemble: str
    num_sweeps: int
    relevance_power: float
    linear_share: float
    linear_margin: float
    linear_reach: float
    def __init__(self, k: _Optional[int] = ..., base: _Optional[float] = ..., k0: _Optional[float] = ..., xi: _Optional[float] = ..., gamma: _Optional[float] = ..., epsilon: _Optional[float] = ..., c: _Optional[float] = ..., num_reads: _Optional[int] = ..., top_k: _Optional[int] = ..., ensemble: _Optional[str] = ..., num_sweeps: _Optional[int] = ..., relevance_power: _Optional[float] = ..., linear_share: _Optional[float] = ..., linear_margin: _Optional[float] = ..., linear_reach: _Optional[float] = ...) -> None: ...

class FitRequest(_message.Message):
    __slots__ = ("model_id", "x", "y", "params", "backend", "seed", "idempotency_key", "feature_names")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    x: Matrix
    y: _containers.RepeatedScalarFieldContainer[float]
    params: QSVRParams
    backend: str
    seed: int
    idempotency_key: str
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_id: _Optional[str] = ..., x: _Optional[_Union[Matrix, _Mapping]] = ..., y: _Optional[_Iterable[float]] = ..., params: _Optional[_Union[QSVRParams, _Mapping]] = ..., backend: _Optional[str] = ..., seed: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., feature_names: _Optional[_Iterable[str]] = ...) -> None: ...

class FitReply(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_id", "version", "backend", "n_train", "n_features", "num_variables", "train_r2", "best_energy", "build_seconds", "sample_seconds", "members", "fallback", "fallback_reason", "created_at", "params", "member_energies", "seed", "num_reads", "distinct_solutions", "qpu_access_time_us", "chain_break_fraction", "max_chain_length", "qubits_used", "embedding_cache_hit", "attempted_backends", "feature_names")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    N_TRAIN_FIELD_NUMBER: _ClassVar[int]
    N_FEATURES_FIELD_NUMBER: _ClassVar[int]
    NUM_VARIABLES_FIELD_NUMBER: _ClassVar[int]
    TRAIN_R2_FIELD_NUMBER: _ClassVar[int]
    BEST_ENERGY_FIELD_NUMBER: _ClassVar[int]
    BUILD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ENERGIES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    NUM_READS_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_SOLUTIONS_FIELD_NUMBER: _ClassVar[int]
    QPU_ACCESS_TIME_US_FIELD_NUMBER: _ClassVar[int]
    CHAIN_BREAK_FRACTION_FIELD_NUMBER: _ClassVar[int]
    MAX_CHAIN_LENGTH_FIELD_NUMBER: _ClassVar[int]
    QUBITS_USED_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTED_BACKENDS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    version: int
    backend: str
    n_train: int
    n_features: int
    num_variables: int
    train_r2: float
    best_energy: float
    build_seconds: float
    sample_seconds: float
    members: int
    fallback: bool
    fallback_reason: str
    created_at: _timestamp_pb2.Timestamp
    params: QSVRParams
    member_energies: _containers.RepeatedScalarFieldContainer[float]
    seed: int
    num_reads: int
    distinct_solutions: int
    qpu_access_time_us: float
    chain_break_fraction: float
    max_chain_length: int
    qubits_used: int
    embedding_cache_hit: bool
    attempted_backends: _containers.RepeatedScalarFieldContainer[str]
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_id: _Optional[str] = ..., version: _Optional[int] = ..., backend: _Optional[str] = ..., n_train: _Optional[int] = ..., n_features: _Optional[int] = ..., num_variables: _Optional[int] = ..., train_r2: _Optional[float] = ..., best_energy: _Optional[float] = ..., build_seconds: _Optional[float] = ..., sample_seconds: _Optional[float] = ..., members: _Optional[int] = ..., fallback: _Optional[bool] = ..., fallback_reason: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., params: _Optional[_Union[QSVRParams, _Mapping]] = ..., member_energies: _Optional[_Iterable[float]] = ..., seed: _Optional[int] = ..., num_reads: _Optional[int] = ..., distinct_solutions: _Optional[int] = ..., qpu_access_time_us: _Optional[float] = ..., chain_break_fraction: _Optional[float] = ..., max_chain_length: _Optional[int] = ..., qubits_used: _Optional[int] = ..., embedding_cache_hit: _Optional[bool] = ..., attempted_backends: _Optional[_Iterable[str]] = ..., feature_names: _Optional[_Iterable[str]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("model_id", "x", "version")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    x: Matrix
    version: int
    def __init__(self, model_id: _Optional[str] = ..., x: _Optional[_Union[Matrix, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class PredictReply(_message.Message):
    __slots__ = ("mean", "std", "model_id", "version")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    model_id: str
    version: int
    def __init__(self, mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ..., model_id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model_id", "version")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    version: int
    def __init__(self, model_id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("model_id", "page_size", "page_token")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    page_size: int
    page_token: str
    def __init__(self, model_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelsReply(_message.Message):
    __slots__ = ("models", "next_page_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    next_page_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class DeleteModelReply(_message.Message):
    __slots__ = ("model_id", "versions_deleted")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_DELETED_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    versions_deleted: int
    def __init__(self, model_id: _Optional[str] = ..., versions_deleted: _Optional[int] = ...) -> None: ...
