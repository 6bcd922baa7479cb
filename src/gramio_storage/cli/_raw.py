"""Batched, byte-level access to a storage: what the listing and transfer commands move.

The CLI works on the public backend (:attr:`BaseStorage.backend`: full keys, encoded bytes), so a
value is copied or exported exactly as stored, never decoded and re-encoded. Every backend has
the two per-key-TTL bulk operations of the contract, with generic defaults in
:class:`~gramio_storage.Backend` and native versions where a backend can do better (Redis: one
script per batch):

* reading: :meth:`Backend.get_entries` per batch, values and TTLs. A backend whose listing
  reports expiries (``capabilities.lists_ttls``: SQLite, PostgreSQL, Cloudflare KV) is listed
  with :meth:`Backend.scan_ttl` instead, and a batch is then one :meth:`Backend.get_many`: no
  request per key for TTLs (Cloudflare KV: one listing per 1,000 keys instead of 1,000);
* writing: :meth:`Backend.set_entries` per batch, ``overwrite=False`` for ``--no-overwrite``,
  each key with its exact TTL left. (No rounding here: a copy through several hops would add
  up the error. Grouping keys by TTL is the backend's business, in its ``set_entries``.)

A key whose TTL runs out between the read and the write is not written: copying it would bring
an expired value back to life. Since the CLI calls the backend directly, the :class:`Writer`
checks what the facade would (key, TTL and value size against the destination's capabilities)
before a batch reaches it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from .._backend import GONE
from .._errors import ValueTooLargeError
from .._storage import BaseStorage
from .._validate import check_full_key, check_prefix, ttl_seconds

__all__ = ["DEFAULT_BATCH", "Entry", "Reader", "WriteStats", "Writer", "batched_keys"]

DEFAULT_BATCH = 500


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

    Keys are relative to the storage's own prefix (a ``?prefix=`` on the URL), as
    :meth:`BaseStorage.keys` returns them; :class:`Reader` and :class:`Writer` add it back.

    With a ``reader`` on a backend whose listing reports expiries, the deadlines seen while
    listing are handed to the reader, which then reads only the values.
    """
    batch: list[str] = []
    if reader is not None and reader.lists_ttls:
        full = check_prefix(prefix, storage.prefix, storage.capabilities)
        cut = len(storage.prefix)
        known = reader.known
        async for key, ttl in storage.backend.scan_ttl(full):
            known[key] = None if ttl is None else time.monotonic() + ttl
            batch.append(key[cut:])
            if len(batch) >= size:
                yield batch
                batch = []
    else:
        async for key in storage.keys(prefix):
            batch.append(key)
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch


class Reader:
    """Reads batches of keys with their values and TTLs from one storage.

    Attributes:
        ttl_supported: False when the backend stores no expiries (entries then read as never
            expiring); the caller warns the user.
        lists_ttls: The backend's listing reports expiries (see :func:`batched_keys`).
        known: Deadlines already seen by a listing, by full key.
    """

    def __init__(self, storage: BaseStorage) -> None:
        caps = storage.capabilities
        self._backend = storage.backend
        self._prefix = storage.prefix
        self.ttl_supported = caps.ttl
        self.lists_ttls = caps.ttl and caps.lists_ttls
        self.known: dict[str, float | None] = {}

    async def read(self, keys: Sequence[str]) -> list[Entry]:
        """Return the entries of ``keys`` that exist, in order; vanished keys are left out."""
        p = self._prefix
        full = [p + k for k in keys] if p else list(keys)
        if not full:
            return []
        known = self.known
        if not self.ttl_supported or (known and all(k in known for k in full)):
            values = await self._backend.get_many(full)
            pop = known.pop
            return [
                Entry(k, bytes(v), pop(f, None))
                for k, f, v in zip(keys, full, values, strict=True)
                if v is not None
            ]
        for f in full:
            known.pop(f, None)
        # Dated from the start of the call: a TTL read later in it then gives a deadline a
        # little early, never late, so a copy never outlives its source.
        started = time.monotonic()
        replies = await self._backend.get_entries(full)
        return [
            Entry(k, bytes(v), None if ttl is None else started + ttl)
            for k, (v, ttl) in zip(keys, replies, strict=True)
            if v is not None and ttl != GONE
        ]


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
    """Writes entries to one storage, one :meth:`Backend.set_entries` per batch.

    Args:
        storage: The destination.
        overwrite: Replace keys that already exist; otherwise existing keys are skipped
            (``set_entries(overwrite=False)``: atomic per key where the backend's ``add`` is;
            a backend without atomic operations is checked with ``get_many`` just before).
        dry_run: Count what would be written (one ``get_many`` per batch tells how much of it
            exists already), write nothing.
    """

    def __init__(
        self, storage: BaseStorage, *, overwrite: bool = True, dry_run: bool = False
    ) -> None:
        self._backend = storage.backend
        self._prefix = storage.prefix
        self._caps = storage.capabilities
        self._min_ttl = float(self._caps.min_ttl)
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
        # Without atomic operations (Cloudflare KV has no add) --no-overwrite is a check just
        # before the write: a key someone else creates in between is replaced.
        check_first = not self.overwrite and not self._caps.atomic_ops
        if self.dry_run or check_first:
            present = await self._backend.get_many(list(unique))
            existing = [k for k, v in zip(unique, present, strict=True) if v is not None]
            if self.overwrite:
                stats.replaced += len(existing)
            else:
                stats.skipped += len(existing)
                for k in existing:
                    del unique[k]
        caps = self._caps
        max_value = caps.max_value_bytes
        now = time.monotonic()
        items: list[tuple[str, bytes, float | None]] = []
        for key, entry in unique.items():
            check_full_key(key, caps)
            if max_value is not None and len(entry.data) > max_value:
                raise ValueTooLargeError(
                    f"The value of key {key!r} is {len(entry.data)} bytes; the {caps.name} "
                    f"backend stores at most {max_value} bytes",
                    key=key,
                    backend=caps.name,
                )
            ttl = entry.ttl(now)
            if ttl is not None:
                if ttl <= 0:
                    stats.expired += 1
                    continue
                if ttl < self._min_ttl:
                    ttl = self._min_ttl
                    stats.ttl_raised += 1
                if caps.max_ttl is not None:
                    ttl_seconds(ttl, caps)  # InvalidTTLError naming the destination's maximum
            items.append((key, entry.data, ttl))
        if self.dry_run:
            stats.written += len(items)
            stats.bytes += sum(len(data) for _, data, _ in items)
            return
        done = await self._backend.set_entries(items, overwrite=self.overwrite or check_first)
        for (_, data, _), ok in zip(items, done, strict=True):
            if ok:
                stats.written += 1
                stats.bytes += len(data)
            else:
                stats.skipped += 1
