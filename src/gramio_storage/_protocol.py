"""The structural contract plugins accept: GramIO's four storage methods, typed for Python."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar, overload, runtime_checkable

if TYPE_CHECKING:
    from ._keys import Key

__all__ = ["TTL", "Storage"]

T = TypeVar("T")
D = TypeVar("D")

TTL: TypeAlias = "float | timedelta"
"""A time to live: seconds (``int`` or ``float``) or a :class:`~datetime.timedelta`."""


@runtime_checkable
class Storage(Protocol):
    """What a plugin accepts: any object with these four async methods is a storage.

    This mirrors GramIO's ``Storage`` contract, so the smallest adapter is four methods and no
    base class. Every built-in storage (a :class:`~gramio_storage.BaseStorage`) implements it,
    plus TTL, bulk, atomic and prefix operations. A plugin should type its option as
    ``storage: Storage | None = None`` and default to ``MemoryStorage()``.

    A stored ``None``, ``0``, ``False`` or ``""`` is a value: ``has`` answers True for it and
    ``get`` returns it rather than the default.
    """

    @overload
    async def get(self, key: Key[T]) -> T | None: ...
    @overload
    async def get(self, key: Key[T], default: D) -> T | D: ...
    @overload
    async def get(self, key: str, default: Any = None) -> Any: ...
    async def get(self, key: Any, default: Any = None) -> Any:
        """Return the value stored under ``key``, or ``default`` if there is none."""
        ...

    async def has(self, key: str | Key[Any]) -> bool:
        """Return whether ``key`` holds a value (of any kind, ``None`` included)."""
        ...

    @overload
    async def set(self, key: Key[T], value: T, *, ttl: TTL | None = None) -> None: ...
    @overload
    async def set(self, key: str, value: Any, *, ttl: TTL | None = None) -> None: ...
    async def set(self, key: Any, value: Any, *, ttl: TTL | None = None) -> None:
        """Store ``value`` under ``key``, expiring after ``ttl`` when given."""
        ...

    async def delete(self, key: str | Key[Any]) -> bool:
        """Remove ``key``; return whether it existed."""
        ...
