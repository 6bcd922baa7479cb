"""SQLiteStorage: the user-facing facade over :class:`SQLiteBackend`, and its URLs."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from .._backend_util import query_options
from .._codecs import JSON, Codec, JSONCodec
from .._errors import ConfigurationError
from .._protocol import TTL
from .._storage import BaseStorage
from ._backend import SQLiteBackend

__all__ = ["SQLiteStorage", "sqlite_storage"]

_URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "table": str,
    "ttl": float,
    "timeout": float,
    "sweep_interval": float,
    "mode": str,
}
_MODES = {"ro": True, "rwc": False}  # SQLite's URI modes we take: read-only, read-write-create


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
        max_value_bytes: Refuse encoded values larger than this.
        read_only: Open an existing database read-only (SQLite's ``mode=ro``), for tools that
            only look: the file is never created or changed, a missing file raises
            :class:`~gramio_storage.BackendUnavailableError` naming it, and writes raise
            :class:`~gramio_storage.BackendError`.

    Raises:
        ConfigurationError: A bad path, table name, option, or an existing table without the
            ``key``/``value``/``expires_at`` columns.
        BackendUnavailableError: The file cannot be opened or is not a database; with
            ``read_only``, it does not exist.

    Example::

        storage = SQLiteStorage("bot.db")
        await storage.set("user:1", {"name": "Alice"}, ttl=3600)
    """

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
        max_value_bytes: int | None = None,
        read_only: bool = False,
    ) -> None:
        backend = SQLiteBackend(
            path,
            table=table,
            timeout=timeout,
            sweep_interval=sweep_interval,
            clock=clock,
            # JSON goes in as TEXT (what GramIO's JSON.parse reads); other codecs as BLOBs.
            text=isinstance(codec, JSONCodec),
            read_only=read_only,
        )
        super().__init__(backend, codec=codec, ttl=ttl, max_value_bytes=max_value_bytes)

    @property
    def backend(self) -> SQLiteBackend:
        """The :class:`SQLiteBackend` holding the connection."""
        return self._backend  # type: ignore[return-value]

    @property
    def path(self) -> str:
        """The database file (``":memory:"`` for an in-memory database)."""
        return self.backend.path

    @property
    def table(self) -> str:
        """The table keys live in."""
        return self.backend.table

    @property
    def read_only(self) -> bool:
        """Whether the database was opened read-only."""
        return self.backend.read_only

    def __repr__(self) -> str:
        text = super().__repr__()
        extra = [f"codec={self._codec!r}"] if self._codec is not JSON else []
        if self.backend.read_only:
            extra.append("read_only=True")
        if extra:
            return text[:-1] + ", " + ", ".join(extra) + ")"
        return text

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteStorage:
        """Build from ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or ``sqlite://:memory:``.

        Query parameters ``table``, ``ttl``, ``timeout``, ``sweep_interval`` and ``mode`` are
        accepted (``sqlite:///bot.db?table=sessions&ttl=86400``); keyword ``options`` override
        them. ``mode=ro`` opens the file read-only (``read_only=True``), ``mode=rwc`` (the
        default) read-write, creating it if missing.

        Raises:
            ConfigurationError: The URL is not a valid SQLite URL.
        """
        path = url_path(url)
        parsed = query_options(url, _URL_OPTIONS, scheme="sqlite")
        if "mode" in parsed:
            mode = parsed.pop("mode")
            if mode not in _MODES:
                raise ConfigurationError(
                    f"Invalid sqlite:// URL option mode={mode!r}: use mode=ro (read-only) or "
                    "mode=rwc (read-write, the default)",
                    backend="sqlite",
                )
            parsed["read_only"] = _MODES[mode]
        return cls(path, **{**parsed, **options})


def url_path(url: object) -> str:
    """The file an ``sqlite://`` URL names (``":memory:"`` for an in-memory database)."""
    if not isinstance(url, str):
        raise ConfigurationError(f"URL must be a str, got {url.__class__.__qualname__}")
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise ConfigurationError(f"Malformed SQLite URL: {e}", backend="sqlite") from None
    if parts.scheme.lower() != "sqlite":
        raise ConfigurationError(f"Not an sqlite:// URL: {url!r}", backend="sqlite")
    netloc, path = parts.netloc, unquote(parts.path)
    if netloc == ":memory:" and not path:
        return ":memory:"
    if netloc:
        raise ConfigurationError(
            f"SQLite URLs have no host ({netloc!r} in {url!r}): use sqlite:///relative.db, "
            "sqlite:////absolute/path.db or sqlite://:memory:",
            backend="sqlite",
        )
    path = path[1:]  # "/bot.db" -> "bot.db"; "//abs/bot.db" -> "/abs/bot.db"
    if not path:
        raise ConfigurationError(
            f"SQLite URL {url!r} names no file: use sqlite:///bot.db or sqlite://:memory:",
            backend="sqlite",
        )
    return path


def sqlite_storage(path: str | os.PathLike[str]) -> SQLiteStorage:
    """GramIO's ``sqliteStorage(path)``: a :class:`SQLiteStorage` on ``path``."""
    return SQLiteStorage(path)
