"""RedisStorage on a real 3-master Redis Cluster: conformance, slot grouping, scans, processes.

The cluster is made of three ``redis-server --cluster-enabled yes`` processes joined by
``redis-cli --cluster create`` (see ``_redis_server``); tests that kill a node build their own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions as rx

from _redis_child import run_workers
from _redis_server import *  # noqa: F403  (the server fixtures: pytest looks in the globals)
from _redis_server import RedisCluster, flush, redis_cluster
from gramio_storage import BackendUnavailableError, BaseStorage, storage_from_url
from gramio_storage.redis import RedisStorage
from gramio_storage.testing import StorageTests, make_state_machine


@pytest.fixture
async def storage(redis_cluster_session: RedisCluster) -> AsyncIterator[RedisStorage]:
    """A storage on the emptied shared cluster."""
    flush(redis_cluster_session)
    storage = RedisStorage.from_url(redis_cluster_session.url, cluster=True)
    yield storage
    await storage.close()


async def per_node_keys(cluster: RedisCluster) -> list[set[str]]:
    """The keys each master holds, read node by node with plain clients."""
    found = []
    for port in cluster.ports:
        client = aioredis.Redis(host="127.0.0.1", port=port)
        try:
            found.append({k.decode() async for k in client.scan_iter(count=1000)})
        finally:
            await client.aclose()
    return found


class TestRedisClusterConformance(StorageTests):
    """The shipped conformance kit against the real cluster."""

    @pytest.fixture
    async def storage(self, redis_cluster_session: RedisCluster) -> AsyncIterator[BaseStorage]:
        flush(redis_cluster_session)
        storage = RedisStorage.from_url(redis_cluster_session.url, cluster=True)
        yield storage
        await storage.close()


_MACHINE: dict[str, str] = {}


@pytest.fixture(autouse=True, scope="module")
def _machine_url(redis_cluster_url: str) -> None:
    _MACHINE["url"] = redis_cluster_url


TestRedisClusterMachine = make_state_machine(
    lambda: RedisStorage.from_url(_MACHINE["url"], cluster=True).with_prefix("machine:")
).TestCase


async def test_cluster_from_url_flag_and_keywords(redis_cluster_session: RedisCluster) -> None:
    """?cluster=true, cluster=True and RedisStorage(cluster=True, host=, port=) all reach it."""
    flush(redis_cluster_session)
    port = redis_cluster_session.ports[0]
    built = [
        storage_from_url(f"redis://127.0.0.1:{port}?cluster=true&prefix=a:", ttl=60),
        RedisStorage.from_url(f"redis://127.0.0.1:{port}", cluster=True, ttl=60).with_prefix("b:"),
        RedisStorage(cluster=True, host="127.0.0.1", port=port, ttl=60).with_prefix("c:"),
    ]
    client = aioredis.RedisCluster(host="127.0.0.1", port=port)
    try:
        for storage in built:
            assert isinstance(storage, RedisStorage)
            assert isinstance(storage.client, aioredis.RedisCluster)
            assert "cluster=True" in repr(storage)
            await storage.set("k", {"p": storage.prefix})
            assert await client.get(storage.prefix + "k") == b'{"p":"%s"}' % storage.prefix.encode()
            assert 55_000 < await client.pttl(storage.prefix + "k") <= 60_000
        borrowed = RedisStorage(client)
        assert await borrowed.with_prefix("a:").get("k") == {"p": "a:"}
        await borrowed.close()
        assert await client.get("a:k") is not None  # the caller's cluster client stays open
    finally:
        for storage in built:
            await storage.backend.close()
        await client.aclose()


async def test_many_ops_span_every_master(
    storage: RedisStorage, redis_cluster_session: RedisCluster
) -> None:
    """get_many/set_many/delete_many split keys by hash slot across all three masters."""
    keys = [f"user:{i}" for i in range(300)]
    await storage.set_many({k: {"k": k} for k in keys}, ttl=120)
    spread = await per_node_keys(redis_cluster_session)
    assert all(len(node) > 50 for node in spread), [len(node) for node in spread]
    assert set().union(*spread) == set(keys)
    wanted = [*keys[::7], "missing:1", keys[3], "missing:2"]
    found = await storage.get_many(wanted)
    assert found == {k: {"k": k} for k in wanted if k in set(keys)}
    assert await storage.delete_many([*keys[:150], "missing:1", keys[0]]) == 150
    assert await storage.get_many(keys[140:160]) == {k: {"k": k} for k in keys[150:160]}
    ttl = await storage.ttl(keys[200])
    assert ttl is not None and 110 < ttl <= 120


async def test_same_slot_keys_use_one_command(storage: RedisStorage) -> None:
    """Keys sharing a {hash tag} live in one slot, so get_many/delete_many send one command."""
    keys = [f"{{chat:42}}:member:{i}" for i in range(20)]
    await storage.set_many(dict.fromkeys(keys, 1))
    assert len(storage.backend._by_slot(keys)) == 1
    assert await storage.get_many(keys) == dict.fromkeys(keys, 1)
    assert await storage.delete_many(keys) == 20


async def test_keys_and_clear_scan_every_master(
    storage: RedisStorage, redis_cluster_session: RedisCluster
) -> None:
    """keys() and clear(prefix) visit all masters and never touch other prefixes."""
    view = storage.with_prefix("bot1:")
    await view.set_many({f"u:{i}": i for i in range(2500)})
    await storage.set_many({f"bot2:u:{i}": i for i in range(30)})
    assert sorted([k async for k in view.keys()]) == sorted(f"u:{i}" for i in range(2500))
    assert len([k async for k in storage.keys("bot1:u:1")]) == 1 + 10 + 100 + 1000
    assert await view.clear() == 2500
    spread = await per_node_keys(redis_cluster_session)
    assert set().union(*spread) == {f"bot2:u:{i}" for i in range(30)}


async def test_atomic_ops_on_the_cluster(storage: RedisStorage) -> None:
    """add, incr (with TTL) and update run their scripts on the key's own master."""
    results = await asyncio.gather(*(storage.add("lock", i, ttl=30) for i in range(20)))
    assert results.count(True) == 1
    counts = await asyncio.gather(*(storage.incr(f"c{i % 5}", ttl=30) for i in range(100)))
    assert sorted(counts) == sorted(list(range(1, 21)) * 5)
    assert {await storage.get(f"c{i}") for i in range(5)} == {20}

    def bump(v: dict[str, int]) -> dict[str, int]:
        return {"n": v["n"] + 1}

    await asyncio.gather(*(storage.update(f"u{i % 3}", bump, default={"n": 0}) for i in range(90)))
    assert [await storage.get(f"u{i}") for i in range(3)] == [{"n": 30}] * 3


async def test_four_processes_lose_no_update_on_the_cluster(redis_cluster_url: str) -> None:
    """4 processes x 250 update() on one key of the cluster end at exactly 1,000."""
    value, calls = await run_workers(redis_cluster_url, cluster=True)
    assert value == {"n": 1000}
    assert calls > 1000  # the processes really raced (and their retries resolved it)


async def _wait_for(probe: Any, within: float) -> Any:
    deadline = time.monotonic() + within
    while True:
        try:
            return await probe()
        except BackendUnavailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_a_dead_master_fails_promptly_and_recovers() -> None:
    """Killing the master of a key gives a typed error within seconds; once the node is back
    (appendonly yes, appendfsync always) the same storage serves every acknowledged write."""
    with redis_cluster(appendonly=True) as cluster:
        storage = RedisStorage.from_url(cluster.url, cluster=True)
        try:
            keys = [f"k{i}" for i in range(30)]
            await storage.set_many(dict.fromkeys(keys, "v"))
            victim = cluster.nodes[1]
            owned = (await per_node_keys(cluster))[1]
            key = sorted(owned)[0]
            await asyncio.to_thread(victim.kill)
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError) as info:
                await storage.get(key)
            assert time.monotonic() - started < 1.0  # no retry loop, no long timeout
            assert isinstance(info.value.__cause__, (rx.ConnectionError, rx.ClusterError))
            await asyncio.to_thread(victim.start)  # same port, same nodes.conf: same slots
            assert await _wait_for(lambda: storage.get(key), within=20.0) == "v"
            assert await storage.get_many(keys) == dict.fromkeys(keys, "v")
        finally:
            await storage.close()
