"""The storage facade: the full API users and plugins call, over one :class:`Backend`.

:class:`BaseStorage` holds its backend by composition. It resolves typed keys, applies the view's
prefix, validates keys and TTLs, runs the codec, enforces value limits and the closed state, and
only then calls the backend with full ``str`` keys, ``bytes`` and ``float`` seconds. A view made
by :meth:`BaseStorage.with_prefix` is another facade over the same backend.

Hot path: one measured fast path lives here, not in backends: for a ``nonblocking`` backend
(memory) ``get``/``set`` call the backend's synchronous ``get_nowait``/``set_nowait`` instead of
awaiting a coroutine (``bench/bench_memory.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Self, TypeVar, overload

from ._atomic import AtomicOps
from ._backend import Backend, Capabilities
from ._codecs import JSON, Codec
from ._errors import (
    ConfigurationError,
    DecodeError,
    EncodeError,
    InvalidKeyError,
    StorageClosedError,
    ValueTooLargeError,
)
from ._keys import Key
from ._protocol import TTL
from ._redact import mask_url
from ._validate import check_prefix, resolve_key, ttl_seconds

__all__ = ["BaseStorage"]

T = TypeVar("T")
D = TypeVar("D")


class _Lifecycle:
    """Closed state shared by a storage and all its views."""

    __slots__ = ("closed", "closing")

    def __init__(self) -> None:
        self.closed = False
        self.closing: asyncio.Future[None] | None = None


class BaseStorage(AtomicOps):
    """A storage: typed keys, codecs, TTLs, bulk and atomic operations over a :class:`Backend`.

    Every built-in storage (``MemoryStorage``, ``SQLiteStorage``...) is one, and so is any
    ``BaseStorage(MyBackend())``. Plugins that need more than the four GramIO methods type their
    option as ``BaseStorage``. Every method accepts a ``str`` key (plain JSON values) or a
    :class:`~gramio_storage.Key` (values decoded into the key's type).

    Args:
        backend: Where bytes live. See ``docs/writing-adapters.md``.
        codec: How values become bytes. Defaults to compact JSON, readable by GramIO.
        ttl: Default time to live for writes that do not pass one. ``None``: no expiry.
        max_value_bytes: Refuse encoded values larger than this (``ValueTooLargeError``, before
            any I/O); the backend's own limit applies too.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        codec: Codec = JSON,
        ttl: TTL | None = None,
        max_value_bytes: int | None = None,
    ) -> None:
        if not isinstance(backend, Backend):
            raise ConfigurationError(
                f"backend must be a gramio_storage.Backend, got {backend.__class__.__qualname__}"
            )
        if not (hasattr(codec, "encode") and hasattr(codec, "decode")):
            raise ConfigurationError(
                f"codec must have encode() and decode() methods, got {codec!r}"
            )
        caps = backend.capabilities
        self._backend = backend
        self._caps = caps
        self._name = caps.name
        self._prefix = ""
        self._view = False
        self._life = _Lifecycle()
        self._codec = codec
        self._encode: Callable[[Any], Any] = codec.encode
        self._decode = codec.decode
        self._decode_any: Callable[[Any], Any] = getattr(codec, "_any", None) or codec.decode
        # Counters go to the backend's native incr only when the codec writes an int as its
        # ASCII digits (JSON); other codecs count through update().
        self._plain_ints = bool(getattr(codec, "plain_integers", False))
        self._references = bool(getattr(codec, "stores_references", False))
        # How a reference codec stores None (backends use None for "missing").
        self._null = getattr(codec, "null", None)
        self._nowait = caps.nonblocking
        self._max_key = caps.max_key_bytes
        self._default_ttl = None if ttl is None else ttl_seconds(ttl, caps)
        if max_value_bytes is not None and (
            max_value_bytes.__class__ is not int or max_value_bytes < 1
        ):
            raise ConfigurationError(
                f"max_value_bytes must be a positive int, got {max_value_bytes!r}"
            )
        limits = [n for n in (max_value_bytes, caps.max_value_bytes) if n is not None]
        self._max_value = min(limits) if limits else None

    # ------------------------------------------------------------------ conversions

    def _key(self, key: object) -> str:
        if self._life.closed:
            raise self._closed()
        if key.__class__ is str and key:
            full: str = self._prefix + key
            if full.isascii() and (self._max_key is None or len(full) <= self._max_key):
                return full
        return resolve_key(key, self._prefix, self._caps)

    def _ttl(self, ttl: TTL | None) -> float | None:
        return self._default_ttl if ttl is None else ttl_seconds(ttl, self._caps)

    def _encode_value(self, key: object, value: Any) -> Any:
        try:
            data = self._encode(value)
        except Exception as e:
            raise EncodeError(
                f"Cannot encode the value for key {_name(key)!r} "
                f"({value.__class__.__qualname__}): {e}",
                key=_name(key),
                backend=self._name,
            ) from e
        if self._max_value is not None and not self._references and len(data) > self._max_value:
            raise ValueTooLargeError(
                f"The value for key {_name(key)!r} is {len(data)} bytes encoded; the limit is "
                f"{self._max_value} bytes",
                key=_name(key),
                backend=self._name,
            )
        return data

    def _decode_value(self, key: object, data: Any) -> Any:
        if key.__class__ is str:
            try:
                return self._decode_any(data)
            except Exception:  # noqa: S110 - the typed path below raises the DecodeError
                pass
        tp = key.type if key.__class__ is Key else Any
        try:
            return self._decode(data, tp)
        except Exception as e:
            expected = "" if tp is Any else f" as {getattr(tp, '__qualname__', tp)}"
            raise DecodeError(
                f"Cannot decode the value stored under key {_name(key)!r}{expected}: {e}",
                key=_name(key),
                backend=self._name,
            ) from e

    def _closed(self) -> StorageClosedError:
        return StorageClosedError(
            f"{type(self).__name__} was used after close()", backend=self._name
        )

    def _check_open(self) -> None:
        if self._life.closed:
            raise self._closed()

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
        # The measured fast path (bench/bench_memory.py): a plain ASCII str key skips the
        # general resolution, and a nonblocking backend is called without a coroutine.
        if key.__class__ is str and key and not self._life.closed:
            full = self._prefix + key
            if not full.isascii() or (self._max_key is not None and len(full) > self._max_key):
                full = self._key(key)
            if self._nowait:
                fast = self._backend.fast_map
                data = fast.get(full) if fast is not None else self._backend.get_nowait(full)
            else:
                data = await self._backend.get(full)
            if data is None:
                return default
            if self._references:
                return None if data is self._null else data
            try:
                return self._decode_any(data)
            except Exception:  # noqa: S110 - _decode_value below raises the DecodeError
                pass
            return self._decode_value(key, data)
        full = self._key(key)
        data = self._backend.get_nowait(full) if self._nowait else await self._backend.get(full)
        if data is None:
            return default
        return self._decode_value(key, data)

    async def has(self, key: str | Key[Any]) -> bool:
        """Return whether ``key`` holds a value; a stored ``None``/``0``/``""`` counts."""
        return await self._backend.has(self._key(key))

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
            EncodeError: The codec cannot encode ``value`` (NaN included); nothing was written.
            InvalidTTLError: ``ttl`` is not a positive finite duration within the backend's
                limits; nothing was written.
            ValueTooLargeError: The encoded value is over the limit; nothing was written.
        """
        if key.__class__ is str and key and ttl is None and not self._life.closed:
            # The measured fast path, as in get().
            full = self._prefix + key
            if full.isascii() and (self._max_key is None or len(full) <= self._max_key):
                try:
                    data = self._encode(value)
                except Exception:
                    data = self._encode_value(key, value)  # raises the EncodeError
                if self._max_value is not None and len(data) > self._max_value:
                    data = self._encode_value(key, value)  # raises ValueTooLargeError
                if self._nowait:
                    fast = self._backend.fast_map
                    if fast is not None and self._default_ttl is None:
                        fast[full] = data
                    else:
                        self._backend.set_nowait(full, data, self._default_ttl)
                else:
                    await self._backend.set(full, data, self._default_ttl)
                return
        full = self._key(key)
        seconds = self._default_ttl if ttl is None else ttl_seconds(ttl, self._caps)
        data = self._encode_value(key, value)
        if self._nowait:
            self._backend.set_nowait(full, data, seconds)
        else:
            await self._backend.set(full, data, seconds)

    async def delete(self, key: str | Key[Any]) -> bool:
        """Remove ``key``. Return True if it existed."""
        return await self._backend.delete(self._key(key))

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
        full = [self._key(k) for k in wanted]
        self._check_open()
        if not full:
            return {}
        found = await self._backend.get_many(full)
        return {
            k: self._decode_value(k, data)
            for k, data in zip(wanted, found, strict=True)
            if data is not None
        }

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

        Every key and value is checked and encoded before anything is written, so one bad
        entry writes nothing.
        """
        self._check_open()
        seconds = self._ttl(ttl)
        encoded = [(self._key(k), self._encode_value(k, v)) for k, v in items.items()]
        if encoded:
            await self._backend.set_many(encoded, seconds)

    async def delete_many(self, keys: Iterable[str | Key[Any]]) -> int:
        """Remove several keys. Return how many of them existed."""
        full = [self._key(k) for k in _key_list(keys, "delete_many")]
        self._check_open()
        return await self._backend.delete_many(full) if full else 0

    async def keys(self, prefix: str = "") -> AsyncIterator[str]:
        """Iterate over the keys of this storage (or view) that start with ``prefix``.

        Keys come back relative to the view's prefix. Iteration is incremental where the
        backend supports cursors; glob or LIKE characters in ``prefix`` match only themselves.
        """
        self._check_open()
        full = check_prefix(prefix, self._prefix, self._caps)
        cut = len(self._prefix)
        async for key in self._backend.scan(full):
            yield key[cut:]

    async def clear(self, prefix: str = "") -> int:
        """Delete every key of this storage (or view) starting with ``prefix``; return the count.

        Only this storage's own keys are touched: a view clears its prefix, never the database.
        """
        self._check_open()
        return await self._backend.clear(check_prefix(prefix, self._prefix, self._caps))

    async def ttl(self, key: str | Key[Any]) -> float | None:
        """Return the seconds ``key`` has left, or ``None`` if it never expires.

        Raises:
            KeyNotFoundError: The key does not exist (or already expired).
            UnsupportedOperationError: The backend stores no expiries.
        """
        return await self._backend.ttl(self._key(key))

    # ------------------------------------------------------------------ views and lifecycle

    def with_prefix(self, prefix: str) -> Self:
        """Return a view whose keys all live under ``prefix``, sharing this storage's backend.

        Views nest (``s.with_prefix("a:").with_prefix("b:")`` uses ``a:b:``), and a view's
        :meth:`clear` and :meth:`keys` see only its own keys. Closing a view does nothing; close
        the storage it came from (which closes its views too).
        """
        full = check_prefix(prefix, self._prefix, self._caps)
        view = copy.copy(self)
        view._prefix = full
        view._view = True
        return view

    @property
    def backend(self) -> Backend:
        """The backend this storage (and each of its views) stores bytes in."""
        return self._backend

    @property
    def capabilities(self) -> Capabilities:
        """What the backend can do (``atomic``, ``ttl``, ``min_ttl``, ``max_key_bytes``...)."""
        return self._caps

    @property
    def backend_name(self) -> str:
        """The backend's short name (``"memory"``, ``"redis"``...), as in error messages."""
        return self._name

    @property
    def prefix(self) -> str:
        """The prefix this view adds to every key (``""`` for a root storage)."""
        return self._prefix

    @property
    def codec(self) -> Codec:
        """The codec values are encoded with."""
        return self._codec

    @property
    def max_value_bytes(self) -> int | None:
        """The largest encoded value accepted (this storage's or the backend's limit)."""
        return self._max_value

    @property
    def default_ttl(self) -> float | None:
        """The TTL, in seconds, applied to writes that do not pass one."""
        return self._default_ttl

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called on this storage (or the storage of this view)."""
        return self._life.closed

    async def close(self) -> None:
        """Release what this storage created (connections, files, timers).

        Idempotent. Every later call raises :class:`~gramio_storage.StorageClosedError`. A
        cancelled ``close()`` still finishes closing before the cancellation propagates.
        Clients or pools passed in by the caller are left open. Closing a view is a no-op.
        """
        if self._view:
            return
        life = self._life
        life.closed = True
        if life.closing is None:
            life.closing = asyncio.ensure_future(self._backend.close())
        task = life.closing
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                with contextlib.suppress(BaseException):
                    await task  # finish closing; a second cancellation leaves it running
            raise

    async def __aenter__(self) -> Self:
        self._check_open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        parts = []
        for name, value in self._backend.describe().items():
            shown = mask_url(value) if isinstance(value, str) and "://" in value else value
            parts.append(f"{name}={shown!r}")
        if self._codec is not JSON:
            parts.append(f"codec={self._codec!r}")
        if self._prefix:
            parts.append(f"prefix={self._prefix!r}")
        if self._default_ttl is not None:
            parts.append(f"ttl={self._default_ttl:g}")
        if self._life.closed:
            parts.append("closed")
        return f"{self.__class__.__name__}({', '.join(parts)})"


def _name(key: object) -> str:
    return key.name if key.__class__ is Key else str(key)


def _key_list(keys: Iterable[Any], method: str) -> list[Any]:
    if isinstance(keys, (str, Key)):
        raise InvalidKeyError(f"{method}() takes an iterable of keys, not a single key: {keys!r}")
    return list(keys)
