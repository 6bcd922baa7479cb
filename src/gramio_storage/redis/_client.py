"""Building redis-py clients from keywords or URLs, and sending commands through them.

:class:`DirectCommands` is the command path through redis-py's own client (its connection pool,
or the per-node pools of a ``RedisCluster``): one pooled connection and one round trip per
command. The single-server default is :class:`~._pipeline.Pipeline` instead; both have the same
small interface (``execute``, ``batch``, ``new_loop``, ``close``), so the backend does not care.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from redis import exceptions as rx
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.client import NEVER_DECODE

from .._errors import ConfigurationError
from .._redact import Redactor

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_TIMEOUT",
    "DirectCommands",
    "clone",
    "connection_limit",
    "describe",
    "make_client",
    "reply_timeout",
    "safe_url",
    "seconds",
]

# Defaults for a bot: a user waits on every storage call, so a dead server must surface as an
# error within a couple of seconds (the bot can answer "try again later"), not hang the update.
DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_TIMEOUT = 5.0
# Commands in flight at once through redis-py's pool (more wait for a free slot).
DEFAULT_MAX_CONNECTIONS = 64


def seconds(value: Any, name: str) -> float | None:
    """Validate a timeout option: positive seconds, or ``None`` for none."""
    if value is None or (isinstance(value, str) and value.lower() in ("", "none")):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be seconds or None, got {value!r}") from None
    if not 0 < number < math.inf:
        raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
    return number


def safe_url(url: str) -> str:
    """``url`` with its user name and password percent-encoded, for redis-py's URL parser.

    Credentials are everything between ``scheme://`` and the **last** ``@`` (the convention
    :func:`~gramio_storage._redact.mask_url` uses), so a password holding an unencoded ``/``,
    ``?``, ``#`` or ``@`` is sent as typed instead of being read as a path, query or host.
    ``%XX`` escapes already in the credentials are kept.
    """
    head, sep, rest = url.partition("://")
    at = rest.rfind("@")
    if not sep or at < 0:
        return url
    user, colon, password = rest[:at].partition(":")
    creds = quote(user, safe="%") + (colon + quote(password, safe="%") if colon else "")
    return f"{head}{sep}{creds}@{rest[at + 1 :]}"


def default_retry(options: dict[str, Any]) -> None:
    """No automatic retries unless the caller configured some.

    A command whose connection failed may still have run on the server, and re-sending an
    ``INCRBY`` or a compare-and-set would apply it twice. After a failure redis-py reconnects
    (a cluster client reloads its slot map) on the next command.
    """
    options.setdefault("retry", Retry(NoBackoff(), 0))


def make_client(cluster: bool, options: dict[str, Any], redact: Redactor) -> Redis | RedisCluster:
    """A redis-py client from keyword options; redis-py's complaints are ConfigurationError."""
    default_retry(options)
    try:
        if cluster:
            if "unix_socket_path" in options:
                raise ConfigurationError("Redis Cluster cannot be reached through a unix socket")
            options.setdefault("host", "localhost")
            options.setdefault("port", 6379)
            return RedisCluster(**options)
        return Redis(**options)
    except (TypeError, ValueError, rx.RedisError, rx.RedisClusterException) as e:
        if isinstance(e, ConfigurationError):
            raise
        raise ConfigurationError(f"Invalid Redis options: {redact(str(e))}") from None


def client_from_url(
    url: str, cluster: bool, options: dict[str, Any], redact: Redactor
) -> Redis | RedisCluster:
    """A redis-py client from a URL (already made safe) and keyword options."""
    default_retry(options)
    factory = RedisCluster.from_url if cluster else Redis.from_url
    try:
        return factory(url, **options)
    except (ValueError, TypeError, rx.RedisError, rx.RedisClusterException) as e:
        raise ConfigurationError(f"Invalid Redis URL or options: {redact(str(e))}") from None


def connection_kwargs(client: Redis | RedisCluster) -> dict[str, Any]:
    """The options the client's connections are made with."""
    if isinstance(client, RedisCluster):
        return dict(client.connection_kwargs)
    return dict(client.connection_pool.connection_kwargs)


def connection_limit(client: Redis | RedisCluster) -> int:
    """The most connections the client opens (per node, on a cluster)."""
    if isinstance(client, RedisCluster):
        return int(client.connection_kwargs.get("max_connections") or DEFAULT_MAX_CONNECTIONS)
    return int(getattr(client.connection_pool, "max_connections", DEFAULT_MAX_CONNECTIONS))


def reply_timeout(client: Redis | RedisCluster) -> float | None:
    """The client's reply timeout in seconds (redis-py's ``socket_timeout``), if any."""
    value = connection_kwargs(client).get("socket_timeout")
    return float(value) if value else None


def describe(client: Redis | RedisCluster) -> str:
    """Where the client connects, for ``repr``: host, port, db or socket; never credentials."""
    if isinstance(client, RedisCluster):
        nodes = list(client.nodes_manager.startup_nodes)
        return ",".join(nodes[:3]) + (",..." if len(nodes) > 3 else "")
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    scheme = "rediss" if pool.connection_class.__name__ == "SSLConnection" else "redis"
    host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
    return f"{scheme}://{host}:{port}/{kwargs.get('db', 0)}"


class Limiter:
    """A semaphore for the hot path: taking a free slot is an attribute update, no coroutine.

    Waiters queue in FIFO order; a released slot is handed straight to the oldest waiter.
    """

    __slots__ = ("free", "size", "waiters")

    def __init__(self, size: int) -> None:
        self.size = self.free = size
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return
        future = asyncio.get_running_loop().create_future()
        self.waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed a slot just as we were cancelled: pass it on
            elif future in self.waiters:
                self.waiters.remove(future)
            raise

    def release(self) -> None:
        waiters = self.waiters
        while waiters:
            future = waiters.popleft()
            if not future.done():
                future.set_result(None)  # the slot moves to the waiter; free stays as is
                return
        self.free += 1


class DirectCommands:
    """Commands through redis-py's client, one pooled connection each.

    redis-py's default pools (and every cluster node) raise "Too many connections" once
    ``max_connections`` commands are in flight; a bot's burst of updates should queue instead, so
    at most that many commands run at once (a command's reply timeout starts once it has a
    connection). A ``BlockingConnectionPool`` queues by itself and needs no limiter.
    """

    def __init__(self, client: Redis | RedisCluster, *, owned: bool) -> None:
        self.client = client
        self.owned = owned
        self.cluster = isinstance(client, RedisCluster)
        # A client made with decode_responses=True would turn values into str; NEVER_DECODE
        # asks redis-py for the raw bytes, per command. Empty (free) for the usual client.
        self.raw: dict[str, Any] = (
            {NEVER_DECODE: True} if client.get_encoder().decode_responses else {}
        )
        pool = getattr(client, "connection_pool", None)
        self.slots = (
            None if isinstance(pool, BlockingConnectionPool) else Limiter(connection_limit(client))
        )

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Send one command and return its reply (raw bytes for values)."""
        slots = self.slots
        if slots is not None:
            if slots.free > 0 and not slots.waiters:
                slots.free -= 1
            else:
                await slots.acquire()
        try:
            if self.cluster:
                # redis-py sends commands issued before its slot map is loaded to a default
                # node; the MOVED replies then make it close connections other commands are
                # using. Loading the map first (a no-op once loaded) avoids that race.
                await self.client.initialize()
            return await self.client.execute_command(*args, **self.raw, **kwargs)
        finally:
            if slots is not None:
                slots.release()

    async def batch(
        self, commands: Sequence[Sequence[Any]], *, raise_on_error: bool = True
    ) -> list[Any]:
        """Send several commands in one redis-py pipeline (one per node on a cluster)."""
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command, **self.raw)
        slots = self.slots
        if slots is not None:
            await slots.acquire()
        try:
            if self.cluster:
                await self.client.initialize()
            return await pipe.execute(raise_on_error=raise_on_error)
        finally:
            if slots is not None:
                slots.release()

    async def close(self, *, final: bool = True) -> None:
        """Close the client if this path made it (or the storage did).

        Closing a redis-py client drops its connections; it reconnects if used again, which
        is what ``final=False`` (the loop is shutting down) allows.
        """
        if self.owned:
            self.owned = not final
            await self.client.aclose()


def clone(client: Redis) -> Redis:
    """A new client with ``client``'s connection options and a pool of its own."""
    pool = client.connection_pool
    fresh = pool.__class__(
        connection_class=pool.connection_class,
        max_connections=connection_limit(client),
        **pool.connection_kwargs,
    )
    return Redis.from_pool(fresh)  # closing the client closes this pool too
