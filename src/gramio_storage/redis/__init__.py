"""Redis / Valkey storage, on a single server or a Redis Cluster, through redis-py's asyncio client.

Values are stored as plain strings under the bare key (a view's prefix included), expiry is set
by the server (``SET ... PX``), so a GramIO bot using ``@gramio/storage-redis`` reads and writes
the same keys. On a single server, commands issued by concurrent tasks are pipelined
automatically: sent together in one write on one connection, their replies matched in order.
Every operation maps to native commands:

==============  =================================================================================
operation       commands
==============  =================================================================================
get / set       ``GET`` / ``SET [PX ms]``
has             ``EXISTS`` (no value transfer)
delete          ``UNLINK``
get_many        ``MGET`` (one per hash slot on a cluster, pipelined per node)
set_many        ``MSET``, or one ``SET PX`` per key, pipelined, when a TTL is given
delete_many     ``UNLINK k1 k2 ...`` (one per hash slot on a cluster)
keys / clear    ``SCAN MATCH <escaped prefix>*`` on every master, ``UNLINK`` per page
ttl             ``PTTL``
add             ``SET NX [PX ms]``
incr            ``INCRBY`` (a Lua ``SET NX PX`` + ``INCRBY`` when the counter gets a TTL)
update          ``GET``, then a Lua compare-and-set; retried when another writer got in first
get_entries     one Lua script per batch (``GET`` + ``PTTL`` per key); a pipeline on a cluster
set_entries     one Lua script per batch (``SET PX [NX]`` per key); a pipeline on a cluster
==============  =================================================================================
"""

from __future__ import annotations

try:
    import redis.asyncio  # noqa: F401 - the driver; absolute, so never this package itself
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "gramio_storage.redis needs redis-py: pip install 'gramio-storage[redis]'",
        name=e.name or "redis",
    ) from e

from ._backend import MAX_TTL, RedisBackend
from ._backend import _glob_escape as _glob_escape  # for the tests
from ._storage import RedisStorage, redis_storage

__all__ = ["MAX_TTL", "RedisBackend", "RedisStorage", "redis_storage"]
