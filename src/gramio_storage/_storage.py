"""The storage facade and the small hook contract every backend implements.

:class:`BaseStorage` is both things at once, so an adapter is one class:

* the **facade** users call (``get``, ``set``, ``update``, ``with_prefix``...), which resolves
  typed keys, applies the view's prefix, normalises TTLs and runs the codec;
* the **hooks** a backend implements, which only ever see full ``str`` keys, encoded ``bytes``
  and TTLs as positive ``float`` seconds (or ``None`` for "no expiry").

Four hooks are required (``_get``, ``_set``, ``_delete``, ``_scan``); everything else has a
correct fallback built on them, and a backend overrides a hook when it can do better: one round
trip for ``_get_many``, or native atomicity for ``_add``/``_incr``/``_update``.

Views made by :meth:`BaseStorage.with_prefix` are shallow copies that call the hooks of the
storage they came from (``self._root``), so they share its connection and state.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import math
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, ClassVar, Self, TypeVar, overload

from ._codecs import JSON, Codec
from ._errors import (
    DecodeError,
    EncodeError,
    InvalidKeyError,
    InvalidTTLError,
    KeyNotFoundError,
    UnsupportedOperationError,
)
from ._keys import Key
from ._protocol import TTL

__all__ = ["BaseStorage"]

T = TypeVar("T")
D = TypeVar("D")

_CLEAR_BATCH = 500


class BaseStorage:
    """Base class of every gramio-storage backend, and the full API users call.

    Subclass it and implement the four required hooks to write an adapter; see
    ``docs/writing-adapters.md``. Every method accepts a ``str`` key (plain JSON values) or a
    :class:`~gramio_storage.Key` (values decoded into the key's type).

    Args:
        codec: How values become bytes. Defaults to compact JSON, readable by GramIO.
        ttl: Default time to live for writes that do not pass one. ``None``: no expiry.

    Class attributes a backend may set:
        backend_name: Short name used in error messages (``"redis"``).
        min_ttl: The smallest TTL the backend accepts, in seconds (Cloudflare KV: 60).
    """

    backend_name: ClassVar[str] = "custom"
    min_ttl: ClassVar[float] = 0.0

    _root: BaseStorage
    _prefix: str
    _codec: Codec
    _default_ttl: float | None

    def __init__(self, *, codec: Codec = JSON, ttl: TTL | None = None) -> None:
        if not (hasattr(codec, "encode") and hasattr(codec, "decode")):
            raise TypeError(f"codec must have encode() and decode() methods, got {codec!r}")
        self._root = self
        self._prefix = ""
        self._codec = codec
        # Cached bound methods: the hot path does one attribute load instead of two.
        self._encode: Callable[[Any], Any] = codec.encode
        self._decode = codec.decode
        self._decode_any: Callable[[Any], Any] = getattr(codec, "_any", None) or codec.decode
        self._default_ttl = None
        self._default_ttl = self._ttl_seconds(ttl, "ttl")
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    # ------------------------------------------------------------------ key and TTL helpers

    def _key(self, key: object) -> str:
        """Resolve a user key to the backend key: type check, template check, prefix."""
        if key.__class__ is str:
            if key:
                return self._prefix + key
        elif key.__class__ is Key:
            assert isinstance(key, Key)  # narrowing only; the class check decided
            if key._fields:
                raise InvalidKeyError(
                    f"Key template {key.name!r} has unfilled fields {list(key._fields)}: "
                    "call .format(...) first",
                    key=key.name,
                    backend=self.backend_name,
                )
            if key.name:
                return self._prefix + key.name
        elif isinstance(key, str):  # a str subclass (an Enum member, say): use its text
            return self._key(str.__str__(key))
        else:
            raise InvalidKeyError(
                f"Storage keys must be str or Key, got {key.__class__.__qualname__}: {key!r}",
                backend=self.backend_name,
            )
        raise InvalidKeyError("Storage keys must not be empty", key="", backend=self.backend_name)

    def _ttl_seconds(self, ttl: TTL | None, argument: str = "ttl") -> float | None:
        """Normalise a TTL argument to positive float seconds, or the storage default."""
        if ttl is None:
            return self._default_ttl
        if ttl.__class__ is timedelta:
            seconds = ttl.total_seconds()
        elif isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
            seconds = float(ttl)
        else:
            raise InvalidTTLError(
                f"{argument} must be seconds (int or float) or a timedelta, "
                f"got {ttl.__class__.__qualname__}",
                backend=self.backend_name,
            )
        if not (0.0 < seconds < math.inf):  # also rejects NaN
            raise InvalidTTLError(
                f"{argument} must be a positive, finite duration, got {ttl!r}",
                backend=self.backend_name,
            )
        if seconds < self.min_ttl:
            raise InvalidTTLError(
                f"{argument}={seconds:g}s is below the {self.backend_name} backend's "
                f"minimum TTL of {self.min_ttl:g}s",
                backend=self.backend_name,
            )
        return seconds

    def _encode_value(self, key: object, value: Any) -> bytes:
        try:
            return self._encode(value)  # type: ignore[no-any-return]
        except Exception as e:
            raise EncodeError(
                f"Cannot encode the value for key {_name(key)!r} "
                f"({value.__class__.__qualname__}): {e}",
                key=_name(key),
                backend=self.backend_name,
            ) from e

    def _decode_value(self, key: object, data: Any) -> Any:
        tp = key.type if key.__class__ is Key else Any
        try:
            return self._decode(data, tp)
        except Exception as e:
            expected = "" if tp is Any else f" as {getattr(tp, '__qualname__', tp)}"
            raise DecodeError(
                f"Cannot decode the value stored under key {_name(key)!r}{expected}: {e}",
                key=_name(key),
                backend=self.backend_name,
            ) from e

    # ------------------------------------------------------------------ the four methods

    @overload
    async def get(self, key: Key[T]) -> T | None: ...
    @overload
    async def get(self, key: Key[T], default: D) -> T | D: ...
    @overload
    async def get(self, key: str, default: Any = None) -> Any: ...
    async def get(self, key: Any, default: Any = None) -> Any:
        """Return the value stored under ``key``, or ``default`` when it is missing or expired.

        Raises:
            InvalidKeyError: ``key`` is not a non-empty ``str`` or a filled ``Key``.
            DecodeError: The stored bytes do not decode into the key's type.
        """
        data = await self._root._get(self._key(key))
        if data is None:
            return default
        return self._decode_value(key, data)

    async def has(self, key: str | Key[Any]) -> bool:
        """Return whether ``key`` holds a value; a stored ``None``/``0``/``""`` counts."""
        return await self._root._has(self._key(key))

    @overload
    async def set(self, key: Key[T], value: T, *, ttl: TTL | None = None) -> None: ...
    @overload
    async def set(self, key: str, value: Any, *, ttl: TTL | None = None) -> None: ...
    async def set(self, key: Any, value: Any, *, ttl: TTL | None = None) -> None:
        """Store ``value`` under ``key``, replacing any value and expiry it had.

        Args:
            key: The key.
            value: Anything the codec encodes.
            ttl: Expire after this many seconds (or this ``timedelta``); ``None`` uses the
                storage's default TTL.

        Raises:
            EncodeError: The codec cannot encode ``value``; nothing was written.
            InvalidTTLError: ``ttl`` is not a positive duration; nothing was written.
        """
        full = self._key(key)
        seconds = self._default_ttl if ttl is None else self._ttl_seconds(ttl)
        await self._root._set(full, self._encode_value(key, value), seconds)

    async def delete(self, key: str | Key[Any]) -> bool:
        """Remove ``key``. Return True if it existed."""
        return await self._root._delete(self._key(key))

    # ------------------------------------------------------------------ bulk operations

    @overload
    async def get_many(self, keys: Iterable[Key[T]]) -> dict[Key[T], T]: ...
    @overload
    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]: ...
    @overload
    async def get_many(self, keys: Iterable[str | Key[Any]]) -> dict[str | Key[Any], Any]: ...
    async def get_many(self, keys: Iterable[Any]) -> dict[Any, Any]:
        """Fetch several keys at once (one round trip where the backend allows).

        Returns:
            A dict from each requested key (as passed) to its value; missing keys are absent.
        """
        wanted = _key_list(keys, "get_many")
        prefix = self._prefix
        if all(k.__class__ is str and k for k in wanted):  # the common case: no per-key calls
            full = [prefix + k for k in wanted] if prefix else wanted
        else:
            full = [self._key(k) for k in wanted]
        found = await self._root._get_many(full)
        result: dict[Any, Any] = {}
        decode_any = self._decode_any
        for k, data in zip(wanted, found, strict=True):
            if data is not None:
                if k.__class__ is str:
                    try:
                        result[k] = decode_any(data)
                        continue
                    except Exception:  # noqa: S110 - _decode_value below raises the DecodeError
                        pass
                result[k] = self._decode_value(k, data)
        return result

    @overload
    async def set_many(self, items: Mapping[Key[T], T], *, ttl: TTL | None = None) -> None: ...
    @overload
    async def set_many(
        self,
        items: Mapping[str, Any] | Mapping[Key[Any], Any] | Mapping[str | Key[Any], Any],
        *,
        ttl: TTL | None = None,
    ) -> None: ...
    async def set_many(self, items: Mapping[Any, Any], *, ttl: TTL | None = None) -> None:
        """Store several values at once with the same TTL.

        Every value is encoded before anything is written, so a bad value writes nothing.
        """
        seconds = self._default_ttl if ttl is None else self._ttl_seconds(ttl)
        encoded = [(self._key(k), self._encode_value(k, v)) for k, v in items.items()]
        if encoded:
            await self._root._set_many(encoded, seconds)

    async def delete_many(self, keys: Iterable[str | Key[Any]]) -> int:
        """Remove several keys. Return how many of them existed."""
        full = [self._key(k) for k in _key_list(keys, "delete_many")]
        if not full:
            return 0
        return await self._root._delete_many(full)

    async def keys(self, prefix: str = "") -> AsyncIterator[str]:
        """Iterate over the keys of this storage (or view) that start with ``prefix``.

        Keys come back relative to the view's prefix. Iteration is incremental where the
        backend supports cursors; glob or LIKE characters in ``prefix`` match only themselves.
        """
        if not isinstance(prefix, str):
            raise InvalidKeyError(f"prefix must be a str, got {prefix.__class__.__qualname__}")
        cut = len(self._prefix)
        async for full in self._root._scan(self._prefix + prefix):
            yield full[cut:]

    async def clear(self, prefix: str = "") -> int:
        """Delete every key of this storage (or view) starting with ``prefix``; return the count.

        Only this storage's own keys are touched: a view clears its prefix, never the database.
        """
        if not isinstance(prefix, str):
            raise InvalidKeyError(f"prefix must be a str, got {prefix.__class__.__qualname__}")
        return await self._root._clear(self._prefix + prefix)

    async def ttl(self, key: str | Key[Any]) -> float | None:
        """Return the seconds ``key`` has left, or ``None`` if it never expires.

        Raises:
            KeyNotFoundError: The key does not exist (or already expired).
        """
        return await self._root._ttl(self._key(key))

    # ------------------------------------------------------------------ atomic operations

    @overload
    async def add(self, key: Key[T], value: T, *, ttl: TTL | None = None) -> bool: ...
    @overload
    async def add(self, key: str, value: Any, *, ttl: TTL | None = None) -> bool: ...
    async def add(self, key: Any, value: Any, *, ttl: TTL | None = None) -> bool:
        """Store ``value`` only if ``key`` is absent, atomically. Return whether it was stored."""
        full = self._key(key)
        seconds = self._default_ttl if ttl is None else self._ttl_seconds(ttl)
        return await self._root._add(full, self._encode_value(key, value), seconds)

    async def incr(self, key: str | Key[int], amount: int = 1, *, ttl: TTL | None = None) -> int:
        """Add ``amount`` to the integer under ``key`` atomically and return the new value.

        A missing key counts as 0 and is created with ``ttl`` (or the default TTL); an existing
        key keeps its expiry, so ``incr(key, ttl=60)`` counts in fixed 60-second windows. The
        counter is stored as a plain number, readable by ``get``.

        Raises:
            DecodeError: The stored value is not an integer.
        """
        if amount.__class__ is not int:
            raise TypeError(f"amount must be an int, got {amount.__class__.__qualname__}")
        full = self._key(key)
        seconds = self._default_ttl if ttl is None else self._ttl_seconds(ttl)
        return await self._root._incr(full, amount, seconds)

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
        the new value (mutating and returning the argument is fine: it is a private copy). No
        update is lost when many tasks or processes update the same key at once. ``fn`` must be
        a plain function without side effects: a backend with optimistic concurrency (Redis)
        calls it again when another writer got in first.

        The write takes ``ttl`` (or the default TTL), like :meth:`set`.
        """
        full = self._key(key)
        seconds = self._default_ttl if ttl is None else self._ttl_seconds(ttl)
        result: list[Any] = []

        def step(data: Any) -> Any:
            if data is None:
                current = None if default is None else self._fresh_default(key, default)
            else:
                current = self._decode_value(key, data)
            new = fn(current)
            encoded = self._encode_value(key, new)
            result[:] = (new,)
            return encoded

        await self._root._update(full, step, seconds)
        return result[0]

    # ------------------------------------------------------------------ views and lifecycle

    def with_prefix(self, prefix: str) -> Self:
        """Return a view whose keys all live under ``prefix``, sharing this storage's backend.

        Views nest (``s.with_prefix("a:").with_prefix("b:")`` uses ``a:b:``), and a view's
        :meth:`clear` and :meth:`keys` see only its own keys. Closing a view does nothing; close
        the storage it came from.
        """
        if not isinstance(prefix, str):
            raise InvalidKeyError(f"prefix must be a str, got {prefix.__class__.__qualname__}")
        view = copy.copy(self)
        view._prefix = self._prefix + prefix
        return view

    @property
    def prefix(self) -> str:
        """The prefix this view adds to every key (``""`` for a root storage)."""
        return self._prefix

    @property
    def codec(self) -> Codec:
        """The codec values are encoded with."""
        return self._codec

    @property
    def default_ttl(self) -> float | None:
        """The TTL, in seconds, applied to writes that do not pass one."""
        return self._default_ttl

    async def close(self) -> None:
        """Release what this storage created (connections, files, timers).

        Clients or pools passed in by the caller are left open. Closing a view is a no-op.
        """
        if self._root is self:
            await self._close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        parts = [f"{k}={v!r}" for k, v in self._repr_fields().items()]
        if self._prefix:
            parts.append(f"prefix={self._prefix!r}")
        if self._default_ttl is not None:
            parts.append(f"ttl={self._default_ttl:g}")
        return f"{self.__class__.__name__}({', '.join(parts)})"

    def _repr_fields(self) -> dict[str, object]:
        """What ``repr`` shows about the backend. Never include credentials."""
        return {}

    # ------------------------------------------------------------------ hooks: required

    async def _get(self, key: str) -> bytes | None:
        """Return the stored bytes, or ``None`` if the key is missing or expired."""
        raise NotImplementedError

    async def _set(self, key: str, data: bytes, ttl: float | None) -> None:
        """Store ``data`` with an expiry of ``ttl`` seconds (``None``: never), replacing all."""
        raise NotImplementedError

    async def _delete(self, key: str) -> bool:
        """Delete ``key``; return whether it existed."""
        raise NotImplementedError

    def _scan(self, prefix: str) -> AsyncIterator[str]:
        """Yield every live key starting with ``prefix`` (literally: no glob, no LIKE).

        Must tolerate keys being deleted while the iteration is under way.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ hooks: optional

    async def _has(self, key: str) -> bool:
        return await self._get(key) is not None

    async def _get_many(self, keys: Sequence[str]) -> Sequence[bytes | None]:
        """Return the stored bytes for each key, in order (``None`` for missing ones)."""
        return [await self._get(k) for k in keys]

    async def _set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        for k, data in items:
            await self._set(k, data, ttl)

    async def _delete_many(self, keys: Sequence[str]) -> int:
        # dict.fromkeys: a key listed twice must be counted once.
        return sum([await self._delete(k) for k in dict.fromkeys(keys)])

    async def _clear(self, prefix: str) -> int:
        deleted = 0
        batch: list[str] = []
        async for k in self._scan(prefix):
            batch.append(k)
            if len(batch) >= _CLEAR_BATCH:
                deleted += await self._delete_many(batch)
                batch = []
        if batch:
            deleted += await self._delete_many(batch)
        return deleted

    async def _scan_ttl(self, prefix: str) -> AsyncIterator[tuple[str, float | None]]:
        """Yield ``(key, seconds left or None)`` for live keys starting with ``prefix``.

        Tools that copy or list keys with their expiries (the CLI) use this. The default asks
        ``_ttl`` key by key; a backend whose listing reports expiries (Cloudflare KV) overrides
        it to save a request per key. A backend without TTLs yields ``None`` for every key.
        """
        async for key in self._scan(prefix):
            try:
                yield key, await self._ttl(key)
            except KeyNotFoundError:
                continue  # deleted or expired since the scan saw it
            except UnsupportedOperationError:
                yield key, None

    async def _ttl(self, key: str) -> float | None:
        """Seconds left, ``None`` for no expiry; ``raise self._not_found(key)`` if missing."""
        raise UnsupportedOperationError(
            f"The {self.backend_name} backend cannot report TTLs", backend=self.backend_name
        )

    def _lock(self, key: str) -> asyncio.Lock:
        """A per-key lock for the fallbacks below; entries vanish when nobody holds them."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    # The fallbacks below are atomic within one process only (a per-key asyncio lock).
    # A backend shared by several processes overrides them with native atomic operations.

    async def _add(self, key: str, data: bytes, ttl: float | None) -> bool:
        async with self._lock(key):
            if await self._has(key):
                return False
            await self._set(key, data, ttl)
            return True

    async def _incr(self, key: str, amount: int, ttl: float | None) -> int:
        async with self._lock(key):
            data = await self._get(key)
            if data is None:
                value = amount
            else:
                value = self._decode_int(key, data) + amount
                # An existing counter keeps its expiry (if the backend can tell us what it is).
                with contextlib.suppress(KeyNotFoundError, UnsupportedOperationError):
                    ttl = await self._ttl(key)
            await self._set(key, self._encode(value), ttl)
            return value

    async def _update(
        self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None
    ) -> None:
        async with self._lock(key):
            await self._set(key, fn(await self._get(key)), ttl)

    async def _close(self) -> None:
        return None

    # ------------------------------------------------------------------ helpers for hooks

    def _decode_int(self, key: str, data: Any) -> int:
        """Decode a counter, with the error ``incr`` documents for non-integers."""
        try:
            value = self._decode(data, int)
            if value.__class__ is not int:  # a codec without validation (reference mode)
                raise TypeError(f"expected int, got {value.__class__.__qualname__}")
        except Exception as e:
            raise DecodeError(
                f"Cannot increment key {key!r}: the stored value is not an integer",
                key=key,
                backend=self.backend_name,
            ) from e
        return value

    def _fresh_default(self, key: object, default: Any) -> Any:
        """A private copy of ``update``'s default, so ``fn`` never mutates the caller's object."""
        return self._decode_value(key, self._encode_value(key, default))

    def _not_found(self, key: str) -> KeyNotFoundError:
        """The error a hook raises for a missing key."""
        return KeyNotFoundError(f"Key {key!r} does not exist", key=key, backend=self.backend_name)


def _name(key: object) -> str:
    return key.name if key.__class__ is Key else str(key)


def _key_list(keys: Iterable[Any], method: str) -> list[Any]:
    if isinstance(keys, (str, Key)):
        raise InvalidKeyError(f"{method}() takes an iterable of keys, not a single key: {keys!r}")
    return list(keys)
