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
import heapq
import time
from collections.abc import AsyncIterator, Callable, MutableMapping, Sequence
from typing import Any

from ._backend import Backend, Capabilities, parse_int
from ._backend_util import query_options, weak_call_later
from ._codecs import JSON, Codec
from ._errors import ConfigurationError
from ._protocol import TTL
from ._storage import BaseStorage

__all__ = ["MemoryBackend", "MemoryStorage", "in_memory_storage"]

# Purging work per write with a TTL, and per timer tick while idle (bounds the pause).
_PURGE_PER_WRITE = 2
_PURGE_PER_TICK = 20_000
_SWEEP_INTERVAL = 0.25


class _Null:
    """Stands for a stored ``None`` in reference mode, where backends use ``None`` for missing."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<stored None>"


_NULL: Any = _Null()


class ReferenceCodec:
    """Identity "codec" for ``MemoryStorage(codec=None)``: values are stored as the same objects.

    ``update`` still hands its function a private (deep) copy, so a function that mutates its
    argument and then raises leaves the stored object as it was.
    """

    __slots__ = ()
    stores_references = True
    null = _NULL  # what a stored None is kept as
    plain_integers = True  # the memory backend counts on the int objects themselves

    def encode(self, value: Any) -> Any:
        return _NULL if value is None else value

    def decode(self, data: Any, type: Any = Any) -> Any:
        return None if data is _NULL else data

    _any = decode

    def __repr__(self) -> str:
        return "None"


REFERENCE = ReferenceCodec()

_CAPS = Capabilities(name="memory", atomic=False, nonblocking=True)


class MemoryBackend(Backend):
    """Entries in a mapping of this process, with TTLs and an optional LRU size bound.

    Atomic within the process by construction: no ``await`` between a read and its write.

    Args:
        mapping: Where to keep entries; a new ``dict`` by default.
        max_size: Keep at most this many keys, evicting the least recently used.
        clock: Monotonic time source in seconds; tests pass a fake clock to move time.
        references: Values are stored as objects, not bytes (``MemoryStorage(codec=None)``);
            counters are then stored as ``int`` objects.
    """

    capabilities = _CAPS

    def __init__(
        self,
        mapping: MutableMapping[str, Any] | None = None,
        *,
        max_size: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        references: bool = False,
    ) -> None:
        if max_size is not None and (max_size.__class__ is not int or max_size < 1):
            raise ConfigurationError(f"max_size must be a positive int, got {max_size!r}")
        if mapping is not None and not isinstance(mapping, MutableMapping):
            raise ConfigurationError(
                f"mapping must be a MutableMapping, got {mapping.__class__.__qualname__}"
            )
        self._data: MutableMapping[str, Any] = {} if mapping is None else mapping
        self._references = references
        self._max_size = max_size
        self._clock = clock
        # Deadlines only for keys that have one; the heap orders them for purging. A heap entry
        # is stale when the key's current deadline differs (the key was rewritten or deleted).
        self._expires: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._timer: asyncio.TimerHandle | None = None
        self.fast_map = self._data if max_size is None else None

    def __len__(self) -> int:
        """Entries held right now, counting expired ones not purged yet."""
        return len(self._data)

    def describe(self) -> dict[str, object]:
        return {} if self._max_size is None else {"max_size": self._max_size}

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
        self.fast_map = None  # reads must check deadlines from now on
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
        # Outside a loop there is no timer: lazy expiry still applies.
        self._timer = weak_call_later(delay, self._sweep)

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

    def _store(self, key: str, data: Any, ttl: float | None) -> None:
        if self._max_size is not None:
            self._make_room(key)
            self._data.pop(key, None)  # re-insert at the end: most recently used
        self._data[key] = data
        if ttl is not None or self._expires:
            self._set_deadline(key, ttl)

    def _remove(self, key: str) -> bool:
        if key not in self._data:
            return False
        alive = not self._expires or self._alive(key)
        if alive:
            del self._data[key]
            self._expires.pop(key, None)
        return alive

    # ------------------------------------------------------------------ the contract

    def get_nowait(self, key: str) -> Any:
        value = self._data.get(key)
        if value is None:
            return None
        if self._expires and not self._alive(key):
            return None
        if self._max_size is not None:  # mark most recently used (dict order is LRU order)
            del self._data[key]
            self._data[key] = value
        return value

    def set_nowait(self, key: str, data: Any, ttl: float | None) -> None:
        if self._max_size is None and ttl is None and not self._expires:
            self._data[key] = data
        else:
            self._store(key, data, ttl)

    async def get(self, key: str) -> Any:
        return self.get_nowait(key)

    async def set(self, key: str, data: Any, ttl: float | None) -> None:
        self.set_nowait(key, data, ttl)

    async def delete(self, key: str) -> bool:
        return self._remove(key)

    async def scan(self, prefix: str) -> AsyncIterator[str]:
        # A snapshot: callers may delete while iterating.
        for key in [k for k in self._data if k.startswith(prefix)]:
            if key in self._data and (not self._expires or self._alive(key)):
                yield key

    async def has(self, key: str) -> bool:
        return key in self._data and (not self._expires or self._alive(key))

    async def get_many(self, keys: Sequence[str]) -> list[Any]:
        if self._expires or self._max_size is not None:
            return [self.get_nowait(k) for k in keys]  # liveness and LRU: per key
        get = self._data.get
        return [get(k) for k in keys]

    async def set_many(self, items: Sequence[tuple[str, Any]], ttl: float | None) -> None:
        for key, data in items:
            self._store(key, data, ttl)

    async def delete_many(self, keys: Sequence[str]) -> int:
        return sum([self._remove(k) for k in dict.fromkeys(keys)])

    async def clear(self, prefix: str) -> int:
        if not prefix:
            count = sum(1 for k in list(self._data) if not self._expires or self._alive(k))
            self._data.clear()
            self._expires.clear()
            self._heap.clear()
            if self._max_size is None:
                self.fast_map = self._data
            return count
        return sum([self._remove(k) for k in [k for k in self._data if k.startswith(prefix)]])

    async def ttl(self, key: str) -> float | None:
        if key not in self._data or (self._expires and not self._alive(key)):
            raise self.not_found(key)
        deadline = self._expires.get(key)
        return None if deadline is None else deadline - self._clock()

    async def add(self, key: str, data: Any, ttl: float | None) -> bool:
        if await self.has(key):
            return False
        self._store(key, data, ttl)
        return True

    async def incr(self, key: str, amount: int, ttl: float | None) -> int:
        data = self.get_nowait(key)
        if data is None:
            value = amount
        else:
            value = parse_int(self, key, data) + amount
            if key in self._expires:  # keep the existing expiry
                self._data[key] = self._counter(value)
                return value
            ttl = None
        self._store(key, self._counter(value), ttl)
        return value

    def _counter(self, value: int) -> Any:
        # Reference mode stores the int itself; encoded mode its ASCII digits (JSON's encoding).
        return value if self._references else str(value).encode()

    async def update(self, key: str, fn: Callable[[Any], Any], ttl: float | None) -> None:
        self._store(key, fn(self.get_nowait(key)), ttl)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


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
        max_value_bytes: Refuse encoded values larger than this.

    Example::

        storage = MemoryStorage(ttl=3600)
        await storage.set("greeting", {"text": "hi"})
    """

    def __init__(
        self,
        mapping: MutableMapping[str, Any] | None = None,
        *,
        ttl: TTL | None = None,
        max_size: int | None = None,
        codec: Codec | None = JSON,
        clock: Callable[[], float] = time.monotonic,
        max_value_bytes: int | None = None,
    ) -> None:
        backend = MemoryBackend(mapping, max_size=max_size, clock=clock, references=codec is None)
        super().__init__(
            backend,
            codec=REFERENCE if codec is None else codec,
            ttl=ttl,
            max_value_bytes=max_value_bytes,
        )

    @property
    def backend(self) -> MemoryBackend:
        """The :class:`MemoryBackend` holding the entries."""
        return self._backend  # type: ignore[return-value]

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryStorage:
        """Build from ``memory://``, optionally ``memory://?ttl=60&max_size=1000``.

        Keyword ``options`` (``ttl``, ``max_size``, ``codec``...) override the query string.
        """
        parsed = query_options(url, {"ttl": float, "max_size": int})
        return cls(**{**parsed, **options})

    def __len__(self) -> int:
        """Entries held right now, counting expired ones not purged yet."""
        return len(self.backend)


def in_memory_storage(mapping: MutableMapping[str, Any] | None = None) -> MemoryStorage:
    """GramIO's ``inMemoryStorage(map?)``: a :class:`MemoryStorage`, optionally on ``mapping``."""
    return MemoryStorage(mapping)
