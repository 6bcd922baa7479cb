"""Opening the loop's connection, the file's identity, and the checkpoint thread.

WAL upkeep (measured in ``tests/test_sqlite.py`` and ``bench/bench_sqlite.py``):

* The loop's connection never checkpoints (``wal_autocheckpoint = 0``): a checkpoint syncs the
  disk, which would stall every task of the bot.
* A :class:`Checkpointer` thread, on a connection of its own, does. The write path wakes it
  every few hundred writes with a ``threading.Event`` (no loop callback is involved, so a
  writer that never yields still gets its checkpoints). It runs a ``PASSIVE`` checkpoint, which
  never blocks writers; once the WAL is over :data:`RESTART_BYTES` it follows with a
  ``RESTART`` checkpoint, which briefly holds the write lock so that the WAL is fully folded in
  and the next write starts it again from the beginning (PASSIVE alone cannot catch up with a
  writer that never pauses: that is how the WAL grew to gigabytes).
* ``journal_size_limit`` truncates the WAL file back to :data:`RESTART_BYTES` when it restarts.
* The write path itself applies back-pressure: past :data:`HARD_BYTES` a write waits (in
  ``asyncio.sleep``) for the checkpoint, so the WAL stays bounded even when the disk is slower
  than the writer.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from urllib.parse import quote

from .._errors import BackendUnavailableError, ConfigurationError
from . import _sql

__all__ = ["HARD_BYTES", "RESTART_BYTES", "Checkpointer", "file_identity", "open_connection"]

RESTART_BYTES = 16 * 1024 * 1024  # WAL size from which a checkpoint restarts the WAL
HARD_BYTES = 48 * 1024 * 1024  # WAL size at which writes wait for the checkpoint


def open_connection(
    path: str,
    table: str,
    timeout: float,
    fail: Callable[[sqlite3.Error, str, str | None], Exception],
    *,
    read_only: bool = False,
) -> sqlite3.Connection:
    """The loop's connection: WAL, ``synchronous=NORMAL``, the table, ``busy_timeout=0``.

    ``read_only`` opens an existing database with ``mode=ro`` (never creating it, never
    changing it); ``fail`` turns a driver error during setup into the library's error.
    """
    if read_only and not os.path.isfile(path):
        raise BackendUnavailableError(
            f"SQLite database {path!r} does not exist (opened read-only, so it is not created)",
            backend="sqlite",
        )
    target, uri = (
        (f"file:{quote(os.path.abspath(path))}?mode=ro", True)
        if read_only
        else (
            path,
            False,
        )
    )
    try:
        conn = sqlite3.connect(
            target,
            uri=uri,
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
        if read_only:
            _sql.check_columns(conn, table, path)
        else:
            _setup(conn, path, table)
        # Never wait for a lock on the loop's thread: SQLITE_BUSY comes back at once and the
        # operation retries after an asyncio sleep (see SQLiteBackend._retry).
        conn.execute("PRAGMA busy_timeout = 0")
    except sqlite3.Error as e:
        conn.close()
        raise fail(e, "open", None) from e
    except BaseException:
        conn.close()
        raise
    conn.text_factory = bytes  # values come back as the stored UTF-8 bytes, no round trip
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
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # the Checkpointer thread does it
        conn.execute(f"PRAGMA journal_size_limit = {RESTART_BYTES}")
    _sql.create_table(conn, table, path)


def file_identity(path: str) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of the file at ``path``, None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def wal_bytes(path: str) -> int:
    """The size of the database's WAL file (0 when there is none)."""
    try:
        return os.stat(path + "-wal").st_size
    except OSError:
        return 0


class Checkpointer:
    """A daemon thread that folds the WAL into the database, on a connection of its own.

    It holds no reference to the backend, so a dropped backend is collected; the backend's
    finalizer calls :meth:`stop`.
    """

    def __init__(self, path: str, timeout: float) -> None:
        self._path = path
        self._timeout = timeout
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.runs = 0  # checkpoints done (tests and the bench read it)

    @property
    def idle(self) -> bool:
        """No checkpoint is pending or running."""
        return self._idle.is_set() and not self._wake.is_set()

    def wake(self) -> None:
        """Ask for a checkpoint soon (cheap; safe from any thread)."""
        with self._lock:
            if self._stopping:
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._main, name=f"gramio-storage checkpoint {self._path}", daemon=True
                )
                self._thread.start()
        self._idle.clear()
        self._wake.set()

    def _main(self) -> None:
        try:
            conn = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=self._timeout
            )
        except sqlite3.Error:
            self._idle.set()
            return
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                self._checkpoint(conn)
                self._idle.set()
        finally:
            conn.close()
            self._idle.set()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            # PASSIVE copies what it can without blocking anyone; when the WAL is big, RESTART
            # then takes the write lock for the few frames written meanwhile, so the next write
            # starts the WAL afresh. A failure (another process busy) is retried next time.
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            if wal_bytes(self._path) >= RESTART_BYTES:
                conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
        except sqlite3.Error:
            pass
        self.runs += 1

    async def wait_idle(self, timeout: float) -> None:  # noqa: ASYNC109 - a deadline, not a cancel
        """Wait, without blocking the loop, until no checkpoint is pending (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        # Polling, not an asyncio.Event: setting one from this thread would need the loop to
        # run a callback, and the point of the thread is to never depend on that.
        while not self.idle and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.001)

    async def join(self) -> None:
        """Stop the thread and wait (without blocking the loop) until it has ended."""
        thread = self.stop()
        while thread is not None and thread.is_alive():  # noqa: ASYNC110 - see wait_idle
            await asyncio.sleep(0.001)

    def stop(self) -> threading.Thread | None:
        """Make the thread finish (after a checkpoint in progress); return it to join."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        self._wake.set()
        return thread
