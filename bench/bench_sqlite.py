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

Part 3, **before/after** (``--baseline SRC``): SQLiteStorage from another checkout's ``src``
(e.g. a ``git worktree`` at an older commit) against this one, alternating child processes
round by round so both see the same machine: the same set/get/update work as part 2, the
per-call latency of ``set``, and a sustained write of unique 500-byte values with the largest
WAL a sampling thread saw.

Part 4, **checkpoint strategies** (``--strategies``): raw ``sqlite3`` UPSERTs of unique 500-byte
values, yielding every 5 ms as SQLiteStorage does, with the WAL checkpointed in each of the ways
considered for it; writes/s, the largest WAL and the gaps a 1 ms ticker task saw.

Run: ``python bench/bench_sqlite.py [--n 20000] [--rounds 3] [--baseline /tmp/base/src]``;
peers come from ``pip install 'py-key-value-aio[disk]' aiosqlite aiogram aiogram-sqlite-storage
aiogram-fsm-sqlitestorage``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import queue
import sqlite3
import subprocess
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


# ---------------------------------------------------------------------- part 3: before/after


async def one_round(tmp: str, n: int, unique: int) -> dict[str, float]:
    """One round of SQLiteStorage's figures (run in a child process by --baseline)."""
    c = await gramio(os.path.join(tmp, "round.db"))
    await c.set(0)
    row = {
        "set": await ops_per_second(c.set, n, 1),
        "get": await ops_per_second(c.get, n, 1),
    }
    assert c.update is not None and c.close is not None
    row["update"] = await ops_per_second(c.update, n, 1)
    row["set+get"] = 1 / (1 / row["set"] + 1 / row["get"])
    # The same per second of the loop thread's CPU time: what a call costs the loop, without
    # the time other processes of a shared machine took the core away.
    row["cpu set"] = await cpu_ops_per_second(c.set, n)
    row["cpu get"] = await cpu_ops_per_second(c.get, n)
    row["cpu set+get"] = 1 / (1 / row["cpu set"] + 1 / row["cpu get"])
    await c.close()
    times = await set_latency(os.path.join(tmp, "latency.db"), n)
    row["p50"], row["p99"] = times[len(times) // 2] * 1e6, times[int(0.99 * len(times))] * 1e6
    row["max"] = times[-1] * 1e6
    row["unique/s"], row["wal_mib"], row["db_mib"] = await unique_writes(
        os.path.join(tmp, "unique.db"), unique
    )
    return row


async def cpu_ops_per_second(op: Op, n: int) -> float:
    """``n`` awaited calls of ``op(i)`` per second of this thread's CPU time."""
    start = time.thread_time()
    for i in range(n):
        await op(i)
    return n / (time.thread_time() - start)


async def unique_writes(path: str, n: int) -> tuple[float, float, float]:
    """``n`` back-to-back sets of unique 500-byte values: writes/s, largest WAL and db (MiB)."""
    storage = SQLiteStorage(path)
    largest = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                largest[0] = max(largest[0], os.stat(path + "-wal").st_size)
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    value = "x" * 498
    start = time.perf_counter()
    for i in range(n):
        await storage.set(f"u:{i:08d}", value)
    elapsed = time.perf_counter() - start
    stop.set()
    watcher.join()
    await storage.close()
    return n / elapsed, largest[0] / 2**20, os.stat(path).st_size / 2**20


def before_after(baseline: str, n: int, rounds: int, unique: int) -> None:
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    sides = {"before": os.path.abspath(baseline), "after": os.path.abspath(here)}
    best: dict[str, dict[str, float]] = {}
    for _ in range(rounds):
        for side, src in sides.items():
            env = {**os.environ, "PYTHONPATH": src}
            args = ["--one-round", "--n", str(n), "--unique", str(unique)]
            out = subprocess.run(  # noqa: S603 - this very script, with our own arguments
                [sys.executable, __file__, *args], env=env, check=True, capture_output=True
            ).stdout
            row = json.loads(out.decode().splitlines()[-1])
            mine = best.setdefault(side, {})
            for col, value in row.items():
                if col in ("p50", "p99", "max", "wal_mib", "db_mib"):  # lower is better / worst
                    worst = col in ("wal_mib", "db_mib")
                    default = -1.0 if worst else float("inf")
                    pick = max if worst else min
                    mine[col] = pick(mine.get(col, default), value)
                else:
                    mine[col] = max(mine.get(col, 0.0), value)
    print(f"\nPart 3: before/after, alternating processes, best of {rounds} (WAL: largest seen)")
    print(f"  before: {sides['before']}\n  after:  {sides['after']}")
    groups = [
        ["set", "get", "update", "set+get", "cpu set", "cpu get", "cpu set+get"],
        ["p50", "p99", "max", "unique/s", "wal_mib", "db_mib"],
    ]
    for cols in groups:
        print(f"{'':13}" + "".join(f"{c:>13}" for c in cols))
        for side, row in best.items():
            print(f"{side:13}" + "".join(f"{row[c]:>13,.0f}" for c in cols))
        ratio = {c: best["after"][c] / best["before"][c] for c in cols if best["before"][c]}
        print(f"{'after/before':13}" + "".join(f"{ratio.get(c, 0):>12.2f}x" for c in cols))


# ---------------------------------------------------------------------- part 4: checkpoints

STRATEGIES = {
    "passive-thread": "PASSIVE in a thread every 500 writes (the old design)",
    "loop-auto-1000": "wal_autocheckpoint=1000 on the loop's connection",
    "loop-auto-8192": "wal_autocheckpoint=8192 on the loop's connection",
    "loop-auto-8192+thread": "autocheckpoint 8192 on the loop + PASSIVE thread",
    "thread-restart": "thread: PASSIVE, then RESTART past 16 MiB (chosen)",
    "thread-truncate": "thread: PASSIVE, then TRUNCATE past 16 MiB",
}


class _CheckpointThread:
    def __init__(self, path: str, big: str | None) -> None:
        self.path, self.big = path, big
        self.wake, self.stop = threading.Event(), False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        while True:
            self.wake.wait()
            self.wake.clear()
            if self.stop:
                break
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                if self.big and os.stat(self.path + "-wal").st_size >= 16 * 2**20:
                    conn.execute(f"PRAGMA wal_checkpoint({self.big})").fetchall()
        conn.close()

    def close(self) -> None:
        self.stop = True
        self.wake.set()
        self.thread.join()


async def strategy(path: str, name: str, n: int) -> tuple[float, float, float, float, float]:
    """writes/s, largest WAL (MiB), max ticker gap (ms), and the loop's time inside write
    statements that took over 1 ms (total ms, and the longest) for one strategy."""
    conn = wal(sqlite3.connect(path, isolation_level=None, check_same_thread=False))
    conn.execute("PRAGMA busy_timeout = 0")
    conn.execute("PRAGMA journal_size_limit = 16777216")
    auto = {"loop-auto-1000": 1000, "loop-auto-8192": 8192, "loop-auto-8192+thread": 8192}
    conn.execute(f"PRAGMA wal_autocheckpoint = {auto.get(name, 0)}")
    thread = None
    if name in ("passive-thread", "loop-auto-8192+thread"):
        thread = _CheckpointThread(path, None)
    elif name.startswith("thread-"):
        thread = _CheckpointThread(path, name.removeprefix("thread-").upper())
    execute = conn.cursor().execute
    gaps: list[float] = []
    done = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    value, largest, turn = "x" * 498, 0, time.perf_counter()
    stalls: list[float] = []
    start = time.perf_counter()
    for i in range(n):
        if time.perf_counter() - turn > 0.005:
            await asyncio.sleep(0)
            turn = time.perf_counter()
        delay = 0.0005
        while True:
            try:
                began = time.perf_counter()
                execute(UPSERT, (f"u:{i:08d}", value))
                took = time.perf_counter() - began
                if took > 0.001:  # an fsync on the loop (or the OS taking the core away)
                    stalls.append(took)
                break
            except sqlite3.OperationalError:  # a RESTART holds the lock: wait in asyncio
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
        if thread is not None and i % 500 == 499:
            thread.wake.set()
        if i % 256 == 0:
            with contextlib.suppress(OSError):
                largest = max(largest, os.stat(path + "-wal").st_size)
    rate = n / (time.perf_counter() - start)
    done = True
    await task
    if thread is not None:
        thread.close()
    conn.close()
    longest = max(stalls, default=0.0)
    return rate, largest / 2**20, max(gaps) * 1e3, sum(stalls) * 1e3, longest * 1e3


async def strategies(n: int) -> None:
    print(f"Part 4: checkpoint strategies, {n:,} unique 500-byte UPSERTs each")
    print(
        f"{'strategy':58} {'writes/s':>9} {'WAL MiB':>8} {'max gap':>8} "
        f"{'in slow statements':>19} {'longest':>8}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-") as tmp:
        for name, label in STRATEGIES.items():
            rate, largest, gap, stalled, longest = await strategy(
                os.path.join(tmp, f"{name}.db"), name, n
            )
            print(
                f"{label:58} {rate:>9,.0f} {largest:>8.1f} {gap:>6.1f}ms "
                f"{stalled:>17.0f}ms {longest:>6.1f}ms"
            )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", help="another checkout's src/ to compare against (part 3)")
    parser.add_argument("--unique", type=int, default=100_000, help="unique writes in part 3")
    parser.add_argument("--strategies", action="store_true", help="part 4 only")
    parser.add_argument("--one-round", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    n, rounds = args.n, args.rounds
    if args.one_round:
        with tempfile.TemporaryDirectory(prefix="bench-sqlite-") as tmp:
            print(json.dumps(await one_round(tmp, n, args.unique)))
        return
    if args.baseline:
        before_after(args.baseline, n, rounds, args.unique)
        return
    if args.strategies:
        await strategies(args.unique)
        return

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
