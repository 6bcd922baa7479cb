"""The one place where ``sqlite3`` errors become the library's errors."""

from __future__ import annotations

import sqlite3

from .._errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    StorageClosedError,
    ValueTooLargeError,
)

__all__ = ["BUSY", "is_busy", "translate"]

BUSY = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED (primary result codes)
_UNAVAILABLE = frozenset({14, 26})  # SQLITE_CANTOPEN, SQLITE_NOTADB
_TOOBIG = 18  # SQLITE_TOOBIG


def code(e: BaseException) -> int:
    """The primary SQLite result code of a driver error (0 when it carries none)."""
    return getattr(e, "sqlite_errorcode", 0) & 0xFF


def is_busy(e: BaseException) -> bool:
    """Whether ``e`` is lock contention, the only failure worth retrying."""
    return code(e) in BUSY


def translate(
    e: sqlite3.Error,
    *,
    op: str,
    key: str | None,
    path: str,
    timeout: float,
    closed: bool,
) -> Exception:
    """The library error for ``e`` (the caller raises it ``from e``)."""
    where = f" for key {key!r}" if key is not None else ""
    if closed:
        return StorageClosedError(
            f"SQLiteStorage({path!r}) is closed; cannot {op}{where}", key=key, backend="sqlite"
        )
    primary = code(e)
    if primary in BUSY:
        return BackendTimeoutError(
            f"SQLite {op}{where} gave up after waiting {timeout:g}s for a lock on {path!r} "
            f"held by another connection: {e}",
            key=key,
            backend="sqlite",
        )
    message = f"SQLite {op} failed{where} in {path!r}: {e}"
    if primary == _TOOBIG:
        return ValueTooLargeError(message, key=key, backend="sqlite")
    if primary in _UNAVAILABLE:
        return BackendUnavailableError(message, key=key, backend="sqlite")
    return BackendError(message, key=key, backend="sqlite")
