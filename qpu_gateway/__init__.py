"""qpu_gateway: QSVR-as-QUBO fitting and prediction behind a gRPC service.

Three layers, each importing only from the ones above it (``tests/test_layout.py`` checks this):

- **domain** -- pure model code, no I/O: :mod:`~qpu_gateway.qubo` (the QUBO of the SVR dual),
  :mod:`~qpu_gateway.ensemble` (combining annealer solutions), :mod:`~qpu_gateway.qsvr` (the
  scikit-learn estimator), :mod:`~qpu_gateway.seeds` (any uint64 seed as a sampler's seed);
- **service** -- what the gateway does with models: :mod:`~qpu_gateway.service` (fit, predict,
  describe, delete), :mod:`~qpu_gateway.store` (SQLite), :mod:`~qpu_gateway.breaker`,
  :mod:`~qpu_gateway.execution` (sampling worker processes), :mod:`~qpu_gateway.backends`
  (one sampler per module);
- **transport** -- how callers reach it: :mod:`~qpu_gateway.server` (the gRPC servicer: messages
  to service calls only), :mod:`~qpu_gateway.convert`, :mod:`~qpu_gateway.auth`,
  :mod:`~qpu_gateway.error_details`, :mod:`~qpu_gateway.reflection`, :mod:`~qpu_gateway.client`.

Cross-cutting and usable from every layer: :mod:`~qpu_gateway.errors`, :mod:`~qpu_gateway.redact`,
:mod:`~qpu_gateway.observability`. The application wires the layers: :mod:`~qpu_gateway.config`,
:mod:`~qpu_gateway.cli`, :mod:`~qpu_gateway.process`.
"""
