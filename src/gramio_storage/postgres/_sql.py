"""The SQL text of the PostgreSQL backend, and the table's creation and layout check.

Layout (created on first use when missing)::

    CREATE TABLE gramio_storage (
        key        TEXT COLLATE "C" PRIMARY KEY,  -- byte order: prefix ranges are exact
        value      BYTEA NOT NULL,                -- the codec's bytes (JSON text by default)
        expires_at TIMESTAMPTZ                    -- NULL: never expires
    );
    CREATE INDEX gramio_storage_expires_at_idx ON gramio_storage (expires_at)
        WHERE expires_at IS NOT NULL;

Statements are built once per storage: only the table and schema names are interpolated, and
both are checked to be plain identifiers first (:func:`identifier`).
"""

# ruff: noqa: S608 - SQL text interpolates only the table/schema names, validated as identifiers
from __future__ import annotations

import hashlib
import re
from typing import Any

from .._errors import ConfigurationError

__all__ = ["Statements", "identifier", "prepare_table"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1; longer names are silently truncated
# Class id of the advisory lock serialising table creation ("grm" in ASCII).
_DDL_LOCK_CLASS = 0x67726D
_LAYOUT = {"key": "text", "value": "bytea", "expires_at": "timestamp with time zone"}

LIVE = "(expires_at IS NULL OR expires_at > now())"
_EXPIRY = "now() + $3::float8 * interval '1 second'"  # NULL seconds give a NULL expiry
_UPSERT = "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at"


def identifier(value: object, argument: str) -> str:
    """``value`` if it is a plain SQL identifier, else :class:`ConfigurationError`."""
    if not isinstance(value, str) or not _IDENTIFIER.match(value) or len(value) > MAX_IDENTIFIER:
        raise ConfigurationError(
            f"{argument} must be a plain SQL identifier (ASCII letters, digits and _, not "
            f"starting with a digit, at most {MAX_IDENTIFIER} characters), got {value!r}",
            backend="postgres",
        )
    return value


class Statements:
    """Every statement the backend runs against one table (``$n`` placeholders, asyncpg style)."""

    def __init__(self, table: str, schema: str | None) -> None:
        if len(table) + len("_expires_at_idx") <= MAX_IDENTIFIER:
            index = f"{table}_expires_at_idx"
        else:  # keep it unique per table without exceeding the identifier limit
            digest = hashlib.sha256(table.encode()).hexdigest()[:8]
            index = f"{table[: MAX_IDENTIFIER - 24]}_{digest}_expires_at_idx"
        t = f'"{table}"' if schema is None else f'"{schema}"."{table}"'
        self.table_ref = t
        self.index_ref = f'"{index}"' if schema is None else f'"{schema}"."{index}"'
        live, exp = LIVE, _EXPIRY
        self.create = [
            *([f'CREATE SCHEMA IF NOT EXISTS "{schema}"'] if schema else []),
            f'CREATE TABLE IF NOT EXISTS {t} (key TEXT COLLATE "C" PRIMARY KEY, '
            "value BYTEA NOT NULL, expires_at TIMESTAMPTZ)",
            f'CREATE INDEX IF NOT EXISTS "{index}" ON {t} (expires_at) '
            "WHERE expires_at IS NOT NULL",
        ]
        self.get = f"SELECT value FROM {t} WHERE key = $1 AND {live}"
        self.has = f"SELECT 1 FROM {t} WHERE key = $1 AND {live}"
        self.set = f"INSERT INTO {t} (key, value, expires_at) VALUES ($1, $2, {exp}) {_UPSERT}"
        # NULL: no row; false: an expired row (deleted, but it did not "exist").
        self.delete = f"DELETE FROM {t} WHERE key = $1 RETURNING {live}"
        self.get_many = f"SELECT key, value FROM {t} WHERE key = ANY($1::text[]) AND {live}"
        self.set_many = (
            f"INSERT INTO {t} (key, value, expires_at) "
            f"SELECT k, v, {exp} FROM unnest($1::text[], $2::bytea[]) AS u(k, v) {_UPSERT}"
        )
        # Per-row TTLs (seconds, NULL for never) for set_entries: a whole batch in one statement.
        self.set_entries = (
            f"INSERT INTO {t} (key, value, expires_at) "
            "SELECT k, v, now() + s * interval '1 second' "
            f"FROM unnest($1::text[], $2::bytea[], $3::float8[]) AS u(k, v, s) {_UPSERT}"
        )
        self.delete_many = (
            f"WITH d AS (DELETE FROM {t} WHERE key = ANY($1::text[]) RETURNING expires_at) "
            f"SELECT count(*) FROM d WHERE {live}"
        )
        # The prefix range [prefix, upper bound) is exact because comparisons use byte order;
        # COLLATE "C" is spelled out in case someone created the table with another collation.
        # The second column (seconds left, NULL for never) serves scan_ttl at no extra cost.
        scan = "SELECT key, extract(epoch FROM expires_at - now())::float8 "
        scan += f'FROM {t} WHERE key {{op}} $1 COLLATE "C" {{hi}}AND {live} '
        scan += 'ORDER BY key COLLATE "C" LIMIT $2'
        hi = 'AND key < $3 COLLATE "C" '
        self.scan = {
            (first, bounded): scan.format(op=">=" if first else ">", hi=hi if bounded else "")
            for first in (True, False)
            for bounded in (True, False)
        }
        clear = f"WITH d AS (DELETE FROM {t} {{where}}RETURNING expires_at) "
        clear += f"SELECT count(*) FROM d WHERE {live}"
        self.clear_all = clear.format(where="")
        self.clear_from = clear.format(where='WHERE key >= $1 COLLATE "C" ')
        self.clear_range = clear.format(
            where='WHERE key >= $1 COLLATE "C" AND key < $2 COLLATE "C" '
        )
        self.ttl = (
            f"SELECT extract(epoch FROM expires_at - now())::float8 FROM {t} "
            f"WHERE key = $1 AND {live}"
        )
        self.add = (
            f"INSERT INTO {t} AS s (key, value, expires_at) VALUES ($1, $2, {exp}) {_UPSERT} "
            "WHERE s.expires_at IS NOT NULL AND s.expires_at <= now() RETURNING true"
        )
        # The server parses the stored JSON number as int8: anything else (a float, a string,
        # true...) fails the cast, and the statement changes nothing. An expired row restarts.
        alive = "(s.expires_at IS NULL OR s.expires_at > now())"
        self.incr = (
            f"INSERT INTO {t} AS s (key, value, expires_at) VALUES ($1, $2, {exp}) "
            f"ON CONFLICT (key) DO UPDATE SET value = CASE WHEN {alive} THEN "
            "convert_to((convert_from(s.value, 'UTF8')::int8 + $4::int8)::text, 'UTF8') "
            f"ELSE EXCLUDED.value END, expires_at = CASE WHEN {alive} THEN s.expires_at "
            "ELSE EXCLUDED.expires_at END RETURNING value"
        )
        # update(): read with the row version, then write only if the version is unchanged.
        self.read_version = f"SELECT value, xmin, {live} FROM {t} WHERE key = $1"
        self.read_locked = f"SELECT value, {live} FROM {t} WHERE key = $1 FOR UPDATE"
        self.insert_new = (
            f"INSERT INTO {t} (key, value, expires_at) VALUES ($1, $2, {exp}) "
            "ON CONFLICT (key) DO NOTHING RETURNING true"
        )
        self.write_cas = (
            f"UPDATE {t} SET value = $2, expires_at = {exp} WHERE key = $1 AND xmin = $4::xid "
            "RETURNING true"
        )
        self.write_cas_keep = (
            f"UPDATE {t} SET value = $2 WHERE key = $1 AND xmin = $3::xid RETURNING true"
        )
        self.write_locked = f"UPDATE {t} SET value = $2, expires_at = {exp} WHERE key = $1"
        self.write_locked_keep = f"UPDATE {t} SET value = $2 WHERE key = $1"
        # Re-checking expires_at in the DELETE matters: a row re-set after the sub-select picked
        # it must survive. SKIP LOCKED lets several processes sweep without waiting on each other.
        self.sweep = (
            f"WITH doomed AS (SELECT key FROM {t} WHERE expires_at <= now() "
            "ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED) "
            f"DELETE FROM {t} AS s USING doomed WHERE s.key = doomed.key "
            "AND s.expires_at <= now()"
        )


async def prepare_table(pool: Any, sql: Statements, *, create: bool) -> None:
    """Check the table's layout, creating the table and its index first when missing.

    Several processes may start at once: creation is serialised by an advisory lock, since
    concurrent ``CREATE ... IF NOT EXISTS`` can still collide in the catalogs.

    Raises:
        ConfigurationError: The table has another layout, or is missing and ``create`` is
            False.
    """
    columns = await _columns(pool, sql)
    if columns:
        _check_layout(columns, sql)
        if await pool.fetchval("SELECT to_regclass($1)", sql.index_ref):
            return
    elif not create:
        raise ConfigurationError(
            f"Table {sql.table_ref} does not exist and create_table=False", backend="postgres"
        )
    async with pool.acquire() as con, con.transaction():
        await con.execute(
            "SELECT pg_advisory_xact_lock($1::int4, hashtext($2))", _DDL_LOCK_CLASS, sql.table_ref
        )
        for statement in sql.create:
            await con.execute(statement)
    _check_layout(await _columns(pool, sql), sql)


async def _columns(pool: Any, sql: Statements) -> dict[str, str]:
    rows = await pool.fetch(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
        sql.table_ref,
    )
    return {name: kind for name, kind in rows}


def _check_layout(columns: dict[str, str], sql: Statements) -> None:
    wrong = {k: columns.get(k) for k, v in _LAYOUT.items() if columns.get(k) != v}
    if wrong:
        raise ConfigurationError(
            f"Table {sql.table_ref} exists with another layout ({wrong}); expected "
            "key TEXT, value BYTEA, expires_at TIMESTAMPTZ. Use another table name.",
            backend="postgres",
        )
