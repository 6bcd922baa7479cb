"""A near cache: a process-local LRU of values in front of a (remote) storage.

It caches the *encoded bytes* below the facade, not decoded objects. Why bytes:

* a returned value is never the cached object: the facade decodes a fresh one per read, so a
  caller that mutates a session dict cannot corrupt what other callers get (a decoded-object
  cache would have to deep-copy per hit, which costs more than msgspec decoding small JSON);
* typed keys decode into their own types from the same bytes (one entry serves ``"k"`` and
  ``Key("k", Model)``);
* it is a :class:`~gramio_storage.Backend` like every wrapper, so it stacks (above
  :class:`EncryptedBackend`: plaintext is cached, decrypted once per miss).

Coherence: every write through this cache evicts the key after the write, and a read that
started before a write (or an invalidation) never fills the cache with what it read, so the
cache never serves a value older than one this process wrote. Other processes' writes are seen
when the entry's ``ttl`` runs out, or at once on Redis, whose server pushes invalidations
(``CLIENT TRACKING ON BCAST``, see ``_tracking.py``). An entry never outlives the key's own
expiry: a miss reads the value with its TTL (``get_entries``, one script on Redis).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Literal

from .._backend import Backend, Entry
from .._errors import ConfigurationError
from .._protocol import TTL
from .._storage import BaseStorage
from ._base import WrapperBackend, backend_of, check_storage
from ._tracking import RedisInvalidation, redis_tracker_for

__all__ = ["CachedBackend", "CachedStorage"]


class CachedBackend(WrapperBackend):
    """An LRU of up to ``max_size`` values of ``inner``, each kept at most ``ttl`` seconds.

    Args:
        inner: The backend cached.
        max_size: Most entries held; the least recently used goes first.
        ttl: Longest time an entry is served without asking ``inner`` (the staleness bound
            for other processes' writes when there is no invalidation channel).
        clock: Monotonic time source (tests share the memory backend's fake clock).
        owner: The storage ``inner`` came from, closed with this backend.

    Attributes:
        hits: Reads served from the cache.
        misses: Reads that went to ``inner``.
        invalidations: Entries evicted by the server's invalidation messages.
    """

    def __init__(
        self,
        inner: Backend,
        *,
        max_size: int = 10_000,
        ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        owner: BaseStorage | None = None,
    ) -> None:
        super().__init__(inner, owner=owner)
        if max_size.__class__ is not int or max_size < 1:
            raise ConfigurationError(f"max_size must be a positive int, got {max_size!r}")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl < math.inf:
            raise ConfigurationError(f"ttl must be positive finite seconds, got {ttl!r}")
        self.max_size = max_size
        self.ttl_seconds = float(ttl)
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        # Reads in flight per key, and how often each such key was invalidated meanwhile.
        self._reading: dict[str, int] = {}
        self._gen: dict[str, int] = {}
        self._epoch = 0
        self._tracker: RedisInvalidation | None = None
        self._tracked_prefix = ""
        self.hits = 0
        self.misses = 0
        self.invalidations = 0

    def describe(self) -> dict[str, object]:
        out = {**self.inner.describe(), "max_size": self.max_size, "cache_ttl": self.ttl_seconds}
        if self._tracker is not None:
            out["invalidation"] = "redis"
        return out

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------------ invalidation

    def attach(self, tracker: RedisInvalidation, prefix: str) -> None:
        """Use ``tracker``'s messages; ``prefix`` is what its full keys have before ours."""
        self._tracker = tracker
        self._tracked_prefix = prefix

    def _on_keys(self, keys: list[str] | None) -> None:
        if keys is None:
            self.invalidate_all()
            return
        cut = len(self._tracked_prefix)
        for key in keys:
            if key.startswith(self._tracked_prefix):
                if key[cut:] in self._entries:
                    self.invalidations += 1
                self.invalidate(key[cut:])

    def _on_state(self, active: bool) -> None:
        self.invalidate_all()

    def invalidate(self, key: str) -> None:
        """Forget ``key``; a read of it in flight will not fill the cache."""
        self._entries.pop(key, None)
        if key in self._reading:
            self._gen[key] = self._gen.get(key, 0) + 1

    def invalidate_all(self) -> None:
        """Forget everything; no read in flight fills the cache."""
        self._entries.clear()
        self._epoch += 1

    def _caching(self) -> bool:
        tracker = self._tracker
        if tracker is None:
            return True
        tracker.ensure_started()
        return tracker.active

    # ------------------------------------------------------------------ reads

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is not None:
            if entry[1] > self._clock():
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[0]
            del self._entries[key]
        return (await self._fill([key]))[0]

    async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | None]:
        now = self._clock()
        out: list[bytes | None] = [None] * len(keys)
        missing: list[int] = []
        for i, key in enumerate(keys):
            entry = self._entries.get(key)
            if entry is not None and entry[1] > now:
                self._entries.move_to_end(key)
                self.hits += 1
                out[i] = entry[0]
            else:
                missing.append(i)
        if missing:
            found = await self._fill([keys[i] for i in missing])
            for i, data in zip(missing, found, strict=True):
                out[i] = data
        return out

    async def _fill(self, keys: list[str]) -> list[bytes | None]:
        self.misses += len(keys)
        if not self._caching():
            return list(await self.inner.get_many(keys))
        epoch = self._epoch
        reading, gen = self._reading, self._gen
        for key in keys:
            reading[key] = reading.get(key, 0) + 1
        tokens = [gen.get(key, 0) for key in keys]
        try:
            entries = await self.inner.get_entries(keys)
            if epoch == self._epoch and self._caching():
                now = self._clock()
                for key, token, (data, left) in zip(keys, tokens, entries, strict=True):
                    if data is None or gen.get(key, 0) != token:
                        continue
                    if left is None:
                        self._store(key, data, now + self.ttl_seconds)
                    elif left > 0:
                        self._store(key, data, now + min(self.ttl_seconds, left))
        finally:
            for key in keys:
                count = reading[key] - 1
                if count:
                    reading[key] = count
                else:
                    del reading[key]
                    gen.pop(key, None)
        return [data for data, _ in entries]

    def _store(self, key: str, data: bytes, deadline: float) -> None:
        entries = self._entries
        entries[key] = (data, deadline)
        entries.move_to_end(key)
        while len(entries) > self.max_size:
            entries.popitem(last=False)

    async def has(self, key: str) -> bool:
        entry = self._entries.get(key)
        if entry is not None and entry[1] > self._clock():
            return True
        return await self.inner.has(key)

    # ------------------------------------------------------------------ writes: evict after

    async def set(self, key: str, data: bytes, ttl: float | None) -> None:
        try:
            await self.inner.set(key, data, ttl)
        finally:
            self.invalidate(key)

    async def delete(self, key: str) -> bool:
        try:
            return await self.inner.delete(key)
        finally:
            self.invalidate(key)

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        try:
            await self.inner.set_many(items, ttl)
        finally:
            for key, _ in items:
                self.invalidate(key)

    async def delete_many(self, keys: Sequence[str]) -> int:
        try:
            return await self.inner.delete_many(keys)
        finally:
            for key in keys:
                self.invalidate(key)

    async def clear(self, prefix: str) -> int:
        try:
            return await self.inner.clear(prefix)
        finally:
            for key in [k for k in self._entries if k.startswith(prefix)]:
                del self._entries[key]
            self._epoch += 1

    async def set_entries(self, entries: Sequence[Entry], *, overwrite: bool = True) -> list[bool]:
        try:
            return await self.inner.set_entries(entries, overwrite=overwrite)
        finally:
            for key, _, _ in entries:
                self.invalidate(key)

    async def add(self, key: str, data: bytes, ttl: float | None) -> bool:
        try:
            return await self.inner.add(key, data, ttl)
        finally:
            self.invalidate(key)

    async def incr(self, key: str, amount: int, ttl: float | None) -> int:
        try:
            return await self.inner.incr(key, amount, ttl)
        finally:
            self.invalidate(key)

    async def update(
        self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None
    ) -> None:
        try:
            await self.inner.update(key, fn, ttl)
        finally:
            self.invalidate(key)

    async def close(self) -> None:
        self.invalidate_all()
        if self._tracker is not None:
            await self._tracker.close()
        await super().close()


class CachedStorage(BaseStorage):
    """``storage`` with a process-local near cache of up to ``max_size`` values.

    On Redis (a single node) the cache subscribes to server-assisted invalidation for the view's
    prefix, so a write by any process evicts the entry here within milliseconds; elsewhere an
    entry is served for at most ``ttl`` seconds after another process changed it. Writes made
    through this storage are never followed by an older value.

    Args:
        storage: The storage (or view) to cache; closed with this one.
        max_size: Most values held.
        ttl: Longest time a value is served without asking the storage (seconds).
        invalidation: ``"auto"`` (Redis tracking when the storage is a single-node Redis
            storage), ``"redis"`` (required: ConfigurationError otherwise) or ``None``
            (the ``ttl`` bound only).
        clock: Monotonic time source for the entries' lifetimes.
    """

    def __init__(
        self,
        storage: BaseStorage,
        *,
        max_size: int = 10_000,
        ttl: TTL = 1.0,
        invalidation: Literal["auto", "redis"] | None = "auto",
        clock: Callable[[], float] = time.monotonic,
        max_value_bytes: int | None = None,
    ) -> None:
        check_storage(storage)
        seconds = ttl.total_seconds() if hasattr(ttl, "total_seconds") else ttl
        backend = CachedBackend(
            backend_of(storage), max_size=max_size, ttl=seconds, clock=clock, owner=storage
        )
        if invalidation not in ("auto", "redis", None):
            raise ConfigurationError(
                f"invalidation must be 'auto', 'redis' or None, got {invalidation!r}"
            )
        is_redis = storage.capabilities.name == "redis"
        if invalidation == "redis" or (invalidation == "auto" and is_redis):
            try:
                tracker = redis_tracker_for(
                    storage, storage.prefix, backend._on_keys, backend._on_state
                )
            except ConfigurationError:
                if invalidation == "redis":
                    raise
            else:
                backend.attach(tracker, storage.prefix)
        super().__init__(
            backend, codec=storage.codec, ttl=storage.default_ttl, max_value_bytes=max_value_bytes
        )

    @property
    def backend(self) -> CachedBackend:
        """The :class:`CachedBackend` holding the entries."""
        return self._backend  # type: ignore[return-value]
