"""Redis / Valkey storage, on a single server or a Redis Cluster, through redis-py's asyncio client.

Values are stored as plain strings under the bare key (the storage's prefix included), expiry is
set by the server (``SET ... PX``), so a GramIO bot using ``@gramio/storage-redis`` reads and
writes the same keys. Every operation maps to native commands:

==============  =================================================================================
operation       commands
==============  =================================================================================
get / set       ``GET`` / ``SET [PX ms]``
has             ``EXISTS`` (no value transfer)
delete          ``UNLINK``
get_many        ``MGET`` (one per hash slot on a cluster, pipelined per node)
set_many        ``MSET``, or a pipeline of ``SET PX`` when a TTL is given
delete_many     ``UNLINK k1 k2 ...`` (one per hash slot on a cluster)
keys / clear    ``SCAN MATCH <escaped prefix>*`` on every master, ``UNLINK`` per page
ttl             ``PTTL``
add             ``SET NX [PX ms]``
incr            ``INCRBY`` (a Lua ``SET NX PX`` + ``INCRBY`` when the counter gets a TTL)
update          ``GET``, then a Lua compare-and-set; retried when another writer got in first
==============  =================================================================================
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import math
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar, TypeVar, overload
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ._codecs import JSON, Codec
from ._errors import (
    AuthenticationError,
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigurationError,
    InvalidKeyError,
    InvalidTTLError,
    MissingDependencyError,
    StorageClosedError,
)
from ._keys import Key
from ._protocol import TTL
from ._storage import BaseStorage

try:
    from redis import exceptions as _rx
    from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.client import NEVER_DECODE
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        "gramio_storage.redis needs redis-py: pip install 'gramio-storage[redis]'"
    ) from e

__all__ = ["RedisStorage"]

T = TypeVar("T")
D = TypeVar("D")

# Defaults for a bot: a user waits on every storage call, so a dead server must surface as an
# error within a couple of seconds (the bot can answer "try again later"), not hang the update.
DEFAULT_SOCKET_CONNECT_TIMEOUT = 2.0
DEFAULT_SOCKET_TIMEOUT = 5.0
# Commands in flight at once through a client the storage made (more wait for a free slot).
DEFAULT_MAX_CONNECTIONS = 64

_SCAN_COUNT = 1000  # keys the server examines per SCAN call: fewer round trips on big databases
_MAX_CAS_ATTEMPTS = 1000  # an update losing this many races in a row gives up with an error
_MAX_PX = 2**62  # milliseconds; Redis rejects expiries that overflow its clock arithmetic
_INT64 = range(-(2**63), 2**63)

# Errors that mean "the server cannot be used right now" rather than "the command failed".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    _rx.ConnectionError,  # refused, reset, closed, DNS, too many connections, loading AOF
    _rx.ClusterDownError,
    _rx.TryAgainError,
    _rx.RedisClusterException,  # no reachable node, slot not covered
    OSError,
)
# Everything a command can raise that is the driver's or the server's doing. UnicodeError: a
# key that cannot be sent as UTF-8 (lone surrogates), reported as InvalidKeyError.
_ERRORS: tuple[type[BaseException], ...] = (
    _rx.RedisError,
    _rx.RedisClusterException,
    OSError,
    UnicodeError,
)


class _Script:
    """A Lua script run by ``EVALSHA``, falling back to ``EVAL`` (which caches it) on NOSCRIPT."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


# Compare-and-set for update() and the generic incr(): ARGV = expect_present ("1"/"0"),
# expected value, new value, expiry ("" none, "keep" keep the current one, else milliseconds).
# fn runs in the client, so this is what makes update() safe across processes.
_CAS = _Script(
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
_INCR_TTL = _Script(
    """
redis.call('SET', KEYS[1], '0', 'NX', 'PX', ARGV[2])
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""
)


class _Limiter:
    """A semaphore for the hot path: taking a free slot is an attribute update, no coroutine.

    Waiters queue in FIFO order; a released slot is handed straight to the oldest waiter.
    """

    __slots__ = ("free", "waiters")

    def __init__(self, size: int) -> None:
        self.free = size
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self.free > 0 and not self.waiters:
            self.free -= 1
        else:
            await self.wait()

    async def wait(self) -> None:
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


def _glob_escape(prefix: str) -> str:
    """Escape Redis glob metacharacters so ``MATCH`` treats the prefix literally."""
    for char in "\\*?[]":
        prefix = prefix.replace(char, "\\" + char)
    return prefix


class RedisStorage(BaseStorage):
    """A storage in Redis or Valkey, on one server or a Redis Cluster.

    Three ways to build one::

        RedisStorage(redis.asyncio.Redis(...))          # your client: the storage never closes it
        RedisStorage.from_url("redis://localhost:6379/0", ttl=3600)
        RedisStorage(host="localhost", port=6379, password="...", prefix="bot:")

    Args:
        client: A ``redis.asyncio.Redis`` or ``redis.asyncio.RedisCluster`` to use. It stays
            yours: :meth:`close` leaves it open. Omit it to let the storage create (and close)
            its own client from the keyword options.
        prefix: Prepended to every key, so several bots or plugins can share a database; the
            storage's ``keys()`` and ``clear()`` see only keys under it.
        ttl: Default time to live for writes that do not pass one.
        codec: How values become bytes. The default JSON is what GramIO reads and writes.
        cluster: Create a ``RedisCluster`` client instead of ``Redis`` (keyword construction).
        host: Server host (keyword construction).
        port: Server port (keyword construction).
        db: Database number (single server only).
        username: ACL user name.
        password: Password; never shown in ``repr`` or error messages.
        unix_socket_path: Connect through a Unix socket instead of TCP.
        ssl: Use TLS (``rediss://``); pass ``ssl_ca_certs=`` and friends through ``options``.
        socket_connect_timeout: Seconds to wait for a connection before raising
            :class:`~gramio_storage.BackendUnavailableError`.
        socket_timeout: Seconds to wait for a reply before raising
            :class:`~gramio_storage.BackendTimeoutError`.
        max_connections: The most connections the client opens (per node on a cluster);
            further concurrent calls wait for a free one instead of failing.
        **options: Passed on to the redis-py client (``client_name``, ``ssl_ca_certs``...).

    A storage that makes its client does not retry a failed command: a retried ``INCRBY`` or
    compare-and-set whose first attempt reached the server would apply twice. Dead pooled
    connections (after a server restart) are replaced before use, so the same storage works
    again as soon as the server is back. Pass your own ``retry=`` to change this.

    Raises:
        ConfigurationError: Both a client and connection options, a client that is not an
            asyncio redis-py client, or options redis-py rejects.
    """

    backend_name: ClassVar[str] = "redis"
    _root: RedisStorage

    def __init__(
        self,
        client: Redis | RedisCluster | None = None,
        *,
        prefix: str = "",
        ttl: TTL | None = None,
        codec: Codec = JSON,
        cluster: bool = False,
        host: str | None = None,
        port: int | None = None,
        db: int | None = None,
        username: str | None = None,
        password: str | None = None,
        unix_socket_path: str | None = None,
        ssl: bool | None = None,
        socket_connect_timeout: float | None = DEFAULT_SOCKET_CONNECT_TIMEOUT,
        socket_timeout: float | None = DEFAULT_SOCKET_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        **options: Any,
    ) -> None:
        super().__init__(codec=codec, ttl=ttl)
        if not isinstance(prefix, str):
            raise ConfigurationError(f"prefix must be a str, got {prefix.__class__.__qualname__}")
        self._prefix = prefix
        given: dict[str, Any] = {
            name: value
            for name, value in (
                ("host", host),
                ("port", port),
                ("db", db),
                ("username", username),
                ("password", password),
                ("unix_socket_path", unix_socket_path),
                ("ssl", ssl),
            )
            if value is not None
        }
        if client is None:
            options = given | options
            options["socket_connect_timeout"] = socket_connect_timeout
            options["max_connections"] = max_connections
            options["socket_timeout"] = _timeout(socket_timeout, "socket_timeout")
            self._attach(_make_client(cluster, options), owned=True)
            return
        if not isinstance(client, (Redis, RedisCluster)):
            raise ConfigurationError(
                "client must be a redis.asyncio.Redis or redis.asyncio.RedisCluster, "
                f"got {client.__class__.__qualname__} (a synchronous redis.Redis will not do)"
            )
        if socket_connect_timeout != DEFAULT_SOCKET_CONNECT_TIMEOUT:
            given["socket_connect_timeout"] = socket_connect_timeout
        if socket_timeout != DEFAULT_SOCKET_TIMEOUT:
            given["socket_timeout"] = socket_timeout
        if max_connections != DEFAULT_MAX_CONNECTIONS:
            given["max_connections"] = max_connections
        if given or options or cluster:
            names = sorted([*given, *options, *(["cluster"] if cluster else [])])
            raise ConfigurationError(
                f"Pass either a client or connection options, not both (got {names}); "
                "configure your client instead"
            )
        self._attach(client, owned=False)

    def _attach(self, client: Redis | RedisCluster, *, owned: bool) -> None:
        """Adopt ``client`` and build the command path the hooks call.

        Reply timeouts are redis-py's own ``socket_timeout``: measured on redis-py 8.1, a
        wrapper of ours around each command (one ``asyncio.timeout``) cost about 7 % of
        sequential throughput, redis-py's timeout nothing measurable.
        """
        self._client: Redis | RedisCluster = client
        self._owns_client = owned
        self._cluster = isinstance(client, RedisCluster)
        self._json = self._codec is JSON  # stored bytes are JSON numbers: INCRBY counts them
        self._closed = False
        # A client made with decode_responses=True would turn values into str; NEVER_DECODE
        # asks redis-py for the raw bytes, per command. Empty (free) for the usual client.
        raw: dict[str, Any] = {NEVER_DECODE: True} if client.get_encoder().decode_responses else {}
        self._raw = raw
        execute: Callable[..., Any] = client.execute_command
        if raw:
            plain = execute

            async def execute(*args: Any, **kwargs: Any) -> Any:
                return await plain(*args, **raw, **kwargs)

        if isinstance(client, RedisCluster):
            initialize = client.initialize
            unrouted = execute

            async def execute(*args: Any, **kwargs: Any) -> Any:
                # redis-py sends commands issued before its slot map is loaded to a default
                # node; the MOVED replies then make it close connections other commands are
                # using. Loading the map first (a no-op once loaded) avoids that race.
                await initialize()
                return await unrouted(*args, **kwargs)

        direct = execute
        self._slots: _Limiter | None = None
        if not isinstance(getattr(client, "connection_pool", None), BlockingConnectionPool):
            # redis-py's default pools (and every cluster node) raise "Too many connections"
            # once max_connections commands are in flight; a bot's burst of updates should
            # queue instead, so the storage admits at most that many commands at once (and
            # starts a command's timeout only once it has a connection).
            slots = self._slots = _Limiter(_connection_limit(client))

            async def execute(*args: Any, **kwargs: Any) -> Any:
                if slots.free > 0 and not slots.waiters:
                    slots.free -= 1
                else:
                    await slots.wait()
                try:
                    return await direct(*args, **kwargs)
                finally:
                    slots.release()

        self._exec = execute

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool | None = None,
        prefix: str = "",
        ttl: TTL | None = None,
        codec: Codec = JSON,
        **options: Any,
    ) -> RedisStorage:
        """Build a storage (and a client it owns) from a URL.

        ``redis://[[user]:[password]@]host[:port][/db]``, ``rediss://...`` for TLS and
        ``unix:///path/to/redis.sock[?db=0]``; query parameters become client options
        (``?socket_timeout=1&ssl_cert_reqs=none``). Add ``?cluster=true`` (or pass
        ``cluster=True``) to connect to a Redis Cluster through the node the URL names.

        Args:
            url: The server's URL.
            cluster: Connect to a Redis Cluster; overrides ``?cluster=`` in the URL.
            prefix: Prepended to every key.
            ttl: Default time to live for writes that do not pass one.
            codec: How values become bytes.
            **options: Client options, such as ``socket_timeout`` or ``max_connections``.

        Raises:
            ConfigurationError: The URL is malformed or names an unknown scheme. The message
                never quotes the URL, which may contain a password.
        """
        if not isinstance(url, str):
            raise ConfigurationError(f"Redis URL must be a str, got {url.__class__.__qualname__}")
        if not isinstance(prefix, str):
            raise ConfigurationError(f"prefix must be a str, got {prefix.__class__.__qualname__}")
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("redis", "rediss", "unix"):
            raise ConfigurationError(
                f"Redis URLs start with redis://, rediss:// or unix://, not {scheme or '?'}://"
            )
        # Two query parameters are the storage's, not redis-py's: take them out of the URL.
        query = parse_qsl(parts.query, keep_blank_values=True)
        ours = {name: value for name, value in query if name in ("cluster", "socket_timeout")}
        if ours:
            query = [(name, value) for name, value in query if name not in ours]
            url = urlunsplit(parts._replace(query=urlencode(query)))
        if cluster is None:
            cluster = ours.get("cluster", "").lower() in ("1", "true", "yes", "on")
        if cluster and scheme == "unix":
            raise ConfigurationError("Redis Cluster cannot be reached through a unix:// socket")
        timeout = options.pop("socket_timeout", DEFAULT_SOCKET_TIMEOUT)
        if "socket_timeout" in ours:  # like redis-py: a value in the URL wins over a keyword
            timeout = ours["socket_timeout"]
        options["socket_timeout"] = _timeout(timeout, "socket_timeout")
        options.setdefault("socket_connect_timeout", DEFAULT_SOCKET_CONNECT_TIMEOUT)
        options.setdefault("max_connections", DEFAULT_MAX_CONNECTIONS)
        _default_retry(options)
        factory = RedisCluster.from_url if cluster else Redis.from_url
        try:
            client = factory(url, **options)
        except (ValueError, TypeError, _rx.RedisError, _rx.RedisClusterException) as e:
            # redis-py's messages name the bad option, never the URL's credentials.
            raise ConfigurationError(f"Invalid Redis URL or options: {e}") from None
        storage = cls.__new__(cls)
        BaseStorage.__init__(storage, codec=codec, ttl=ttl)
        storage._prefix = prefix
        storage._attach(client, owned=True)
        return storage

    @property
    def client(self) -> Redis | RedisCluster:
        """The redis-py client, for commands this library does not wrap."""
        return self._client

    def _repr_fields(self) -> dict[str, object]:
        fields: dict[str, object] = {"server": _describe(self._client)}
        if self._cluster:
            fields["cluster"] = True
        if self._codec is not JSON:
            fields["codec"] = self._codec
        return fields

    # ------------------------------------------------------------------ fast paths
    # get and set with a str key skip the hook layer (one coroutine and a key-resolution
    # call less per operation). Anything unusual, every error included, goes through the
    # generic facade, which runs the full checks and raises the documented errors.

    # The overloads repeat BaseStorage's, so typed keys keep their static types here too.
    @overload
    async def get(self, key: Key[T]) -> T | None: ...
    @overload
    async def get(self, key: Key[T], default: D) -> T | D: ...
    @overload
    async def get(self, key: str, default: Any = None) -> Any: ...
    async def get(self, key: Any, default: Any = None) -> Any:
        """Return the value under ``key`` or ``default``; see :meth:`BaseStorage.get`."""
        if key.__class__ is str and key:
            root = self._root
            full = self._prefix + key
            try:
                data = await root._exec("GET", full)
            except _ERRORS as e:
                raise root._fail(e, "get", full) from e
            if data is None:
                return default
            try:
                return self._decode_any(data)
            except Exception:  # noqa: S110 - the generic path raises the DecodeError
                pass
        return await BaseStorage.get(self, key, default)

    @overload
    async def set(self, key: Key[T], value: T, *, ttl: TTL | None = None) -> None: ...
    @overload
    async def set(self, key: str, value: Any, *, ttl: TTL | None = None) -> None: ...
    async def set(self, key: Any, value: Any, *, ttl: TTL | None = None) -> None:
        """Store ``value`` under ``key``; see :meth:`BaseStorage.set`."""
        if key.__class__ is str and key and ttl is None:
            try:
                data = self._encode(value)
            except Exception:  # the generic path raises the EncodeError
                return await BaseStorage.set(self, key, value)
            root = self._root
            full = self._prefix + key
            try:
                if self._default_ttl is None:
                    await root._exec("SET", full, data)
                else:
                    await root._exec("SET", full, data, "PX", root._ms(self._default_ttl))
            except _ERRORS as e:
                raise root._fail(e, "set", full) from e
            return None
        return await BaseStorage.set(self, key, value, ttl=ttl)

    # ------------------------------------------------------------------ error handling

    def _fail(self, e: BaseException, op: str, key: str | None) -> Exception:
        """Translate a driver exception into the library's error tree (caller chains it)."""
        if isinstance(e, UnicodeError):
            return InvalidKeyError(
                f"Redis {op}: key {key!r} cannot be encoded as UTF-8 ({e})",
                key=key,
                backend=self.backend_name,
            )
        what = f"{op} of key {key!r}" if key is not None else op
        detail = f"{e.__class__.__name__}: {e}"
        if isinstance(e, (_rx.AuthenticationError, _rx.AuthenticationWrongNumberOfArgsError)):
            cls: type[BackendError] = AuthenticationError
            message = f"Redis refused the credentials ({what}): {detail}"
        elif isinstance(e, (_rx.TimeoutError, TimeoutError)):
            limit = _socket_timeout(self._client)
            within = f" within {limit:g}s" if limit else " in time"
            cls, message = BackendTimeoutError, f"Redis did not answer{within} ({what}): {detail}"
        elif isinstance(e, _UNAVAILABLE):
            cls, message = BackendUnavailableError, f"Redis is unavailable ({what}): {detail}"
        else:
            cls, message = BackendError, f"Redis {what} failed: {detail}"
        return cls(message, key=key, backend=self.backend_name)

    async def _closed_exec(self, *args: Any, **kwargs: Any) -> Any:
        raise StorageClosedError(
            "This RedisStorage was closed; create a new one", backend=self.backend_name
        )

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosedError(
                "This RedisStorage was closed; create a new one", backend=self.backend_name
            )

    # ------------------------------------------------------------------ required hooks

    async def _get(self, key: str) -> bytes | None:
        try:
            return await self._exec("GET", key)  # type: ignore[no-any-return]
        except _ERRORS as e:
            raise self._fail(e, "get", key) from e

    async def _set(self, key: str, data: bytes, ttl: float | None) -> None:
        try:
            if ttl is None:
                await self._exec("SET", key, data)
            else:
                await self._exec("SET", key, data, "PX", self._ms(ttl))
        except _ERRORS as e:
            raise self._fail(e, "set", key) from e

    async def _delete(self, key: str) -> bool:
        try:
            return await self._exec("UNLINK", key) == 1  # type: ignore[no-any-return]
        except _ERRORS as e:
            raise self._fail(e, "delete", key) from e

    async def _scan(self, prefix: str) -> AsyncIterator[str]:
        async for page in self._scan_pages(prefix):
            for raw in page:
                yield raw.decode("utf-8", "replace")

    async def _scan_pages(self, prefix: str) -> AsyncIterator[list[bytes]]:
        """Yield the keys starting with ``prefix`` page by page (every master of a cluster)."""
        self._check_open()
        match = ("MATCH", _glob_escape(prefix) + "*") if prefix else ()
        # MATCH already filters; the byte check guards against any glob dialect surprise
        # (Valkey, proxies) ever widening the match beyond the literal prefix.
        literal = prefix.encode()
        client = self._client
        try:
            if isinstance(client, RedisCluster):
                await client.initialize()
                nodes: list[Any] = list(client.get_primaries())
            else:
                nodes = [None]
            for node in nodes:
                cursor = 0
                while True:
                    if node is None:
                        cursor, keys = await self._exec(
                            "SCAN", cursor, *match, "COUNT", _SCAN_COUNT
                        )
                    else:
                        cursors, keys = await self._exec(
                            "SCAN", cursor, *match, "COUNT", _SCAN_COUNT, target_nodes=node
                        )
                        cursor = next(iter(cursors.values()))
                    page = [k for k in keys if k.startswith(literal)]
                    if page:
                        yield page
                    if not cursor:
                        break
        except _ERRORS as e:
            raise self._fail(e, f"scan for prefix {prefix!r}", None) from e

    # ------------------------------------------------------------------ optional hooks

    async def _has(self, key: str) -> bool:
        try:
            return await self._exec("EXISTS", key) == 1  # type: ignore[no-any-return]
        except _ERRORS as e:
            raise self._fail(e, "has", key) from e

    async def _get_many(self, keys: Sequence[str]) -> Sequence[bytes | None]:
        if not keys:
            return []
        try:
            if not self._cluster:
                return await self._exec("MGET", *keys)  # type: ignore[no-any-return]
            self._check_open()
            groups = self._by_slot(keys)
            if len(groups) == 1:
                return await self._exec("MGET", *keys)  # type: ignore[no-any-return]
            pipe = self._client.pipeline(transaction=False)
            for members in groups:
                pipe.execute_command("MGET", *[keys[i] for i in members], **self._raw)
            found: list[bytes | None] = [None] * len(keys)
            for members, values in zip(groups, await self._execute(pipe), strict=True):
                for i, value in zip(members, values, strict=True):
                    found[i] = value
            return found
        except _ERRORS as e:
            raise self._fail(e, "get_many", _first(keys)) from e

    async def _set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        try:
            if ttl is None and not self._cluster:
                await self._exec("MSET", *[part for item in items for part in item])
                return
            self._check_open()
            extra: tuple[Any, ...] = () if ttl is None else ("PX", self._ms(ttl))
            pipe = self._client.pipeline(transaction=False)
            for key, data in items:
                pipe.execute_command("SET", key, data, *extra)
            await self._execute(pipe)
        except _ERRORS as e:
            raise self._fail(e, "set_many", items[0][0]) from e

    async def _delete_many(self, keys: Sequence[str] | Sequence[bytes]) -> int:
        unique: list[str | bytes] = list(dict.fromkeys(keys))
        try:
            if not self._cluster:
                return await self._exec("UNLINK", *unique)  # type: ignore[no-any-return]
            self._check_open()
            groups = self._by_slot(unique)
            if len(groups) == 1:
                return await self._exec("UNLINK", *unique)  # type: ignore[no-any-return]
            pipe = self._client.pipeline(transaction=False)
            for members in groups:
                pipe.execute_command("UNLINK", *[unique[i] for i in members])
            return sum(await self._execute(pipe))
        except _ERRORS as e:
            first = _first(unique)
            raise self._fail(e, "delete_many", first if isinstance(first, str) else None) from e

    async def _clear(self, prefix: str) -> int:
        # SCAN + UNLINK page by page: memory stays bounded, the server never blocks on a huge
        # DEL, and keys outside the prefix (other bots sharing the database) are never touched.
        deleted = 0
        async for page in self._scan_pages(prefix):
            deleted += await self._delete_many(page)
        return deleted

    async def _ttl(self, key: str) -> float | None:
        try:
            ms = await self._exec("PTTL", key)
        except _ERRORS as e:
            raise self._fail(e, "ttl", key) from e
        if ms == -2:
            raise self._not_found(key)
        return None if ms == -1 else ms / 1000

    async def _add(self, key: str, data: bytes, ttl: float | None) -> bool:
        try:
            if ttl is None:
                return bool(await self._exec("SET", key, data, "NX"))
            return bool(await self._exec("SET", key, data, "NX", "PX", self._ms(ttl)))
        except _ERRORS as e:
            raise self._fail(e, "add", key) from e

    async def _incr(self, key: str, amount: int, ttl: float | None) -> int:
        if self._json and amount in _INT64:
            try:
                if ttl is None:
                    return await self._exec("INCRBY", key, amount)  # type: ignore[no-any-return]
                return await self._eval(_INCR_TTL, key, amount, self._ms(ttl))  # type: ignore[no-any-return]
            except _rx.ResponseError as e:
                if isinstance(e, _UNAVAILABLE):  # CLUSTERDOWN, TRYAGAIN
                    raise self._fail(e, "incr", key) from e
                # Not a plain 64-bit integer (a JSON float, a string, an overflow): the generic
                # path below decodes it, raising DecodeError or counting past 64 bits.
            except _ERRORS as e:
                raise self._fail(e, "incr", key) from e
        async with self._lock(key):
            for _ in range(_MAX_CAS_ATTEMPTS):
                old = await self._get(key)
                if old is None:
                    value, expiry = amount, ("" if ttl is None else self._ms(ttl))
                else:
                    value, expiry = self._decode_int(key, old) + amount, "keep"
                if await self._cas(key, old, self._encode(value), expiry, "incr"):
                    return value
        raise self._contention(key, "incr")

    async def _update(
        self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None
    ) -> None:
        expiry = "" if ttl is None else self._ms(ttl)
        # The lock serialises this process's own updaters of the key, so they queue instead of
        # failing each other's compare-and-set; other processes are handled by the CAS retry.
        async with self._lock(key):
            for _ in range(_MAX_CAS_ATTEMPTS):
                old = await self._get(key)
                if await self._cas(key, old, fn(old), expiry, "update"):
                    return
        raise self._contention(key, "update")

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._exec = self._closed_exec
        if self._owns_client:
            await self._client.aclose()

    # ------------------------------------------------------------------ helpers

    def _ms(self, ttl: float) -> int:
        """Seconds to whole milliseconds for ``PX`` (rounded, at least 1)."""
        ms = round(ttl * 1000)
        if ms > _MAX_PX:
            raise InvalidTTLError(
                f"ttl={ttl:g}s is beyond what Redis can store", backend=self.backend_name
            )
        return ms if ms > 0 else 1

    async def _execute(self, pipe: Any) -> list[Any]:
        """Run a pipeline within the storage's in-flight limit (the client times the reply)."""
        self._check_open()
        slots = self._slots
        if slots is not None:
            await slots.acquire()
        try:
            return await pipe.execute()  # type: ignore[no-any-return]
        finally:
            if slots is not None:
                slots.release()

    async def _eval(self, script: _Script, key: str, *args: Any) -> Any:
        try:
            return await self._exec("EVALSHA", script.sha, 1, key, *args)
        except _rx.NoScriptError:
            # First use on this server (or it restarted and lost its script cache): EVAL
            # runs the script and caches it, so later calls are EVALSHA again.
            return await self._exec("EVAL", script.source, 1, key, *args)

    async def _cas(
        self, key: str, old: bytes | None, new: bytes, expiry: int | str, op: str
    ) -> bool:
        try:
            if old is None:
                done = await self._eval(_CAS, key, "0", "", new, expiry)
            else:
                done = await self._eval(_CAS, key, "1", old, new, expiry)
        except _ERRORS as e:
            raise self._fail(e, op, key) from e
        return done == 1  # type: ignore[no-any-return]

    def _contention(self, key: str, op: str) -> BackendError:
        return BackendError(
            f"Redis {op} of key {key!r} gave up after {_MAX_CAS_ATTEMPTS} attempts: other "
            "writers changed the key every time; nothing was written",
            key=key,
            backend=self.backend_name,
        )

    def _by_slot(self, keys: Sequence[str | bytes]) -> list[list[int]]:
        """Group key positions by cluster hash slot (a multi-key command must stay in one)."""
        keyslot = self._client.keyslot  # type: ignore[union-attr]
        groups: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            slot = keyslot(key)
            members = groups.get(slot)
            if members is None:
                groups[slot] = [i]
            else:
                members.append(i)
        return list(groups.values())


def _first(keys: Sequence[Any]) -> Any:
    return keys[0] if keys else None


def _default_retry(options: dict[str, Any]) -> None:
    """Install the retry policy described in :class:`RedisStorage` unless the caller set one."""
    if "retry" in options:
        return
    # No automatic retries: a command whose connection failed may still have run on the
    # server, and re-sending an INCRBY or a compare-and-set would apply it twice. After a
    # failure redis-py reconnects (a cluster client reloads its slot map) on the next command.
    options["retry"] = Retry(NoBackoff(), 0)


def _make_client(cluster: bool, options: dict[str, Any]) -> Redis | RedisCluster:
    _default_retry(options)
    try:
        if cluster:
            if "unix_socket_path" in options:
                raise ConfigurationError("Redis Cluster cannot be reached through a unix socket")
            options.setdefault("host", "localhost")
            options.setdefault("port", 6379)
            return RedisCluster(**options)
        return Redis(**options)
    except (TypeError, ValueError, _rx.RedisError, _rx.RedisClusterException) as e:
        if isinstance(e, ConfigurationError):
            raise
        raise ConfigurationError(f"Invalid Redis options: {e}") from None


def _timeout(value: Any, name: str) -> float | None:
    """Validate a timeout option: positive seconds, or ``None`` for none."""
    if value is None or (isinstance(value, str) and value.lower() in ("", "none")):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be seconds or None, got {value!r}") from None
    if not 0 < seconds < math.inf:
        raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
    return seconds


def _connection_limit(client: Redis | RedisCluster) -> int:
    """The most connections the client opens (per node, on a cluster)."""
    if isinstance(client, RedisCluster):
        return int(client.connection_kwargs.get("max_connections") or DEFAULT_MAX_CONNECTIONS)
    return int(getattr(client.connection_pool, "max_connections", DEFAULT_MAX_CONNECTIONS))


def _socket_timeout(client: Redis | RedisCluster) -> float | None:
    """The client's reply timeout in seconds (redis-py's ``socket_timeout``), if any."""
    kwargs = (
        client.connection_kwargs
        if isinstance(client, RedisCluster)
        else client.connection_pool.connection_kwargs
    )
    value = kwargs.get("socket_timeout")
    return float(value) if value else None


def _describe(client: Redis | RedisCluster) -> str:
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
