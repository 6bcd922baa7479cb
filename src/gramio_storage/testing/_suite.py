"""The conformance suite: one mixin class of behaviour tests every storage must pass."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import msgspec
import pytest

from .._errors import (
    DecodeError,
    EncodeError,
    InvalidKeyError,
    InvalidTTLError,
    KeyNotFoundError,
    UnsupportedOperationError,
)
from .._keys import Key
from .._protocol import Storage
from .._storage import BaseStorage

__all__ = ["ODD_KEYS", "StorageTests"]

# Keys that break naive adapters: glob and LIKE metacharacters, separators, unicode, length.
ODD_KEYS = [
    "with space",
    "star*",
    "question?",
    "[brackets]",
    "percent%",
    "under_score",
    "colon:key",
    "slash/key",
    "back\\slash",
    "ключ-юникод",
    "emoji-🎉",
    "quote'\"",
    "x" * 500,
]

# Prefix pairs where a widening scan would wrongly match the second key.
NON_WIDENING = [
    ("a*", "ab"),
    ("a?", "ab"),
    ("a[bc]", "ab"),
    ("a%", "ab"),
    ("a_", "ab"),
    ("a\\", "a/"),
    ("a.", "ab"),
]


@dataclasses.dataclass
class Profile:
    """Sample dataclass value."""

    name: str
    age: int
    tags: list[str] = dataclasses.field(default_factory=list)


class Point(msgspec.Struct):
    """Sample Struct value."""

    x: int
    y: int


class StorageTests:
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

    Capability flags (class attributes):
        supports_ttl: The backend stores expiries and reports them through ``ttl()``.
        supports_atomic: ``add``/``incr``/``update`` are atomic; when False they must raise
            :class:`~gramio_storage.UnsupportedOperationError`.
        min_ttl: The smallest TTL the backend accepts, in seconds.
        eventually_consistent: Reads may lag writes; read checks poll until ``consistency_timeout``.
        max_expiry_wait: Expiry tests that would wait longer than this (because of ``min_ttl``)
            are skipped; test that expiry separately with a slow test.
        ttl_precision: How far ``ttl()`` may be from the truth, in seconds.
        encodes_values: Values go through the codec (False only for reference-storing modes
            such as ``MemoryStorage(codec=None)``, where a typed value is returned as stored).
    """

    supports_ttl: ClassVar[bool] = True
    supports_atomic: ClassVar[bool] = True
    min_ttl: ClassVar[float] = 0.0
    eventually_consistent: ClassVar[bool] = False
    consistency_timeout: ClassVar[float] = 10.0
    max_expiry_wait: ClassVar[float] = 5.0
    ttl_precision: ClassVar[float] = 1.0
    encodes_values: ClassVar[bool] = True

    pytestmark = pytest.mark.asyncio

    # ------------------------------------------------------------------ fixtures and hooks

    @pytest.fixture
    async def storage(self) -> AsyncIterator[BaseStorage]:
        """Override: yield a fresh, empty storage and close it afterwards."""
        raise NotImplementedError("Override the `storage` fixture in your StorageTests subclass")
        yield  # noqa: PT022 - an async generator, like the fixtures that override it

    async def advance_time(self, storage: BaseStorage, seconds: float) -> None:
        """Let ``seconds`` pass for the storage. Override with a fake clock where possible."""
        await asyncio.sleep(seconds)

    async def expect(
        self, probe: Callable[[], Awaitable[Any]], expected: Any, *, within: float | None = None
    ) -> None:
        """Assert ``await probe() == expected``, polling where the backend may lag.

        Consistent backends are probed once unless ``within`` (seconds) is given: expiry checks
        give it, since a server may expire a key slightly after its deadline.
        """
        if within is None:
            within = self.consistency_timeout if self.eventually_consistent else 0.0
        deadline = time.monotonic() + within
        while True:
            actual = await probe()
            if actual == expected or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        assert actual == expected, f"expected {expected!r}, got {actual!r}"

    def short_ttl(self) -> float:
        """A TTL that expires soon but is accepted by the backend."""
        return max(self.min_ttl, 0.3)

    def skip_unless_ttl(self, *, wait: bool = False) -> None:
        """Skip a test that needs TTLs (or needs to wait for one) the backend cannot offer."""
        if not self.supports_ttl:
            pytest.skip("backend declares supports_ttl = False")
        if wait and self.short_ttl() > self.max_expiry_wait:
            pytest.skip(f"min_ttl {self.min_ttl}s exceeds max_expiry_wait {self.max_expiry_wait}s")

    def skip_unless_encoding(self) -> None:
        """Skip a test of codec errors on a storage that keeps references instead."""
        if not self.encodes_values:
            pytest.skip("values are stored as references, never encoded or decoded")

    def skip_unless_atomic(self) -> None:
        """Skip a test of the atomic operations on a backend without them."""
        if not self.supports_atomic:
            pytest.skip("backend declares supports_atomic = False")

    # ------------------------------------------------------------------ the four methods

    async def test_is_a_storage(self, storage: BaseStorage) -> None:
        """Every storage satisfies the runtime-checkable Storage protocol."""
        assert isinstance(storage, Storage)

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
        ttl = max(self.min_ttl, 100.0)
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
        base = max(self.min_ttl, 100.0)
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
        """The ``_scan_ttl`` hook (used by the CLI) lists live keys with what ttl() reports."""
        long = max(self.min_ttl, 100.0)
        await storage.set_many({"s:plain": 1, "other": 3})
        if self.supports_ttl:
            await storage.set("s:timed", 2, ttl=long)
        root = storage._root
        expected = {storage.prefix + "s:plain"} | (
            {storage.prefix + "s:timed"} if self.supports_ttl else set()
        )
        await self.expect(lambda: _keyset(root, storage.prefix + "s:"), expected)
        found = {k: t async for k, t in root._scan_ttl(storage.prefix + "s:")}
        assert found.keys() == expected
        assert found[storage.prefix + "s:plain"] is None
        if self.supports_ttl:
            left = found[storage.prefix + "s:timed"]
            assert left is not None and long - self.ttl_precision - 1 <= left <= long

    async def test_set_without_ttl_removes_the_expiry(self, storage: BaseStorage) -> None:
        """A plain set replaces the value and its expiry, like Redis SET."""
        self.skip_unless_ttl()
        await storage.set("k", 1, ttl=max(self.min_ttl, 100.0))
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

    # ------------------------------------------------------------------ atomic operations

    async def test_add_only_when_absent(self, storage: BaseStorage) -> None:
        """Add stores a value only if the key is absent; a stored None counts as present."""
        if not self.supports_atomic:
            with pytest.raises(UnsupportedOperationError):
                await storage.add("k", 1)
            return
        assert await storage.add("k", 1) is True
        assert await storage.add("k", 2) is False
        await self.expect(lambda: storage.get("k"), 1)
        await storage.set("none", None)
        assert await storage.add("none", 5) is False
        assert await storage.get("none", "DEFAULT") is None

    async def test_add_replaces_an_expired_key(self, storage: BaseStorage) -> None:
        """An expired key is absent for add."""
        self.skip_unless_atomic()
        self.skip_unless_ttl(wait=True)
        await storage.add("lock", "a", ttl=self.short_ttl())
        await self.advance_time(storage, self.short_ttl())
        await self.expect(lambda: storage.has("lock"), False, within=2.0)
        assert await storage.add("lock", "b") is True
        assert await storage.get("lock") == "b"

    async def test_incr_and_update_treat_expired_keys_as_absent(self, storage: BaseStorage) -> None:
        """An expired counter restarts at 0 without its old expiry; update sees the default."""
        self.skip_unless_atomic()
        self.skip_unless_ttl(wait=True)
        ttl = self.short_ttl()
        await storage.set("n", 41, ttl=ttl)
        await storage.set("u", {"v": 1}, ttl=ttl)
        await self.advance_time(storage, ttl)
        await self.expect(lambda: storage.has("n"), False, within=2.0)
        await self.expect(lambda: storage.has("u"), False, within=2.0)
        assert await storage.incr("n") == 1
        assert await storage.ttl("n") is None
        assert await storage.update("u", lambda v: v, default={"v": 0}) == {"v": 0}
        assert await storage.get("u") == {"v": 0}

    async def test_incr_counts(self, storage: BaseStorage) -> None:
        """Incr starts at 0, adds any int, and the counter reads back as a plain number."""
        if not self.supports_atomic:
            with pytest.raises(UnsupportedOperationError):
                await storage.incr("n")
            return
        assert await storage.incr("n") == 1
        assert await storage.incr("n", 10) == 11
        assert await storage.incr("n", -12) == -1
        assert await storage.get("n") == -1
        assert await storage.get(Key("n", int)) == -1

    async def test_incr_rejects_non_integers(self, storage: BaseStorage) -> None:
        """Incr on a non-integer value raises DecodeError and leaves the value alone."""
        self.skip_unless_atomic()
        await storage.set("s", "text")
        with pytest.raises(DecodeError, match="'s'"):
            await storage.incr("s")
        assert await storage.get("s") == "text"
        with pytest.raises(TypeError):
            await storage.incr("n", 1.5)  # type: ignore[arg-type]
        assert await storage.has("n") is False

    async def test_incr_keeps_an_existing_expiry(self, storage: BaseStorage) -> None:
        """Incr sets the TTL when it creates the counter and keeps it afterwards."""
        self.skip_unless_atomic()
        self.skip_unless_ttl()
        ttl = max(self.min_ttl, 100.0)
        assert await storage.incr("w", ttl=ttl) == 1
        assert await storage.incr("w", ttl=ttl * 10) == 2
        left = await storage.ttl("w")
        assert left is not None and left <= ttl

    async def test_update_reads_modifies_writes(self, storage: BaseStorage) -> None:
        """Update passes the current value (or the default) to fn and stores what it returns."""
        if not self.supports_atomic:
            with pytest.raises(UnsupportedOperationError):
                await storage.update("k", lambda v: v)
            return
        default = {"n": 0, "seen": []}

        def bump(value: dict[str, Any]) -> dict[str, Any]:
            value["n"] += 1
            value["seen"].append(value["n"])
            return value

        assert await storage.update("k", bump, default=default) == {"n": 1, "seen": [1]}
        assert default == {"n": 0, "seen": []}  # the caller's default is never mutated
        assert await storage.update("k", bump, default=default) == {"n": 2, "seen": [1, 2]}
        assert await storage.get("k") == {"n": 2, "seen": [1, 2]}
        assert await storage.update("none", lambda v: v) is None
        assert await storage.has("none") is True

    async def test_update_with_typed_key(self, storage: BaseStorage) -> None:
        """Update decodes into the key's type before calling fn."""
        self.skip_unless_atomic()
        key = Key("profile", Profile)
        await storage.set(key, Profile("Ann", 20))

        def birthday(p: Profile | None) -> Profile:
            assert isinstance(p, Profile)
            return dataclasses.replace(p, age=p.age + 1)

        assert await storage.update(key, birthday) == Profile("Ann", 21)
        assert await storage.get(key) == Profile("Ann", 21)

    async def test_update_that_raises_writes_nothing(self, storage: BaseStorage) -> None:
        """An exception from fn propagates and the value stays as it was."""
        self.skip_unless_atomic()
        await storage.set("k", 1)

        def boom(value: Any) -> Any:
            raise RuntimeError("no")

        with pytest.raises(RuntimeError, match="no"):
            await storage.update("k", boom)
        if self.encodes_values:
            with pytest.raises(EncodeError):
                await storage.update("k", lambda v: object())
        assert await storage.get("k") == 1

    async def test_concurrent_updates_lose_nothing(self, storage: BaseStorage) -> None:
        """100 concurrent update() and 100 incr() calls on one key each end at 100."""
        self.skip_unless_atomic()

        def bump(value: dict[str, int]) -> dict[str, int]:
            return {"n": value["n"] + 1}

        await asyncio.gather(
            *(storage.update("u", bump, default={"n": 0}) for _ in range(100)),
            *(storage.incr("c") for _ in range(100)),
        )
        assert await storage.get("u") == {"n": 100}
        assert await storage.get("c") == 100

    async def test_concurrent_adds_have_one_winner(self, storage: BaseStorage) -> None:
        """Of 50 concurrent add() calls on one key exactly one succeeds."""
        self.skip_unless_atomic()
        results = await asyncio.gather(*(storage.add("once", i) for i in range(50)))
        assert results.count(True) == 1
        assert await storage.get("once") == results.index(True)

    # ------------------------------------------------------------------ bad input

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
        if self.min_ttl <= 0:
            await storage.set("k", 1, ttl=0.001)
            await storage.set("long", 1, ttl=timedelta(milliseconds=100_000))
            if self.supports_ttl:
                left = await storage.ttl("long")
                assert left is not None and 100 - self.ttl_precision - 1 <= left <= 100
            return
        with pytest.raises(InvalidTTLError, match=f"{self.min_ttl:g}"):
            await storage.set("k", 1, ttl=self.min_ttl / 2)
        assert await storage.has("k") is False

    # ------------------------------------------------------------------ lifecycle

    async def test_async_with_returns_the_storage(self, storage: BaseStorage) -> None:
        """A storage is an async context manager yielding itself (closing is tested per backend)."""
        assert await storage.__aenter__() is storage
        assert "prefix=" in repr(storage.with_prefix("p:"))


async def _keyset(root: BaseStorage, prefix: str) -> set[str]:
    return {k async for k, _ in root._scan_ttl(prefix)}
