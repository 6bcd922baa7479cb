"""MemoryStorage behaviour beyond the shared kit: copies, references, expiry purging, LRU."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections import OrderedDict
from datetime import timedelta

import pytest

from gramio_storage import (
    MSGPACK,
    ConfigurationError,
    EncodeError,
    InvalidTTLError,
    Key,
    MemoryStorage,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_encoded_mode_returns_fresh_copies() -> None:
    """Mutating a value after set, or a value returned by get, never changes what is stored."""
    storage = MemoryStorage()
    value = {"items": [1]}
    await storage.set("k", value)
    value["items"].append(2)
    got = await storage.get("k")
    got["items"].append(3)
    assert await storage.get("k") == {"items": [1]}


async def test_encoded_mode_stores_json_bytes() -> None:
    """By default the mapping holds the same compact JSON a remote backend would get."""
    mapping: dict[str, object] = {}
    storage = MemoryStorage(mapping)
    await storage.set("user:1", {"name": "Ann", "age": 30, "tags": ["ü"]})
    assert mapping == {"user:1": '{"name":"Ann","age":30,"tags":["ü"]}'.encode()}


async def test_unserializable_value_fails_at_set_in_development() -> None:
    """The default mode catches values a real backend could not store, at set time."""
    storage = MemoryStorage()
    with pytest.raises(EncodeError, match="'k'"):
        await storage.set("k", {"callback": print})
    assert await storage.has("k") is False


async def test_reference_mode_stores_the_object_itself() -> None:
    """codec=None trades copies for speed: the same object comes back, sets are accepted."""
    mapping: dict[str, object] = {}
    storage = MemoryStorage(mapping, codec=None)
    value = {"a": {1, 2}}
    await storage.set("k", value)
    assert await storage.get("k") is value
    assert mapping["k"] is value


async def test_caller_supplied_mapping_is_used() -> None:
    """A caller's MutableMapping (an OrderedDict here) holds the entries, and is pre-seedable."""
    mapping: OrderedDict[str, object] = OrderedDict(seed=b'"hello"')
    storage = MemoryStorage(mapping)
    assert await storage.get("seed") == "hello"
    await storage.set("x", 1)
    assert list(mapping) == ["seed", "x"]


async def test_msgpack_codec() -> None:
    """A different codec changes the stored bytes, not the behaviour."""
    mapping: dict[str, object] = {}
    storage = MemoryStorage(mapping, codec=MSGPACK)
    await storage.set("k", {"a": 1})
    assert mapping["k"] == b"\x81\xa1a\x01"
    assert await storage.get("k") == {"a": 1}
    assert await storage.incr("n", 5) == 5


async def test_default_ttl_applies_to_writes_without_one() -> None:
    """A storage-wide TTL applies to set, set_many, add and incr; an explicit TTL wins."""
    clock = FakeClock()
    storage = MemoryStorage(ttl=timedelta(minutes=1), clock=clock)
    assert storage.default_ttl == 60
    await storage.set("a", 1)
    await storage.set("b", 1, ttl=600)
    await storage.set_many({"c": 1})
    await storage.add("d", 1)
    await storage.incr("e")
    assert [await storage.ttl(k) for k in "abcde"] == [60, 600, 60, 60, 60]
    clock.now += 61
    assert await storage.get_many(list("abcde")) == {"b": 1}


async def test_bad_default_ttl_is_rejected() -> None:
    """The constructor validates its TTL like every call does."""
    with pytest.raises(InvalidTTLError):
        MemoryStorage(ttl=-1)
    with pytest.raises(ConfigurationError):
        MemoryStorage(max_size=0)


async def test_incr_keeps_the_window_of_an_existing_counter() -> None:
    """A fixed-window rate limit: the window starts at the first hit and is not extended."""
    clock = FakeClock()
    storage = MemoryStorage(clock=clock)
    assert await storage.incr("hits", ttl=10) == 1
    clock.now += 6
    assert await storage.incr("hits", ttl=10) == 2
    assert await storage.ttl("hits") == 4
    clock.now += 4
    assert await storage.incr("hits", ttl=10) == 1  # a new window


@pytest.mark.slow  # a million writes, then a real second idle for the purge timer
async def test_expired_entries_are_purged_without_reads() -> None:
    """1,000,000 sets with ttl=0.01, then one second idle: almost nothing is left in memory."""
    storage = MemoryStorage()
    for i in range(1_000_000):
        await storage.set(f"k{i}", i, ttl=0.01)
    # Purging amortised over the writes already keeps the heap near the live window ...
    assert len(storage.backend._heap) < 1_000_000
    await asyncio.sleep(1.0)  # ... and the idle timer takes the rest: one second of idling
    assert len(storage) < 1_000  # near zero, without a single read
    await storage.close()


async def test_rewritten_keys_do_not_grow_the_expiry_heap() -> None:
    """One key rewritten with a TTL a million times keeps the bookkeeping O(live keys)."""
    storage = MemoryStorage()
    for i in range(200_000):
        await storage.set("session", i, ttl=3600)
    assert len(storage) == 1
    assert len(storage.backend._heap) <= 2 * 1 + 1024 + 1
    await storage.close()


async def test_sweeper_does_not_keep_a_dropped_storage_alive() -> None:
    """The idle timer holds only a weak reference; a dropped storage is collected."""
    storage = MemoryStorage()
    await storage.set("k", 1, ttl=30)
    assert storage.backend._timer is not None
    ref = weakref.ref(storage)
    del storage
    gc.collect()
    assert ref() is None


async def test_close_cancels_the_sweeper() -> None:
    """close() leaves no timer behind."""
    storage = MemoryStorage()
    await storage.set("k", 1, ttl=30)
    timer = storage.backend._timer
    assert timer is not None
    async with storage:
        pass
    assert storage.backend._timer is None
    assert timer.cancelled()


async def test_max_size_evicts_the_least_recently_used() -> None:
    """With max_size, reading a key protects it; the coldest key goes first."""
    storage = MemoryStorage(max_size=3)
    await storage.set_many({"a": 1, "b": 2, "c": 3})
    assert await storage.get("a") == 1  # a is now the most recent
    await storage.set("d", 4)  # evicts b
    assert sorted([k async for k in storage.keys()]) == ["a", "c", "d"]
    await storage.set("a", 10)  # an overwrite never evicts
    assert len(storage) == 3
    await storage.set("e", 5)  # evicts c
    assert await storage.get_many(["a", "b", "c", "d", "e"]) == {"a": 10, "d": 4, "e": 5}


async def test_max_size_prefers_dropping_expired_entries() -> None:
    """Expired entries are purged before a live key is evicted."""
    clock = FakeClock()
    storage = MemoryStorage(max_size=2, clock=clock)
    await storage.set("live", 1)
    await storage.set("short", 1, ttl=1)
    clock.now += 2
    await storage.set("new", 1)
    assert await storage.get_many(["live", "new"]) == {"live": 1, "new": 1}


async def test_fast_paths_respect_views_and_expiry() -> None:
    """The fast get/set/update paths give the same answers as the generic ones."""
    clock = FakeClock()
    storage = MemoryStorage(clock=clock)
    view = storage.with_prefix("v:")
    await view.set("k", 1, ttl=5)
    assert await view.get("k") == 1
    assert await view.update("k", lambda v: v + 1) == 2  # generic path: key has a deadline
    assert await storage.ttl("v:k") is None  # update without ttl writes like set
    await view.set("t", 1, ttl=5)
    await view.set("t", 2)  # fast path must drop the old deadline
    clock.now += 10
    assert await view.get("t") == 2
    assert await view.update("new", lambda v: (v or 0) + 1) == 1


async def test_typed_key_in_reference_mode_returns_what_was_stored() -> None:
    """Reference mode does not decode: a Key's type is a static promise only."""
    storage = MemoryStorage(codec=None)
    key = Key("n", int)
    await storage.set(key, 5)
    assert await storage.get(key) == 5
