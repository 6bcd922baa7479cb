"""The atomic operations of the facade: ``add``, ``incr`` and ``update``.

A mixin of :class:`~gramio_storage.BaseStorage`, kept in its own module so the facade stays
small. It only calls the facade's conversions and the backend's public methods.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._errors import DecodeError, KeyNotFoundError, UnsupportedOperationError
from ._keys import Key
from ._protocol import TTL
from ._validate import check_amount

if TYPE_CHECKING:
    from ._backend import Backend, Capabilities

__all__ = ["AtomicOps"]

T = TypeVar("T")


class AtomicOps:
    """``add``, ``incr`` and ``update`` on top of the facade's key, TTL and codec handling."""

    if TYPE_CHECKING:
        _backend: Backend
        _caps: Capabilities
        _name: str
        _plain_ints: bool
        _references: bool
        _nowait: bool

        def _key(self, key: object) -> str: ...
        def _ttl(self, ttl: TTL | None) -> float | None: ...
        def _encode_value(self, key: object, value: Any) -> Any: ...
        def _decode_value(self, key: object, data: Any) -> Any: ...

    @overload
    async def add(self, key: Key[T], value: T, *, ttl: TTL | None = None) -> bool: ...
    @overload
    async def add(self, key: str, value: Any, *, ttl: TTL | None = None) -> bool: ...
    async def add(self, key: Any, value: Any, *, ttl: TTL | None = None) -> bool:
        """Store ``value`` only if ``key`` is absent, atomically. Return whether it was stored."""
        full = self._key(key)
        seconds = self._ttl(ttl)
        return await self._backend.add(full, self._encode_value(key, value), seconds)

    async def incr(self, key: str | Key[int], amount: int = 1, *, ttl: TTL | None = None) -> int:
        """Add ``amount`` to the integer under ``key`` atomically and return the new value.

        A missing key counts as 0 and is created with ``ttl`` (or the default TTL); an existing
        key keeps its expiry, so ``incr(key, ttl=60)`` counts in fixed 60-second windows. The
        counter is stored as a plain number, readable by ``get``.

        Raises:
            InvalidArgumentError: ``amount`` is not an ``int``.
            DecodeError: The stored value is not an integer.
        """
        full = self._key(key)
        check_amount(amount, self._caps)
        seconds = self._ttl(ttl)
        if self._plain_ints:
            return await self._backend.incr(full, amount, seconds)
        return await self._incr_by_update(key, full, amount, seconds)

    async def _incr_by_update(self, key: object, full: str, amount: int, ttl: float | None) -> int:
        """``incr`` for codecs whose integers are not ASCII digits (msgpack): via ``update``."""
        with contextlib.suppress(KeyNotFoundError, UnsupportedOperationError):
            left = await self._backend.ttl(full)
            ttl = left if left is not None and left > 0 else None  # an existing key keeps it
        result: list[int] = []

        def step(data: Any) -> Any:
            current = 0 if data is None else self._decode_value(Key(_name(key), int), data)
            if current.__class__ is not int:
                raise DecodeError(
                    f"Cannot increment key {_name(key)!r}: the stored value is not an integer",
                    key=_name(key),
                    backend=self._name,
                )
            result[:] = (current + amount,)
            return self._encode_value(key, result[0])

        await self._backend.update(full, step, ttl)
        return result[0]

    @overload
    async def update(
        self,
        key: Key[T],
        fn: Callable[[T | None], T],
        *,
        default: None = None,
        ttl: TTL | None = None,
    ) -> T: ...
    @overload
    async def update(
        self, key: Key[T], fn: Callable[[T], T], *, default: T, ttl: TTL | None = None
    ) -> T: ...
    @overload
    async def update(
        self, key: str, fn: Callable[[Any], Any], *, default: Any = None, ttl: TTL | None = None
    ) -> Any: ...
    async def update(
        self, key: Any, fn: Callable[[Any], Any], *, default: Any = None, ttl: TTL | None = None
    ) -> Any:
        """Atomically replace the value under ``key`` by ``fn(current)`` and return it.

        ``fn`` receives the decoded value, or ``default`` when the key is missing, and returns
        the new value (mutating and returning the argument is fine: it is a private copy, so an
        ``fn`` that raises leaves the stored value as it was). No update is lost when many tasks
        or processes update the same key at once. ``fn`` must be a plain function without side
        effects: a backend with optimistic concurrency (Redis) calls it again when another
        writer got in first.

        The write takes ``ttl`` (or the default TTL), like :meth:`set`: an expiry the key had
        before is replaced, not kept.
        """
        full = self._key(key)
        seconds = self._ttl(ttl)
        if self._nowait:
            # A nonblocking backend (memory): no await between the read and the write, so this
            # is atomic, and a coroutine and a closure cheaper (bench/bench_memory.py).
            backend = self._backend
            new, data = self._apply(key, fn, default, backend.get_nowait(full))
            backend.set_nowait(full, data, seconds)
            return new
        result: list[Any] = []

        def step(data: Any) -> Any:
            result[:] = self._apply(key, fn, default, data)
            return result[1]

        await self._backend.update(full, step, seconds)
        return result[0]

    def _apply(
        self, key: Any, fn: Callable[[Any], Any], default: Any, data: Any
    ) -> tuple[Any, Any]:
        """One ``update`` step: ``fn`` on a private copy of the current value; (new, encoded)."""
        if data is None:
            current = None if default is None else self._fresh(key, default)
        else:
            current = self._decode_value(key, data)
            if self._references:
                current = _clone(current)  # fn must not mutate the stored object
        new = fn(current)
        return new, self._encode_value(key, new)

    def _fresh(self, key: object, default: Any) -> Any:
        """A private copy of ``update``'s default, so ``fn`` never mutates the caller's object."""
        if self._references:
            return _clone(default)
        return self._decode_value(key, self._encode_value(key, default))



_SCALARS = frozenset({str, int, float, bool, type(None), bytes})


def _clone(value: Any) -> Any:
    """A deep copy, fast for JSON-shaped data (dicts, lists, scalars) and exact for the rest."""
    cls = value.__class__
    if cls is dict:
        return {k: v if v.__class__ in _SCALARS else _clone(v) for k, v in value.items()}
    if cls is list:
        return [v if v.__class__ in _SCALARS else _clone(v) for v in value]
    if cls in _SCALARS:
        return value
    return copy.deepcopy(value)


def _name(key: object) -> str:
    return key.name if key.__class__ is Key else str(key)
