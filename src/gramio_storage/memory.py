"""In-memory storage: the development default, and every plugin's fallback.

Unlike GramIO's in-memory adapter it behaves like a remote backend by default: values are stored
encoded, so ``get`` returns a fresh copy and a value the codec cannot encode fails at ``set`` in
development rather than in production. ``codec=None`` stores references instead, for speed.

Expiry is lazy (checked on access) plus amortised: every write with a TTL purges a couple of
expired entries, and a timer purges the rest while the storage is idle, so expired keys never
pile up even if nobody reads them again.
"""

from __future__ import annotations

import asyncio
import copy
import heapq
import time
import urllib.parse
import weakref
from collections.abc import AsyncIterator, Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ._codecs import JSON, Codec
from ._errors import ConfigurationError
from ._protocol import TTL
from ._storage import BaseStorage

__all__ = ["MemoryStorage"]

# Purging work per write with a TTL, and per timer tick while idle (bounds the pause).
_PURGE_PER_WRITE = 2
_PURGE_PER_TICK = 20_000
_SWEEP_INTERVAL = 0.25


class _Null:
    """Stands for a stored ``None`` in reference mode, where hooks use ``None`` for "missing"."""

    __slots__ = ()


_NULL: Any = _Null()


class _ReferenceCodec:
    """Identity "codec" for ``codec=None``: values are stored and returned as the same objects."""

    __slots__ = ()

    def encode(self, value: Any) -> Any:
        return value

    def decode(self, data: Any, type: Any = Any) -> Any:
        return None if data is _NULL else data

    def __repr__(self) -> str:
        return "None"


_REFERENCE = _ReferenceCodec()


class MemoryStorage(BaseStorage):
    """A storage in this process's memory, with TTLs, an optional size bound and LRU eviction.

    Args:
        mapping: Where to keep entries (GramIO's "provide your own Map"); a new ``dict`` by
            default. It holds encoded bytes, or the values themselves when ``codec=None``.
        ttl: Default time to live for writes that do not pass one.
        max_size: Keep at most this many keys, evicting the least recently used.
        codec: How values are encoded; ``None`` stores references (fastest, but a returned
            value is the stored object itself and nothing is checked for serialisability).
        clock: Monotonic time source in seconds; tests pass a fake clock to move time.

    Example::

        storage = MemoryStorage(ttl=3600)
        await storage.set("greeting", {"text": "hi"})
    """

    backend_name: ClassVar[str] = "memory"

    def __init__(
        self,
        mapping: MutableMapping[str, Any] | None = None,
        *,
        ttl: TTL | None = None,
        max_size: int | None = None,
        codec: Codec | None = JSON,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(codec=_REFERENCE if codec is None else codec, ttl=ttl)
        if max_size is not None and (max_size.__class__ is not int or max_size < 1):
            raise ConfigurationError(f"max_size must be a positive int, got {max_size!r}")
        self._data: MutableMapping[str, Any] = {} if mapping is None else mapping
        self._reference = codec is None
        self._max_size = max_size
        self._clock = clock
        # Deadlines only for keys that have one; the heap orders them for purging. A heap entry
        # is stale when the key's current deadline differs (the key was rewritten or deleted).
        self._expires: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._timer: asyncio.TimerHandle | None = None
        # Writes need no deadline or eviction bookkeeping unless one of these is set.
        self._plain = max_size is None and self._default_ttl is None

    # ------------------------------------------------------------------ fast paths
    # The common calls (a str key, no TTL, no size bound) skip the hook layer: no inner
    # coroutine, no key-resolution call. Anything unusual, including every error, falls
    # through to the generic facade, which does the full checks and raises the right error.
    # Hidden from the type checker, which keeps seeing the base class's typed overloads.
    if not TYPE_CHECKING:

        async def get(self, key: Any, default: Any = None) -> Any:
            """See :meth:`BaseStorage.get`."""
            if key.__class__ is str and key and self._max_size is None:
                k = self._prefix + key
                value = self._data.get(k)
                if value is None:
                    # Encoded mode never stores None; in reference mode a stored None is rare.
                    if not self._reference or k not in self._data:
                        return default
                elif not self._expires or k not in self._expires:
                    if self._reference:
                        return value
                    try:
                        return self._decode_any(value)
                    except Exception:  # noqa: S110 - the generic path raises the DecodeError
                        pass
            return await BaseStorage.get(self, key, default)

        async def set(self, key: Any, value: Any, *, ttl: TTL | None = None) -> None:
            """See :meth:`BaseStorage.set`."""
            if key.__class__ is str and key and ttl is None and self._plain:
                try:
                    data = value if self._reference else self._encode(value)
                except Exception:  # the generic path raises the EncodeError
                    return await BaseStorage.set(self, key, value)
                k = self._prefix + key
                self._data[k] = data
                if self._expires:
                    self._expires.pop(k, None)
                return None
            return await BaseStorage.set(self, key, value, ttl=ttl)

        async def update(
            self, key: Any, fn: Callable[[Any], Any], *, default: Any = None, ttl: TTL | None = None
        ) -> Any:
            """See :meth:`BaseStorage.update`."""
            if key.__class__ is str and key and ttl is None and self._plain:
                k = self._prefix + key
                data = self._data.get(k)
                # Skipped: keys with a deadline (liveness check) and a reference-mode None (absent
                # or stored None?); the generic path handles both.
                if (not self._expires or k not in self._expires) and (
                    data is not None or not self._reference
                ):
                    if data is not None:
                        current = data if self._reference else self._decode_value(key, data)
                    else:
                        current = None if default is None else self._fresh_default(key, default)
                    new = fn(current)
                    self._data[k] = new if self._reference else self._encode_value(key, new)
                    return new
            return await BaseStorage.update(self, key, fn, default=default, ttl=ttl)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryStorage:
        """Build from ``memory://``, optionally ``memory://?ttl=60&max_size=1000``.

        Keyword ``options`` (``ttl``, ``max_size``, ``codec``...) override the query string.
        """
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query, strict_parsing=False)
        parsed: dict[str, Any] = {}
        try:
            if "ttl" in query:
                parsed["ttl"] = float(query["ttl"][-1])
            if "max_size" in query:
                parsed["max_size"] = int(query["max_size"][-1])
        except ValueError as e:
            raise ConfigurationError(f"Invalid memory:// URL option in {url!r}: {e}") from e
        unknown = set(query) - {"ttl", "max_size"}
        if unknown:
            raise ConfigurationError(f"Unknown memory:// URL options: {sorted(unknown)}")
        return cls(**{**parsed, **options})

    def _repr_fields(self) -> dict[str, object]:
        fields: dict[str, object] = {}
        if self._max_size is not None:
            fields["max_size"] = self._max_size
        if self._reference:
            fields["codec"] = None
        elif self._codec is not JSON:
            fields["codec"] = self._codec
        return fields

    def _fresh_default(self, key: object, default: Any) -> Any:
        return copy.deepcopy(default) if self._reference else super()._fresh_default(key, default)

    def __len__(self) -> int:
        """Entries held right now, counting expired ones not purged yet (root storage)."""
        return len(self._data)

    # ------------------------------------------------------------------ expiry machinery

    def _alive(self, key: str) -> bool:
        """Whether a present key has not expired; purges it if it has."""
        deadline = self._expires.get(key)
        if deadline is None or deadline > self._clock():
            return True
        del self._expires[key]
        self._data.pop(key, None)
        return False

    def _set_deadline(self, key: str, ttl: float | None) -> None:
        if ttl is None:
            if self._expires:
                self._expires.pop(key, None)
            return
        now = self._clock()
        deadline = now + ttl
        self._expires[key] = deadline
        heap = self._heap
        heapq.heappush(heap, (deadline, key))
        self._purge(now, _PURGE_PER_WRITE)
        if len(heap) > 2 * len(self._expires) + 1024:
            # Rewritten keys leave stale entries behind; rebuild so the heap stays O(live).
            heap[:] = [(d, k) for k, d in self._expires.items()]
            heapq.heapify(heap)
        if self._timer is None:
            self._schedule(_SWEEP_INTERVAL)

    def _purge(self, now: float, budget: int) -> int:
        """Drop up to ``budget`` due heap entries; return how many entries were examined."""
        heap, expires, data = self._heap, self._expires, self._data
        done = 0
        while heap and done < budget and heap[0][0] <= now:
            deadline, key = heapq.heappop(heap)
            if expires.get(key) == deadline:
                del expires[key]
                data.pop(key, None)
            done += 1
        return done

    def _schedule(self, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # used outside a loop: lazy expiry still applies
            return
        # A weak reference: a pending timer must not keep a dropped storage alive.
        self._timer = loop.call_later(delay, _sweep, weakref.ref(self))

    def _sweep(self) -> None:
        self._timer = None
        done = self._purge(self._clock(), _PURGE_PER_TICK)
        if self._heap:
            # More due right now: continue on the next loop iteration, letting others run.
            self._schedule(0 if done >= _PURGE_PER_TICK else _SWEEP_INTERVAL)

    def _make_room(self, key: str) -> None:
        data = self._data
        max_size = self._max_size
        assert max_size is not None
        if key in data or len(data) < max_size:
            return
        self._purge(self._clock(), len(self._heap))
        while len(data) >= max_size:
            oldest = next(iter(data))
            del data[oldest]
            self._expires.pop(oldest, None)

    def _touch(self, key: str, value: Any) -> None:
        """Mark ``key`` most recently used (dict order is the LRU order)."""
        data = self._data
        del data[key]
        data[key] = value

    # ------------------------------------------------------------------ hooks

    async def _get(self, key: str) -> Any:
        value = self._data.get(key)
        if value is None:
            if self._reference and key in self._data and self._alive(key):
                return _NULL
            return None
        if self._expires and not self._alive(key):
            return None
        if self._max_size is not None:
            self._touch(key, value)
        return value

    async def _has(self, key: str) -> bool:
        return key in self._data and (not self._expires or self._alive(key))

    async def _set(self, key: str, data: Any, ttl: float | None) -> None:
        self._store(key, data, ttl)

    def _store(self, key: str, data: Any, ttl: float | None) -> None:
        if self._max_size is not None:
            self._make_room(key)
            self._data.pop(key, None)  # re-insert at the end: most recently used
        self._data[key] = data
        if ttl is not None or self._expires:
            self._set_deadline(key, ttl)

    async def _delete(self, key: str) -> bool:
        return self._remove(key)

    def _remove(self, key: str) -> bool:
        if key not in self._data:
            return False
        alive = not self._expires or self._alive(key)
        if alive:
            del self._data[key]
            self._expires.pop(key, None)
        return alive

    async def _scan(self, prefix: str) -> AsyncIterator[str]:
        # A snapshot: callers may delete while iterating.
        for key in [k for k in self._data if k.startswith(prefix)]:
            if key in self._data and (not self._expires or self._alive(key)):
                yield key

    async def _get_many(self, keys: Sequence[str]) -> list[Any]:
        if self._expires or self._reference or self._max_size is not None:
            return [await self._get(k) for k in keys]  # liveness, stored None, LRU: per key
        get = self._data.get
        return [get(k) for k in keys]

    async def _set_many(self, items: Sequence[tuple[str, Any]], ttl: float | None) -> None:
        for key, data in items:
            self._store(key, data, ttl)

    async def _delete_many(self, keys: Sequence[str]) -> int:
        return sum([self._remove(k) for k in dict.fromkeys(keys)])

    async def _clear(self, prefix: str) -> int:
        if not prefix:
            count = sum(1 for k in list(self._data) if not self._expires or self._alive(k))
            self._data.clear()
            self._expires.clear()
            self._heap.clear()
            return count
        return sum([self._remove(k) for k in [k for k in self._data if k.startswith(prefix)]])

    async def _ttl(self, key: str) -> float | None:
        if key not in self._data or (self._expires and not self._alive(key)):
            raise self._not_found(key)
        deadline = self._expires.get(key)
        return None if deadline is None else deadline - self._clock()

    # Atomic by construction: no await between the read and the write.

    async def _add(self, key: str, data: Any, ttl: float | None) -> bool:
        if await self._has(key):
            return False
        self._store(key, data, ttl)
        return True

    async def _incr(self, key: str, amount: int, ttl: float | None) -> int:
        data = await self._get(key)
        if data is None:
            value = amount
        else:
            value = self._decode_int(key, data) + amount
            ttl = None
            if key in self._expires:  # keep the existing expiry
                self._data[key] = self._encode(value)
                return value
        self._store(key, self._encode(value), ttl)
        return value

    async def _update(self, key: str, fn: Callable[[Any], Any], ttl: float | None) -> None:
        self._store(key, fn(await self._get(key)), ttl)

    async def _close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _sweep(ref: weakref.ref[MemoryStorage]) -> None:
    storage = ref()
    if storage is not None:
        storage._sweep()
