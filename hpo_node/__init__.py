"""hpo_node: engine-agnostic HPO schedulers (SHA, Hyperband, ASHA, Swift-Hyperband, Swift-ASHA),
final-loss predictors (SVR, QSVR in-process, QSVR over the gateway), configuration searchers (random,
TPE, GP-EI, evolution) and a learning-curve replay simulator. See :mod:`hpo_node.core` for the
scheduler interface and :mod:`hpo_node.search` for the searcher interface."""

from __future__ import annotations

from hpo_node.asha import ASHA, SwiftASHA
from hpo_node.core import Decision, Job, Scheduler, TrialState
from hpo_node.hyperband import Hyperband, RandomSearch, SuccessiveHalving, SwiftHyperband
from hpo_node.predictors import (
    CurveFeatures,
    GatewayPredictor,
    Predictor,
    QSVRPredictor,
    SVRPredictor,
    make_predictor_factory,
)
from hpo_node.replay import CurveTable, RunResult, simulate
from hpo_node.search import Searcher, SearchSpace, make_searcher

__all__ = [
    "ASHA",
    "CurveFeatures",
    "CurveTable",
    "Decision",
    "GatewayPredictor",
    "Hyperband",
    "Job",
    "Predictor",
    "QSVRPredictor",
    "RandomSearch",
    "RunResult",
    "SVRPredictor",
    "Scheduler",
    "SearchSpace",
    "Searcher",
    "SuccessiveHalving",
    "SwiftASHA",
    "SwiftHyperband",
    "TrialState",
    "make_predictor_factory",
    "make_searcher",
    "simulate",
]
