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

A key whose TTL runs out between the read and the write is not written: copying it would bring
an expired value back to life.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from .._errors import KeyNotFoundError, UnsupportedOperationError

if TYPE_CHECKING:
    from .._storage import BaseStorage

__all__ = ["DEFAULT_BATCH", "Entry", "Reader", "WriteStats", "Writer", "batched_keys"]

T = TypeVar("T")

DEFAULT_BATCH = 500
# Round trips in flight at once for per-key TTL reads and per-group writes: enough to hide
# network latency, few enough not to open hundreds of pooled connections.
_CONCURRENCY = 32


@dataclass(slots=True)
class Entry:
    """One stored key: its full name, its bytes, and its deadline on the monotonic clock."""

    key: str
    data: bytes
    deadline: float | None  # time.monotonic() at which it expires; None: never

    def ttl(self, now: float) -> float | None:
        """Seconds left at ``now`` (may be <= 0 once expired), or None for no expiry."""
        return None if self.deadline is None else self.deadline - now


async def batched_keys(
    storage: BaseStorage, prefix: str, size: int = DEFAULT_BATCH
) -> AsyncIterator[list[str]]:
    """Yield the full keys starting with ``prefix`` in lists of at most ``size``."""
    batch: list[str] = []
    async for key in storage._root._scan(storage.prefix + prefix):
        batch.append(key)
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
        self.ttl_supported = True

    async def read(self, keys: Sequence[str]) -> list[Entry]:
        """Return the entries of ``keys`` that exist, in order; vanished keys are left out."""
        values = await self._root._get_many(keys)
        found = [(k, v) for k, v in zip(keys, values, strict=True) if v is not None]
        if not found:
            return []
        now = time.monotonic()
        ttls = await self.ttls([k for k, _ in found])
        return [
            Entry(k, bytes(v), None if ttl is None else now + ttl)
            for (k, v), ttl in zip(found, ttls, strict=True)
            if ttl is not _GONE
        ]

    async def ttls(self, keys: Sequence[str]) -> list[float | None]:
        """TTL of each key; ``_GONE`` (a negative number) for keys that expired meanwhile."""
        if not self.ttl_supported:
            return [None] * len(keys)
        ttl = self._root._ttl

        def call(key: str) -> Callable[[], Awaitable[float | None]]:
            async def one() -> float | None:
                try:
                    return await ttl(key)
                except KeyNotFoundError:
                    return _GONE
                except UnsupportedOperationError:
                    self.ttl_supported = False
                    return None

            return one

        return await _bounded([call(k) for k in keys])


_GONE = -1.0  # sentinel TTL for "the key expired between the value read and the TTL read"


@dataclass(slots=True)
class WriteStats:
    """What a :class:`Writer` did, for the summary line."""

    written: int = 0  # with dry_run: would be written
    skipped: int = 0  # already in the destination, left alone (no overwrite)
    replaced: int = 0  # already in the destination (counted only with dry_run)
    expired: int = 0
    ttl_raised: int = 0  # TTLs lifted to the destination's minimum (Cloudflare KV: 60 s)
    bytes: int = 0
    groups: int = field(default=0, repr=False)


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
        self._min_ttl = float(storage.min_ttl)
        self.overwrite = overwrite
        self.dry_run = dry_run
        self.stats = WriteStats()

    async def write(self, entries: Sequence[Entry]) -> None:
        """Write one batch. A key listed twice keeps its last entry."""
        if not entries:
            return
        unique = {e.key: e for e in entries}
        batch = list(unique.values())
        if not self.overwrite or self.dry_run:
            present = await self._root._get_many([e.key for e in batch])
            exists = [p is not None for p in present]
            if self.overwrite:
                self.stats.replaced += sum(exists)
            else:
                self.stats.skipped += sum(exists)
                batch = [e for e, ex in zip(batch, exists, strict=True) if not ex]
        groups: dict[float | None, list[tuple[str, bytes]]] = {}
        now = time.monotonic()
        stats = self.stats
        for entry in batch:
            ttl = entry.ttl(now)
            if ttl is not None:
                if ttl <= 0:
                    stats.expired += 1
                    continue
                # Whole seconds keep a batch in few groups; under a second stays exact.
                ttl = float(round(ttl)) if ttl >= 1 else ttl
                if ttl < self._min_ttl:
                    ttl = self._min_ttl
                    stats.ttl_raised += 1
            groups.setdefault(ttl, []).append((entry.key, entry.data))
            stats.bytes += len(entry.data)
        count = sum(len(items) for items in groups.values())
        if self.dry_run:
            stats.written += count
            return
        set_many = self._root._set_many

        def call(items: list[tuple[str, bytes]], ttl: float | None) -> Callable[[], Awaitable[None]]:
            return lambda: set_many(items, ttl)

        await _bounded([call(items, ttl) for ttl, items in groups.items()])
        stats.written += count
        stats.groups += len(groups)
