"""What every wrapper shares: a Backend that delegates to another Backend, and the glue to facades.

A wrapper is a :class:`~gramio_storage.Backend` over an inner ``Backend``, so wrappers stack and
every storage gets them. The public constructors take storages (facades) because that is what
users hold; :func:`backend_of` turns one into the backend to wrap, keeping a view's prefix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from .._backend import Backend, Capabilities, Entry
from .._errors import ConfigurationError
from .._storage import BaseStorage

__all__ = [
    "PrefixedBackend",
    "WrapperBackend",
    "backend_of",
    "check_storage",
    "derive",
    "wrap_root",
]


def check_storage(storage: object, argument: str = "storage") -> BaseStorage:
    """``storage`` as a :class:`BaseStorage`, or a :class:`ConfigurationError` naming it."""
    if not isinstance(storage, BaseStorage):
        raise ConfigurationError(
            f"{argument} must be a gramio_storage storage (a BaseStorage), "
            f"got {storage.__class__.__qualname__}"
        )
    if storage.closed:
        raise ConfigurationError(f"{argument} is closed: {storage!r}")
    return storage


def backend_of(storage: BaseStorage) -> Backend:
    """The backend a wrapper of ``storage`` wraps: its own, scoped to the view's prefix."""
    check_storage(storage)
    if not storage.prefix:
        return storage.backend
    return PrefixedBackend(storage.backend, storage.prefix)


def wrap_root(storage: BaseStorage, wrap: Callable[[Backend], Backend]) -> Backend:
    """``wrap`` applied to the storage's root backend, then the view's prefix on top.

    For wrappers that must see *full* keys (encryption binds them as associated data), so a
    value copied from one view to another is still refused. The result closes ``storage``.
    """
    check_storage(storage)
    wrapped = wrap(storage.backend)
    return PrefixedBackend(wrapped, storage.prefix, owner=storage)


def derive(caps: Capabilities, **changes: Any) -> Capabilities:
    """A wrapper's capabilities: the inner backend's, never ``nonblocking``, with ``changes``."""
    return dataclasses.replace(caps, nonblocking=False, **changes)


class WrapperBackend(Backend):
    """A backend that passes every call to ``inner``; a wrapper overrides what it changes.

    Every optional method is forwarded, so the inner backend's native batches, atomic
    operations and TTL listings keep working under any stack of wrappers.

    Args:
        inner: The backend wrapped.
        owner: The storage ``inner`` came from, closed with this wrapper (``None``: close
            ``inner`` itself). Closing a view does nothing, as always.
    """

    def __init__(self, inner: Backend, *, owner: BaseStorage | None = None) -> None:
        if not isinstance(inner, Backend):
            raise ConfigurationError(
                f"inner must be a gramio_storage.Backend, got {inner.__class__.__qualname__}"
            )
        self.inner = inner
        self._owner = owner
        self.capabilities = derive(inner.capabilities)

    async def get(self, key: str) -> bytes | None:
        return await self.inner.get(key)

    async def set(self, key: str, data: bytes, ttl: float | None) -> None:
        await self.inner.set(key, data, ttl)

    async def delete(self, key: str) -> bool:
        return await self.inner.delete(key)

    def scan(self, prefix: str) -> AsyncIterator[str]:
        return self.inner.scan(prefix)

    async def has(self, key: str) -> bool:
        return await self.inner.has(key)

    async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | None]:
        return await self.inner.get_many(keys)

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        await self.inner.set_many(items, ttl)

    async def delete_many(self, keys: Sequence[str]) -> int:
        return await self.inner.delete_many(keys)

    async def clear(self, prefix: str) -> int:
        return await self.inner.clear(prefix)

    async def ttl(self, key: str) -> float | None:
        return await self.inner.ttl(key)

    def scan_ttl(self, prefix: str) -> AsyncIterator[tuple[str, float | None]]:
        return self.inner.scan_ttl(prefix)

    async def get_entries(self, keys: Sequence[str]) -> list[tuple[bytes | None, float | None]]:
        return await self.inner.get_entries(keys)

    async def set_entries(self, entries: Sequence[Entry], *, overwrite: bool = True) -> list[bool]:
        return await self.inner.set_entries(entries, overwrite=overwrite)

    async def add(self, key: str, data: bytes, ttl: float | None) -> bool:
        return await self.inner.add(key, data, ttl)

    async def incr(self, key: str, amount: int, ttl: float | None) -> int:
        return await self.inner.incr(key, amount, ttl)

    async def update(
        self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None
    ) -> None:
        await self.inner.update(key, fn, ttl)

    async def close(self) -> None:
        if self._owner is not None:
            await self._owner.close()
        else:
            await self.inner.close()

    def describe(self) -> dict[str, object]:
        return self.inner.describe()


class PrefixedBackend(WrapperBackend):
    """``inner`` seen through a view's prefix: keys gain ``prefix`` going in, lose it coming out.

    Lets a wrapper take a view (``storage.with_prefix("bot:")``) as well as a root storage.
    """

    def __init__(self, inner: Backend, prefix: str, *, owner: BaseStorage | None = None) -> None:
        super().__init__(inner, owner=owner)
        self.prefix = prefix
        limit = inner.capabilities.max_key_bytes
        if limit is not None:
            self.capabilities = derive(
                inner.capabilities, max_key_bytes=limit - len(prefix.encode())
            )

    async def get(self, key: str) -> bytes | None:
        return await self.inner.get(self.prefix + key)

    async def set(self, key: str, data: bytes, ttl: float | None) -> None:
        await self.inner.set(self.prefix + key, data, ttl)

    async def delete(self, key: str) -> bool:
        return await self.inner.delete(self.prefix + key)

    async def scan(self, prefix: str) -> AsyncIterator[str]:
        cut = len(self.prefix)
        async for key in self.inner.scan(self.prefix + prefix):
            yield key[cut:]

    async def has(self, key: str) -> bool:
        return await self.inner.has(self.prefix + key)

    async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | None]:
        return await self.inner.get_many([self.prefix + k for k in keys])

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        await self.inner.set_many([(self.prefix + k, d) for k, d in items], ttl)

    async def delete_many(self, keys: Sequence[str]) -> int:
        return await self.inner.delete_many([self.prefix + k for k in keys])

    async def clear(self, prefix: str) -> int:
        return await self.inner.clear(self.prefix + prefix)

    async def ttl(self, key: str) -> float | None:
        return await self.inner.ttl(self.prefix + key)

    async def scan_ttl(self, prefix: str) -> AsyncIterator[tuple[str, float | None]]:
        cut = len(self.prefix)
        async for key, ttl in self.inner.scan_ttl(self.prefix + prefix):
            yield key[cut:], ttl

    async def get_entries(self, keys: Sequence[str]) -> list[tuple[bytes | None, float | None]]:
        return await self.inner.get_entries([self.prefix + k for k in keys])

    async def set_entries(self, entries: Sequence[Entry], *, overwrite: bool = True) -> list[bool]:
        scoped = [(self.prefix + k, d, t) for k, d, t in entries]
        return await self.inner.set_entries(scoped, overwrite=overwrite)

    async def add(self, key: str, data: bytes, ttl: float | None) -> bool:
        return await self.inner.add(self.prefix + key, data, ttl)

    async def incr(self, key: str, amount: int, ttl: float | None) -> int:
        return await self.inner.incr(self.prefix + key, amount, ttl)

    async def update(
        self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None
    ) -> None:
        await self.inner.update(self.prefix + key, fn, ttl)

    async def close(self) -> None:
        if self._owner is not None:  # a view never owns its backend; its storage may
            await self._owner.close()

    def describe(self) -> dict[str, object]:
        return {**self.inner.describe(), "prefix": self.prefix}
