"""SQLite model store: versions, persistence, atomicity, locking, integrity."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from qpu_gateway.errors import ModelNotFoundError, StoreBusyError
from qpu_gateway.store import ModelStore, StoreError


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


def test_store_new_file_and_its_wal_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    store = ModelStore(path)
    store.put("a", {"n": 1}, {"s": 1}, 1.0)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.glob("m.sqlite*")}
    store.close()
    assert {"m.sqlite", "m.sqlite-wal", "m.sqlite.lock"} <= set(modes)
    assert set(modes.values()) == {0o600}, modes


def test_store_is_in_wal_mode_with_full_synchronous_writes(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "m.sqlite")
    store.put("a", {"n": 1}, {"s": 1}, 1.0)
    store.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "m.sqlite")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent
    again = ModelStore(tmp_path / "m.sqlite")
    try:
        assert again._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL, per connection
    finally:
        again.close()


def test_store_discard_deletes_its_files_and_frees_the_path(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    store = ModelStore(path)
    store.put("a", {"n": 1}, {"s": 1}, 1.0)
    store.discard()
    assert list(tmp_path.iterdir()) == []
    fresh = ModelStore(path)  # the lock is released: a new store opens, empty
    assert fresh.list() == []
    fresh.close()


def test_store_close_leaves_its_lock_file_which_locks_nothing(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    ModelStore(path).close()
    assert (tmp_path / "m.sqlite.lock").exists()
    again = ModelStore(path)  # the leftover file does not keep the next server out
    again.close()


def test_store_knows_whether_it_created_its_file(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    (tmp_path / "m.sqlite.lock").touch()  # a lock file alone (a crashed start) is no store
    new = ModelStore(path)
    assert new.created
    new.close()
    again = ModelStore(path)
    assert not again.created
    again.close()
    memory = ModelStore(":memory:")
    assert not memory.created
    memory.close()


def test_store_discard_tries_every_file_and_releases_the_lock_when_one_cannot_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.sqlite"
    store = ModelStore(path)
    unlink = Path.unlink

    def stuck(self: Path, missing_ok: bool = False) -> None:
        if self == path:
            raise PermissionError(13, "Permission denied")
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", stuck)
    with pytest.raises(StoreError, match=r"could not delete .*m\.sqlite \(Permission denied\)"):
        store.discard()
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["m.sqlite"]  # the lock file went too
    ModelStore(path).close()  # and the lock is free


def test_store_open_that_fails_deletes_the_file_it_created_not_one_it_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: ModelStore) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    kept = tmp_path / "kept.sqlite"
    ModelStore(kept).close()
    monkeypatch.setattr(ModelStore, "_migrate", broken)
    for path in (tmp_path / "new.sqlite", kept):
        with pytest.raises(StoreError, match="cannot be opened: disk I/O error"):
            ModelStore(path)
    assert not list(tmp_path.glob("new.sqlite*"))
    assert kept.exists()
    monkeypatch.undo()
    ModelStore(kept).close()  # the failed opens released the lock


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
    with pytest.raises(StoreError, match="schema version 99"):
        ModelStore(path)


def test_store_never_reuses_a_version_number_after_delete(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "m.sqlite")
    assert store.put("a", {}, {"s": 1}, 1.0) == 1
    store.delete("a")
    assert store.put("a", {}, {"s": 2}, 2.0) == 2
    with pytest.raises(ModelNotFoundError):
        store.get("a", 1)
    store.close()
    assert ModelStore(tmp_path / "m.sqlite").put("a", {}, {"s": 3}, 3.0) == 3


def test_store_migrates_schema_1_without_reusing_its_versions(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "INSERT INTO meta VALUES ('schema_version', '1');"
            "CREATE TABLE models (model_id TEXT NOT NULL, version INTEGER NOT NULL, created_at REAL"
            " NOT NULL, info TEXT NOT NULL, state TEXT NOT NULL, PRIMARY KEY (model_id, version));"
            "INSERT INTO models VALUES ('a', 4, 1.0, '{}', '{}');"
        )
    store = ModelStore(path)
    store.delete("a")
    assert store.put("a", {}, {}, 2.0) == 5


def test_store_is_opened_by_one_owner_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    first = ModelStore(path)
    with pytest.raises(StoreError, match=r"in use by another gateway \(pid \d+"):
        ModelStore(path)
    first.close()
    ModelStore(path).close()


def test_store_lock_file_discarded_while_opening_is_not_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that opened the lock file just before another one's failed start deleted it
    (``discard``) locks the file now at the path, not the deleted one: a third server that
    creates the file anew cannot also get the store."""
    import qpu_gateway.store as store_module

    path = tmp_path / "m.sqlite"
    real_flock = store_module.fcntl.flock
    calls = []

    def flock_after_a_discard(fd: int, op: int) -> None:
        if not calls:  # the other server's discard, between our open and our lock
            Path(str(path) + ".lock").unlink()
        calls.append(op)
        real_flock(fd, op)

    monkeypatch.setattr(store_module.fcntl, "flock", flock_after_a_discard)
    first = ModelStore(path)
    monkeypatch.setattr(store_module.fcntl, "flock", real_flock)
    with pytest.raises(StoreError, match="is in use by another gateway"):
        ModelStore(path)
    first.close()
    assert len(calls) == 2


def test_store_idempotent_put_stores_once_per_key(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "m.sqlite")
    assert store.put_idempotent("k1", "h", "a", {}, {"s": 1}, 1.0) == ("a", 1, True)
    assert store.put_idempotent("k1", "h", "b", {}, {"s": 2}, 2.0) == ("a", 1, False)
    assert store.find_idempotent("k1", "h") == ("a", 1) and store.count() == 1
    with pytest.raises(ValueError, match="'k1' was already used with a different request"):
        store.put_idempotent("k1", "other", "a", {}, {}, 3.0)
    store.delete("a")
    assert store.find_idempotent("k1", "h") is None
    assert store.put_idempotent("k1", "h", "a", {}, {}, 4.0) == ("a", 2, True)


def test_store_reads_never_wait_for_a_write_blocked_by_an_outside_lock(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    store = ModelStore(path, busy_timeout=3.0)
    store.put("a", {"n": 1}, {}, 1.0)
    outside = sqlite3.connect(path, isolation_level=None)
    outside.execute("BEGIN IMMEDIATE")
    errors: list[BaseException] = []
    writer = threading.Thread(target=lambda: _catch(errors, lambda: store.put("b", {}, {}, 2.0)))
    start = time.monotonic()
    writer.start()
    time.sleep(0.3)
    assert store.get("a").info == {"n": 1} and store.count() == 1
    assert time.monotonic() - start < 1.5, "a read waited for the blocked write"
    writer.join(10)
    assert isinstance(errors[0], StoreBusyError) and "locked by another process" in str(errors[0])
    assert time.monotonic() - start < 6.0, "the blocked write did not give up within busy_timeout"
    assert store.check() == "", "another process holding the write lock is not a store problem"
    outside.execute("ROLLBACK")
    assert store.put("b", {}, {}, 3.0) == 1


def test_store_corrupt_file_is_one_clear_error_and_check_reports_it(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    store = ModelStore(path)
    for i in range(30):
        store.put(f"m{i}", {"i": i}, {"w": list(range(200))}, 1.0)
    assert store.check() == ""
    store.close()
    _corrupt(path)
    with pytest.raises(StoreError, match=r"is corrupt|cannot be opened"):
        ModelStore(path)
    (tmp_path / "junk.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot be opened: file is not a database"):
        ModelStore(tmp_path / "junk.sqlite")


def _corrupt(path: Path) -> None:
    """Overwrite every page after the first two (the header and the schema) with garbage."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for i in range(2 * page, len(data)):
        data[i] = (i * 7 + 13) % 256
    path.write_bytes(bytes(data))


def _catch(errors: list[BaseException], fn) -> None:
    try:
        fn()
    except BaseException as exc:  # the test inspects it
        errors.append(exc)


def test_store_check_reports_an_unwritable_file(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    store = ModelStore(path)
    store.put("a", {}, {}, 1.0)
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        store.close()
        pytest.skip("chattr +i (an immutable file) is not available here")
    try:
        assert store.check().startswith("not writable: attempt to write a readonly database")
        assert store.get("a").version == 1
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    assert store.check() == ""
    store.close()


def test_store_check_reports_a_full_file_system(tmp_path: Path) -> None:
    fs = tmp_path / "fs"
    fs.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(fs)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        store = ModelStore(fs / "m.sqlite", min_free_bytes=1 << 20)
        store.put("a", {}, {"w": list(range(100))}, 1.0)
        assert store.check() == ""
        with open(fs / "filler", "wb") as fh, contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        assert store.check().startswith("full: ")
        assert store.get("a").version == 1
        (fs / "filler").unlink()
        assert store.check() == ""
        store.close()
    finally:
        subprocess.run(["umount", str(fs)], check=True)


def test_store_write_locked_from_outside_past_busy_timeout_is_store_busy(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "m.sqlite", busy_timeout=0.2)
    store.put("a", {}, {"w": 1}, 1.0)
    outside = sqlite3.connect(tmp_path / "m.sqlite", isolation_level=None)
    outside.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreBusyError, match=r"locked by another process .* nothing was written"):
            store.put("a", {}, {"w": 2}, 2.0)
        with pytest.raises(StoreBusyError):
            store.delete("a")
    finally:
        outside.execute("ROLLBACK")
        outside.close()
    assert [m.version for m in store.list("a")] == [1]
    assert store.put("a", {}, {"w": 3}, 3.0) == 2
    store.close()
