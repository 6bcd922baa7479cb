"""Bulk reads and writes with a TTL per key, where a backend's client can do them natively.

The hook contract moves values in bulk (``_get_many``, ``_set_many``) but TTLs one key at a time
(``_ttl``) or one TTL per call (``_set_many(items, ttl)``). A migration needs both per key, so
:mod:`._raw` falls back to concurrent single-key calls and TTL groups. For Redis, whose storage
exposes its client publicly (``RedisStorage.client``), one call does a whole batch instead: a
Lua script running ``GET`` + ``PTTL`` per key to read and ``SET ... PX ms [NX]`` per key to
write (a pipeline on a Redis Cluster), so every key keeps its exact TTL and ``--no-overwrite``
is atomic (``NX``). Driver errors are translated by the
storage itself (its ``_fail``), so they surface as the library's usual errors.

A backend is recognised by its module, so importing this file never imports a driver.
"""

from __future__ import annotations

import hashlib
import struct
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


# One script call per batch, its keys and values packed into one length-prefixed argument:
# redis-py packs every command argument in Python (several us each), so a pipeline of one SET
# per key, or a script with three arguments per key, spends more time in the client than the
# server spends on the batch. One blob is one memcpy; the script walks it with struct.unpack
# (built into Redis's Lua). Measured on 500-key batches: about 5x less client time than a
# pipeline. Keys are not declared as KEYS, which only a cluster enforces; a cluster takes the
# pipeline path below. A key holding another type (a hash, a list: not ours) reads as missing,
# as MGET reports it.
_READ = """
local blob = ARGV[1]
local pos, n = 1, 0
local out = {}
while pos <= #blob do
  local klen, p = struct.unpack('<I4', blob, pos)
  local key = string.sub(blob, p, p + klen - 1)
  pos = p + klen
  n = n + 1
  local v = redis.pcall('GET', key)
  if type(v) == 'table' then v = false end
  out[2 * n - 1] = v
  out[2 * n] = redis.call('PTTL', key)
end
return out
"""
_WRITE = """
local nx = ARGV[1] == '1'
local blob = ARGV[2]
local pos, n = 1, 0
local out = {}
while pos <= #blob do
  local klen, vlen, ms, p = struct.unpack('<I4I4d', blob, pos)
  local key = string.sub(blob, p, p + klen - 1)
  local val = string.sub(blob, p + klen, p + klen + vlen - 1)
  pos = p + klen + vlen
  n = n + 1
  local ok
  if ms > 0 and nx then ok = redis.call('SET', key, val, 'PX', ms, 'NX')
  elseif ms > 0 then ok = redis.call('SET', key, val, 'PX', ms)
  elseif nx then ok = redis.call('SET', key, val, 'NX')
  else ok = redis.call('SET', key, val) end
  out[n] = ok and 1 or 0
end
return out
"""
_KEY = struct.Struct("<I").pack
_ITEM = struct.Struct("<IId").pack


class _RedisBulk:
    """Redis: a Lua script per batch on a single server, a pipeline on a cluster.

    A cluster cannot run a script over keys in different hash slots, so there each key is its
    own pipelined command (redis-py routes them to their nodes).
    """

    def __init__(self, root: Any) -> None:
        from redis import exceptions  # present: the storage imported it
        from redis.asyncio import RedisCluster

        self._root = root
        self._client = root.client
        self._cluster = isinstance(self._client, RedisCluster)
        # Raw bytes even from a client made with decode_responses=True (the storage's setting).
        self._raw: dict[str, Any] = getattr(root, "_raw", {})
        # UnicodeError: a key that cannot be sent as UTF-8; the storage reports it as invalid.
        self._errors = (
            exceptions.RedisError,
            exceptions.RedisClusterException,
            OSError,
            UnicodeError,
        )
        self._no_script = exceptions.NoScriptError
        self._sha = {
            script: hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
            for script in (_READ, _WRITE)
        }

    def _fail(self, e: BaseException, op: str, key: str) -> Exception:
        fail = getattr(self._root, "_fail", None)
        if fail is not None:
            return fail(e, op, key)  # type: ignore[no-any-return]
        from .._errors import BackendError

        return BackendError(f"Redis {op} failed: {e.__class__.__name__}: {e}", backend="redis")

    async def _script(self, script: str, *args: Any) -> Any:
        try:
            return await self._client.execute_command(
                "EVALSHA", self._sha[script], 0, *args, **self._raw
            )
        except self._no_script:  # first use on this server: EVAL also caches it
            return await self._client.execute_command("EVAL", script, 0, *args, **self._raw)

    async def read(self, keys: Sequence[str]) -> list[tuple[bytes | None, float | None]]:
        try:
            if self._cluster:
                pipe = self._client.pipeline(transaction=False)
                for key in keys:
                    pipe.execute_command("GET", key, **self._raw)
                    pipe.execute_command("PTTL", key)
                replies = await pipe.execute(raise_on_error=False)
                replies = [None if isinstance(r, Exception) else r for r in replies]
            else:
                parts: list[bytes] = []
                for key in keys:
                    k = key.encode()
                    parts += (_KEY(len(k)), k)
                replies = await self._script(_READ, b"".join(parts))
        except self._errors as e:
            raise self._fail(e, "bulk read", keys[0]) from e
        out: list[tuple[bytes | None, float | None]] = []
        for i in range(0, len(replies), 2):
            value, ms = replies[i], replies[i + 1]
            ttl = None if ms == -1 else GONE if ms is None or ms == -2 else ms / 1000
            out.append((value, ttl))
        return out

    async def write(self, items: Sequence[tuple[str, bytes, float | None]], nx: bool) -> list[bool]:
        if not items:
            return []
        try:
            if self._cluster:
                return await self._pipeline_write(items, nx)
            parts: list[bytes] = []
            for key, data, ttl in items:
                k = key.encode()
                ms = 0 if ttl is None else max(1, round(ttl * 1000))
                parts += (_ITEM(len(k), len(data), ms), k, data)
            replies = await self._script(_WRITE, "1" if nx else "0", b"".join(parts))
        except self._errors as e:
            raise self._fail(e, "bulk write", items[0][0]) from e
        return [bool(r) for r in replies]

    async def _pipeline_write(
        self, items: Sequence[tuple[str, bytes, float | None]], nx: bool
    ) -> list[bool]:
        pipe = self._client.pipeline(transaction=False)
        flag = ("NX",) if nx else ()
        for key, data, ttl in items:
            if ttl is None:
                pipe.execute_command("SET", key, data, *flag)
            else:
                pipe.execute_command("SET", key, data, "PX", max(1, round(ttl * 1000)), *flag)
        return [bool(r) for r in await pipe.execute()]
