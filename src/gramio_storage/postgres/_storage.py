"""PostgresStorage: the user-facing facade over :class:`PostgresBackend`, and its URLs."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

from .._backend_util import parse_bool, query_options
from .._codecs import JSON, Codec
from .._errors import ConfigurationError
from .._protocol import TTL
from .._storage import BaseStorage
from ._backend import PostgresBackend

__all__ = ["PostgresStorage"]


def _optional_seconds(text: str) -> float | None:
    return None if text.strip().lower() in ("", "none", "off") else float(text)


# Query-string options from_url() understands; everything else stays in the DSN for asyncpg
# (which passes unknown parameters to the server as settings, e.g. application_name).
_URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "table": str,
    "schema": str,
    "ttl": float,
    "timeout": float,
    "connect_timeout": float,
    "min_connections": int,
    "max_connections": int,
    "sweep_interval": _optional_seconds,
    "create_table": parse_bool,
    # v1 names, still accepted (with a DeprecationWarning):
    "min_size": int,
    "max_size": int,
    "command_timeout": float,
}
# v1 option names and their v2 names, shared by every backend (ARCHITECTURE.md).
_RENAMED = {
    "min_size": "min_connections",
    "max_size": "max_connections",
    "command_timeout": "timeout",
}


class PostgresStorage(BaseStorage):
    """A storage in one PostgreSQL table, through asyncpg; any number of processes may share it.

    The connection and the table are set up on first use (or by :meth:`open` / ``async with``,
    to fail fast at start-up). Several processes may start at once: table creation is
    serialised by an advisory lock.

    Args:
        dsn_or_pool: A ``postgresql://`` (or ``postgres://``) DSN, for connections this storage
            opens and closes; or an ``asyncpg.Pool`` you own (never closed by this storage).
            Percent-encode special characters in the password (``/ ? # @``).
        table: Table name, a plain identifier (used quoted, so case matters).
        schema: Schema of the table (created if missing); ``None`` uses the ``search_path``.
        ttl: Default time to live for writes that do not pass one.
        codec: How values become bytes; with the default JSON ``incr`` runs in SQL.
        timeout: Seconds any statement may run (``None``: no limit). The server aborts a slower
            one (PostgreSQL ``statement_timeout``: nothing is written) and the call raises
            :class:`~gramio_storage.BackendTimeoutError`.
        connect_timeout: Seconds to wait for a new connection.
        min_connections: Connections opened by :meth:`open` (at least one, to check the server).
        max_connections: Most connections open at once; more concurrent calls wait for one.
        sweep_interval: Seconds between deletions of expired rows (``None``: never; reads
            ignore expired rows either way).
        create_table: Create the table and index when missing; when False a missing table is a
            :class:`~gramio_storage.ConfigurationError` at open.
        max_value_bytes: Refuse encoded values larger than this.
        **connect_options: More ``asyncpg.connect`` options (``ssl``, ``server_settings``,
            ``statement_cache_size=0`` behind PgBouncer in transaction mode...). The v1 names
            ``min_size``, ``max_size`` and ``command_timeout`` still work, with a
            ``DeprecationWarning``.

    Raises:
        ConfigurationError: A bad table/schema name, DSN or option.

    Example::

        storage = PostgresStorage("postgresql://bot:secret@db/bot", ttl=86400)
        async with storage:
            await storage.set("user:1", {"step": "ask_name"})
    """

    def __init__(
        self,
        dsn_or_pool: str | Any,
        *,
        table: str = "gramio_storage",
        schema: str | None = None,
        ttl: TTL | None = None,
        codec: Codec = JSON,
        timeout: float | None = None,
        connect_timeout: float = 10.0,
        min_connections: int = 1,
        max_connections: int = 10,
        sweep_interval: float | None = 60.0,
        create_table: bool = True,
        max_value_bytes: int | None = None,
        **connect_options: Any,
    ) -> None:
        given: dict[str, Any] = {
            "min_connections": min_connections,
            "max_connections": max_connections,
            "timeout": timeout,
        }
        for old, new in _RENAMED.items():
            if old in connect_options:
                warnings.warn(f"PostgresStorage({old}=...) is now {new}=...", DeprecationWarning, 2)
                given[new] = connect_options.pop(old)
        backend = PostgresBackend(
            dsn_or_pool,
            table=table,
            schema=schema,
            connect_timeout=connect_timeout,
            sweep_interval=sweep_interval,
            create_table=create_table,
            **given,
            **connect_options,
        )
        super().__init__(backend, codec=codec, ttl=ttl, max_value_bytes=max_value_bytes)

    @property
    def backend(self) -> PostgresBackend:
        """The :class:`PostgresBackend` holding the connections."""
        return self._backend  # type: ignore[return-value]

    @property
    def table(self) -> str:
        """The table keys live in."""
        return self.backend.table

    @property
    def schema(self) -> str | None:
        """The table's schema (``None``: the connection's ``search_path``)."""
        return self.backend.schema

    async def open(self) -> Self:
        """Connect and create the table if needed, now rather than on first use.

        Raises:
            BackendUnavailableError: The server cannot be reached.
            AuthenticationError: The server refused the credentials.
            ConfigurationError: The table is missing (``create_table=False``) or has another
                layout.
        """
        self._check_open()
        await self.backend.open()
        return self

    async def __aenter__(self) -> Self:
        return await self.open()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresStorage:
        """Build from a ``postgresql://`` or ``postgres://`` URL.

        Storage options may ride in the query string (``?table=sessions&schema=bot&ttl=3600``,
        also ``timeout``, ``connect_timeout``, ``min_connections``, ``max_connections``,
        ``sweep_interval`` (``none`` turns it off), ``create_table``); keyword ``options`` win
        over them. Any other query parameter (``sslmode``, ``application_name``...) is left to
        asyncpg.

        Raises:
            ConfigurationError: A malformed URL or option value (the message never quotes the
                URL).
        """
        if not isinstance(url, str):
            raise ConfigurationError(
                f"PostgreSQL URL must be a str, got {url.__class__.__qualname__}",
                backend="postgres",
            )
        try:
            parts = urlsplit(url)
        except ValueError as e:
            raise ConfigurationError(f"Malformed PostgreSQL URL: {e}", backend="postgres") from None
        ours: list[str] = []
        theirs: list[str] = []
        for pair in filter(None, parts.query.split("&")):
            (ours if pair.partition("=")[0] in _URL_OPTIONS else theirs).append(pair)
        parsed = query_options("?" + "&".join(ours), _URL_OPTIONS, scheme=parts.scheme)
        for old in _RENAMED:  # the v1 spelling: the constructor warns
            if old in parsed:
                options.setdefault(old, parsed.pop(old))
        query = "&".join(theirs)
        dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
        return cls(dsn, **{**parsed, **options})
