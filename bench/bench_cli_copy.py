"""`gramio-storage copy` against a naive get/set loop through the library, in one run.

Migrates N keys (default 100,000; half of them with TTLs between 1 h and 2 h, the rest
without) from a SQLite file to a private loopback redis-server, four ways:

* ``cli copy`` (subprocess): the console script as a user runs it; wall time of the whole
  process, interpreter start-up and imports included.
* ``cli copy`` (in-process): the same code path through ``main()``; the copy alone.
* naive get/set: ``async for key in src.keys(): await dst.set(key, await src.get(key))``,
  the loop a user would write first (it drops every TTL).
* naive get/ttl/set: the same loop made correct, ``dst.set(key, value, ttl=await src.ttl(key))``.

Each figure is the best of ``--rounds`` (the least disturbed by a shared machine); the
destination database is flushed before every round and its contents checked after it.

Run: ``python bench/bench_cli_copy.py [--n 100000] [--rounds 2]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _redis_server import RedisServer, flush, redis_server
from gramio_storage import storage_from_url
from gramio_storage.cli import main as cli_main

SCRIPT = Path(sys.executable).parent / "gramio-storage"


async def fill(url: str, n: int) -> None:
    rng = random.Random(1)
    async with storage_from_url(url) as storage:
        backend = storage.backend  # raw bytes with a TTL each, as the CLI moves them
        plain = []
        for i in range(n):
            key = f"session:{i}"
            data = msgspec.json.encode(
                {"step": "ask_age", "name": f"user {i}", "age": 30, "tags": ["new", "ru"]}
            )
            if i % 2:
                await backend.set(key, data, rng.uniform(3600, 7200))
            else:
                plain.append((key, data))
        for start in range(0, len(plain), 1000):
            await backend.set_many(plain[start : start + 1000], None)


async def naive(src_url: str, dst_url: str, with_ttl: bool) -> None:
    async with storage_from_url(src_url) as src, storage_from_url(dst_url) as dst:
        async for key in src.keys():
            value = await src.get(key)
            if with_ttl:
                await dst.set(key, value, ttl=await src.ttl(key))
            else:
                await dst.set(key, value)


def cli_subprocess(src_url: str, dst_url: str) -> None:
    done = subprocess.run(  # noqa: S603 - our own console script
        [str(SCRIPT), "-q", "copy", src_url, dst_url], capture_output=True, check=False
    )
    if done.returncode:
        raise RuntimeError(done.stderr.decode())


def cli_in_process(src_url: str, dst_url: str) -> None:
    code = cli_main(["-q", "copy", src_url, dst_url])
    if code:
        raise RuntimeError(f"gramio-storage copy exited with {code}")


def check(server: RedisServer, n: int, ttls: bool) -> None:
    import redis

    with redis.Redis(host="127.0.0.1", port=server.port) as client:
        size = client.dbsize()
        with_ttl = (
            sum(1 for key in client.scan_iter(count=1000) if client.pttl(key) > 0) if ttls else None
        )
    if size != n:
        raise RuntimeError(f"expected {n} keys in Redis, found {size}")
    if ttls and with_ttl != n // 2:
        raise RuntimeError(f"expected {n // 2} keys with a TTL, found {with_ttl}")


def measure(
    label: str,
    run: Callable[[], None],
    server: RedisServer,
    n: int,
    rounds: int,
    ttls: bool,
) -> float:
    best = float("inf")
    for _ in range(rounds):
        flush(server)
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
        check(server, n, ttls)
    print(f"  {label:<34} {best:8.2f} s {n / best:>12,.0f} keys/s", flush=True)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="keys to copy")
    parser.add_argument("--rounds", type=int, default=2, help="best of this many runs")
    args = parser.parse_args()
    n = args.n
    import redis

    print(
        f"Python {platform.python_version()}, redis-py {redis.__version__}, "
        f"{os.cpu_count()} CPUs, {n:,} keys (half with TTLs), SQLite file -> loopback Redis"
    )
    with tempfile.TemporaryDirectory() as tmp, redis_server() as server:
        src = f"sqlite:///{Path(tmp) / 'bot.db'}"
        dst = server.url
        asyncio.run(fill(src, n))
        results: dict[str, float] = {}
        runs: list[tuple[str, Callable[[], None], bool]] = [
            ("gramio-storage copy (subprocess)", lambda: cli_subprocess(src, dst), True),
            ("gramio-storage copy (in-process)", lambda: cli_in_process(src, dst), True),
            ("naive get/set loop (drops TTLs)", lambda: asyncio.run(naive(src, dst, False)), False),
            ("naive get/ttl/set loop", lambda: asyncio.run(naive(src, dst, True)), True),
        ]
        for label, run, ttls in runs:
            results[label] = measure(label, run, server, n, args.rounds, ttls)
        cli = results["gramio-storage copy (subprocess)"]
        print(
            f"  speed-up (subprocess copy): {cli / results['naive get/set loop (drops TTLs)']:.1f}x"
            f" the get/set loop, {cli / results['naive get/ttl/set loop']:.1f}x the get/ttl/set"
            " loop"
        )
        print(json.dumps({k: round(v) for k, v in results.items()}))


if __name__ == "__main__":
    main()
