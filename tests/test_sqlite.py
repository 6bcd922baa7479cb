"""SQLiteStorage on real files: the conformance kit, the state machine, crash durability, no lost
updates across processes, GramIO interop, configuration and error paths."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gramio_storage import (
    MSGPACK,
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    BaseStorage,
    ConfigurationError,
    DecodeError,
    Key,
    KeyNotFoundError,
    StorageClosedError,
    ValueTooLargeError,
    storage_from_url,
)
from gramio_storage.sqlite import SQLiteStorage
from gramio_storage.testing import StorageTests, make_state_machine

CHILD = Path(__file__).with_name("_sqlite_child.py")
GRAMIO_DDL = (
    "CREATE TABLE gramio_storage (key TEXT PRIMARY KEY, value JSONB NOT NULL, expires_at BIGINT)"
)


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def raw(path: Path | str) -> sqlite3.Connection:
    """A plain stdlib connection to look at the file behind the storage's back."""
    return sqlite3.connect(path, isolation_level=None, timeout=10)


# ---------------------------------------------------------------------- the conformance kit


class TestSQLiteFile(StorageTests):
    """The kit on a fresh file with a fake clock (expiry tests need no sleeping)."""

    ttl_precision = 0.0

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[BaseStorage]:
        self.clock = FakeClock()
        storage = SQLiteStorage(tmp_path / "kit.db", clock=self.clock)
        yield storage
        await storage.close()

    async def advance_time(self, storage: BaseStorage, seconds: float) -> None:
        self.clock.now += seconds


class TestSQLiteMsgpackRealClock(StorageTests):
    """The kit with a binary codec (values stored as BLOBs) and the real clock."""

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[BaseStorage]:
        storage = SQLiteStorage(tmp_path / "kit.db", codec=MSGPACK, table="blobs")
        yield storage
        await storage.close()


class TestSQLiteGramIOTable(TestSQLiteFile):
    """The kit on a table GramIO created (JSONB column with NUMERIC affinity)."""

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[BaseStorage]:
        with raw(tmp_path / "gramio.db") as conn:
            conn.execute(GRAMIO_DDL)
        self.clock = FakeClock()
        storage = SQLiteStorage(tmp_path / "gramio.db", clock=self.clock)
        yield storage
        await storage.close()


class TestSQLiteInMemory(TestSQLiteFile):
    """The kit on ``:memory:``."""

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[BaseStorage]:
        self.clock = FakeClock()
        storage = SQLiteStorage(":memory:", clock=self.clock)
        yield storage
        await storage.close()


_MACHINE_DIR = Path(tempfile.mkdtemp(prefix="gramio-sqlite-machine-"))
_machine_files = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def _machine_dir_cleanup() -> Iterator[None]:
    yield
    for path in _MACHINE_DIR.iterdir():
        path.unlink()
    _MACHINE_DIR.rmdir()


def _machine_storage() -> SQLiteStorage:
    return SQLiteStorage(_MACHINE_DIR / f"m{next(_machine_files)}.db")


# No machine on GramIO's JSONB table: its NUMERIC affinity stores the JSON "0.0" as the
# INTEGER 0, so incr() on a whole float succeeds there (as in JavaScript), while the machine's
# model expects DecodeError. The kit above and the interop tests below cover that table.
TestSQLiteMachine = make_state_machine(_machine_storage).TestCase


# ---------------------------------------------------------------------- durability and processes


def _child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("acknowledged", [1, 2500])
async def test_acknowledged_writes_survive_sigkill(tmp_path: Path, acknowledged: int) -> None:
    """Every set that returned before a SIGKILL is in the reopened file, which is intact.

    2,500 acknowledged writes pass several background checkpoints, so the kill can land in
    the middle of one.
    """
    path = tmp_path / "crash.db"
    child = _child("write", str(path))
    assert child.stdout is not None
    acked: list[int] = []
    try:
        for line in child.stdout:
            acked.append(int(line))
            if len(acked) >= acknowledged:
                break
        child.send_signal(signal.SIGKILL)
        # Acknowledgements already in the pipe count too: those sets returned as well. Read to
        # EOF through the same buffered file (communicate() reads the raw pipe and would drop
        # lines the loop above had already buffered).
        with child.stdout, child.stderr or child.stdout:
            rest = child.stdout.read()
            err = child.stderr.read() if child.stderr else ""
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    acked += [int(line) for line in rest.split()]
    assert child.returncode == -signal.SIGKILL, err
    assert len(acked) >= acknowledged and acked == list(range(len(acked)))

    with raw(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    storage = SQLiteStorage(path)
    try:
        found = await storage.get_many([f"key:{i}" for i in acked])
        missing = [i for i in acked if found.get(f"key:{i}", {}).get("i") != i]
        assert missing == [], f"{len(missing)} acknowledged writes lost, first {missing[:5]}"
    finally:
        await storage.close()
    with raw(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


async def test_no_lost_updates_across_processes(tmp_path: Path) -> None:
    """4 processes x 250 incr and 4 x 250 update on one key each end at exactly 1000."""
    path = tmp_path / "shared.db"
    storage = SQLiteStorage(path)  # creates the table before the children race
    children = [_child(mode, str(path), "250") for mode in ("incr", "update") for _ in range(4)]
    try:
        await asyncio.sleep(0)
        (tmp_path / "shared.db.go").touch()
        results = [await asyncio.to_thread(c.communicate, timeout=120) for c in children]
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait()
    for child, (out, err) in zip(children, results, strict=True):
        assert child.returncode == 0 and out.strip() == "done", err
    try:
        assert await storage.get("counter") == 1000
        assert await storage.get("doc") == {"n": 1000}
    finally:
        await storage.close()
    with raw(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


async def test_a_writer_in_another_process_never_blocks_the_event_loop(tmp_path: Path) -> None:
    """While another connection holds the write lock, writes wait in asyncio, not in SQLite.

    The loop keeps ticking during the wait, and the write lands once the lock is released.
    """
    path = tmp_path / "locked.db"
    storage = SQLiteStorage(path)
    other = raw(path)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO gramio_storage VALUES ('held', '1', NULL)")
        write = asyncio.create_task(storage.set("k", "v"))
        start = time.monotonic()
        for _ in range(20):  # 20 x 10 ms: the loop is free while the write waits
            await asyncio.sleep(0.01)
        # Blocking in SQLite's busy handler would have held the loop for `timeout` (5 s).
        assert time.monotonic() - start < 2.0
        assert not write.done()
        assert await storage.get("held") is None  # readers are not blocked by the writer
        other.execute("COMMIT")
        await asyncio.wait_for(write, 5)
        assert await storage.get("k") == "v"
        assert await storage.get("held") == 1
    finally:
        other.close()
        await storage.close()


async def test_lock_held_past_the_timeout_raises_backend_timeout(tmp_path: Path) -> None:
    """A write that cannot get the lock in `timeout` raises BackendTimeoutError naming the key."""
    path = tmp_path / "locked.db"
    storage = SQLiteStorage(path, timeout=0.2)
    other = raw(path)
    try:
        await storage.set("k", "old")
        other.execute("BEGIN IMMEDIATE")
        for call in (
            storage.set("k", "new"),
            storage.incr("n"),
            storage.update("k", lambda v: v),
            storage.set_many({"k": 1}),
        ):
            with pytest.raises(BackendTimeoutError, match=r"'k'|'n'") as info:
                await call
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
            assert info.value.backend == "sqlite"
        other.execute("ROLLBACK")
        assert await storage.get("k") == "old"
        assert await storage.has("n") is False
    finally:
        other.close()
        await storage.close()


# ---------------------------------------------------------------------- GramIO interop


def _gramio_time() -> int:
    return math.floor(time.time())  # GramIO: Math.floor(Date.now() / 1000)


async def test_reads_rows_written_the_way_gramio_writes_them(tmp_path: Path) -> None:
    """GramIO's JSONB table turns JSON numbers into INTEGER/REAL cells; every row reads back."""
    path = tmp_path / "shared.db"
    now = _gramio_time()
    rows = {
        "session:1": ({"step": "ask_age", "tags": ["a"]}, None),
        "rl:default:1": ([1700000000000, 1700000000500], None),
        "count": (42, None),
        "price": (12.5, now + 3600),
        "name": ("Alice", None),
        "flag": (True, None),
        "nothing": (None, None),
        "expired": ({"old": True}, now - 5),
    }
    with raw(path) as conn:
        conn.execute(GRAMIO_DDL)
        for key, (value, expires_at) in rows.items():
            # GramIO: INSERT OR REPLACE INTO table VALUES (?, ?, ?) with JSON.stringify(value)
            conn.execute(
                "INSERT OR REPLACE INTO gramio_storage VALUES (?, ?, ?)",
                (key, json.dumps(value, separators=(",", ":")), expires_at),
            )
        types = dict(conn.execute("SELECT key, typeof(value) FROM gramio_storage").fetchall())
    assert types["count"] == "integer" and types["price"] == "real"  # the affinity at work

    storage = SQLiteStorage(path)
    try:
        for key, (value, _) in rows.items():
            if key != "expired":
                assert await storage.get(key, "MISSING") == value, key
        assert await storage.get("expired") is None
        assert await storage.has("expired") is False
        assert await storage.get(Key("count", int)) == 42
        assert await storage.incr("count") == 43
        assert await storage.get_many(["count", "price", "expired"]) == {
            "count": 43,
            "price": 12.5,
        }
        left = await storage.ttl("price")
        assert left is not None and 3590 < left <= 3601
        assert sorted([k async for k in storage.keys()]) == sorted(set(rows) - {"expired"})
    finally:
        await storage.close()


async def test_rows_we_write_read_back_as_the_json_text_gramio_expects(tmp_path: Path) -> None:
    """Our rows hold JSON.stringify's text and an expires_at GramIO compares with its clock."""
    path = tmp_path / "ours.db"
    storage = SQLiteStorage(path)
    try:
        await storage.set("session:1", {"step": "ask_age", "name": "Алиса"}, ttl=60)
        await storage.set("count", 7)
        await storage.incr("visits")
    finally:
        await storage.close()
    with raw(path) as conn:
        rows = {
            k: (v, t, e)
            for k, v, t, e in conn.execute(
                "SELECT key, value, typeof(value), expires_at FROM gramio_storage"
            )
        }
        # GramIO inserts positionally into our table: the column order matches its own.
        conn.execute(
            "INSERT OR REPLACE INTO gramio_storage VALUES (?, ?, ?)",
            ("from-gramio", '{"ok":true}', _gramio_time() + 60),
        )
    value, kind, expires_at = rows["session:1"]
    assert kind == "text" and value == '{"step":"ask_age","name":"Алиса"}'
    assert json.loads(value) == {"step": "ask_age", "name": "Алиса"}
    assert rows["count"][:2] == ("7", "text") and rows["visits"][:2] == ("1", "text")
    # Seconds since the epoch: GramIO's `expires_at <= Math.floor(Date.now()/1000)` works.
    assert time.time() + 55 < expires_at <= time.time() + 60
    assert rows["count"][2] is None

    storage = SQLiteStorage(path)
    try:
        assert await storage.get("from-gramio") == {"ok": True}
    finally:
        await storage.close()


async def test_writes_into_a_gramio_table_look_like_gramio_rows(tmp_path: Path) -> None:
    """In GramIO's own table our JSON text gets the same affinity as GramIO's writes."""
    path = tmp_path / "gramio.db"
    with raw(path) as conn:
        conn.execute(GRAMIO_DDL)
    storage = SQLiteStorage(path)
    try:
        await storage.set("obj", {"a": 1})
        await storage.set("num", 5)
    finally:
        await storage.close()
    with raw(path) as conn:
        got = dict(
            conn.execute("SELECT key, quote(value) FROM gramio_storage ORDER BY key").fetchall()
        )
        ddl = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'gramio_storage'"
        ).fetchone()[0]
    assert got == {"num": "5", "obj": "'{\"a\":1}'"}
    assert ddl == GRAMIO_DDL  # the table is used as it is, never altered


async def test_stored_json_numbers_are_read_exactly(tmp_path: Path) -> None:
    """INTEGER and REAL cells become JSON with full precision (no %.15g rounding)."""
    path = tmp_path / "gramio.db"
    with raw(path) as conn:
        conn.execute(GRAMIO_DDL)
        conn.executemany(
            "INSERT INTO gramio_storage VALUES (?, ?, NULL)",
            [("a", "0.30000000000000004"), ("b", "-9007199254740993"), ("c", "1e300")],
        )
    storage = SQLiteStorage(path)
    try:
        assert await storage.get_many(["a", "b", "c"]) == {
            "a": 0.30000000000000004,
            "b": -9007199254740993,
            "c": 1e300,
        }
    finally:
        await storage.close()


async def test_whole_floats_are_numbers_in_a_gramio_table(tmp_path: Path) -> None:
    """In GramIO's table 2.0 reads back as 2 and counts; in ours it stays a float."""
    with raw(tmp_path / "gramio.db") as conn:
        conn.execute(GRAMIO_DDL)
    gramio, ours = SQLiteStorage(tmp_path / "gramio.db"), SQLiteStorage(tmp_path / "ours.db")
    try:
        for storage in (gramio, ours):
            await storage.set("x", 2.0)
        assert await gramio.incr("x") == 3
        assert await ours.get("x") == 2.0 and isinstance(await ours.get("x"), float)
        with pytest.raises(DecodeError):
            await ours.incr("x")
    finally:
        await gramio.close()
        await ours.close()


# ---------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "table",
    ["", "1abc", "my-table", "t; DROP TABLE x", 'a"b', "ключ", "x" * 64, "sqlite_master", 5],
    ids=repr,
)
def test_bad_table_names_are_rejected(tmp_path: Path, table: Any) -> None:
    """The table name must be a plain identifier: ConfigurationError names it."""
    with pytest.raises(ConfigurationError, match="table"):
        SQLiteStorage(tmp_path / "t.db", table=table)
    assert not (tmp_path / "t.db").exists()


async def test_custom_table_names_are_used(tmp_path: Path) -> None:
    """Two tables in one file are two separate storages."""
    path = tmp_path / "two.db"
    a, b = SQLiteStorage(path, table="a_1"), SQLiteStorage(path, table="_B")
    try:
        await a.set("k", "a")
        assert await b.get("k") is None
        assert repr(b) == f"SQLiteStorage(path={str(path)!r}, table='_B')"
    finally:
        await a.close()
        await b.close()


def test_a_foreign_table_is_rejected(tmp_path: Path) -> None:
    """A table without the key/value/expires_at columns raises instead of being misused."""
    with raw(tmp_path / "f.db") as conn:
        conn.execute("CREATE TABLE gramio_storage (id INTEGER PRIMARY KEY, data TEXT)")
    with pytest.raises(ConfigurationError, match="expires_at"):
        SQLiteStorage(tmp_path / "f.db")


@pytest.mark.parametrize(
    "option", [{"timeout": 0}, {"timeout": -1}, {"sweep_interval": math.nan}, {"timeout": "5"}]
)
def test_bad_options_are_rejected(tmp_path: Path, option: dict[str, Any]) -> None:
    """Non-positive or non-numeric durations raise ConfigurationError naming the option."""
    with pytest.raises(ConfigurationError, match=next(iter(option))):
        SQLiteStorage(tmp_path / "o.db", **option)


def test_an_unopenable_path_raises_backend_unavailable(tmp_path: Path) -> None:
    """A missing directory or a file that is not a database is BackendUnavailableError."""
    with pytest.raises(BackendUnavailableError, match="missing-dir") as info:
        SQLiteStorage(tmp_path / "missing-dir" / "x.db")
    assert isinstance(info.value.__cause__, sqlite3.Error)
    (tmp_path / "junk.db").write_bytes(b"not a database, just some bytes " * 100)
    with pytest.raises(BackendUnavailableError, match=r"junk\.db") as info:
        SQLiteStorage(tmp_path / "junk.db")
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


async def test_the_file_uses_wal_and_the_expiry_index(tmp_path: Path) -> None:
    """The database is in WAL mode with a partial index for the sweep."""
    storage = SQLiteStorage(tmp_path / "w.db")
    await storage.close()
    with raw(tmp_path / "w.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        indexes = [r[1] for r in conn.execute("PRAGMA index_list(gramio_storage)")]
        assert "gramio_storage_expires_at" in indexes
        plan = " ".join(
            str(r[-1])
            for r in conn.execute(
                "EXPLAIN QUERY PLAN SELECT key FROM gramio_storage WHERE expires_at <= 1"
            )
        )
        assert "gramio_storage_expires_at" in plan


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///bot.db", "bot.db"),
        ("sqlite:///data/bot.db", "data/bot.db"),
        ("sqlite:///my%20bot.db", "my bot.db"),
        ("sqlite://:memory:", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
        ("SQLITE:///bot.db", "bot.db"),
    ],
)
async def test_url_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, expected: str
) -> None:
    """Three slashes: relative to the working directory; ':memory:' in memory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    storage = storage_from_url(url)
    try:
        assert isinstance(storage, SQLiteStorage)
        assert storage.path == expected
        await storage.set("k", 1)
        assert await storage.get("k") == 1
    finally:
        await storage.close()
    if expected != ":memory:":
        assert (tmp_path / expected).exists()


async def test_absolute_url_and_query_options(tmp_path: Path) -> None:
    """Four slashes give an absolute path; table/ttl/timeout come from the query."""
    url = f"sqlite:///{tmp_path}/abs.db?table=sessions&ttl=60&timeout=2"
    storage = SQLiteStorage.from_url(url)
    try:
        assert storage.path == f"{tmp_path}/abs.db" and storage.table == "sessions"
        assert storage.default_ttl == 60.0
        await storage.set("k", 1)
        left = await storage.ttl("k")
        assert left is not None and 59 < left <= 60
    finally:
        await storage.close()
    override = storage_from_url(f"sqlite:///{tmp_path}/abs.db?table=sessions", table="other")
    assert isinstance(override, SQLiteStorage) and override.table == "other"
    await override.close()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite://host/bot.db",
        "sqlite:///bot.db?colour=blue",
        "sqlite:///bot.db?ttl=soon",
        "sqlite:///bot.db?table=bad-name",
    ],
)
def test_bad_urls_raise_configuration_error(url: str) -> None:
    """A host, a missing file, unknown or malformed parameters are ConfigurationError."""
    with pytest.raises(ConfigurationError):
        storage_from_url(url)


# ---------------------------------------------------------------------- TTL sweep


async def test_sweep_deletes_expired_rows_without_reads(tmp_path: Path) -> None:
    """Expired rows leave the table by themselves; live ones stay."""
    clock = FakeClock()
    path = tmp_path / "sweep.db"
    storage = SQLiteStorage(path, clock=clock, sweep_interval=0.02)
    try:
        await storage.set_many({f"s:{i}": i for i in range(2500)}, ttl=10)
        await storage.set("long", 1, ttl=1000)
        await storage.set("forever", 1)
        with raw(path) as conn:
            assert conn.execute("SELECT count(*) FROM gramio_storage").fetchone() == (2502,)
            clock.now += 11
            deadline = time.monotonic() + 10
            while conn.execute("SELECT count(*) FROM gramio_storage").fetchone() != (2,):
                assert time.monotonic() < deadline, "the sweep did not delete expired rows"
                await asyncio.sleep(0.01)
            keys = sorted(r[0] for r in conn.execute("SELECT key FROM gramio_storage"))
        assert keys == ["forever", "long"]
    finally:
        await storage.close()


async def test_sweep_timer_does_not_keep_a_dropped_storage_alive(tmp_path: Path) -> None:
    """The sweep holds only a weak reference to its storage."""
    storage = SQLiteStorage(tmp_path / "drop.db", sweep_interval=0.01)
    await storage.set("k", 1, ttl=100)
    conn = storage.backend._conn
    ref = weakref.ref(storage)
    del storage
    gc.collect()
    assert ref() is None
    conn.close()
    await asyncio.sleep(0.05)  # a timer tick after the storage is gone is harmless


async def test_expired_rows_are_invisible_and_replaceable(tmp_path: Path) -> None:
    """An expired row reads as missing everywhere, and add/incr start afresh over it."""
    clock = FakeClock()
    storage = SQLiteStorage(tmp_path / "exp.db", clock=clock, sweep_interval=None)
    try:
        await storage.set("lock", "a", ttl=5)
        await storage.set("n", 10, ttl=5)
        clock.now += 5
        assert await storage.add("lock", "b") is True
        assert await storage.ttl("lock") is None
        assert await storage.incr("n", ttl=30) == 1
        assert await storage.ttl("n") == 30
        assert await storage.clear() == 2
    finally:
        await storage.close()


# ---------------------------------------------------------------------- lifecycle and errors


async def test_use_after_close_raises_storage_closed(tmp_path: Path) -> None:
    """Every operation on a closed storage (or its views) raises StorageClosedError."""
    storage = SQLiteStorage(tmp_path / "c.db")
    view = storage.with_prefix("v:")
    await storage.set("k", 1)
    await storage.close()
    await storage.close()  # idempotent
    calls = [
        storage.get("k"),
        storage.has("k"),
        storage.set("k", 2),
        storage.delete("k"),
        storage.get_many(["k"]),
        storage.set_many({"k": 1}),
        storage.delete_many(["k"]),
        storage.ttl("k"),
        storage.add("k", 1),
        storage.incr("k"),
        storage.update("k", lambda v: v),
        storage.clear(),
        view.get("k"),
    ]
    for call in calls:
        with pytest.raises(StorageClosedError, match="close"):
            await call
    with pytest.raises(StorageClosedError):
        [k async for k in storage.keys()]
    reopened = SQLiteStorage(tmp_path / "c.db")
    assert await reopened.get("k") == 1  # nothing written after close
    await reopened.close()


async def test_async_with_closes(tmp_path: Path) -> None:
    """Leaving `async with` closes the storage and leaves no WAL behind."""
    async with SQLiteStorage(tmp_path / "cm.db") as storage:
        await storage.set("k", 1)
    with pytest.raises(StorageClosedError):
        await storage.get("k")
    assert not (tmp_path / "cm.db-wal").exists()


async def test_value_too_large_raises_and_keeps_the_old_value(tmp_path: Path) -> None:
    """SQLite's length limit surfaces as ValueTooLargeError naming the key."""
    storage = SQLiteStorage(tmp_path / "big.db")
    try:
        await storage.set("k", "small")
        storage.backend._conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1000)
        with pytest.raises(ValueTooLargeError, match="'k'") as info:
            await storage.set("k", "x" * 2000)
        assert isinstance(info.value.__cause__, sqlite3.Error)
        assert await storage.get("k") == "small"
    finally:
        await storage.close()


async def test_a_failing_statement_becomes_backend_error(tmp_path: Path) -> None:
    """A driver error is a BackendError with the cause chained and the key named."""
    path = tmp_path / "trig.db"
    storage = SQLiteStorage(path)
    try:
        with raw(path) as conn:
            conn.execute(
                "CREATE TRIGGER no_x BEFORE INSERT ON gramio_storage WHEN NEW.key = 'x' "
                "BEGIN SELECT RAISE(ABORT, 'x is forbidden'); END"
            )
        with pytest.raises(BackendError, match=r"'x'.*forbidden") as info:
            await storage.set("x", 1)
        assert isinstance(info.value.__cause__, sqlite3.Error)
        with pytest.raises(BackendError, match="forbidden"):
            await storage.update("x", lambda v: 1)
        with pytest.raises(BackendError, match="forbidden"):
            await storage.set_many({"a": 1, "x": 2})
        assert await storage.has("a") is False  # the batch is one transaction
        with pytest.raises(KeyNotFoundError):
            await storage.ttl("x")
    finally:
        await storage.close()


async def test_bulk_operations_beyond_one_statement(tmp_path: Path) -> None:
    """get_many/delete_many over more keys than one IN list, with duplicates, stay exact."""
    storage = SQLiteStorage(tmp_path / "bulk.db")
    try:
        keys = [f"k{i}" for i in range(1500)]
        await storage.set_many({k: i for i, k in enumerate(keys)})
        wanted = [*keys, "missing", "k0"]
        got = await storage.get_many(wanted)
        assert got == {k: i for i, k in enumerate(keys)}
        assert await storage.delete_many([*keys[:1200], "missing", "k1"]) == 1200
        assert sorted([k async for k in storage.keys()]) == sorted(keys[1200:])
    finally:
        await storage.close()


async def test_keys_with_unicode_edges_do_not_widen(tmp_path: Path) -> None:
    """Prefix bounds work at code point edges (surrogate gap, the last code point)."""
    storage = SQLiteStorage(tmp_path / "u.db")
    try:
        keys = ["a\ud7ff", "a\ud7ffz", "a\ue000", "a\U0010ffff", "a\U0010ffffz", "b"]
        await storage.set_many(dict.fromkeys(keys, 1))
        assert [k async for k in storage.keys("a\ud7ff")] == ["a\ud7ff", "a\ud7ffz"]
        assert [k async for k in storage.keys("a\U0010ffff")] == ["a\U0010ffff", "a\U0010ffffz"]
        assert await storage.clear("a\U0010ffff") == 2
        assert await storage.clear("\U0010ffff") == 0
    finally:
        await storage.close()


async def test_raw_bytes_that_are_not_text_are_kept_as_a_blob(tmp_path: Path) -> None:
    """Bytes written through the hooks (the CLI copying msgpack values) round-trip exactly."""
    storage = SQLiteStorage(tmp_path / "raw.db")
    raw = b"\x81\xa1a\xff\xfe"  # msgpack-ish, not UTF-8
    await storage.backend.set("raw", raw, None)
    await storage.backend.set("text", b'{"a":1}', None)
    assert await storage.backend.get("raw") == raw
    assert await storage.backend.get_many(["raw", "text"]) == [raw, b'{"a":1}']
    assert await storage.get("text") == {"a": 1}
    await storage.close()
    with sqlite3.connect(tmp_path / "raw.db") as conn:
        kinds = dict(conn.execute("SELECT key, typeof(value) FROM gramio_storage").fetchall())
    assert kinds == {"raw": "blob", "text": "text"}


# ---------------------------------------------------------------------- sustained load and faults

MiB = 1024 * 1024
VALUE_500 = "x" * 498  # 500 bytes of JSON text


class SizeWatch:
    """Samples the WAL and database sizes every millisecond, from a thread (not the loop).

    ``excess`` is the largest ``wal - max(64 MiB, db)`` seen: the WAL bound holds when it is
    at most 0. A thread sees every moment, even while the loop is busy in a tight write loop.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.max_wal = 0
        self.excess = -math.inf
        self.worst: tuple[int, int] = (0, 0)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            wal, db = _size(f"{self.path}-wal"), _size(self.path)
            self.samples += 1
            self.max_wal = max(self.max_wal, wal)
            if wal - max(64 * MiB, db) > self.excess:
                self.excess, self.worst = wal - max(64 * MiB, db), (wal, db)
            time.sleep(0.001)

    def __enter__(self) -> SizeWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def check(self) -> None:
        wal, db = self.worst
        assert self.excess <= 0, (
            f"the WAL reached {wal / MiB:.1f} MiB beside a {db / MiB:.1f} MiB database "
            f"(bound: max(64 MiB, db)); largest WAL {self.max_wal / MiB:.1f} MiB"
        )
        assert self.samples > 100 and self.max_wal > 0  # it did watch something


def _size(path: str | Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("yielding", [False, True], ids=["tight-loop", "yielding"])
async def test_wal_stays_bounded_under_200k_unique_writes(tmp_path: Path, yielding: bool) -> None:
    """200,000 unique 500-byte values: the WAL never exceeds max(64 MiB, the database).

    Without yielding, nothing but the write path itself runs on the loop, so checkpoints that
    needed a loop callback would never happen (the WAL used to reach gigabytes).
    """
    path = tmp_path / "load.db"
    storage = SQLiteStorage(path)
    try:
        with SizeWatch(path) as watch:
            for i in range(200_000):
                await storage.set(f"u:{i:07d}", VALUE_500)
                if yielding:
                    await asyncio.sleep(0)
        watch.check()
        assert await storage.get("u:0199999") == VALUE_500
        assert _size(path) > 64 * MiB  # the data went into the database, not only the WAL
    finally:
        await storage.close()
    assert _size(f"{path}-wal") == 0  # close folded the WAL in (and removed it)


@pytest.mark.slow
async def test_wal_stays_bounded_with_two_writing_processes(tmp_path: Path) -> None:
    """Two processes writing 100,000 unique 500-byte values each into one file, concurrently."""
    path = tmp_path / "shared-load.db"
    storage = SQLiteStorage(path)  # creates the table before the children race
    children = [_child("unique", str(path), "100000") for _ in range(2)]
    try:
        with SizeWatch(path) as watch:
            (tmp_path / "shared-load.db.go").touch()
            results = [await asyncio.to_thread(c.communicate, timeout=300) for c in children]
        for child, (out, err) in zip(children, results, strict=True):
            assert child.returncode == 0 and out.strip() == "done", err
        watch.check()
        assert len([k async for k in storage.keys()]) == 200_000
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait()
        await storage.close()


async def test_back_to_back_calls_let_other_tasks_run(tmp_path: Path) -> None:
    """During 100,000 back-to-back sets a ticker task runs at least every ~10 ms.

    Statements run inline, so without turns the loop would be held for the whole loop of
    calls (seconds). The gap is measured in the loop thread's CPU time, which counts the work
    done between two ticks and not the time the OS ran other processes on a busy machine;
    the wall-clock gaps are checked loosely too.
    """
    storage = SQLiteStorage(tmp_path / "fair.db")
    cpu_gaps: list[float] = []
    wall_gaps: list[float] = []
    done = False

    async def ticker() -> None:
        cpu, wall = time.thread_time(), time.perf_counter()
        while not done:
            await asyncio.sleep(0)
            now_cpu, now_wall = time.thread_time(), time.perf_counter()
            cpu_gaps.append(now_cpu - cpu)
            wall_gaps.append(now_wall - wall)
            cpu, wall = now_cpu, now_wall

    gc.collect()
    gc.disable()  # a full collection of this test process's heap is not the storage's pause
    try:
        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        for i in range(100_000):
            await storage.set(f"k{i % 1000}", {"step": "ask_age", "n": i % 1000})
        done = True
        await task
    finally:
        gc.enable()
        await storage.close()
    wall_gaps.sort()
    assert len(cpu_gaps) > 20
    assert max(cpu_gaps) < 0.010, f"the loop ran {max(cpu_gaps) * 1e3:.1f} ms of inline work"
    assert wall_gaps[len(wall_gaps) // 2] < 0.010
    assert wall_gaps[-1] < 0.5


@pytest.mark.parametrize("fault", ["deleted", "replaced", "directory-removed"])
async def test_writes_fail_once_the_file_is_gone(tmp_path: Path, fault: str) -> None:
    """Deleting or replacing the open database makes writes raise within a second.

    Until then a write may still land in the unlinked file; after it, every call raises
    BackendUnavailableError naming the path, and close() still works.
    """
    directory = tmp_path / "data"
    directory.mkdir()
    path = directory / "bot.db"
    storage = SQLiteStorage(path)
    await storage.set("before", 1)
    if fault == "deleted":
        path.unlink()
    elif fault == "replaced":
        with raw(tmp_path / "other.db") as conn:
            conn.execute("CREATE TABLE t (x)")
        os.replace(tmp_path / "other.db", path)
    else:
        shutil.rmtree(directory)
    try:
        elapsed, error = await _write_until_refused(storage, 2.0)
        assert elapsed <= 1.0, f"writes still succeeded {elapsed:.2f} s later"
        assert str(path) in str(error) and "\n" not in str(error)
        for call in (storage.set("k", 1), storage.get("before"), storage.incr("n")):
            with pytest.raises(BackendUnavailableError, match="deleted or replaced"):
                await call
    finally:
        await storage.close()
    assert _checkpoint_threads(path) == []


async def _write_until_refused(
    storage: SQLiteStorage, limit: float
) -> tuple[float, BackendUnavailableError]:
    """Write every 10 ms until a write raises BackendUnavailableError; return when and it."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        try:
            await storage.set("after", 2)
        except BackendUnavailableError as e:
            return time.monotonic() - start, e
        await asyncio.sleep(0.01)
    raise AssertionError(f"writes kept succeeding for {limit} s")


def _checkpoint_threads(path: Path) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.endswith(str(path))]


async def test_close_ends_the_checkpoint_thread(tmp_path: Path) -> None:
    """The checkpoint thread starts with the writes and ends with close(), or with the storage."""
    path = tmp_path / "threads.db"
    storage = SQLiteStorage(path)
    await storage.set_many({f"k{i}": i for i in range(600)})
    assert storage.backend.checkpointer is not None
    assert len(_checkpoint_threads(path)) == 1
    await storage.close()
    assert _checkpoint_threads(path) == []

    dropped = SQLiteStorage(tmp_path / "dropped.db")
    await dropped.set_many({f"k{i}": i for i in range(600)})
    (thread,) = _checkpoint_threads(tmp_path / "dropped.db")
    del dropped
    gc.collect()
    thread.join(5)
    assert not thread.is_alive()


async def test_read_only_never_creates_the_file(tmp_path: Path) -> None:
    """read_only=True and ?mode=ro on a missing file: one clear line naming it, no file made."""
    missing = tmp_path / "typo.db"
    with pytest.raises(BackendUnavailableError, match="does not exist") as info:
        SQLiteStorage(missing, read_only=True)
    assert str(missing) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(BackendUnavailableError, match=r"typo\.db"):
        storage_from_url(f"sqlite:///{missing}?mode=ro")
    with pytest.raises(BackendUnavailableError):
        SQLiteStorage(tmp_path / "no-dir" / "x.db", read_only=True)
    assert os.listdir(tmp_path) == []
    with pytest.raises(ConfigurationError, match="mode"):
        storage_from_url(f"sqlite:///{missing}?mode=rw")
    with pytest.raises(ConfigurationError, match="memory"):
        SQLiteStorage(":memory:", read_only=True)


async def test_read_only_reads_and_never_writes(tmp_path: Path) -> None:
    """A read-only storage reads everything (keys, TTLs) and refuses every write."""
    path = tmp_path / "bot.db"
    async with SQLiteStorage(path) as writer:
        await writer.set_many({"a": 1, "b": {"x": [1, 2]}})
        await writer.set("t", "soon", ttl=600)
    before = path.read_bytes()
    storage = storage_from_url(f"sqlite:///{path}?mode=ro")
    assert isinstance(storage, SQLiteStorage) and storage.read_only
    assert "read_only=True" in repr(storage)
    try:
        assert await storage.get_many(["a", "b"]) == {"a": 1, "b": {"x": [1, 2]}}
        assert sorted([k async for k in storage.keys()]) == ["a", "b", "t"]
        ttls = dict([kt async for kt in storage.backend.scan_ttl("")])
        assert ttls["a"] is None and 590 < (ttls["t"] or 0) <= 600
        for call in (storage.set("a", 2), storage.delete("a"), storage.incr("n"), storage.clear()):
            with pytest.raises(BackendError, match="readonly"):
                await call
        assert await storage.get("a") == 1
    finally:
        await storage.close()
    assert path.read_bytes() == before
    with raw(tmp_path / "empty.db") as conn:
        conn.execute("CREATE TABLE other (x)")
    with pytest.raises(ConfigurationError, match="no table 'gramio_storage'"):
        SQLiteStorage(tmp_path / "empty.db", read_only=True)
