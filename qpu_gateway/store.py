"""SQLite model store: versioned, atomic, survives restarts, one server at a time.

One row per (model_id, version) holding the model's metadata and its versioned state dict, both
as JSON (no pickles). Each write is one transaction in WAL mode with ``synchronous=FULL``: a crash
at any moment leaves either the whole new version or none of it.

- Version numbers are never reused: a per-model high-water mark survives ``delete``, so after a
  delete-then-refit ``version=1`` can never name another model than the one it named before.
- An idempotency key recorded with a version makes a retried Fit return that version.
- Reads use their own connection per thread (WAL readers never wait for a writer, not even an
  outside process holding the write lock); writes wait at most ``busy_timeout`` seconds.
- A file store is locked (``fcntl.flock`` on ``<store>.lock``) for the lifetime of the
  :class:`ModelStore`: a second server on the same file gets :class:`StoreError` at once. The
  lock file is left in place by :meth:`ModelStore.close` (the lock is the ``flock``, released
  with it; deleting the file could race a server opening it).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from qpu_gateway.errors import ModelNotFoundError, StoreBusyError

__all__ = ["SCHEMA_VERSION", "ModelStore", "StoreError", "StoredModel"]

log = logging.getLogger("qpu_gateway.store")

SCHEMA_VERSION: Final = 2

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
CREATE TABLE IF NOT EXISTS last_version (
    model_id TEXT PRIMARY KEY,
    version  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    key          TEXT PRIMARY KEY,
    request_hash TEXT    NOT NULL,
    model_id     TEXT    NOT NULL,
    version      INTEGER NOT NULL
);
"""
# Schema 1 had no high-water marks: seed them from the versions present.
_MIGRATE_1_TO_2: Final = """
INSERT OR IGNORE INTO last_version SELECT model_id, MAX(version) FROM models GROUP BY model_id;
"""


class StoreError(OSError):
    """The store cannot be used: locked by another server, corrupt, unwritable or too new."""


@dataclass(frozen=True)
class StoredModel:
    """One stored version. ``state`` is ``None`` when only metadata was read."""

    model_id: str
    version: int
    created_at: float
    info: dict[str, Any]
    state: dict[str, Any] | None = None


class ModelStore:
    """Thread-safe store of model versions in one SQLite file (``":memory:"`` for tests).

    Parameters
    ----------
    path : the SQLite file, or ``":memory:"``.
    busy_timeout : seconds a write waits for another process's write lock before failing.
    min_free_bytes : :meth:`check` reports the store full below this much free disk space.

    ``created`` is True when this store created its file (a new store; :meth:`discard` deletes it
    again, e.g. when the server's start failed). An open that fails deletes the file it created.
    """

    def __init__(
        self, path: str | Path, *, busy_timeout: float = 5.0, min_free_bytes: int = 16 * 2**20
    ) -> None:
        self.path = str(path)
        self.busy_timeout = float(busy_timeout)
        self.min_free_bytes = int(min_free_bytes)
        self._memory = self.path == ":memory:"
        self.created = False
        self._lock_fd: int | None = None
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        if not self._memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = _lock_file(Path(self.path + ".lock"), self.path)
            # a new store is readable by its owner only (it holds users' training data; SQLite
            # gives its -wal and -shm files the same mode)
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                self.created = True
            except FileExistsError:
                pass
            except BaseException:
                self._release_lock()
                raise
        conn: sqlite3.Connection | None = None
        try:
            self._conn = conn = self._connect()
            with self._write_lock:
                self._migrate()
            if not self._memory:
                problem = self._integrity_problem(self._conn)
                if problem:
                    raise StoreError(f"store {self.path} is corrupt ({problem}); restore it from a "
                                     "backup or move it away")
        except sqlite3.DatabaseError as exc:
            self._abandon(conn)
            raise StoreError(f"store {self.path} cannot be opened: {exc}") from exc
        except BaseException:
            self._abandon(conn)
            raise

    def _abandon(self, conn: sqlite3.Connection | None) -> None:
        """After a failed open: close ``conn``, delete the file if this open created it, release
        the lock. A failure to delete is logged, not raised: the open's own error is the one to
        report."""
        try:
            if conn is not None:
                conn.close()
            if self.created:
                self._remove_files()
        except (OSError, sqlite3.Error) as exc:
            log.warning("after the failed open of store %s: %s", self.path, exc)
        finally:
            self._release_lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                               timeout=self.busy_timeout)
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        if not self._memory:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        return conn

    def _migrate(self) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                conn.execute(_MIGRATE_1_TO_2)
                conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) == 1:
                conn.execute(_MIGRATE_1_TO_2)
                conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                             (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(
                    f"store {self.path} has schema version {row[0]}, this gateway reads "
                    f"{SCHEMA_VERSION} (and migrates 1)"
                )
        except BaseException:
            conn.execute("ROLLBACK")
            conn.close()
            raise
        conn.execute("COMMIT")

    @staticmethod
    def _integrity_problem(conn: sqlite3.Connection) -> str:
        rows = conn.execute("PRAGMA quick_check").fetchall()
        text = "; ".join(str(r[0]) for r in rows[:3])
        return "" if text == "ok" else text

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection (the write connection for an in-memory store)."""
        if self._memory:
            return self._conn
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self._memory:
            with self._write_lock:
                return self._conn.execute(sql, args).fetchall()
        return self._reader().execute(sql, args).fetchall()

    def put(
        self, model_id: str, info: dict[str, Any], state: dict[str, Any], created_at: float
    ) -> int:
        """Store a new version of ``model_id`` atomically; returns its version. Versions count
        up from the highest ``model_id`` ever had, deleted ones included."""
        return self._put(model_id, info, state, created_at, None)[1]

    def put_idempotent(
        self,
        key: str,
        request_hash: str,
        model_id: str,
        info: dict[str, Any],
        state: dict[str, Any],
        created_at: float,
    ) -> tuple[str, int, bool]:
        """Like :meth:`put`, once per idempotency ``key``: returns ``(model_id, version, stored)``.

        When ``key`` is already stored, nothing is written and its ``(model_id, version, False)``
        is returned; ``ValueError`` when that version came from a request of another hash.
        """
        return self._put(model_id, info, state, created_at, (key, request_hash))

    def _put(
        self,
        model_id: str,
        info: dict[str, Any],
        state: dict[str, Any],
        created_at: float,
        idempotency: tuple[str, str] | None,
    ) -> tuple[str, int, bool]:
        info_json = json.dumps(info, allow_nan=False)
        state_json = json.dumps(state, allow_nan=False)
        with self._write_lock:
            conn = self._conn
            self._begin(conn)
            try:
                if idempotency is not None:
                    prior = self._find_key(conn, idempotency[0])
                    if prior is not None:
                        _check_same_request(idempotency[0], prior[0], idempotency[1])
                        conn.execute("ROLLBACK")
                        return prior[1], prior[2], False
                (last,) = conn.execute(
                    "SELECT MAX(COALESCE((SELECT version FROM last_version WHERE model_id = ?), 0),"
                    " COALESCE((SELECT MAX(version) FROM models WHERE model_id = ?), 0))",
                    (model_id, model_id),
                ).fetchone()
                version = int(last) + 1
                conn.execute(
                    "INSERT INTO models VALUES (?, ?, ?, ?, ?)",
                    (model_id, version, created_at, info_json, state_json),
                )
                conn.execute("INSERT OR REPLACE INTO last_version VALUES (?, ?)", (model_id, version))
                if idempotency is not None:
                    conn.execute("INSERT INTO idempotency VALUES (?, ?, ?, ?)",
                                 (idempotency[0], idempotency[1], model_id, version))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return model_id, version, True

    def _begin(self, conn: sqlite3.Connection) -> None:
        """Start a write transaction; ``StoreBusyError`` when another process held the write lock
        for longer than ``busy_timeout``."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreBusyError(
                    f"the model store was locked by another process for more than "
                    f"{self.busy_timeout:g} s; nothing was written, retry later"
                ) from exc
            raise

    @staticmethod
    def _find_key(conn: sqlite3.Connection, key: str) -> tuple[str, str, int] | None:
        row = conn.execute(
            "SELECT request_hash, model_id, version FROM idempotency WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]), int(row[2]))

    def find_idempotent(self, key: str, request_hash: str) -> tuple[str, int] | None:
        """``(model_id, version)`` stored under idempotency ``key``, or None; ``ValueError`` when
        the key was used with a request of another hash."""
        rows = self._read("SELECT request_hash, model_id, version FROM idempotency WHERE key = ?",
                          (key,))
        if not rows:
            return None
        _check_same_request(key, str(rows[0][0]), request_hash)
        return str(rows[0][1]), int(rows[0][2])

    def get(self, model_id: str, version: int | None = None, *, with_state: bool = True) -> StoredModel:
        """One version (the latest when ``version`` is None); ``ModelNotFoundError`` if absent."""
        cols = "model_id, version, created_at, info" + (", state" if with_state else "")
        if version is None:
            sql = f"SELECT {cols} FROM models WHERE model_id = ? ORDER BY version DESC LIMIT 1"
            args: tuple[Any, ...] = (model_id,)
        else:
            sql = f"SELECT {cols} FROM models WHERE model_id = ? AND version = ?"
            args = (model_id, version)
        rows = self._read(sql, args)
        if not rows:
            what = f"model {model_id!r}" + ("" if version is None else f" version {version}")
            raise ModelNotFoundError(f"{what} not found")
        return _row_to_model(rows[0])

    def latest_version(self, model_id: str) -> int:
        """Latest version number of ``model_id``; ``ModelNotFoundError`` if it has none."""
        ((v,),) = self._read("SELECT MAX(version) FROM models WHERE model_id = ?", (model_id,))
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
        return [_row_to_model(r) for r in self._read(sql, args)]

    def delete(self, model_id: str) -> int:
        """Delete every version of ``model_id`` (and its idempotency keys); returns how many
        (``ModelNotFoundError`` if 0). Its version numbers stay used."""
        with self._write_lock:
            conn = self._conn
            self._begin(conn)
            try:
                cur = conn.execute("DELETE FROM models WHERE model_id = ?", (model_id,))
                conn.execute("DELETE FROM idempotency WHERE model_id = ?", (model_id,))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        if cur.rowcount == 0:
            raise ModelNotFoundError(f"model {model_id!r} not found")
        return int(cur.rowcount)

    def count(self) -> int:
        """Number of stored versions."""
        ((n,),) = self._read("SELECT COUNT(*) FROM models", ())
        return int(n)

    def check(self) -> str:
        """What keeps the store from serving ("" when nothing does): the file is unwritable,
        full (less than ``min_free_bytes`` free) or corrupt. Opens a fresh connection, writes one
        row and runs ``quick_check``; another process merely holding the write lock is not a
        problem."""
        if self._memory:
            return ""
        try:
            fs = os.statvfs(Path(self.path).parent)
        except OSError as exc:
            return f"cannot stat its file system: {exc}"
        free = fs.f_bavail * fs.f_frsize
        if free < self.min_free_bytes:
            return f"full: {free} bytes free on its file system, below {self.min_free_bytes}"
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=1.0)
        except sqlite3.Error as exc:
            return f"cannot open: {exc}"
        try:
            problem = self._integrity_problem(conn)
            if problem:
                return f"corrupt: {problem}"
            try:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('health_probe', strftime('%s'))")
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    return ""
                return f"not writable: {exc}"
            return ""
        except sqlite3.DatabaseError as exc:
            return f"corrupt: {exc}"
        finally:
            conn.close()

    def close(self) -> None:
        """Checkpoint the WAL, close the connections and release the lock; the store is
        unusable afterwards."""
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._write_lock:
            try:
                if not self._memory:
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._conn.close()
                self._release_lock()

    def discard(self) -> None:
        """Close the store and delete its files (the database, ``-wal``, ``-shm`` and the lock),
        deleted while the lock is still held, so that no other server can open it in between (a
        server whose start failed removes the store it had just created). ``StoreError`` naming
        the files that could not be deleted, after trying every one; the lock is released."""
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._write_lock:
            try:
                self._conn.close()
                if not self._memory:
                    self._remove_files()
            finally:
                self._release_lock()

    def _remove_files(self) -> None:
        """Delete the store's files, the lock file last; ``StoreError`` naming those that could
        not be deleted, after trying every one."""
        failed = []
        for suffix in ("", "-wal", "-shm", ".lock"):
            try:
                Path(self.path + suffix).unlink(missing_ok=True)
            except OSError as exc:
                failed.append(f"{self.path}{suffix} ({exc.strerror or exc})")
        if failed:
            raise StoreError(f"store {self.path}: could not delete {', '.join(failed)}")

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _lock_file(lock_path: Path, store: str) -> int:
    """Take the exclusive lock of ``store``; ``StoreError`` naming the holder if taken. A lock
    file deleted between our open and our lock (:meth:`ModelStore.discard` of another server) is
    not the store's lock any more: the lock is taken again on the file now at ``lock_path``."""
    for _ in range(_LOCK_TRIES):
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(
                f"store {store} is in use by another gateway (pid {holder}, lock {lock_path}); "
                "one store serves one server"
            ) from None
        if _same_file(fd, lock_path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            return fd
        os.close(fd)
    raise StoreError(f"store {store}: its lock {lock_path} kept being replaced while locking it")


_LOCK_TRIES = 5


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is the file now at ``path``."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


def _check_same_request(key: str, stored_hash: str, request_hash: str) -> None:
    if stored_hash != request_hash:
        raise ValueError(
            f"idempotency key {key!r} was already used with a different request; "
            "a retry must send the same request, a new request needs a new key"
        )


def _row_to_model(row: tuple[Any, ...]) -> StoredModel:
    return StoredModel(
        model_id=row[0],
        version=int(row[1]),
        created_at=float(row[2]),
        info=json.loads(row[3]),
        state=json.loads(row[4]) if len(row) > 4 else None,
    )
