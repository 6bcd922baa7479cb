"""``RedisStorage``: the user-facing storage over :class:`~._backend.RedisBackend`."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis, RedisCluster

from .._backend_util import parse_bool, query_options
from .._codecs import JSON, Codec
from .._errors import ConfigurationError
from .._protocol import TTL
from .._redact import Redactor
from .._storage import BaseStorage
from ._backend import RedisBackend
from ._client import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_TIMEOUT,
    client_from_url,
    connection_kwargs,
    make_client,
    safe_url,
    seconds,
)

__all__ = ["RedisStorage", "redis_storage"]

_UNSET: Any = object()
# URL options the storage reads itself; every other query option goes to redis-py.
_URL_OPTIONS = {
    "cluster": parse_bool,
    "pipelining": parse_bool,
    "timeout": str,
    "socket_timeout": str,
    "connect_timeout": str,
    "socket_connect_timeout": str,
}


def _one(name: str, alias: str, value: Any, aliased: Any, default: float) -> float | None:
    """A timeout given under its vocabulary name or redis-py's name (not both)."""
    if value is not _UNSET and aliased is not _UNSET:
        raise ConfigurationError(f"Pass {name}= or {alias}=, not both (they are the same option)")
    chosen = value if value is not _UNSET else aliased
    return default if chosen is _UNSET else seconds(chosen, name)


def _no_prefix(options: dict[str, Any]) -> None:
    if "prefix" in options:
        raise ConfigurationError(
            "RedisStorage no longer takes prefix=: use storage.with_prefix('bot:'), or "
            "?prefix=bot: in a storage_from_url() URL"
        )


class RedisStorage(BaseStorage):
    """A storage in Redis or Valkey, on one server or a Redis Cluster.

    Three ways to build one::

        RedisStorage(redis.asyncio.Redis(...))          # your client: the storage never closes it
        RedisStorage.from_url("redis://localhost:6379/0", ttl=3600)
        RedisStorage(host="localhost", port=6379, password="...")

    Prefixes are views: ``RedisStorage.from_url(url).with_prefix("bot:")``.

    Args:
        client: A ``redis.asyncio.Redis`` or ``redis.asyncio.RedisCluster`` to use. It stays
            yours: :meth:`close` leaves it open. Omit it to let the storage create (and close)
            its own client from the keyword options.
        ttl: Default time to live for writes that do not pass one.
        codec: How values become bytes. The default JSON is what GramIO reads and writes.
        max_value_bytes: Refuse encoded values larger than this, before any I/O.
        pipelining: Send the commands of concurrent tasks together on one connection
            (automatic pipelining; single server only). ``False``: one pooled connection per
            command, as redis-py does.
        cluster: Create a ``RedisCluster`` client instead of ``Redis`` (keyword construction).
        host: Server host (keyword construction).
        port: Server port (keyword construction).
        db: Database number (single server only).
        username: ACL user name.
        password: Password; never shown in ``repr`` or error messages.
        unix_socket_path: Connect through a Unix socket instead of TCP.
        ssl: Use TLS (``rediss://``); pass ``ssl_ca_certs=`` and friends through ``options``.
        timeout: Seconds to wait for a reply before raising
            :class:`~gramio_storage.BackendTimeoutError` (redis-py's ``socket_timeout``, also
            accepted under that name). Default 5; ``None``: wait forever.
        connect_timeout: Seconds to wait for a connection before raising
            :class:`~gramio_storage.BackendUnavailableError` (``socket_connect_timeout``).
            Default 2.
        max_connections: The most connections redis-py opens (per node on a cluster) for the
            commands that do not go through the pipeline; further concurrent calls wait.
        **options: Passed on to the redis-py client (``client_name``, ``ssl_ca_certs``...).

    A storage that makes its client does not retry a failed command: a retried ``INCRBY`` or
    compare-and-set whose first attempt reached the server would apply twice. The next command
    after a failure reconnects, so the same storage works again once the server is back.

    Raises:
        ConfigurationError: Both a client and connection options, a client that is not an
            asyncio redis-py client, or options redis-py rejects.
    """

    def __init__(
        self,
        client: Redis | RedisCluster | None = None,
        *,
        ttl: TTL | None = None,
        codec: Codec = JSON,
        max_value_bytes: int | None = None,
        pipelining: bool = True,
        cluster: bool = False,
        host: str | None = None,
        port: int | None = None,
        db: int | None = None,
        username: str | None = None,
        password: str | None = None,
        unix_socket_path: str | None = None,
        ssl: bool | None = None,
        timeout: float | None = _UNSET,
        connect_timeout: float | None = _UNSET,
        socket_timeout: float | None = _UNSET,
        socket_connect_timeout: float | None = _UNSET,
        max_connections: int = _UNSET,
        **options: Any,
    ) -> None:
        _no_prefix(options)
        redactor = Redactor([password] if password else [])
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
        timeouts = {
            name: value
            for name, value in (
                ("timeout", timeout),
                ("connect_timeout", connect_timeout),
                ("socket_timeout", socket_timeout),
                ("socket_connect_timeout", socket_connect_timeout),
                ("max_connections", max_connections),
            )
            if value is not _UNSET
        }
        if client is None:
            options = given | options
            options["socket_timeout"] = _one(
                "timeout", "socket_timeout", timeout, socket_timeout, DEFAULT_TIMEOUT
            )
            options["socket_connect_timeout"] = _one(
                "connect_timeout",
                "socket_connect_timeout",
                connect_timeout,
                socket_connect_timeout,
                DEFAULT_CONNECT_TIMEOUT,
            )
            options["max_connections"] = (
                DEFAULT_MAX_CONNECTIONS if max_connections is _UNSET else max_connections
            )

            def build() -> Redis | RedisCluster:
                return make_client(cluster, dict(options), redactor)

            backend = RedisBackend(
                build(), owned=True, pipelining=pipelining, rebuild=build, redactor=redactor
            )
        else:
            if not isinstance(client, (Redis, RedisCluster)):
                raise ConfigurationError(
                    "client must be a redis.asyncio.Redis or redis.asyncio.RedisCluster, "
                    f"got {client.__class__.__qualname__} (a synchronous redis.Redis will not do)"
                )
            if given or timeouts or options or cluster:
                names = sorted([*given, *timeouts, *options, *(["cluster"] if cluster else [])])
                raise ConfigurationError(
                    f"Pass either a client or connection options, not both (got {names}); "
                    "configure your client instead"
                )
            redactor.add(connection_kwargs(client).get("password"))
            backend = RedisBackend(client, owned=False, pipelining=pipelining, redactor=redactor)
        super().__init__(backend, codec=codec, ttl=ttl, max_value_bytes=max_value_bytes)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        ttl: TTL | None = None,
        codec: Codec = JSON,
        max_value_bytes: int | None = None,
        cluster: bool | None = None,
        pipelining: bool | None = None,
        **options: Any,
    ) -> RedisStorage:
        """Build a storage (and a client it owns) from a URL.

        ``redis://[[user]:[password]@]host[:port][/db]``, ``rediss://...`` for TLS and
        ``unix:///path/to/redis.sock[?db=0]``. The storage reads ``?cluster=``,
        ``?pipelining=``, ``?timeout=`` and ``?connect_timeout=`` (also under redis-py's names
        ``socket_timeout``/``socket_connect_timeout``); other query options go to redis-py
        (``?client_name=bot&ssl_cert_reqs=none``). A value in the URL wins over a keyword;
        ``?prefix=`` is applied by :func:`~gramio_storage.storage_from_url`. A password may
        hold unencoded ``/ ? # @``: everything up to the last ``@`` is the credentials.

        Raises:
            ConfigurationError: The URL is malformed or names an unknown scheme. The message
                never quotes the URL, which may contain a password.
        """
        if not isinstance(url, str):
            raise ConfigurationError(f"Redis URL must be a str, got {url.__class__.__qualname__}")
        _no_prefix(options)
        scheme = url.partition(":")[0].lower()
        # unix:/path is unix:///path as urlunsplit() writes it (no authority).
        if scheme not in ("redis", "rediss", "unix") or (
            "://" not in url and not url[:6].lower() == "unix:/"
        ):
            raise ConfigurationError(
                f"Redis URLs start with redis://, rediss:// or unix://, not {scheme or '?'}://"
            )
        redactor = Redactor()
        redactor.add_url(url)
        url = safe_url(url)
        base, _, query = url.partition("?")
        names = {part.partition("=")[0] for part in query.partition("#")[0].split("&") if part}
        spec: dict[str, Any] = dict.fromkeys(names, str) | _URL_OPTIONS
        ours = query_options(url, spec, scheme=scheme)
        kept = [p for p in query.split("&") if p and p.partition("=")[0] not in _URL_OPTIONS]
        url = base + ("?" + "&".join(kept) if kept else "")
        if cluster is None:
            cluster = bool(ours.get("cluster", False))
        if pipelining is None:
            pipelining = bool(ours.get("pipelining", True))
        if cluster and scheme == "unix":
            raise ConfigurationError("Redis Cluster cannot be reached through a unix:// socket")
        for name, alias, default in (
            ("timeout", "socket_timeout", DEFAULT_TIMEOUT),
            ("connect_timeout", "socket_connect_timeout", DEFAULT_CONNECT_TIMEOUT),
        ):
            in_url = [ours[n] for n in (name, alias) if n in ours]
            if in_url:  # like redis-py: a value in the URL wins over a keyword
                options.pop(name, None)
                options.pop(alias, None)
                options[alias] = seconds(in_url[-1], alias)
            else:
                options[alias] = _one(
                    name, alias, options.pop(name, _UNSET), options.pop(alias, _UNSET), default
                )
        options.setdefault("max_connections", DEFAULT_MAX_CONNECTIONS)
        final = url

        def build() -> Redis | RedisCluster:
            return client_from_url(final, cluster, dict(options), redactor)

        backend = RedisBackend(
            build(), owned=True, pipelining=pipelining, rebuild=build, redactor=redactor
        )
        storage = cls.__new__(cls)
        BaseStorage.__init__(
            storage, backend, codec=codec, ttl=ttl, max_value_bytes=max_value_bytes
        )
        return storage

    @property
    def backend(self) -> RedisBackend:
        """The :class:`RedisBackend` sending the commands."""
        return self._backend  # type: ignore[return-value]

    @property
    def client(self) -> Redis | RedisCluster:
        """The redis-py client, for commands this library does not wrap."""
        return self.backend.client

    @property
    def pipelined(self) -> bool:
        """Whether commands go through the automatic pipeline (single server, the default)."""
        return self.backend.pipelined


def redis_storage(client_or_options: Any = None, /, **options: Any) -> RedisStorage:
    """GramIO's ``redisStorage(clientOrOptions)``: a :class:`RedisStorage`.

    Accepts a redis-py asyncio client (which stays yours), a URL, or a dict of the keyword
    options :class:`RedisStorage` takes (``{"host": "localhost", "port": 6379}``).
    """
    if isinstance(client_or_options, str):
        return RedisStorage.from_url(client_or_options, **options)
    if isinstance(client_or_options, dict):
        return RedisStorage(**{**client_or_options, **options})
    return RedisStorage(client_or_options, **options)
