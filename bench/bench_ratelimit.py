"""Rate limit checks per second on memory, SQLite and Redis, against GramIO's algorithm.

Contenders, on the same storage object and the same work: one check per call, cycling over
1,000 users, against a limit of 20 per 60 s. A fake clock moves 6 ms per check, so each user
comes back every 6 s and holds about 10 timestamps (a realistic array, always admitted):

* ``sliding``: ``RateLimiter.hit`` in the default mode, one atomic ``update()`` of the user's
  timestamp array (GramIO's key and value);
* ``fixed``: ``RateLimiter.hit`` with ``mode="fixed"``, one ``incr()`` per check;
* ``gramio``: GramIO's ``checkSlidingWindow`` ported line by line (``get``, filter, ``set``):
  what the TypeScript plugin does on the same storage, not atomic across processes or tasks.

Rounds alternate the contenders (the first slot rotates) and each figure is the best round,
per wall-clock second and per second of this process's CPU (which stays meaningful on a busy
machine; it leaves out the Redis server's work). Redis runs on a private redis-server (the
tests' helper) on a free loopback port.

Run: ``.venv/bin/python bench/bench_ratelimit.py [--n 20000] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _redis_server import redis_server  # the tests' helper that runs redis-server
from gramio_storage import BaseStorage, MemoryStorage, storage_from_url
from gramio_storage.ratelimit import RateLimiter

USERS = 1_000
LIMIT = 20
WINDOW = 60.0
STEP = 0.006  # fake seconds per check: a user returns every USERS * STEP = 6 s


class Clock:
    """A wall clock stand-in that moves ``STEP`` per check, shared by every contender."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def tick(self) -> None:
        self.now += STEP


Op = Callable[[int], Awaitable[Any]]


def gramio_check(storage: BaseStorage, clock: Clock) -> Op:
    """GramIO's ``checkSlidingWindow`` (read, filter, write back), on a gramio-storage."""
    window_ms = WINDOW * 1000

    async def check(i: int) -> bool:
        clock.tick()
        key = f"rl:gramio:{i % USERS}"
        now = math.floor(clock() * 1000)
        raw = await storage.get(key)
        timestamps = raw if isinstance(raw, list) else []
        valid = [t for t in timestamps if now - t < window_ms]
        if len(valid) >= LIMIT:
            return False
        valid.append(now)
        await storage.set(key, valid)
        return True

    return check


def contenders(storage: BaseStorage) -> dict[str, Op]:
    clock = Clock()
    sliding = RateLimiter(storage, limit=LIMIT, window=WINDOW, id="sliding", clock=clock)
    fixed = RateLimiter(storage, limit=LIMIT, window=WINDOW, id="fixed", mode="fixed", clock=clock)

    async def hit_sliding(i: int) -> bool:
        clock.tick()
        return (await sliding.hit(i % USERS)).allowed

    async def hit_fixed(i: int) -> bool:
        clock.tick()
        return (await fixed.hit(i % USERS)).allowed

    return {"sliding": hit_sliding, "fixed": hit_fixed, "gramio": gramio_check(storage, clock)}


async def measure(storage: BaseStorage, n: int, rounds: int) -> dict[str, float]:
    """Checks/s of each contender, best of ``rounds``; every check must be admitted."""
    ops = contenders(storage)
    for op in ops.values():  # warm-up: connections, prepared statements, keys created
        for i in range(USERS):
            assert await op(i)
    wall = dict.fromkeys(ops, math.inf)
    cpu = dict.fromkeys(ops, math.inf)
    names = list(ops)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            op = ops[name]
            start, start_cpu = time.perf_counter(), time.process_time()
            for i in range(n):
                if not await op(i):
                    raise AssertionError(f"{name}: a check was refused (the clock is off)")
            wall[name] = min(wall[name], time.perf_counter() - start)
            cpu[name] = min(cpu[name], time.process_time() - start_cpu)
    return {name: n / wall[name] for name in names} | {
        f"{name} cpu": n / max(cpu[name], 1e-9) for name in names
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=20_000, help="checks per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n, rounds = args.n, args.rounds
    print(
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores; "
        f"{USERS} users, n={n} checks per round, best of {rounds}\n"
    )
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ratelimit-") as tmp:
        memory = MemoryStorage()
        results["memory"] = await measure(memory, n, rounds)
        await memory.close()
        sqlite = storage_from_url(f"sqlite:///{Path(tmp) / 'limits.db'}")
        results["SQLite"] = await measure(sqlite, n, rounds)
        await sqlite.close()
        with redis_server() as server:
            redis = storage_from_url(server.url)
            results["Redis"] = await measure(redis, n, rounds)
            await redis.close()

    for unit, suffix in (("wall-clock second", ""), ("second of this process's CPU", " cpu")):
        print(f"\nchecks per {unit}:\n")
        print(
            "| backend | sliding (atomic update) | fixed (incr) | GramIO's get+set "
            "| sliding / GramIO | fixed / sliding |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for backend, row in results.items():
            sliding, fixed, gramio = (row[k + suffix] for k in ("sliding", "fixed", "gramio"))
            print(
                f"| {backend} | {sliding:,.0f} | {fixed:,.0f} | {gramio:,.0f} "
                f"| {sliding / gramio:.2f}x | {fixed / sliding:.2f}x |"
            )


if __name__ == "__main__":
    asyncio.run(main())
