"""SQLite model store: versions, persistence, atomicity."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from qpu_gateway.errors import ModelNotFoundError
from qpu_gateway.store import ModelStore


def test_store_versions_increase_and_latest_is_default(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "m.sqlite")
    assert store.put("a", {"n": 1}, {"s": 1}, 1.0) == 1
    assert store.put("a", {"n": 2}, {"s": 2}, 2.0) == 2
    assert store.put("b", {"n": 3}, {"s": 3}, 3.0) == 1
    assert store.get("a").version == 2 and store.get("a").state == {"s": 2}
    assert store.get("a", 1).info == {"n": 1}
    assert store.get("a", with_state=False).state is None
    assert [m.version for m in store.list("a")] == [1, 2]
    assert [(m.model_id, m.version) for m in store.list()] == [("a", 2), ("b", 1)]


def test_store_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    store = ModelStore(path)
    store.put("a", {"n": 1}, {"w": [1.5, 2.5]}, 1.0)
    store.close()
    again = ModelStore(path)
    assert again.get("a").state == {"w": [1.5, 2.5]}


def test_store_delete_removes_every_version(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "m.sqlite")
    store.put("a", {}, {}, 1.0)
    store.put("a", {}, {}, 2.0)
    assert store.delete("a") == 2
    with pytest.raises(ModelNotFoundError):
        store.get("a")
    with pytest.raises(ModelNotFoundError):
        store.delete("a")


def test_store_missing_version_raises_not_found(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "m.sqlite")
    store.put("a", {}, {}, 1.0)
    with pytest.raises(ModelNotFoundError, match="version 7"):
        store.get("a", 7)
    with pytest.raises(ModelNotFoundError):
        store.latest_version("zzz")


def test_store_failed_write_leaves_nothing(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "m.sqlite")
    store.put("a", {}, {"ok": 1}, 1.0)
    with pytest.raises(ValueError):
        store.put("a", {}, {"bad": float("nan")}, 2.0)
    assert store.count() == 1 and store.latest_version("a") == 1


def test_store_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    ModelStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(RuntimeError, match="schema version 99"):
        ModelStore(path)
