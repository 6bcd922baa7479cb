"""Automatic pipelining on real redis-server processes: batching, faults, cancellation, models.

Concurrent commands of one event loop share one connection and its writes
(``gramio_storage.redis._pipeline``). These tests hold it to what a bot needs: every caller gets
its own reply or a typed error, never another caller's reply and never a hang, whatever happens
to the server or to the callers.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from _redis_server import *  # noqa: F403  (the server fixtures: pytest looks in the globals)
from _redis_server import RedisServer, flush, redis_server
from gramio_storage import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    storage_from_url,
)
from gramio_storage.redis import RedisStorage
from gramio_storage.redis._pipeline import Pipeline

TYPED = (BackendUnavailableError, BackendTimeoutError)


@pytest.fixture
async def storage(redis_server_session: RedisServer) -> AsyncIterator[RedisStorage]:
    flush(redis_server_session)
    storage = RedisStorage.from_url(redis_server_session.url)
    yield storage
    await storage.close()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def pipeline_of(storage: RedisStorage) -> Pipeline:
    path = storage.backend._live()
    assert isinstance(path, Pipeline)
    return path


async def _client_count(raw: aioredis.Redis, name: str) -> int:
    return [c.get("name") for c in await raw.client_list()].count(name)


# ------------------------------------------------------------------------------ batching


async def test_concurrent_commands_share_one_connection_and_few_writes(
    redis_url: str, raw: aioredis.Redis
) -> None:
    """500 concurrent set+get pairs travel on one connection in a handful of writes."""
    async with RedisStorage.from_url(redis_url, client_name="gramio-pipe") as storage:
        assert storage.pipelined
        await storage.set("warm", 1)
        proto = pipeline_of(storage)._proto
        assert proto is not None
        before = proto.written, proto.flushes

        async def pair(i: int) -> Any:
            await storage.set(f"p:{i}", {"i": i})
            return await storage.get(f"p:{i}")

        assert await asyncio.gather(*(pair(i) for i in range(500))) == [
            {"i": i} for i in range(500)
        ]
        commands, writes = proto.written - before[0], proto.flushes - before[1]
        assert commands == 1000
        assert writes <= 20, writes  # two waves of 500, each one or two writes
        assert await _client_count(raw, "gramio-pipe") == 1
        assert not proto.waiting and not proto.queue


async def test_pipelining_can_be_turned_off(redis_url: str) -> None:
    """pipelining=False and ?pipelining=false use redis-py's pool, one command per connection."""
    built = [
        RedisStorage.from_url(redis_url, pipelining=False),
        RedisStorage.from_url(redis_url + "?pipelining=false"),
        storage_from_url(redis_url + "?pipelining=false"),
        RedisStorage(aioredis.Redis.from_url(redis_url), pipelining=False),
    ]
    for storage in built:
        assert isinstance(storage, RedisStorage)
        assert not storage.pipelined
        assert "pipelining=False" in repr(storage)
        await storage.set("off", 1)
        assert await storage.get("off") == 1
        await storage.close()
    await built[-1].client.aclose()


async def test_scripts_and_batches_work_through_the_pipeline(
    storage: RedisStorage, raw: aioredis.Redis
) -> None:
    """update's compare-and-set, incr with a TTL, NOSCRIPT fallback, get_many/set_many, scans."""
    await raw.script_flush()  # every script starts with NOSCRIPT, under concurrency

    def bump(v: dict[str, int]) -> dict[str, int]:
        return {"n": v["n"] + 1}

    await asyncio.gather(
        *(storage.update(f"u{i % 4}", bump, default={"n": 0}) for i in range(200)),
        *(storage.incr(f"c{i % 4}", ttl=60) for i in range(200)),
        *(storage.set_many({f"m{i}:a": i, f"m{i}:b": -i}, ttl=60) for i in range(50)),
    )
    assert [await storage.get(f"u{i}") for i in range(4)] == [{"n": 50}] * 4
    assert await storage.get_many([f"c{i}" for i in range(4)]) == {f"c{i}": 50 for i in range(4)}
    got = await asyncio.gather(*(storage.get_many([f"m{i}:a", f"m{i}:b"]) for i in range(50)))
    assert got == [{f"m{i}:a": i, f"m{i}:b": -i} for i in range(50)]
    ttl = await storage.ttl("c0")
    assert ttl is not None and 50 < ttl <= 60
    assert len([k async for k in storage.keys("m")]) == 100
    entries = await storage.backend.get_entries(["m1:a", "nope"])
    assert entries[0][0] == b"1" and 50 < (entries[0][1] or 0) <= 60 and entries[1] == (None, None)
    assert await storage.backend.set_entries(
        [("e1", b"1", None), ("m1:a", b"9", 5.0)], overwrite=False
    ) == [True, False]
    assert await storage.clear("m") == 100


# ------------------------------------------------------------------------------ models


async def test_ten_thousand_concurrent_random_operations_match_a_dict_model(
    storage: RedisStorage,
) -> None:
    """200 keys x 50 random operations, all keys at once, each reply checked against a model."""
    rng = random.Random(11)
    model: dict[str, Any] = {}
    shared_increments = 0

    async def chain(key: str, ops: list[tuple[str, int]]) -> None:
        nonlocal shared_increments
        for op, n in ops:
            if op == "set":
                await storage.set(key, {"n": n})
                model[key] = {"n": n}
            elif op == "get":
                assert await storage.get(key) == model.get(key), key
            elif op == "has":
                assert await storage.has(key) == (key in model), key
            elif op == "delete":
                assert await storage.delete(key) == (key in model), key
                model.pop(key, None)
            elif op == "add":
                assert await storage.add(key, {"n": n}) == (key not in model), key
                model.setdefault(key, {"n": n})
            elif op == "update":

                def bump(v: Any, n: int = n) -> Any:
                    return {"n": (v or {"n": 0})["n"] + n}

                expected = {"n": (model.get(key) or {"n": 0})["n"] + n}
                assert await storage.update(key, bump) == expected, key
                model[key] = expected
            elif op == "many":
                other = f"k{n % 200}"
                found = await storage.get_many([key])
                assert found == ({key: model[key]} if key in model else {}), key
                assert other  # the other key is someone else's: never read here
            else:  # a counter every chain shares: only the total is known
                await storage.incr("shared")
                shared_increments += 1

    kinds = ["set", "get", "has", "delete", "add", "update", "many", "incr"]
    chains = {
        f"k{i}": [(rng.choice(kinds), rng.randrange(1000)) for _ in range(50)] for i in range(200)
    }
    started = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(*(chain(key, ops) for key, ops in chains.items())), timeout=120
    )
    assert time.monotonic() - started < 120
    assert sum(len(ops) for ops in chains.values()) == 10_000
    assert await storage.get("shared", 0) == shared_increments
    keys = [f"k{i}" for i in range(200)]
    assert await storage.get_many(keys) == {k: model[k] for k in keys if k in model}


# ------------------------------------------------------------------------------ cancellation


async def test_cancellation_storms_never_mix_up_replies(storage: RedisStorage) -> None:
    """Rounds of 2,000 reads with random callers cancelled at random moments: every survivor
    gets its own key's value, and nothing is left waiting afterwards."""
    await storage.set_many({f"c:{i}": i for i in range(500)})
    rng = random.Random(3)
    for _ in range(5):
        tasks = [asyncio.ensure_future(storage.get(f"c:{i % 500}")) for i in range(2000)]
        for _ in range(rng.randrange(1, 4)):
            await asyncio.sleep(0)
            for task in rng.sample(tasks, 300):
                task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for i, result in enumerate(results):
            assert isinstance(result, asyncio.CancelledError) or result == i % 500, (i, result)
        assert sum(isinstance(r, asyncio.CancelledError) for r in results) > 0
    # Cancelled writers and updaters too; then the connection still answers in step.
    writers = [asyncio.ensure_future(storage.incr("storm")) for _ in range(1000)]
    updaters = [
        asyncio.ensure_future(storage.update("storm:u", lambda v: (v or 0) + 1)) for _ in range(200)
    ]
    await asyncio.sleep(0)
    for task in writers[::3] + updaters[::3]:
        task.cancel()
    done = await asyncio.gather(*writers, *updaters, return_exceptions=True)
    assert all(isinstance(r, (int, asyncio.CancelledError)) for r in done)
    assert await storage.get("c:7") == 7
    assert 0 < await storage.get("storm") <= 1000
    proto = pipeline_of(storage)._proto
    assert proto is not None and not proto.waiting
    assert await asyncio.gather(*(storage.get(f"c:{i}") for i in range(500))) == list(range(500))


# ------------------------------------------------------------------------------ faults


@pytest.fixture
def private_server() -> Any:
    with redis_server() as server:
        yield server


async def _mixed(storage: RedisStorage, i: int) -> None:
    """One caller's work on its own keys; every reply is checked against what it wrote."""
    key = f"mix:{i}"
    kind = i % 5
    if kind == 0:
        await storage.set(key, {"i": i})
        assert await storage.get(key) == {"i": i}
    elif kind == 1:
        assert await storage.incr(key, 3) % 3 == 0
    elif kind == 2:
        assert await storage.update(key, lambda v: (v or 0) + i) % max(i, 1) == 0
    elif kind == 3:
        await storage.set_many({key + ":a": i, key + ":b": -i}, ttl=60)
        got = await storage.get_many([key + ":a", key + ":b"])
        assert got == {key + ":a": i, key + ":b": -i}
    else:
        await storage.delete(key)
        assert await storage.add(key, i) is True
        assert await storage.get(key) == i


async def test_server_killed_mid_burst_of_1000_mixed_commands(
    private_server: RedisServer,
) -> None:
    """1,000 concurrent mixed callers, the server SIGKILLed mid-burst: each caller finishes with
    its own correct result or a typed error, none hangs, and all works after a restart."""
    storage = RedisStorage.from_url(private_server.url, timeout=2)
    outcomes: list[object] = []

    async def caller(i: int) -> None:
        try:
            await _mixed(storage, i)
            outcomes.append("ok")
        except TYPED as e:
            outcomes.append(e)

    for _ in range(2):  # warm up the connection and the scripts
        await asyncio.gather(*(caller(i) for i in range(10)))
    outcomes.clear()
    burst = [asyncio.ensure_future(caller(i)) for i in range(1000)]
    await asyncio.sleep(0.005)
    await asyncio.to_thread(private_server.kill)
    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*burst), timeout=30)  # nobody hangs
    assert time.monotonic() - started < 10
    assert len(outcomes) == 1000
    failures = [o for o in outcomes if o != "ok"]
    assert failures, "the kill landed after the burst: nothing was tested"
    assert all(isinstance(f, BackendUnavailableError) for f in failures), failures[:3]
    with pytest.raises(BackendUnavailableError):
        await storage.get("anything")

    await asyncio.to_thread(private_server.start)
    outcomes.clear()
    await asyncio.gather(*(caller(i) for i in range(1000)))
    assert outcomes == ["ok"] * 1000
    await storage.close()


async def test_a_dropped_connection_fails_what_is_in_flight_and_reconnects(
    storage: RedisStorage, raw: aioredis.Redis
) -> None:
    """CLIENT KILL on the pipelined connection: in-flight callers get BackendUnavailableError,
    the next command reconnects."""
    await storage.set("k", 1)
    await raw.execute_command("CLIENT", "PAUSE", 500, "WRITE")  # hold the replies of writes
    pending = [asyncio.ensure_future(storage.set(f"d:{i}", i)) for i in range(50)]
    await asyncio.sleep(0.05)
    await raw.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    results = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 10)
    assert all(r is None or isinstance(r, BackendUnavailableError) for r in results), results
    assert any(isinstance(r, BackendUnavailableError) for r in results)
    assert await storage.get("k") == 1
    assert await storage.incr("after") == 1


async def test_reply_timeouts_hold_for_every_command_in_flight(
    redis_url: str, raw: aioredis.Redis
) -> None:
    """With the server paused, 100 concurrent commands all raise BackendTimeoutError close to
    the timeout (never before it); the connection is reset and works once the server answers."""
    storage = RedisStorage.from_url(redis_url, timeout=0.4)
    await storage.set("k", 1)
    await raw.execute_command("CLIENT", "PAUSE", 2000, "ALL")
    started = time.monotonic()
    try:
        results = await asyncio.gather(
            *(storage.get("k") for _ in range(100)), return_exceptions=True
        )
        elapsed = time.monotonic() - started
    finally:
        await raw.execute_command("CLIENT", "UNPAUSE")
    assert all(isinstance(r, BackendTimeoutError) for r in results), results[:3]
    assert 0.4 <= elapsed < 1.5, elapsed
    assert "0.4s" in str(results[0])
    assert await storage.get("k") == 1
    await storage.close()


async def test_commands_issued_while_connecting_wait_and_share_the_connection(
    tmp_path: Any,
) -> None:
    """A burst before the server is up fails typed; once it is up, a burst during the connect
    shares the one connection being opened."""
    server = RedisServer(tmp_path)
    storage = RedisStorage.from_url(server.url, connect_timeout=0.5)
    try:
        results = await asyncio.gather(
            *(storage.incr("n") for _ in range(20)), return_exceptions=True
        )
        assert all(isinstance(r, BackendUnavailableError) for r in results)
        await asyncio.to_thread(server.start)
        assert sorted(await asyncio.gather(*(storage.incr("n") for _ in range(200)))) == list(
            range(1, 201)
        )
    finally:
        await storage.close()
        server.close()


async def test_a_closed_storage_fails_its_in_flight_commands_typed(storage: RedisStorage) -> None:
    """close() while commands are in flight: they end with a typed error or their result."""
    pending = [asyncio.ensure_future(storage.incr("z")) for _ in range(100)]
    await asyncio.sleep(0)
    await storage.close()
    results = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 10)
    assert all(isinstance(r, (int, BackendError)) for r in results), results[:3]
