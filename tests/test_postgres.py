"""PostgresStorage against a real PostgreSQL server started by the test fixtures."""

from __future__ import annotations

import asyncio
import base64
import gc
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest

from _pg_server import *  # noqa: F403  (the server fixtures: pytest looks in the globals)
from _pg_server import PG_PASSWORD, PostgresServer, postgres_server
from _support import eventually
from gramio_storage import (
    AuthenticationError,
    BackendTimeoutError,
    BackendUnavailableError,
    BaseStorage,
    ConfigurationError,
    DecodeError,
    InvalidKeyError,
    InvalidTTLError,
    Key,
    StorageClosedError,
    storage_from_url,
)
from gramio_storage._backend_util import upper_bound
from gramio_storage._codecs import MSGPACK
from gramio_storage.postgres import PostgresStorage
from gramio_storage.testing import StorageTests, make_state_machine

CHILD = Path(__file__).with_name("_postgres_child.py")
_tables = itertools.count()


def fresh_table() -> str:
    return f"t{os.getpid()}_{next(_tables)}"


@asynccontextmanager
async def raw(dsn: str) -> AsyncIterator[Any]:
    """A plain asyncpg connection, to look at (or tamper with) the table behind the storage."""
    con = await asyncpg.connect(dsn)
    try:
        yield con
    finally:
        await con.close()


# The hypothesis machine is a unittest-style class, which takes no fixtures: hand it the DSN
# through a module global set by an autouse fixture.
_DSN: list[str] = []


@pytest.fixture(autouse=True)
def _remember_dsn(postgres_dsn: str) -> None:
    _DSN[:] = [postgres_dsn]


# ---------------------------------------------------------------------- the conformance kit


class TestPostgresConformance(StorageTests):
    codec: Any = None

    @pytest.fixture
    async def storage(self, postgres_dsn: str) -> AsyncIterator[BaseStorage]:
        table = fresh_table()
        options = {} if self.codec is None else {"codec": self.codec}
        storage = PostgresStorage(postgres_dsn, table=table, sweep_interval=None, **options)
        yield storage
        await storage.close()
        async with raw(postgres_dsn) as con:
            await con.execute(f'DROP TABLE IF EXISTS "{table}"')


class TestPostgresMsgpackConformance(TestPostgresConformance):
    """Non-JSON bytes take the locked read-modify-write path for incr."""

    codec = MSGPACK


TestPostgresMachine = make_state_machine(
    lambda: PostgresStorage(_DSN[0], table="machine", sweep_interval=None)
).TestCase


# ---------------------------------------------------------------------- fixtures for own tests


@pytest.fixture
async def table(postgres_dsn: str) -> AsyncIterator[str]:
    name = fresh_table()
    yield name
    async with raw(postgres_dsn) as con:
        await con.execute(f'DROP TABLE IF EXISTS "{name}"')


@pytest.fixture
async def storage(postgres_dsn: str, table: str) -> AsyncIterator[PostgresStorage]:
    storage = PostgresStorage(postgres_dsn, table=table, sweep_interval=None)
    await storage.open()
    yield storage
    await storage.close()


# ---------------------------------------------------------------------- table layout, interop


async def test_table_layout_is_text_key_bytea_value_timestamptz_expiry(
    storage: PostgresStorage,
    postgres_dsn: str,
    table: str,
) -> None:
    """The table has a byte-ordered text key, a BYTEA value and a partial expiry index."""
    async with raw(postgres_dsn) as con:
        columns = await con.fetch(
            "SELECT column_name, data_type, collation_name, is_nullable "
            "FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
            table,
        )
        indexes = await con.fetch("SELECT indexdef FROM pg_indexes WHERE tablename = $1", table)
    assert [tuple(c) for c in columns] == [
        ("key", "text", "C", "NO"),
        ("value", "bytea", None, "NO"),
        ("expires_at", "timestamp with time zone", None, "YES"),
    ]
    definitions = sorted(i[0] for i in indexes)
    assert any("PRIMARY KEY" in d or "_pkey" in d for d in definitions)
    assert any("(expires_at)" in d and "WHERE (expires_at IS NOT NULL)" in d for d in definitions)


async def test_values_are_stored_as_the_exact_json_bytes(
    storage: PostgresStorage,
    postgres_dsn: str,
    table: str,
) -> None:
    """The value column holds the codec's bytes: compact JSON text, castable to jsonb in SQL."""
    await storage.set("user:1", {"name": "Алиса", "tags": ["a"], "n": 1.5})
    async with raw(postgres_dsn) as con:
        text, as_json = await con.fetchrow(
            f"SELECT convert_from(value, 'UTF8'), convert_from(value, 'UTF8')::jsonb "
            f"FROM \"{table}\" WHERE key = 'user:1'"
        )
    assert text == '{"name":"Алиса","tags":["a"],"n":1.5}'
    assert json.loads(as_json) == {"name": "Алиса", "tags": ["a"], "n": 1.5}


async def test_rows_written_by_plain_sql_are_read_and_expired_ones_are_absent(
    storage: PostgresStorage,
    postgres_dsn: str,
    table: str,
) -> None:
    """Another program (a GramIO bot's own adapter, psql) can share the table through SQL."""
    async with raw(postgres_dsn) as con:
        await con.execute(
            f'INSERT INTO "{table}" VALUES '
            "('live', convert_to('{\"step\":2}', 'UTF8'), now() + interval '1 hour'),"
            "('forever', convert_to('[1,2]', 'UTF8'), NULL),"
            "('old', convert_to('\"gone\"', 'UTF8'), now() - interval '1 second')"
        )
    assert await storage.get_many(["live", "forever", "old"]) == {
        "live": {"step": 2},
        "forever": [1, 2],
    }
    left = await storage.ttl("live")
    assert left is not None and 3590 < left <= 3600


async def test_expired_rows_are_absent_for_every_operation(
    storage: PostgresStorage,
    postgres_dsn: str,
    table: str,
) -> None:
    """An expired row (not swept yet) is missing everywhere; add/incr/update replace it."""
    keys = ["get", "add", "incr", "upd", "del", "many1", "many2", "clr"]
    async with raw(postgres_dsn) as con:
        await con.executemany(
            f"INSERT INTO \"{table}\" VALUES ($1, convert_to('41', 'UTF8'), "
            "now() - interval '1 second')",
            [(k,) for k in keys],
        )
    assert await storage.get("get", "missing") == "missing"
    assert await storage.has("get") is False
    assert await storage.get_many(keys) == {}
    assert [k async for k in storage.keys()] == []
    with pytest.raises(KeyError):
        await storage.ttl("get")
    assert await storage.delete("del") is False
    assert await storage.delete_many(["many1", "many2"]) == 0
    assert await storage.add("add", "fresh", ttl=100) is True
    assert await storage.get("add") == "fresh"
    assert await storage.incr("incr", 5, ttl=100) == 5  # restarts, takes the new TTL
    left = await storage.ttl("incr")
    assert left is not None and 99 < left <= 100
    seen: list[Any] = []
    assert await storage.update("upd", lambda v: seen.append(v) or "new") == "new"
    assert seen == [None]
    assert await storage.ttl("upd") is None
    assert await storage.clear() == 3  # add, incr, upd: the expired "clr"/"get" do not count
    async with raw(postgres_dsn) as con:
        assert await con.fetchval(f'SELECT count(*) FROM "{table}"') == 0


GRAMIO_SQL = {  # the statements docs/backends/postgres.md gives a GramIO (TypeScript) adapter
    "get": "SELECT convert_from(value, 'UTF8') FROM {t} "
    "WHERE key = $1 AND (expires_at IS NULL OR expires_at > now())",
    "has": "SELECT 1 FROM {t} WHERE key = $1 AND (expires_at IS NULL OR expires_at > now())",
    "set": "INSERT INTO {t} (key, value, expires_at) VALUES ($1, convert_to($2, 'UTF8'), NULL) "
    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at",
    "delete": "DELETE FROM {t} WHERE key = $1 RETURNING (expires_at IS NULL OR expires_at > now())",
}


async def test_the_documented_gramio_adapter_sql_shares_data_both_ways(
    storage: PostgresStorage, postgres_dsn: str, table: str
) -> None:
    """A TypeScript bot using the four documented statements and this storage see one table."""
    sql = {name: q.format(t=f'"{table}"') for name, q in GRAMIO_SQL.items()}
    scene = {"name": "signup", "params": {}, "state": {"age": 30}, "stepId": 1, "firstTime": False}
    async with raw(postgres_dsn) as con:
        # GramIO writes (JSON.stringify), Python reads.
        await con.execute(sql["set"], "@gramio/scenes:42", json.dumps(scene))
        assert await storage.get("@gramio/scenes:42") == scene
        # Python writes, GramIO reads (JSON.parse).
        await storage.set("1001", {"count": 3})
        await storage.incr("rl:default:1001")
        assert json.loads(await con.fetchval(sql["get"], "1001")) == {"count": 3}
        assert json.loads(await con.fetchval(sql["get"], "rl:default:1001")) == 1
        assert await con.fetchval(sql["has"], "1001") == 1
        # Expiry set by Python is honoured by the GramIO side.
        await storage.set("brief", "x", ttl=0.2)
        await eventually(lambda: _is_none(con.fetchval(sql["get"], "brief")))
        assert await con.fetchval(sql["has"], "brief") is None
        # Deletes are seen both ways.
        assert await con.fetchval(sql["delete"], "1001") is True
        assert await storage.has("1001") is False
        assert await storage.delete("@gramio/scenes:42") is True
        assert await con.fetchval(sql["get"], "@gramio/scenes:42") is None


async def _is_none(value: Awaitable[Any]) -> bool:
    return await value is None


# ---------------------------------------------------------------------- table creation


async def test_many_processes_creating_the_table_at_once_all_succeed(
    postgres_dsn: str,
) -> None:
    """Concurrent first use (separate pools, as separate processes) creates schema+table once."""
    schema, table = f"s{uuid.uuid4().hex[:8]}", fresh_table()
    storages = [
        PostgresStorage(postgres_dsn, table=table, schema=schema, sweep_interval=None)
        for _ in range(8)
    ]
    try:
        await asyncio.gather(*(s.open() for s in storages))
        await asyncio.gather(*(s.set(f"k{i}", i) for i, s in enumerate(storages)))
        assert len([k async for k in storages[0].keys()]) == 8
    finally:
        for s in storages:
            await s.close()
        async with raw(postgres_dsn) as con:
            await con.execute(f'DROP SCHEMA "{schema}" CASCADE')


async def test_schema_keeps_tables_of_the_same_name_apart(
    postgres_dsn: str,
    table: str,
) -> None:
    """schema= puts the table in that schema (created if missing)."""
    schema = f"s{uuid.uuid4().hex[:8]}"
    plain = PostgresStorage(postgres_dsn, table=table, sweep_interval=None)
    scoped = PostgresStorage(postgres_dsn, table=table, schema=schema, sweep_interval=None)
    try:
        await plain.set("k", "public")
        await scoped.set("k", "scoped")
        assert await plain.get("k") == "public"
        assert await scoped.get("k") == "scoped"
        assert f"schema='{schema}'" in repr(scoped)
    finally:
        await plain.close()
        await scoped.close()
        async with raw(postgres_dsn) as con:
            assert await con.fetchval(f'SELECT to_regclass(\'"{schema}"."{table}"\')')
            await con.execute(f'DROP SCHEMA "{schema}" CASCADE')


async def test_a_table_with_another_layout_is_refused(
    postgres_dsn: str,
    table: str,
) -> None:
    """Pointing at someone else's table fails at open with ConfigurationError, touching nothing."""
    async with raw(postgres_dsn) as con:
        await con.execute(f'CREATE TABLE "{table}" (key text PRIMARY KEY, value jsonb)')
        await con.execute(f"INSERT INTO \"{table}\" VALUES ('k', '1')")
    storage = PostgresStorage(postgres_dsn, table=table, sweep_interval=None)
    with pytest.raises(ConfigurationError, match="another layout") as info:
        await storage.open()
    assert "value" in str(info.value) and PG_PASSWORD not in str(info.value)
    await storage.close()
    async with raw(postgres_dsn) as con:
        assert await con.fetchval(f'SELECT value FROM "{table}"') == "1"


async def test_create_table_false_needs_an_existing_table(
    postgres_dsn: str,
    table: str,
) -> None:
    """create_table=False never runs DDL: a missing table is a ConfigurationError."""
    storage = PostgresStorage(postgres_dsn, table=table, create_table=False)
    with pytest.raises(ConfigurationError, match="does not exist"):
        await storage.get("k")
    await storage.close()
    async with raw(postgres_dsn) as con:
        assert await con.fetchval("SELECT to_regclass($1)", table) is None


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("table", "users; DROP TABLE x"),
        ("table", 'a"b'),
        ("table", "1abc"),
        ("table", ""),
        ("table", "t" * 64),
        ("table", "таблица"),
        ("schema", "bad schema"),
        ("schema", "x.y"),
    ],
)
def test_bad_identifiers_are_configuration_errors(argument: str, value: str) -> None:
    """Table and schema names must be plain identifiers (they are interpolated into SQL)."""
    with pytest.raises(ConfigurationError, match=argument):
        PostgresStorage("postgresql://u@127.0.0.1/db", **{argument: value})


async def test_long_table_names_get_their_own_expiry_index(postgres_dsn: str) -> None:
    """63-character table names sharing a long stem each get a distinct, untruncated index."""
    names = ["a" * 62 + "1", "a" * 62 + "2"]
    storages = [PostgresStorage(postgres_dsn, table=n, sweep_interval=None) for n in names]
    try:
        for storage in storages:
            await storage.open()
        async with raw(postgres_dsn) as con:
            for name in names:
                indexes = await con.fetch(
                    "SELECT indexname FROM pg_indexes WHERE tablename = $1 "
                    "AND indexdef LIKE '%(expires_at)%'",
                    name,
                )
                assert len(indexes) == 1, name
                assert len(indexes[0][0]) <= 63 and indexes[0][0].endswith("_expires_at_idx")
    finally:
        for storage in storages:
            await storage.close()
        async with raw(postgres_dsn) as con:
            for name in names:
                await con.execute(f'DROP TABLE IF EXISTS "{name}"')


# ---------------------------------------------------------------------- scans and prefixes


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", None),
        ("a", "b"),
        ("user:", "user;"),
        ("a\U0010ffff", "b"),
        ("\U0010ffff\U0010ffff", None),
        ("a\ud7ff", "a\ue000"),
    ],
)
def test_prefix_upper_bound(prefix: str, expected: str | None) -> None:
    """The key range of a prefix ends at its successor in code point order."""
    assert upper_bound(prefix) == expected


async def test_prefix_scans_are_exact_under_a_linguistic_database_collation(
    pg_server: PostgresServer,
) -> None:
    """In an ICU en-US database ("A1" sorts between "a" and "b") scans still match bytes."""
    name = f"icu{uuid.uuid4().hex[:8]}"
    dsn = pg_server.create_database(
        name, "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'"
    )
    keys = ["a", "a1", "A1", "B", "a-b", "ab", "b", "a\U0010ffff", "a\U0010ffffz", "\U0010ffff"]
    storage = PostgresStorage(dsn, sweep_interval=None)
    try:
        async with raw(dsn) as con:  # the premise: this database's default collation differs
            assert await con.fetchval("SELECT 'A1' > 'a' AND 'A1' < 'b'") is True
        await storage.set_many(dict.fromkeys(keys, 1))
        for prefix in ["a", "A", "a\U0010ffff", "\U0010ffff", "B", "a-"]:
            wanted = sorted(k for k in keys if k.startswith(prefix))
            assert sorted([k async for k in storage.keys(prefix)]) == wanted, prefix
        assert await storage.clear("a") == 6
        assert sorted([k async for k in storage.keys()]) == ["A1", "B", "b", "\U0010ffff"]
    finally:
        await storage.close()
        pg_server.psql(f'DROP DATABASE "{name}"')


async def test_keys_pages_survive_deletes_and_inserts_during_iteration(
    storage: PostgresStorage,
) -> None:
    """Keyset pagination: every surviving key once, even when the caller writes meanwhile."""
    storage.backend._page_size = 3  # many pages from few keys
    keys = [f"k:{i:02d}" for i in range(20)]
    await storage.set_many(dict.fromkeys(keys, 0))
    seen: list[str] = []
    skipped: set[str] = set()
    async for key in storage.keys("k:"):
        seen.append(key)
        i = int(key[2:])
        await storage.delete(key)  # delete what was seen,
        if i % 5 == 0:  # keys on a later page (one already fetched may still list them),
            skipped.add(f"k:{i + 4:02d}")
            await storage.delete(f"k:{i + 4:02d}")
        await storage.set(key[:-1], 1)  # and add keys behind the cursor ("k:1" < "k:10")
    assert seen == [k for k in keys if k not in skipped]


async def test_keys_are_limited_to_what_the_index_always_holds(
    storage: PostgresStorage, postgres_dsn: str, table: str
) -> None:
    """2,692 bytes (the B-tree's row limit for an incompressible key) is declared and exact.

    A longer key is InvalidKeyError from the core before any I/O, also inside set_many, where
    it writes nothing of the batch.
    """
    assert storage.capabilities.max_key_bytes == 2692
    noise = base64.b64encode(os.urandom(3000)).decode()  # incompressible
    await storage.set(noise[:2692], 1)
    assert await storage.get(noise[:2692]) == 1
    await storage.set("é" * 1346, 2)  # 2,692 bytes of two-byte characters
    for key in (noise[:2693], noise, "é" * 1347):
        with pytest.raises(InvalidKeyError, match="at most 2692 bytes") as info:
            await storage.set(key, 1)
        assert info.value.key == key
        with pytest.raises(InvalidKeyError, match="at most 2692 bytes"):
            await storage.set_many({"first": 1, key: 2, "last": 3})
    async with raw(postgres_dsn) as con:
        assert await con.fetchval(f'SELECT count(*) FROM "{table}"') == 2  # nothing else


async def test_nul_in_a_key_is_an_invalid_key_error(storage: PostgresStorage) -> None:
    """PostgreSQL TEXT cannot hold NUL: InvalidKeyError naming the key, also in batches.

    (Lone surrogates never get this far: the core refuses them for every backend.)
    """
    await storage.set("ok", 1)
    for bad in ("nul\x00key", "sur\ud800"):
        with pytest.raises(InvalidKeyError) as info:
            await storage.set(bad, 1)
        assert info.value.key == bad.encode("utf-8", "backslashreplace").decode()
        with pytest.raises(InvalidKeyError):
            await storage.set_many({"fine": 1, bad: 2})
        with pytest.raises(InvalidKeyError):
            await storage.get_many(["ok", bad])
    with pytest.raises(InvalidKeyError, match="cannot be stored"):
        await storage.set_many({"fine": 1, "nul\x00key": 2})
    assert await storage.get_many(["ok", "fine"]) == {"ok": 1}
    assert [k async for k in storage.keys("nul\x00")] == []  # a prefix no key can have
    assert await storage.clear("nul\x00") == 0


# ---------------------------------------------------------------------- atomic operations


async def test_incr_beyond_64_bits_uses_python_integers(storage: PostgresStorage) -> None:
    """Counters past int8 keep working (the SQL fast path hands over to Python ints)."""
    await storage.set("n", 2**63 - 1, ttl=100)
    assert await storage.incr("n") == 2**63
    assert await storage.incr("n", 2**70) == 2**63 + 2**70
    assert await storage.get("n") == 2**63 + 2**70
    left = await storage.ttl("n")
    assert left is not None and left <= 100  # the existing expiry is kept on this path too
    assert await storage.incr("m", -(2**64)) == -(2**64)


@pytest.mark.parametrize("stored", [1.5, 1e20, True, "5", [1], {"n": 1}], ids=repr)
async def test_incr_on_a_non_integer_raises_and_changes_nothing(
    storage: PostgresStorage, stored: Any
) -> None:
    """Floats, strings, booleans and containers are not counters."""
    await storage.set("v", stored)
    with pytest.raises(DecodeError, match="'v'"):
        await storage.incr("v")
    assert await storage.get("v") == stored


async def test_incr_on_non_json_bytes_raises_decode_error(
    storage: PostgresStorage,
    postgres_dsn: str,
    table: str,
) -> None:
    """Bytes that are not even UTF-8 (another codec's) are not a counter either."""
    async with raw(postgres_dsn) as con:
        await con.execute(f"INSERT INTO \"{table}\" VALUES ('bin', '\\xff00'::bytea, NULL)")
    with pytest.raises(DecodeError, match="'bin'"):
        await storage.incr("bin")


async def test_update_redoes_fn_under_a_lock_when_another_writer_got_in_first(
    storage: PostgresStorage,
    pg_server: PostgresServer,
    table: str,
) -> None:
    """A write between update's read and its write is never lost: fn runs again on it."""
    await storage.set("k", ["start"])
    calls: list[Any] = []

    def fn(value: Any) -> Any:
        calls.append(value)
        if len(calls) == 1:  # another process writes between our read and our write
            pg_server.psql(
                f"UPDATE \"{table}\" SET value = convert_to('[\"other\"]', 'UTF8') WHERE key = 'k'"
            )
        return [*value, "mine"]

    assert await storage.update("k", fn) == ["other", "mine"]
    assert calls == [["start"], ["other"]]
    assert await storage.get("k") == ["other", "mine"]


async def test_update_of_a_missing_key_created_meanwhile_is_not_lost(
    storage: PostgresStorage,
    pg_server: PostgresServer,
    table: str,
) -> None:
    """If the key appears between update's read and its insert, fn runs again on it."""
    calls: list[Any] = []

    def fn(value: Any) -> Any:
        calls.append(value)
        if len(calls) == 1:
            pg_server.psql(f"INSERT INTO \"{table}\" VALUES ('new', convert_to('5', 'UTF8'), NULL)")
        return (value or 0) + 1

    assert await storage.update("new", fn) == 6
    assert calls == [None, 5]


async def test_concurrent_set_many_in_different_orders_do_not_deadlock(
    storage: PostgresStorage,
) -> None:
    """Batches lock rows in key order, so crossing batches wait instead of deadlocking."""
    keys = [f"k{i}" for i in range(50)]
    batches = [dict.fromkeys(keys if i % 2 else keys[::-1], i) for i in range(16)]
    await asyncio.gather(*(storage.set_many(b) for b in batches))
    values = await storage.get_many(keys)
    assert len(values) == 50 and len(set(values.values())) == 1


async def test_set_many_with_a_key_given_twice_keeps_the_last(storage: PostgresStorage) -> None:
    """A str and a Key naming the same key in one mapping: one row, the later value."""
    await storage.set_many({"a": 1, Key("a", int): 2, "b": 3})
    assert await storage.get_many(["a", "b"]) == {"a": 2, "b": 3}


# ---------------------------------------------------------------------- TTL limits


async def test_the_largest_ttl_is_stored_and_a_larger_one_refused_before_io(
    storage: PostgresStorage, postgres_dsn: str, table: str
) -> None:
    """max_ttl (10**12 s) fits PostgreSQL's timestamps; 10**13 s is InvalidTTLError, not the
    server's "interval out of range", and writes nothing, in every operation."""
    assert storage.capabilities.max_ttl == 1e12
    await storage.set("far", 1, ttl=10**12)
    left = await storage.ttl("far")
    assert left is not None and 10**12 - 60 < left <= 10**12
    async with raw(postgres_dsn) as con:  # the premise: the server refuses 10**13 s itself
        with pytest.raises(asyncpg.DatetimeFieldOverflowError, match="out of range"):
            await con.fetchval("SELECT now() + 1e13 * interval '1 second'")
    calls = [
        lambda ttl: storage.set("k", 1, ttl=ttl),
        lambda ttl: storage.set_many({"a": 1, "b": 2}, ttl=ttl),
        lambda ttl: storage.add("k", 1, ttl=ttl),
        lambda ttl: storage.incr("n", ttl=ttl),
        lambda ttl: storage.update("u", lambda v: 1, ttl=ttl),
    ]
    for ttl in (10**13, 10**12 + 1, 1e300, 10**400):
        for call in calls:
            with pytest.raises(InvalidTTLError, match="ttl"):
                await call(ttl)
    with pytest.raises(InvalidTTLError):
        PostgresStorage(postgres_dsn, table=table, ttl=10**13)
    async with raw(postgres_dsn) as con:
        assert [r[0] for r in await con.fetch(f'SELECT key FROM "{table}"')] == ["far"]


# ---------------------------------------------------------------------- TTL sweep


async def test_sweep_deletes_expired_rows(postgres_dsn: str, table: str) -> None:
    """The periodic sweep removes expired rows that nobody reads again."""
    storage = PostgresStorage(postgres_dsn, table=table, sweep_interval=0.05)
    try:
        await storage.set("live", 1)
        await storage.set("long", 1, ttl=3600)
        async with raw(postgres_dsn) as con:
            await con.executemany(
                f"INSERT INTO \"{table}\" VALUES ($1, '\\x31', now() - interval '1 second')",
                [(f"old{i}",) for i in range(1500)],  # more than one sweep batch
            )

            async def only_live_rows_left() -> bool:
                return await con.fetchval(f'SELECT count(*) FROM "{table}"') == 2  # type: ignore[no-any-return]

            await eventually(only_live_rows_left)
    finally:
        await storage.close()


async def test_a_failing_sweep_is_logged_and_retried(
    postgres_dsn: str, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    """If a sweep fails (here: the table was dropped), a warning says why; the loop goes on."""
    storage = PostgresStorage(postgres_dsn, table=table, sweep_interval=0.05)
    try:
        await storage.open()
        async with raw(postgres_dsn) as con:
            await con.execute(f'DROP TABLE "{table}"')

        async def warned_twice() -> bool:
            return len([r for r in caplog.records if "sweep of" in r.getMessage()]) >= 2

        with caplog.at_level("WARNING", logger="gramio_storage.postgres"):
            await eventually(warned_twice)
        message = caplog.records[-1].getMessage()
        assert table in message and "does not exist" in message
        assert PG_PASSWORD not in message
        task = storage.backend._sweeper
        assert task is not None and not task.done()
    finally:
        await storage.close()


async def test_sweeper_stops_on_close(postgres_dsn: str, table: str) -> None:
    """close() ends the sweep task."""
    storage = PostgresStorage(postgres_dsn, table=table, sweep_interval=0.05)
    await storage.open()
    task = storage.backend._sweeper
    assert task is not None and not task.done()
    await storage.close()
    assert task.done()


async def test_sweeper_does_not_keep_a_dropped_storage_alive(
    postgres_dsn: str,
    table: str,
) -> None:
    """A storage nobody references is collected, and its sweep task then ends by itself."""
    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=2)
    try:
        storage = PostgresStorage(pool, table=table, sweep_interval=0.05)
        await storage.set("k", 1)
        task = storage.backend._sweeper
        assert task is not None
        ref = weakref.ref(storage)
        del storage
        gc.collect()
        assert ref() is None
        await asyncio.wait_for(task, timeout=5)
    finally:
        await pool.close()


# ---------------------------------------------------------------------- lifecycle and pools


async def test_a_pool_passed_in_is_not_closed(postgres_dsn: str, table: str) -> None:
    """close() leaves the caller's pool open; the storage itself refuses further use."""
    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=2)
    try:
        storage = PostgresStorage(pool, table=table)
        await storage.set("k", {"v": 1})
        assert "pool='asyncpg.Pool'" in repr(storage)
        await storage.close()
        assert await pool.fetchval("SELECT 41 + 1") == 42
        assert not pool.is_closing()
        with pytest.raises(StorageClosedError):
            await storage.get("k")
    finally:
        await pool.close()


async def test_close_closes_the_connections_it_opened(postgres_dsn: str, table: str) -> None:
    """A DSN-built storage owns its connections and closes them; using it afterwards fails."""
    app = f"gramio-close-{uuid.uuid4().hex[:6]}"
    storage = PostgresStorage(
        postgres_dsn,
        table=table,
        sweep_interval=None,
        min_connections=3,
        server_settings={"application_name": app},
    )

    async def connections() -> int:
        async with raw(postgres_dsn) as con:
            return await con.fetchval(  # type: ignore[no-any-return]
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app
            )

    async with storage as opened:
        assert opened is storage
        await storage.set("k", 1)
        assert await connections() == 3
    await eventually(lambda: _equals(connections(), 0))
    with pytest.raises(StorageClosedError):
        await storage.set("k", 2)
    await storage.close()  # idempotent


async def _equals(value: Awaitable[Any], expected: Any) -> bool:
    return await value == expected


async def _connections_named(dsn: str, app: str) -> int:
    async with raw(dsn) as con:
        return await con.fetchval(  # type: ignore[no-any-return]
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app
        )


async def test_more_concurrent_calls_than_connections_wait_their_turn(
    postgres_dsn: str, table: str
) -> None:
    """max_connections bounds the connections; extra concurrent calls queue and all complete."""
    app = f"gramio-bound-{uuid.uuid4().hex[:6]}"
    storage = PostgresStorage(
        postgres_dsn,
        table=table,
        sweep_interval=None,
        max_connections=2,
        server_settings={"application_name": app},
    )
    try:
        await asyncio.gather(*(storage.set(f"k{i}", i) for i in range(60)))
        results = await asyncio.gather(*(storage.incr(f"k{i % 6}") for i in range(60)))
        assert len(results) == 60
        assert await storage.get_many([f"k{i}" for i in range(6)]) == {
            f"k{i}": i + 10 for i in range(6)
        }
        assert await _connections_named(postgres_dsn, app) == 2
    finally:
        await storage.close()


async def test_a_cancelled_write_is_cancelled_on_the_server_too(
    postgres_dsn: str, table: str
) -> None:
    """Cancelling a call stuck on a lock stops its statement: no write lands later.

    The connection is reused afterwards (max_connections=1), not leaked or left half-done.
    """
    app = f"gramio-cancel-{uuid.uuid4().hex[:6]}"
    storage = PostgresStorage(
        postgres_dsn,
        table=table,
        sweep_interval=None,
        max_connections=1,
        server_settings={"application_name": app},
    )
    try:
        await storage.set("k", "before")
        async with raw(postgres_dsn) as con:

            async def waiting_on_a_lock() -> bool:
                return bool(
                    await con.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                        "AND wait_event_type = 'Lock'",
                        app,
                    )
                )

            async with raw(postgres_dsn) as locker, locker.transaction():
                await locker.execute(f"SELECT 1 FROM \"{table}\" WHERE key = 'k' FOR UPDATE")
                task = asyncio.create_task(storage.set("k", "zombie"))
                await eventually(waiting_on_a_lock)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                await eventually(lambda: _equals(waiting_on_a_lock(), False))
            # The lock is gone; a statement that survived the cancel would write now.
            assert await storage.get("k") == "before"
            assert await con.fetchval(f'SELECT count(*) FROM "{table}"') == 1
        assert await storage.incr("n") == 1  # the same (only) connection still works
        assert await _connections_named(postgres_dsn, app) == 1
    finally:
        await storage.close()


# ---------------------------------------------------------------------- event loops


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_second_asyncio_run_reconnects_and_leaves_nothing_open(postgres_dsn: str) -> None:
    """Each asyncio.run() gets fresh connections; the old loop's are closed without awaiting.

    asyncpg binds connections to the loop that opened them; after that loop closed, the
    storage drops them (sockets closed, no ResourceWarning) and its next call reconnects. The
    sweeper follows the storage to the new loop, and close() on a third loop leaves no
    connection and no file descriptor behind.
    """
    app = f"gramio-loops-{uuid.uuid4().hex[:6]}"
    table = fresh_table()
    storage = PostgresStorage(
        postgres_dsn,
        table=table,
        sweep_interval=0.05,
        min_connections=2,
        server_settings={"application_name": app},
    )
    before = _open_fds()

    async def connections() -> int:
        return await _connections_named(postgres_dsn, app)

    async def first() -> int:
        await storage.open()
        await storage.set("k", {"v": 1}, ttl=3600)
        return await connections()

    async def second() -> tuple[Any, float | None, int, bool]:
        value = await storage.get("k")
        left = await storage.ttl("k")
        await eventually(lambda: _equals(connections(), 2))  # the first loop's two are gone
        sweeper = storage.backend._sweeper
        return value, left, await connections(), sweeper is not None and not sweeper.done()

    async def third() -> None:
        await storage.incr("n")
        await storage.close()
        await eventually(lambda: _equals(connections(), 0))
        async with raw(postgres_dsn) as con:
            assert await con.fetchval(f"SELECT value FROM \"{table}\" WHERE key = 'n'") == b"1"
            await con.execute(f'DROP TABLE "{table}"')

    assert asyncio.run(first()) == 2
    value, left, count, sweeping = asyncio.run(second())
    assert value == {"v": 1} and left is not None and 3590 < left <= 3600
    assert count == 2 and sweeping
    asyncio.run(third())
    gc.collect()
    assert _open_fds() == before
    with pytest.raises(StorageClosedError):
        asyncio.run(storage.get("k"))


def test_a_pool_passed_in_is_not_taken_to_another_loop(postgres_dsn: str) -> None:
    """The caller's asyncpg.Pool belongs to its loop: on another, a typed error, not a raw one.

    Back on the pool's own loop the storage works again.
    """
    table = fresh_table()
    outcome: list[BaseException] = []

    async def main() -> None:
        pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=2)
        storage = PostgresStorage(pool, table=table, sweep_interval=None)
        try:
            await storage.set("k", 1)

            def elsewhere() -> None:
                try:
                    asyncio.run(storage.get("k"))
                except BaseException as e:
                    outcome.append(e)

            await asyncio.to_thread(elsewhere)
            assert await storage.get("k") == 1
        finally:
            await storage.close()
            await pool.execute(f'DROP TABLE "{table}"')
            await pool.close()

    asyncio.run(main())
    assert len(outcome) == 1 and isinstance(outcome[0], BackendUnavailableError), outcome
    assert "another event loop" in str(outcome[0])


# ---------------------------------------------------------------------- URLs


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
async def test_urls_with_storage_options_in_the_query(
    postgres_dsn: str,
    table: str,
    scheme: str,
) -> None:
    """Both schemes work; storage options come from the query, others go to the server."""
    app = f"gramio-test-{uuid.uuid4().hex[:6]}"
    url = postgres_dsn.replace("postgresql://", f"{scheme}://", 1)
    url += f"?table={table}&ttl=120&min_connections=1&max_connections=3&sweep_interval=none"
    url += f"&application_name={app}"
    storage = storage_from_url(url)
    assert isinstance(storage, PostgresStorage)
    try:
        assert storage.default_ttl == 120
        await storage.set("k", 1)
        left = await storage.ttl("k")
        assert left is not None and 119 < left <= 120
        async with raw(postgres_dsn) as con:
            assert await con.fetchval(f"SELECT count(*) FROM \"{table}\" WHERE key = 'k'") == 1
            assert (
                await con.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app
                )
                >= 1
            )
    finally:
        await storage.close()


def test_url_keyword_options_win_over_the_query() -> None:
    """storage_from_url(url, ttl=...) overrides ?ttl=; schema and create_table parse."""
    storage = PostgresStorage.from_url(
        "postgres://u:pw@db.example:5433/bot?ttl=10&schema=bot&create_table=false", ttl=99
    )
    assert storage.default_ttl == 99
    assert storage.schema == "bot" and storage.backend._create is False
    assert repr(storage) == (
        "PostgresStorage(server='db.example:5433', database='bot', schema='bot', "
        "table='gramio_storage', ttl=99)"
    )


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("ttl=soon", ConfigurationError),
        ("max_connections=big", ConfigurationError),
        ("max_connections=0", ConfigurationError),
        ("timeout=0", ConfigurationError),
        ("create_table=maybe", ConfigurationError),
        ("table=bad-name", ConfigurationError),
        ("sweep_interval=-5", ConfigurationError),
        ("ttl=-1", InvalidTTLError),
    ],
)
def test_bad_url_options_are_typed_errors(query: str, error: type[Exception]) -> None:
    """A malformed option names the option, never the password."""
    with pytest.raises(error) as info:
        storage_from_url(f"postgresql://u:{PG_PASSWORD}@h/db?{query}")
    assert PG_PASSWORD not in str(info.value)
    assert query.partition("=")[0] in str(info.value)


def test_v1_option_names_still_work_with_a_deprecation_warning() -> None:
    """min_size, max_size and command_timeout are now min/max_connections and timeout."""
    with pytest.warns(DeprecationWarning, match="max_size=...\\) is now max_connections"):
        storage = PostgresStorage("postgresql://u@h/db", max_size=3)
    assert storage.backend._max_connections == 3
    with pytest.warns(DeprecationWarning, match=r"now (timeout|min_connections)"):
        PostgresStorage.from_url("postgresql://u@h/db?command_timeout=2&min_size=0")


def test_a_dsn_of_another_scheme_is_refused() -> None:
    """Only postgresql:// and postgres:// DSNs are accepted."""
    with pytest.raises(ConfigurationError, match="postgresql://"):
        PostgresStorage(f"mysql://u:{PG_PASSWORD}@h/db")
    with pytest.raises(ConfigurationError, match=r"asyncpg\.Pool"):
        PostgresStorage(42)


# ---------------------------------------------------------------------- failures


async def test_a_closed_port_is_backend_unavailable_promptly() -> None:
    """Nothing listening: BackendUnavailableError within a moment, cause chained, no password."""
    with socket.socket() as s:  # a port that was free a moment ago, so nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    storage = PostgresStorage(f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{port}/postgres")
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        await storage.get("user:1")
    assert time.monotonic() - started < 5
    assert isinstance(info.value.__cause__, OSError)
    assert PG_PASSWORD not in str(info.value) and PG_PASSWORD not in repr(storage)
    assert f"127.0.0.1:{port}" in str(info.value)
    await storage.close()


async def test_a_wrong_password_is_an_authentication_error(
    pg_server: PostgresServer,
) -> None:
    """The server's refusal surfaces as AuthenticationError, quoting no password."""
    wrong = "Wr0ng-" + PG_PASSWORD
    storage = PostgresStorage(pg_server.dsn.replace(PG_PASSWORD, wrong))
    with pytest.raises(AuthenticationError) as info:
        await storage.open()
    assert isinstance(info.value.__cause__, asyncpg.InvalidPasswordError)
    for secret in (wrong, PG_PASSWORD):
        assert secret not in str(info.value) and secret not in repr(storage)
    await storage.close()


async def test_a_missing_database_is_backend_unavailable(pg_server: PostgresServer) -> None:
    """A DSN naming a database that does not exist fails clearly."""
    storage = PostgresStorage(pg_server.dsn_for("no_such_db"))
    with pytest.raises(BackendUnavailableError, match="no_such_db"):
        await storage.has("k")
    await storage.close()


async def test_a_statement_timeout_is_backend_timeout_error(
    storage: PostgresStorage,
    postgres_dsn: str,
    table: str,
) -> None:
    """A write stuck behind another transaction's row lock times out as BackendTimeoutError."""
    await storage.set("locked", "before")
    impatient = PostgresStorage(postgres_dsn, table=table, timeout=0.3)
    try:
        async with raw(postgres_dsn) as con, con.transaction():
            await con.execute(f"SELECT 1 FROM \"{table}\" WHERE key = 'locked' FOR UPDATE")
            with pytest.raises(BackendTimeoutError, match="'locked'") as info:
                await impatient.set("locked", "after")
            assert isinstance(info.value, TimeoutError)
        assert await storage.get("locked") == "before"
        await impatient.set("locked", "after")  # still usable once the lock is gone
        assert await storage.get("locked") == "after"
    finally:
        await impatient.close()


# ---------------------------------------------------------------------- secrets

# Every character that cuts a URL short, with pieces distinctive enough to grep for.
ODD_PASSWORD = "Kq7/Zx9?Wv3#Ty5@Pm2:Rb8"
ODD_PIECES = ["Kq7", "Zx9", "Wv3", "Ty5", "Pm2", "Rb8"]


def _leaks(text: str) -> list[str]:
    return [piece for piece in ODD_PIECES if piece in text]


@pytest.fixture
async def odd_role(postgres_dsn: str) -> AsyncIterator[str]:
    """A login role whose password holds / ? # @ and :; yields its name."""
    role = f"odd_{uuid.uuid4().hex[:8]}"
    async with raw(postgres_dsn) as con:
        await con.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{ODD_PASSWORD}'")
    yield role
    async with raw(postgres_dsn) as con:
        await con.execute(f"DROP ROLE {role}")


def _dsn_for(postgres_dsn: str, user: str, password: str, database: str = "postgres") -> str:
    host = postgres_dsn.rpartition("@")[2].partition("/")[0]
    return f"postgresql://{user}:{password}@{host}/{database}"


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_an_unencoded_password_is_a_configuration_error_quoting_none_of_it(
    postgres_dsn: str, scheme: str
) -> None:
    """/ ? # @ in a DSN password: ConfigurationError that says how to fix it, no fragment."""
    dsn = _dsn_for(postgres_dsn, "bot", ODD_PASSWORD).replace("postgresql", scheme, 1)
    for make in (
        lambda: PostgresStorage(dsn),
        lambda: PostgresStorage.from_url(dsn + "?table=t"),
        lambda: storage_from_url(dsn + "?ttl=5&prefix=p:"),
    ):
        with pytest.raises(ConfigurationError, match="percent-encode") as info:
            make()
        assert _leaks(str(info.value)) == []
        assert info.value.__cause__ is None and info.value.__context__ is None


async def test_a_percent_encoded_odd_password_connects_and_never_shows(
    postgres_dsn: str, odd_role: str, table: str
) -> None:
    """Encoded, the same password works; repr and every error message stay free of it."""
    encoded = quote(ODD_PASSWORD, safe="")
    storage = PostgresStorage(_dsn_for(postgres_dsn, odd_role, encoded), table=table)
    try:
        await storage.set("k", 1)
        assert await storage.get("k") == 1
        assert _leaks(repr(storage)) == [] and encoded not in repr(storage)
    finally:
        await storage.close()
    # the same password as a keyword, and failures that quote the server's refusal
    failing = [
        PostgresStorage(_dsn_for(postgres_dsn, odd_role, encoded, "no_such_db")),
        PostgresStorage(_dsn_for(postgres_dsn, odd_role, encoded + "x")),
        PostgresStorage(
            _dsn_for(postgres_dsn, odd_role, "", "no_such_db").replace(":@", "@"),
            password=ODD_PASSWORD,
        ),
    ]
    for broken in failing:
        with pytest.raises((BackendUnavailableError, AuthenticationError)) as info:
            await broken.get("k")
        await broken.close()
        for text in (str(info.value), repr(broken)):
            assert _leaks(text) == [] and encoded not in text, text


# ---------------------------------------------------------------------- processes


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _acked_until_killed(
    child: subprocess.Popen[str], wanted: int, kill: Callable[[], None]
) -> tuple[list[str], str]:
    """Read acknowledged keys until ``wanted`` arrived, ``kill()``; return every full line.

    Also returns the child's stderr.
    """
    assert child.stdout is not None
    acked: list[str] = []
    while len(acked) < wanted:
        line = child.stdout.readline()
        assert line.endswith("\n"), f"child stopped early: {child.communicate()[1]}"
        acked.append(line[:-1])
    kill()
    # To EOF through the same buffered file: communicate() reads the raw pipe and would drop
    # lines that readline() had already buffered.
    if child.stdin is not None:
        child.stdin.close()
    with child.stdout, child.stderr or child.stdout:
        rest = child.stdout.read()
        errors = child.stderr.read() if child.stderr else ""
    child.wait(timeout=30)
    # A line cut short by the kill was never acknowledged in full: ignore it.
    acked += [line for line in rest.split("\n")[:-1] if line]
    return acked, errors


async def test_acknowledged_writes_survive_a_killed_client(
    postgres_dsn: str,
    table: str,
) -> None:
    """SIGKILL the writing process mid-run: every key whose set() returned is there."""
    async with PostgresStorage(postgres_dsn, table=table) as storage:
        child = _spawn("write", postgres_dsn, table, "w:")
        acked, _ = await asyncio.to_thread(
            _acked_until_killed, child, 200, lambda: child.send_signal(signal.SIGKILL)
        )
        assert child.returncode == -signal.SIGKILL
        found = await storage.get_many(acked)
        assert len(acked) >= 200
        assert found == {k: {"i": int(k[2:])} for k in acked}


async def test_acknowledged_writes_survive_a_server_crash(tmp_path: Path) -> None:
    """Crash the server (immediate stop) under a writer: acknowledged keys survive recovery.

    The writer sees BackendUnavailableError; the B-tree passes amcheck after recovery; a
    storage that lived through the crash works again once its dead connection is replaced.
    """
    with postgres_server() as server:
        table = "crash"
        survivor = PostgresStorage(server.dsn, table=table, min_connections=1, max_connections=1)
        await survivor.open()
        child = _spawn("write", server.dsn, table, "c:")
        acked, errors = await asyncio.to_thread(
            _acked_until_killed, child, 300, lambda: server.stop(mode="immediate")
        )
        assert child.returncode == 3, errors
        # (asyncpg may log its own reconnection attempts before the child's last word)
        assert errors.strip().splitlines()[-1] == "BackendUnavailableError"
        with pytest.raises(BackendUnavailableError):
            await survivor.get("c:0")  # the server is down
        await asyncio.to_thread(server.restart)
        found = await survivor.get_many(acked)  # reconnects by itself
        assert found == {k: {"i": int(k[2:])} for k in acked}
        await survivor.close()
        server.psql("CREATE EXTENSION IF NOT EXISTS amcheck")
        # bt_index_check raises on a corrupt index; verify_heapam lists corrupt tuples.
        assert (
            server.psql(
                f"SELECT bt_index_check('{table}_pkey', true)::text, count(*) "
                f"FROM verify_heapam('{table}')"
            )
            == "|0"
        )


async def test_no_update_is_lost_across_processes(
    postgres_dsn: str,
    table: str,
) -> None:
    """4 processes x 250 incr and 4 x 250 update on one key each end at exactly 1000."""
    async with PostgresStorage(postgres_dsn, table=table) as storage:
        children = [_spawn("incr", postgres_dsn, table, "hits", "250") for _ in range(4)]
        children += [_spawn("update", postgres_dsn, table, "doc", "250") for _ in range(4)]

        def run_all() -> list[tuple[int, str, str]]:
            for child in children:  # wait until every process is connected...
                assert child.stdout is not None
                assert child.stdout.readline() == "ready\n", child.communicate()[1]
            for child in children:  # ...then start them together
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            outs = [child.communicate(timeout=120) for child in children]
            return [(c.returncode, o, e) for c, (o, e) in zip(children, outs, strict=True)]

        results = await asyncio.to_thread(run_all)
        assert [r[0] for r in results] == [0] * 8, [r[2] for r in results]
        assert await storage.get("hits") == 1000
        assert await storage.get("doc") == {"n": 1000}
