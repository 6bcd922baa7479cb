"""Bulk reads and writes with a TTL per key, where a backend's client can do them natively.

The hook contract moves values in bulk (``_get_many``, ``_set_many``) but TTLs one key at a time
(``_ttl``) or one TTL per call (``_set_many(items, ttl)``). A migration needs both per key, so
:mod:`._raw` falls back to concurrent single-key calls and TTL groups. For Redis, whose storage
exposes its client publicly (``RedisStorage.client``), one pipeline does a whole batch instead:
``GET`` + ``PTTL`` per key to read, ``SET ... PX ms [NX]`` per key to write, so every key keeps
its exact TTL and ``--no-overwrite`` is atomic (``NX``). Driver errors are translated by the
storage itself (its ``_fail``), so they surface as the library's usual errors.

A backend is recognised by its module, so importing this file never imports a driver.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .._storage import BaseStorage

__all__ = ["GONE", "BulkIO", "bulk_io"]

GONE = -1.0  # a TTL read that found no key: it expired or was deleted after the value read


class BulkIO(Protocol):
    """Per-key-TTL bulk operations on full keys."""

    async def read(self, keys: Sequence[str]) -> list[tuple[bytes | None, float | None]]:
        """``(value, ttl)`` per key: value None if missing, ttl None for no expiry or GONE."""
        ...

    async def write(self, items: Sequence[tuple[str, bytes, float | None]], nx: bool) -> list[bool]:
        """Store each ``(key, value, ttl)``; with ``nx`` only absent keys. Say which were."""
        ...


def bulk_io(root: BaseStorage) -> BulkIO | None:
    """The native bulk path for ``root``'s backend, or None to use the generic one."""
    if type(root).__module__ == "gramio_storage.redis" and hasattr(root, "client"):
        return _RedisBulk(root)
    return None


class _RedisBulk:
    def __init__(self, root: Any) -> None:
        from redis import exceptions  # present: the storage imported it

        self._root = root
        # Raw bytes even from a client made with decode_responses=True (the storage's setting).
        self._raw: dict[str, Any] = getattr(root, "_raw", {})
        self._errors = (exceptions.RedisError, exceptions.RedisClusterException, OSError)

    def _fail(self, e: BaseException, op: str, key: str) -> Exception:
        fail = getattr(self._root, "_fail", None)
        if fail is not None:
            return fail(e, op, key)  # type: ignore[no-any-return]
        from .._errors import BackendError

        return BackendError(f"Redis {op} failed: {e.__class__.__name__}: {e}", backend="redis")

    async def read(self, keys: Sequence[str]) -> list[tuple[bytes | None, float | None]]:
        pipe = self._root.client.pipeline(transaction=False)
        for key in keys:
            pipe.execute_command("GET", key, **self._raw)
            pipe.execute_command("PTTL", key)
        try:
            replies = await pipe.execute()
        except self._errors as e:
            raise self._fail(e, "export/copy read", keys[0]) from e
        out: list[tuple[bytes | None, float | None]] = []
        for i in range(0, len(replies), 2):
            value, ms = replies[i], replies[i + 1]
            ttl = None if ms == -1 else GONE if ms == -2 else ms / 1000
            out.append((value, ttl))
        return out

    async def write(self, items: Sequence[tuple[str, bytes, float | None]], nx: bool) -> list[bool]:
        if not items:
            return []
        pipe = self._root.client.pipeline(transaction=False)
        flag = ("NX",) if nx else ()
        for key, data, ttl in items:
            if ttl is None:
                pipe.execute_command("SET", key, data, *flag)
            else:
                pipe.execute_command("SET", key, data, "PX", max(1, round(ttl * 1000)), *flag)
        try:
            replies = await pipe.execute()
        except self._errors as e:
            raise self._fail(e, "import/copy write", items[0][0]) from e
        return [bool(r) for r in replies]
