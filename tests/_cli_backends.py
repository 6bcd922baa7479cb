"""Backends for the CLI tests: fresh, empty storage URLs on real servers, and seed/snapshot helpers.

Every backend whose module exists in ``gramio_storage`` is in :data:`KINDS`; its server (a
private redis-server, the shared PostgreSQL test server) must start or the tests fail, never skip.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from _redis_server import RedisServer, redis_server
from gramio_storage import storage_from_url

__all__ = [
    "BINARY_KINDS",
    "BINARY_VALUE",
    "KINDS",
    "ODD_VALUES",
    "Backends",
    "assert_same",
    "backends_fixture",
    "cli_redis_fixture",
    "seed",
    "snapshot",
]

_MODULES = {
    "sqlite": "gramio_storage.sqlite",
    "redis": "gramio_storage.redis",
    "postgres": "gramio_storage.postgres",
    "cloudflare": "gramio_storage.cloudflare",
}
KINDS = [kind for kind, module in _MODULES.items() if importlib.util.find_spec(module)]


@pytest.fixture(scope="module", name="cli_redis")
def cli_redis_fixture() -> Iterator[RedisServer]:
    """A private redis-server for this module: tests flush its databases freely."""
    with redis_server() as server:
        yield server


class Backends:
    """Hands out URLs of fresh, empty storages of each kind."""

    def __init__(self, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self._tmp = tmp_path
        self._request = request
        self._redis_dbs = itertools.count()
        self._namespaces = itertools.count()

    def url(self, kind: str) -> str:
        """A URL naming a new empty storage of ``kind``."""
        if kind == "sqlite":
            return f"sqlite:///{self._tmp / uuid.uuid4().hex}.db"
        if kind == "redis":
            import redis  # the [redis] extra; present whenever the kind is

            server: RedisServer = self._request.getfixturevalue("cli_redis")
            db = next(self._redis_dbs)
            if db > 15:
                raise RuntimeError("a test asked for more than 16 Redis databases")
            with redis.Redis(host="127.0.0.1", port=server.port, db=db) as client:
                client.flushdb()
            return f"redis://127.0.0.1:{server.port}/{db}"
        if kind == "postgres":
            dsn: str = self._request.getfixturevalue("postgres_dsn")
            sep = "&" if "?" in dsn else "?"
            return f"{dsn}{sep}table=cli_{uuid.uuid4().hex[:16]}"
        if kind == "cloudflare":
            return self._cloudflare_url()
        raise ValueError(kind)

    def _cloudflare_url(self) -> str:
        kv = self._request.getfixturevalue("cloudflare_kv")
        index = next(self._namespaces)
        if index >= len(kv.namespace_ids):
            raise RuntimeError("a test asked for more Cloudflare KV namespaces than exist")
        # The token travels the way a user would pass it: the environment (inherited by
        # subprocesses), never the URL.
        monkeypatch: pytest.MonkeyPatch = self._request.getfixturevalue("monkeypatch")
        monkeypatch.setenv("CLOUDFLARE_API_TOKEN", kv.api_token)
        url = f"cloudflare://{kv.account_id}/{kv.namespace_ids[index]}?base_url={kv.base_url}"

        async def empty() -> None:  # the emulator is shared by the session: start empty
            async with storage_from_url(url) as storage:
                await storage.clear()

        asyncio.run(empty())
        return url


@pytest.fixture(name="backends")
def backends_fixture(tmp_path: Path, request: pytest.FixtureRequest) -> Backends:
    """Fresh storage URLs for the current test."""
    return Backends(tmp_path, request)


# Values whose bytes must survive an export/import or a copy exactly.
ODD_VALUES: dict[str, bytes] = {
    "odd:unicode": msgspec.json.encode({"text": "héllo ✓ 🎉", "ru": "привет"}),
    "odd:spaces": b'{ "spaced" :  [1, 2,\t3] }',  # not compact: not re-encoded either
    "odd:pretty": b'{\n  "a": 1\n}',  # a newline: exported as base64
    "odd:text": "not JSON, but text: é".encode(),  # another codec's bytes
    "odd:bigint": b"123456789012345678901234567890",
    "odd:float": b"0.1000000000000000055511151231257827",
    "odd:null": b"null",
    "odd:string": b'"a \\"quoted\\" \\u00e9 string"',
    "odd:padded": b" 42 ",
}
# Not UTF-8 (msgpack): storable where values are bytes (Redis, PostgreSQL), not in a JSON-codec
# SQLite table, whose value column is TEXT for GramIO's sake.
BINARY_VALUE = b"\x82\xa4name\xa5Alice\xa3age\x1e"
BINARY_KINDS = {"redis", "postgres"}


async def seed(
    url: str, n: int, *, ttl_share: float = 0.5, seed: int = 1, binary: bool = False
) -> dict[str, Any]:
    """Fill a storage with ``n`` JSON values (a share with TTLs) plus :data:`ODD_VALUES`.

    Returns ``{key: (bytes, deadline or None)}`` as written. A deadline (on
    ``time.monotonic()``) is the window ``(earliest, latest)`` it falls in: the key was written
    somewhere between the start and the end of its (concurrent) write, which on a loaded machine
    can be seconds apart.
    """
    rng = random.Random(seed)
    expected: dict[str, Any] = {}
    storage = storage_from_url(url)
    async with storage:
        backend = storage.backend  # raw bytes, as the CLI moves them
        plain: list[tuple[str, bytes]] = []
        timed: list[tuple[str, bytes, float]] = []
        for i in range(n):
            key = f"{rng.choice(['user', 'session', 'fsm:1', 'counter'])}:{i}"
            data = msgspec.json.encode({"id": i, "name": f"user {i}", "score": rng.random()})
            if rng.random() < ttl_share:
                timed.append((key, data, round(rng.uniform(100, 3600), 3)))
            else:
                plain.append((key, data))
                expected[key] = (data, None)
        odd = {**ODD_VALUES, **({"odd:binary": BINARY_VALUE} if binary else {})}
        for i, (key, data) in enumerate(odd.items()):
            if i % 2:
                timed.append((key, data, 600.0))
            else:
                plain.append((key, data))
                expected[key] = (data, None)
        for start in range(0, len(plain), 1000):
            await backend.set_many(plain[start : start + 1000], None)
        for start in range(0, len(timed), 64):
            chunk = timed[start : start + 64]
            before = time.monotonic()
            await asyncio.gather(*(backend.set(k, d, t) for k, d, t in chunk))
            after = time.monotonic()
            for key, data, ttl in chunk:
                expected[key] = (data, (before + ttl, after + ttl))
    return expected


async def snapshot(url: str, prefix: str = "") -> dict[str, Any]:
    """Everything a storage holds: ``{key: (bytes, deadline or None)}``, through the library."""
    storage = storage_from_url(url)
    found: dict[str, Any] = {}
    async with storage:
        backend = storage.backend
        # scan_ttl: one listing per page on Cloudflare KV instead of one request per key.
        listed = [(k, t, time.monotonic()) async for k, t in backend.scan_ttl(prefix)]
        for start in range(0, len(listed), 500):
            chunk = listed[start : start + 500]
            values = await backend.get_many([k for k, _, _ in chunk])
            for (key, ttl, seen), value in zip(chunk, values, strict=True):
                assert value is not None, key
                found[key] = (bytes(value), None if ttl is None else seen + ttl)
    return found


def assert_same(actual: dict[str, Any], expected: dict[str, Any], *, slack: float = 1.0) -> None:
    """Same keys, byte-identical values, expiry deadlines within ``slack`` seconds.

    An expected deadline is a time or a window ``(earliest, latest)`` (see :func:`seed`).
    """
    assert actual.keys() == expected.keys(), (
        f"missing {sorted(expected.keys() - actual.keys())[:5]}, "
        f"extra {sorted(actual.keys() - expected.keys())[:5]}"
    )
    for key, (data, deadline) in expected.items():
        got_data, got_deadline = actual[key]
        assert got_data == data, (key, got_data, data)
        if deadline is None:
            assert got_deadline is None, (key, got_deadline)
        else:
            assert got_deadline is not None, key
            earliest, latest = deadline if isinstance(deadline, tuple) else (deadline, deadline)
            assert earliest - slack <= got_deadline <= latest + slack, (
                key,
                got_deadline - earliest,
                latest - earliest,
            )
