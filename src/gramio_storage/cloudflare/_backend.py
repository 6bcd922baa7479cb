"""CloudflareKVBackend: the Backend contract over a small KV client (REST or binding).

As httpx's transports sit under one client, two KV clients sit under one backend:
:class:`~._rest.RestClient` (the Cloudflare API, over httpx) and
:class:`~._binding.BindingClient` (a Workers namespace binding). Both implement
:class:`KVClient`, the handful of operations KV itself offers; what KV lacks (``delete``
saying whether the key existed, ``ttl`` of one key, counting in ``delete_many``) is built here,
once, on top of them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import NoReturn, Protocol

from .._backend import Backend, Capabilities, Entry
from .._backend_util import chunks
from .._errors import InvalidKeyError, UnsupportedOperationError
from ._errors import NAME

__all__ = ["CAPABILITIES", "CloudflareKVBackend", "KVClient"]

# Limits of Workers KV (https://developers.cloudflare.com/kv/platform/limits/).
MAX_KEY_BYTES = 512
MAX_VALUE_BYTES = 25 * 1024 * 1024
MIN_TTL = 60
# KV documents no maximum; ten years is accepted (tested on Cloudflare's local KV) and keeps
# the expiration far inside any integer range. An absurd TTL is InvalidTTLError in the core.
MAX_TTL = 10 * 365 * 86_400
BULK_GET_KEYS = 100
LIST_LIMIT = 1000

CAPABILITIES = Capabilities(
    name=NAME,
    atomic=False,
    atomic_ops=False,
    ttl=True,
    min_ttl=float(MIN_TTL),
    max_ttl=float(MAX_TTL),
    max_key_bytes=MAX_KEY_BYTES,
    max_value_bytes=MAX_VALUE_BYTES,
    lists_ttls=True,
    persistent=True,
    shared=True,
    eventually_consistent=True,
)

_DOTS = frozenset((".", ".."))
Page = list[tuple[str, float | None]]  # (name, expiration in epoch seconds or None)


class KVClient(Protocol):
    """What a Workers KV client offers: the operations KV itself has, bytes in and out.

    Keys arrive validated (see :class:`CloudflareKVBackend`), TTLs as whole seconds (>= 60).
    """

    @property
    def bulk_reads(self) -> bool:
        """Whether :meth:`get_bulk` may be used (text values only)."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The value, or ``None`` if missing."""
        ...

    async def has(self, key: str) -> bool:
        """Whether the key exists (without downloading the value where possible)."""
        ...

    async def put(self, key: str, data: bytes, ttl: int | None) -> None:
        """Write one value, expiring after ``ttl`` seconds (``None``: never)."""
        ...

    async def delete(self, key: str) -> None:
        """Delete one key (KV does not say whether it existed)."""
        ...

    async def get_bulk(self, keys: Sequence[str]) -> dict[str, bytes | None]:
        """Text values of up to 100 keys at once."""
        ...

    async def put_many(self, items: Sequence[tuple[str, bytes]], ttl: int | None) -> None:
        """Write any number of values with one TTL."""
        ...

    async def put_entries(self, items: Sequence[tuple[str, bytes, int | None]]) -> None:
        """Write any number of ``(key, value, ttl)``, each with its own TTL, in few requests."""
        ...

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Delete any number of keys."""
        ...

    def pages(self, prefix: str, limit: int) -> AsyncIterator[Page]:
        """List keys starting with ``prefix``, at most ``limit`` per page, in key order."""
        ...

    async def close(self) -> None:
        """Release what the client created."""
        ...

    def describe(self) -> dict[str, object]:
        """What ``repr`` shows (never credentials)."""
        ...


class CloudflareKVBackend(Backend):
    """A Workers KV namespace, through a :class:`KVClient`.

    Args:
        client: A :class:`~._rest.RestClient` or a :class:`~._binding.BindingClient`.
        text_values: Values are UTF-8 text (the JSON codec), so bulk reads may be used; bulk
            reads return text, never raw bytes, so binary values are read key by key.
    """

    capabilities = CAPABILITIES

    def __init__(self, client: KVClient, *, text_values: bool = True) -> None:
        self._client = client
        self._bulk_reads = text_values and client.bulk_reads

    @property
    def client(self) -> KVClient:
        """The KV client requests go through."""
        return self._client

    def describe(self) -> dict[str, object]:
        return self._client.describe()

    # ------------------------------------------------------------------ the contract

    async def get(self, key: str) -> bytes | None:
        _check_key(key)
        return await self._client.get(key)

    async def set(self, key: str, data: bytes, ttl: float | None) -> None:
        _check_key(key)
        await self._client.put(key, data, _seconds(ttl))

    async def delete(self, key: str) -> bool:
        _check_key(key)
        # KV's delete does not say whether the key existed: ask first (one metadata read).
        existed = await self._client.has(key)
        await self._client.delete(key)
        return existed

    async def scan(self, prefix: str) -> AsyncIterator[str]:
        async for page in self._client.pages(prefix, LIST_LIMIT):
            for name, _ in page:
                yield name

    async def has(self, key: str) -> bool:
        _check_key(key)
        return await self._client.has(key)

    async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | None]:
        for key in keys:
            _check_key(key)
        if not self._bulk_reads:
            return await asyncio.gather(*(self._client.get(k) for k in keys))
        found = await self._read(list(dict.fromkeys(keys)))
        return [found[k] for k in keys]

    async def _read(self, unique: list[str]) -> dict[str, bytes | None]:
        """Bulk reads of 100 keys each, all at once."""
        found: dict[str, bytes | None] = {}
        parts = chunks(unique, BULK_GET_KEYS)
        for part in await asyncio.gather(*(self._client.get_bulk(p) for p in parts)):
            found.update(part)
        return found

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        for key, _ in items:
            _check_key(key)
        await self._client.put_many(items, _seconds(ttl))

    async def set_entries(self, entries: Sequence[Entry], *, overwrite: bool = True) -> list[bool]:
        if not overwrite:
            return await super().set_entries(entries, overwrite=False)  # add(): unsupported
        for key, _, _ in entries:
            _check_key(key)
        # One bulk request carries every TTL, so they all count from the same moment (separate
        # requests per TTL group would each start their TTLs late by the writes before them).
        await self._client.put_entries([(k, d, _seconds(t)) for k, d, t in entries])
        return [True] * len(entries)

    async def delete_many(self, keys: Sequence[str]) -> int:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return 0
        for key in unique:
            _check_key(key)
        # KV's bulk delete does not report which keys existed: count them with reads first
        # (bulk reads whatever the codec: only existence matters here).
        if self._client.bulk_reads:
            found: Sequence[bytes | None] = list((await self._read(unique)).values())
        else:
            found = await asyncio.gather(*(self._client.get(k) for k in unique))
        existing = sum(v is not None for v in found)
        await self._client.delete_many(unique)
        return existing

    async def clear(self, prefix: str) -> int:
        deleted = 0
        async for page in self._client.pages(prefix, LIST_LIMIT):
            await self._client.delete_many([name for name, _ in page])
            deleted += len(page)
        return deleted

    async def ttl(self, key: str) -> float | None:
        _check_key(key)
        # A listing reports expirations without sending values; the key itself sorts first
        # among the keys it prefixes, so the first page of 10 holds it if it exists.
        async for page in self._client.pages(key, 10):
            name, expiration = page[0]
            if name == key:
                if expiration is None:
                    return None
                left = float(expiration) - time.time()
                if left > 0:
                    return left
            break  # past its deadline but not yet purged: as good as gone
        raise self.not_found(key)

    async def scan_ttl(self, prefix: str) -> AsyncIterator[tuple[str, float | None]]:
        # The listing carries each key's expiration: no request per key.
        async for page in self._client.pages(prefix, LIST_LIMIT):
            now = time.time()
            for name, expiration in page:
                if expiration is None:
                    yield name, None
                elif (left := float(expiration) - now) > 0:
                    yield name, left

    # KV has no compare-and-set, transactions or counters: refuse instead of racing.

    async def add(self, key: str, data: bytes, ttl: float | None) -> bool:
        _unsupported("add", key)

    async def incr(self, key: str, amount: int, ttl: float | None) -> int:
        _unsupported("incr", key)

    async def update(
        self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None
    ) -> None:
        _unsupported("update", key)

    async def close(self) -> None:
        await self._client.close()


def _check_key(key: str) -> None:
    """KV's one rule the core cannot know: ``.`` and ``..`` are not keys (length is checked)."""
    if key in _DOTS:
        raise InvalidKeyError(
            f"Invalid key {key!r}: '.' and '..' are not allowed as Cloudflare KV keys",
            key=key,
            backend=NAME,
        )


def _seconds(ttl: float | None) -> int | None:
    # KV counts whole seconds; rounding down keeps ttl() <= what was asked.
    return None if ttl is None else int(ttl)


def _unsupported(operation: str, key: str) -> NoReturn:
    raise UnsupportedOperationError(
        f"The cloudflare backend cannot {operation}() key {key!r}: Workers KV has no atomic "
        "operations (no compare-and-set, counters or transactions, and writes take up to 60 s "
        "to reach every location). Use get()/set() where a lost update is acceptable, or a "
        "Durable Object, D1, Redis or PostgreSQL for atomic ones.",
        key=key,
        backend=NAME,
    )
