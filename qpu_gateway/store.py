"""SQLite model store: versioned, atomic, survives restarts.

One row per (model_id, version) holding the model's metadata and its versioned state dict, both
as JSON (no pickles). Each write is one transaction in WAL mode with ``synchronous=FULL``: a crash
at any moment leaves either the whole new version or none of it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from qpu_gateway.errors import ModelNotFoundError

__all__ = ["SCHEMA_VERSION", "ModelStore", "StoredModel"]

SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    model_id   TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    created_at REAL    NOT NULL,
    info       TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    PRIMARY KEY (model_id, version)
);
"""


@dataclass(frozen=True)
class StoredModel:
    """One stored version. ``state`` is ``None`` when only metadata was read."""

    model_id: str
    version: int
    created_at: float
    info: dict[str, Any]
    state: dict[str, Any] | None = None


class ModelStore:
    """Thread-safe store of model versions in one SQLite file (``":memory:"`` for tests)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=10000")
        with self._lock:
            self._conn.executescript(_SCHEMA)
            row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                self._conn.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
            elif int(row[0]) != SCHEMA_VERSION:
                self._conn.close()
                raise RuntimeError(
                    f"store {self.path} has schema version {row[0]}, this gateway reads {SCHEMA_VERSION}"
                )

    def put(
        self, model_id: str, info: dict[str, Any], state: dict[str, Any], created_at: float
    ) -> int:
        """Store a new version of ``model_id`` atomically; returns its version (1, 2, ...)."""
        info_json = json.dumps(info, allow_nan=False)
        state_json = json.dumps(state, allow_nan=False)
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                (latest,) = self._conn.execute(
                    "SELECT COALESCE(MAX(version), 0) FROM models WHERE model_id = ?", (model_id,)
                ).fetchone()
                version = int(latest) + 1
                self._conn.execute(
                    "INSERT INTO models VALUES (?, ?, ?, ?, ?)",
                    (model_id, version, created_at, info_json, state_json),
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        return version

    def get(self, model_id: str, version: int | None = None, *, with_state: bool = True) -> StoredModel:
        """One version (the latest when ``version`` is None); ``ModelNotFoundError`` if absent."""
        cols = "model_id, version, created_at, info" + (", state" if with_state else "")
        if version is None:
            sql = f"SELECT {cols} FROM models WHERE model_id = ? ORDER BY version DESC LIMIT 1"
            args: tuple[Any, ...] = (model_id,)
        else:
            sql = f"SELECT {cols} FROM models WHERE model_id = ? AND version = ?"
            args = (model_id, version)
        with self._lock:
            row = self._conn.execute(sql, args).fetchone()
        if row is None:
            what = f"model {model_id!r}" + ("" if version is None else f" version {version}")
            raise ModelNotFoundError(f"{what} not found")
        return _row_to_model(row)

    def latest_version(self, model_id: str) -> int:
        """Latest version number of ``model_id``; ``ModelNotFoundError`` if it has none."""
        with self._lock:
            (v,) = self._conn.execute(
                "SELECT MAX(version) FROM models WHERE model_id = ?", (model_id,)
            ).fetchone()
        if v is None:
            raise ModelNotFoundError(f"model {model_id!r} not found")
        return int(v)

    def list(
        self, model_id: str | None = None, *, limit: int | None = None, after: str | int | None = None
    ) -> list[StoredModel]:
        """Metadata of the latest version of every model (ordered by model_id), or of every
        version of one model (ordered by version); at most ``limit`` rows after the key ``after``
        (a model_id, or a version), for keyset pagination."""
        if model_id:
            sql = (
                "SELECT model_id, version, created_at, info FROM models WHERE model_id = ? "
                "AND version > ? ORDER BY version"
            )
            args: tuple[Any, ...] = (model_id, int(after or 0))
        else:
            sql = (
                "SELECT m.model_id, m.version, m.created_at, m.info FROM models m "
                "JOIN (SELECT model_id, MAX(version) AS v FROM models GROUP BY model_id) l "
                "ON m.model_id = l.model_id AND m.version = l.v WHERE m.model_id > ? "
                "ORDER BY m.model_id"
            )
            args = ("" if after is None else str(after),)
        if limit is not None:
            sql += " LIMIT ?"
            args += (int(limit),)
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [_row_to_model(r) for r in rows]

    def delete(self, model_id: str) -> int:
        """Delete every version of ``model_id``; returns how many (``ModelNotFoundError`` if 0)."""
        with self._lock:
            cur = self._conn.execute("DELETE FROM models WHERE model_id = ?", (model_id,))
        if cur.rowcount == 0:
            raise ModelNotFoundError(f"model {model_id!r} not found")
        return int(cur.rowcount)

    def count(self) -> int:
        """Number of stored versions."""
        with self._lock:
            (n,) = self._conn.execute("SELECT COUNT(*) FROM models").fetchone()
        return int(n)

    def close(self) -> None:
        """Checkpoint the WAL and close the connection; the store is unusable afterwards."""
        with self._lock:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._conn.close()


def _row_to_model(row: tuple[Any, ...]) -> StoredModel:
    return StoredModel(
        model_id=row[0],
        version=int(row[1]),
        created_at=float(row[2]),
        info=json.loads(row[3]),
        state=json.loads(row[4]) if len(row) > 4 else None,
    )
