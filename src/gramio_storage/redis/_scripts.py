"""The Lua scripts the Redis backend runs, and the packing of the bulk copy scripts' arguments."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

__all__ = ["BULK_READ", "BULK_WRITE", "CAS", "INCR_TTL", "Script", "pack_entries", "pack_keys"]


class Script:
    """A Lua script run by ``EVALSHA``, falling back to ``EVAL`` (which caches it) on NOSCRIPT."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def __repr__(self) -> str:
        return f"Script({self.sha[:8]})"


# Compare-and-set for update() and the generic incr(): ARGV = expect_present ("1"/"0"),
# expected value, new value, expiry ("" none, "keep" keep the current one, else milliseconds).
# fn runs in the client, so this is what makes update() safe across processes.
CAS = Script(
    """
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if cur ~= ARGV[2] then return 0 end
elseif cur then
  return 0
end
if ARGV[4] == '' then
  redis.call('SET', KEYS[1], ARGV[3])
elseif ARGV[4] == 'keep' then
  redis.call('SET', KEYS[1], ARGV[3], 'KEEPTTL')
else
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return 1
"""
)

# incr() with a TTL: create the counter with its expiry only if absent, then count. INCRBY keeps
# an existing key's expiry, which is the documented incr() behaviour.
INCR_TTL = Script(
    """
redis.call('SET', KEYS[1], '0', 'NX', 'PX', ARGV[2])
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""
)

# get_entries / set_entries on a single server: one script call per batch, its keys and values
# packed into one length-prefixed argument. redis-py packs every command argument in Python
# (several us each), so one SET per key, or three script arguments per key, spends more time in
# the client than the server spends on the batch; one blob is one memcpy, and the script walks it
# with struct.unpack (built into Redis's Lua). Measured on 500-key batches: about 5x less client
# time than a pipeline. Keys are not declared as KEYS, which only a cluster enforces; a cluster
# takes a pipeline instead. A key holding another type (a hash: not ours) reads as missing, as
# MGET reports it.
BULK_READ = Script(
    """
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
)
BULK_WRITE = Script(
    """
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
)

_KEY = struct.Struct("<I").pack
_ITEM = struct.Struct("<IId").pack


def pack_keys(keys: Sequence[str]) -> bytes:
    """``BULK_READ``'s argument: each key as a 4-byte length and its UTF-8 bytes."""
    parts: list[bytes] = []
    for key in keys:
        k = key.encode()
        parts += (_KEY(len(k)), k)
    return b"".join(parts)


def pack_entries(entries: Sequence[tuple[str, bytes, int]]) -> bytes:
    """``BULK_WRITE``'s argument: ``(key, data, milliseconds or 0)`` per entry."""
    parts: list[bytes] = []
    for key, data, ms in entries:
        k = key.encode()
        parts += (_ITEM(len(k), len(data), ms), k, data)
    return b"".join(parts)
