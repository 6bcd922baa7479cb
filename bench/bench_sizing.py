"""Sizing: what one million bot users (a session and an FSM state each) cost on every backend.

For each backend the script stores ``--users`` users as two keys each, the way a bot on aiogram
with the session middleware does:

* ``session:<user id>``: the session dict of the other benchmarks (75 bytes of JSON);
* ``fsm:<user id>:<user id>:state``: an FSM state name (``"Form:age"``), as ``AiogramStorage``
  writes it.

User ids are 10 digits (``1000000000 + i``), like today's Telegram ids. Keys have no TTL. Then it
measures, on the full data set:

* **size**: memory per key (tracemalloc: bytes Python allocated; and the process's RSS growth),
  the SQLite file, Redis ``INFO memory`` ``used_memory`` growth, PostgreSQL
  ``pg_total_relation_size`` of the table (heap, TOAST and indexes); for Cloudflare KV, the
  bytes KV stores and bills (key + value);
* **ops/s**: sequential awaited ``get``, ``set`` and ``update`` of random users' sessions (one
  call at a time, so each figure is a round trip plus the library), best of ``--rounds``, per
  wall-clock second and per second of the bot process's CPU (the client-side cost; the
  server's work is not in it, and a busy machine disturbs it much less than the wall clock).

Memory runs in child processes (so RSS is the storage's alone). Redis and PostgreSQL are private
servers on loopback started by ``tests/_redis_server.py`` and ``tests/_pg_server.py``. Cloudflare
KV is the local Miniflare emulator of ``tests/_cloudflare_server.py`` (``npm ci`` in
``tests/cloudflare`` first) with ``--kv-users`` users: its speed is the emulator's, not
Cloudflare's (a REST call to Cloudflare takes tens of milliseconds), and Cloudflare's REST API
allows 1,200 requests per 5 minutes per token.

Run: ``.venv/bin/python bench/bench_sizing.py [--users 1000000] [--ops 20000] [--rounds 3]
[--only memory,sqlite,redis,postgres,cloudflare] [--json out.json]``. The results are in
``docs/sizing.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from _common import SESSION, bump

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from gramio_storage import JSON, BaseStorage

BASE_ID = 1_000_000_000
STATE = "Form:age"
BATCH = 5_000  # users per set_many call while filling (10,000 keys)
BACKENDS = ["memory", "sqlite", "redis", "postgres", "cloudflare"]


def session_key(i: int) -> str:
    """The session key of user number ``i``."""
    return f"session:{BASE_ID + i}"


def state_key(i: int) -> str:
    """The FSM state key of user number ``i`` (aiogram's default key builder, chat = user)."""
    uid = BASE_ID + i
    return f"fsm:{uid}:{uid}:state"


def batches(users: int, per_call: int = BATCH) -> Iterator[dict[str, Any]]:
    """The data set, ``per_call`` users (two keys each) at a time."""
    for start in range(0, users, per_call):
        batch: dict[str, Any] = {}
        for i in range(start, min(start + per_call, users)):
            batch[session_key(i)] = SESSION
            batch[state_key(i)] = STATE
        yield batch


def payload_bytes(users: int) -> int:
    """Key and value bytes of the data set (what Cloudflare KV stores and bills)."""
    session = len(JSON.encode(SESSION))
    state = len(JSON.encode(STATE))
    return sum(len(session_key(i)) + session + len(state_key(i)) + state for i in range(users))


async def fill(storage: BaseStorage, users: int, per_call: int = BATCH) -> float:
    """Write the data set with ``set_many``, ``per_call`` users a call; return the seconds."""
    start = time.perf_counter()
    for batch in batches(users, per_call):
        await storage.set_many(batch)
    return time.perf_counter() - start


async def ops(
    storage: BaseStorage, users: int, n: int, rounds: int, atomic: bool
) -> dict[str, float]:
    """Best-of-``rounds`` rates of sequential get, set and update on random users' sessions."""
    rng = random.Random(11)
    result: dict[str, float] = {}
    kinds = ["get", "set", "update"] if atomic else ["get", "set"]
    for kind in kinds:
        best = best_cpu = float("inf")
        for _ in range(rounds):
            keys = [session_key(rng.randrange(users)) for _ in range(n)]
            start, start_cpu = time.perf_counter(), time.process_time()
            if kind == "get":
                for key in keys:
                    await storage.get(key)
            elif kind == "set":
                for key in keys:
                    await storage.set(key, SESSION)
            else:
                for key in keys:
                    await storage.update(key, bump, default=dict(SESSION))
            best = min(best, time.perf_counter() - start)
            best_cpu = min(best_cpu, time.process_time() - start_cpu)
        result[kind] = n / best
        # Per second of this process's CPU: the client-side cost, which a busy machine
        # disturbs far less than the wall clock (a server's work is not in it).
        result[f"{kind} cpu"] = n / best_cpu
    return result


async def check(storage: BaseStorage, users: int) -> None:
    """The data set is really there (a bench that wrote nothing would look very cheap)."""
    last = users - 1
    found = await storage.get_many([session_key(0), state_key(last)])
    assert found == {session_key(0): SESSION, state_key(last): STATE}, found


def rss_bytes() -> int:
    """This process's resident set size, from /proc."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


# ---------------------------------------------------------------------- one backend each


async def measure_memory(args: argparse.Namespace, traced: bool) -> dict[str, Any]:
    """MemoryStorage (encoded, the default): bytes per key, then ops/s (untraced run only)."""
    from gramio_storage import MemoryStorage

    storage = MemoryStorage()
    gc.collect()
    if traced:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
    rss_before = rss_bytes()
    seconds = await fill(storage, args.users)
    gc.collect()
    await check(storage, args.users)
    if traced:
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        return {"traced_bytes": grown}
    return {
        "rss_bytes": rss_bytes() - rss_before,
        "fill_seconds": seconds,
        "ops": await ops(storage, args.users, args.ops, args.rounds, True),
    }


async def measure_sqlite(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """SQLiteStorage on a file: its size once closed (WAL checkpointed), then ops/s."""
    from gramio_storage.sqlite import SQLiteStorage

    path = workdir / "sizing.db"
    storage = SQLiteStorage(path)
    seconds = await fill(storage, args.users)
    await check(storage, args.users)
    await storage.close()
    size = sum(p.stat().st_size for p in workdir.glob("sizing.db*"))  # noqa: ASYNC240
    storage = SQLiteStorage(path)
    try:
        rates = await ops(storage, args.users, args.ops, args.rounds, True)
    finally:
        await storage.close()
    return {"disk_bytes": size, "fill_seconds": seconds, "ops": rates}


async def measure_redis(args: argparse.Namespace) -> dict[str, Any]:
    """RedisStorage on a private redis-server: used_memory growth, then ops/s."""
    import redis.asyncio as aioredis

    from _redis_server import redis_server
    from gramio_storage.redis import RedisStorage

    with redis_server() as server:
        client = aioredis.Redis.from_url(server.url)
        try:
            before = (await client.info("memory"))["used_memory"]
            storage = RedisStorage.from_url(server.url)
            try:
                seconds = await fill(storage, args.users)
                await check(storage, args.users)
                info = await client.info("memory")
                rates = await ops(storage, args.users, args.ops, args.rounds, True)
            finally:
                await storage.close()
            version = (await client.info("server"))["redis_version"]
        finally:
            await client.aclose()
    return {
        "used_memory_bytes": info["used_memory"] - before,
        "used_memory_rss": info["used_memory_rss"],
        "fill_seconds": seconds,
        "ops": rates,
        "server": f"redis {version}",
    }


async def measure_postgres(args: argparse.Namespace) -> dict[str, Any]:
    """PostgresStorage on a private server: pg_total_relation_size after VACUUM, then ops/s."""
    import asyncpg

    from _pg_server import postgres_server
    from gramio_storage.postgres import PostgresStorage

    with postgres_server() as server:
        storage = PostgresStorage(server.dsn)
        try:
            await storage.open()
            seconds = await fill(storage, args.users)
            await check(storage, args.users)
            con = await asyncpg.connect(server.dsn)
            try:
                await con.execute("VACUUM ANALYZE gramio_storage")
                sizes = await con.fetchrow(
                    "SELECT pg_total_relation_size('gramio_storage') AS total, "
                    "pg_relation_size('gramio_storage') AS heap, "
                    "pg_indexes_size('gramio_storage') AS indexes"
                )
                version = (await con.fetchval("SHOW server_version")).split()[0]
            finally:
                await con.close()
            rates = await ops(storage, args.users, args.ops, args.rounds, True)
        finally:
            await storage.close()
    return {
        "disk_bytes": sizes["total"],
        "heap_bytes": sizes["heap"],
        "index_bytes": sizes["indexes"],
        "fill_seconds": seconds,
        "ops": rates,
        "server": f"PostgreSQL {version}",
    }


async def measure_cloudflare(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """CloudflareKVStorage on the local emulator, with ``--kv-users`` users: ops/s only."""
    from _cloudflare_server import start_emulator, stop_emulator

    users = min(args.kv_users, args.users)
    emulator = start_emulator(workdir, namespaces=1)
    try:
        storage = emulator.storage()
        try:
            # Small bulk writes: the emulator takes seconds per thousand keys on a busy machine.
            seconds = await fill(storage, users, per_call=100)
            await check(storage, users)
            rates = await ops(storage, users, min(args.ops, 500), args.rounds, False)
        finally:
            await storage.close()
    finally:
        stop_emulator(emulator)
    return {"users": users, "fill_seconds": seconds, "ops": rates}


# ---------------------------------------------------------------------- driver


def run_child(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """Measure one backend in a fresh interpreter; return its JSON result."""
    argv = [sys.executable, __file__, "--child", backend, "--users", str(args.users)]
    argv += ["--ops", str(args.ops), "--rounds", str(args.rounds), "--kv-users", str(args.kv_users)]
    # Our own script and arguments; the child's stderr (progress, errors) passes through.
    out = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True).stdout  # noqa: S603
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def child(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """The measurement a child process runs."""
    with tempfile.TemporaryDirectory(prefix="gramio-sizing-") as tmp:
        workdir = Path(tmp)
        if backend == "memory-traced":
            return await measure_memory(args, traced=True)
        if backend == "memory":
            return await measure_memory(args, traced=False)
        if backend == "sqlite":
            return await measure_sqlite(args, workdir)
        if backend == "redis":
            return await measure_redis(args)
        if backend == "postgres":
            return await measure_postgres(args)
        if backend == "cloudflare":
            return await measure_cloudflare(args, workdir)
    raise SystemExit(f"unknown backend {backend!r}")


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    """Print the per-key and per-million-users table, and the rates."""
    users, keys = args.users, 2 * args.users
    scale = 1_000_000 / users
    print(
        f"Python {platform.python_version()}, msgspec {msgspec.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(
        f"{users:,} users = {keys:,} keys (a {len(JSON.encode(SESSION))}-byte session and a "
        f"{len(JSON.encode(STATE))}-byte FSM state each); ops: {args.ops:,} random sessions, "
        f"best of {args.rounds}\n"
    )
    columns = ("get", "set", "update", "get cpu", "set cpu", "update cpu")
    print(
        f"{'backend':44} {'bytes/key':>10} {'per 1M users':>13} {'fill s':>8} "
        + " ".join(f"{c + '/s':>13}" for c in columns)
    )

    def row(name: str, size: float | None, result: dict[str, Any]) -> None:
        rates = result.get("ops", {})
        per_key = f"{size / keys:,.0f}" if size is not None else "-"
        per_million = f"{size * scale / 2**20:,.0f} MiB" if size is not None else "-"
        fill = result.get("fill_seconds")
        print(
            f"{name:44} {per_key:>10} {per_million:>13} "
            f"{(f'{fill:.1f}' if fill is not None else '-'):>8} "
            + " ".join(f"{rates[k]:>13,.0f}" if k in rates else f"{'-':>13}" for k in columns)
        )

    if "memory-traced" in results:
        traced = results["memory-traced"]["traced_bytes"]
        row("memory, Python allocations (tracemalloc)", traced, {})
    if "memory" in results:
        r = results["memory"]
        row("memory, process RSS growth", r["rss_bytes"], r)
    if "sqlite" in results:
        row("SQLite file (WAL checkpointed)", results["sqlite"]["disk_bytes"], results["sqlite"])
    if "redis" in results:
        r = results["redis"]
        row(f"{r['server']} used_memory", r["used_memory_bytes"], r)
        print(f"{'':44}   server RSS {r['used_memory_rss'] / 2**20:,.0f} MiB in all")
    if "postgres" in results:
        r = results["postgres"]
        row(f"{r['server']} pg_total_relation_size", r["disk_bytes"], r)
        print(
            f"{'':44}   heap {r['heap_bytes'] / keys:,.0f} B/key, "
            f"indexes {r['index_bytes'] / keys:,.0f} B/key"
        )
    if "cloudflare" in results:
        r = results["cloudflare"]
        row("Cloudflare KV stored (key+value); emulator", payload_bytes(users), {})
        row(f"  ops on the local emulator, {r['users']:,} users", None, r)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--ops", type=int, default=20_000, help="operations per rate, per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kv-users", type=int, default=2_000, help="users on the KV emulator")
    parser.add_argument("--only", default=",".join(BACKENDS), help="comma-separated backends")
    parser.add_argument(
        "--json", type=Path, help="keep the raw results here (a rerun with --only adds to them)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child(args.child, args))))
        return
    results: dict[str, dict[str, Any]] = {}
    if args.json and args.json.exists():  # add to an earlier run of the same size
        saved = json.loads(args.json.read_text())
        if saved["users"] == args.users:
            results = saved["results"]
    for backend in args.only.split(","):
        names = ["memory-traced", "memory"] if backend == "memory" else [backend]
        for name in names:
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            try:
                results[name] = run_child(name, args)
            except subprocess.CalledProcessError:
                print(f"{name} failed (its traceback is above); going on", file=sys.stderr)
                continue
            if args.json:  # after each backend, so a failure later loses nothing
                args.json.write_text(json.dumps({"users": args.users, "results": results}))
    report(results, args)


if __name__ == "__main__":
    if sys.version_info < (3, 11):
        raise SystemExit("Python 3.11+ required")
    main()
