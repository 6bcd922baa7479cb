"""SQLiteBackend: the Backend contract over one stdlib ``sqlite3`` connection, run inline."""

from __future__ import annotations

import asyncio
import math
import os
import random
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from .._backend import Backend, Capabilities, Entry, parse_int
from .._backend_util import upper_bound
from .._errors import ConfigurationError
from . import _sql
from ._connection import Checkpointer, file_identity, open_connection
from ._errors import is_busy, translate
from ._upkeep import WAKE_EVERY, Upkeep, clock

__all__ = ["SQLiteBackend"]

# The largest TTL: expires_at = now + ttl stays a float exact to well under a millisecond.
MAX_TTL = 1e12
# The longest key. SQLite takes up to its length limit (1 GB), but every key also lives in the
# primary-key index; 1 MiB is far beyond any bot's key and keeps batches of keys cheap to check.
MAX_KEY_BYTES = 1024 * 1024


class SQLiteBackend(Upkeep, Backend):
    """Rows ``(key, value, expires_at)`` in one table of one SQLite file (or ``:memory:``).

    Args:
        path: The database file (created if missing), or ``":memory:"``.
        table: The table name (a plain SQL identifier).
        timeout: Seconds an operation waits for another process's write lock.
        sweep_interval: Seconds between sweeps of expired rows; ``None``: no sweep.
        clock: Epoch seconds (``time.time``); tests pass a fake clock.
        text: Bind values as TEXT (what GramIO's ``JSON.parse`` reads) rather than BLOBs.
        read_only: Open an existing database with ``mode=ro``: it is never created or
            changed, and a missing file is :class:`~gramio_storage.BackendUnavailableError`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        table: str = "gramio_storage",
        timeout: float = 5.0,
        sweep_interval: float | None = 60.0,
        clock: Callable[[], float] = time.time,
        text: bool = True,
        read_only: bool = False,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise ConfigurationError(
                f"path must be a str or os.PathLike, got {path.__class__.__qualname__}",
                backend="sqlite",
            )
        path = os.fspath(path)
        if not path:
            raise ConfigurationError(
                "path must not be empty (use ':memory:' for an in-memory database)",
                backend="sqlite",
            )
        self._sql = _sql.Statements(table)
        _positive(timeout, "timeout")
        if sweep_interval is not None:
            _positive(sweep_interval, "sweep_interval")
        self._path = path
        self._table = table
        self._timeout = float(timeout)
        self._sweep_interval = sweep_interval
        self._clock = clock
        self._memory = path == ":memory:"
        if read_only and self._memory:
            raise ConfigurationError(
                "read_only makes no sense for ':memory:' (a new, empty database)",
                backend="sqlite",
            )
        self._read_only = bool(read_only)
        self._abspath = path if self._memory else os.path.abspath(path)
        self._text = text
        self._closed = False
        self._init_upkeep()
        self._checkpointer: Checkpointer | None = None

        self._conn = open_connection(
            path, table, self._timeout, self._error, read_only=self._read_only
        )
        self._identity = None if self._memory else file_identity(self._abspath)
        if not (self._memory or self._read_only):
            self._checkpointer = Checkpointer(self._abspath, self._timeout)
            # A dropped backend stops its thread; the thread holds no reference to it.
            weakref.finalize(self, self._checkpointer.stop)
        self._cur = self._conn.cursor()
        self._ex = self._cur.execute
        variables = self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        # A power of two (IN lists are padded to one) leaving a variable for the clock.
        self._chunk = 1 << (min(_sql.MAX_CHUNK, variables - 1).bit_length() - 1)
        length = self._conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
        self.capabilities = Capabilities(  # per instance: :memory:
            name="sqlite",
            atomic=True,
            max_ttl=MAX_TTL,
            max_key_bytes=min(MAX_KEY_BYTES, length),
            max_value_bytes=length,
            lists_ttls=True,
            persistent=not self._memory,
            shared=not self._memory,
        )
        self._start_sweeping()

    # ------------------------------------------------------------------ setup

    def describe(self) -> dict[str, object]:
        fields: dict[str, object] = {"path": self._path}
        if self._table != "gramio_storage":
            fields["table"] = self._table
        return fields

    @property
    def path(self) -> str:
        """The database file (``":memory:"`` for an in-memory database)."""
        return self._path

    @property
    def table(self) -> str:
        """The table keys live in."""
        return self._table

    @property
    def read_only(self) -> bool:
        """Whether the database was opened read-only (``mode=ro``)."""
        return self._read_only

    @property
    def checkpointer(self) -> Checkpointer | None:
        """The thread that checkpoints the WAL (None for ``:memory:`` and read-only)."""
        return self._checkpointer

    # ------------------------------------------------------------------ errors and retries

    def _error(self, e: sqlite3.Error, op: str, key: str | None) -> Exception:
        return translate(
            e, op=op, key=key, path=self._path, timeout=self._timeout, closed=self._closed
        )

    async def _run(self, op: str, key: str | None, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` inline; on a driver error, :meth:`_retry` or the library's error."""
        if clock() >= self._due:
            await self._turn()
        try:
            return fn(*args)
        except sqlite3.Error as e:
            return await self._retry(op, key, fn, args, e)

    async def _retry(
        self,
        op: str,
        key: str | None,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        error: sqlite3.Error,
    ) -> Any:
        """Retry ``fn(*args)`` after ``error``: with async backoff while the database is busy.

        The first attempt ran inline and failed; only lock contention is worth retrying, and
        the waiting happens here, in ``asyncio.sleep``, never in SQLite's busy handler. Any
        other error becomes the library's error for ``op`` on ``key``.
        """
        if not is_busy(error) or self._closed:
            raise self._error(error, op, key) from error
        deadline = time.monotonic() + self._timeout
        delay = 0.0005
        while True:
            # Jitter keeps processes that collided from colliding again in lockstep.
            pause = min(delay, max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(pause * random.random())  # noqa: S311 - jitter, not secrets
            try:
                return fn(*args)
            except sqlite3.Error as e:
                if not is_busy(e) or self._closed or time.monotonic() >= deadline:
                    raise self._error(e, op, key) from e
            delay = min(delay * 2, 0.05)

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.rollback()

    # ------------------------------------------------------------------ value cells

    def _cell(self, value: Any) -> bytes:
        """The stored bytes for a value cell, whatever SQLite made of it.

        Our own rows come back as bytes (TEXT and BLOB alike, ``text_factory=bytes``). GramIO's
        ``JSONB`` column has NUMERIC affinity: the JSON text of a number is stored as an
        INTEGER or REAL cell, which is turned back into JSON here.
        """
        if value.__class__ is bytes:
            return value
        if value.__class__ is int:
            return b"%d" % value
        if value.__class__ is float:
            return repr(value).encode() if math.isfinite(value) else b"null"
        return str(value).encode()  # pragma: no cover - text_factory is bytes

    def _bind(self, data: bytes) -> str | bytes:
        # sqlite3 binds str as TEXT and bytes as BLOB; GramIO's JSON.parse needs TEXT.
        if self._text:
            try:
                return data.decode()
            except UnicodeDecodeError:
                # Not text (raw bytes copied in by a tool, e.g. the CLI from a msgpack store):
                # keep it as a BLOB, which reads back byte for byte.
                return data
        return data

    def _expiry(self, ttl: float | None) -> float | None:
        return None if ttl is None else self._clock() + ttl

    # ------------------------------------------------------------------ reads

    async def get(self, key: str) -> bytes | None:
        # The hot path (bench/bench_sqlite.py): the statement inline, no wrapper coroutine.
        if clock() >= self._due:
            await self._turn()
        try:
            row = self._ex(self._sql.get, (key,)).fetchone()
        except sqlite3.Error as e:
            row = await self._retry("get", key, self._fetch, (self._sql.get, key), e)
        if row is None:
            return None
        value, expires_at = row
        if expires_at is not None and expires_at <= self._clock():
            self._start_sweeping()
            return None
        return value if value.__class__ is bytes else self._cell(value)

    def _fetch(self, sql: str, key: str) -> Any:
        return self._ex(sql, (key,)).fetchone()

    async def has(self, key: str) -> bool:
        row = await self._run("has", key, self._fetch, self._sql.expiry, key)
        return row is not None and (row[0] is None or row[0] > self._clock())

    async def ttl(self, key: str) -> float | None:
        row = await self._run("ttl", key, self._fetch, self._sql.expiry, key)
        if row is None:
            raise self.not_found(key)
        expires_at = row[0]
        if expires_at is None:
            return None
        left = float(expires_at) - self._clock()
        if left <= 0:
            raise self.not_found(key)
        return left

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        found = await self._run("get_many", keys[0], self._get_many_now, keys)
        get, cell = found.get, self._cell
        return [
            v if (v := get(k.encode())) is None or v.__class__ is bytes else cell(v) for k in keys
        ]

    def _get_many_now(self, keys: Sequence[str]) -> dict[bytes, Any]:
        """Live rows among ``keys`` as ``{key bytes: value cell}``: one statement per chunk."""
        now = self._clock()
        if len(keys) <= self._chunk:  # the common case: one statement, no transaction
            sql = self._sql.get_many + _sql.placeholders(len(keys))
            return dict(self._ex(sql, (now, *_sql.padded(keys))).fetchall())
        unique = list(dict.fromkeys(keys))
        found: dict[bytes, Any] = {}
        self._ex("BEGIN")  # one snapshot across the chunks
        try:
            for i in range(0, len(unique), self._chunk):
                chunk = unique[i : i + self._chunk]
                sql = self._sql.get_many + _sql.placeholders(len(chunk))
                found.update(self._ex(sql, (now, *_sql.padded(chunk))).fetchall())
        finally:
            self._rollback()
        return found

    async def scan(self, prefix: str) -> AsyncIterator[str]:
        async for rows in self._scan_pages(prefix):
            for k, _ in rows:
                yield k.decode()

    async def scan_ttl(self, prefix: str) -> AsyncIterator[tuple[str, float | None]]:
        # The pages carry expires_at: no statement per key for the CLI's ls/export/copy.
        async for rows in self._scan_pages(prefix):
            now = self._clock()
            for k, expires_at in rows:
                yield k.decode(), None if expires_at is None else float(expires_at) - now

    async def _scan_pages(self, prefix: str) -> AsyncIterator[list[Any]]:
        """Live ``(key bytes, expires_at)`` rows starting with ``prefix``, a page at a time."""
        # Keyset pagination over the primary key: key >= prefix AND key < upper, where upper is
        # the prefix with its last character bumped. Nothing is widened by '%' or '_', and
        # each page is a fresh statement, so deletes during iteration are harmless.
        upper = upper_bound(prefix)
        bound = "" if upper is None else " AND key < ?"
        order = f" ORDER BY key LIMIT {_sql.SCAN_PAGE}"
        first, rest = self._sql.scan_first + bound + order, self._sql.scan + bound + order
        sql, after = first, prefix
        while True:
            params: tuple[Any, ...] = (after, self._clock())
            if upper is not None:
                params += (upper,)
            rows = await self._run("scan", prefix or None, self._fetchall, sql, params)
            if rows:
                yield rows
            if len(rows) < _sql.SCAN_PAGE:
                return
            sql, after = rest, rows[-1][0].decode()

    def _fetchall(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        return self._ex(sql, params).fetchall()

    # ------------------------------------------------------------------ writes

    async def set(self, key: str, data: bytes, ttl: float | None) -> None:
        # The hot path (bench/bench_sqlite.py): the statement inline, no wrapper coroutine.
        if clock() >= self._due:
            await self._turn()
        params = (key, self._bind(data), None if ttl is None else self._clock() + ttl)
        try:
            self._ex(self._sql.set, params)
        except sqlite3.Error as e:
            await self._retry("set", key, self._write, (self._sql.set, params), e)
        self._writes += 1 + (len(data) >> 12)  # WAL pages, roughly
        if self._writes >= WAKE_EVERY or (ttl is not None and self._timer is None):
            self._wrote(ttl, 0)

    def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        return self._ex(sql, params).rowcount

    async def delete(self, key: str) -> bool:
        params = (key, self._clock())
        count = await self._run("delete", key, self._write, self._sql.delete, params)
        self._wrote()
        return count > 0  # type: ignore[no-any-return]

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        expires_at = self._expiry(ttl)
        bind = self._bind
        rows = [(k, bind(data), expires_at) for k, data in items]
        await self._run("set_many", items[0][0], self._set_many_now, rows)
        self._wrote(ttl, len(rows) + sum(len(data) for _, data in items) // 4096)

    async def set_entries(self, entries: Sequence[Entry], *, overwrite: bool = True) -> list[bool]:
        if not overwrite or not entries:
            return await super().set_entries(entries, overwrite=overwrite)
        bind, expiry = self._bind, self._expiry
        rows = [(k, bind(data), expiry(ttl)) for k, data, ttl in entries]  # one transaction
        await self._run("set_entries", entries[0][0], self._set_many_now, rows)
        timed = next((ttl for _, _, ttl in entries if ttl is not None), None)
        self._wrote(timed, len(rows) + sum(len(data) for _, data, _ in entries) // 4096)
        return [True] * len(entries)

    def _set_many_now(self, rows: list[tuple[str, Any, Any]]) -> None:
        self._ex("BEGIN IMMEDIATE")
        try:
            self._cur.executemany(self._sql.set, rows)
            self._ex("COMMIT")
        except BaseException:
            self._rollback()
            raise

    async def delete_many(self, keys: Sequence[str]) -> int:
        count: int = await self._run("delete_many", keys[0], self._delete_many_now, keys)
        self._wrote(count=count)
        return count

    def _delete_many_now(self, keys: Sequence[str]) -> int:
        unique = list(dict.fromkeys(keys))
        now = self._clock()
        step = self._chunk
        chunks = [unique[i : i + step] for i in range(0, len(unique), step)]
        if len(chunks) > 1:
            self._ex("BEGIN IMMEDIATE")
        try:
            count = 0
            for chunk in chunks:
                sql = self._sql.delete_many + _sql.placeholders(len(chunk))
                count += self._ex(sql, (now, *_sql.padded(chunk))).rowcount
            if len(chunks) > 1:
                self._ex("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return count

    async def clear(self, prefix: str) -> int:
        # Page by page, one short transaction each, so a big clear never holds the write lock
        # (or the event loop) for long. Expired rows in the range go too but are not counted.
        upper = upper_bound(prefix)
        sql = self._sql.clear_page + ("" if upper is None else " AND key < ?")
        sql += f" ORDER BY key LIMIT {_sql.CLEAR_PAGE}"
        deleted: int = 0
        after = prefix
        while True:
            count: int
            last: str | None
            count, last = await self._run(
                "clear", prefix or None, self._clear_page, sql, after, upper
            )
            deleted += count
            self._wrote(count=count)
            if last is None:
                return deleted
            after = last + "\x00"  # the smallest key after `last`
            await asyncio.sleep(0)  # let other tasks run between pages

    def _clear_page(self, sql: str, after: str, upper: str | None) -> tuple[int, str | None]:
        self._ex("BEGIN IMMEDIATE")
        try:
            params: tuple[Any, ...] = (after,) if upper is None else (after, upper)
            rows = self._ex(sql, params).fetchall()
            if not rows:
                self._ex("COMMIT")
                return 0, None
            last = rows[-1][0].decode()
            self._ex(self._sql.clear_delete, (after, last))
            self._ex("COMMIT")
        except BaseException:
            self._rollback()
            raise
        now = self._clock()
        live = sum(1 for _, expires_at in rows if expires_at is None or expires_at > now)
        return live, (last if len(rows) == _sql.CLEAR_PAGE else None)

    # ------------------------------------------------------------------ atomic

    async def add(self, key: str, data: bytes, ttl: float | None) -> bool:
        # One UPSERT statement: atomic across processes without an explicit transaction.
        now = self._clock()
        params = (key, self._bind(data), _plus(now, ttl), now)
        count = await self._run("add", key, self._write, self._sql.add, params)
        self._wrote(ttl)
        return count > 0  # type: ignore[no-any-return]

    async def incr(self, key: str, amount: int, ttl: float | None) -> int:
        value: int = await self._run("incr", key, self._incr_now, key, amount, ttl)
        self._wrote(ttl)
        return value

    def _incr_now(self, key: str, amount: int, ttl: float | None) -> int:
        ex = self._ex
        ex("BEGIN IMMEDIATE")  # the write lock first: no other process can read-then-write
        try:
            row = ex(self._sql.get, (key,)).fetchone()
            now = self._clock()
            if row is None or (row[1] is not None and row[1] <= now):
                value, expires_at = amount, _plus(now, ttl)
            else:
                value = parse_int(self, key, self._cell(row[0])) + amount
                expires_at = row[1]  # an existing counter keeps its expiry
            ex(self._sql.set, (key, self._bind(str(value).encode()), expires_at))
            ex("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return value

    async def update(
        self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None
    ) -> None:
        await self._run("update", key, self._update_now, key, fn, ttl)
        self._wrote(ttl)

    def _update_now(self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None) -> None:
        ex = self._ex
        ex("BEGIN IMMEDIATE")
        try:
            row = ex(self._sql.get, (key,)).fetchone()
            now = self._clock()
            current = None
            if row is not None and (row[1] is None or row[1] > now):
                current = self._cell(row[0])
            ex(self._sql.set, (key, self._bind(fn(current)), _plus(now, ttl)))
            ex("COMMIT")
        except BaseException:
            self._rollback()
            raise

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._stop_upkeep()
        self._rollback()
        self._cur.close()
        self._conn.close()


def _positive(value: object, name: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (0 < value < math.inf):
        raise ConfigurationError(
            f"{name} must be a positive number of seconds, got {value!r}", backend="sqlite"
        )


def _plus(now: float, ttl: float | None) -> float | None:
    return None if ttl is None else now + ttl
