"""Redis server-assisted invalidation for the near cache: ``CLIENT TRACKING ... BCAST``.

One connection of its own (never the storage's pool): it asks for its client id, turns tracking
on in broadcasting mode for the view's prefix with notifications redirected to itself, and
subscribes to ``__redis__:invalidate`` (RESP2). From then on the server pushes the name of every
key under the prefix that any client writes, deletes or lets expire, and ``None`` when the
database is flushed. While the connection is down the cache holds nothing and serves nothing:
invalidations may have been missed, so the cache empties and reads go to Redis until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from .._backend_util import LoopGuard, backoff_delays
from .._errors import ConfigurationError

__all__ = ["RedisInvalidation", "redis_tracker_for"]

log = logging.getLogger("gramio_storage.wrappers.cache")

CHANNEL = b"__redis__:invalidate"


class RedisInvalidation:
    """Listens for invalidations of keys under ``prefix`` and reports them.

    Args:
        connect: Makes a new, unconnected redis-py ``Connection`` (RESP2, no read timeout).
        prefix: The key prefix to track (``""``: every key).
        on_keys: Called with the invalidated full keys (``str``), or ``None`` for "everything"
            (a flush, or the connection was lost or made again).
        on_state: Called with True once notifications flow, False when they stop.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        prefix: str,
        on_keys: Callable[[list[str] | None], None],
        on_state: Callable[[bool], None],
    ) -> None:
        self._connect = connect
        self.prefix = prefix
        self._on_keys = on_keys
        self._on_state = on_state
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None
        self._guard = LoopGuard()
        self._closed = False
        self.active = False

    def ensure_started(self) -> None:
        """Start listening on the running loop (again, after a change of event loop)."""
        if self._closed:
            return
        if self._guard.changed():
            # A second asyncio.run(): the old connection and task belong to a dead loop.
            self._task, self._conn = None, None
            self._set_active(False)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _set_active(self, active: bool) -> None:
        if active != self.active:
            self.active = active
            self._on_state(active)
        if not active:
            self._on_keys(None)

    async def _run(self) -> None:
        delays = None
        while not self._closed:
            conn = self._connect()
            self._conn = conn
            try:
                await conn.connect()
                await conn.send_command("CLIENT", "ID")
                client_id = await conn.read_response()
                tracking = ["CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST"]
                if self.prefix:
                    tracking += ["PREFIX", self.prefix]
                await conn.send_command(*tracking)
                await conn.read_response()
                await conn.send_command("SUBSCRIBE", CHANNEL)
                await conn.read_response()
                self._on_keys(None)  # anything cached before this point may be stale
                self._set_active(True)
                delays = None
                while True:
                    self._dispatch(await conn.read_response())
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not self._closed:
                    log.warning("near cache invalidation connection lost: %s", e)
            finally:
                self._set_active(False)
                with contextlib.suppress(Exception):
                    await conn.disconnect()
                self._conn = None
            if delays is None:
                delays = backoff_delays(1_000_000, base=0.05, cap=1.0)
            await asyncio.sleep(next(delays))

    def _dispatch(self, message: Any) -> None:
        if not isinstance(message, list) or len(message) < 3:
            return
        kind, channel, payload = message[0], message[1], message[2]
        if _text(kind) != "message" or _text(channel) != CHANNEL.decode():
            return
        if payload is None:
            self._on_keys(None)
        elif isinstance(payload, list):
            self._on_keys([_text(k) for k in payload])

    async def close(self) -> None:
        """Stop listening and drop the connection."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not self._guard.changed() and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self.active = False


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


def redis_tracker_for(
    storage: Any,
    prefix: str,
    on_keys: Callable[[list[str] | None], None],
    on_state: Callable[[bool], None],
) -> RedisInvalidation:
    """A :class:`RedisInvalidation` on a connection like ``storage.client``'s (public surface).

    Raises:
        ConfigurationError: The client is a Redis Cluster (tracking is per node) or is not a
            redis-py asyncio client.
    """
    client = getattr(storage, "client", None)
    if client is None or type(client).__name__ == "RedisCluster":
        raise ConfigurationError(
            "server-assisted invalidation needs a single-node redis.asyncio.Redis client "
            "(storage.client); pass invalidation=None to rely on the cache ttl alone"
        )
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        raise ConfigurationError("storage.client has no connection_pool to copy settings from")
    kwargs = dict(pool.connection_kwargs)
    # Idle for a long time by design: no read timeout. RESP2: pubsub replies, not push frames.
    kwargs.update(socket_timeout=None, protocol=2, socket_keepalive=True)
    connection_class = pool.connection_class

    def connect() -> Any:
        return connection_class(**kwargs)

    return RedisInvalidation(connect, prefix, on_keys, on_state)
