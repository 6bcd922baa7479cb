"""The SQL: GramIO's table layout, the statements, and the ``IN (...)`` lists of bulk calls."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence

from .._errors import ConfigurationError

__all__ = ["TABLE_RE", "Statements", "check_table", "create_table", "padded", "placeholders"]

TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
SCAN_PAGE = 500  # keys per keyset page of scan()
CLEAR_PAGE = 1000  # rows per transaction of clear()
SWEEP_BATCH = 1000  # expired rows deleted per sweep step (bounds the pause)
MAX_CHUNK = 512  # keys per IN (...) list, below any SQLite's variable limit


def check_table(table: object) -> str:
    """``table`` if it is a plain SQL identifier SQLite does not reserve; else raise."""
    if not isinstance(table, str) or not TABLE_RE.fullmatch(table):
        raise ConfigurationError(
            f"table must be an SQL identifier (letters, digits and '_', not starting with a "
            f"digit, at most 63 characters), got {table!r}",
            backend="sqlite",
        )
    if table.lower().startswith("sqlite_"):
        raise ConfigurationError(
            f"table names starting with 'sqlite_' are reserved by SQLite, got {table!r}",
            backend="sqlite",
        )
    return table


# Statement templates; {t} is the quoted table name, {live} the "live" condition, which
# takes the current time: (expires_at IS NULL OR expires_at > ?).
_TEMPLATES = {
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
    "delete": "DELETE FROM {t} WHERE key = ? AND {live}",
    "get_many": "SELECT key, value FROM {t} WHERE {live} AND key IN ",
    "delete_many": "DELETE FROM {t} WHERE {live} AND key IN ",
    "scan_first": "SELECT key, expires_at FROM {t} WHERE key >= ? AND {live}",
    "scan": "SELECT key, expires_at FROM {t} WHERE key > ? AND {live}",
    "clear_page": "SELECT key, expires_at FROM {t} WHERE key >= ?",
    "clear_delete": "DELETE FROM {t} WHERE key >= ? AND key <= ?",
    # Batched, found through the partial index on expires_at.
    "sweep": "DELETE FROM {t} WHERE key IN (SELECT key FROM {t} WHERE expires_at <= ? LIMIT {n})",
}


class Statements:
    """Every statement on one table.

    The table name, checked by :func:`check_table`, is the only text pasted into SQL;
    everything else is bound.
    """

    __slots__ = tuple(_TEMPLATES)

    get: str
    expiry: str
    set: str
    add: str
    delete: str
    get_many: str
    delete_many: str
    scan_first: str
    scan: str
    clear_page: str
    clear_delete: str
    sweep: str

    def __init__(self, table: str) -> None:
        t = f'"{check_table(table)}"'
        live = "(expires_at IS NULL OR expires_at > ?)"
        for name, template in _TEMPLATES.items():
            setattr(self, name, template.format(t=t, live=live, n=SWEEP_BATCH))


def create_table(conn: sqlite3.Connection, table: str, path: str) -> None:
    """Create GramIO's table and the expiry index if missing; check an existing table."""
    t = f'"{check_table(table)}"'
    # GramIO's column order (it inserts positionally: VALUES (key, value, expires_at)).
    # value TEXT instead of GramIO's JSONB, whose NUMERIC affinity turns "1.0" into 1.
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {t} "
        "(key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL)"
    )
    check_columns(conn, table, path)
    # The sweep finds expired rows through this; partial, so keys without a TTL cost nothing.
    conn.execute(
        f'CREATE INDEX IF NOT EXISTS "{table}_expires_at" '
        f"ON {t} (expires_at) WHERE expires_at IS NOT NULL"
    )


def check_columns(conn: sqlite3.Connection, table: str, path: str) -> None:
    """Raise unless ``table`` has GramIO's ``key``/``value``/``expires_at`` columns."""
    columns = {row[1].lower() for row in conn.execute(f'PRAGMA table_info("{table}")')}
    if not columns:
        raise ConfigurationError(
            f"SQLite database {path!r} has no table {table!r}", backend="sqlite"
        )
    missing = {"key", "value", "expires_at"} - columns
    if missing:
        raise ConfigurationError(
            f"Table {table!r} in {path!r} exists but lacks the column(s) {sorted(missing)}; "
            "it is not a gramio-storage/GramIO table",
            backend="sqlite",
        )


_PLACEHOLDERS: dict[int, str] = {}


def placeholders(n: int) -> str:
    """``(?,?,...)`` for ``n`` keys, rounded up to a power of two.

    Padding (with repeats of the first key, see :func:`padded`) keeps the number of distinct
    statements small, so they stay in sqlite3's prepared-statement cache.
    """
    size = 1 << (n - 1).bit_length()
    sql = _PLACEHOLDERS.get(size)
    if sql is None:
        sql = _PLACEHOLDERS[size] = "(" + ",".join("?" * size) + ")"
    return sql


def padded(keys: Sequence[str]) -> Sequence[str]:
    """``keys`` padded with repeats of its first key to the length :func:`placeholders` uses."""
    size = 1 << (len(keys) - 1).bit_length()
    return [*keys, *[keys[0]] * (size - len(keys))] if size > len(keys) else keys
