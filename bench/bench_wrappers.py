"""What each wrapper costs, and what the near cache buys, in one run.

Sequential (one task, awaited one by one) ``get`` and ``set`` of the small session dict
(``_common.SESSION``) over 1,000 keys:

1. on memory: plain, ``instrument()`` with the no-op API (no SDK), ``instrument()`` with the SDK
   and an in-memory exporter, ``clamp_ttl()``, ``CompressedCodec(JSON)`` (the session is below
   ``min_size``: the pass-through cost) and ``CompressedCodec(min_size=0)`` (every value
   compressed), ``EncryptedStorage``, ``FallbackStorage(memory, memory)``, ``CachedStorage``;
2. on a private redis-server on loopback: plain ``RedisStorage`` ``get`` against the same key
   read through ``CachedStorage`` (server-assisted invalidation on), a hot key, same run: the
   issue's target is >= 20x; and ``FallbackStorage(memory, redis)`` reads.

Rounds are interleaved and the best round of each is reported, with the median over rounds of
the per-round ratio to the plain storage. Run:
``.venv/bin/python bench/bench_wrappers.py [--rounds 5] [--n 20000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from _common import KEYS, SESSION, USERS, ops_per_second
from _redis_server import redis_server
from gramio_storage import JSON, BaseStorage, MemoryStorage
from gramio_storage.redis import RedisStorage
from gramio_storage.wrappers import (
    CachedStorage,
    CompressedCodec,
    EncryptedStorage,
    FallbackStorage,
    clamp_ttl,
    generate_key,
    instrument,
)


def memory_contenders() -> dict[str, Callable[[], BaseStorage]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    key = generate_key()
    return {
        "memory": MemoryStorage,
        "instrument (no SDK)": lambda: instrument(MemoryStorage()),
        "instrument (SDK, in-memory exporter)": lambda: _clearing(
            instrument(MemoryStorage(), tracer_provider=provider), exporter
        ),
        "clamp_ttl": lambda: clamp_ttl(MemoryStorage(), max_ttl=86400),
        "CompressedCodec (below min_size)": lambda: MemoryStorage(codec=CompressedCodec(JSON)),
        "CompressedCodec (min_size=0)": lambda: MemoryStorage(
            codec=CompressedCodec(JSON, min_size=0)
        ),
        "EncryptedStorage": lambda: EncryptedStorage(MemoryStorage(), keys=[key]),
        "FallbackStorage(memory, memory)": lambda: FallbackStorage(
            MemoryStorage(), MemoryStorage()
        ),
        "CachedStorage(memory)": lambda: CachedStorage(MemoryStorage()),
    }


def _clearing(storage: BaseStorage, exporter: InMemorySpanExporter) -> BaseStorage:
    storage._exporter = exporter  # type: ignore[attr-defined]  # emptied between rounds
    return storage


async def measure(storage: BaseStorage, n: int, keys: list[str]) -> tuple[float, float]:
    async def set_(i: int) -> None:
        await storage.set(keys[i % len(keys)], SESSION)

    async def get(i: int) -> Any:
        return await storage.get(keys[i % len(keys)])

    for key in keys:
        await storage.set(key, SESSION)
    for key in keys:  # warm (fills a cache)
        await storage.get(key)
    sets = await ops_per_second(set_, n, 1)
    for key in keys:
        await storage.get(key)
    gets = await ops_per_second(get, n, 1)
    exporter = getattr(storage, "_exporter", None)
    if exporter is not None:
        exporter.clear()
    return sets, gets


def report(title: str, results: dict[str, list[tuple[float, float]]], base: str) -> None:
    print(f"\n## {title}\n")
    print("| storage | set ops/s | get ops/s | set vs plain | get vs plain |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, rounds in results.items():
        best_set = max(r[0] for r in rounds)
        best_get = max(r[1] for r in rounds)
        set_ratio = statistics.median(
            r[0] / b[0] for r, b in zip(rounds, results[base], strict=True)
        )
        get_ratio = statistics.median(
            r[1] / b[1] for r, b in zip(rounds, results[base], strict=True)
        )
        print(
            f"| {name} | {best_set:,.0f} | {best_get:,.0f} | {set_ratio:.2f}x | {get_ratio:.2f}x |"
        )


async def run_memory(rounds: int, n: int) -> None:
    makers = memory_contenders()
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in makers}
    for r in range(rounds):
        names = list(makers)
        names = names[r % len(names) :] + names[: r % len(names)]
        for name in names:
            storage = makers[name]()
            results[name].append(await measure(storage, n, KEYS))
            await storage.close()
    report("Wrappers on memory (sequential, 1,000 keys)", results, "memory")


async def run_redis(rounds: int, n: int) -> None:
    with redis_server() as server:
        hot = ["hot"]
        results: dict[str, list[tuple[float, float]]] = {
            "RedisStorage (hot key)": [],
            "CachedStorage(redis) (hot key)": [],
            "FallbackStorage(memory, redis) (hot key)": [],
        }
        for _ in range(rounds):
            plain = RedisStorage.from_url(server.url)
            results["RedisStorage (hot key)"].append(await measure(plain, n // 4, hot))
            cached = CachedStorage(RedisStorage.from_url(server.url))
            await asyncio.sleep(0.05)  # tracking connection up
            results["CachedStorage(redis) (hot key)"].append(await measure(cached, n, hot))
            tiers = FallbackStorage(MemoryStorage(), RedisStorage.from_url(server.url))
            results["FallbackStorage(memory, redis) (hot key)"].append(
                await measure(tiers, n // 4, hot)
            )
            for storage in (plain, cached, tiers):
                await storage.close()
        report(
            "Near cache on Redis (sequential, one hot key, same run)",
            results,
            "RedisStorage (hot key)",
        )
        ratio = statistics.median(
            c[1] / p[1]
            for c, p in zip(
                results["CachedStorage(redis) (hot key)"],
                results["RedisStorage (hot key)"],
                strict=True,
            )
        )
        print(f"\nCached hot get vs plain Redis get: {ratio:.1f}x (target >= 20x)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {USERS} keys, "
        f"best of {args.rounds} interleaved rounds, n={args.n}"
    )
    await run_memory(args.rounds, args.n)
    await run_redis(args.rounds, args.n)


if __name__ == "__main__":
    asyncio.run(main())
