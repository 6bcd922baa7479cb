"""Wrappers over a real Redis: fallback stacks (with Redis killed mid-test) and the near cache."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from _redis_server import *  # noqa: F403
from _redis_server import redis_server
from gramio_storage import BackendUnavailableError, BaseStorage, MemoryStorage
from gramio_storage.redis import RedisStorage
from gramio_storage.sqlite import SQLiteStorage
from gramio_storage.testing import StorageTests
from gramio_storage.wrappers import CachedStorage, FallbackStorage, with_fallback_storages

# The second process of the near-cache test: for every line N on stdin it sets KEY to the
# JSON number N with plain redis-py, then prints the wall clock right after the server's reply.
WRITER = """
import sys, time, redis
client = redis.Redis.from_url(sys.argv[1])
print("ready", flush=True)
for line in sys.stdin:
    client.set(sys.argv[2], line.strip().encode())
    print(repr(time.time()), flush=True)
"""


def unique() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


def kit_url(url: str) -> str:
    """Database 7 of this session's server: the kit classes empty it for every test."""
    return url.rsplit("/", 1)[0] + "/7"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisStorage]:
    storage = RedisStorage.from_url(redis_url)
    yield storage
    await storage.close()


# ---------------------------------------------------------------------- the kit over Redis


class TestCachedRedis(StorageTests):
    """The near cache with server-assisted invalidation passes the kit on Redis."""

    @pytest.fixture
    async def storage(self, redis_url: str) -> AsyncIterator[BaseStorage]:
        raw = RedisStorage.from_url(kit_url(redis_url))
        await raw.clear()
        storage = CachedStorage(raw)
        yield storage
        await storage.close()


class TestMemoryInFrontOfRedis(StorageTests):
    @pytest.fixture
    async def storage(self, redis_url: str) -> AsyncIterator[BaseStorage]:
        raw = RedisStorage.from_url(kit_url(redis_url))
        await raw.clear()
        storage = FallbackStorage(MemoryStorage(), raw)
        yield storage
        await storage.close()


# ---------------------------------------------------------------------- fallback stacks


async def test_memory_in_front_of_redis_reads_backfills_and_counts_falsy(
    redis: RedisStorage,
) -> None:
    """A value only in Redis is read and copied into memory with its TTL; falsy values count."""
    view = redis.with_prefix(unique())
    memory = MemoryStorage()
    stack = with_fallback_storages([memory, view])
    await view.set("only-redis", {"v": 1}, ttl=100)
    assert await stack.get("only-redis") == {"v": 1}
    assert await memory.get("only-redis") == {"v": 1}
    left = await memory.ttl("only-redis")
    assert left is not None and 98 < left <= 100
    for value in (0, False, "", None):
        await memory.set("falsy", value)
        await view.set("falsy", "redis has another value")
        assert await stack.get("falsy", "DEFAULT") == value
    await stack.set("both", 1)
    assert await memory.get("both") == 1 and await view.get("both") == 1
    assert await stack.delete("both") is True
    assert not await memory.has("both") and not await view.has("both")
    assert await stack.incr("n") == 1  # on the primary, then written to Redis too
    assert await view.get("n") == 1
    assert stack.capabilities.atomic is memory.capabilities.atomic
    await view.clear()


async def test_redis_killed_mid_test_sqlite_keeps_serving(tmp_path: Path) -> None:
    """Redis dies: reads and writes continue on SQLite; when it is back it is resynced."""
    with redis_server() as server:
        redis = RedisStorage.from_url(server.url, connect_timeout=0.5, timeout=0.5)
        sqlite = SQLiteStorage(tmp_path / "fallback.db")
        stack = FallbackStorage(redis, sqlite, retry_after=0.2)
        await stack.set_many({"a": 1, "b": 2})
        assert await redis.get("a") == 1 and await sqlite.get("a") == 1

        server.kill()
        assert await stack.get("a") == 1  # served by SQLite
        await stack.set("c", 3)  # written to SQLite only
        assert await stack.get_many(["a", "b", "c"]) == {"a": 1, "b": 2, "c": 3}
        assert await stack.delete("b") is True
        assert sorted([k async for k in stack.keys()]) == ["a", "c"]
        assert stack.failures["0:redis"] >= 1
        with pytest.raises(BackendUnavailableError):
            await stack.incr("n")  # atomic operations run on the primary only

        failover = FallbackStorage(
            RedisStorage.from_url(server.url, connect_timeout=0.5, timeout=0.5),
            SQLiteStorage(tmp_path / "fallback.db"),
            atomic_failover=True,
        )
        assert await failover.incr("n") == 1  # on SQLite while Redis is down
        await failover.close()

        server.start()  # back, empty (no persistence)
        await asyncio.sleep(0.3)  # past retry_after
        await stack.set("d", 4)  # answers again: the keys it missed are copied back
        for _ in range(100):
            if await redis.get("c") == 3:
                break
            await asyncio.sleep(0.02)
        assert await redis.get("c") == 3 and await redis.get("d") == 4
        assert await redis.has("b") is False
        assert stack.backend._dirty[0] == {}
        await stack.close()
        assert redis.closed and sqlite.closed


async def test_policy_all_raises_when_a_tier_is_down(tmp_path: Path) -> None:
    """policy="all": a write fails when any tier fails, after trying every tier."""
    with redis_server() as server:
        sqlite = SQLiteStorage(tmp_path / "all.db")
        stack = FallbackStorage(
            RedisStorage.from_url(server.url, connect_timeout=0.5, timeout=0.5),
            sqlite,
            policy="all",
        )
        await stack.set("a", 1)
        server.kill()
        with pytest.raises(BackendUnavailableError):
            await stack.set("a", 2)
        assert await sqlite.get("a") == 2  # every tier was tried
        await stack.close()


# ---------------------------------------------------------------------- near cache


async def _warm(cache: CachedStorage, key: str) -> None:
    """Read until the value is served from the cache (tracking is on)."""
    for _ in range(200):
        hits = cache.backend.hits
        await cache.get(key)
        if cache.backend.hits > hits:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the cache never served a hit")


async def test_a_write_in_another_process_is_seen_within_50ms(redis_url: str) -> None:
    """Server-assisted invalidation: another process's SET evicts the entry here at once."""
    prefix = unique()
    raw = RedisStorage.from_url(redis_url)
    cache = CachedStorage(raw.with_prefix(prefix), ttl=3600)  # the ttl bound is not what helps
    await cache.set("hot", 0)
    await _warm(cache, "hot")
    writer = subprocess.Popen(  # noqa: ASYNC220 - driven line by line, reads off the loop
        [sys.executable, "-c", WRITER, redis_url, prefix + "hot"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdin is not None
        assert writer.stdout.readline().strip() == "ready"
        lags = []
        for n in range(1, 11):
            await _warm(cache, "hot")
            writer.stdin.write(f"{n}\n")
            writer.stdin.flush()
            acked = float(await asyncio.to_thread(writer.stdout.readline))
            while await cache.get("hot") != n:  # noqa: ASYNC110 - polling is the measurement
                await asyncio.sleep(0.0005)
            lags.append(time.time() - acked)
        assert max(lags) < 0.05, lags
        assert cache.backend.invalidations >= 10
    finally:
        writer.stdin.close()  # type: ignore[union-attr]
        writer.wait(timeout=10)
        writer.stdout.close()  # type: ignore[union-attr]
        await cache.clear()
        await cache.close()
        await raw.close()


async def test_own_writes_are_never_followed_by_an_older_value(redis_url: str) -> None:
    """Reads racing writes in this process never see a value older than the last write."""
    raw = RedisStorage.from_url(redis_url)
    view = raw.with_prefix(unique())
    cache = CachedStorage(view, ttl=3600)
    await cache.set("k", 0)
    stop = False

    async def reader() -> None:
        while not stop:
            await cache.get("k")
            await asyncio.sleep(0)  # a cache hit never suspends: let the writer run

    readers = [asyncio.ensure_future(reader()) for _ in range(4)]
    try:
        for n in range(1, 300):
            await cache.set("k", n)
            assert await cache.get("k") == n
            assert await cache.incr("k") == n + 1
            assert await cache.get("k") == n + 1
            await view.set("k", -n)  # another facade of this process: tracking evicts it
            for _ in range(200):
                if await cache.get("k") == -n:
                    break
                await asyncio.sleep(0.001)
            assert await cache.get("k") == -n
    finally:
        stop = True
        await asyncio.gather(*readers)
        await cache.clear()
        await cache.close()
        await raw.close()


async def test_lost_tracking_connection_stops_caching_until_it_is_back() -> None:
    """While invalidations cannot arrive, nothing is served from the cache."""
    with redis_server() as server:
        raw = RedisStorage.from_url(server.url, connect_timeout=0.5, timeout=0.5)
        cache = CachedStorage(raw, ttl=3600)
        await cache.set("k", 1)
        await _warm(cache, "k")
        server.kill()
        await asyncio.sleep(0.1)
        assert len(cache.backend) == 0
        with pytest.raises(BackendUnavailableError):
            await cache.get("k")
        server.start()
        await cache.set("k", 2)
        await _warm(cache, "k")
        assert await cache.get("k") == 2
        await cache.close()
