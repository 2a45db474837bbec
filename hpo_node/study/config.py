"""Study configuration: the TOML document, validated into a :class:`StudyConfig`."""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from hpo_node.algorithms import RAY_ALGORITHMS, get_algorithm
from hpo_node.core import check_choice, check_float, check_int, did_you_mean
from hpo_node.space import Space

PREDICTOR_KINDS = ("gateway", "svr", "qsvr")
# How to reach a secured gateway: token_env names the environment variable holding the token.
GATEWAY_CONNECTION_KEYS = ("token_env", "tls_ca", "tls_cert", "tls_key")
_SECTIONS = ("study", "algorithm", "predictor", "gateway", "resources", "trainable", "space")
# Ray's experiment storage, relative to the study's folder (<output_dir>/<name>/ray by default)
DEFAULT_STORAGE = "ray"
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_storage_uri(storage: str) -> bool:
    """``storage`` is a URI (``scheme://...``, e.g. ``s3://bucket/prefix``), not a local path."""
    return _URI.match(storage) is not None


def join_storage(storage: str, name: str) -> str:
    """``storage``/``name`` for a local path or a URI (a URI's ``?query`` stays at the end)."""
    if not is_storage_uri(storage):
        return str(Path(storage) / name)
    base, sep, query = storage.partition("?")
    return f"{base}{'' if base.endswith('/') else '/'}{name}{sep}{query}"


_SECRET_QUERY = re.compile(r"(?i)([?&](?:secret_key|session_token)=)[^&#]*")


def redact_storage(storage: str) -> str:
    """``storage`` for printing and ``summary.json``: a URI's ``secret_key`` and
    ``session_token`` query values replaced by ``***`` (prefer the environment for those)."""
    return _SECRET_QUERY.sub(r"\1***", storage) if is_storage_uri(storage) else storage


def check_storage(value: Any) -> str:
    """``study.storage``: a non-empty local path or a ``scheme://...`` URI (Ray's
    ``storage_path``); ``TypeError``/``ValueError`` naming the key otherwise."""
    if not isinstance(value, str):
        raise TypeError(
            f"study.storage must be a string (a local path or a URI such as s3://bucket/prefix), "
            f"got {type(value).__name__} {value!r}"
        )
    if not value.strip():
        raise ValueError(
            f"study.storage must be a non-empty local path or URI (s3://bucket/prefix), "
            f"got {value!r}"
        )
    if "://" in value:
        if not is_storage_uri(value):
            raise ValueError(
                f"study.storage must be a local path or a URI scheme://location with a scheme of "
                f"letters, digits, '+', '.', '-' (s3://bucket/prefix), got {value!r}"
            )
        if not value.partition("://")[2].strip("/"):
            raise ValueError(
                f"study.storage must name a location after the URI's scheme:// "
                f"(s3://bucket/prefix, file:///abs/path), got {value!r}"
            )
    return value


@dataclass(frozen=True)
class StudyConfig:
    """A validated study (see the module docstring for the TOML keys)."""

    name: str
    output_dir: Path
    algorithm: str
    max_resource: int
    eta: int
    space: Space
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
    # what building the study adapted or warns about (hpo_node.study.build.check_study)
    notes: tuple[str, ...] = ()
    # Ray's experiment storage: a local path (relative: to study_dir) or a URI; None: "ray"
    storage: str | None = None

    @property
    def study_dir(self) -> Path:
        """``output_dir / name``."""
        return self.output_dir / self.name

    @property
    def storage_is_uri(self) -> bool:
        """``study.storage`` is a URI (``s3://``, ``gs://``, ``file://``, ...)."""
        return self.storage is not None and is_storage_uri(self.storage)

    @property
    def ray_storage(self) -> str:
        """Ray Tune's ``storage_path``: the URI unchanged, else the absolute local path
        (``study_dir / storage``; default ``study_dir / "ray"``)."""
        storage = self.storage or DEFAULT_STORAGE
        if is_storage_uri(storage):
            return storage
        return str((self.study_dir / storage).resolve())

    @property
    def ray_experiment(self) -> str:
        """Ray's experiment directory (what ``Tuner.restore`` takes): ``ray_storage/name``."""
        return join_storage(self.ray_storage, self.name)

    @property
    def local_storage_dir(self) -> Path | None:
        """The storage as a local folder (a path or a ``file://`` URI), else ``None``."""
        storage = self.ray_storage
        if not is_storage_uri(storage):
            return Path(storage)
        parts = urlsplit(storage)
        if parts.scheme.lower() == "file" and parts.netloc in ("", "localhost"):
            return Path(unquote(parts.path))
        return None

    @property
    def trainable_callable(self) -> Callable[..., Any]:
        """The Ray Tune function trainable: the user's, else the digits one."""
        if self.trainable_fn is not None:
            return self.trainable_fn
        from hpo_node.trainables import train_digits

        return train_digits

    @property
    def uses_predictor(self) -> bool:
        """The algorithm with its params calls a final-loss predictor (the Swift variants, but
        not Swift-ASHA's default gate, whose curve fits need none)."""
        return get_algorithm(self.algorithm).uses_predictor(self.algorithm_params)

    @property
    def fixed_trials(self) -> bool:
        """The algorithm fixes the number of configurations itself (the Hyperband variants)."""
        return get_algorithm(self.algorithm).fixed_trials

    @property
    def needs_gateway(self) -> bool:
        """A Swift algorithm with the gateway predictor."""
        return self.uses_predictor and self.predictor == "gateway"


# Keys a --resume may change: how the study reaches its gateway and machines, not what it does.
RESUME_MAY_CHANGE = ("study.time_budget_s", "study.num_cpus", "predictor.timeout_s",
                     "predictor.retry_after_s", "gateway.*", "resources.*")


def study_identity(cfg: StudyConfig) -> dict[str, Any]:
    """What makes the study the study, by TOML key (JSON values; saved as ``study.json``): a
    ``--resume`` with a config that differs in one of these is refused. Not in it:
    :data:`RESUME_MAY_CHANGE`."""
    import json

    ident = {
        "study.seed": cfg.seed,
        "study.trials": cfg.trials,
        "study.metric": cfg.metric,
        "study.mode": cfg.mode,
        "study.resource_attr": cfg.resource_attr,
        "study.storage": cfg.storage,
        "algorithm.name": cfg.algorithm,
        "algorithm.max_resource": cfg.max_resource,
        "algorithm.eta": cfg.eta,
        "algorithm.params": cfg.algorithm_params,
        "algorithm.searcher": cfg.searcher,
        "algorithm.searcher_params": cfg.searcher_params,
        "predictor.kind": cfg.predictor if cfg.uses_predictor else None,
        "predictor.params": cfg.predictor_params if cfg.uses_predictor else {},
        "trainable": {**cfg.trainable, "function": cfg.function},
        "space": {k: cfg.space[k].spec() for k in cfg.space},
    }
    return json.loads(json.dumps(ident, default=str))


def _section(doc: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, Mapping):
        raise TypeError(f"[{name}] must be a table, got {type(value).__name__}")
    return dict(value)


def _no_extra(section: str, table: Mapping[str, Any], known: Sequence[str],
              more: str = "") -> None:
    """``ValueError`` naming ``[section]``'s keys that are not ``known``, their close matches
    and the known keys (then ``more``)."""
    extra = sorted(set(table) - set(known))
    if extra:
        raise ValueError(f"[{section}] has unknown keys {extra}{did_you_mean(extra, known)}; "
                         f"known: {sorted(known)}{more}")


# After the known keys of [trainable] and [space] when no user trainable is named.
_DIGITS_KEYS = (" (the built-in digits model's keys, as no trainable.function names your own "
                "trainable, function = \"module:callable\", whose [trainable] and [space] may "
                "hold any keys)")


def parse_study(
    doc: Mapping[str, Any],
    base: Path | None = None,
    *,
    trainable: Callable[..., Any] | None = None,
) -> StudyConfig:
    """Validate a parsed TOML document, entry by entry, into a :class:`StudyConfig`
    (:func:`hpo_node.study.study_from_dict` also builds the study's parts once to check them).

    ``base``: the TOML file's folder, where ``[trainable] function``'s module is looked up first.
    ``trainable``: a Ray Tune function trainable given from code (it replaces ``[trainable]
    function``).
    """
    from hpo_node.trainables import DEFAULTS as TRAINABLE_DEFAULTS
    from hpo_node.trainables import load_trainable

    _no_extra("top level", doc, _SECTIONS)
    st = _section(doc, "study")
    _no_extra(
        "study",
        st,
        ("name", "output_dir", "seed", "trials", "time_budget_s", "metric", "mode", "num_cpus",
         "resource_attr", "storage"),
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
    if trainable is not None:
        function = None  # the callable given from code replaces the TOML's name
    if function is not None:
        trainable = load_trainable(function, base, key="trainable.function")
    elif trainable is not None and not callable(trainable):
        raise TypeError(f"trainable must be a callable, got {type(trainable).__name__}")
    space = Space.parse(_section(doc, "space"))
    clash = sorted(set(space) & set(tr))
    if clash:
        raise ValueError(f"keys {clash} are both in [trainable] and [space]; keep one")
    if trainable is None:
        # the digits trainable: its keys only
        _no_extra("trainable", tr, ("function", *TRAINABLE_DEFAULTS), _DIGITS_KEYS)
        _no_extra("space", space, tuple(TRAINABLE_DEFAULTS), _DIGITS_KEYS)
    if "max_epochs" in space or "max_epochs" in tr:
        raise ValueError("max_epochs is set from [algorithm].max_resource; remove it")

    name = st.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"study.name must be letters, digits, '_', '.', '-', got {name!r}")
    out_dir = Path(str(st.get("output_dir", "results")))  # relative to the current directory
    algorithm = check_choice("algorithm.name", al.get("name"), RAY_ALGORITHMS)
    trials = st.get("trials")
    if trials is not None:
        trials = check_int("study.trials", trials, 1)
        algo = get_algorithm(algorithm)
        if algo.fixed_trials:
            max_resource = check_int("algorithm.max_resource", al.get("max_resource"), 1)
            eta = check_int("algorithm.eta", al.get("eta", 3), 2)
            need = algo.trials_needed(max_resource, eta)
            fewer = f", fewer than the {need} its brackets need" if trials < need else ""
            raise ValueError(
                f"study.trials must be omitted for {algorithm}: its brackets (R = {max_resource}, "
                f"eta = {eta}) sample {need} configurations; got {trials}{fewer}"
            )
    budget = st.get("time_budget_s")
    if budget is not None:
        budget = check_float("study.time_budget_s", budget, 0.0, math.inf, low_open=True)
    storage = st.get("storage")
    if storage is not None:
        storage = check_storage(storage)
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
    calls = get_algorithm(algorithm).uses_predictor(params)
    if calls and predictor == "gateway" and gateway == "none":
        raise ValueError(
            "gateway.address must not be 'none' with predictor.kind = 'gateway'; "
            "use predictor.kind = 'svr' to predict in-process"
        )
    token_env = gw.get("token_env")
    if (calls and predictor == "gateway"
            and token_env is not None and not os.environ.get(str(token_env))):
        raise ValueError(
            f"gateway.token_env: environment variable {str(token_env)!r} is not set; export it "
            "with the gateway's token (admin scope: the predictor fits models), or remove "
            "gateway.token_env for a gateway without tokens"
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
        storage=storage,
    )
    return cfg


def _identifier(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _copy_tables(value: Any) -> Any:
    """``value`` with every table (``Mapping``) in it copied to a ``dict``, at any depth."""
    if isinstance(value, Mapping):
        return {k: _copy_tables(v) for k, v in value.items()}
    return value


def _key_path(dotted: str) -> list[str]:
    """The keys of a dotted TOML key, quoted parts kept whole (``space."model.lr".low``)."""
    path: list[str] = []
    try:
        node: Any = tomllib.loads(f"{dotted} = 0")
    except (tomllib.TOMLDecodeError, TypeError):
        node = None
    while isinstance(node, dict) and len(node) == 1:
        key, node = next(iter(node.items()))
        path.append(key)
    if node != 0 or len(path) < 2 or not all(path):
        raise ValueError(f"override must be SECTION.KEY=VALUE (or SECTION.TABLE.KEY=VALUE), "
                         f"got {dotted!r}; quote a key that holds characters other than "
                         f"letters, digits, '_' and '-' (trainable.\"model.lr\"=0.01)")
    return path


def apply_overrides(
    doc: Mapping[str, Any], overrides: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A copy of ``doc`` with ``{"section.key": value}`` entries replaced (``--set``). A longer
    dotted path reaches into nested tables (``"algorithm.params.d"``: ``d`` in ``[algorithm]
    params``, kept with the table's other entries), creating the tables it names that are
    missing; an override applies after those before it (a whole table, then one of its keys)."""
    out: dict[str, Any] = _copy_tables(doc)
    for dotted, value in (overrides or {}).items():
        path = _key_path(dotted)
        table = out
        for depth, key in enumerate(path[:-1], start=1):
            table.setdefault(key, {})
            if not isinstance(table[key], dict):
                where = ".".join(path[:depth])
                shown = f"[{where}]" if depth == 1 else where
                raise TypeError(f"{shown} must be a table to override {dotted!r}, got "
                                f"{table[key]!r}")
            table = table[key]
        table[path[-1]] = _copy_tables(value)
    return out
