"""PostgreSQL storage over asyncpg: one table, shared safely by any number of bot processes.

Modules: ``_sql`` (table layout and statements), ``_dsn`` (checking a DSN, what may be shown
of it), ``_errors`` (the one driver-error table), ``_pool`` (a small, fast connection pool),
``_backend`` (:class:`PostgresBackend`), ``_storage`` (:class:`PostgresStorage` and its URLs).
"""

from __future__ import annotations

try:
    import asyncpg  # type: ignore[import-untyped]  # noqa: F401 - the import guard
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "PostgresStorage needs asyncpg: pip install 'gramio-storage[postgres]'", name=e.name
    ) from e

from ._backend import PostgresBackend
from ._storage import PostgresStorage

__all__ = ["PostgresBackend", "PostgresStorage"]
