"""SQLite storages side by side, in one run, on files in one temporary directory.

Part 1, **driver strategy** (why SQLiteStorage runs statements inline): the same UPSERT and
point SELECT on the same table through aiosqlite, through a dedicated worker thread over the
stdlib ``sqlite3`` (a queue in, ``call_soon_threadsafe`` out), and inline on the event loop with
``busy_timeout=0``.

Part 2, **storages**: gramio-storage's SQLiteStorage against py-key-value's DiskStore (diskcache,
SQLite underneath) and the aiogram SQLite FSM storages on PyPI, on the same session-like dict:
N ``set``, N ``get``, N read-modify-write updates over 1,000 user keys, and ``get_many(100)``
against 100 single gets. Also the per-call latency of SQLiteStorage.set (p50/p99.9/max), which is
how long one inline call holds the event loop.

Every figure is the best of several rounds (the least disturbed by the shared machine). Peers
that are not installed are reported as such and skipped.

Run: ``python bench/bench_sqlite.py [--n 20000] [--rounds 3]``; peers come from
``pip install 'py-key-value-aio[disk]' aiosqlite aiogram aiogram-sqlite-storage
aiogram-fsm-sqlitestorage``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import platform
import queue
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from _common import (
    KEYS,
    SESSION,
    USERS,
    Op,
    aiogram_ops,
    ops_per_second,
    py_key_value_ops,
    storage_ops,
)
from gramio_storage.sqlite import SQLiteStorage

SESSION_JSON = msgspec.json.encode(SESSION).decode()
DDL = "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL)"
UPSERT = "INSERT INTO kv VALUES (?, ?, NULL) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
SELECT = "SELECT value, expires_at FROM kv WHERE key = ?"


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


class Contender:
    def __init__(
        self,
        name: str,
        set_: Op,
        get: Op,
        update: Op | None = None,
        get_many: Callable[[list[str]], Awaitable[Any]] | None = None,
        close: Callable[[], Awaitable[Any]] | None = None,
        scale: int = 1,
    ) -> None:
        self.name, self.set, self.get, self.update = name, set_, get, update
        self.get_many, self.close = get_many, close
        # Slow peers run n // scale operations per round: ops/s stays comparable, the run short.
        self.scale = scale


def wal(conn: sqlite3.Connection) -> sqlite3.Connection:
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(DDL)
    return conn


# ---------------------------------------------------------------------- part 1: drivers


async def driver_aiosqlite(path: str) -> Contender:
    import aiosqlite

    db = await aiosqlite.connect(path, isolation_level=None)
    await db.execute("PRAGMA journal_mode = WAL")
    await db.execute("PRAGMA synchronous = NORMAL")
    await db.execute(DDL)

    async def set_(i: int) -> None:
        await db.execute(UPSERT, (KEYS[i % USERS], SESSION_JSON))

    async def get(i: int) -> Any:
        return await db.execute_fetchall(SELECT, (KEYS[i % USERS],))  # one thread hop

    return Contender(
        f"aiosqlite {version('aiosqlite')} (thread hop per call)", set_, get, close=db.close
    )


async def driver_worker_thread(path: str) -> Contender:
    conn = wal(sqlite3.connect(path, isolation_level=None, check_same_thread=False))
    jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
    loop = asyncio.get_running_loop()

    def deliver(future: asyncio.Future[Any], result: Any) -> None:
        if not future.done():
            future.set_result(result)

    def worker() -> None:
        while (job := jobs.get()) is not None:
            future, sql, params, fetch = job
            cursor = conn.execute(sql, params)
            loop.call_soon_threadsafe(deliver, future, cursor.fetchone() if fetch else None)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()

    async def set_(i: int) -> None:
        future = loop.create_future()
        jobs.put((future, UPSERT, (KEYS[i % USERS], SESSION_JSON), False))
        await future

    async def get(i: int) -> Any:
        future = loop.create_future()
        jobs.put((future, SELECT, (KEYS[i % USERS],), True))
        return await future

    async def close() -> None:
        jobs.put(None)
        await asyncio.to_thread(thread.join)
        conn.close()

    return Contender("stdlib sqlite3 on a dedicated worker thread", set_, get, close=close)


async def driver_inline(path: str) -> Contender:
    conn = wal(sqlite3.connect(path, isolation_level=None))
    conn.execute("PRAGMA busy_timeout = 0")
    # Automatic checkpoints stay on here, as in the other two strategies, so all three pay for
    # checkpointing the same way (SQLiteStorage moves them to a thread instead).
    execute = conn.cursor().execute

    async def set_(i: int) -> None:
        execute(UPSERT, (KEYS[i % USERS], SESSION_JSON))

    async def get(i: int) -> Any:
        return execute(SELECT, (KEYS[i % USERS],)).fetchone()

    async def close() -> None:
        conn.close()

    return Contender("stdlib sqlite3 inline, busy_timeout=0 (chosen)", set_, get, close=close)


# ---------------------------------------------------------------------- part 2: storages


async def gramio(path: str) -> Contender:
    storage = SQLiteStorage(path)
    name = "gramio-storage SQLiteStorage"
    return Contender(name, *storage_ops(storage), storage.get_many, storage.close)


async def py_key_value(path: str) -> Contender:
    from key_value.aio.stores.disk import DiskStore

    store = DiskStore(directory=path)

    async def get_many(keys: list[str]) -> Any:
        return await store.get_many(keys, collection="sessions")

    async def close() -> None:
        await store.close()

    name = f"py-key-value {version('py-key-value-aio')} DiskStore"
    return Contender(name, *py_key_value_ops(store), get_many, close, scale=5)


def _aiogram_contender(name: str, storage: Any) -> Contender:
    # Both commit with SQLite's defaults (rollback journal, synchronous=FULL): one fsync per
    # write, a few hundred writes per second, hence far fewer operations.
    return Contender(name, *aiogram_ops(storage), close=storage.close, scale=100)


async def aiogram_sqlite_storage(path: str) -> Contender:
    from aiogram_sqlite_storage.sqlitestore import SQLStorage

    storage = SQLStorage(path, serializing_method="json")
    name = f"aiogram-sqlite-storage {version('aiogram-sqlite-storage')} (json)"
    return _aiogram_contender(name, storage)


async def aiogram_fsm_sqlitestorage(path: str) -> Contender:
    from aiogram_fsm_sqlitestorage import SQLiteStorage as FSMSQLiteStorage

    storage = FSMSQLiteStorage(path)
    name = f"aiogram-fsm-sqlitestorage {version('aiogram-fsm-sqlitestorage')}"
    return _aiogram_contender(name, storage)


async def set_latency(path: str, n: int) -> list[float]:
    """Per-call wall time of SQLiteStorage.set, in seconds, sorted (how long it holds the loop)."""
    storage = SQLiteStorage(path)
    times = []
    try:
        for i in range(n):
            start = time.perf_counter()
            await storage.set(KEYS[i % USERS], SESSION)
            times.append(time.perf_counter() - start)
    finally:
        await storage.close()
    return sorted(times)


async def get_many_speedup(c: Contender, rounds: int) -> tuple[float, float]:
    """Microseconds for 100 single gets and for one get_many of the same 100 keys."""
    assert c.get_many is not None
    batches = range(USERS // 100)
    singles = many = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for b in batches:
            for i in range(b * 100, b * 100 + 100):
                await c.get(i)
        singles = min(singles, (time.perf_counter() - start) / len(batches))
        start = time.perf_counter()
        for b in batches:
            found = await c.get_many(KEYS[b * 100 : b * 100 + 100])
        many = min(many, (time.perf_counter() - start) / len(batches))
    assert len(found) == 100, "get_many must find the 100 keys just written"
    return singles * 1e6, many * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n, rounds = args.n, args.rounds

    print(
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"msgspec {msgspec.__version__}, {platform.machine()}, {os.cpu_count()} cores"
    )
    print(
        f"value: {len(SESSION_JSON)}-byte JSON session dict, {USERS} keys, "
        f"n={n}, best of {rounds}\n"
    )

    with tempfile.TemporaryDirectory(prefix="bench-sqlite-") as tmp:
        print("Part 1: driver strategy (raw statements, no storage layer)")
        print(f"{'strategy':52} {'set ops/s':>12} {'get ops/s':>12}")
        for i, make in enumerate((driver_aiosqlite, driver_worker_thread, driver_inline)):
            try:
                c = await make(os.path.join(tmp, f"driver{i}.db"))
            except ImportError as e:
                print(f"{make.__name__:52} skipped: {e}")
                continue
            await c.set(0)
            s = await ops_per_second(c.set, n, rounds)
            g = await ops_per_second(c.get, n, rounds)
            print(f"{c.name:52} {s:>12,.0f} {g:>12,.0f}")
            if c.close is not None:
                await c.close()

        print("\nPart 2: storages (set/get/update of the session dict)")
        makers = (
            ("gramio", gramio),
            ("pkv", py_key_value),
            ("aiogram-sqlite-storage", aiogram_sqlite_storage),
            ("aiogram-fsm-sqlitestorage", aiogram_fsm_sqlitestorage),
        )
        results: dict[str, dict[str, float]] = {}
        many: dict[str, tuple[float, float]] = {}
        for tag, make in makers:
            try:
                c = await make(os.path.join(tmp, f"{tag}.db" if tag != "pkv" else "pkv"))
            except ImportError as e:
                print(f"  {tag}: skipped ({e})")
                continue
            await c.set(0)
            m = max(100, n // c.scale)
            row = {
                "set": await ops_per_second(c.set, m, rounds),
                "get": await ops_per_second(c.get, m, rounds),
            }
            assert c.update is not None
            row["update"] = await ops_per_second(c.update, m, rounds)
            row["set+get"] = 1 / (1 / row["set"] + 1 / row["get"])
            results[c.name] = row
            if c.get_many is not None:
                for i in range(USERS):
                    await c.set(i)
                many[c.name] = await get_many_speedup(c, rounds)
            if c.close is not None:
                await c.close()

        cols = ["set", "get", "update", "set+get"]
        print(f"{'storage':52} " + " ".join(f"{col + ' ops/s':>15}" for col in cols))
        for name, row in results.items():
            print(f"{name:52} " + " ".join(f"{row[col]:>15,.0f}" for col in cols))

        names = list(results)
        if names and names[0].startswith("gramio"):
            mine = results[names[0]]
            print("\nratios (SQLiteStorage / peer, higher is better):")
            for peer in names[1:]:
                ratios = "  ".join(f"{col} {mine[col] / results[peer][col]:6.2f}x" for col in cols)
                print(f"  vs {peer:48} {ratios}")

        print("\nget_many(100) vs 100 single gets (microseconds per 100 keys):")
        for name, (singles, batch) in many.items():
            print(
                f"  {name:50} 100 x get {singles:8.0f} us   get_many {batch:8.0f} us   "
                f"{singles / batch:5.1f}x"
            )

        times = await set_latency(os.path.join(tmp, "latency.db"), max(n, 20_000))
        pct = lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1e6  # noqa: E731
        print(
            f"\nSQLiteStorage.set latency over {len(times):,} calls (time the loop is held): "
            f"p50 {pct(0.5):.0f} us, p99 {pct(0.99):.0f} us, p99.9 {pct(0.999):.0f} us, "
            f"max {times[-1] * 1e6:.0f} us"
        )


if __name__ == "__main__":
    if sys.version_info < (3, 11):
        raise SystemExit("Python 3.11+ required")
    asyncio.run(main())
