"""Batched, byte-level access to a storage: what ``export``, ``import`` and ``copy`` move.

The CLI works below the facade, on the backend hooks (full keys, encoded bytes), so a value is
copied or exported exactly as stored, never decoded and re-encoded. The hook contract has no
per-key-TTL bulk operations, so this module builds them:

* reading: one ``_get_many`` per batch for the values, then the TTLs of the keys found, asked
  concurrently (a bounded number in flight) rather than one awaited round trip after another;
* writing: each batch is grouped by remaining TTL rounded to whole seconds, and every group is
  one ``_set_many`` call, the groups again running concurrently. Rounding keeps a batch of
  session keys (whose TTLs all differ by milliseconds) in few groups, at a cost of at most half
  a second of expiry.

Backends whose client can do per-key TTLs in bulk natively (Redis: one pipeline per batch) use
that instead; see :mod:`._fast`.

A key whose TTL runs out between the read and the write is not written: copying it would bring
an expired value back to life.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from .._errors import KeyNotFoundError, UnsupportedOperationError
from .._storage import BaseStorage
from ._fast import GONE, bulk_io

__all__ = ["DEFAULT_BATCH", "Entry", "Reader", "WriteStats", "Writer", "batched_keys"]

T = TypeVar("T")

DEFAULT_BATCH = 500
# Round trips in flight at once for per-key TTL reads and per-group writes: enough to hide
# network latency, few enough not to open hundreds of pooled connections.
_CONCURRENCY = 32
# Calls timed to tell an inline backend from a networked one, and the dividing line: a loopback
# round trip costs 50-100 us through a Python driver; an inline SQLite read a few us.
_PROBE = 8
_INLINE = 30e-6


@dataclass(slots=True)
class Entry:
    """One stored key: its name (relative to the storage's prefix), bytes and deadline."""

    key: str
    data: bytes
    deadline: float | None  # time.monotonic() at which it expires; None: never

    def ttl(self, now: float) -> float | None:
        """Seconds left at ``now`` (may be <= 0 once expired), or None for no expiry."""
        return None if self.deadline is None else self.deadline - now


async def batched_keys(
    storage: BaseStorage, prefix: str, size: int = DEFAULT_BATCH, reader: Reader | None = None
) -> AsyncIterator[list[str]]:
    """Yield the keys starting with ``prefix`` in lists of at most ``size``.

    Keys are relative to the storage's own prefix (a ``prefix=`` given at construction), like
    :meth:`BaseStorage.keys` returns them; :class:`Reader` and :class:`Writer` add it back.

    With a ``reader``, on a backend whose listing reports expiries (its ``_scan_ttl`` hook is
    its own), the deadlines seen while listing are handed to the reader, which then needs no
    request per key for TTLs (Cloudflare KV: one listing per 1,000 keys instead of 1,000).
    """
    cut = len(storage.prefix)
    batch: list[str] = []
    root = storage._root
    if reader is not None and type(root)._scan_ttl is not BaseStorage._scan_ttl:
        known = reader.known
        async for key, ttl in root._scan_ttl(storage.prefix + prefix):
            known[key] = None if ttl is None else time.monotonic() + ttl
            batch.append(key[cut:])
            if len(batch) >= size:
                yield batch
                batch = []
    else:
        async for key in root._scan(storage.prefix + prefix):
            batch.append(key[cut:])
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch


async def _bounded(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run ``calls`` concurrently, at most ``_CONCURRENCY`` at a time, results in order."""
    results: list[T] = []
    for start in range(0, len(calls), _CONCURRENCY):
        chunk = calls[start : start + _CONCURRENCY]
        if len(chunk) == 1:
            results.append(await chunk[0]())
        else:
            results.extend(await asyncio.gather(*(call() for call in chunk)))
    return results


class Reader:
    """Reads batches of keys with their values and TTLs from one storage.

    Attributes:
        ttl_supported: False once the backend said it cannot report TTLs (entries then read
            as never expiring); the caller warns the user.
    """

    def __init__(self, storage: BaseStorage) -> None:
        self._root = storage._root
        self._prefix = storage.prefix
        self._bulk = bulk_io(storage._root)
        self._concurrent: bool | None = None
        self.ttl_supported = True
        # Deadlines already known from a listing (see batched_keys), by full key.
        self.known: dict[str, float | None] = {}

    async def read(self, keys: Sequence[str]) -> list[Entry]:
        """Return the entries of ``keys`` that exist, in order; vanished keys are left out."""
        p = self._prefix
        full = [p + k for k in keys] if p else keys
        if self._bulk is not None:
            started = time.monotonic()
            replies = await self._bulk.read(full)
            # The server measured the TTLs during the call: date them from its middle.
            now = (started + time.monotonic()) / 2
            return [
                Entry(k, bytes(v), None if ttl is None else now + ttl)
                for k, (v, ttl) in zip(keys, replies, strict=True)
                if v is not None and ttl != GONE
            ]
        listed = {k: self.known.pop(k) for k in full if k in self.known} if self.known else {}
        values = await self._root._get_many(full)
        found = [(k, v) for k, v in zip(keys, values, strict=True) if v is not None]
        if not found:
            return []
        wanted = [p + k for k, _ in found]
        if listed and all(k in listed for k in wanted):
            deadlines = [listed[k] for k in wanted]
        else:
            deadlines = await self.deadlines(wanted)
        return [
            Entry(k, bytes(v), deadline)
            for (k, v), deadline in zip(found, deadlines, strict=True)
            if deadline != GONE
        ]

    async def deadlines(self, keys: Sequence[str]) -> list[float | None]:
        """When each key expires (``time.monotonic()``), None for never, ``GONE`` if it is gone.

        Each TTL is dated from the middle of its own call, so a slow backend (or many keys in
        flight) does not shorten the TTLs by the time spent waiting for them.

        A backend that answers in microseconds (SQLite runs inline) is asked key after key:
        a task per key would cost more than the call. One with network round trips is asked
        ``_CONCURRENCY`` keys at a time. The first keys, asked one by one, tell which it is.
        """
        results: list[float | None] = []
        if self._concurrent is None:
            fastest = float("inf")
            for key in keys[:_PROBE]:
                started = time.perf_counter()
                results.append(await self._one_ttl(key))
                fastest = min(fastest, time.perf_counter() - started)
            self._concurrent = fastest > _INLINE
        rest = keys[len(results) :]
        if not self._concurrent:
            results.extend([await self._one_ttl(key) for key in rest])
        else:
            results += await _bounded([partial(self._one_ttl, key) for key in rest])
        return results

    async def _one_ttl(self, key: str) -> float | None:
        if not self.ttl_supported:
            return None
        try:
            started = time.monotonic()
            ttl = await self._root._ttl(key)
            return None if ttl is None else (started + time.monotonic()) / 2 + ttl
        except KeyNotFoundError:
            return GONE
        except UnsupportedOperationError:
            self.ttl_supported = False
            return None


@dataclass(slots=True)
class WriteStats:
    """What a :class:`Writer` did, for the summary line."""

    written: int = 0  # with dry_run: would be written
    skipped: int = 0  # already in the destination, left alone (no overwrite)
    replaced: int = 0  # already in the destination (counted only with dry_run)
    expired: int = 0
    ttl_raised: int = 0  # TTLs lifted to the destination's minimum (Cloudflare KV: 60 s)
    bytes: int = 0


class Writer:
    """Writes entries to one storage in TTL groups, one ``_set_many`` per group.

    Args:
        storage: The destination.
        overwrite: Replace keys that already exist; otherwise existing keys are skipped (checked
            with one ``_get_many`` per batch: a key created by someone else between that check
            and the write is still replaced).
        dry_run: Count what would be written, write nothing.
    """

    def __init__(self, storage: BaseStorage, *, overwrite: bool = True, dry_run: bool = False):
        self._root = storage._root
        self._prefix = storage.prefix
        self._min_ttl = float(storage.min_ttl)
        self._bulk = bulk_io(storage._root)
        self.overwrite = overwrite
        self.dry_run = dry_run
        self.stats = WriteStats()

    async def write(self, entries: Sequence[Entry]) -> None:
        """Write one batch. A key listed twice keeps its last entry."""
        if not entries:
            return
        p = self._prefix
        stats = self.stats
        unique = {p + e.key: e for e in entries}
        nx = not self.overwrite
        if self.dry_run or (nx and self._bulk is None):
            present = await self._root._get_many(list(unique))
            existing = [k for k, v in zip(unique, present, strict=True) if v is not None]
            if nx:
                stats.skipped += len(existing)
                for k in existing:
                    del unique[k]
            else:
                stats.replaced += len(existing)
        now = time.monotonic()
        items: list[tuple[str, bytes, float | None]] = []
        for key, entry in unique.items():
            ttl = entry.ttl(now)
            if ttl is not None:
                if ttl <= 0:
                    stats.expired += 1
                    continue
                if ttl < self._min_ttl:
                    ttl = self._min_ttl
                    stats.ttl_raised += 1
            items.append((key, entry.data, ttl))
        if self.dry_run:
            stats.written += len(items)
            stats.bytes += sum(len(data) for _, data, _ in items)
        elif self._bulk is not None:
            done = await self._bulk.write(items, nx)
            for (_, data, _), ok in zip(items, done, strict=True):
                if ok:
                    stats.written += 1
                    stats.bytes += len(data)
                else:
                    stats.skipped += 1
        else:
            await self._write_groups(items)

    async def _write_groups(self, items: list[tuple[str, bytes, float | None]]) -> None:
        groups: dict[float | None, list[tuple[str, bytes]]] = {}
        for key, data, ttl in items:
            if ttl is not None and ttl >= 1:
                # Whole seconds keep a batch in few groups; under a second stays exact. A
                # rounded TTL never drops below the backend's minimum: that is a whole number.
                ttl = float(round(ttl))
            groups.setdefault(ttl, []).append((key, data))
        set_many = self._root._set_many

        def call(
            group: list[tuple[str, bytes]], ttl: float | None
        ) -> Callable[[], Awaitable[None]]:
            return lambda: set_many(group, ttl)

        await _bounded([call(group, ttl) for ttl, group in groups.items()])
        self.stats.written += len(items)
        self.stats.bytes += sum(len(data) for _, data, _ in items)
