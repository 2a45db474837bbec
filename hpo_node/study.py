"""The main job: an HPO study from a TOML file, on Ray Tune, with the gateway as predictor.

``hpo-node run CONFIG`` (:func:`run_main`):

1. reads the study (:func:`load_study`, format below);
2. starts ``qpu-gateway serve`` as a child process on a free port (backend from the config, SQLite
   store in the output directory) and waits for its health check, unless ``--gateway HOST:PORT``
   names a running one or the study needs no gateway;
3. starts a local Ray (``num_cpus`` from the config, no dashboard) unless ``--ray-address`` names a
   cluster;
4. runs the study with the scheduler adapter of :mod:`hpo_node.integrations.ray_tune`, printing progress;
5. writes ``<output_dir>/<name>/``: ``trials.csv``, ``best.json``, ``curves.png``, ``summary.json``
   (epochs used, trials per outcome, predictor counters), ``scheduler_state.json``, and Ray's own
   experiment directory ``ray/<name>`` (``--resume`` continues an interrupted study from it with
   ``Tuner.restore``, the scheduler's state included); stops the gateway it started.

Study TOML::

    [study]
    name = "digits"              # results/<name>/
    output_dir = "results"       # relative to the current directory, or absolute
    seed = 0                     # sampling of configurations, predictor seeds
    trials = 27                  # configurations (asha, swift-asha); hyperband fixes its own
    time_budget_s = 240          # optional wall-clock budget
    metric = "val_loss"
    mode = "min"
    resource_attr = "epoch"      # the result key that counts epochs (1, 2, ... one per report)
    num_cpus = 2                 # local Ray only

    [algorithm]                  # asha | hyperband | swift-asha | swift-hyperband
    name = "swift-asha"
    max_resource = 27            # epochs (R)
    eta = 3
    params = { d = 6 }           # constructor options of the core scheduler
    searcher = "random"          # random (default) | tpe | gp-ei | evolution (hpo_node.search)
    searcher_params = { gamma = 0.15 }   # constructor options of the searcher (not for random)

    [predictor]                  # Swift variants only
    kind = "gateway"             # gateway | svr | qsvr (the last two in-process)
    timeout_s = 10.0             # deadline of each gateway call
    retry_after_s = 5.0          # after a failure, skip the gateway this long
    params = { num_reads = 200 } # QSVR parameters (gateway, qsvr) or SVR ones (svr)

    [gateway]
    address = "auto"             # auto: start a child; none: no gateway; or HOST:PORT
    backend = "neal"
    # token_env = "QHPO_GATEWAY_TOKEN"   # a secured gateway: the env variable with the token,
    # tls_ca = "ca.pem"                  # TLS; tls_cert + tls_key for mutual TLS

    [resources]                  # per trial; fractional GPUs allowed
    cpu = 1
    gpu = 0

    [trainable]                  # fixed entries of every trial's config
    function = "my_model:train"  # optional: a Ray Tune function trainable (module beside the
                                 # TOML, else on sys.path); default: the digits trainable
    model = "mlp"                # (with the digits trainable: keys of hpo_node.trainables.DEFAULTS)

    [space]                      # sampled entries (any names with a user trainable)
    lr = { type = "loguniform", low = 1e-4, high = 0.3 }
    dropout = { type = "uniform", low = 0.0, high = 0.5 }
    batch_size = { type = "quniform", low = 16, high = 128, q = 16 }
    hidden = { type = "choice", values = [32, 64, 128] }
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import re
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo_node.core import check_choice, check_float, check_int, hyperband_brackets
from qpu_gateway.process import GatewayProcess

logger = logging.getLogger(__name__)

SPACE_TYPES = ("loguniform", "uniform", "quniform", "choice")
PREDICTOR_KINDS = ("gateway", "svr", "qsvr")
# How to reach a secured gateway: token_env names the environment variable holding the token.
GATEWAY_CONNECTION_KEYS = ("token_env", "tls_ca", "tls_cert", "tls_key")
SWIFT = ("swift-asha", "swift-hyperband")
_SECTIONS = ("study", "algorithm", "predictor", "gateway", "resources", "trainable", "space")


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class StudyConfig:
    """A validated study (see the module docstring for the TOML keys)."""

    name: str
    output_dir: Path
    algorithm: str
    max_resource: int
    eta: int
    space: dict[str, dict[str, Any]]
    seed: int = 0
    trials: int | None = None
    time_budget_s: float | None = None
    metric: str = "val_loss"
    mode: str = "min"
    num_cpus: int | None = None
    algorithm_params: dict[str, Any] = field(default_factory=dict)
    searcher: str = "random"
    searcher_params: dict[str, Any] = field(default_factory=dict)
    predictor: str = "gateway"
    predictor_timeout_s: float = 10.0
    retry_after_s: float = 5.0
    predictor_params: dict[str, Any] = field(default_factory=dict)
    gateway: str = "auto"
    gateway_backend: str = "neal"
    gateway_connection: dict[str, str] = field(default_factory=dict)
    cpu: float = 1.0
    gpu: float = 0.0
    trainable: dict[str, Any] = field(default_factory=dict)
    resource_attr: str = "epoch"
    function: str | None = None
    base_dir: Path | None = None
    trainable_fn: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    @property
    def study_dir(self) -> Path:
        """``output_dir / name``."""
        return self.output_dir / self.name

    @property
    def trainable_callable(self) -> Callable[..., Any]:
        """The Ray Tune function trainable: the user's, else the digits one."""
        if self.trainable_fn is not None:
            return self.trainable_fn
        from hpo_node.trainables import train_digits

        return train_digits

    @property
    def uses_predictor(self) -> bool:
        return self.algorithm in SWIFT

    @property
    def needs_gateway(self) -> bool:
        """A Swift algorithm with the gateway predictor."""
        return self.uses_predictor and self.predictor == "gateway"


def _section(doc: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, Mapping):
        raise TypeError(f"[{name}] must be a table, got {type(value).__name__}")
    return dict(value)


def _no_extra(section: str, table: Mapping[str, Any], known: Sequence[str]) -> None:
    extra = sorted(set(table) - set(known))
    if extra:
        raise ValueError(f"[{section}] has unknown keys {extra}; known: {sorted(known)}")


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return float(value)


def check_space(space: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Validate ``[space]``: every entry a table with a ``type`` among :data:`SPACE_TYPES`."""
    if not space:
        raise ValueError("[space] must define at least one hyperparameter, got none")
    out: dict[str, dict[str, Any]] = {}
    for key, spec in space.items():
        where = f"space.{key}"
        if not isinstance(spec, Mapping):
            raise TypeError(f"{where} must be a table like {{ type = \"uniform\", ... }}, got {spec!r}")
        kind = check_choice(f"{where}.type", spec.get("type"), SPACE_TYPES)
        if kind == "choice":
            _no_extra(where, spec, ("type", "values"))
            values = spec.get("values")
            if not isinstance(values, list) or not values:
                raise ValueError(f"{where}.values must be a non-empty list, got {values!r}")
            out[key] = {"type": kind, "values": list(values)}
            continue
        known = ("type", "low", "high", "q") if kind == "quniform" else ("type", "low", "high")
        _no_extra(where, spec, known)
        low = _number(f"{where}.low", spec.get("low"))
        high = _number(f"{where}.high", spec.get("high"))
        if not low < high:
            raise ValueError(f"{where}: low must be < high, got low={low}, high={high}")
        if kind == "loguniform" and low <= 0:
            raise ValueError(f"{where}.low must be > 0 for loguniform, got {low}")
        entry: dict[str, Any] = {"type": kind, "low": low, "high": high}
        if kind == "quniform":
            q = _number(f"{where}.q", spec.get("q"))
            if q <= 0:
                raise ValueError(f"{where}.q must be > 0, got {q}")
            entry["q"] = q
        out[key] = entry
    return out


def study_from_dict(
    doc: Mapping[str, Any],
    base: Path | None = None,
    *,
    trainable: Callable[..., Any] | None = None,
) -> StudyConfig:
    """Build and validate a :class:`StudyConfig` from a parsed TOML document.

    ``base``: the TOML file's folder, where ``[trainable] function``'s module is looked up first.
    ``trainable``: a Ray Tune function trainable given from code (then ``[trainable] function``
    must be absent).
    """
    from hpo_node.trainables import DEFAULTS as TRAINABLE_DEFAULTS
    from hpo_node.trainables import load_trainable

    _no_extra("top level", doc, _SECTIONS)
    st = _section(doc, "study")
    _no_extra(
        "study",
        st,
        ("name", "output_dir", "seed", "trials", "time_budget_s", "metric", "mode", "num_cpus",
         "resource_attr"),
    )
    al = _section(doc, "algorithm")
    _no_extra("algorithm", al, ("name", "max_resource", "eta", "params", "searcher",
                                "searcher_params"))
    pr = _section(doc, "predictor")
    _no_extra("predictor", pr, ("kind", "timeout_s", "retry_after_s", "params"))
    gw = _section(doc, "gateway")
    _no_extra("gateway", gw, ("address", "backend", *GATEWAY_CONNECTION_KEYS))
    rs = _section(doc, "resources")
    _no_extra("resources", rs, ("cpu", "gpu"))
    tr = _section(doc, "trainable")
    function = tr.pop("function", None)
    if function is not None and trainable is not None:
        raise ValueError(
            f"trainable.function must be absent when a trainable is given from code, got "
            f"{function!r}"
        )
    if function is not None:
        trainable = load_trainable(function, base, key="trainable.function")
    elif trainable is not None and not callable(trainable):
        raise TypeError(f"trainable must be a callable, got {type(trainable).__name__}")
    space = check_space(_section(doc, "space"))
    clash = sorted(set(space) & set(tr))
    if clash:
        raise ValueError(f"keys {clash} are both in [trainable] and [space]; keep one")
    if trainable is None:
        # the digits trainable: its keys only
        _no_extra("trainable", tr, tuple(TRAINABLE_DEFAULTS))
        _no_extra("space", space, tuple(TRAINABLE_DEFAULTS))
    if "max_epochs" in space or "max_epochs" in tr:
        raise ValueError("max_epochs is set from [algorithm].max_resource; remove it")

    from hpo_node.integrations.ray_tune import RAY_ALGORITHMS

    name = st.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"study.name must be letters, digits, '_', '.', '-', got {name!r}")
    out_dir = Path(str(st.get("output_dir", "results")))  # relative to the current directory
    algorithm = check_choice("algorithm.name", al.get("name"), RAY_ALGORITHMS)
    trials = st.get("trials")
    if trials is not None:
        trials = check_int("study.trials", trials, 1)
        if algorithm in ("hyperband", "swift-hyperband"):
            raise ValueError(
                f"study.trials must be omitted for {algorithm} (its brackets fix the number), "
                f"got {trials}"
            )
    budget = st.get("time_budget_s")
    if budget is not None:
        budget = check_float("study.time_budget_s", budget, 0.0, math.inf, low_open=True)
    num_cpus = st.get("num_cpus")
    if num_cpus is not None:
        num_cpus = check_int("study.num_cpus", num_cpus, 1)
    params = al.get("params", {})
    if not isinstance(params, Mapping):
        raise TypeError(f"algorithm.params must be a table, got {params!r}")
    from hpo_node.search import SEARCHERS

    searcher = check_choice("algorithm.searcher", al.get("searcher", "random"), SEARCHERS)
    sparams = al.get("searcher_params", {})
    if not isinstance(sparams, Mapping):
        raise TypeError(f"algorithm.searcher_params must be a table, got {sparams!r}")
    if sparams and searcher == "random":
        raise ValueError(
            f"algorithm.searcher_params must be empty for searcher = 'random' (Tune's random "
            f"sampling), got {dict(sparams)!r}"
        )
    pparams = pr.get("params", {})
    if not isinstance(pparams, Mapping):
        raise TypeError(f"predictor.params must be a table, got {pparams!r}")
    gateway = gw.get("address", "auto")
    if not isinstance(gateway, str) or (gateway not in ("auto", "none") and ":" not in gateway):
        raise ValueError(f"gateway.address must be 'auto', 'none' or HOST:PORT, got {gateway!r}")
    predictor = check_choice("predictor.kind", pr.get("kind", "gateway"), PREDICTOR_KINDS)
    if algorithm in SWIFT and predictor == "gateway" and gateway == "none":
        raise ValueError(
            "gateway.address must not be 'none' with predictor.kind = 'gateway'; "
            "use predictor.kind = 'svr' to predict in-process"
        )
    cfg = StudyConfig(
        name=name,
        output_dir=out_dir,
        algorithm=algorithm,
        max_resource=check_int("algorithm.max_resource", al.get("max_resource"), 1),
        eta=check_int("algorithm.eta", al.get("eta", 3), 2),
        space=space,
        seed=check_int("study.seed", st.get("seed", 0), 0),
        trials=trials,
        time_budget_s=budget,
        metric=str(st.get("metric", "val_loss")),
        mode=check_choice("study.mode", st.get("mode", "min"), ("min", "max")),
        num_cpus=num_cpus,
        algorithm_params=dict(params),
        searcher=searcher,
        searcher_params=dict(sparams),
        predictor=predictor,
        predictor_timeout_s=check_float(
            "predictor.timeout_s", pr.get("timeout_s", 10.0), 0.0, math.inf, low_open=True
        ),
        retry_after_s=check_float(
            "predictor.retry_after_s", pr.get("retry_after_s", 5.0), 0.0, math.inf
        ),
        predictor_params=dict(pparams),
        gateway=gateway,
        gateway_backend=str(gw.get("backend", "neal")),
        gateway_connection={k: str(gw[k]) for k in GATEWAY_CONNECTION_KEYS if k in gw},
        cpu=check_float("resources.cpu", rs.get("cpu", 1), 0.0, math.inf, low_open=True),
        gpu=check_float("resources.gpu", rs.get("gpu", 0), 0.0, math.inf),
        trainable=dict(tr),
        resource_attr=_identifier("study.resource_attr", st.get("resource_attr", "epoch")),
        function=function,
        base_dir=base,
        trainable_fn=trainable,
    )
    # Build the scheduler once now so that bad algorithm params fail before anything starts.
    build_scheduler(cfg, gateway_address="127.0.0.1:1" if cfg.needs_gateway else None)
    if cfg.searcher != "random":
        build_searcher(cfg)
    return cfg


def _identifier(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def load_study(
    path: str | Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    trainable: Callable[..., Any] | None = None,
) -> StudyConfig:
    """Read a study TOML file; ``overrides`` (``"section.key": value``) replace entries.

    ``[trainable] function``'s module is looked up first in the file's folder; ``trainable``
    gives the function from code instead.
    """
    p = Path(path)
    with open(p, "rb") as fh:
        doc = tomllib.load(fh)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if not key:
            raise ValueError(f"override must be SECTION.KEY=VALUE, got {dotted!r}")
        doc.setdefault(section, {})
        if not isinstance(doc[section], dict):
            raise TypeError(f"[{section}] must be a table to override {dotted!r}")
        doc[section][key] = value
    return study_from_dict(doc, p.resolve().parent, trainable=trainable)


def param_space(cfg: StudyConfig) -> dict[str, Any]:
    """Ray Tune's ``param_space``: sampled domains, fixed trainable entries, ``max_epochs = R``."""
    from ray import tune

    out: dict[str, Any] = dict(cfg.trainable)
    for key, spec in cfg.space.items():
        kind = spec["type"]
        if kind == "loguniform":
            out[key] = tune.loguniform(spec["low"], spec["high"])
        elif kind == "uniform":
            out[key] = tune.uniform(spec["low"], spec["high"])
        elif kind == "quniform":
            q = spec["q"]
            out[key] = tune.qrandint(int(spec["low"]), int(spec["high"]), int(q)) if all(
                float(spec[k]).is_integer() for k in ("low", "high", "q")
            ) else tune.quniform(spec["low"], spec["high"], q)
        else:
            out[key] = tune.choice(spec["values"])
    out["max_epochs"] = cfg.max_resource
    return out


def fixed_param_space(cfg: StudyConfig) -> dict[str, Any]:
    """Tune's ``param_space`` with a searcher: the fixed entries only (the searcher suggests the
    ``[space]`` entries)."""
    return {**cfg.trainable, "max_epochs": cfg.max_resource}


def build_searcher(cfg: StudyConfig, scheduler: Any = None) -> Any:
    """The study's :class:`hpo_node.integrations.ray_search.TuneSearcher` (``cfg.searcher`` other than
    ``random``), attached to ``scheduler`` when given."""
    from hpo_node.integrations.ray_search import StudySpace, TuneSearcher
    from hpo_node.search import make_searcher

    space = StudySpace(cfg.space)
    try:
        inner = make_searcher(cfg.searcher, space.space, seed=cfg.seed, **cfg.searcher_params)
    except TypeError as exc:
        raise TypeError(
            f"algorithm.searcher_params must be options of the {cfg.searcher!r} searcher, "
            f"got {cfg.searcher_params!r} ({exc})"
        ) from exc
    size = space.space.size
    if cfg.algorithm in ("hyperband", "swift-hyperband") and size is not None:
        largest = max(rounds[0][0] for _, rounds in hyperband_brackets(cfg.max_resource, cfg.eta))
        if size < largest:
            raise ValueError(
                f"space: {size} distinct configurations, fewer than the {largest} that a "
                f"{cfg.algorithm} bracket (R = {cfg.max_resource}, eta = {cfg.eta}) starts with at "
                f"once; searcher {cfg.searcher!r} never proposes a pending configuration twice. "
                "Widen the space, or use asha / swift-asha or searcher = 'random'"
            )
    out = TuneSearcher(inner, space, metric=cfg.metric, mode=cfg.mode, max_trials=n_trials(cfg))
    if scheduler is not None:
        out.attach(scheduler)
    return out


def hparam_encoder(cfg: StudyConfig) -> _HparamEncoder:
    """Trial config -> numeric hyperparameters for the core (choices as their index)."""
    return _HparamEncoder({k: s["values"] for k, s in cfg.space.items() if s["type"] == "choice"},
                          [k for k, s in cfg.space.items() if s["type"] == "loguniform"],
                          list(cfg.space))


class _HparamEncoder:
    """Picklable: choices -> index, loguniform -> log10, other sampled entries as floats."""

    def __init__(self, choices: dict[str, list[Any]], logs: list[str], keys: list[str]) -> None:
        self.choices = choices
        self.logs = logs
        self.keys = keys

    def __call__(self, config: Mapping[str, Any]) -> dict[str, float]:
        out: dict[str, float] = {}
        for k in self.keys:
            v = config.get(k)
            if k in self.choices:
                out[k] = float(self.choices[k].index(v)) if v in self.choices[k] else -1.0
            elif k in self.logs:
                out[k] = math.log10(float(v))
            elif isinstance(v, int | float) and not isinstance(v, bool):
                out[k] = float(v)
        return out


def n_trials(cfg: StudyConfig) -> int:
    """Configurations the study generates."""
    from hpo_node.integrations.ray_tune import trials_needed

    return trials_needed(cfg.algorithm, cfg.max_resource, cfg.eta, cfg.trials)


def build_scheduler(cfg: StudyConfig, gateway_address: str | None) -> Any:
    """The study's :class:`hpo_node.integrations.ray_tune.CoreTrialScheduler` (and prediction log)."""
    from hpo_node.integrations.ray_tune import (
        ASHAScheduler,
        HyperbandScheduler,
        SwiftASHAScheduler,
        SwiftHyperbandScheduler,
    )
    from hpo_node.predictors import make_predictor_factory
    from hpo_node.resilient import GatewayFactory, PredictionLog, guarded_factory

    common: dict[str, Any] = {
        "metric": cfg.metric,
        "mode": cfg.mode,
        "hparams": hparam_encoder(cfg),
        "resource_attr": cfg.resource_attr,
        "options": dict(cfg.algorithm_params),
    }
    n = n_trials(cfg)
    if cfg.algorithm == "asha":
        return ASHAScheduler(cfg.max_resource, cfg.eta, n, **common)
    if cfg.algorithm == "hyperband":
        return HyperbandScheduler(cfg.max_resource, cfg.eta, **common)
    log = PredictionLog(retry_after=cfg.retry_after_s)
    if cfg.predictor == "gateway":
        if gateway_address is None:
            raise ValueError(f"a gateway address is needed for {cfg.algorithm} with the gateway")
        inner: Any = GatewayFactory(
            gateway_address, timeout=cfg.predictor_timeout_s, **cfg.gateway_connection,
            **cfg.predictor_params,
        )
    else:
        inner = make_predictor_factory(cfg.predictor, **cfg.predictor_params)
    factory = guarded_factory(inner, log)
    if cfg.algorithm == "swift-asha":
        return SwiftASHAScheduler(cfg.max_resource, cfg.eta, n, factory, seed=cfg.seed, log=log,
                                  **common)
    return SwiftHyperbandScheduler(cfg.max_resource, cfg.eta, factory, seed=cfg.seed, log=log,
                                   **common)


# ---------------------------------------------------------------------------------------------
# The gateway child process


# ---------------------------------------------------------------------------------------------
# Progress and outputs


def trial_rows(scheduler: Any, cfg: StudyConfig) -> list[dict[str, Any]]:
    """One dict per trial (the rows of ``trials.csv``): outcome, epochs, last/final/best metric,
    prediction when stopped by it, and every config entry as ``config.<name>``."""
    keys = sorted({k for r in scheduler.records.values() for k in r.config})
    r_max = cfg.max_resource
    m = cfg.metric
    rows = []
    for tid, rec in scheduler.records.items():
        finite = [v for v in rec.curve if v is not None]
        best = (max(finite) if cfg.mode == "max" else min(finite)) if finite else None
        rows.append({
            "trial_id": tid,
            "decision": rec.status,
            "epochs": len(rec.curve),
            f"last_{m}": rec.curve[-1] if rec.curve else None,
            f"final_{m}": rec.curve[r_max - 1] if len(rec.curve) >= r_max else None,
            f"best_{m}": best,
            f"predicted_{m}": rec.predicted,
            "predicted_spread": rec.predicted_spread,
            "diverged": int(rec.diverged),
            "jobs": rec.jobs,
            **{f"config.{k}": rec.config.get(k) for k in keys},
        })
    return rows


def write_trials_csv(scheduler: Any, cfg: StudyConfig, path: Path) -> None:
    """:func:`trial_rows` as CSV (empty cells for ``None``)."""
    rows = trial_rows(scheduler, cfg)
    with open(path, "w", newline="") as fh:
        if not rows:
            return
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for row in rows:
            w.writerow({k: _cell(v) for k, v in row.items()})


def _cell(v: Any) -> Any:
    return "" if v is None else v


def plot_curves(scheduler: Any, cfg: StudyConfig, path: Path) -> None:
    """Every learning curve; trials stopped by prediction dashed with an ``x`` at their end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    styles = {
        "finished": {"color": "tab:green", "lw": 1.6, "alpha": 0.9},
        "stopped-by-prediction": {"color": "tab:red", "lw": 1.0, "ls": "--", "alpha": 0.8},
    }
    labelled: set[str] = set()
    for rec in scheduler.records.values():
        if not rec.curve:
            continue
        ys = [math.nan if v is None else v for v in rec.curve]
        xs = list(range(1, len(ys) + 1))
        kind = rec.status if rec.status in styles else "other"
        style = styles.get(kind, {"color": "tab:gray", "lw": 0.8, "alpha": 0.5})
        label = {"finished": f"reached R = {cfg.max_resource}",
                 "stopped-by-prediction": "stopped by prediction",
                 "other": "stopped by the algorithm / other"}[kind]
        ax.plot(xs, ys, label=None if kind in labelled else label, **style)
        labelled.add(kind)
        if kind == "stopped-by-prediction":
            ax.plot(xs[-1], ys[-1], "x", color="tab:red", ms=7)
            if rec.predicted is not None:
                ax.plot(rec.target, rec.predicted, "o", mfc="none", color="tab:red", ms=5)
    ax.set_xlabel("epoch")
    ax.set_ylabel(cfg.metric)
    ax.set_yscale("log" if cfg.mode == "min" else "linear")
    ax.set_title(f"{cfg.name}: {cfg.algorithm}, R = {cfg.max_resource}, eta = {cfg.eta} "
                 "(o: predicted loss at the rung)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass
class StudyResult:
    """What :func:`run_study` and :func:`optimize` return.

    ``study_dir``: where the outputs went (``trials.csv``, ``best.json``, ``curves.png``,
    ``summary.json``); ``best_config``/``best_value``: the best trial at ``max_resource``
    (``None`` if no trial got there); ``trials``: the rows of ``trials.csv``; ``summary``: the
    content of ``summary.json``; ``scheduler``: the Ray Tune scheduler with every trial's record.
    """

    study_dir: Path
    summary: dict[str, Any]
    scheduler: Any
    best_config: dict[str, Any] | None = None
    best_value: float | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)


def _summary(cfg: StudyConfig, scheduler: Any, wall_s: float, gateway: str | None,
             experiment_dir: Path) -> dict[str, Any]:
    counts = scheduler.status_counts()
    epochs_by = {}
    for rec in scheduler.records.values():
        epochs_by[rec.status] = epochs_by.get(rec.status, 0) + len(rec.curve)
    n = len(scheduler.records)
    best = scheduler.best()
    return {
        "study": cfg.name,
        "algorithm": cfg.algorithm,
        "searcher": cfg.searcher,
        "max_resource": cfg.max_resource,
        "eta": cfg.eta,
        "seed": cfg.seed,
        "trials": n,
        "trials_by_decision": counts,
        "epochs_used": scheduler.epochs_used(),
        "epochs_by_decision": epochs_by,
        "epochs_if_every_trial_ran_to_R": n * cfg.max_resource,
        "best": None if best is None else {"trial_id": best[0], cfg.metric: best[1]},
        "predictor": scheduler.log.counters() if scheduler.log is not None else None,
        "predictor_calls": scheduler.core.predictor_calls(),
        "gateway": gateway,
        "wall_seconds": wall_s,
        "ray_experiment_dir": str(experiment_dir),
    }


def write_outputs(cfg: StudyConfig, scheduler: Any, summary: dict[str, Any]) -> None:
    """``trials.csv``, ``best.json``, ``curves.png``, ``summary.json``, ``scheduler_state.json``."""
    d = cfg.study_dir
    write_trials_csv(scheduler, cfg, d / "trials.csv")
    best = scheduler.best()
    best_obj: dict[str, Any] = {"metric": cfg.metric, "mode": cfg.mode, "found": best is not None}
    if best is not None:
        rec = scheduler.records[best[0]]
        best_obj.update(trial_id=best[0], value=best[1], epochs=len(rec.curve), config=rec.config)
    (d / "best.json").write_text(json.dumps(best_obj, indent=2))
    plot_curves(scheduler, cfg, d / "curves.png")
    (d / "summary.json").write_text(json.dumps(summary, indent=2))
    scheduler.save(str(d / "scheduler_state.json"))


# ---------------------------------------------------------------------------------------------
# Running


def _excluded_outputs(folder: Path, study_dir: Path) -> tuple[str, ...]:
    """The study's output folder, when inside the shipped ``folder`` (gitignore syntax)."""
    out = study_dir.resolve()
    if out.is_relative_to(folder):
        return ("/" + out.relative_to(folder).as_posix(),)
    return ()


def _restored_scheduler(tuner: Any) -> Any:
    """The scheduler object a restored ``Tuner`` runs (unpickled from its ``tuner.pkl``)."""
    from hpo_node.integrations.ray_tune import CoreTrialScheduler

    sched = getattr(getattr(getattr(tuner, "_local_tuner", None), "_tune_config", None),
                    "scheduler", None)
    if not isinstance(sched, CoreTrialScheduler):
        raise RuntimeError("could not find the restored study's scheduler in the Ray Tuner")
    return sched


def run_study(
    cfg: StudyConfig,
    *,
    gateway: str | None = None,
    ray_address: str | None = None,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    progress_every_s: float = 5.0,
    stream: str = "stdout",
) -> StudyResult:
    """Run (or with ``resume`` continue) the study; see the module docstring.

    ``callbacks``: extra Tune callbacks, or callables that take the study's scheduler and return
    one (ignored on ``resume``: a restored study runs the callbacks it was started with).
    """
    import ray
    from ray import tune
    from ray.tune.callback import Callback
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from hpo_node.integrations.ray_tune import ProgressCallback, SchedulerStateCallback
    from hpo_node.trainables import code_folder, runtime_env, ship_by_value

    out = getattr(sys, stream)
    study_dir = cfg.study_dir
    study_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune warns for every resumed trial whose result.json is not in its storage yet; harmless.
    logging.getLogger("ray.tune.logger.logger").setLevel(logging.ERROR)
    t0 = time.monotonic()
    child: GatewayProcess | None = None
    started_ray = False
    address = None
    try:
        if cfg.needs_gateway:
            if gateway is not None:
                address = gateway
            elif cfg.gateway != "auto":
                address = cfg.gateway
            else:
                child = GatewayProcess(
                    study_dir / "gateway.sqlite", "--backend", cfg.gateway_backend,
                    log_path=study_dir / "gateway.log",
                )
                address = child.start().address
                print(f"qpu-gateway started on {address} (backend {cfg.gateway_backend}, "
                      f"log {child.log_path})", file=out, flush=True)
            if child is None:
                from qpu_gateway.client import GatewayClient

                conn = dict(cfg.gateway_connection)
                token_env = conn.pop("token_env", None)
                token = os.environ.get(token_env) if token_env else None
                with GatewayClient(address, timeout=10, token=token, **conn) as client:
                    client.wait_until_serving(timeout=30)
                print(f"using qpu-gateway at {address}", file=out, flush=True)
        fn = cfg.trainable_callable
        folder = code_folder(fn)
        if not ray.is_initialized():
            env = None
            if folder is not None:
                # every worker, on every node, imports the trainable from this copy of its folder
                env = runtime_env(folder, _excluded_outputs(folder, study_dir))
                print(f"shipping {folder} to the Ray workers (runtime_env working_dir)", file=out,
                      flush=True)
            if ray_address is not None:
                ray.init(address=ray_address, log_to_driver=False, runtime_env=env)
            else:
                # address="local": a new Ray even when /tmp/ray/ray_current_cluster names another
                ray.init(address="local", num_cpus=cfg.num_cpus or os.cpu_count() or 1,
                         include_dashboard=False, runtime_env=env,
                         log_to_driver=False, configure_logging=False)
            started_ray = True
        elif folder is not None:
            # a Ray someone else started: its job's runtime_env is fixed, so send the code itself
            names = ship_by_value(folder)
            logger.info("Ray was already started: modules %s of %s are sent by value (files "
                        "beside them are not; start Ray with runtime_env={'working_dir': ...} "
                        "for those)", names, folder)
        resources = ray.cluster_resources()
        slots = int(resources.get("CPU", 1) // cfg.cpu) if cfg.cpu > 0 else 1
        if cfg.gpu > 0:
            slots = min(slots, int(resources.get("GPU", 0) // cfg.gpu))
        if slots < 1:
            raise ValueError(
                f"resources per trial (cpu {cfg.cpu}, gpu {cfg.gpu}) exceed the cluster's "
                f"(cpu {resources.get('CPU', 0)}, gpu {resources.get('GPU', 0)})"
            )
        storage = (study_dir / "ray").resolve()
        experiment = storage / cfg.name
        trainable = tune.with_resources(fn, {"cpu": cfg.cpu, "gpu": cfg.gpu})
        if resume and tune.Tuner.can_restore(str(experiment)):
            tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=True)
            scheduler = _restored_scheduler(tuner)
            predictor = getattr(scheduler, "predictor", None)
            if address is not None and predictor is not None:
                inner = getattr(predictor, "factory", None)
                if hasattr(inner, "address"):
                    inner.address = address
            restored_alg = getattr(getattr(getattr(tuner, "_local_tuner", None), "_tune_config",
                                           None), "search_alg", None)
            if hasattr(restored_alg, "attach"):
                restored_alg.attach(scheduler)
            print(f"resuming {experiment} ({len(scheduler.records)} trials known)", file=out,
                  flush=True)
        else:
            if resume:
                print(f"nothing to resume at {experiment}; starting the study", file=out, flush=True)
            scheduler = build_scheduler(cfg, address)
            scheduler.max_concurrent = slots
            n = n_trials(cfg)
            print(f"study {cfg.name}: {cfg.algorithm}, searcher {cfg.searcher}, {n} "
                  f"configurations, R = {cfg.max_resource} epochs, eta = {cfg.eta}, {slots} "
                  "trial(s) at a time", file=out, flush=True)
            if cfg.searcher == "random":
                search_alg: Any = BasicVariantGenerator(random_state=cfg.seed)
                space = param_space(cfg)
            else:
                # No ConcurrencyLimiter: the scheduler bounds concurrency (hpo_node.integrations.ray_search)
                search_alg = build_searcher(cfg, scheduler)
                space = fixed_param_space(cfg)
            tuner = tune.Tuner(
                trainable,
                param_space=space,
                tune_config=tune.TuneConfig(
                    scheduler=scheduler,
                    search_alg=search_alg,
                    num_samples=n,
                    time_budget_s=cfg.time_budget_s,
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name=cfg.name,
                    storage_path=str(storage),
                    verbose=0,
                    callbacks=[
                        SchedulerStateCallback(scheduler),
                        ProgressCallback(scheduler, progress_every_s, stream),
                        *(c if isinstance(c, Callback) else c(scheduler) for c in callbacks),
                    ],
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                    # a failed trial is restarted from its last checkpoint (twice at most)
                    failure_config=tune.FailureConfig(max_failures=2),
                ),
            )
        tuner.fit()
        summary = _summary(cfg, scheduler, time.monotonic() - t0, address, experiment)
        write_outputs(cfg, scheduler, summary)
    finally:
        if started_ray:
            ray.shutdown()
        if child is not None:
            code = child.stop()
            print(f"qpu-gateway stopped (exit {code})", file=out, flush=True)
    _print_summary(summary, study_dir, out)
    best = scheduler.best()
    return StudyResult(
        study_dir, summary, scheduler,
        best_config=None if best is None else dict(scheduler.records[best[0]].config),
        best_value=None if best is None else best[1],
        trials=trial_rows(scheduler, cfg),
    )


def optimize(
    trainable: Callable[..., Any] | None,
    study: str | Path | Mapping[str, Any],
    *,
    overrides: Mapping[str, Any] | None = None,
    gateway: str | None = None,
    ray_address: str | None = None,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    progress_every_s: float = 5.0,
) -> StudyResult:
    """Run a study from Python: what ``hpo-node run`` does, with ``trainable`` given from code.

    ``trainable``: a Ray Tune function trainable (``def train(config): ... tune.report(...)``),
    or ``None`` for the TOML's ``[trainable] function`` (default: the digits trainable).
    ``study``: a study TOML file or the same document as a dict (``{"study": {...}, "space":
    {...}, ...}``); ``overrides``: ``{"section.key": value}`` as ``--set``. Returns the
    :class:`StudyResult` (best config, per-trial rows, the output folder).
    """
    if isinstance(study, str | Path):
        cfg = load_study(study, overrides, trainable=trainable)
    elif isinstance(study, Mapping):
        doc = {k: dict(v) if isinstance(v, Mapping) else v for k, v in study.items()}
        for dotted, value in (overrides or {}).items():
            section, _, key = dotted.partition(".")
            doc.setdefault(section, {})[key] = value
        cfg = study_from_dict(doc, trainable=trainable)
    else:
        raise TypeError(f"study must be a TOML path or a dict, got {type(study).__name__}")
    return run_study(cfg, gateway=gateway, ray_address=ray_address, resume=resume,
                     callbacks=callbacks, progress_every_s=progress_every_s)


def _print_summary(summary: dict[str, Any], study_dir: Path, out: Any) -> None:
    by = summary["trials_by_decision"]
    print(f"\nepochs used: {summary['epochs_used']} "
          f"(every trial to R would be {summary['epochs_if_every_trial_ran_to_R']}); "
          f"trials: " + ", ".join(f"{k} {v}" for k, v in sorted(by.items())), file=out)
    if summary["best"] is not None:
        print(f"best: {summary['best']}", file=out)
    if summary["predictor"] is not None:
        p = summary["predictor"]
        print(f"predictor: {p['decisions_with_prediction']} decisions with a prediction, "
              f"{p['decisions_without_prediction']} without (outages {p['outages']})", file=out)
    print(f"wrote {study_dir}/trials.csv, best.json, curves.png, summary.json "
          f"in {summary['wall_seconds']:.1f} s", file=out, flush=True)


# ---------------------------------------------------------------------------------------------
# Command line


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"--set must be SECTION.KEY=VALUE, got {item!r}")
        try:
            out[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = value
    return out


def add_run_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``run`` to an ``argparse`` subparsers object (``hpo-node run CONFIG ...``)."""
    p = subparsers.add_parser("run", help="run an HPO study (TOML) on Ray Tune",
                              description="Run an HPO study on Ray Tune with the gateway.")
    _fill_run_parser(p)
    return p


def _fill_run_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, help="study TOML file (e.g. examples/digits.toml)")
    p.add_argument("--gateway", default=None, metavar="HOST:PORT",
                   help="use this running gateway instead of starting one")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="connect to this Ray cluster instead of starting a local Ray")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted study from its Ray experiment directory")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config entry, e.g. --set study.seed=1 (repeatable)")
    p.add_argument("--progress-every", type=float, default=5.0, metavar="SECONDS",
                   help="seconds between progress lines (default 5)")


def run_main(argv: Sequence[str] | None = None) -> int:
    """``hpo-node run``: parse ``argv`` (without the ``run`` word), run, return an exit code."""
    parser = argparse.ArgumentParser(prog="hpo-node run",
                                     description="Run an HPO study on Ray Tune with the gateway.")
    _fill_run_parser(parser)
    args = parser.parse_args(argv)
    return run_args(args)


def run_args(args: argparse.Namespace) -> int:
    """Run from parsed ``hpo-node run`` arguments (what ``cli.py`` calls)."""
    try:
        cfg = load_study(args.config, _parse_set(args.set))
        run_study(cfg, gateway=args.gateway, ray_address=args.ray_address, resume=args.resume,
                  progress_every_s=args.progress_every)
    except (ValueError, TypeError, FileNotFoundError, tomllib.TOMLDecodeError) as exc:
        print(f"hpo-node run: error: {exc}", file=sys.stderr)
        return 2
    return 0
