"""One search-space spec: a study's ``[space]`` and everything derived from it.

A :class:`Space` maps hyperparameter names to dimensions, parsed and validated once from the TOML
tables (``lr = { type = "loguniform", low = 1e-4, high = 0.3 }``). From it come:

* :meth:`Space.tune_domains`: Ray Tune's ``param_space`` domains (random sampling by Tune);
* :meth:`Space.search_space` and :meth:`Space.to_trial`: the :class:`hpo_node.search.SearchSpace`
  our searchers work on, and their configurations turned back into trial values;
* :meth:`Space.encode`: a trial config as the numeric hyperparameters the core schedulers and their
  predictors see.

Types (the registry :data:`DIMENSIONS`; a new type is one class here):

==========  =====================  ==========================  ===============  =================
type        keys                   Tune domain                 searcher param   encoded as
==========  =====================  ==========================  ===============  =================
loguniform  low > 0, high          ``loguniform``              log ``Float``    ``log10(v)``
uniform     low, high              ``uniform``                 ``Float``        ``v``
quniform    low, high, q > 0       each ``k q`` alike [#]_     ``Int`` over k   ``v``
int         low, high (ints), log  ``randint``/``lograndint``  ``Int``          ``v`` / ``log10``
choice      values (non-empty)     ``choice``                  ``Categorical``  index
==========  =====================  ==========================  ===============  =================

.. [#] ``randint`` for ``q = 1``, ``qrandint`` for other integer ``q``; Ray's ``quniform``
   beyond 10 000 multiples of a fractional ``q`` (its end values have half the weight).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from hpo_node.core import did_you_mean
from hpo_node.search import Categorical, Float, Int, Param, SearchSpace


def _number(where: str, value: Any) -> float:
    if value is None:
        raise ValueError(f"{where} is missing: it must be a number")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{where} must be a number, got {value!r}")
    return float(value)


def _no_extra(where: str, table: Mapping[str, Any], known: tuple[str, ...]) -> None:
    extra = sorted(set(table) - set(known))
    if extra:
        raise ValueError(f"[{where}] has unknown keys {extra}{did_you_mean(extra, known)}; "
                         f"known: {sorted(known)}")


class Dimension(ABC):
    """One hyperparameter's domain. Subclasses are frozen dataclasses registered in
    :data:`DIMENSIONS` under their ``type``."""

    type: ClassVar[str]
    keys: ClassVar[tuple[str, ...]]

    @classmethod
    @abstractmethod
    def parse(cls, where: str, table: Mapping[str, Any]) -> Dimension:
        """Validate the TOML table (``where``: ``space.<name>``, used in messages)."""

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """The normalised TOML table."""

    @abstractmethod
    def tune_domain(self) -> Any:
        """A ``ray.tune`` search domain."""

    @abstractmethod
    def param(self) -> Param:
        """The :mod:`hpo_node.search` parameter."""

    def to_trial(self, value: Any) -> Any:
        """A searcher value as the trial's value."""
        return value

    def encode(self, value: Any) -> float | None:
        """A trial value as a float for the core (``None``: not numeric, left out)."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return None

    @property
    def size(self) -> int | None:
        """Distinct values (``None``: continuous)."""
        return None


@dataclass(frozen=True)
class _Interval(Dimension):
    low: float
    high: float

    keys: ClassVar[tuple[str, ...]] = ("type", "low", "high")

    @classmethod
    def _bounds(cls, where: str, table: Mapping[str, Any]) -> tuple[float, float]:
        _no_extra(where, table, cls.keys)
        low = _number(f"{where}.low", table.get("low"))
        high = _number(f"{where}.high", table.get("high"))
        if not low < high:
            raise ValueError(f"{where}: low must be < high, got low={low}, high={high}")
        return low, high

    def spec(self) -> dict[str, Any]:
        return {"type": self.type, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Uniform(_Interval):
    """Uniform on ``[low, high]``."""

    type: ClassVar[str] = "uniform"

    @classmethod
    def parse(cls, where: str, table: Mapping[str, Any]) -> Uniform:
        return cls(*cls._bounds(where, table))

    def tune_domain(self) -> Any:
        from ray import tune

        return tune.uniform(self.low, self.high)

    def param(self) -> Param:
        return Float(self.low, self.high)


@dataclass(frozen=True)
class LogUniform(_Interval):
    """Log-uniform on ``[low, high]``, ``low > 0``; encoded as ``log10``."""

    type: ClassVar[str] = "loguniform"

    @classmethod
    def parse(cls, where: str, table: Mapping[str, Any]) -> LogUniform:
        low, high = cls._bounds(where, table)
        if low <= 0:
            raise ValueError(f"{where}.low must be > 0 for loguniform, got {low}")
        return cls(low, high)

    def tune_domain(self) -> Any:
        from ray import tune

        return tune.loguniform(self.low, self.high)

    def param(self) -> Param:
        return Float(self.low, self.high, log=True)

    def encode(self, value: Any) -> float | None:
        return math.log10(float(value))


@dataclass(frozen=True)
class QUniform(_Interval):
    """The multiples ``k q`` inside ``[low, high]``; integers when ``q`` is an integer.

    Searchers work on ``k`` (an :class:`Int`, or a one-value :class:`Categorical`)."""

    q: float = 1.0

    type: ClassVar[str] = "quniform"
    keys: ClassVar[tuple[str, ...]] = ("type", "low", "high", "q")

    @classmethod
    def parse(cls, where: str, table: Mapping[str, Any]) -> QUniform:
        low, high = cls._bounds(where, table)
        q = _number(f"{where}.q", table.get("q"))
        if q <= 0:
            raise ValueError(f"{where}.q must be > 0, got {q}")
        out = cls(low, high, q)
        lo, hi = out._k_range
        if hi < lo:
            raise ValueError(
                f"{where}: [low, high] = [{table.get('low')}, {table.get('high')}] must contain a "
                f"multiple of q = {q}"
            )
        return out

    @property
    def _k_range(self) -> tuple[int, int]:
        return (math.ceil(self.low / self.q - 1e-9), math.floor(self.high / self.q + 1e-9))

    @property
    def integral(self) -> bool:
        """Whether the values are integers (``q`` is)."""
        return float(self.q).is_integer()

    @property
    def size(self) -> int | None:
        lo, hi = self._k_range
        return hi - lo + 1

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "q": self.q}

    def tune_domain(self) -> Any:
        """Every multiple equally likely, ``high``'s included: ``randint`` for ``q = 1`` (Ray's
        ``qrandint`` never draws ``high`` there), ``qrandint`` for other integer ``q``, the list
        of multiples for a fractional ``q`` (Ray's ``quniform`` rounds a uniform draw, which gives
        the end values half the weight; kept beyond :data:`_MAX_LISTED` multiples)."""
        from ray import tune

        lo, hi = self._k_range
        q = self.q
        if self.integral:
            if q == 1:
                return tune.randint(lo, hi + 1)
            return tune.qrandint(lo * int(q), hi * int(q), int(q))
        if hi - lo < _MAX_LISTED:
            return tune.choice([self.to_trial(k) for k in range(lo, hi + 1)])
        return tune.quniform(self.to_trial(lo), self.to_trial(hi), q)

    def param(self) -> Param:
        lo, hi = self._k_range
        return Int(lo, hi) if hi > lo else Categorical((lo,))

    def to_trial(self, value: Any) -> Any:
        v = int(value) * self.q
        return round(v) if self.integral else round(v, 12)


_MAX_LISTED = 10_000


@dataclass(frozen=True)
class IntRange(Dimension):
    """The integers ``low..high`` (both included), log-uniform with ``log = true`` (as Optuna's
    ``suggest_int``); encoded as ``v`` (``log10(v)`` with ``log``)."""

    low: int
    high: int
    log: bool = False

    type: ClassVar[str] = "int"
    keys: ClassVar[tuple[str, ...]] = ("type", "low", "high", "log")

    @classmethod
    def parse(cls, where: str, table: Mapping[str, Any]) -> IntRange:
        _no_extra(where, table, cls.keys)
        bounds = []
        for key in ("low", "high"):
            value = table.get(key)
            if value is None:
                raise ValueError(f"{where}.{key} is missing: it must be an integer")
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{where}.{key} must be an integer, got {value!r}")
            bounds.append(value)
        low, high = bounds
        if not low < high:
            raise ValueError(f"{where}: low must be < high, got low={low}, high={high}")
        log = table.get("log", False)
        if not isinstance(log, bool):
            raise TypeError(f"{where}.log must be true or false, got {log!r}")
        if log and low < 1:
            raise ValueError(f"{where}.low must be >= 1 with log = true, got {low}")
        return cls(low, high, log)

    @property
    def size(self) -> int | None:
        return self.high - self.low + 1

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high}
        return {**out, "log": True} if self.log else out

    def tune_domain(self) -> Any:
        from ray import tune

        if self.log:
            return tune.lograndint(self.low, self.high + 1)
        return tune.randint(self.low, self.high + 1)

    def param(self) -> Param:
        return Int(self.low, self.high, log=self.log)

    def to_trial(self, value: Any) -> Any:
        return round(float(value))

    def encode(self, value: Any) -> float | None:
        if self.log and isinstance(value, int | float) and value > 0:
            return math.log10(float(value))
        return super().encode(value)


@dataclass(frozen=True)
class Choice(Dimension):
    """One of ``values``; encoded as the value's index (``-1`` for a value not in the list)."""

    values: tuple[Any, ...]

    type: ClassVar[str] = "choice"
    keys: ClassVar[tuple[str, ...]] = ("type", "values")

    @classmethod
    def parse(cls, where: str, table: Mapping[str, Any]) -> Choice:
        _no_extra(where, table, cls.keys)
        values = table.get("values")
        if not isinstance(values, list | tuple) or not values:
            raise ValueError(f"{where}.values must be a non-empty list, got {values!r}")
        return cls(tuple(values))

    @property
    def size(self) -> int | None:
        return len(self.values)

    def spec(self) -> dict[str, Any]:
        return {"type": self.type, "values": list(self.values)}

    def tune_domain(self) -> Any:
        from ray import tune

        return tune.choice(list(self.values))

    def param(self) -> Param:
        return Categorical(tuple(self.values))

    def encode(self, value: Any) -> float | None:
        return float(self.values.index(value)) if value in self.values else -1.0


DIMENSIONS: dict[str, type[Dimension]] = {
    d.type: d for d in (LogUniform, Uniform, QUniform, IntRange, Choice)
}
SPACE_TYPES = tuple(DIMENSIONS)


class Space(Mapping[str, Dimension]):
    """A validated search space: ``name -> Dimension`` in declaration order (see the module doc).

    Picklable; :meth:`encode` is what the Ray schedulers get as ``hparams``.
    """

    def __init__(self, dims: Mapping[str, Dimension]) -> None:
        for name, dim in dims.items():
            if not isinstance(dim, Dimension):
                raise TypeError(f"space.{name} must be a Dimension, got {type(dim).__name__}")
        self._dims = dict(dims)

    @classmethod
    def parse(cls, tables: Mapping[str, Any]) -> Space:
        """``[space]`` as parsed from TOML: every entry a table with a ``type`` of
        :data:`SPACE_TYPES`. ``ValueError``/``TypeError`` name the entry (``space.lr.low ...``)."""
        if isinstance(tables, Space):
            return tables
        if not tables:
            raise ValueError("[space] must define at least one hyperparameter, got none")
        dims: dict[str, Dimension] = {}
        for name, table in tables.items():
            where = f"space.{name}"
            if not isinstance(table, Mapping):
                raise TypeError(
                    f"{where} must be a table like {{ type = \"uniform\", ... }}, got {table!r}"
                )
            kind = table.get("type")
            if kind is None:
                raise ValueError(
                    f"{where}.type is missing: it must be one of {', '.join(map(repr, SPACE_TYPES))}"
                )
            if kind not in DIMENSIONS:
                raise ValueError(
                    f"{where}.type must be one of {', '.join(map(repr, SPACE_TYPES))}, got {kind!r}"
                )
            dims[str(name)] = DIMENSIONS[kind].parse(where, table)
        return cls(dims)

    def __getitem__(self, name: str) -> Dimension:
        return self._dims[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dims)

    def __len__(self) -> int:
        return len(self._dims)

    def __repr__(self) -> str:
        return f"Space({self._dims!r})"

    def spec(self) -> dict[str, dict[str, Any]]:
        """The normalised ``[space]`` tables."""
        return {name: d.spec() for name, d in self._dims.items()}

    @property
    def size(self) -> int | None:
        """Distinct configurations (``None`` when a dimension is continuous)."""
        out = 1
        for d in self._dims.values():
            if d.size is None:
                return None
            out *= d.size
        return out

    def tune_domains(self) -> dict[str, Any]:
        """Ray Tune ``param_space`` entries, one domain per dimension."""
        return {name: d.tune_domain() for name, d in self._dims.items()}

    def search_space(self) -> SearchSpace:
        """The :class:`hpo_node.search.SearchSpace` of our searchers."""
        return SearchSpace({name: d.param() for name, d in self._dims.items()})

    def to_trial(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """A searcher configuration as trial values (other entries unchanged)."""
        out = dict(config)
        for name, d in self._dims.items():
            if name in out:
                out[name] = d.to_trial(out[name])
        return out

    def encode(self, config: Mapping[str, Any]) -> dict[str, float]:
        """A trial config as numeric hyperparameters (this space's entries only)."""
        out: dict[str, float] = {}
        for name, d in self._dims.items():
            if name in config:
                v = d.encode(config[name])
                if v is not None:
                    out[name] = v
        return out
