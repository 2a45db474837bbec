"""Loading a study: a TOML file or document, validated and checked by building its parts once."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hpo_node.study.build import check_study
from hpo_node.study.config import StudyConfig, apply_overrides, parse_study


def study_from_dict(
    doc: Mapping[str, Any],
    base: Path | None = None,
    *,
    trainable: Callable[..., Any] | None = None,
) -> StudyConfig:
    """Build and validate a :class:`StudyConfig` from a parsed TOML document
    (:func:`hpo_node.study.config.parse_study`), then build its scheduler and searcher once so
    that bad algorithm or searcher options fail before anything starts.

    ``base``: the TOML file's folder, where ``[trainable] function``'s module is looked up first.
    ``trainable``: a Ray Tune function trainable given from code (it replaces ``[trainable]
    function``).
    """
    return check_study(parse_study(doc, base, trainable=trainable))


def load_study(
    path: str | Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    trainable: Callable[..., Any] | None = None,
) -> StudyConfig:
    """Read a study TOML file; ``overrides`` (``"section.key": value``, or a longer path into a
    table: ``"algorithm.params.d"``) replace entries.
    A TOML syntax error is a ``ValueError`` that names the file.

    ``[trainable] function``'s module is looked up first in the file's folder; ``trainable``
    gives the function from code instead.
    """
    p = Path(path)
    with open(p, "rb") as fh:
        try:
            doc = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{p}: {exc}") from None
    return study_from_dict(apply_overrides(doc, overrides), p.resolve().parent,
                           trainable=trainable)


