"""The Backend contract: what an adapter implements, bytes in and bytes out.

A :class:`Backend` never sees typed keys, codecs, prefixes or default TTLs: the facade
(:class:`~gramio_storage.BaseStorage`) resolves those and validates every argument before a
backend method runs. A backend receives full ``str`` keys that are non-empty, UTF-8 encodable and
within :attr:`Capabilities.max_key_bytes`, encoded ``bytes``, and TTLs as positive finite
``float`` seconds within its limits (``None``: no expiry).

Four methods are required (:meth:`~Backend.get`, :meth:`~Backend.set`, :meth:`~Backend.delete`,
:meth:`~Backend.scan`); a subclass missing one fails at construction (``TypeError``, as every
``abc.ABC`` does). Everything else has a correct default built on them, and a backend overrides a
method when it can do better: one round trip for ``get_many``, native atomicity for ``add``,
``incr`` and ``update``. What a backend can do is declared once, in :class:`Capabilities`; the
facade, the conformance kit, the bridges and the CLI read it instead of probing.

Method names are public (no leading underscore), so an adapter's own ``_attributes`` can never
collide with the facade's.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import weakref
from collections.abc import AsyncIterator, Callable, MutableMapping, Sequence
from typing import Any

from ._backend_util import chunks
from ._errors import DecodeError, KeyNotFoundError, UnsupportedOperationError

__all__ = ["GONE", "Backend", "Capabilities", "Entry"]

Entry = tuple[str, bytes, float | None]
"""One stored item with its expiry: ``(key, data, seconds left or None)``."""

GONE = -1.0
"""The TTL :meth:`Backend.get_entries` reports for a key that vanished between value and TTL."""

_CLEAR_BATCH = 500

CONCURRENCY = 64
"""How many single-key calls the bulk defaults have in flight at once."""


@dataclasses.dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do, declared once instead of probed.

    Attributes:
        name: Short name used in error messages and telemetry (``"redis"``).
        atomic: ``add``/``incr``/``update`` are atomic across processes (not only in this one).
        atomic_ops: The atomic operations exist at all. False (Cloudflare KV): ``add``,
            ``incr`` and ``update`` raise :class:`~gramio_storage.UnsupportedOperationError`.
        ttl: The backend stores expiries and ``ttl()`` reports them.
        min_ttl: The smallest TTL accepted, in seconds (Cloudflare KV: 60).
        max_ttl: The largest TTL accepted, in seconds; ``None``: any finite TTL.
        max_key_bytes: The longest full key, in UTF-8 bytes; ``None``: no limit.
        max_value_bytes: The largest encoded value, in bytes; ``None``: no limit.
        lists_ttls: ``scan_ttl`` reports expiries from the listing itself (no request per key).
        persistent: Data survives a restart of this process.
        shared: Other processes see the same data.
        eventually_consistent: Reads may lag writes (Cloudflare KV: up to a minute elsewhere).
        nonblocking: Every operation completes without I/O (memory). The facade then calls
            :meth:`Backend.get_nowait` and :meth:`Backend.set_nowait` directly on its fast path.
    """

    name: str = "custom"
    atomic: bool = False
    atomic_ops: bool = True
    ttl: bool = True
    min_ttl: float = 0.0
    max_ttl: float | None = None
    max_key_bytes: int | None = None
    max_value_bytes: int | None = None
    lists_ttls: bool = False
    persistent: bool = False
    shared: bool = False
    eventually_consistent: bool = False
    nonblocking: bool = False


class Backend(abc.ABC):
    """Base class of every backend: four required methods, correct defaults for the rest.

    Set :attr:`capabilities` (a class attribute, or an instance attribute when it depends on
    options). The default atomic operations hold a per-key ``asyncio.Lock``, so they are atomic
    within one process only: a backend shared by processes overrides them natively and declares
    ``atomic=True``.
    """

    # Not a ClassVar: a backend whose limits depend on its options sets it per instance.
    capabilities: Capabilities = Capabilities()

    fast_map: MutableMapping[str, Any] | None = None
    """For ``nonblocking`` backends: a mapping the facade may read and write directly.

    Set it while a plain ``get``/``set`` is exactly ``fast_map.get(key)`` / ``fast_map[key] =
    data`` (memory without expiries or a size bound), and to ``None`` as soon as it is not. The
    facade checks it on every call (``bench/bench_memory.py`` measures the difference).
    """

    # ------------------------------------------------------------------ required

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None:
        """Return the stored bytes, or ``None`` if ``key`` is missing or expired."""

    @abc.abstractmethod
    async def set(self, key: str, data: bytes, ttl: float | None) -> None:
        """Store ``data`` under ``key`` expiring after ``ttl`` seconds (``None``: never).

        Replaces any value and any expiry the key had.
        """

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """Delete ``key``; return whether it existed."""

    @abc.abstractmethod
    def scan(self, prefix: str) -> AsyncIterator[str]:
        """Yield every live key starting with ``prefix`` (literally: no glob, no LIKE).

        Must tolerate keys being deleted while the iteration is under way. Write it as an
        ``async def`` generator.
        """

    # ------------------------------------------------------------------ optional: plain

    async def has(self, key: str) -> bool:
        """Whether ``key`` holds a value."""
        return await self.get(key) is not None

    async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | None]:
        """The stored bytes for each key, in order (``None`` for missing ones)."""
        return [await self.get(k) for k in keys]

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        """Store every ``(key, data)`` pair with the same TTL."""
        for k, data in items:
            await self.set(k, data, ttl)

    async def delete_many(self, keys: Sequence[str]) -> int:
        """Delete several keys; return how many existed (a key listed twice counts once)."""
        return sum([await self.delete(k) for k in dict.fromkeys(keys)])

    async def clear(self, prefix: str) -> int:
        """Delete every key starting with ``prefix``; return how many were deleted."""
        deleted = 0
        batch: list[str] = []
        async for k in self.scan(prefix):
            batch.append(k)
            if len(batch) >= _CLEAR_BATCH:
                deleted += await self.delete_many(batch)
                batch = []
        if batch:
            deleted += await self.delete_many(batch)
        return deleted

    async def ttl(self, key: str) -> float | None:
        """Seconds ``key`` has left, ``None`` for no expiry.

        Raises:
            KeyNotFoundError: The key is missing (use :meth:`not_found`).
            UnsupportedOperationError: The backend stores no expiries (the default).
        """
        raise UnsupportedOperationError(
            f"The {self.capabilities.name} backend cannot report TTLs",
            backend=self.capabilities.name,
        )

    async def scan_ttl(self, prefix: str) -> AsyncIterator[tuple[str, float | None]]:
        """Yield ``(key, seconds left or None)`` for live keys starting with ``prefix``.

        The default asks :meth:`ttl` key by key; a backend whose listing reports expiries
        overrides it and declares ``lists_ttls=True``.
        """
        async for key in self.scan(prefix):
            try:
                yield key, await self.ttl(key)
            except KeyNotFoundError:
                continue  # deleted or expired since the scan saw it
            except UnsupportedOperationError:
                yield key, None

    async def get_entries(self, keys: Sequence[str]) -> list[tuple[bytes | None, float | None]]:
        """``(data, ttl)`` for each key, in order, for tools that copy data with its expiry.

        ``data`` is ``None`` for a missing key; ``ttl`` is ``None`` for no expiry and
        :data:`GONE` for a key that vanished between the two reads. The default reads values
        with :meth:`get_many` and TTLs with :meth:`ttl`, :data:`CONCURRENCY` keys at a time;
        Redis overrides it with one script per batch.
        """
        values = await self.get_many(keys)
        ttls: list[float | None] = [None] * len(keys)
        if self.capabilities.ttl:
            wanted = [i for i, data in enumerate(values) if data is not None]
            for part in chunks(wanted, CONCURRENCY):
                found = await asyncio.gather(*(self._ttl_or_gone(keys[i]) for i in part))
                for i, ttl in zip(part, found, strict=True):
                    ttls[i] = ttl
        return list(zip(values, ttls, strict=True))

    async def _ttl_or_gone(self, key: str) -> float | None:
        try:
            return await self.ttl(key)
        except KeyNotFoundError:
            return GONE

    async def set_entries(self, entries: Sequence[Entry], *, overwrite: bool = True) -> list[bool]:
        """Store each ``(key, data, ttl)`` with its own TTL; say which were written.

        With ``overwrite=False`` only absent keys are written (atomically per key where the
        backend's ``add`` is). The default writes entries sharing a TTL with one
        :meth:`set_many` and the rest with concurrent single writes, :data:`CONCURRENCY` at a
        time; Redis overrides it with one script per batch.
        """
        if not overwrite:
            written: list[bool] = []
            for part in chunks(entries, CONCURRENCY):
                written += await asyncio.gather(*(self.add(k, d, t) for k, d, t in part))
            return written
        groups: dict[float | None, list[tuple[str, bytes]]] = {}
        for k, data, ttl in entries:
            groups.setdefault(ttl, []).append((k, data))
        singles = [(items[0], ttl) for ttl, items in groups.items() if len(items) == 1]
        for ttl, items in groups.items():
            if len(items) > 1:
                await self.set_many(items, ttl)
        for batch in chunks(singles, CONCURRENCY):
            await asyncio.gather(*(self.set(k, d, ttl) for (k, d), ttl in batch))
        return [True] * len(entries)

    # ------------------------------------------------------------------ optional: atomic

    async def add(self, key: str, data: bytes, ttl: float | None) -> bool:
        """Store ``data`` only if ``key`` is absent; return whether it was stored."""
        async with self._key_lock(key):
            if await self.has(key):
                return False
            await self.set(key, data, ttl)
            return True

    async def incr(self, key: str, amount: int, ttl: float | None) -> int:
        """Add ``amount`` to the integer stored as ASCII digits under ``key``; return it.

        A missing key counts as 0 and is created with ``ttl``; an existing key keeps its
        expiry. Raise :class:`~gramio_storage.DecodeError` (use :meth:`not_an_integer`) when
        the stored bytes are not an integer.
        """
        async with self._key_lock(key):
            data = await self.get(key)
            if data is None:
                value = amount
            else:
                value = parse_int(self, key, data) + amount
                with contextlib.suppress(KeyNotFoundError, UnsupportedOperationError):
                    ttl = await self.ttl(key)
            await self.set(key, str(value).encode(), ttl)
            return value

    async def update(
        self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None
    ) -> None:
        """Replace the value with ``fn(current bytes or None)`` atomically, expiring after ``ttl``.

        ``fn`` may raise (nothing is written then) and may be called more than once by a
        backend with optimistic concurrency.
        """
        async with self._key_lock(key):
            await self.set(key, fn(await self.get(key)), ttl)

    # ------------------------------------------------------------------ optional: other

    def get_nowait(self, key: str) -> bytes | None:
        """Synchronous :meth:`get`, for ``nonblocking`` backends only (the facade's fast path)."""
        raise UnsupportedOperationError(f"{type(self).__name__} is not a nonblocking backend")

    def set_nowait(self, key: str, data: bytes, ttl: float | None) -> None:
        """Synchronous :meth:`set`, for ``nonblocking`` backends only (the facade's fast path)."""
        raise UnsupportedOperationError(f"{type(self).__name__} is not a nonblocking backend")

    async def close(self) -> None:
        """Release what the backend created (connections, files, timers). Called once.

        The facade calls it shielded from cancellation, so a cancelled ``close()`` still
        finishes; resources the caller passed in (a client, a pool) stay open.
        """
        return None

    def describe(self) -> dict[str, object]:
        """What ``repr`` shows about this backend (path, host...). Never include credentials."""
        return {}

    # ------------------------------------------------------------------ helpers

    def not_found(self, key: str) -> KeyNotFoundError:
        """The error :meth:`ttl` raises for a missing key."""
        return KeyNotFoundError(
            f"Key {key!r} does not exist", key=key, backend=self.capabilities.name
        )

    def _key_lock(self, key: str) -> asyncio.Lock:
        # Per-key locks for the in-process defaults; entries vanish when nobody holds them.
        # Stored under a name-mangled attribute so a subclass's own `_locks` cannot clash.
        locks: weakref.WeakValueDictionary[str, asyncio.Lock] | None
        locks = self.__dict__.get("_Backend__locks")
        if locks is None:
            locks = self.__dict__["_Backend__locks"] = weakref.WeakValueDictionary()
        lock = locks.get(key)
        if lock is None:
            lock = locks[key] = asyncio.Lock()
        return lock


def parse_int(backend: Backend, key: str, data: Any) -> int:
    """Parse a stored counter (ASCII digits), raising the ``DecodeError`` ``incr`` documents."""
    try:
        if data.__class__ is int:  # reference-mode memory stores the int itself
            return data
        text = bytes(data).strip()
        if not text or not (text.isdigit() or (text[:1] == b"-" and text[1:].isdigit())):
            raise ValueError(f"not an integer: {text[:40]!r}")
        return int(text)
    except (TypeError, ValueError) as e:
        raise DecodeError(
            f"Cannot increment key {key!r}: the stored value is not an integer",
            key=key,
            backend=backend.capabilities.name,
        ) from e
