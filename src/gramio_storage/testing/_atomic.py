"""Kit tests of the atomic operations: add, incr, update, under concurrency."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from .._errors import DecodeError, EncodeError, InvalidArgumentError, UnsupportedOperationError
from .._keys import Key
from .._storage import BaseStorage
from ._base import KitBase, Profile

__all__ = ["AtomicTests"]


class AtomicTests(KitBase):
    """``add``/``incr``/``update``: semantics, expiry interplay, concurrency."""

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
        with pytest.raises(InvalidArgumentError):
            await storage.incr("n", 1.5)  # type: ignore[arg-type]
        assert await storage.has("n") is False

    async def test_incr_keeps_an_existing_expiry(self, storage: BaseStorage) -> None:
        """Incr sets the TTL when it creates the counter and keeps it afterwards."""
        self.skip_unless_atomic()
        self.skip_unless_ttl()
        ttl = max(self.min_ttl or 0.0, 100.0)
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

