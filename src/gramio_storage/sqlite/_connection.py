"""Opening the loop's connection, and the checkpoints that keep the WAL folded in."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable

from .._errors import BackendUnavailableError, ConfigurationError
from . import _sql

__all__ = ["Checkpointer", "open_connection"]


def open_connection(
    path: str,
    table: str,
    timeout: float,
    fail: Callable[[sqlite3.Error, str, str | None], Exception],
) -> sqlite3.Connection:
    """The loop's connection: WAL, ``synchronous=NORMAL``, the table, ``busy_timeout=0``.

    ``fail`` turns a driver error during setup into the library's error.
    """
    try:
        conn = sqlite3.connect(
            path,
            isolation_level=None,  # autocommit; transactions are explicit BEGIN IMMEDIATE
            check_same_thread=False,  # the loop may run on another thread than __init__
            cached_statements=256,
            timeout=timeout,  # only while setting up; 0 below
        )
    except sqlite3.Error as e:
        raise BackendUnavailableError(
            f"Cannot open SQLite database {path!r}: {e}", backend="sqlite"
        ) from e
    try:
        _setup(conn, path, table)
    except sqlite3.Error as e:
        conn.close()
        raise fail(e, "open", None) from e
    except BaseException:
        conn.close()
        raise
    return conn


def _setup(conn: sqlite3.Connection, path: str, table: str) -> None:
    if path != ":memory:":
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ConfigurationError(
                f"SQLite database {path!r} cannot use WAL mode (journal_mode={mode}); "
                "it is needed for concurrent readers and cheap commits",
                backend="sqlite",
            )
        conn.execute("PRAGMA synchronous = NORMAL")
        # Checkpoints sync the disk: they run in a thread (see Checkpointer).
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA journal_size_limit = 67108864")
    _sql.create_table(conn, table, path)
    # Never wait for a lock on the loop's thread: SQLITE_BUSY comes back at once and the
    # operation retries after an asyncio sleep (see SQLiteBackend._retry).
    conn.execute("PRAGMA busy_timeout = 0")
    conn.text_factory = bytes  # values come back as the stored UTF-8 bytes, no round trip


class Checkpointer:
    """WAL checkpoints in a worker thread, on a connection of its own (never the loop's)."""

    def __init__(self, path: str, timeout: float) -> None:
        self._path = path
        self._timeout = timeout
        self._conn: sqlite3.Connection | None = None
        self._running: asyncio.Future[None] | None = None

    def soon(self) -> None:
        """Start a PASSIVE checkpoint in a thread unless one is running (it syncs the disk)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        running = self._running
        if running is not None and not running.get_loop().is_closed():
            return  # one at a time (a future of a closed loop will never finish: ignore it)
        self._running = future = loop.run_in_executor(None, self._checkpoint, "PASSIVE")
        future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future[None]) -> None:
        self._running = None
        if not future.cancelled():
            future.exception()  # a failed checkpoint is retried by the next one; mark it seen

    def _checkpoint(self, mode: str) -> None:
        conn = self._conn
        if conn is None:
            conn = self._conn = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=self._timeout
            )
        conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()

    async def close(self) -> None:
        """Wait for a running checkpoint, fold the rest of the WAL in, close the connection."""
        loop = asyncio.get_running_loop()
        running = self._running
        if running is not None and running.get_loop() is loop:
            await asyncio.wait([running])
        # Fold the WAL into the database off the loop, so the implicit checkpoint SQLite runs
        # when the last connection closes finds nothing left to sync. A failure (another
        # process busy, the executor shut down) is fine: a later one catches up.
        with contextlib.suppress(sqlite3.Error, RuntimeError):
            await loop.run_in_executor(None, self._checkpoint, "PASSIVE")
        if self._conn is not None:
            self._conn.close()
            self._conn = None
