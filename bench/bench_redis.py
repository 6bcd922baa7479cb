"""Redis storages side by side, in one run, against one private redis-server on loopback.

Contenders: gramio-storage ``RedisStorage``, raw redis-py + ``json`` (the floor every wrapper adds
to), aiogram's ``RedisStorage`` (``set_data``/``get_data``) and py-key-value's ``RedisStore``.
Work, on the same small session dict, cycling over 1,000 user keys:

* sequential awaited ``set``, ``get`` and read-modify-write ``update`` (only gramio-storage's
  update is atomic: the others are a plain get-then-set, so they do less work);
* ``get_many`` of 100 keys vs 100 sequential ``get`` calls (gramio-storage; raw ``MGET`` and
  py-key-value's ``get_many`` for reference);
* 64 concurrent tasks each doing set+get pairs on their own keys (pairs per second).

Contenders take turns within each round (the first slot rotates) and each figure is the best
round, the one least disturbed by other work on the machine. Every figure is reported twice:
per wall-clock second, and per second of this process's CPU, which stays meaningful on a busy
machine (it measures the client-side cost and leaves out the server's). The script starts its
own redis-server (Debian's ``redis-server`` package) on a free port and stops it at the end.

Run: ``.venv/bin/python bench/bench_redis.py [--n 2000] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import redis
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import (
    KEYS,
    SESSION,
    USERS,
    Op,
    aiogram_ops,
    bump,
    py_key_value_ops,
    storage_ops,
)
from _redis_server import redis_server  # the tests' helper that runs redis-server
from gramio_storage.redis import RedisStorage

CONCURRENCY = 64
BATCH = 100


class Contender:
    def __init__(
        self,
        name: str,
        set_: Op,
        get: Op,
        update: Op,
        get_many: Op | None = None,
        close: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self.name, self.set, self.get, self.update = name, set_, get, update
        self.get_many, self.close = get_many, close


def gramio(url: str) -> Contender:
    storage = RedisStorage.from_url(url)

    async def get_many(i: int) -> Any:
        return await storage.get_many(KEYS[:BATCH])

    return Contender("gramio-storage RedisStorage", *storage_ops(storage), get_many, storage.close)


def raw_redis(url: str) -> Contender:
    client = aioredis.Redis.from_url(url)
    keys = [f"raw:{i}" for i in range(USERS)]

    async def set_(i: int) -> None:
        await client.set(keys[i % USERS], json.dumps(SESSION))

    async def get(i: int) -> Any:
        data = await client.get(keys[i % USERS])
        return None if data is None else json.loads(data)

    async def update(i: int) -> Any:  # not atomic: a plain get-then-set
        key = keys[i % USERS]
        data = await client.get(key)
        value = bump(json.loads(data) if data is not None else dict(SESSION))
        await client.set(key, json.dumps(value))
        return value

    async def get_many(i: int) -> Any:
        return [None if d is None else json.loads(d) for d in await client.mget(keys[:BATCH])]

    return Contender("raw redis-py + json", set_, get, update, get_many, client.aclose)


def aiogram(url: str) -> Contender:
    from aiogram.fsm.storage.redis import RedisStorage as AiogramRedis

    storage = AiogramRedis(aioredis.Redis.from_url(url))
    name = "aiogram RedisStorage (set_data/get_data)"
    return Contender(name, *aiogram_ops(storage), None, storage.close)


def py_key_value(url: str) -> Contender:
    from key_value.aio.stores.redis import RedisStore

    client = aioredis.Redis.from_url(url)
    store = RedisStore(client=client)

    async def get_many(i: int) -> Any:
        return await store.get_many(KEYS[:BATCH], collection="sessions")

    return Contender("py-key-value RedisStore", *py_key_value_ops(store), get_many, client.aclose)


async def timed(op: Op, n: int) -> tuple[float, float]:
    """Wall-clock and client-CPU seconds for n sequential awaited calls."""
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(n):
        await op(i)
    return time.perf_counter() - wall, time.process_time() - cpu


async def concurrent_pairs(c: Contender, n: int) -> tuple[int, float, float]:
    """CONCURRENCY tasks share about n set+get pairs: (pairs, wall seconds, CPU seconds)."""
    per_task = max(1, n // CONCURRENCY)

    async def task(t: int) -> None:
        base = t * per_task
        for i in range(base, base + per_task):
            await c.set(i)
            await c.get(i)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(task(t) for t in range(CONCURRENCY)))
    return per_task * CONCURRENCY, time.perf_counter() - wall, time.process_time() - cpu


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="sequential operations per round")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    n, rounds = args.n, args.rounds

    with redis_server() as server:
        contenders = [gramio(server.url), raw_redis(server.url), aiogram(server.url),
                      py_key_value(server.url)]  # fmt: skip
        mine_name = contenders[0].name
        # Two views of the same runs: operations per wall-clock second (what a bot sees, but
        # at the mercy of whatever else the machine runs) and per second of this process's
        # CPU (the client-side cost, steady under load; it leaves out the server's work).
        wall: dict[str, dict[str, float]] = {c.name: {} for c in contenders}
        cpu: dict[str, dict[str, float]] = {c.name: {} for c in contenders}

        def keep(name: str, metric: str, ops: int, seconds: tuple[float, float]) -> None:
            for table, spent in ((wall, seconds[0]), (cpu, seconds[1])):
                rate = ops / max(spent, 1e-9)
                table[name][metric] = max(table[name].get(metric, 0.0), rate)

        async def hundred_gets(_: int) -> None:
            for i in range(BATCH):
                await contenders[0].get(i)

        for c in contenders:  # warm up: connections, scripts, first-use caches
            for i in range(USERS):
                await c.set(i)
            await c.update(0)
        batches = max(1, n // BATCH)
        for r in range(rounds):
            # Rotate who goes first, so a noisy moment does not always hit the same contender.
            for c in contenders[r % 4 :] + contenders[: r % 4]:
                keep(c.name, "set", n, await timed(c.set, n))
                keep(c.name, "get", n, await timed(c.get, n))
                keep(c.name, "update", n, await timed(c.update, n))
                pairs, *seconds = await concurrent_pairs(c, n)
                keep(c.name, "64 tasks set+get", pairs, (seconds[0], seconds[1]))
                if c.get_many is not None:  # batches of 100 keys
                    keep(c.name, "get_many(100)", batches * 5, await timed(c.get_many, batches * 5))
            keep(mine_name, "100 gets", batches, await timed(hundred_gets, batches))
        for c in contenders:
            for table in (wall, cpu):
                row = table[c.name]
                row["set+get"] = 1 / (1 / row["set"] + 1 / row["get"])
            if c.close is not None:
                await c.close()
        info = aioredis.Redis.from_url(server.url)
        redis_version = (await info.info("server"))["redis_version"]
        await info.aclose()

    print(f"Python {platform.python_version()}, redis-py {redis.__version__}, msgspec "
          f"{msgspec.__version__}, redis-server {redis_version}, {platform.machine()}")  # fmt: skip
    print(f"value: {len(msgspec.json.encode(SESSION))}-byte JSON session dict, {USERS} keys, "
          f"best of {rounds} rounds of {n} ops, loopback TCP")  # fmt: skip
    cols = ["set", "get", "update", "set+get", "64 tasks set+get"]
    for title, table in (("per wall-clock second", wall), ("per second of client CPU", cpu)):
        print(f"\n{'operations ' + title:42} " + " ".join(f"{c:>17}" for c in cols))
        for name, row in table.items():
            print(f"{name:42} " + " ".join(f"{row[c]:>17,.0f}" for c in cols))
        print("ratios (gramio-storage / peer, higher is better):")
        mine = table[mine_name]
        for peer in contenders[1:]:
            p = table[peer.name]
            print(f"  vs {peer.name:40} " + "  ".join(f"{c} {mine[c] / p[c]:4.2f}x" for c in cols))

    mine = wall[mine_name]
    print(f"\nbatches of {BATCH} keys per wall-clock second:")
    for name, row in wall.items():
        if "get_many(100)" in row:
            print(f"  {name:42} get_many(100) {row['get_many(100)']:>8,.0f}/s")
    print(f"  {mine_name:42} 100 x get     {mine['100 gets']:>8,.0f}/s")
    print(f"  get_many(100) is {mine['get_many(100)'] / mine['100 gets']:.1f}x faster than "
          f"100 sequential gets (target >= 20x)")  # fmt: skip
    raw_name, pkv_name = contenders[1].name, contenders[3].name
    print("\ntargets, set+get:")
    for title, table in (("wall clock", wall), ("client CPU", cpu)):
        m = table[mine_name]["set+get"]
        print(f"  {title}: {m / table[raw_name]['set+get']:.2f}x raw redis-py+json (>= 1.0x), "
              f"{m / table[pkv_name]['set+get']:.2f}x py-key-value (>= 1.2x)")  # fmt: skip


if __name__ == "__main__":
    if sys.version_info < (3, 11):
        raise SystemExit("Python 3.11+ required")
    asyncio.run(main())
