"""PostgreSQL storage over asyncpg: one table, shared safely by any number of bot processes.

Layout (created on first use when missing, see :class:`PostgresStorage`)::

    CREATE TABLE gramio_storage (
        key        TEXT COLLATE "C" PRIMARY KEY,  -- byte order: prefix ranges are exact
        value      BYTEA NOT NULL,                -- the codec's bytes (JSON text by default)
        expires_at TIMESTAMPTZ                    -- NULL: never expires
    );
    CREATE INDEX gramio_storage_expires_at_idx ON gramio_storage (expires_at)
        WHERE expires_at IS NOT NULL;

Every statement is a single round trip except ``update``'s read-modify-write, which is optimistic
(a read, then a write conditional on the row version ``xmin``) and falls back to a
``SELECT ... FOR UPDATE`` transaction when another writer got in first. Expiry uses the
server's clock (``now()``), so processes with skewed clocks agree; expired rows are invisible
to every operation and a periodic sweep deletes them.
"""

# ruff: noqa: S608 - SQL text interpolates only the table/schema names, validated as identifiers
from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import inspect
import logging
import math
import re
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, ClassVar, Self, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ._codecs import JSON, Codec, JSONCodec
from ._errors import (
    AuthenticationError,
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigurationError,
    DecodeError,
    InvalidKeyError,
    MissingDependencyError,
    StorageClosedError,
    StorageError,
)
from ._protocol import TTL
from ._storage import BaseStorage

try:
    import asyncpg  # type: ignore[import-untyped]
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        "PostgresStorage needs asyncpg. Install it with: pip install 'gramio-storage[postgres]'"
    ) from e

__all__ = ["PostgresStorage"]

log = logging.getLogger(__name__)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1; longer names are silently truncated
_PAGE_SIZE = 1000  # keys per keyset page in keys()
_SWEEP_BATCH = 1000  # expired rows deleted per sweep statement (bounds lock time)
_INT8 = (-(2**63), 2**63 - 1)
_CLIENT_TIMEOUT_GRACE = 2.0  # seconds the client waits past the server's statement_timeout
_MAX_CHAR = 0x10FFFF
# Class id of the advisory lock serialising table creation ("grm" in ASCII).
_DDL_LOCK_CLASS = 0x67726D

_LIVE = "(expires_at IS NULL OR expires_at > now())"
_EXPIRY = "now() + $3::float8 * interval '1 second'"  # NULL seconds give a NULL expiry

# Extra keyword options PostgresStorage passes on to asyncpg.connect.
_CONNECT_OPTIONS = set(inspect.signature(asyncpg.connect).parameters) - {
    "dsn",
    "timeout",
    "command_timeout",
    "loop",
    "connection_class",
    "record_class",
}

# Query-string options from_url() understands; everything else stays in the DSN for asyncpg
# (which passes unknown parameters to the server as settings, e.g. application_name).
_URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "table": str,
    "schema": str,
    "ttl": float,
    "min_size": int,
    "max_size": int,
    "sweep_interval": float,
    "connect_timeout": float,
    "command_timeout": float,
    "create_table": lambda v: _parse_bool(v),
}


def _parse_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _identifier(value: object, argument: str) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.match(value) or len(value) > _MAX_IDENTIFIER:
        raise ConfigurationError(
            f"{argument} must be a plain SQL identifier (ASCII letters, digits and _, not "
            f"starting with a digit, at most {_MAX_IDENTIFIER} characters), got {value!r}",
            backend="postgres",
        )
    return value


def _successor(prefix: str) -> str | None:
    """The smallest string above every string starting with ``prefix`` (code point order).

    ``None`` when there is none (empty prefix, or only U+10FFFF characters): no upper bound.
    """
    stripped = prefix.rstrip(chr(_MAX_CHAR))
    if not stripped:
        return None
    nxt = ord(stripped[-1]) + 1
    if 0xD800 <= nxt <= 0xDFFF:  # surrogates are not characters PostgreSQL stores
        nxt = 0xE000
    return stripped[:-1] + chr(nxt)


def _storable(key: str) -> bool:
    """Whether PostgreSQL TEXT can hold ``key`` (no NUL, no unpaired surrogate)."""
    if "\x00" in key:
        return False
    try:
        key.encode()
    except UnicodeEncodeError:
        return False
    return True


def _blame(keys: Sequence[str]) -> str | None:
    """The key a failed bulk call is about: one PostgreSQL cannot store, or the only one."""
    bad = next((k for k in keys if not _storable(k)), None)
    return bad if bad is not None or len(keys) != 1 else keys[0]


def _healthy(con: Any, exc: BaseException) -> bool:
    """Whether ``con`` can serve the next caller after ``exc`` interrupted its last use.

    After a server-side error, an error from the caller's own code, a cancellation or a
    timeout, the connection is fine: on cancellation and timeout asyncpg has sent the server a
    cancel request (so the abandoned statement does not go on to write later), and the next
    query on the connection first waits for it to be acknowledged. After an I/O or protocol
    error, or if asyncpg gave up on it, the connection is dropped.
    """
    if isinstance(exc, (asyncpg.InterfaceError, asyncpg.InternalClientError)) or (
        isinstance(exc, OSError) and not isinstance(exc, TimeoutError)
    ):
        return False
    return not con.is_closed() and not con.is_in_transaction()


class _Pool:
    """A small LIFO pool of asyncpg connections, for storages built from a DSN.

    ``asyncpg.Pool`` spends about as long acquiring and releasing a connection (a timeout
    scope, a shielded release task, a reset query) as a loopback query takes: this pool takes
    an idle connection with a list pop and returns it with an append, doubling throughput.
    It offers the subset of the ``asyncpg.Pool`` interface the storage uses, so a caller's own
    ``asyncpg.Pool`` can stand in its place.

    Connections idle longer than ``max_idle`` seconds are closed instead of reused (a NAT or
    firewall may have dropped them silently); see :func:`_healthy` for failed calls.
    """

    def __init__(
        self, connect: Callable[[], Awaitable[Any]], max_size: int, max_idle: float = 300.0
    ) -> None:
        self._connect = connect
        self._max_size = max_size
        self._max_idle = max_idle
        self._idle: list[tuple[Any, float]] = []  # (connection, released at), LIFO
        self._size = 0  # idle + in use + being opened
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._closed = False

    async def fill(self, count: int) -> None:
        """Open ``count`` connections now (at least one: this checks the server is there)."""
        opened: list[Any] = []
        try:
            for _ in range(max(count, 1) - self._size):
                opened.append(await self._acquire())  # noqa: PERF401 - keep what opened
        finally:
            for con in opened:
                self._release(con)

    async def _acquire(self) -> Any:
        idle = self._idle
        while idle:
            con, since = idle.pop()
            if not con.is_closed() and time.monotonic() - since < self._max_idle:
                return con
            self._discard(con)
        while True:
            if self._closed:
                raise StorageClosedError("This PostgresStorage is closed", backend="postgres")
            if self._size < self._max_size:
                self._size += 1
                try:
                    return await self._connect()
                except BaseException:
                    self._size -= 1
                    self._wake()
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                con = await waiter
            except asyncio.CancelledError:
                # Handed a connection just as we were cancelled: pass it on, do not leak it.
                if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                    self._release(waiter.result())
                raise
            if con is not None:
                return con
            # None: a slot was freed (a connection dropped); go round and open one.

    def _release(self, con: Any) -> None:
        if self._closed:
            self._discard(con)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(con)
                return
        self._idle.append((con, time.monotonic()))

    def _discard(self, con: Any) -> None:
        con.terminate()
        self._size -= 1
        self._wake()

    def _wake(self) -> None:
        """Tell one waiter that a slot is free, so it opens a connection itself."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _recycle(self, con: Any, exc: BaseException) -> None:
        if _healthy(con, exc):
            self._release(con)
        else:
            self._discard(con)

    async def fetchval(self, query: str, *args: Any) -> Any:
        con = await self._acquire()
        try:
            result = await con.fetchval(query, *args)
        except BaseException as e:
            self._recycle(con, e)
            raise
        self._release(con)
        return result

    async def fetchrow(self, query: str, *args: Any) -> Any:
        con = await self._acquire()
        try:
            result = await con.fetchrow(query, *args)
        except BaseException as e:
            self._recycle(con, e)
            raise
        self._release(con)
        return result

    async def fetch(self, query: str, *args: Any) -> Any:
        con = await self._acquire()
        try:
            result = await con.fetch(query, *args)
        except BaseException as e:
            self._recycle(con, e)
            raise
        self._release(con)
        return result

    async def execute(self, query: str, *args: Any) -> Any:
        con = await self._acquire()
        try:
            result = await con.execute(query, *args)
        except BaseException as e:
            self._recycle(con, e)
            raise
        self._release(con)
        return result

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        """Lend one connection for several statements (a transaction)."""
        con = await self._acquire()
        try:
            yield con
        except BaseException as e:
            self._recycle(con, e)
            raise
        self._release(con)

    async def close(self) -> None:
        """Close idle connections; ones in use are dropped when they come back."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(
                    StorageClosedError("This PostgresStorage is closed", backend="postgres")
                )
        idle, self._idle = self._idle, []
        self._size -= len(idle)
        results = await asyncio.gather(
            *(con.close(timeout=5) for con, _ in idle), return_exceptions=True
        )
        for (con, _), result in zip(idle, results, strict=True):
            if isinstance(result, BaseException):
                con.terminate()  # a dead server: nothing to say goodbye to

    def terminate(self) -> None:
        """Drop every idle connection at once (after a failed open)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for con, _ in idle:
            self._discard(con)


class PostgresStorage(BaseStorage):
    """A storage in one PostgreSQL table, through an asyncpg connection pool.

    The connection and the table are set up on first use (or by :meth:`open` / ``async with``,
    to fail fast at start-up). Several processes may start at once: table creation is
    serialised by an advisory lock.

    Args:
        dsn_or_pool: A ``postgresql://`` (or ``postgres://``) DSN, for a pool this storage
            creates and closes; or an ``asyncpg.Pool`` you own (never closed by this storage).
        table: Table name, a plain identifier (used quoted, so case matters).
        schema: Schema of the table (created if missing); ``None`` uses the ``search_path``.
        ttl: Default time to live for writes that do not pass one.
        codec: How values become bytes; the default JSON lets ``incr`` run in SQL.
        sweep_interval: Seconds between deletions of expired rows (``None`` or 0: never; reads
            ignore expired rows either way).
        create_table: Create the table and index when missing; when False a missing table is a
            :class:`~gramio_storage.ConfigurationError` at open.
        min_size: Connections opened by :meth:`open` (at least one, to check the server).
        max_size: Most connections open at once; more concurrent calls wait for one.
        connect_timeout: Seconds to wait for a new connection.
        command_timeout: Seconds any statement may run (``None``: no limit). The server
            aborts a slower one (PostgreSQL ``statement_timeout``: nothing is written) and
            the call raises :class:`~gramio_storage.BackendTimeoutError`.
        **connect_options: More ``asyncpg.connect`` options (``ssl``, ``server_settings``,
            ``statement_cache_size=0`` behind PgBouncer in transaction mode...).

    Raises:
        ConfigurationError: A bad table/schema name, DSN or option.

    Example::

        storage = PostgresStorage("postgresql://bot:secret@db/bot", ttl=86400)
        async with storage:
            await storage.set("user:1", {"step": "ask_name"})
    """

    backend_name: ClassVar[str] = "postgres"

    # Class-level defaults so that repr() works even on an instance whose __init__ failed.
    _given_pool: Any = None
    _server = ""
    _database = ""
    _schema: str | None = None
    _table = ""
    _codec: Codec = JSON

    def __init__(
        self,
        dsn_or_pool: str | Any,
        *,
        table: str = "gramio_storage",
        schema: str | None = None,
        ttl: TTL | None = None,
        codec: Codec = JSON,
        sweep_interval: float | None = 60.0,
        create_table: bool = True,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 10.0,
        command_timeout: float | None = None,
        **connect_options: Any,
    ) -> None:
        super().__init__(codec=codec, ttl=ttl)
        self._table = _identifier(table, "table")
        self._schema = None if schema is None else _identifier(schema, "schema")
        if sweep_interval is not None and (
            not isinstance(sweep_interval, (int, float))
            or isinstance(sweep_interval, bool)
            or not (0 <= sweep_interval < math.inf)
        ):
            raise ConfigurationError(
                f"sweep_interval must be a non-negative number of seconds or None, "
                f"got {sweep_interval!r}",
                backend=self.backend_name,
            )
        self._sweep_interval = sweep_interval or None
        self._create = bool(create_table)
        self._secrets: list[str] = []
        self._dsn: str | None = None
        if isinstance(dsn_or_pool, str):
            self._dsn = dsn_or_pool
            self._describe_dsn(dsn_or_pool)
            for name, value in (("min_size", min_size), ("max_size", max_size)):
                if value.__class__ is not int or value < 0 or (name == "max_size" and value < 1):
                    raise ConfigurationError(
                        f"{name} must be a non-negative int (max_size >= 1), got {value!r}",
                        backend=self.backend_name,
                    )
            if min_size > max_size:
                raise ConfigurationError(
                    f"min_size ({min_size}) must not exceed max_size ({max_size})",
                    backend=self.backend_name,
                )
            for name, seconds in (
                ("connect_timeout", connect_timeout),
                ("command_timeout", command_timeout),
            ):
                if seconds is not None and not (
                    isinstance(seconds, (int, float)) and 0 < seconds < math.inf
                ):
                    raise ConfigurationError(
                        f"{name} must be a positive number of seconds, got {seconds!r}",
                        backend=self.backend_name,
                    )
            unknown = set(connect_options) - _CONNECT_OPTIONS
            if unknown:
                raise ConfigurationError(
                    f"Unknown PostgresStorage options {sorted(unknown)}; extra keywords go to "
                    "asyncpg.connect (ssl, server_settings, statement_cache_size...)",
                    backend=self.backend_name,
                )
            password = connect_options.get("password")
            if isinstance(password, str) and password:
                self._secrets.append(password)
            self._min_size, self._max_size = min_size, max_size
            client_timeout = None
            if command_timeout is not None:
                # The server enforces the limit: it aborts the statement, so a timed-out write
                # is never applied later and the connection stays usable. The client-side
                # timeout, a little longer, only catches a server that went silent.
                settings = dict(connect_options.get("server_settings") or {})
                settings.setdefault("statement_timeout", str(max(1, round(command_timeout * 1e3))))
                connect_options["server_settings"] = settings
                client_timeout = command_timeout + _CLIENT_TIMEOUT_GRACE
            self._connect_options: dict[str, Any] = {
                "timeout": connect_timeout,
                "command_timeout": client_timeout,
                **connect_options,
            }
        elif isinstance(dsn_or_pool, asyncpg.Pool):
            self._given_pool = dsn_or_pool
        else:
            raise ConfigurationError(
                "PostgresStorage takes a postgresql:// DSN or an asyncpg.Pool, got "
                f"{dsn_or_pool.__class__.__qualname__}",
                backend=self.backend_name,
            )
        # Set once the pool is usable and the table exists; hooks check only this.
        self._pool: Any = None
        self._opening = asyncio.Lock()
        self._closed = False
        self._sweeper: asyncio.Task[None] | None = None
        # JSON counters are incremented by the server in one statement; other codecs' bytes
        # are opaque to SQL, so their incr goes through a locked read-modify-write.
        self._sql_incr_ok = type(self._codec) is JSONCodec
        self._page_size = _PAGE_SIZE
        self._build_sql()

    # ------------------------------------------------------------------ construction helpers

    def _describe_dsn(self, dsn: str) -> None:
        """Validate the DSN's scheme; keep host/database for repr and the password to redact."""
        parts = urlsplit(dsn)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ConfigurationError(
                "PostgreSQL DSN must start with postgresql:// or postgres://, got "
                f"{parts.scheme + '://' if parts.scheme else 'no scheme'}",
                backend=self.backend_name,
            )
        userinfo, _, hosts = parts.netloc.rpartition("@")
        _, has_password, password = userinfo.partition(":")
        if has_password and password:
            self._secrets += [password, unquote(password)]
        query = dict(parse_qsl(parts.query))
        for key in ("password", "sslpassword"):
            if query.get(key):
                self._secrets.append(query[key])
        # asyncpg's default (no host anywhere) is the local Unix socket, else localhost.
        self._server = hosts or query.get("host") or "localhost"
        self._database = unquote(parts.path.lstrip("/"))

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresStorage:
        """Build from a ``postgresql://`` or ``postgres://`` URL.

        Storage options may ride in the query string (``?table=sessions&schema=bot&ttl=3600``,
        also ``min_size``, ``max_size``, ``sweep_interval``, ``connect_timeout``,
        ``command_timeout``, ``create_table``); keyword ``options`` win over them. Any other
        query parameter (``sslmode``, ``application_name``...) is left to asyncpg.

        Raises:
            ConfigurationError: A malformed option value (the message never quotes the URL).
        """
        if not isinstance(url, str):
            raise ConfigurationError(
                f"PostgreSQL URL must be a str, got {url.__class__.__qualname__}",
                backend=cls.backend_name,
            )
        parts = urlsplit(url)
        ours: dict[str, Any] = {}
        rest: list[tuple[str, str]] = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            convert = _URL_OPTIONS.get(key)
            if convert is None:
                rest.append((key, value))
                continue
            try:
                ours[key] = convert(value)
            except ValueError as e:
                raise ConfigurationError(
                    f"Bad value for the URL option {key!r}: {e}", backend=cls.backend_name
                ) from None
        ours.update(options)
        dsn = urlunsplit(parts._replace(query=urlencode(rest)))
        return cls(dsn, **ours)

    def _build_sql(self) -> None:
        table = f'"{self._table}"'
        if len(self._table) + len("_expires_at_idx") <= _MAX_IDENTIFIER:
            index = f"{self._table}_expires_at_idx"
        else:  # keep it unique per table without exceeding the identifier limit
            digest = hashlib.sha256(self._table.encode()).hexdigest()[:8]
            index = f"{self._table[: _MAX_IDENTIFIER - 24]}_{digest}_expires_at_idx"
        if self._schema is not None:
            table = f'"{self._schema}".{table}'
            self._index_ref = f'"{self._schema}"."{index}"'
        else:
            self._index_ref = f'"{index}"'
        self._table_ref = table
        t, live, exp = table, _LIVE, _EXPIRY
        upsert = (
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, "
            "expires_at = EXCLUDED.expires_at"
        )
        self._sql_create = [
            *([f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"'] if self._schema else []),
            f'CREATE TABLE IF NOT EXISTS {t} (key TEXT COLLATE "C" PRIMARY KEY, '
            "value BYTEA NOT NULL, expires_at TIMESTAMPTZ)",
            f'CREATE INDEX IF NOT EXISTS "{index}" ON {t} (expires_at) '
            "WHERE expires_at IS NOT NULL",
        ]
        self._sql_get = f"SELECT value FROM {t} WHERE key = $1 AND {live}"
        self._sql_has = f"SELECT 1 FROM {t} WHERE key = $1 AND {live}"
        self._sql_set = f"INSERT INTO {t} (key, value, expires_at) VALUES ($1, $2, {exp}) {upsert}"
        self._sql_delete = f"DELETE FROM {t} WHERE key = $1 RETURNING {live}"
        self._sql_get_many = f"SELECT key, value FROM {t} WHERE key = ANY($1::text[]) AND {live}"
        self._sql_set_many = (
            f"INSERT INTO {t} (key, value, expires_at) "
            f"SELECT k, v, {exp} FROM unnest($1::text[], $2::bytea[]) AS u(k, v) {upsert}"
        )
        self._sql_delete_many = (
            f"WITH d AS (DELETE FROM {t} WHERE key = ANY($1::text[]) RETURNING expires_at) "
            f"SELECT count(*) FROM d WHERE {live}"
        )
        # The prefix range [prefix, successor) is exact because comparisons use byte order;
        # COLLATE "C" is spelled out in case someone created the table with another collation.
        # The second column (seconds left, NULL for never) serves _scan_ttl at no extra cost.
        scan = "SELECT key, extract(epoch FROM expires_at - now())::float8 "
        scan += f'FROM {t} WHERE key {{op}} $1 COLLATE "C" {{hi}}AND {live} '
        scan += 'ORDER BY key COLLATE "C" LIMIT $2'
        hi = 'AND key < $3 COLLATE "C" '
        self._sql_scan = {
            (first, bounded): scan.format(op=">=" if first else ">", hi=hi if bounded else "")
            for first in (True, False)
            for bounded in (True, False)
        }
        clear = f"WITH d AS (DELETE FROM {t} {{where}}RETURNING expires_at) "
        clear += f"SELECT count(*) FROM d WHERE {live}"
        self._sql_clear_all = clear.format(where="")
        self._sql_clear_from = clear.format(where='WHERE key >= $1 COLLATE "C" ')
        self._sql_clear_range = clear.format(
            where='WHERE key >= $1 COLLATE "C" AND key < $2 COLLATE "C" '
        )
        self._sql_ttl = (
            f"SELECT extract(epoch FROM expires_at - now())::float8 FROM {t} "
            f"WHERE key = $1 AND {live}"
        )
        self._sql_add = (
            f"INSERT INTO {t} AS s (key, value, expires_at) VALUES ($1, $2, {exp}) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, "
            "expires_at = EXCLUDED.expires_at "
            "WHERE s.expires_at IS NOT NULL AND s.expires_at <= now() RETURNING true"
        )
        # The server parses the stored JSON number as int8: anything else (a float, a string,
        # true...) fails the cast, and the statement changes nothing. An expired row restarts.
        alive = "(s.expires_at IS NULL OR s.expires_at > now())"
        self._sql_incr = (
            f"INSERT INTO {t} AS s (key, value, expires_at) VALUES ($1, $2, {exp}) "
            f"ON CONFLICT (key) DO UPDATE SET value = CASE WHEN {alive} THEN "
            "convert_to((convert_from(s.value, 'UTF8')::int8 + $4::int8)::text, 'UTF8') "
            f"ELSE EXCLUDED.value END, expires_at = CASE WHEN {alive} THEN s.expires_at "
            "ELSE EXCLUDED.expires_at END RETURNING value"
        )
        # update(): read with the row version, then write only if the version is unchanged.
        self._sql_read_version = f"SELECT value, xmin, {live} FROM {t} WHERE key = $1"
        self._sql_read_locked = f"SELECT value, {live} FROM {t} WHERE key = $1 FOR UPDATE"
        self._sql_insert_new = (
            f"INSERT INTO {t} (key, value, expires_at) VALUES ($1, $2, {exp}) "
            "ON CONFLICT (key) DO NOTHING RETURNING true"
        )
        self._sql_write_cas = (
            f"UPDATE {t} SET value = $2, expires_at = {exp} WHERE key = $1 AND xmin = $4::xid "
            "RETURNING true"
        )
        self._sql_write_cas_keep = (
            f"UPDATE {t} SET value = $2 WHERE key = $1 AND xmin = $3::xid RETURNING true"
        )
        self._sql_write_locked = f"UPDATE {t} SET value = $2, expires_at = {exp} WHERE key = $1"
        self._sql_write_locked_keep = f"UPDATE {t} SET value = $2 WHERE key = $1"
        # Re-checking expires_at in the DELETE matters: a row re-set after the sub-select picked
        # it must survive. SKIP LOCKED lets several processes sweep without waiting on each other.
        self._sql_sweep = (
            f"WITH doomed AS (SELECT key FROM {t} WHERE expires_at <= now() "
            "ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED) "
            f"DELETE FROM {t} AS s USING doomed WHERE s.key = doomed.key "
            "AND s.expires_at <= now()"
        )

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> Self:
        """Connect and create the table if needed, now rather than on first use.

        Raises:
            BackendUnavailableError: The server cannot be reached.
            AuthenticationError: The server refused the credentials.
            ConfigurationError: The table is missing (``create_table=False``) or has another
                layout.
        """
        await cast(PostgresStorage, self._root)._ready()
        return self

    async def __aenter__(self) -> Self:
        return await self.open()

    async def _ready(self) -> Any:
        """Return the usable pool, creating it and the table on first call."""
        if self._closed:
            raise StorageClosedError("This PostgresStorage is closed", backend=self.backend_name)
        async with self._opening:
            if self._pool is not None:
                return self._pool
            if self._closed:
                raise StorageClosedError(
                    "This PostgresStorage is closed", backend=self.backend_name
                )
            pool = self._given_pool
            if pool is None:
                pool = _Pool(
                    functools.partial(asyncpg.connect, self._dsn, **self._connect_options),
                    self._max_size,
                )
            try:
                if self._given_pool is None:
                    try:
                        await pool.fill(self._min_size)
                    except Exception as e:
                        raise self._error(e, "connect") from e
                await self._prepare_table(pool)
                if self._closed:  # close() ran while we were connecting
                    raise StorageClosedError(
                        "This PostgresStorage is closed", backend=self.backend_name
                    )
            except BaseException:
                if self._given_pool is None:
                    pool.terminate()
                raise
            self._pool = pool
            if self._sweep_interval is not None:
                self._sweeper = asyncio.get_running_loop().create_task(
                    _sweep_loop(weakref.ref(self), self._sweep_interval),
                    name=f"gramio-storage postgres sweep {self._table}",
                )
            return pool

    async def _prepare_table(self, pool: Any) -> None:
        try:
            columns = await self._columns(pool)
            if columns:
                self._check_layout(columns)
                if await pool.fetchval("SELECT to_regclass($1)", self._index_ref):
                    return
            elif not self._create:
                raise ConfigurationError(
                    f"Table {self._table_ref} does not exist and create_table=False",
                    backend=self.backend_name,
                )
            async with pool.acquire() as con, con.transaction():
                # Concurrent CREATE ... IF NOT EXISTS can still collide in the catalogs
                # (duplicate key in pg_type): serialise creators on an advisory lock.
                await con.execute(
                    "SELECT pg_advisory_xact_lock($1::int4, hashtext($2))",
                    _DDL_LOCK_CLASS,
                    self._table_ref,
                )
                for statement in self._sql_create:
                    await con.execute(statement)
            self._check_layout(await self._columns(pool))
        except StorageError:
            raise
        except Exception as e:
            raise self._error(e, "create table") from e

    async def _columns(self, pool: Any) -> dict[str, str]:
        rows = await pool.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            self._table_ref,
        )
        return {name: kind for name, kind in rows}

    def _check_layout(self, columns: dict[str, str]) -> None:
        expected = {"key": "text", "value": "bytea", "expires_at": "timestamp with time zone"}
        wrong = {k: columns.get(k) for k, v in expected.items() if columns.get(k) != v}
        if wrong:
            raise ConfigurationError(
                f"Table {self._table_ref} exists with another layout ({wrong}); expected "
                "key TEXT, value BYTEA, expires_at TIMESTAMPTZ. Use another table name.",
                backend=self.backend_name,
            )

    async def _close(self) -> None:
        self._closed = True
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.wait([sweeper])
        pool, self._pool = self._pool, None
        if pool is not None and self._given_pool is None:
            await pool.close()

    def _repr_fields(self) -> dict[str, object]:
        fields: dict[str, object] = {}
        if self._given_pool is not None:
            fields["pool"] = "asyncpg.Pool"
        else:  # host and database only: the DSN may carry a password
            fields["server"] = self._server
            fields["database"] = self._database
        if self._schema is not None:
            fields["schema"] = self._schema
        fields["table"] = self._table
        if self._codec is not JSON:
            fields["codec"] = self._codec
        return fields

    # ------------------------------------------------------------------ errors

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _error(self, e: BaseException, op: str, key: str | None = None) -> StorageError:
        """Translate a driver or OS exception into the library's error for ``op`` on ``key``."""
        where = f" of key {key!r}" if key is not None else ""
        target = self._server or "the pool"
        message = self._redact(
            f"PostgreSQL {op}{where} failed ({target}): {e.__class__.__name__}: {e}"
        )
        if isinstance(e, StorageClosedError):  # closed while this call waited for a connection
            return StorageClosedError(str(e), key=key, backend=self.backend_name)
        state = getattr(e, "sqlstate", None) or ""
        kind: type[StorageError] = BackendError
        if (
            key is not None
            and (state == "22021" or isinstance(e.__cause__, UnicodeEncodeError))
            and not _storable(key)
        ):
            return InvalidKeyError(
                f"Key {key!r} cannot be stored in PostgreSQL: TEXT holds no NUL characters "
                "or unpaired surrogates",
                key=key,
                backend=self.backend_name,
            )
        if key is not None and state == "54000":  # index row size exceeds the maximum
            return InvalidKeyError(
                f"Key {key[:60]!r}... ({len(key.encode())} bytes) is too long for "
                "PostgreSQL's primary key index",
                key=key,
                backend=self.backend_name,
            )
        if isinstance(e, TimeoutError) or state == "57014":  # 57014: statement timeout
            kind = BackendTimeoutError
        elif state.startswith("28"):
            kind = AuthenticationError
        elif (
            isinstance(e, OSError)
            or state.startswith(("08", "53", "57P"))  # connection, resources, shutdown
            or state == "3D000"  # the database does not exist
            or (
                isinstance(e, asyncpg.InterfaceError)
                and ("closed" in str(e) or "closing" in str(e))
            )
        ):
            kind = BackendUnavailableError
        return kind(message, key=key, backend=self.backend_name)

    # ------------------------------------------------------------------ hooks

    async def _get(self, key: str) -> bytes | None:
        pool = self._pool or await self._ready()
        try:
            return await pool.fetchval(self._sql_get, key)  # type: ignore[no-any-return]
        except Exception as e:
            raise self._error(e, "get", key) from e

    async def _has(self, key: str) -> bool:
        pool = self._pool or await self._ready()
        try:
            return await pool.fetchval(self._sql_has, key) is not None
        except Exception as e:
            raise self._error(e, "has", key) from e

    async def _set(self, key: str, data: bytes, ttl: float | None) -> None:
        pool = self._pool or await self._ready()
        try:
            await pool.execute(self._sql_set, key, data, ttl)
        except Exception as e:
            raise self._error(e, "set", key) from e

    async def _delete(self, key: str) -> bool:
        pool = self._pool or await self._ready()
        try:
            # NULL: no row; False: an expired row (deleted, but it did not "exist").
            return await pool.fetchval(self._sql_delete, key) is True
        except Exception as e:
            raise self._error(e, "delete", key) from e

    async def _get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        pool = self._pool or await self._ready()
        try:
            rows = await pool.fetch(self._sql_get_many, keys)
        except Exception as e:
            raise self._error(e, "get_many", _blame(keys)) from e
        found: dict[str, bytes] = dict(rows)
        return [found.get(k) for k in keys]

    async def _set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        pool = self._pool or await self._ready()
        # One row per key (ON CONFLICT cannot touch a row twice), in key order so that
        # concurrent batches lock rows in the same order and cannot deadlock.
        latest = dict(items)
        keys = sorted(latest)
        try:
            await pool.execute(self._sql_set_many, keys, [latest[k] for k in keys], ttl)
        except Exception as e:
            raise self._error(e, "set_many", _blame(keys)) from e

    async def _delete_many(self, keys: Sequence[str]) -> int:
        pool = self._pool or await self._ready()
        try:
            return await pool.fetchval(self._sql_delete_many, sorted(set(keys)))  # type: ignore[no-any-return]
        except Exception as e:
            raise self._error(e, "delete_many", _blame(keys)) from e

    async def _scan(self, prefix: str) -> AsyncIterator[str]:
        async for rows in self._scan_pages(prefix):
            for row in rows:
                yield row[0]

    async def _scan_ttl(self, prefix: str) -> AsyncIterator[tuple[str, float | None]]:
        # The pages carry the seconds left (server clock): no query per key for the CLI.
        async for rows in self._scan_pages(prefix):
            for row in rows:
                yield row[0], row[1]

    async def _scan_pages(self, prefix: str) -> AsyncIterator[list[Any]]:
        """Live ``(key, seconds left)`` rows starting with ``prefix``, a page at a time."""
        pool = self._pool or await self._ready()
        if not _storable(prefix):  # no stored key can start with it
            return
        upper = _successor(prefix)
        page = self._page_size
        cursor, first = prefix, True
        while True:
            sql = self._sql_scan[first, upper is not None]
            args = (cursor, page) if upper is None else (cursor, page, upper)
            try:
                rows = await pool.fetch(sql, *args)
            except Exception as e:
                raise self._error(e, f"keys({prefix!r})") from e
            if rows:
                yield rows
            if len(rows) < page:
                return
            # Keyset pagination: the next page starts after the last key seen, so deletes and
            # inserts between pages neither skip nor repeat surviving keys.
            cursor, first = rows[-1][0], False

    async def _clear(self, prefix: str) -> int:
        pool = self._pool or await self._ready()
        if not _storable(prefix):
            return 0
        upper = _successor(prefix)
        try:
            if not prefix:
                count = await pool.fetchval(self._sql_clear_all)
            elif upper is None:
                count = await pool.fetchval(self._sql_clear_from, prefix)
            else:
                count = await pool.fetchval(self._sql_clear_range, prefix, upper)
        except Exception as e:
            raise self._error(e, f"clear({prefix!r})") from e
        return count  # type: ignore[no-any-return]

    async def _ttl(self, key: str) -> float | None:
        pool = self._pool or await self._ready()
        try:
            row = await pool.fetchrow(self._sql_ttl, key)
        except Exception as e:
            raise self._error(e, "ttl", key) from e
        if row is None:
            raise self._not_found(key)
        return row[0]  # type: ignore[no-any-return]

    async def _add(self, key: str, data: bytes, ttl: float | None) -> bool:
        pool = self._pool or await self._ready()
        try:
            return await pool.fetchval(self._sql_add, key, data, ttl) is True
        except Exception as e:
            raise self._error(e, "add", key) from e

    async def _incr(self, key: str, amount: int, ttl: float | None) -> int:
        pool = self._pool or await self._ready()
        if self._sql_incr_ok and _INT8[0] <= amount <= _INT8[1]:
            try:
                data = await pool.fetchval(self._sql_incr, key, self._encode(amount), ttl, amount)
            except Exception as e:
                state = getattr(e, "sqlstate", None)
                if state == "22P02" or (state == "22021" and "\x00" not in key):
                    # The stored value is not an integer (or not even UTF-8 text).
                    raise DecodeError(
                        f"Cannot increment key {key!r}: the stored value is not an integer",
                        key=key,
                        backend=self.backend_name,
                    ) from e
                if state != "22003":  # 22003: beyond int8, redone with Python's ints below
                    raise self._error(e, "incr", key) from e
            else:
                return int(data)
        result: list[int] = []

        def add(data: bytes | None) -> bytes:
            value = amount if data is None else self._decode_int(key, data) + amount
            result[:] = (value,)
            return self._encode(value)  # type: ignore[no-any-return]

        await self._read_modify_write(pool, key, add, ttl, keep_expiry=True)
        return result[0]

    async def _update(
        self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None
    ) -> None:
        pool = self._pool or await self._ready()
        await self._read_modify_write(pool, key, fn, ttl, keep_expiry=False)

    async def _read_modify_write(
        self,
        pool: Any,
        key: str,
        fn: Callable[[bytes | None], bytes],
        ttl: float | None,
        *,
        keep_expiry: bool,
    ) -> None:
        """Replace ``key``'s bytes by ``fn(current)`` with no lost update across processes.

        First optimistically: read the row and its version (``xmin``, which every update
        changes), then write only if the version is unchanged, two autocommit round trips.
        If another writer got in first, redo it under a row lock (``SELECT ... FOR UPDATE``),
        which serialises the writers of a hot key instead of letting them retry forever.
        ``keep_expiry``: a live row keeps its expiry (``incr``); otherwise the write takes
        ``ttl``. ``fn`` errors propagate untouched, and nothing is written.
        """
        op = "incr" if keep_expiry else "update"
        try:
            row = await pool.fetchrow(self._sql_read_version, key)
        except Exception as e:
            raise self._error(e, op, key) from e
        if row is None:
            new = fn(None)
            try:
                if await pool.fetchval(self._sql_insert_new, key, new, ttl):
                    return
            except Exception as e:
                raise self._error(e, op, key) from e
        else:
            value, version, live = row
            new = fn(value if live else None)
            try:
                if keep_expiry and live:
                    done = await pool.fetchval(self._sql_write_cas_keep, key, new, version)
                else:
                    done = await pool.fetchval(self._sql_write_cas, key, new, ttl, version)
            except Exception as e:
                raise self._error(e, op, key) from e
            if done:
                return
        while True:  # lost the race: take the row lock
            try:
                async with pool.acquire() as con, con.transaction():
                    row = await con.fetchrow(self._sql_read_locked, key)
                    if row is None:
                        # Nothing to lock: insert-if-absent; if someone else inserted first,
                        # go round again and lock their row.
                        if await con.fetchval(self._sql_insert_new, key, fn(None), ttl):
                            return
                        continue
                    value, live = row
                    new = fn(value if live else None)
                    if keep_expiry and live:
                        await con.execute(self._sql_write_locked_keep, key, new)
                    else:
                        await con.execute(self._sql_write_locked, key, new, ttl)
                    return
            except StorageError:
                raise  # from fn (EncodeError, DecodeError): the transaction rolled back
            except Exception as e:
                if isinstance(e, (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
                    raise self._error(e, op, key) from e
                raise  # fn's own exception

    async def _sweep(self) -> int:
        """Delete expired rows in batches; return how many went."""
        pool = self._pool
        total = 0
        while pool is not None:
            try:
                status = await pool.execute(self._sql_sweep, _SWEEP_BATCH)
            except Exception as e:
                raise self._error(e, "sweep") from e
            deleted = int(status.rpartition(" ")[2])
            total += deleted
            if deleted < _SWEEP_BATCH:
                break
            await asyncio.sleep(0)  # a big backlog: let the bot's own queries through
        return total


async def _sweep_loop(ref: weakref.ref[PostgresStorage], interval: float) -> None:
    """Sweep expired rows every ``interval`` seconds until the storage is closed or dropped.

    Holds only a weak reference between sweeps, so a storage nobody uses any more can be
    garbage collected; the loop then ends on its next tick.
    """
    while True:
        await asyncio.sleep(interval)
        storage = ref()
        if storage is None or storage._pool is None:
            return
        try:
            await storage._sweep()
        except Exception as e:
            # The bot keeps working (reads ignore expired rows): say why, try again next time.
            log.warning("Expired-row sweep of %s failed: %s", storage._table_ref, e)
        del storage
