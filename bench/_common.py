"""What the benchmarks share: the session value, the keys, the timing loop, the contenders' ops.

Every bench runs the same work on every contender: ``set``/``get`` of a small session dict and
a read-modify-write ``update`` of it, cycling over 1,000 user keys. The op builders below give
each kind of contender (a gramio-storage storage, an aiogram FSM storage, a py-key-value store)
exactly that work, so a ratio compares storages, not benchmark code.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

SESSION = {"step": "ask_age", "name": "Alice", "age": 30, "tags": ["new", "ru"], "score": 12.5}
USERS = 1_000
KEYS = [f"session:{i}" for i in range(USERS)]

Op = Callable[[int], Awaitable[Any]]


def bump(d: Any) -> Any:
    """The update every contender applies: one field of the session changes."""
    d["score"] += 1
    return d


async def ops_per_second(op: Op, n: int, rounds: int) -> float:
    """``n`` awaited calls of ``op(i)``, best of ``rounds``, as operations per second."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(n):
            await op(i)
        best = min(best, time.perf_counter() - start)
    return n / best


def storage_ops(storage: Any, keys: list[str] = KEYS) -> tuple[Op, Op, Op]:
    """set, get and (atomic) update on a gramio-storage storage."""

    async def set_(i: int) -> None:
        await storage.set(keys[i % USERS], SESSION)

    async def get(i: int) -> Any:
        return await storage.get(keys[i % USERS])

    async def update(i: int) -> Any:
        return await storage.update(keys[i % USERS], bump, default=dict(SESSION))

    return set_, get, update


def aiogram_ops(storage: Any) -> tuple[Op, Op, Op]:
    """set_data, get_data and get-then-set (as aiogram's update_data) on an FSM storage."""
    from aiogram.fsm.storage.base import StorageKey

    keys = [StorageKey(bot_id=1, chat_id=i, user_id=i) for i in range(USERS)]

    async def set_(i: int) -> None:
        await storage.set_data(keys[i % USERS], SESSION)

    async def get(i: int) -> Any:
        return await storage.get_data(keys[i % USERS])

    async def update(i: int) -> Any:
        key = keys[i % USERS]
        data = await storage.get_data(key) or dict(SESSION)
        await storage.set_data(key, bump(data))
        return data

    return set_, get, update


def py_key_value_ops(store: Any, keys: list[str] = KEYS) -> tuple[Op, Op, Op]:
    """put, get and get-then-put (py-key-value has no compare-and-set) on a py-key-value store."""

    async def set_(i: int) -> None:
        await store.put(keys[i % USERS], SESSION, collection="sessions")

    async def get(i: int) -> Any:
        return await store.get(keys[i % USERS], collection="sessions")

    async def update(i: int) -> Any:
        key = keys[i % USERS]
        data = dict(await store.get(key, collection="sessions") or SESSION)
        await store.put(key, bump(data), collection="sessions")
        return data

    return set_, get, update
