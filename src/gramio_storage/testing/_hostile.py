"""Kit tests of hostile input and lifecycle faults: every one a typed error, data untouched."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from .._codecs import JSONCodec
from .._errors import (
    EncodeError,
    InvalidArgumentError,
    InvalidKeyError,
    InvalidTTLError,
    StorageClosedError,
    StorageError,
)
from .._storage import BaseStorage
from ._base import KitBase

__all__ = ["HostileTests"]


class HostileTests(KitBase):
    """Bad keys, prefixes, TTLs, values and arguments; use after close; other event loops."""

    @pytest.mark.parametrize("key", [1, b"bytes", None, ("t",), ""], ids=repr)
    async def test_bad_keys_raise_invalid_key_error(self, storage: BaseStorage, key: Any) -> None:
        """A key that is not a non-empty str or Key raises InvalidKeyError everywhere."""
        await storage.set("keep", 1)
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: storage.get(key),
            lambda: storage.has(key),
            lambda: storage.set(key, 1),
            lambda: storage.delete(key),
            lambda: storage.get_many([key]),
            lambda: storage.set_many({key: 1}),
            lambda: storage.delete_many([key]),
            lambda: storage.ttl(key),
        ]
        if self.supports_atomic:
            calls += [
                lambda: storage.add(key, 1),
                lambda: storage.incr(key),
                lambda: storage.update(key, lambda v: v),
            ]
        for call in calls:
            with pytest.raises(InvalidKeyError):
                await call()
        assert await storage.get("keep") == 1

    async def test_unencodable_value_leaves_the_old_value(self, storage: BaseStorage) -> None:
        """An unserializable value raises EncodeError naming the key; the old value stays."""
        self.skip_unless_encoding()
        await storage.set("k", {"v": 1})
        for bad in (object(), {"f": lambda: 1}, {1j: 2}):
            with pytest.raises(EncodeError, match="'k'"):
                await storage.set("k", bad)
        await self.expect(lambda: storage.get("k"), {"v": 1})

    @pytest.mark.parametrize(
        "ttl",
        [-1, 0, -0.5, math.nan, math.inf, timedelta(seconds=-5), True, "60"],
        ids=repr,
    )
    async def test_bad_ttls_raise_invalid_ttl_error(self, storage: BaseStorage, ttl: Any) -> None:
        """A negative, zero, infinite, NaN or non-numeric TTL raises and writes nothing."""
        await storage.set("k", "old")
        with pytest.raises(InvalidTTLError):
            await storage.set("k", "new", ttl=ttl)
        with pytest.raises(InvalidTTLError):
            await storage.set_many({"k": "new", "other": 1}, ttl=ttl)
        await self.expect(lambda: storage.get("k"), "old")
        assert await storage.has("other") is False

    async def test_ttl_below_the_backend_minimum_is_rejected(self, storage: BaseStorage) -> None:
        """A TTL below min_ttl raises InvalidTTLError naming the limit (never rounded up).

        Without a minimum, even a millisecond TTL is accepted and reported.
        """
        min_ttl = self.min_ttl or 0.0
        if min_ttl <= 0:
            await storage.set("k", 1, ttl=0.001)
            await storage.set("long", 1, ttl=timedelta(milliseconds=100_000))
            if self.supports_ttl:
                left = await storage.ttl("long")
                assert left is not None and 100 - self.ttl_precision - 1 <= left <= 100
            return
        with pytest.raises(InvalidTTLError, match=f"{min_ttl:g}"):
            await storage.set("k", 1, ttl=min_ttl / 2)
        assert await storage.has("k") is False


    # ------------------------------------------------------------------ v2 hostile cases

    async def test_lone_surrogate_keys_are_invalid_keys(self, storage: BaseStorage) -> None:
        """A key with a lone surrogate is InvalidKeyError on every operation; data untouched."""
        await storage.set("keep", 1)
        key = "bad\ud800"
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: storage.get(key),
            lambda: storage.has(key),
            lambda: storage.set(key, 1),
            lambda: storage.delete(key),
            lambda: storage.get_many(["keep", key]),
            lambda: storage.set_many({"keep": 2, key: 1}),
            lambda: storage.delete_many(["keep", key]),
            lambda: storage.ttl(key),
        ]
        if self.supports_atomic:
            calls += [
                lambda: storage.add(key, 1),
                lambda: storage.incr(key),
                lambda: storage.update(key, lambda v: v),
            ]
        for call in calls:
            with pytest.raises(InvalidKeyError, match="surrogate"):
                await call()
        await self.expect(lambda: storage.get("keep"), 1)

    async def test_lone_surrogate_prefixes_are_invalid_keys(self, storage: BaseStorage) -> None:
        """with_prefix, keys and clear reject a prefix that is not UTF-8 encodable."""
        await storage.set("keep", 1)
        with pytest.raises(InvalidKeyError):
            storage.with_prefix("p\udfff:")
        with pytest.raises(InvalidKeyError):
            [k async for k in storage.keys("\ud800")]
        with pytest.raises(InvalidKeyError):
            await storage.clear("\ud800")
        await self.expect(lambda: storage.get("keep"), 1)

    async def test_too_long_key_in_a_batch_writes_nothing(self, storage: BaseStorage) -> None:
        """A key over max_key_bytes is InvalidKeyError in set as in set_many, before any I/O."""
        limit = storage.capabilities.max_key_bytes
        if limit is None:
            pytest.skip("the backend declares no key length limit")
        long = "k" * (limit + 1 - len(storage.prefix))
        with pytest.raises(InvalidKeyError, match=str(limit)):
            await storage.set(long, 1)
        with pytest.raises(InvalidKeyError, match=str(limit)):
            await storage.set_many({"ok": 1, long: 2})
        with pytest.raises(InvalidKeyError):
            await storage.get_many(["ok", long])
        assert await storage.has("ok") is False
        widest = "é" * ((limit - len(storage.prefix)) // 2 + 1)  # fits in chars, not in bytes
        with pytest.raises(InvalidKeyError):
            await storage.set(widest, 1)

    @pytest.mark.parametrize(
        "ttl",
        [10**400, 10**13 * 10**9, 1e308, timedelta.max],
        ids=["1e400", "1e22", "1e308", "max"],
    )
    async def test_absurd_ttls_are_invalid_or_work(self, storage: BaseStorage, ttl: Any) -> None:
        """Huge TTLs never raise OverflowError or a server's "out of range": typed or stored."""
        await storage.set("k", "old")
        try:
            await storage.set("k", "new", ttl=ttl)
        except InvalidTTLError:
            await self.expect(lambda: storage.get("k"), "old")
        else:
            await self.expect(lambda: storage.get("k"), "new")
            if self.supports_ttl:
                left = await storage.ttl("k")
                assert left is None or left > 10**6
        if self.supports_atomic:
            try:
                await storage.incr("n", ttl=ttl)
            except InvalidTTLError:
                assert await storage.has("n") is False

    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, {"x": [math.nan]}], ids=repr)
    async def test_nan_and_infinity_are_encode_errors(
        self, storage: BaseStorage, value: Any
    ) -> None:
        """JSON cannot represent NaN or infinity: EncodeError, never a silent null."""
        if not isinstance(storage.codec, JSONCodec):
            pytest.skip("only JSON lacks NaN and infinity")
        await storage.set("k", "old")
        with pytest.raises(EncodeError):
            await storage.set("k", value)
        with pytest.raises(EncodeError):
            await storage.set_many({"k": 1, "other": value})
        await self.expect(lambda: storage.get("k"), "old")
        assert await storage.has("other") is False

    @pytest.mark.parametrize("amount", [1.5, True, "1", None], ids=repr)
    async def test_incr_amount_must_be_an_int(self, storage: BaseStorage, amount: Any) -> None:
        """incr(amount=1.5) is InvalidArgumentError, also a TypeError; nothing is written."""
        self.skip_unless_atomic()
        with pytest.raises(InvalidArgumentError) as info:
            await storage.incr("n", amount)
        assert isinstance(info.value, TypeError)
        assert await storage.has("n") is False

    async def test_update_fn_that_mutates_then_raises_changes_nothing(
        self, storage: BaseStorage
    ) -> None:
        """update() hands fn a private copy, in every mode: a failed fn leaves no trace."""
        self.skip_unless_atomic()
        await storage.set("k", {"items": [1]})

        def mutate_then_fail(value: Any) -> Any:
            value["items"].append(2)
            value["new"] = True
            raise RuntimeError("no")

        with pytest.raises(RuntimeError):
            await storage.update("k", mutate_then_fail)
        assert await storage.get("k") == {"items": [1]}

    async def test_use_after_close_is_storage_closed_error(self, storage: BaseStorage) -> None:
        """After close() every operation, on the storage and its views, raises; close repeats."""
        view = storage.with_prefix("v:")
        await storage.set("k", 1)
        await storage.close()
        assert storage.closed and view.closed
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: storage.get("k"),
            lambda: storage.set("k", 2),
            lambda: storage.has("k"),
            lambda: storage.delete("k"),
            lambda: storage.get_many(["k"]),
            lambda: storage.set_many({"k": 2}),
            lambda: storage.clear(),
            lambda: view.get("k"),
            lambda: view.set("k", 2),
        ]
        for call in calls:
            with pytest.raises(StorageClosedError):
                await call()
        with pytest.raises(StorageClosedError):
            [k async for k in storage.keys()]
        await storage.close()  # idempotent

    async def test_cancelled_close_still_closes(self, storage: BaseStorage) -> None:
        """A close() cancelled while it runs still closes the storage."""
        await storage.set("k", 1)
        task = asyncio.ensure_future(storage.close())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert storage.closed
        with pytest.raises(StorageClosedError):
            await storage.get("k")
        await storage.close()

    async def test_a_second_event_loop_works_or_raises_typed(self, storage: BaseStorage) -> None:
        """Used from another thread's asyncio.run(), a storage works or raises a StorageError.

        Afterwards it still works on the loop it started on.
        """
        await storage.set("k", {"v": 1})
        outcome: list[object] = []

        def other_loop() -> None:
            async def use() -> object:
                await storage.set("k2", 2)
                return await storage.get("k2")

            try:
                outcome.append(asyncio.run(use()))
            except StorageError as e:
                outcome.append(e)
            except BaseException as e:
                outcome.append(("untyped", e))

        thread = threading.Thread(target=other_loop)
        thread.start()
        await asyncio.to_thread(thread.join, 60)
        assert outcome, "the second event loop did not finish within 60 s"
        result = outcome[0]
        assert not isinstance(result, tuple), f"untyped error from a second loop: {result!r}"
        if not isinstance(result, StorageError) and not self.eventually_consistent:
            assert result == 2
        await storage.set("k3", 3)
        await self.expect(lambda: storage.get("k"), {"v": 1})
        await self.expect(lambda: storage.get("k3"), 3)
