"""Cloudflare KV: bulk endpoints against one request per key, on the local KV emulator.

Starts the test suite's emulator (Miniflare: Cloudflare's own KV implementation inside workerd,
behind the REST API paths, on 127.0.0.1) and measures, on a session-like dict:

* ``get_many(100)`` (one ``POST /bulk/get``) against 100 single ``get`` calls, awaited one
  after the other (what a naive loop does) and all at once with ``asyncio.gather``;
* ``set_many(1000)`` (one ``PUT /bulk``) against 1,000 single ``set`` calls, the same two ways.

Every figure is the best of several rounds. Loopback hides network latency: against
api.cloudflare.com every request costs a round trip of tens of milliseconds (and counts against
the 1,200 requests per 5 minutes a token may make), so the real-world ratios are larger still.

Needs Node.js and ``npm ci`` in ``tests/cloudflare``. Run:
``.venv/bin/python bench/bench_cloudflare.py [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _cloudflare_server import start_emulator, stop_emulator
from gramio_storage.cloudflare import CloudflareKVStorage

SESSION = {"step": "ask_age", "name": "Alice", "age": 30, "tags": ["new", "ru"], "score": 12.5}


class Counter:
    """Counts HTTP requests (an httpx event hook)."""

    def __init__(self) -> None:
        self.sent = 0

    async def __call__(self, request: httpx.Request) -> None:
        self.sent += 1


Row = tuple[str, float, float, float]  # name, seconds, bulk seconds, requests per run
Work = Callable[[], Awaitable[Any]]


async def best(rounds: int, counter: Counter, work: Work) -> tuple[float, float]:
    """The fastest of ``rounds`` runs of ``work`` in seconds, and its requests per run."""
    times = []
    counter.sent = 0
    for _ in range(rounds):
        start = time.perf_counter()
        await work()
        times.append(time.perf_counter() - start)
    return min(times), counter.sent / rounds


async def run(storage: CloudflareKVStorage, counter: Counter, rounds: int) -> list[Row]:
    await storage.clear()
    read_keys = [f"session:{i}" for i in range(100)]
    await storage.set_many(dict.fromkeys(read_keys, SESSION))

    async def bulk_get() -> None:
        assert len(await storage.get_many(read_keys)) == 100

    async def loop_get() -> None:
        for key in read_keys:
            await storage.get(key)

    async def gather_get() -> None:
        await asyncio.gather(*(storage.get(key) for key in read_keys))

    write = {f"w:{i}": SESSION for i in range(1000)}

    async def bulk_set() -> None:
        await storage.set_many(write)

    async def loop_set() -> None:
        for key, value in write.items():
            await storage.set(key, value)

    async def gather_set() -> None:
        await asyncio.gather(*(storage.set(k, v) for k, v in write.items()))

    rows: list[Row] = []

    async def measure(name: str, work: Work, bulk: float | None, n: int = rounds) -> float:
        seconds, sent = await best(n, counter, work)
        rows.append((name, seconds, bulk or seconds, sent))
        return seconds

    bulk = await measure("get_many(100)", bulk_get, None)
    await measure("100 x get, one after another", loop_get, bulk)
    await measure("100 x get, asyncio.gather", gather_get, bulk)
    bulk = await measure("set_many(1000)", bulk_set, None)
    slow = max(1, rounds // 2)  # 1,000 requests per round: fewer rounds
    await measure("1000 x set, one after another", loop_set, bulk, slow)
    await measure("1000 x set, asyncio.gather", gather_set, bulk, slow)
    await storage.clear()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    counter = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        emulator = start_emulator(Path(tmp), namespaces=1)
        try:

            async def go() -> list[Row]:
                async with httpx.AsyncClient(
                    headers={"Authorization": f"Bearer {emulator.api_token}"},
                    event_hooks={"request": [counter]},
                    timeout=60,
                ) as client:
                    storage = CloudflareKVStorage(
                        emulator.account_id,
                        emulator.namespace_ids[0],
                        base_url=emulator.base_url,
                        client=client,
                    )
                    return await run(storage, counter, args.rounds)

            rows = asyncio.run(go())
        finally:
            stop_emulator(emulator)
    print(f"Python {platform.python_version()} on {platform.machine()}, best of {args.rounds}")
    print(f"{'operation':<32} {'requests':>8} {'time':>10} {'vs bulk':>8}")
    for name, seconds, bulk, sent in rows:
        print(f"{name:<32} {sent:>8.0f} {seconds * 1000:>8.1f}ms {seconds / bulk:>7.1f}x")


if __name__ == "__main__":
    main()
