"""RedisStorage on a real redis-server: conformance, native commands, GramIO interop, failures.

Every server here is a real ``redis-server`` started by ``_redis_server`` on a free loopback port;
tests that stop, pause or misconfigure a server start a private one.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
import redis.exceptions as rx

from _redis_child import run_workers
from _redis_server import *  # noqa: F403  (the server fixtures: pytest looks in the globals)
from _redis_server import RedisServer, flush, free_port, redis_server
from gramio_storage import (
    MSGPACK,
    AuthenticationError,
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    BaseStorage,
    ConfigurationError,
    DecodeError,
    EncodeError,
    InvalidKeyError,
    Key,
    StorageClosedError,
    storage_from_url,
)
from gramio_storage.redis import RedisStorage, _glob_escape
from gramio_storage.testing import StorageTests, make_state_machine


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain redis-py client on the shared server: what another program (GramIO) would see."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def storage(redis_server_session: RedisServer) -> AsyncIterator[RedisStorage]:
    """A storage on an emptied shared server."""
    flush(redis_server_session)
    storage = RedisStorage.from_url(redis_server_session.url)
    yield storage
    await storage.close()


# ------------------------------------------------------------------------------ conformance


class TestRedisConformance(StorageTests):
    """The shipped conformance kit against a single real server."""

    @pytest.fixture
    async def storage(self, redis_server_session: RedisServer) -> AsyncIterator[BaseStorage]:
        flush(redis_server_session)
        storage = RedisStorage.from_url(redis_server_session.url)
        yield storage
        await storage.close()


class TestRedisDecodingClientConformance(StorageTests):
    """The kit again through a caller's client made with ``decode_responses=True``."""

    @pytest.fixture
    async def storage(self, redis_server_session: RedisServer) -> AsyncIterator[BaseStorage]:
        flush(redis_server_session)
        client = aioredis.Redis.from_url(redis_server_session.url, decode_responses=True)
        storage = RedisStorage(client)
        yield storage
        await storage.close()
        await client.aclose()


_MACHINE: dict[str, str] = {}


@pytest.fixture(autouse=True, scope="module")
def _machine_url(redis_url: str) -> None:
    # The state machines build their storages inside hypothesis; they read the URL from here.
    _MACHINE["url"] = redis_url


def _machine_storage(db: int, prefix: str = "") -> RedisStorage:
    url = _MACHINE["url"].rsplit("/", 1)[0] + f"/{db}"
    storage = RedisStorage.from_url(url)
    return storage.with_prefix(prefix) if prefix else storage


TestRedisMachine = make_state_machine(lambda: _machine_storage(1)).TestCase
# A root prefix full of glob metacharacters: SCAN MATCH must still see exactly its keys.
TestRedisPrefixedMachine = make_state_machine(lambda: _machine_storage(2, "m[*]?\\:")).TestCase


# ------------------------------------------------------------------------------ construction


async def _owner_sees(raw_url: str, key: str) -> tuple[bytes | None, int]:
    client = aioredis.Redis.from_url(raw_url)
    try:
        return await client.get(key), await client.pttl(key)
    finally:
        await client.aclose()


def _db_url(url: str, db: int) -> str:
    return url.rsplit("/", 1)[0] + f"/{db}"


async def test_prefix_and_default_ttl_work_in_every_construction_path(
    redis_server_session: RedisServer,
) -> None:
    """Client, URL, storage_from_url, keywords and unix socket all honour prefixes and ttl=."""
    server = redis_server_session
    flush(server)
    client = aioredis.Redis.from_url(_db_url(server.url, 3))
    built = {
        "client": RedisStorage(client, ttl=60).with_prefix("c:"),
        "url": RedisStorage.from_url(_db_url(server.url, 3), ttl=60).with_prefix("u:"),
        "storage_from_url": storage_from_url(_db_url(server.url, 3) + "?prefix=s:", ttl=60),
        "keywords": RedisStorage(host="127.0.0.1", port=server.port, db=3, ttl=60).with_prefix(
            "k:"
        ),
        "unix_url": storage_from_url(f"unix://{server.unix_path}?db=3&prefix=x:", ttl=60),
        "unix_keyword": RedisStorage(
            unix_socket_path=str(server.unix_path), db=3, ttl=60
        ).with_prefix("y:"),
        "direct": RedisStorage.from_url(
            _db_url(server.url, 3) + "?pipelining=false", ttl=60
        ).with_prefix("d:"),
    }
    try:
        for name, storage in built.items():
            assert isinstance(storage, RedisStorage), name
            await storage.set("key", {"via": name})
            assert await storage.get("key") == {"via": name}
            value, pttl = await _owner_sees(_db_url(server.url, 3), storage.prefix + "key")
            assert value == json.dumps({"via": name}, separators=(",", ":")).encode(), name
            assert 55_000 < pttl <= 60_000, (name, pttl)
            assert [k async for k in storage.keys()] == ["key"], name
    finally:
        for storage in built.values():
            await storage.close()  # a view made by with_prefix: a no-op, closed below
            await storage.backend.close()
        await client.aclose()


async def test_default_timeouts_are_short_and_configurable(redis_url: str) -> None:
    """A storage that makes its client uses 2 s connect / 5 s reply timeouts unless told."""
    storages = [
        RedisStorage.from_url(redis_url),
        RedisStorage.from_url(redis_url + "?socket_timeout=0.5&socket_connect_timeout=0.25"),
        RedisStorage.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.25),
        RedisStorage(host="127.0.0.1", socket_timeout=0.5, socket_connect_timeout=0.25),
        RedisStorage.from_url(redis_url, socket_timeout=None),
    ]
    seen = []
    for storage in storages:
        kwargs = storage.client.connection_pool.connection_kwargs  # type: ignore[union-attr]
        # The reply timeout is redis-py's own socket_timeout.
        seen.append((kwargs["socket_connect_timeout"], kwargs["socket_timeout"]))
        await storage.close()
    assert seen == [(2.0, 5.0), (0.25, 0.5), (0.25, 0.5), (0.25, 0.5), (2.0, None)]
    for bad in ("0", "-1", "soon", "nan"):
        with pytest.raises(ConfigurationError, match="socket_timeout"):
            RedisStorage.from_url(f"{redis_url}?socket_timeout={bad}")


async def test_rejects_bad_construction() -> None:
    """Wrong client types, a client plus options, and bad URLs raise ConfigurationError."""
    client = aioredis.Redis()
    with pytest.raises(ConfigurationError, match="not both"):
        RedisStorage(client, host="elsewhere")
    with pytest.raises(ConfigurationError, match=r"redis\.asyncio\.Redis"):
        RedisStorage(redis.Redis())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"redis\.asyncio\.Redis"):
        RedisStorage("redis://localhost")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="redis://"):
        RedisStorage.from_url("http://localhost:6379")
    with pytest.raises(ConfigurationError, match="unix"):
        RedisStorage.from_url("unix:///tmp/redis.sock", cluster=True)
    with pytest.raises(ConfigurationError, match="with_prefix"):
        RedisStorage(client, prefix="bot:")
    with pytest.raises(ConfigurationError, match="with_prefix"):
        RedisStorage.from_url("redis://localhost", prefix="bot:")
    with pytest.raises(ConfigurationError, match="Malformed"):
        RedisStorage.from_url("redis://:pw@[::1/0")
    with pytest.raises(ConfigurationError, match="not both"):
        RedisStorage(timeout=1, socket_timeout=1)
    await client.aclose()


async def test_credentials_never_appear_in_repr_or_errors() -> None:
    """A password in the URL stays out of repr and of configuration and connection errors."""
    secret = "s3cr3t-pa55"
    with pytest.raises(ConfigurationError) as info:
        RedisStorage.from_url(f"redis://bob:{secret}@127.0.0.1:1/0?socket_timeout=soon")
    assert secret not in str(info.value) and info.value.__cause__ is None
    storage = RedisStorage.from_url(f"redis://bob:{secret}@127.0.0.1:{free_port()}/0")
    assert secret not in repr(storage) and "bob" not in repr(storage)
    assert repr(storage).startswith("RedisStorage(server='redis://127.0.0.1:")
    with pytest.raises(BackendUnavailableError) as failure:
        await storage.get("k")
    assert secret not in str(failure.value)
    await storage.close()


async def test_wrong_password_is_an_authentication_error() -> None:
    """A server that refuses the credentials raises AuthenticationError, without the password."""
    with redis_server(config={"requirepass": "right-password"}) as server:
        url = f"redis://:wrong-password@127.0.0.1:{server.port}/0"
        async with RedisStorage.from_url(url) as storage:
            with pytest.raises(AuthenticationError) as info:
                await storage.set("k", 1)
            assert "wrong-password" not in str(info.value)
            assert isinstance(info.value.__cause__, rx.AuthenticationError)
        async with RedisStorage.from_url(url.replace("wrong", "right")) as storage:
            await storage.set("k", 1)
            assert await storage.get("k") == 1


def _make_tls_files(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    openssl = subprocess.run(["which", "openssl"], capture_output=True, check=False)
    if openssl.returncode != 0:
        raise RuntimeError("the TLS test needs the openssl command (apt-get install openssl)")
    files = {
        name: directory / name for name in ("ca.key", "ca.crt", "srv.key", "srv.csr", "srv.crt")
    }
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        ["req", "-x509", *ec, "-keyout", files["ca.key"], "-out", files["ca.crt"], "-days", "2",
         "-subj", "/CN=gramio-test-ca"],
        ["req", *ec, "-keyout", files["srv.key"], "-out", files["srv.csr"],
         "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", files["srv.csr"], "-CA", files["ca.crt"], "-CAkey", files["ca.key"],
         "-CAcreateserial", "-out", files["srv.crt"], "-days", "2", "-extfile", ext],
    ]  # fmt: skip
    for step in steps:
        subprocess.run(["openssl", *map(str, step)], capture_output=True, check=True)
    return files


async def test_rediss_url_connects_over_tls(tmp_path: Path) -> None:
    """rediss:// talks TLS to a real TLS-enabled redis-server and verifies its certificate."""
    files = _make_tls_files(tmp_path)
    tls_port = free_port()
    config = {
        "tls-port": str(tls_port),
        "tls-cert-file": str(files["srv.crt"]),
        "tls-key-file": str(files["srv.key"]),
        "tls-ca-cert-file": str(files["ca.crt"]),
        "tls-auth-clients": "no",
    }
    with redis_server(config=config):
        url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={files['ca.crt']}"
        storage = storage_from_url(url)
        assert repr(storage).startswith("RedisStorage(server='rediss://127.0.0.1:")
        await storage.set("tls", {"secure": True}, ttl=30)
        assert await storage.get("tls") == {"secure": True}
        await storage.close()
        # Without the CA the server's certificate is untrusted: a typed error, not a hang.
        async with RedisStorage.from_url(f"rediss://127.0.0.1:{tls_port}/0") as untrusted:
            with pytest.raises(BackendUnavailableError, match="tls"):
                await untrusted.get("tls")


# ------------------------------------------------------------------------------ lifecycle


async def _client_names(raw: aioredis.Redis) -> list[str]:
    return [c.get("name", "") for c in await raw.client_list()]


async def _until(probe: Any, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while not await probe():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def test_close_releases_only_what_the_storage_created(
    redis_url: str, raw: aioredis.Redis
) -> None:
    """close() disconnects a client the storage made, and leaves the caller's client open."""
    owned = RedisStorage.from_url(redis_url, client_name="gramio-owned")
    mine = aioredis.Redis.from_url(redis_url, client_name="gramio-mine")
    borrowed = RedisStorage(mine)
    await owned.set("a", 1)
    await borrowed.set("b", 2)  # on the storage's own pipelined connection, with mine's options
    await mine.ping()  # and one connection of the caller's own pool
    assert {"gramio-owned", "gramio-mine"} <= set(await _client_names(raw))
    await owned.close()
    await borrowed.close()
    await borrowed.close()  # idempotent
    assert await _until(lambda: _gone(raw, "gramio-owned"))
    assert "gramio-mine" in await _client_names(raw)
    assert await mine.get("b") == b"2"  # the caller's client still works
    await mine.aclose()


async def _gone(raw: aioredis.Redis, name: str) -> bool:
    return name not in await _client_names(raw)


async def test_a_closed_storage_raises_storage_closed_error(storage: RedisStorage) -> None:
    """Every operation on a closed storage (and on its views) raises StorageClosedError."""
    view = storage.with_prefix("v:")
    await storage.close()
    for call in (
        lambda: storage.get("k"),
        lambda: view.set("k", 1),
        lambda: storage.get_many(["a", "b"]),
        lambda: storage.set_many({"a": 1}, ttl=5),
        lambda: storage.update("k", lambda v: v),
        lambda: storage.clear(),
    ):
        with pytest.raises(StorageClosedError):
            await call()
    with pytest.raises(StorageClosedError):
        [k async for k in storage.keys()]


# ------------------------------------------------------------------------------ native commands


async def _command_calls(raw: aioredis.Redis) -> dict[str, int]:
    stats = await raw.info("commandstats")
    ignored = {"info", "config|resetstat", "hello", "client|setinfo", "select", "ping"}
    calls = {}
    for name, fields in stats.items():
        command = name.removeprefix("cmdstat_")
        if command not in ignored:
            calls[command] = int(fields["calls"])
    return calls


async def _calls_during(raw: aioredis.Redis, action: Any) -> dict[str, int]:
    await raw.config_resetstat()
    await action()
    return await _command_calls(raw)


async def test_each_operation_uses_its_native_command(
    storage: RedisStorage, raw: aioredis.Redis
) -> None:
    """has=EXISTS, delete=UNLINK, get_many=one MGET, set_many=one MSET, add=SET NX, incr=INCRBY."""
    await storage.set_many({f"k{i}": i for i in range(100)})
    keys = [f"k{i}" for i in range(100)]
    expectations: list[tuple[Any, dict[str, int]]] = [
        (lambda: storage.get("k1"), {"get": 1}),
        (lambda: storage.has("k1"), {"exists": 1}),
        (lambda: storage.set("k1", 1, ttl=5), {"set": 1}),
        (lambda: storage.delete("k1"), {"unlink": 1}),
        (lambda: storage.get_many(keys), {"mget": 1}),
        (lambda: storage.set_many({"a": 1, "b": 2}), {"mset": 1}),
        (lambda: storage.set_many({"a": 1, "b": 2}, ttl=5), {"set": 2}),
        (lambda: storage.delete_many(["a", "b", "a"]), {"unlink": 1}),
        (lambda: storage.ttl("k2"), {"pttl": 1}),
        (lambda: storage.add("new", 1), {"set": 1}),
        (lambda: storage.incr("n"), {"incrby": 1}),
    ]
    for action, expected in expectations:
        assert await _calls_during(raw, action) == expected
    # update: one GET, then the compare-and-set script (whose own GET and SET Redis counts too)
    calls = await _calls_during(raw, lambda: storage.update("k3", lambda v: v + 1))
    assert calls.get("evalsha", 0) + calls.get("eval", 0) == 1
    assert "watch" not in calls and "multi" not in calls
    # clear: SCAN pages and UNLINK batches, never FLUSHDB/FLUSHALL/KEYS
    calls = await _calls_during(raw, lambda: storage.clear("k"))
    assert set(calls) == {"scan", "unlink"}, calls


async def test_ttl_is_sent_in_milliseconds(storage: RedisStorage, raw: aioredis.Redis) -> None:
    """Fractional TTLs reach the server as PX milliseconds, never truncated to seconds."""
    await storage.set("float", 1, ttl=1.5)
    await storage.set("delta", 1, ttl=timedelta(milliseconds=2250))
    await storage.set_many({"many": 1}, ttl=0.75)
    await storage.add("added", 1, ttl=3.25)
    await storage.incr("counter", ttl=4.5)
    await storage.update("updated", lambda v: 1, ttl=5.75)
    for key, ms in (
        ("float", 1500),
        ("delta", 2250),
        ("many", 750),
        ("added", 3250),
        ("counter", 4500),
        ("updated", 5750),
    ):
        left = await raw.pttl(key)
        assert ms - 200 < left <= ms, (key, left)
    assert 1.3 < (await storage.ttl("float") or 0) <= 1.5


async def test_sub_second_ttl_expires_on_time(storage: RedisStorage) -> None:
    """A 0.2 s TTL is gone well before a second (it would be 0 or 1 s if truncated)."""
    start = time.monotonic()
    await storage.set("blink", 1, ttl=0.2)
    assert await storage.has("blink")
    assert await _until(lambda: _absent(storage, "blink"), within=2.0)
    assert time.monotonic() - start < 0.9


async def _absent(storage: RedisStorage, key: str) -> bool:
    return not await storage.has(key)


def test_glob_escape_covers_every_metacharacter() -> None:
    """The MATCH pattern escapes \\ * ? [ ] so they only match themselves."""
    assert _glob_escape("a*b?c[d]e\\f") == "a\\*b\\?c\\[d\\]e\\\\f"
    assert _glob_escape("plain:key") == "plain:key"


@pytest.mark.parametrize("prefix", ["a\\", "a\\*", "[", "]", "a[!b]", "a[^b]", "a\\[b]", "?*"])
async def test_scan_prefix_never_widens(storage: RedisStorage, prefix: str) -> None:
    """Backslashes, brackets, carets and stars in a prefix stay literal for keys() and clear()."""
    tricky = [prefix + "1", "ab1", "a1", "ac1", "a\\b1", "x1", "[1", "]1", "a^b1", "a!1"]
    await storage.set_many(dict.fromkeys(tricky, 1))
    expected = sorted(k for k in set(tricky) if k.startswith(prefix))
    assert sorted([k async for k in storage.keys(prefix)]) == expected
    assert await storage.clear(prefix) == len(expected)
    assert sorted([k async for k in storage.keys()]) == sorted(set(tricky) - set(expected))


async def test_clear_pages_through_many_keys_and_spares_other_prefixes(
    storage: RedisStorage, raw: aioredis.Redis
) -> None:
    """clear() deletes thousands of keys in SCAN pages and leaves everything else alone."""
    view = storage.with_prefix("bot1:")
    await view.set_many({f"user:{i}": {"i": i} for i in range(3000)})
    await raw.set("bot2:user:1", b"keep")
    await raw.hset("bot1x:hash", "f", "v")
    assert await view.clear() == 3000
    assert await raw.dbsize() == 2
    assert await raw.get("bot2:user:1") == b"keep"


async def test_counter_is_a_plain_json_number(storage: RedisStorage, raw: aioredis.Redis) -> None:
    """incr stores digits a GramIO bot reads as a number, and counts a number GramIO wrote."""
    assert await storage.incr("views", 5) == 5
    assert await raw.get("views") == b"5"
    assert await storage.get("views") == 5
    await raw.set("gramio-counter", b"41")
    assert await storage.incr("gramio-counter") == 42
    assert await storage.get(Key("gramio-counter", int)) == 42


async def test_incr_beyond_64_bits_and_on_non_integers(
    storage: RedisStorage, raw: aioredis.Redis
) -> None:
    """Past Redis's 64-bit INCRBY the count goes on in Python; a float is a DecodeError."""
    await storage.set("big", 2**63 - 1)
    assert await storage.incr("big") == 2**63
    assert await storage.incr("big", 2**70) == 2**63 + 2**70
    assert await storage.get("big") == 2**63 + 2**70
    assert await storage.incr("fresh", -(2**80), ttl=30) == -(2**80)
    assert 25_000 < await raw.pttl("fresh") <= 30_000
    await storage.set("price", 1.5)
    with pytest.raises(DecodeError, match="price"):
        await storage.incr("price")
    assert await storage.get("price") == 1.5
    await raw.hset("hash", "f", "v")
    with pytest.raises(BackendError, match="WRONGTYPE"):
        await storage.incr("hash")


async def test_incr_with_a_binary_codec_is_atomic(redis_url: str) -> None:
    """With msgpack values incr falls back to compare-and-set and still loses no increment."""
    async with RedisStorage.from_url(_db_url(redis_url, 4), codec=MSGPACK) as storage:
        await storage.clear()
        results = await asyncio.gather(*(storage.incr("n", ttl=60) for _ in range(50)))
        assert sorted(results) == list(range(1, 51))
        assert await storage.get("n") == 50
        ttl = await storage.ttl("n")
        assert ttl is not None and 55 < ttl <= 60  # set at creation, kept by later increments
        await storage.set("s", "text")
        with pytest.raises(DecodeError):
            await storage.incr("s")


async def test_update_recovers_from_a_flushed_script_cache(
    storage: RedisStorage, raw: aioredis.Redis
) -> None:
    """After SCRIPT FLUSH (or a restart) update() reloads its script transparently."""
    assert await storage.update("k", lambda v: 1) == 1
    await raw.script_flush()
    assert await storage.update("k", lambda v: v + 1) == 2
    assert await storage.incr("ttl-counter", ttl=10) == 1  # the other script, too
    await raw.script_flush()
    assert await storage.incr("ttl-counter2", ttl=10) == 1


async def test_update_gives_up_when_every_attempt_loses_the_race(
    storage: RedisStorage, redis_url: str
) -> None:
    """A key rewritten by someone else on every attempt ends in BackendError, nothing written."""
    other = redis.Redis.from_url(redis_url)  # a second program, writing synchronously
    attempts = 0

    def meddle(value: Any) -> Any:
        nonlocal attempts
        attempts += 1
        other.set("contested", json.dumps(attempts))
        return "mine"

    try:
        with pytest.raises(BackendError, match="gave up"):
            await storage.update("contested", meddle)
    finally:
        other.close()
    assert attempts == 1000
    assert await storage.get("contested") == 1000  # the other writer's last value


async def test_decode_responses_client_keeps_binary_values(redis_url: str) -> None:
    """A caller's client with decode_responses=True still gets raw bytes for msgpack values."""
    client = aioredis.Redis.from_url(_db_url(redis_url, 5), decode_responses=True)
    storage = RedisStorage(client, codec=MSGPACK).with_prefix("bin:")
    try:
        await storage.clear()
        value = {"blob": b"\xff\x00\xfe", "n": 1}
        await storage.set("v", value)
        assert await storage.get("v") == value
        assert await storage.get_many(["v", "missing"]) == {"v": value}
        assert await storage.update("v", lambda v: {**v, "n": v["n"] + 1}) == {**value, "n": 2}
        assert [k async for k in storage.keys()] == ["v"]
        assert await client.set("plain", "still decoded for the caller")
        assert await client.get("plain") == "still decoded for the caller"
    finally:
        await storage.backend.close()
        await client.aclose()


async def test_key_that_is_not_utf8_is_an_invalid_key_error(storage: RedisStorage) -> None:
    """A key with a lone surrogate cannot be sent; the error is InvalidKeyError, not a crash."""
    with pytest.raises(InvalidKeyError, match="UTF-8"):
        await storage.set("bad\ud800", 1)


# ------------------------------------------------------------------------------ GramIO interop


async def test_reads_what_a_gramio_bot_wrote(storage: RedisStorage, raw: aioredis.Redis) -> None:
    """GramIO's adapter does SETEX key ttl JSON.stringify(value): we read it, TTL and all."""
    scene = {
        "name": "signup",
        "params": {},
        "state": {"age": 30, "name": "Алиса"},
        "stepId": 1,
        "previousStepId": 0,
        "firstTime": False,
    }
    await raw.execute_command(
        "SETEX", "@gramio/scenes:42", 60, json.dumps(scene, ensure_ascii=False)
    )
    await raw.set("123", json.dumps({"count": 0}))  # the session plugin's key, no TTL
    assert await storage.get("@gramio/scenes:42") == scene
    assert await storage.has("@gramio/scenes:42")
    left = await storage.ttl("@gramio/scenes:42")
    assert left is not None and 58 < left <= 60
    assert await storage.get("123") == {"count": 0}
    assert await storage.update("123", lambda s: {**s, "count": s["count"] + 1}) == {"count": 1}
    assert json.loads(await raw.get("123")) == {"count": 1}


async def test_writes_what_a_gramio_bot_reads(
    storage: RedisStorage, raw: aioredis.Redis, redis_url: str
) -> None:
    """We write JSON.stringify's exact bytes under the bare key, with a server-side expiry."""
    value = {"count": 1, "name": "Алиса", "tags": ["a", "b"], "nested": {"x": None}}
    await storage.set("rl:default:7", value, ttl=30)
    stored = await raw.get("rl:default:7")
    assert stored == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    assert 28_000 < await raw.pttl("rl:default:7") <= 30_000
    # A bot using ioredis keyPrefix "bot:" sees a storage with prefix "bot:" key for key.
    async with RedisStorage.from_url(redis_url) as root:
        await root.with_prefix("bot:").set("1", [1, 2])
    assert await raw.get("bot:1") == b"[1,2]"


# ------------------------------------------------------------------------------ failures


@pytest.fixture
def private_server() -> Iterator[RedisServer]:
    """A server this test may stop and restart, with appendonly yes / appendfsync always."""
    with redis_server(appendonly=True) as server:
        yield server


async def test_server_killed_mid_workload_then_restarted(private_server: RedisServer) -> None:
    """Killing redis-server gives prompt typed errors; after a restart the same storage works
    again and every acknowledged write survived (appendonly yes, appendfsync always)."""
    storage = RedisStorage.from_url(private_server.url)
    acked: dict[str, int] = {}
    errors: list[tuple[BaseException, float]] = []
    killed = asyncio.Event()

    async def writer() -> None:
        i = 0
        while len(errors) < 20:
            key = f"w:{i}"
            started = time.monotonic()
            try:
                await storage.set(key, i)
                acked[key] = i
            except BackendError as e:
                errors.append((e, time.monotonic() - started))
            i += 1
            if i == 300:
                killed.set()
            if errors:
                await asyncio.sleep(0.01)

    task = asyncio.create_task(writer())
    await killed.wait()
    await asyncio.to_thread(private_server.kill)  # SIGKILL: a crash, nothing flushed on exit
    await asyncio.wait_for(task, timeout=30)

    assert len(acked) >= 300
    for error, seconds in errors:
        assert isinstance(error, BackendUnavailableError), error
        assert isinstance(error.__cause__, rx.ConnectionError)
        assert error.key is not None and error.key.startswith("w:")
        assert error.backend == "redis"
        assert seconds < 1.0  # refused at once, not after a long default retry loop
    with pytest.raises(BackendUnavailableError):
        await storage.get_many(list(acked))

    await asyncio.to_thread(private_server.start)
    assert await storage.get_many(list(acked)) == acked  # same storage, every acked write back
    await storage.set("after", "restart")
    assert await storage.get("after") == "restart"
    await storage.close()


async def test_storage_made_before_the_server_starts(tmp_path: Path) -> None:
    """A storage can be built while Redis is down; it fails typed, then works once it is up."""
    server = RedisServer(tmp_path)
    storage = RedisStorage.from_url(server.url)
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        await storage.incr("n")
    assert time.monotonic() - started < 1.0
    assert "unavailable" in str(info.value) and "'n'" in str(info.value)
    try:
        await asyncio.to_thread(server.start)
        assert await storage.incr("n") == 1
    finally:
        await storage.close()
        server.close()


async def test_unanswered_command_times_out(redis_url: str, raw: aioredis.Redis) -> None:
    """A server that stops answering (CLIENT PAUSE) raises BackendTimeoutError after
    socket_timeout; the storage works again once the server answers."""
    storage = RedisStorage.from_url(redis_url, socket_timeout=0.3)
    await storage.set("k", 1)
    await raw.execute_command("CLIENT", "PAUSE", 3000, "ALL")
    started = time.monotonic()
    try:
        with pytest.raises(BackendTimeoutError) as info:
            await storage.get("k")
        assert time.monotonic() - started < 1.5
        assert isinstance(info.value, TimeoutError)
        assert isinstance(info.value.__cause__, rx.TimeoutError)
        assert "0.3s" in str(info.value)
    finally:
        await raw.execute_command("CLIENT", "UNPAUSE")
    assert await storage.get("k") == 1
    await storage.close()


# ------------------------------------------------------------------------------ processes


async def test_four_processes_lose_no_update(redis_url: str) -> None:
    """4 processes x 250 update() on one key end at exactly 1,000."""
    value, calls = await run_workers(redis_url)
    assert value == {"n": 1000}
    assert calls > 1000  # the processes really raced (and their retries resolved it)


# ------------------------------------------------------------------------------ bursts


async def test_a_burst_beyond_max_connections_queues_instead_of_failing(
    redis_url: str, raw: aioredis.Redis
) -> None:
    """500 concurrent calls through max_connections=4 all succeed on at most 4 connections."""
    storage = RedisStorage.from_url(
        redis_url, max_connections=4, client_name="gramio-burst", pipelining=False
    )
    peak = 0

    async def one(i: int) -> Any:
        nonlocal peak
        await storage.set(f"burst:{i}", i)
        names = await _client_names(raw) if i % 50 == 0 else []
        peak = max(peak, names.count("gramio-burst"))
        return await storage.get(f"burst:{i}")

    try:
        assert await asyncio.gather(*(one(i) for i in range(500))) == list(range(500))
        assert 1 <= peak <= 4
        assert (await _client_names(raw)).count("gramio-burst") <= 4
    finally:
        await storage.clear("burst:")
        await storage.close()


async def test_cancelled_waiters_give_their_slot_back(redis_url: str) -> None:
    """Tasks cancelled while queued for a connection neither leak nor steal a slot."""
    storage = RedisStorage.from_url(redis_url, max_connections=2, pipelining=False)
    await storage.set("warm", 1)
    slots = storage.backend._live().slots  # type: ignore[attr-defined]
    assert slots is not None and slots.free == 2
    try:
        tasks = [asyncio.create_task(storage.set(f"c:{i}", i)) for i in range(40)]
        await asyncio.sleep(0)  # let them start and queue
        for task in tasks[::2]:
            task.cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(r is None or isinstance(r, asyncio.CancelledError) for r in done)
        assert slots.free == 2 and not slots.waiters
        assert await storage.incr("after") == 1
    finally:
        await storage.clear()
        await storage.close()


async def test_fast_paths_raise_the_documented_errors(
    storage: RedisStorage, raw: aioredis.Redis, redis_url: str
) -> None:
    """get/set with str keys take a shortcut that still raises Decode/EncodeError by key."""
    await raw.set("broken", b"{not json")
    with pytest.raises(DecodeError, match="broken"):
        await storage.get("broken")
    with pytest.raises(EncodeError, match="'k'"):
        await storage.set("k", object())
    assert await storage.has("k") is False
    view = storage.with_prefix("v:")
    await view.set("k", [1])
    assert await raw.get("v:k") == b"[1]"
    assert await view.get("k") == [1]
    async with RedisStorage.from_url(redis_url, ttl=7) as expiring:
        await expiring.set("default-ttl", 1)
    assert 6000 < await raw.pttl("default-ttl") <= 7000


def test_many_event_loops_leave_one_command_path_each_at_most(redis_url: str) -> None:
    """Ten asyncio.run() calls on one storage: paths of ended loops are dropped, not kept."""
    import asyncio

    storage = RedisStorage.from_url(redis_url)

    async def use(i: int) -> None:
        await storage.set(f"loops:{i}", i)
        assert await storage.get(f"loops:{i}") == i

    for i in range(10):
        asyncio.run(use(i))
    assert len(storage.backend._paths) <= 1  # only the last loop's (already closed) entry

    async def finish() -> None:
        assert await storage.delete_many([f"loops:{i}" for i in range(10)]) == 10
        await storage.close()

    asyncio.run(finish())
