"""The kit's base: capability flags (read from the storage's Capabilities), fixtures, helpers."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import msgspec
import pytest

from .._storage import BaseStorage

__all__ = ["NON_WIDENING", "ODD_KEYS", "KitBase", "Point", "Profile"]

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




class KitBase:
    """Flags, fixtures and helpers shared by the kit's test mixins.

    Capability flags default to ``None``: "read it from ``storage.capabilities``", so a
    backend's test class needs none. Set one only to test a deliberately different claim.
    """

    supports_ttl: ClassVar[bool | None] = None
    supports_atomic: ClassVar[bool | None] = None
    min_ttl: ClassVar[float | None] = None
    eventually_consistent: ClassVar[bool | None] = None
    encodes_values: ClassVar[bool | None] = None
    consistency_timeout: ClassVar[float] = 10.0
    max_expiry_wait: ClassVar[float] = 5.0
    ttl_precision: ClassVar[float] = 1.0

    pytestmark = pytest.mark.asyncio

    @pytest.fixture(autouse=True)
    def _read_capabilities(self, storage: BaseStorage) -> None:
        """Fill every flag left at ``None`` from the storage under test (instance attributes)."""
        caps = storage.capabilities
        derived: dict[str, Any] = {
            "supports_ttl": caps.ttl,
            "supports_atomic": caps.atomic_ops,
            "min_ttl": caps.min_ttl,
            "eventually_consistent": caps.eventually_consistent,
            "encodes_values": not getattr(storage.codec, "stores_references", False),
        }
        for name, value in derived.items():
            if getattr(type(self), name) is None:
                setattr(self, name, value)

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
        return max(self.min_ttl or 0.0, 0.3)

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

