"""The conformance suite: the behaviour tests every storage must pass, in one mixin class."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from .._backend import Backend, Capabilities
from .._errors import (
    DecodeError,
    EncodeError,
    InvalidKeyError,
    KeyNotFoundError,
)
from .._keys import Key
from .._protocol import Storage
from .._storage import BaseStorage
from ._atomic import AtomicTests
from ._base import NON_WIDENING, ODD_KEYS, Point, Profile
from ._hostile import HostileTests

__all__ = ["NON_WIDENING", "ODD_KEYS", "Point", "Profile", "StorageTests"]


class StorageTests(AtomicTests, HostileTests):
    """Mixin with the behaviour tests every gramio-storage backend must pass.

    Subclass it in a test module, override the :meth:`storage` fixture to yield a fresh, empty
    storage, and set the capability flags that describe the backend::

        class TestMyStorage(StorageTests):
            @pytest.fixture
            async def storage(self, tmp_path):
                storage = MyStorage(tmp_path)
                yield storage
                await storage.close()

    The tests are ``async``: run them with pytest-asyncio (``asyncio_mode = "auto"``, or in
    strict mode decorate your fixture with ``pytest_asyncio.fixture``).

    Capability flags (class attributes) default to what ``storage.capabilities`` declares;
    set one only to assert a different claim:
        supports_ttl: The backend stores expiries and reports them through ``ttl()``.
        supports_atomic: ``add``/``incr``/``update`` exist; when False they must raise
            :class:`~gramio_storage.UnsupportedOperationError`.
        min_ttl: The smallest TTL the backend accepts, in seconds.
        eventually_consistent: Reads may lag writes; read checks poll until ``consistency_timeout``.
        max_expiry_wait: Expiry tests that would wait longer than this (because of ``min_ttl``)
            are skipped; test that expiry separately with a slow test.
        ttl_precision: How far ``ttl()`` may be from the truth, in seconds.
        encodes_values: Values go through the codec (False only for reference-storing modes
            such as ``MemoryStorage(codec=None)``, where a typed value is returned as stored).

    Override :meth:`advance_time` with a fake clock where the backend has one.
    """

    # ------------------------------------------------------------------ the four methods

    async def test_is_a_storage(self, storage: BaseStorage) -> None:
        """The fixture is a facade over a Backend that declares its capabilities."""
        assert isinstance(storage, Storage)
        assert isinstance(storage, BaseStorage), "the kit tests storages built on BaseStorage"
        assert isinstance(storage.backend, Backend)
        caps = storage.capabilities
        assert isinstance(caps, Capabilities) and caps is storage.backend.capabilities
        assert caps.name and caps.name != "custom", "declare Capabilities(name=...)"
        assert caps.min_ttl >= 0 and (caps.max_ttl is None or caps.max_ttl > caps.min_ttl)
        if caps.atomic:
            assert caps.atomic_ops, "atomic across processes implies the atomic operations"

    async def test_get_missing_returns_default(self, storage: BaseStorage) -> None:
        """A missing key reads as None, or as the default given."""
        assert await storage.get("missing") is None
        assert await storage.get("missing", "fallback") == "fallback"
        assert await storage.has("missing") is False

    @pytest.mark.parametrize(
        "value",
        [
            {"step": "ask_age", "name": "Alice", "nested": {"list": [1, 2.5, "x", None]}},
            [1, "two", {"three": 3}],
            "plain string",
            12345678901234,
            -1.5,
            True,
        ],
        ids=["dict", "list", "str", "int", "float", "bool"],
    )
    async def test_set_then_get_round_trips(self, storage: BaseStorage, value: Any) -> None:
        """A JSON value comes back equal, and a returned value is not the stored object."""
        await storage.set("k", value)
        await self.expect(lambda: storage.get("k"), value)
        assert await storage.has("k") is True

    @pytest.mark.parametrize("value", [None, 0, False, "", [], {}], ids=repr)
    async def test_falsy_values_are_values(self, storage: BaseStorage, value: Any) -> None:
        """A stored None, 0, False or empty value is present, never confused with missing."""
        await storage.set("falsy", value)
        await self.expect(lambda: storage.has("falsy"), True)
        assert await storage.get("falsy", "DEFAULT") == value
        assert await storage.get_many(["falsy"]) == {"falsy": value}
        assert [k async for k in storage.keys("fal")] == ["falsy"]
        assert await storage.delete("falsy") is True

    async def test_set_overwrites(self, storage: BaseStorage) -> None:
        """A second set replaces the value."""
        await storage.set("k", {"v": 1})
        await storage.set("k", {"v": 2})
        await self.expect(lambda: storage.get("k"), {"v": 2})

    async def test_delete_reports_whether_the_key_existed(self, storage: BaseStorage) -> None:
        """Delete returns True once, then False; the key is gone."""
        await storage.set("k", 1)
        assert await storage.delete("k") is True
        await self.expect(lambda: storage.has("k"), False)
        assert await storage.delete("k") is False
        assert await storage.get("k") is None

    @pytest.mark.parametrize("key", ODD_KEYS, ids=lambda k: k[:16])
    async def test_odd_keys_round_trip(self, storage: BaseStorage, key: str) -> None:
        """Unicode, long keys and glob/LIKE characters are ordinary key text."""
        await storage.set(key, {"key": key})
        await self.expect(lambda: storage.get(key), {"key": key})
        assert [k async for k in storage.keys(key)] == [key]
        assert await storage.delete(key) is True

    async def test_unicode_values_round_trip(self, storage: BaseStorage) -> None:
        """Non-ASCII text survives the codec and the backend."""
        value = {"text": "Привет, 世界 🎉", "quote": "\"'\\"}
        await storage.set("u", value)
        await self.expect(lambda: storage.get("u"), value)

    # ------------------------------------------------------------------ typed keys

    async def test_typed_keys_decode_into_their_type(self, storage: BaseStorage) -> None:
        """Key[T] values come back as T: dataclass, Struct, datetime, int."""
        profile = Key("profile:{id}", Profile).format(id=7)
        point = Key("point", Point)
        when = Key("when", datetime)
        count = Key("count", int)
        stamp = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
        await storage.set(profile, Profile("Alice", 30, ["a"]))
        await storage.set(point, Point(1, 2))
        await storage.set(when, stamp)
        await storage.set(count, 5)
        await self.expect(lambda: storage.get(profile), Profile("Alice", 30, ["a"]))
        assert await storage.get(point) == Point(1, 2)
        assert await storage.get(when) == stamp
        assert await storage.get(count) == 5
        if self.encodes_values:  # a str key sees the plain JSON behind the typed value
            assert await storage.get("profile:7") == {"name": "Alice", "age": 30, "tags": ["a"]}
        assert await storage.get_many([profile, count]) == {
            profile: Profile("Alice", 30, ["a"]),
            count: 5,
        }

    async def test_wrongly_typed_value_raises_decode_error(self, storage: BaseStorage) -> None:
        """A stored value that does not fit the key's type raises DecodeError naming the key."""
        self.skip_unless_encoding()
        await storage.set("profile:1", {"name": "Bob"})  # no age
        with pytest.raises(DecodeError, match="profile:1") as info:
            await storage.get(Key("profile:1", Profile))
        assert info.value.key is not None and info.value.key.endswith("profile:1")
        assert await storage.get("profile:1") == {"name": "Bob"}  # nothing changed

    async def test_unfilled_template_is_rejected(self, storage: BaseStorage) -> None:
        """Using a template key without .format() raises InvalidKeyError."""
        with pytest.raises(InvalidKeyError, match="user:"):
            await storage.get(Key("user:{id}", Profile))

    # ------------------------------------------------------------------ bulk operations

    async def test_get_many_returns_found_keys_only(self, storage: BaseStorage) -> None:
        """get_many maps each found key to its value and omits missing ones."""
        await storage.set_many({"a": 1, "b": None, "c": {"x": 1}})
        await self.expect(
            lambda: storage.get_many(["a", "b", "c", "missing", "a"]),
            {"a": 1, "b": None, "c": {"x": 1}},
        )
        assert await storage.get_many([]) == {}

    async def test_set_many_with_ttl(self, storage: BaseStorage) -> None:
        """set_many applies its TTL to every key."""
        self.skip_unless_ttl()
        ttl = max(self.min_ttl or 0.0, 100.0)
        await storage.set_many({"a": 1, "b": 2}, ttl=ttl)
        for key in ("a", "b"):
            left = await storage.ttl(key)
            assert left is not None and ttl - self.ttl_precision - 1 <= left <= ttl

    async def test_delete_many_counts_existing_keys(self, storage: BaseStorage) -> None:
        """delete_many returns how many keys existed, counting each once."""
        await storage.set_many({"a": 1, "b": 2, "c": 3})
        assert await storage.delete_many(["a", "b", "missing", "a"]) == 2
        await self.expect(lambda: storage.get_many(["a", "b", "c"]), {"c": 3})
        assert await storage.delete_many([]) == 0

    async def test_many_ops_reject_a_single_string(self, storage: BaseStorage) -> None:
        """Passing one str where an iterable of keys belongs is an error, not a char loop."""
        with pytest.raises(InvalidKeyError):
            await storage.get_many("abc")
        with pytest.raises(InvalidKeyError):
            await storage.delete_many("abc")

    async def test_set_many_writes_nothing_if_a_value_is_bad(self, storage: BaseStorage) -> None:
        """One unencodable value aborts the whole batch before anything is written."""
        self.skip_unless_encoding()
        await storage.set("a", "old")
        with pytest.raises(EncodeError, match="'b'"):
            await storage.set_many({"a": "new", "b": object()})
        await self.expect(lambda: storage.get("a"), "old")
        assert await storage.has("b") is False

    # ------------------------------------------------------------------ scans and clear

    async def _seed(self, storage: BaseStorage, keys: list[str]) -> None:
        await storage.set_many(dict.fromkeys(keys, 1))

    async def _keys(self, storage: BaseStorage, prefix: str = "") -> list[str]:
        return sorted([k async for k in storage.keys(prefix)])

    async def test_keys_lists_by_prefix(self, storage: BaseStorage) -> None:
        """keys(prefix) yields exactly the keys starting with prefix; '' yields all."""
        await self._seed(storage, ["user:1", "user:10", "user:2", "chat:1"])
        await self.expect(lambda: self._keys(storage), ["chat:1", "user:1", "user:10", "user:2"])
        assert await self._keys(storage, "user:") == ["user:1", "user:10", "user:2"]
        assert await self._keys(storage, "user:1") == ["user:1", "user:10"]
        assert await self._keys(storage, "nothing") == []

    @pytest.mark.parametrize(("prefix", "other"), NON_WIDENING)
    async def test_keys_prefix_never_widens(
        self, storage: BaseStorage, prefix: str, other: str
    ) -> None:
        """Glob and LIKE metacharacters in a prefix match only themselves."""
        await self._seed(storage, [prefix + "1", other + "1"])
        await self.expect(lambda: self._keys(storage, prefix), [prefix + "1"])
        assert await storage.clear(prefix) == 1
        await self.expect(lambda: self._keys(storage), [other + "1"])

    async def test_keys_on_many_keys_is_complete(self, storage: BaseStorage) -> None:
        """A scan over more keys than one page returns each key exactly once."""
        keys = [f"bulk:{i:04d}" for i in range(1200)]
        await self._seed(storage, keys)
        await self.expect(lambda: self._keys(storage, "bulk:"), keys)

    async def test_clear_touches_only_its_prefix(self, storage: BaseStorage) -> None:
        """clear(prefix) deletes that prefix's keys, returns the count, and leaves the rest."""
        await self._seed(storage, ["a:1", "a:2", "ab:1", "b:1"])
        assert await storage.clear("a:") == 2
        await self.expect(lambda: self._keys(storage), ["ab:1", "b:1"])
        assert await storage.clear() == 2
        await self.expect(lambda: self._keys(storage), [])

    # ------------------------------------------------------------------ views

    async def test_views_are_isolated(self, storage: BaseStorage) -> None:
        """A view scopes every operation to its prefix and nests."""
        users = storage.with_prefix("users:")
        admins = users.with_prefix("admins:")
        await users.set("1", "u1")
        await admins.set("1", "a1")
        await storage.set("1", "root")
        await self.expect(lambda: users.get("1"), "u1")
        assert await admins.get("1") == "a1"
        assert await storage.get("users:admins:1") == "a1"
        assert await self._keys(users) == ["1", "admins:1"]
        assert await self._keys(admins) == ["1"]
        assert admins.prefix == storage.prefix + "users:admins:"
        assert await admins.clear() == 1
        await self.expect(lambda: self._keys(storage), ["1", "users:1"])
        await admins.close()  # a view does not own the backend
        assert await users.get("1") == "u1"

    async def test_view_bulk_and_atomic_ops_use_the_prefix(self, storage: BaseStorage) -> None:
        """Bulk calls on a view read and write prefixed keys."""
        view = storage.with_prefix("v:")
        await view.set_many({"a": 1, "b": 2})
        await self.expect(lambda: view.get_many(["a", "b"]), {"a": 1, "b": 2})
        assert await storage.get_many(["v:a", "a"]) == {"v:a": 1}
        assert await view.delete_many(["a"]) == 1
        if self.supports_atomic:
            assert await view.incr("n") == 1
            assert await storage.get("v:n") == 1

    # ------------------------------------------------------------------ TTL

    async def test_ttl_of_a_key_without_expiry_is_none(self, storage: BaseStorage) -> None:
        """ttl() is None for a key without expiry and raises KeyNotFoundError for a missing key."""
        self.skip_unless_ttl()
        await storage.set("k", 1)
        assert await storage.ttl("k") is None
        with pytest.raises(KeyNotFoundError):
            await storage.ttl("missing")

    async def test_ttl_reports_time_left(self, storage: BaseStorage) -> None:
        """ttl() reports about the seconds given, as int, float or timedelta."""
        self.skip_unless_ttl()
        base = max(self.min_ttl or 0.0, 100.0)
        for key, ttl in (
            ("int", int(base)),
            ("float", base + 0.5),
            ("td", timedelta(seconds=base)),
        ):
            await storage.set(key, 1, ttl=ttl)
            expected = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
            left = await storage.ttl(key)
            assert left is not None and expected - self.ttl_precision - 1 <= left <= expected

    async def test_scan_with_ttls_agrees_with_ttl(self, storage: BaseStorage) -> None:
        """``backend.scan_ttl`` (used by the CLI) lists live keys with what ttl() reports."""
        long = max(self.min_ttl or 0.0, 100.0)
        await storage.set_many({"s:plain": 1, "other": 3})
        if self.supports_ttl:
            await storage.set("s:timed", 2, ttl=long)
        expected = {storage.prefix + "s:plain"} | (
            {storage.prefix + "s:timed"} if self.supports_ttl else set()
        )
        await self.expect(lambda: _keyset(storage, storage.prefix + "s:"), expected)
        found = {k: t async for k, t in storage.backend.scan_ttl(storage.prefix + "s:")}
        assert found.keys() == expected
        assert found[storage.prefix + "s:plain"] is None
        if self.supports_ttl:
            left = found[storage.prefix + "s:timed"]
            assert left is not None and long - self.ttl_precision - 1 <= left <= long

    async def test_set_without_ttl_removes_the_expiry(self, storage: BaseStorage) -> None:
        """A plain set replaces the value and its expiry, like Redis SET."""
        self.skip_unless_ttl()
        await storage.set("k", 1, ttl=max(self.min_ttl or 0.0, 100.0))
        await storage.set("k", 2)
        assert await storage.ttl("k") is None

    async def test_expired_keys_disappear(self, storage: BaseStorage) -> None:
        """After its TTL a key is missing for get, has, get_many, keys and ttl."""
        self.skip_unless_ttl(wait=True)
        ttl = self.short_ttl()
        await storage.set("short", {"v": 1}, ttl=ttl)
        await storage.set("long", {"v": 2})
        assert await storage.get("short") == {"v": 1}
        await self.advance_time(storage, ttl)
        await self.expect(lambda: storage.has("short"), False, within=2.0)
        assert await storage.get("short", "gone") == "gone"
        assert await storage.get_many(["short", "long"]) == {"long": {"v": 2}}
        assert await self._keys(storage) == ["long"]
        with pytest.raises(KeyNotFoundError):
            await storage.ttl("short")
        assert await storage.delete("short") is False

    # ------------------------------------------------------------------ lifecycle

    async def test_async_with_returns_the_storage(self, storage: BaseStorage) -> None:
        """A storage is an async context manager yielding itself (closing is tested per backend)."""
        assert await storage.__aenter__() is storage
        assert "prefix=" in repr(storage.with_prefix("p:"))




async def _keyset(storage: BaseStorage, prefix: str) -> set[str]:
    return {k async for k, _ in storage.backend.scan_ttl(prefix)}
