"""A gateway that refuses the study's token mid-study: the guarded predictor says it is an
authentication/permission error, not an outage of an unreachable gateway."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import numpy as np

from hpo_node.resilient import GuardedPredictor, PredictionLog, auth_error


class _Refused(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class _Predictor:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def fit(self, *args: Any, **kwargs: Any) -> None:
        raise self.exc

    def predict(self, *args: Any, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        raise self.exc


def _run(exc: BaseException, caplog: Any) -> list[logging.LogRecord]:
    log = PredictionLog(retry_after=0.0)
    guarded = GuardedPredictor(lambda: _Predictor(exc), log)
    with caplog.at_level(logging.WARNING, logger="hpo_node.resilient"):
        guarded.fit(np.ones((4, 3)), np.ones(4))
        mean, _ = guarded.predict(np.ones((2, 3)))
    assert np.all(np.isneginf(mean))  # the plain algorithm's answer either way
    return list(caplog.records)


def test_hpo_resilient_auth_error_is_named_not_unreachable(caplog: Any) -> None:
    (rec,) = _run(_Refused(grpc.StatusCode.UNAUTHENTICATED, "unknown token"), caplog)
    assert rec.levelno == logging.ERROR
    msg = rec.getMessage()
    assert msg.startswith("predictor refused by the gateway: authentication/permission error "
                          "(fit: UNAUTHENTICATED: unknown token); check the token")
    assert "unreachable" not in msg
    caplog.clear()
    (rec,) = _run(_Refused(grpc.StatusCode.PERMISSION_DENIED, "scope 'predict'"), caplog)
    assert "(fit: PERMISSION_DENIED: scope 'predict')" in rec.getMessage()


def test_hpo_resilient_outage_is_still_unreachable(caplog: Any) -> None:
    (rec,) = _run(_Refused(grpc.StatusCode.UNAVAILABLE, "down"), caplog)
    assert rec.levelno == logging.WARNING
    assert rec.getMessage().startswith("predictor unreachable (fit: StatusCode.UNAVAILABLE)")
    assert auth_error(_Refused(grpc.StatusCode.UNAVAILABLE, "down")) is None


def test_hpo_resilient_unset_token_env_fails_when_the_factory_is_made(monkeypatch: Any) -> None:
    import pytest

    from hpo_node.predictors import make_predictor_factory

    monkeypatch.delenv("MY_GW_TOKEN", raising=False)
    with pytest.raises(ValueError, match="token_env: environment variable 'MY_GW_TOKEN' is not "
                                         "set; export it"):
        make_predictor_factory("gateway", gateway="127.0.0.1:1", token_env="MY_GW_TOKEN")
    monkeypatch.setenv("MY_GW_TOKEN", "x")
    assert callable(make_predictor_factory("gateway", gateway="127.0.0.1:1",
                                           token_env="MY_GW_TOKEN"))
