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
  synced by checkpoints, which run on a second connection in a thread.

What remains on the loop is CPU work and reads of pages the OS has cached, like any in-process
cache, cut into slices: every 5 ms of back-to-back calls, the next one yields to the loop first.
Atomic operations (``add``, ``incr``, ``update``) are single UPSERT statements or
``BEGIN IMMEDIATE`` transactions, so they stay atomic across processes sharing the file.

Modules: ``_sql`` (table layout and statements), ``_errors`` (the one driver-error table),
``_connection`` (opening, the file's identity, the checkpoint thread that bounds the WAL),
``_upkeep`` (fair turns, back-pressure, the sweep), ``_backend`` (:class:`SQLiteBackend`),
``_storage`` (:class:`SQLiteStorage` and its URLs).
"""

from __future__ import annotations

from .._errors import MissingDependencyError

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

from ._backend import SQLiteBackend
from ._storage import SQLiteStorage, sqlite_storage

__all__ = ["SQLiteBackend", "SQLiteStorage", "sqlite_storage"]
