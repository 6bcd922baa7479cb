"""The PostgreSQL backend: one table, shared safely by any number of bot processes.

Every operation is a single statement except ``update``'s read-modify-write, which is
optimistic (a read, then a write conditional on the row version ``xmin``) and falls back to a
``SELECT ... FOR UPDATE`` transaction when another writer got in first. Expiry uses the
server's clock (``now()``), so processes with skewed clocks agree; expired rows are invisible
to every operation and a periodic sweep deletes them.

The connections and the table are set up on first use (or by :meth:`PostgresBackend.open`).
Used from another event loop than the one it connected on (a second ``asyncio.run()``), the
backend drops its connections without awaiting them and opens new ones on the new loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from .._backend import Backend, Capabilities, Entry, parse_int
from .._backend_util import LoopGuard, positive_seconds, upper_bound
from .._errors import BackendUnavailableError, ConfigurationError, StorageClosedError
from .._redact import Redactor
from ._dsn import parse_dsn
from ._errors import NAME, ErrorMap
from ._pool import Pool, connector
from ._sql import Statements, identifier, prepare_table

__all__ = ["MAX_KEY_BYTES", "MAX_TTL", "PostgresBackend"]

log = logging.getLogger("gramio_storage.postgres")
_running_loop = asyncio.get_running_loop

# The B-tree of the primary key holds index rows of at most 2,704 bytes (8 KB pages): a TEXT
# key of 2,692 UTF-8 bytes, when it does not compress. Longer keys sometimes fit (PostgreSQL
# compresses index rows) and sometimes not, so the core refuses them all before any I/O.
MAX_KEY_BYTES = 2692
# now() + ttl * interval '1 second' must stay a valid timestamptz (up to the year 294276, about
# 9.2e12 s from now); 10**12 s (31,700 years), as for Redis and SQLite, is far inside it.
MAX_TTL = 1e12
_CAPS = Capabilities(
    name=NAME,
    atomic=True,
    lists_ttls=True,
    max_ttl=MAX_TTL,
    max_key_bytes=MAX_KEY_BYTES,
    persistent=True,
    shared=True,
)
_PAGE_SIZE = 1000  # keys per keyset page in scan()
_SWEEP_BATCH = 1000  # expired rows deleted per sweep statement (bounds lock time)
_INT8 = range(-(2**63), 2**63)


class PostgresBackend(Backend):
    """Rows of one PostgreSQL table, through asyncpg.

    Args:
        dsn_or_pool: A ``postgresql://`` (or ``postgres://``) DSN, for connections this
            backend opens and closes; or an ``asyncpg.Pool`` the caller owns (never closed).
        table: Table name, a plain identifier (used quoted, so case matters).
        schema: Schema of the table (created if missing); ``None`` uses the ``search_path``.
        timeout: Seconds any statement may run (``None``: no limit), enforced by the server.
        connect_timeout: Seconds to wait for a new connection.
        min_connections: Connections opened by :meth:`open` (at least one, to check).
        max_connections: Most connections open at once; more concurrent calls wait for one.
        sweep_interval: Seconds between deletions of expired rows; ``None``: never.
        create_table: Create the table and index when missing.
        **connect_options: More ``asyncpg.connect`` options (``ssl``, ``server_settings``...).
    """

    capabilities = _CAPS

    def __init__(
        self,
        dsn_or_pool: str | Any,
        *,
        table: str = "gramio_storage",
        schema: str | None = None,
        timeout: float | None = None,
        connect_timeout: float = 10.0,
        min_connections: int = 1,
        max_connections: int = 10,
        sweep_interval: float | None = 60.0,
        create_table: bool = True,
        **connect_options: Any,
    ) -> None:
        self._table = identifier(table, "table")
        self._schema = None if schema is None else identifier(schema, "schema")
        self._sweep_interval = positive_seconds(sweep_interval, "sweep_interval", backend=NAME)
        self._create = bool(create_table)
        self._redact = Redactor()
        self._given_pool: Any = None
        self._server = self._database = ""
        if isinstance(dsn_or_pool, str):
            self._server, self._database = parse_dsn(dsn_or_pool, self._redact)
            self._connect = connector(
                dsn_or_pool,
                timeout=timeout,
                connect_timeout=connect_timeout,
                min_connections=min_connections,
                max_connections=max_connections,
                options=connect_options,
                redact=self._redact,
            )
            self._min_connections, self._max_connections = min_connections, max_connections
        elif isinstance(dsn_or_pool, asyncpg.Pool):
            self._given_pool = dsn_or_pool
        else:
            raise ConfigurationError(
                "PostgresStorage takes a postgresql:// DSN or an asyncpg.Pool, got "
                f"{dsn_or_pool.__class__.__qualname__}",
                backend="postgres",
            )
        self._errors = ErrorMap(self._server or "the pool", self._redact).scope
        self._sql = Statements(self._table, self._schema)
        self._pool: Any = None  # set once usable on the current loop and the table exists
        self._prepared = False  # the table was checked (or created) once
        self._guard = LoopGuard()
        self._pool_loop: asyncio.AbstractEventLoop | None = None  # where _pool was made
        self._given_loop: asyncio.AbstractEventLoop | None = None  # where _given_pool works
        self._opening = asyncio.Lock()
        self._closed = False
        self._sweeper: asyncio.Task[None] | None = None
        self._page_size = _PAGE_SIZE

    @property
    def table(self) -> str:
        """The table keys live in."""
        return self._table

    @property
    def schema(self) -> str | None:
        """The table's schema (``None``: the connection's ``search_path``)."""
        return self._schema

    def describe(self) -> dict[str, object]:
        fields: dict[str, object] = {}
        if self._given_pool is not None:
            fields["pool"] = "asyncpg.Pool"
        else:  # host and database only: the DSN may carry a password
            fields["server"] = self._server
            fields["database"] = self._database
        if self._schema is not None:
            fields["schema"] = self._schema
        fields["table"] = self._table
        return fields

    # ------------------------------------------------------------------ lifecycle

    def _current(self) -> Any:
        """The pool if it is ready on the running loop, else None (then await _ready()).

        The hot path of every operation (bench/bench_postgres.py): on the pool's own loop, one
        C call and a comparison; the loop guard only runs when the loop differs.
        """
        if _running_loop() is self._pool_loop:
            return self._pool
        if self._guard.changed():
            self._forget_loop()
        return self._pool

    def _forget_loop(self) -> None:
        """The event loop changed: drop the old loop's connections and sweeper, awaiting nothing.

        If the old loop still runs (in another thread), they are dropped on it; if it closed,
        here. A pool the caller passed in is theirs: it is not touched.
        """
        old, self._pool_loop = self._pool_loop, None
        pool, self._pool = self._pool, None
        sweeper, self._sweeper = self._sweeper, None
        self._opening = asyncio.Lock()
        for drop in (
            None if sweeper is None else sweeper.cancel,
            None if pool is None or self._given_pool is not None else pool.terminate,
        ):
            if drop is not None:
                _call_on(old, drop)

    async def open(self) -> None:
        """Connect and check (or create) the table now; ``PostgresStorage.open`` has the errors."""
        if self._current() is None:
            await self._ready()

    async def _ready(self) -> Any:
        """Return the usable pool, connecting (and creating the table) on first use."""
        if self._closed:
            raise _closed()
        async with self._opening:
            if self._pool is not None:
                return self._pool
            if self._closed:
                raise _closed()
            loop = asyncio.get_running_loop()
            pool = self._given_pool
            if pool is None:
                pool = Pool(self._connect, self._max_connections)
            elif self._prepared and loop is not self._given_loop:
                raise BackendUnavailableError(
                    "The asyncpg.Pool passed to PostgresStorage belongs to another event loop; "
                    "create the pool and the storage on the loop that uses them",
                    backend="postgres",
                )
            try:
                if self._given_pool is None:
                    with self._errors("connect"):
                        await pool.fill(self._min_connections)
                if not self._prepared:
                    with self._errors("table setup"):
                        await prepare_table(pool, self._sql, create=self._create)
                if self._closed:  # close() ran while we were connecting
                    raise _closed()
            except BaseException:
                if self._given_pool is None:
                    pool.terminate()
                raise
            self._prepared = True
            self._given_loop = loop
            self._pool, self._pool_loop = pool, loop
            if self._sweep_interval is not None:
                self._sweeper = loop.create_task(
                    _sweep_loop(weakref.ref(self), self._sweep_interval),
                    name=f"gramio-storage postgres sweep {self._table}",
                )
            return pool

    async def close(self) -> None:
        self._closed = True
        if self._guard.changed():
            self._forget_loop()
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.wait([sweeper])
        pool, self._pool = self._pool, None
        if pool is not None and self._given_pool is None:
            await pool.close()

    # ------------------------------------------------------------------ plain operations

    async def get(self, key: str) -> bytes | None:
        pool = self._current() or await self._ready()
        with self._errors("get", key):
            return await pool.fetchval(self._sql.get, key)  # type: ignore[no-any-return]

    async def has(self, key: str) -> bool:
        pool = self._current() or await self._ready()
        with self._errors("has", key):
            return await pool.fetchval(self._sql.has, key) is not None

    async def set(self, key: str, data: bytes, ttl: float | None) -> None:
        pool = self._current() or await self._ready()
        with self._errors("set", key):
            await pool.execute(self._sql.set, key, data, ttl)

    async def delete(self, key: str) -> bool:
        pool = self._current() or await self._ready()
        with self._errors("delete", key):
            return await pool.fetchval(self._sql.delete, key) is True

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        pool = self._current() or await self._ready()
        with self._errors("get_many", keys=keys):
            found: dict[str, bytes] = dict(await pool.fetch(self._sql.get_many, keys))
        return [found.get(k) for k in keys]

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        pool = self._current() or await self._ready()
        # One row per key (ON CONFLICT cannot touch a row twice), in key order so that
        # concurrent batches lock rows in the same order and cannot deadlock.
        latest = dict(items)
        keys = sorted(latest)
        with self._errors("set_many", keys=keys):
            await pool.execute(self._sql.set_many, keys, [latest[k] for k in keys], ttl)

    async def set_entries(self, entries: Sequence[Entry], *, overwrite: bool = True) -> list[bool]:
        if not overwrite or not entries:
            return await super().set_entries(entries, overwrite=overwrite)
        pool = self._current() or await self._ready()
        latest = {k: (data, ttl) for k, data, ttl in entries}  # a key listed twice: the last
        keys = sorted(latest)  # key order, as set_many, so concurrent batches cannot deadlock
        with self._errors("set_entries", keys=keys):
            await pool.execute(
                self._sql.set_entries,
                keys,
                [latest[k][0] for k in keys],
                [latest[k][1] for k in keys],
            )
        return [True] * len(entries)

    async def delete_many(self, keys: Sequence[str]) -> int:
        pool = self._current() or await self._ready()
        with self._errors("delete_many", keys=keys):
            return await pool.fetchval(self._sql.delete_many, sorted(set(keys)))  # type: ignore[no-any-return]

    async def scan(self, prefix: str) -> AsyncIterator[str]:
        async for rows in self._scan_pages(prefix):
            for row in rows:
                yield row[0]

    async def scan_ttl(self, prefix: str) -> AsyncIterator[tuple[str, float | None]]:
        # The pages carry the seconds left (server clock): no query per key.
        async for rows in self._scan_pages(prefix):
            for row in rows:
                yield row[0], row[1]

    async def _scan_pages(self, prefix: str) -> AsyncIterator[list[Any]]:
        """Live ``(key, seconds left)`` rows starting with ``prefix``, a page at a time."""
        pool = self._current() or await self._ready()
        if "\x00" in prefix:  # TEXT holds no NUL: no stored key starts with it
            return
        upper = upper_bound(prefix)
        page = self._page_size
        cursor, first = prefix, True
        while True:
            sql = self._sql.scan[first, upper is not None]
            args = (cursor, page) if upper is None else (cursor, page, upper)
            with self._errors(f"keys({prefix!r})"):
                rows = await pool.fetch(sql, *args)
            if rows:
                yield rows
            if len(rows) < page:
                return
            # Keyset pagination: the next page starts after the last key seen, so deletes and
            # inserts between pages neither skip nor repeat surviving keys.
            cursor, first = rows[-1][0], False

    async def clear(self, prefix: str) -> int:
        pool = self._current() or await self._ready()
        if "\x00" in prefix:
            return 0
        upper = upper_bound(prefix)
        with self._errors(f"clear({prefix!r})"):
            if not prefix:
                return await pool.fetchval(self._sql.clear_all)  # type: ignore[no-any-return]
            if upper is None:
                return await pool.fetchval(self._sql.clear_from, prefix)  # type: ignore[no-any-return]
            return await pool.fetchval(self._sql.clear_range, prefix, upper)  # type: ignore[no-any-return]

    async def ttl(self, key: str) -> float | None:
        pool = self._current() or await self._ready()
        with self._errors("ttl", key):
            row = await pool.fetchrow(self._sql.ttl, key)
        if row is None:
            raise self.not_found(key)
        return row[0]  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ atomic operations

    async def add(self, key: str, data: bytes, ttl: float | None) -> bool:
        pool = self._current() or await self._ready()
        with self._errors("add", key):
            return await pool.fetchval(self._sql.add, key, data, ttl) is True

    async def incr(self, key: str, amount: int, ttl: float | None) -> int:
        pool = self._current() or await self._ready()
        if amount in _INT8:
            with self._errors("incr", key):
                try:
                    data = await pool.fetchval(
                        self._sql.incr, key, str(amount).encode(), ttl, amount
                    )
                except asyncpg.NumericValueOutOfRangeError:
                    data = None  # beyond int8: redone with Python's integers below
            if data is not None:
                return int(data)
        result: list[int] = []

        def add(data: bytes | None) -> bytes:
            value = amount if data is None else parse_int(self, key, data) + amount
            result[:] = (value,)
            return str(value).encode()

        await self._read_modify_write(pool, key, add, ttl, keep_expiry=True)
        return result[0]

    async def update(
        self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None
    ) -> None:
        pool = self._current() or await self._ready()
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
        sql, errors = self._sql, self._errors("incr" if keep_expiry else "update", key)
        with errors:
            row = await pool.fetchrow(sql.read_version, key)
        if row is None:
            new = fn(None)
            with errors:
                done = await pool.fetchval(sql.insert_new, key, new, ttl)
        else:
            value, version, live = row
            new = fn(value if live else None)
            with errors:
                if keep_expiry and live:
                    done = await pool.fetchval(sql.write_cas_keep, key, new, version)
                else:
                    done = await pool.fetchval(sql.write_cas, key, new, ttl, version)
        if done:
            return
        while True:  # lost the race: take the row lock
            with errors:
                async with pool.acquire() as con, con.transaction():
                    row = await con.fetchrow(sql.read_locked, key)
                    if row is None:
                        # Nothing to lock: insert-if-absent; if someone else inserted first,
                        # go round again and lock their row.
                        if await con.fetchval(sql.insert_new, key, fn(None), ttl):
                            return
                        continue
                    value, live = row
                    new = fn(value if live else None)
                    if keep_expiry and live:
                        await con.execute(sql.write_locked_keep, key, new)
                    else:
                        await con.execute(sql.write_locked, key, new, ttl)
                    return

    # ------------------------------------------------------------------ maintenance

    async def sweep(self) -> int:
        """Delete expired rows in batches; return how many went."""
        pool = self._pool
        total = 0
        while pool is not None:
            with self._errors("sweep"):
                status = await pool.execute(self._sql.sweep, _SWEEP_BATCH)
            deleted = int(status.rpartition(" ")[2])
            total += deleted
            if deleted < _SWEEP_BATCH:
                break
            await asyncio.sleep(0)  # a big backlog: let the bot's own queries through
        return total


def _closed() -> StorageClosedError:
    return StorageClosedError("This PostgresStorage is closed", backend="postgres")


def _call_on(loop: asyncio.AbstractEventLoop | None, fn: Callable[[], object]) -> None:
    """Run ``fn`` on ``loop`` if that loop can still run it, else right here."""
    if loop is not None and not loop.is_closed():
        with contextlib.suppress(RuntimeError):  # closed meanwhile
            loop.call_soon_threadsafe(fn)
            return
    with contextlib.suppress(RuntimeError):  # a task of a closed loop: nothing to cancel
        fn()


async def _sweep_loop(ref: weakref.ref[PostgresBackend], interval: float) -> None:
    """Sweep expired rows every ``interval`` seconds until the backend is closed or dropped.

    Holds only a weak reference between sweeps, so a backend nobody uses any more can be
    garbage collected; the loop then ends on its next tick.
    """
    while True:
        await asyncio.sleep(interval)
        backend = ref()
        if backend is None or backend._pool is None:
            return
        try:
            await backend.sweep()
        except Exception as e:
            # The bot keeps working (reads ignore expired rows): say why, try again next time.
            log.warning("Expired-row sweep of %s failed: %s", backend._sql.table_ref, e)
        del backend
