"""The gateway's layers (qpu_gateway/__init__.py): domain, service, transport, each importing only
from the layers above it, so the domain stays free of storage and gRPC."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "qpu_gateway"
LAYERS = {
    "domain": {"qubo", "ensemble", "qsvr", "seeds"},
    "service": {"service", "store", "breaker", "execution", "backends"},
    "transport": {"server", "convert", "auth", "error_details", "reflection", "client"},
}
CROSS_CUTTING = {"errors", "redact", "observability"}
ALLOWED = {
    "domain": LAYERS["domain"],
    "service": LAYERS["domain"] | LAYERS["service"],
    "transport": LAYERS["domain"] | LAYERS["service"] | LAYERS["transport"] | {"v1"},
}


def _layer(module: str) -> str | None:
    return next((name for name, members in LAYERS.items() if module in members), None)


def _imported(path: Path) -> set[str]:
    """First component under ``qpu_gateway`` of every module ``path`` imports: absolute
    (``qpu_gateway.store``), from the package (``from qpu_gateway import store``) or relative
    (``from .store import X``, ``from . import store``, ``from ..errors import X``)."""
    package = ["qpu_gateway", *path.relative_to(PACKAGE).parts[:-1]]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            base = node.module.split(".") if node.module else []
            if node.level:
                base = package[: len(package) - node.level + 1] + base
            names = [".".join([*base, a.name]) for a in node.names] if len(base) == 1 else [
                ".".join(base)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "qpu_gateway" and len(parts) > 1:
                out.add(parts[1])
    return out


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).parts
        if rel[0] == "v1":
            continue
        top = rel[0].removesuffix(".py")
        if _layer(top) is not None:
            out.append((top, path))
    return out


def test_layout_every_gateway_module_has_a_layer() -> None:
    known = set().union(*LAYERS.values()) | CROSS_CUTTING | {"config", "cli", "process", "__init__",
                                                              "__main__", "v1"}
    present = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.glob("*")
               if p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())}
    assert present <= known, f"modules without a layer in tests/test_layout.py: {sorted(present - known)}"


@pytest.mark.parametrize(("top", "path"), _modules(), ids=lambda v: str(v))
def test_layout_modules_import_only_from_their_layer_or_above(top: str, path: Path) -> None:
    layer = _layer(top)
    assert layer is not None
    wrong = _imported(path) - ALLOWED[layer] - CROSS_CUTTING
    assert not wrong, f"{path.relative_to(PACKAGE.parent)} ({layer}) imports {sorted(wrong)}"
