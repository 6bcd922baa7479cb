"""SQLite storage: the persistent embedded default, sharing its file layout with GramIO.

How it talks to SQLite (measured in ``bench/bench_sqlite.py``, numbers in the docs): statements
run **inline** on the event loop's thread over the standard library's :mod:`sqlite3`, because a
point read or an in-place UPSERT in WAL mode costs a few microseconds, less than one hop to a
worker thread (aiosqlite's design) costs. What could make such a call *wait* never happens on
the loop:

* **Locks.** The loop's connection has ``busy_timeout = 0``: when another process holds the
  write lock, SQLite answers ``SQLITE_BUSY`` at once and the operation is retried after an
  ``await asyncio.sleep`` with backoff, up to ``timeout`` seconds.
* **fsync.** ``synchronous = NORMAL`` in WAL mode flushes nothing on commit; the WAL is only
  synced by checkpoints, and automatic checkpoints are off on the loop's connection. Checkpoints
  run on a second connection in a thread (``run_in_executor``) every few hundred writes and on
  each sweep.

What remains on the loop is CPU work and reads of pages the OS has cached, like any in-process
cache. Atomic operations (``add``, ``incr``, ``update``) are single UPSERT statements or
``BEGIN IMMEDIATE`` transactions, so they stay atomic across processes sharing the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import re
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote, urlsplit

from ._codecs import JSON, Codec, JSONCodec
from ._errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigurationError,
    MissingDependencyError,
    StorageClosedError,
    ValueTooLargeError,
)
from ._protocol import TTL
from ._storage import BaseStorage

try:
    import sqlite3
except ImportError as e:  # pragma: no cover - only on Python builds without _sqlite3
    raise MissingDependencyError(
        "SQLiteStorage needs the standard library's sqlite3 module, which this Python was built "
        "without. Install your system's SQLite development package and rebuild Python, or use "
        "another backend. (The extra `pip install 'gramio-storage[sqlite]'` adds nothing here.)"
    ) from e

if sqlite3.sqlite_version_info < (3, 24):  # pragma: no cover - 2018; UPSERT is needed
    raise MissingDependencyError(
        f"SQLiteStorage needs SQLite 3.24 or newer; this Python links SQLite "
        f"{sqlite3.sqlite_version}. Upgrade the system SQLite library or Python."
    )

__all__ = ["SQLiteStorage"]

_TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SCAN_PAGE = 500  # keys per keyset page of keys()
_CLEAR_PAGE = 1000  # rows per transaction of clear()
_SWEEP_BATCH = 1000  # expired rows deleted per sweep step (bounds the pause); in _SQL too
_CHECKPOINT_EVERY = 500  # writes between checkpoints (about 1-3 WAL pages each)
_MAX_CHUNK = 512  # keys per IN (...) list, below any SQLite's variable limit
_BUSY = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED (primary result codes)
_TOOBIG = 18  # SQLITE_TOOBIG
_UNAVAILABLE = frozenset({14, 26})  # SQLITE_CANTOPEN, SQLITE_NOTADB

# Statement templates; {t} is the quoted table name.
_SQL = {
    "get": "SELECT value, expires_at FROM {t} WHERE key = ?",
    "expiry": "SELECT expires_at FROM {t} WHERE key = ?",
    # An in-place UPSERT is ~4x faster than INSERT OR REPLACE (no delete + reinsert).
    "set": (
        "INSERT INTO {t} (key, value, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) "
        "DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"
    ),
    # add: insert, or take over an expired row; a live row is left alone (rowcount 0).
    "add": (
        "INSERT INTO {t} (key, value, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) "
        "DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at "
        "WHERE expires_at IS NOT NULL AND expires_at <= ?"
    ),
    # The "live" condition, (expires_at IS NULL OR expires_at > ?), takes the current time.
    "delete": "DELETE FROM {t} WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
    "get_many": (
        "SELECT key, value FROM {t} WHERE (expires_at IS NULL OR expires_at > ?) AND key IN "
    ),
    "delete_many": "DELETE FROM {t} WHERE (expires_at IS NULL OR expires_at > ?) AND key IN ",
    "scan_first": (
        "SELECT key, expires_at FROM {t} WHERE key >= ? AND (expires_at IS NULL OR expires_at > ?)"
    ),
    "scan": (
        "SELECT key, expires_at FROM {t} WHERE key > ? AND (expires_at IS NULL OR expires_at > ?)"
    ),
    "clear_page": "SELECT key, expires_at FROM {t} WHERE key >= ?",
    "clear_delete": "DELETE FROM {t} WHERE key >= ? AND key <= ?",
    # Batched (LIMIT 1000, see _SWEEP_BATCH), found through the partial index on expires_at.
    "sweep": (
        "DELETE FROM {t} WHERE key IN (SELECT key FROM {t} WHERE expires_at <= ? LIMIT 1000)"
    ),
}


class SQLiteStorage(BaseStorage):
    """A storage in one SQLite file (or in memory), shareable with other processes and GramIO.

    The table is GramIO's layout, ``(key TEXT PRIMARY KEY, value, expires_at)``, so a Python
    bot and a GramIO bot can use one file. A new table stores values as JSON text (BLOBs for a
    non-JSON codec) and ``expires_at`` as seconds since the Unix epoch; an existing GramIO table
    is used as it is.

    Args:
        path: The database file (created if missing), or ``":memory:"`` for a private in-memory
            database that vanishes on close.
        table: The table name: letters, digits and ``_``, not starting with a digit.
        ttl: Default time to live for writes that do not pass one.
        codec: How values are encoded. With the default JSON codec values are stored as text,
            readable by GramIO and by ``sqlite3`` on the command line.
        timeout: Seconds an operation waits for another process's write lock before raising
            :class:`~gramio_storage.BackendTimeoutError`. Waiting never blocks the event loop.
        sweep_interval: Seconds between sweeps that delete expired rows; ``None`` turns the
            sweep off (expired rows are still invisible to every read).
        clock: Wall-clock time in seconds since the epoch (``time.time``); expiries are shared
            with other processes, so it must be the real epoch clock outside tests.

    Raises:
        ConfigurationError: A bad path, table name, option, or an existing table without the
            ``key``/``value``/``expires_at`` columns.
        BackendUnavailableError: The file cannot be opened or is not a database.

    Example::

        storage = SQLiteStorage("bot.db")
        await storage.set("user:1", {"name": "Alice"}, ttl=3600)
    """

    backend_name: ClassVar[str] = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        table: str = "gramio_storage",
        ttl: TTL | None = None,
        codec: Codec = JSON,
        timeout: float = 5.0,
        sweep_interval: float | None = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(codec=codec, ttl=ttl)
        if not isinstance(path, (str, os.PathLike)):
            raise ConfigurationError(
                f"path must be a str or os.PathLike, got {path.__class__.__qualname__}",
                backend=self.backend_name,
            )
        path = os.fspath(path)
        if not path:
            raise ConfigurationError(
                "path must not be empty (use ':memory:' for an in-memory database)",
                backend=self.backend_name,
            )
        if not isinstance(table, str) or not _TABLE_RE.fullmatch(table):
            raise ConfigurationError(
                f"table must be an SQL identifier (letters, digits and '_', not starting with a "
                f"digit, at most 63 characters), got {table!r}",
                backend=self.backend_name,
            )
        if table.lower().startswith("sqlite_"):
            raise ConfigurationError(
                f"table names starting with 'sqlite_' are reserved by SQLite, got {table!r}",
                backend=self.backend_name,
            )
        _positive(timeout, "timeout")
        if sweep_interval is not None:
            _positive(sweep_interval, "sweep_interval")
        self._path = path
        self._table = table
        self._timeout = float(timeout)
        self._sweep_interval = sweep_interval
        self._clock = clock
        self._memory = path == ":memory:"
        # JSON goes in as TEXT (what GramIO's JSON.parse reads); other codecs as BLOBs.
        self._text = isinstance(codec, JSONCodec)
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._writes = 0  # writes since the last checkpoint was started
        self._checkpointing: asyncio.Future[None] | None = None
        self._ckpt_conn: sqlite3.Connection | None = None

        # The only SQL built from text: the table name, validated as an identifier above.
        sql = {name: text.format(t=f'"{table}"') for name, text in _SQL.items()}
        self._q_get = sql["get"]
        self._q_exp = sql["expiry"]
        self._q_set = sql["set"]
        self._q_add = sql["add"]
        self._q_delete = sql["delete"]
        self._q_many = sql["get_many"]
        self._q_delete_many = sql["delete_many"]
        self._q_scan_first = sql["scan_first"]
        self._q_scan = sql["scan"]
        self._q_clear = sql["clear_page"]
        self._q_clear_del = sql["clear_delete"]
        self._q_sweep = sql["sweep"]
        self._conn = self._connect()
        self._cur = self._conn.cursor()
        self._ex = self._cur.execute
        variables = self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        # A power of two (IN lists are padded to one) leaving a variable for the clock.
        self._chunk = 1 << (min(_MAX_CHUNK, variables - 1).bit_length() - 1)
        self._start_sweeping()

    # ------------------------------------------------------------------ setup

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self._path,
                isolation_level=None,  # autocommit; transactions are explicit BEGIN IMMEDIATE
                check_same_thread=False,  # the loop may run on another thread than __init__
                cached_statements=256,
                timeout=self._timeout,  # only while setting up; 0 below
            )
        except sqlite3.Error as e:
            raise BackendUnavailableError(
                f"Cannot open SQLite database {self._path!r}: {e}", backend=self.backend_name
            ) from e
        try:
            self._setup(conn)
        except sqlite3.Error as e:
            conn.close()
            raise self._translate(e, None, "open") from e
        except BaseException:
            conn.close()
            raise
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        t = f'"{self._table}"'
        if not self._memory:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ConfigurationError(
                    f"SQLite database {self._path!r} cannot use WAL mode (journal_mode={mode}); "
                    "it is needed for concurrent readers and cheap commits",
                    backend=self.backend_name,
                )
            conn.execute("PRAGMA synchronous = NORMAL")
            # Checkpoints sync the disk: they run in a thread (see _checkpoint_soon).
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            conn.execute("PRAGMA journal_size_limit = 67108864")
        # GramIO's column order (it inserts positionally: VALUES (key, value, expires_at)).
        # value TEXT instead of GramIO's JSONB, whose NUMERIC affinity turns "1.0" into 1.
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {t} "
            "(key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL)"
        )
        columns = {row[1].lower() for row in conn.execute(f"PRAGMA table_info({t})")}
        missing = {"key", "value", "expires_at"} - columns
        if missing:
            raise ConfigurationError(
                f"Table {self._table!r} in {self._path!r} exists but lacks the column(s) "
                f"{sorted(missing)}; it is not a gramio-storage/GramIO table",
                backend=self.backend_name,
            )
        # The sweep finds expired rows through this; partial, so keys without a TTL cost nothing.
        conn.execute(
            f'CREATE INDEX IF NOT EXISTS "{self._table}_expires_at" '
            f"ON {t} (expires_at) WHERE expires_at IS NOT NULL"
        )
        # Never wait for a lock on the loop's thread: SQLITE_BUSY comes back at once and the
        # operation retries after an asyncio sleep (see _again).
        conn.execute("PRAGMA busy_timeout = 0")
        conn.text_factory = bytes  # values come back as the stored UTF-8 bytes, no round trip

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteStorage:
        """Build from ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or ``sqlite://:memory:``.

        Query parameters ``table``, ``ttl``, ``timeout`` and ``sweep_interval`` are accepted
        (``sqlite:///bot.db?table=sessions&ttl=86400``); keyword ``options`` override them.

        Raises:
            ConfigurationError: The URL is not a valid SQLite URL.
        """
        if not isinstance(url, str):
            raise ConfigurationError(f"URL must be a str, got {url.__class__.__qualname__}")
        parts = urlsplit(url)
        if parts.scheme.lower() != "sqlite":
            raise ConfigurationError(f"Not an sqlite:// URL: {url!r}", backend="sqlite")
        netloc, path = parts.netloc, unquote(parts.path)
        if netloc == ":memory:" and not path:
            path = ":memory:"
        elif netloc:
            raise ConfigurationError(
                f"SQLite URLs have no host ({netloc!r} in {url!r}): use sqlite:///relative.db, "
                "sqlite:////absolute/path.db or sqlite://:memory:",
                backend="sqlite",
            )
        else:
            path = path[1:]  # "/bot.db" -> "bot.db"; "//abs/bot.db" -> "/abs/bot.db"
        if not path:
            raise ConfigurationError(
                f"SQLite URL {url!r} names no file: use sqlite:///bot.db or sqlite://:memory:",
                backend="sqlite",
            )
        parsed: dict[str, Any] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name == "table":
                parsed[name] = value
            elif name in ("ttl", "timeout", "sweep_interval"):
                try:
                    parsed[name] = float(value)
                except ValueError as e:
                    raise ConfigurationError(
                        f"URL parameter {name}={value!r} is not a number", backend="sqlite"
                    ) from e
            else:
                raise ConfigurationError(
                    f"Unknown SQLite URL parameter {name!r}; known: table, ttl, timeout, "
                    "sweep_interval",
                    backend="sqlite",
                )
        parsed.update(options)
        return cls(path, **parsed)

    @property
    def path(self) -> str:
        """The database file (``":memory:"`` for an in-memory database)."""
        return self._path

    @property
    def table(self) -> str:
        """The table keys live in."""
        return self._table

    def _repr_fields(self) -> dict[str, object]:
        fields: dict[str, object] = {"path": self._path}
        if self._table != "gramio_storage":
            fields["table"] = self._table
        if self._codec is not JSON:
            fields["codec"] = self._codec
        return fields

    # ------------------------------------------------------------------ errors and retries

    def _translate(self, e: sqlite3.Error, key: str | None, op: str) -> Exception:
        """The library error for a driver error (the caller chains ``e`` as the cause)."""
        where = f" for key {key!r}" if key is not None else ""
        if self._closed:
            return StorageClosedError(
                f"SQLiteStorage({self._path!r}) is closed; cannot {op}{where}",
                key=key,
                backend=self.backend_name,
            )
        code = getattr(e, "sqlite_errorcode", 0) & 0xFF
        message = f"SQLite {op} failed{where} in {self._path!r}: {e}"
        if code in _BUSY:
            return BackendTimeoutError(
                f"SQLite {op}{where} gave up after waiting {self._timeout:g}s for a lock on "
                f"{self._path!r} held by another connection: {e}",
                key=key,
                backend=self.backend_name,
            )
        if code == _TOOBIG:
            return ValueTooLargeError(message, key=key, backend=self.backend_name)
        if code in _UNAVAILABLE:
            return BackendUnavailableError(message, key=key, backend=self.backend_name)
        return BackendError(message, key=key, backend=self.backend_name)

    async def _again(
        self,
        op: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        key: str | None,
        error: sqlite3.Error,
    ) -> Any:
        """Retry ``fn(*args)`` after ``error``: with async backoff while the database is busy.

        The first attempt ran inline and failed; only lock contention is worth retrying, and
        the waiting happens here, in ``asyncio.sleep``, never in SQLite's busy handler. Any
        other error becomes the library's error for ``op`` on ``key``.
        """
        if (getattr(error, "sqlite_errorcode", 0) & 0xFF) not in _BUSY or self._closed:
            raise self._translate(error, key, op) from error
        deadline = time.monotonic() + self._timeout
        delay = 0.0005
        while True:
            # Jitter keeps processes that collided from colliding again in lockstep.
            pause = min(delay, max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(pause * random.random())  # noqa: S311 - jitter, not secrets
            try:
                return fn(*args)
            except sqlite3.Error as e:
                code = getattr(e, "sqlite_errorcode", 0) & 0xFF
                if code not in _BUSY or self._closed or time.monotonic() >= deadline:
                    raise self._translate(e, key, op) from e
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
        if isinstance(value, str):  # pragma: no cover - text_factory is bytes
            return value.encode()
        return self._encode(value)  # type: ignore[no-any-return]  # pragma: no cover

    def _bind(self, data: bytes) -> str | bytes:
        # sqlite3 binds str as TEXT and bytes as BLOB; GramIO's JSON.parse needs TEXT.
        if self._text:
            try:
                return data.decode()
            except UnicodeDecodeError:
                # Not text (raw bytes copied in through the hooks, e.g. by the CLI from a
                # msgpack store): keep it as a BLOB, which reads back byte for byte.
                return data
        return data

    def _expiry(self, ttl: float | None) -> float | None:
        return None if ttl is None else self._clock() + ttl

    # ------------------------------------------------------------------ hooks: reads

    async def _get(self, key: str) -> bytes | None:
        try:
            row = self._ex(self._q_get, (key,)).fetchone()
        except sqlite3.Error as e:
            row = await self._again("get", self._fetch, (self._q_get, key), key, e)
        if row is None:
            return None
        value, expires_at = row
        if expires_at is not None and expires_at <= self._clock():
            self._start_sweeping()
            return None
        return value if value.__class__ is bytes else self._cell(value)

    def _fetch(self, sql: str, key: str) -> Any:
        return self._ex(sql, (key,)).fetchone()

    async def _has(self, key: str) -> bool:
        try:
            row = self._ex(self._q_exp, (key,)).fetchone()
        except sqlite3.Error as e:
            row = await self._again("has", self._fetch, (self._q_exp, key), key, e)
        return row is not None and (row[0] is None or row[0] > self._clock())

    async def _ttl(self, key: str) -> float | None:
        try:
            row = self._ex(self._q_exp, (key,)).fetchone()
        except sqlite3.Error as e:
            row = await self._again("ttl", self._fetch, (self._q_exp, key), key, e)
        if row is None:
            raise self._not_found(key)
        expires_at = row[0]
        if expires_at is None:
            return None
        left = float(expires_at) - self._clock()
        if left <= 0:
            raise self._not_found(key)
        return left

    async def _get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        try:
            found = self._get_many_now(keys)
        except sqlite3.Error as e:
            found = await self._again("get_many", self._get_many_now, (keys,), keys[0], e)
        get, cell = found.get, self._cell
        return [
            v if (v := get(k.encode())) is None or v.__class__ is bytes else cell(v) for k in keys
        ]

    def _get_many_now(self, keys: Sequence[str]) -> dict[bytes, Any]:
        """Live rows among ``keys`` as ``{key bytes: value cell}``: one statement per chunk."""
        now = self._clock()
        if len(keys) <= self._chunk:  # the common case: one statement, no transaction
            sql = self._q_many + _placeholders(len(keys))
            return dict(self._ex(sql, (now, *_padded(keys))).fetchall())
        unique = list(dict.fromkeys(keys))
        found: dict[bytes, Any] = {}
        self._ex("BEGIN")  # one snapshot across the chunks
        try:
            for i in range(0, len(unique), self._chunk):
                chunk = unique[i : i + self._chunk]
                sql = self._q_many + _placeholders(len(chunk))
                found.update(self._ex(sql, (now, *_padded(chunk))).fetchall())
        finally:
            self._rollback()
        return found

    async def _scan(self, prefix: str) -> AsyncIterator[str]:
        async for rows in self._scan_pages(prefix):
            for k, _ in rows:
                yield k.decode()

    async def _scan_ttl(self, prefix: str) -> AsyncIterator[tuple[str, float | None]]:
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
        upper = _upper_bound(prefix)
        bound = "" if upper is None else " AND key < ?"
        order = f" ORDER BY key LIMIT {_SCAN_PAGE}"
        first, rest = self._q_scan_first + bound + order, self._q_scan + bound + order
        sql, after = first, prefix
        while True:
            params: tuple[Any, ...] = (after, self._clock())
            if upper is not None:
                params += (upper,)
            try:
                rows = self._ex(sql, params).fetchall()
            except sqlite3.Error as e:
                rows = await self._again("keys", self._fetchall, (sql, params), prefix or None, e)
            if rows:
                yield rows
            if len(rows) < _SCAN_PAGE:
                return
            sql, after = rest, rows[-1][0].decode()

    def _fetchall(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        return self._ex(sql, params).fetchall()

    # ------------------------------------------------------------------ hooks: writes

    async def _set(self, key: str, data: bytes, ttl: float | None) -> None:
        params = (
            key,
            self._bind(data),
            None if ttl is None else self._clock() + ttl,
        )
        try:
            self._ex(self._q_set, params)
        except sqlite3.Error as e:
            await self._again("set", self._write, (self._q_set, params), key, e)
        self._writes += 1
        if self._writes >= _CHECKPOINT_EVERY or (ttl is not None and self._timer is None):
            self._wrote(ttl, 0)

    def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        return self._ex(sql, params).rowcount

    def _wrote(self, ttl: float | None = None, count: int = 1) -> None:
        """Bookkeeping after a write: checkpoint now and then, sweep if TTLs are in use."""
        self._writes += count
        if self._writes >= _CHECKPOINT_EVERY:
            self._checkpoint_soon()
        if ttl is not None and self._timer is None:
            self._start_sweeping()

    async def _delete(self, key: str) -> bool:
        params = (key, self._clock())
        try:
            count = self._ex(self._q_delete, params).rowcount
        except sqlite3.Error as e:
            count = await self._again("delete", self._write, (self._q_delete, params), key, e)
        self._wrote()
        return count > 0

    async def _set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        expires_at = self._expiry(ttl)
        bind = self._bind
        rows = [(k, bind(data), expires_at) for k, data in items]
        try:
            self._set_many_now(rows)
        except sqlite3.Error as e:
            await self._again("set_many", self._set_many_now, (rows,), items[0][0], e)
        self._wrote(ttl, len(rows))

    def _set_many_now(self, rows: list[tuple[str, Any, Any]]) -> None:
        self._ex("BEGIN IMMEDIATE")
        try:
            self._cur.executemany(self._q_set, rows)
            self._ex("COMMIT")
        except BaseException:
            self._rollback()
            raise

    async def _delete_many(self, keys: Sequence[str]) -> int:
        try:
            count = self._delete_many_now(keys)
        except sqlite3.Error as e:
            count = await self._again("delete_many", self._delete_many_now, (keys,), keys[0], e)
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
                sql = self._q_delete_many + _placeholders(len(chunk))
                count += self._ex(sql, (now, *_padded(chunk))).rowcount
            if len(chunks) > 1:
                self._ex("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return count

    async def _clear(self, prefix: str) -> int:
        # Page by page, one short transaction each, so a big clear never holds the write lock
        # (or the event loop) for long. Expired rows in the range go too but are not counted.
        upper = _upper_bound(prefix)
        sql = self._q_clear + ("" if upper is None else " AND key < ?")
        sql += f" ORDER BY key LIMIT {_CLEAR_PAGE}"
        deleted = 0
        after = prefix
        while True:
            args = (sql, after, upper)
            try:
                count, last = self._clear_page(*args)
            except sqlite3.Error as e:
                count, last = await self._again("clear", self._clear_page, args, prefix or None, e)
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
            self._ex(self._q_clear_del, (after, last))
            self._ex("COMMIT")
        except BaseException:
            self._rollback()
            raise
        now = self._clock()
        live = sum(1 for _, expires_at in rows if expires_at is None or expires_at > now)
        return live, (last if len(rows) == _CLEAR_PAGE else None)

    # ------------------------------------------------------------------ hooks: atomic

    async def _add(self, key: str, data: bytes, ttl: float | None) -> bool:
        # One UPSERT statement: atomic across processes without an explicit transaction.
        now = self._clock()
        params = (key, self._bind(data), _plus(now, ttl), now)
        try:
            count = self._ex(self._q_add, params).rowcount
        except sqlite3.Error as e:
            count = await self._again("add", self._write, (self._q_add, params), key, e)
        self._wrote(ttl)
        return count > 0

    async def _incr(self, key: str, amount: int, ttl: float | None) -> int:
        try:
            value = self._incr_now(key, amount, ttl)
        except sqlite3.Error as e:
            value = await self._again("incr", self._incr_now, (key, amount, ttl), key, e)
        self._wrote(ttl)
        return value

    def _incr_now(self, key: str, amount: int, ttl: float | None) -> int:
        ex = self._ex
        ex("BEGIN IMMEDIATE")  # the write lock first: no other process can read-then-write
        try:
            row = ex(self._q_get, (key,)).fetchone()
            now = self._clock()
            if row is None or (row[1] is not None and row[1] <= now):
                value, expires_at = amount, _plus(now, ttl)
            else:
                value = self._decode_int(key, self._cell(row[0])) + amount
                expires_at = row[1]  # an existing counter keeps its expiry
            ex(self._q_set, (key, self._bind(self._encode(value)), expires_at))
            ex("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return value

    async def _update(
        self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None
    ) -> None:
        try:
            self._update_now(key, fn, ttl)
        except sqlite3.Error as e:
            await self._again("update", self._update_now, (key, fn, ttl), key, e)
        self._wrote(ttl)

    def _update_now(self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None) -> None:
        ex = self._ex
        ex("BEGIN IMMEDIATE")
        try:
            row = ex(self._q_get, (key,)).fetchone()
            now = self._clock()
            current = None
            if row is not None and (row[1] is None or row[1] > now):
                current = self._cell(row[0])
            ex(self._q_set, (key, self._bind(fn(current)), _plus(now, ttl)))
            ex("COMMIT")
        except BaseException:
            self._rollback()
            raise

    # ------------------------------------------------------------------ sweep and checkpoints

    def _start_sweeping(self) -> None:
        if self._timer is not None or self._closed or self._sweep_interval is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # built outside a loop: the first TTL write starts it
            return
        # A weak reference: a pending timer must not keep a dropped storage alive.
        self._timer = loop.call_later(self._sweep_interval, _sweep, weakref.ref(self))

    def _sweep(self) -> None:
        """Delete a batch of expired rows; continue soon if there may be more."""
        self._timer = None
        if self._closed:
            return
        try:
            deleted = self._ex(self._q_sweep, (self._clock(),)).rowcount
        except sqlite3.Error:
            # Busy (another process writes) or failing: the next tick tries again, and reads
            # ignore expired rows meanwhile. Nobody awaits a sweep, so nobody to raise to.
            deleted = 0
        if deleted:
            self._wrote(count=deleted)
        if self._writes:
            self._checkpoint_soon()
        assert self._sweep_interval is not None
        loop = asyncio.get_running_loop()
        delay = 0.0 if deleted >= _SWEEP_BATCH else self._sweep_interval
        self._timer = loop.call_later(delay, _sweep, weakref.ref(self))

    def _checkpoint_soon(self) -> None:
        """Start a WAL checkpoint in a thread unless one is running (it syncs the disk)."""
        self._writes = 0
        if self._memory or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        running = self._checkpointing
        if running is not None and not running.get_loop().is_closed():
            return  # one at a time (a future of a closed loop will never finish: ignore it)
        self._checkpointing = future = loop.run_in_executor(None, self._checkpoint, "PASSIVE")
        future.add_done_callback(self._checkpoint_done)

    def _checkpoint_done(self, future: asyncio.Future[None]) -> None:
        self._checkpointing = None
        if not future.cancelled():
            future.exception()  # a failed checkpoint is retried by the next one; mark it seen

    def _checkpoint(self, mode: str) -> None:
        """Run in a worker thread, on a connection of its own (never the loop's)."""
        conn = self._ckpt_conn
        if conn is None:
            conn = self._ckpt_conn = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=self._timeout
            )
        conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = asyncio.get_running_loop()
        running = self._checkpointing
        if running is not None and running.get_loop() is loop:
            await asyncio.wait([running])
        if not self._memory:
            # Fold the WAL into the database off the loop, so the implicit checkpoint SQLite
            # runs when the last connection closes finds nothing left to sync. A failure
            # (another process busy, the executor shut down) is fine: a later one catches up.
            with contextlib.suppress(sqlite3.Error, RuntimeError):
                await loop.run_in_executor(None, self._checkpoint, "PASSIVE")
            if self._ckpt_conn is not None:
                self._ckpt_conn.close()
                self._ckpt_conn = None
        self._rollback()
        self._cur.close()
        self._conn.close()


def _sweep(ref: weakref.ref[SQLiteStorage]) -> None:
    storage = ref()
    if storage is not None:
        storage._sweep()


def _positive(value: object, name: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (0 < value < math.inf):
        raise ConfigurationError(
            f"{name} must be a positive number of seconds, got {value!r}", backend="sqlite"
        )


def _plus(now: float, ttl: float | None) -> float | None:
    return None if ttl is None else now + ttl


def _upper_bound(prefix: str) -> str | None:
    """The smallest string above every string starting with ``prefix`` (None: no bound).

    SQLite compares TEXT by its UTF-8 bytes, and UTF-8 preserves code point order, so bumping
    the last code point (skipping the surrogates, which UTF-8 cannot encode) is exact.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:
                nxt = 0xE000
            return "".join(chars) + chr(nxt)
    return None


_PLACEHOLDERS: dict[int, str] = {}


def _placeholders(n: int) -> str:
    """``(?,?,...)`` for ``n`` keys, rounded up to a power of two.

    Padding (with repeats of the first key) keeps the number of distinct statements small, so
    they stay in sqlite3's prepared-statement cache.
    """
    size = 1 << (n - 1).bit_length()
    sql = _PLACEHOLDERS.get(size)
    if sql is None:
        sql = _PLACEHOLDERS[size] = "(" + ",".join("?" * size) + ")"
    return sql


def _padded(keys: Sequence[str]) -> Sequence[str]:
    size = 1 << (len(keys) - 1).bit_length()
    return [*keys, *[keys[0]] * (size - len(keys))] if size > len(keys) else keys
