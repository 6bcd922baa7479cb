"""Compression, encryption, TTL clamps, telemetry and fallback policy, piece by piece."""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gramio_storage import (
    JSON,
    MSGPACK,
    Backend,
    BackendUnavailableError,
    ConfigurationError,
    DecodeError,
    MemoryBackend,
    MemoryStorage,
)
from gramio_storage.wrappers import (
    CachedStorage,
    CompressedCodec,
    EncryptedStorage,
    FallbackStorage,
    clamp_ttl,
    generate_key,
    instrument,
)

BIG = {"text": "hello world " * 100}


# ---------------------------------------------------------------------- compression


def test_compressed_values_start_with_a_header_and_small_json_stays_plain() -> None:
    """Small JSON is stored as is (GramIO-readable); large values get 0x01 zlib / 0x02 zstd."""
    zstd, zl = CompressedCodec(JSON, min_size=64), CompressedCodec(JSON, algorithm="zlib")
    assert zstd.encode({"a": 1}) == b'{"a":1}'
    assert zstd.encode(BIG)[0] == 0x02 and zl.encode(BIG)[0] == 0x01
    assert len(zstd.encode(BIG)) < len(JSON.encode(BIG)) / 10
    for data in (zstd.encode(BIG), zl.encode(BIG), JSON.encode(BIG)):  # every form reads back
        assert zstd.decode(data) == BIG and zl.decode(data) == BIG
    assert zstd.plain_integers and not CompressedCodec(JSON, min_size=0).plain_integers
    packed = CompressedCodec(MSGPACK, min_size=10_000)
    assert packed.encode(5)[0] == 0x00 and packed.decode(packed.encode(5)) == 5
    assert not packed.plain_integers


def test_incompressible_values_stay_uncompressed() -> None:
    codec = CompressedCodec(JSON, min_size=0)
    assert codec.encode("x") == b'"x"'  # compressing would make it longer


def test_a_decompression_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from gramio_storage.wrappers import _compress

    monkeypatch.setattr(_compress, "MAX_DECOMPRESSED", 1024 * 1024)  # 256 MiB in real life
    codec = CompressedCodec(JSON, algorithm="zlib")
    bomb = b"\x01" + zlib.compress(b"[" + b"0," * (2 * 1024 * 1024) + b"0]")
    with pytest.raises(ValueError, match="limit"):
        codec.decode(bomb)
    if codec._dctx is not None:
        import zstandard

        zbomb = b"\x02" + zstandard.ZstdCompressor().compress(b" " * (2 * 1024 * 1024))
        with pytest.raises(ValueError, match="limit"):
            codec.decode(zbomb)
        assert codec.decode(b"\x02" + zstandard.ZstdCompressor().compress(b"[1]")) == [1]


async def test_compressed_storage_counts_natively_and_reads_old_values() -> None:
    plain = MemoryStorage()
    await plain.set("old", BIG)  # written before compression was turned on
    storage = MemoryStorage(plain.backend._data, codec=CompressedCodec(JSON, min_size=64))
    assert await storage.get("old") == BIG
    await storage.set("big", BIG)
    assert plain.backend._data["big"][0] in (1, 2)
    assert await storage.incr("n", 5) == 5 and plain.backend._data["n"] == b"5"


# ---------------------------------------------------------------------- encryption


async def test_encrypted_values_are_bound_to_their_key() -> None:
    """A value copied under another key (or another view) fails with DecodeError."""
    raw = MemoryStorage()
    storage = EncryptedStorage(raw, keys=[generate_key()])
    await storage.set("alice", {"balance": 100})
    data = raw.backend._data["alice"]
    assert b"balance" not in data and data[0] == 0x01
    raw.backend._data["mallory"] = data
    with pytest.raises(DecodeError, match="mallory"):
        await storage.get("mallory")
    assert await storage.get("alice") == {"balance": 100}
    view = EncryptedStorage(raw.with_prefix("v:"), keys=[generate_key()])
    key = view.encrypted_backend  # the view's keys are full keys as associated data
    raw.backend._data["v:x"] = key.seal("x", b"1")  # sealed without the prefix
    with pytest.raises(DecodeError):
        await view.get("x")
    raw.backend._data["v:plain"] = b"1"
    with pytest.raises(DecodeError, match="not an encrypted value"):
        await view.get("plain")


async def test_keys_rotate_first_encrypts_any_decrypts() -> None:
    old, new = generate_key(), generate_key()
    raw = MemoryStorage()
    await EncryptedStorage(raw, keys=[old]).set("k", "secret")
    rotated = EncryptedStorage(raw, keys=[new, old])
    assert await rotated.get("k") == "secret"
    await rotated.set("k2", "newer")
    with pytest.raises(DecodeError, match="not configured"):
        await EncryptedStorage(raw, keys=[old]).get("k2")
    assert await rotated.incr("n", 2) == 2 and await rotated.incr("n") == 3
    with pytest.raises(ConfigurationError):
        EncryptedStorage(raw, keys=[b"short"])
    with pytest.raises(ConfigurationError):
        EncryptedStorage(raw, keys=old)  # type: ignore[arg-type]


async def test_encryption_over_compression_stacks() -> None:
    raw = MemoryStorage(codec=CompressedCodec(JSON, min_size=64))
    storage = EncryptedStorage(raw, keys=[generate_key()])
    await storage.set("big", BIG)
    assert len(raw.backend._data["big"]) < 200  # compressed before encryption
    assert await storage.get("big") == BIG


# ---------------------------------------------------------------------- TTL clamps


async def test_ttls_are_clamped_not_refused() -> None:
    inner = MemoryStorage()
    storage = clamp_ttl(inner, min_ttl=60, max_ttl=3600, missing_ttl=600)
    await storage.set("short", 1, ttl=1)
    await storage.set("long", 1, ttl=10**9)
    await storage.set("none", 1)
    await storage.set_many({"many": 1}, ttl=5)
    assert 59 < (await inner.ttl("short") or 0) <= 60
    assert 3599 < (await inner.ttl("long") or 0) <= 3600
    assert 599 < (await inner.ttl("none") or 0) <= 600
    assert 59 < (await inner.ttl("many") or 0) <= 60
    assert await storage.incr("n", ttl=1) == 1 and 59 < (await inner.ttl("n") or 0) <= 60
    with pytest.raises(ConfigurationError):
        clamp_ttl(inner, min_ttl=10, max_ttl=5)


# ---------------------------------------------------------------------- telemetry


def _providers() -> tuple[
    TracerProvider, InMemorySpanExporter, MeterProvider, InMemoryMetricReader
]:
    exporter = InMemorySpanExporter()
    tracer = TracerProvider()
    tracer.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    return tracer, exporter, MeterProvider(metric_readers=[reader]), reader


async def test_spans_follow_the_database_conventions_without_values_or_keys() -> None:
    tracer, exporter, meter, reader = _providers()
    storage = instrument(MemoryStorage(), tracer_provider=tracer, meter_provider=meter)
    await storage.set("user:1", {"secret": "value"})
    assert await storage.get("user:1") == {"secret": "value"}
    await storage.get_many(["a", "b"])
    await storage.set("s", "text")
    with pytest.raises(DecodeError):
        await storage.incr("s")
    assert sorted([k async for k in storage.keys()]) == ["s", "user:1"]
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {
        "set memory",
        "get memory",
        "get_many memory",
        "incr memory",
        "scan memory",
    }
    get = spans["get memory"]
    assert get.kind.name == "CLIENT"
    assert get.attributes == {
        "db.system.name": "memory",
        "db.system": "memory",
        "db.operation.name": "get",
    }
    assert spans["get_many memory"].attributes["db.operation.batch.size"] == 2  # type: ignore[index]
    failed = spans["incr memory"]
    assert failed.attributes["error.type"] == "DecodeError"  # type: ignore[index]
    assert failed.status.status_code.name == "ERROR" and not failed.status.description
    assert spans["scan memory"].attributes["db.response.returned_rows"] == 2  # type: ignore[index]
    everything = repr(
        [(s.attributes, s.events, s.status.description) for s in exporter.get_finished_spans()]
    )
    assert "secret" not in everything and "user:1" not in everything
    data = reader.get_metrics_data()
    assert data is not None
    metric = data.resource_metrics[0].scope_metrics[0].metrics[0]
    assert metric.name == "db.client.operation.duration" and metric.unit == "s"
    points = {
        (p.attributes["db.operation.name"], p.attributes.get("error.type")): p.count
        for p in metric.data.data_points
    }
    assert points[("get", None)] == 1 and points[("incr", "DecodeError")] == 1


async def test_keys_are_recorded_only_when_asked() -> None:
    tracer, exporter, meter, _ = _providers()
    storage = instrument(MemoryStorage(), tracer, meter, record_keys=True)
    await storage.get("user:1")
    (span,) = exporter.get_finished_spans()
    assert span.attributes["db.query.parameter.key"] == "user:1"  # type: ignore[index]


# ---------------------------------------------------------------------- fallback policy


class _Down(Backend):
    """A backend whose server is unreachable (what a driver's refused connection becomes)."""

    capabilities = MemoryBackend.capabilities.__class__(name="down")

    async def get(self, key: str) -> bytes | None:
        raise BackendUnavailableError("connection refused", backend="down")

    async def set(self, key: str, data: bytes, ttl: float | None) -> None:
        raise BackendUnavailableError("connection refused", backend="down")

    async def delete(self, key: str) -> bool:
        raise BackendUnavailableError("connection refused", backend="down")

    async def scan(self, prefix: str) -> Any:
        raise BackendUnavailableError("connection refused", backend="down")
        yield  # pragma: no cover


async def test_an_unreachable_primary_is_skipped_for_retry_after() -> None:
    from gramio_storage import BaseStorage

    memory = MemoryStorage()
    stack = FallbackStorage(BaseStorage(_Down()), memory, retry_after=60)
    await stack.set("a", 1)
    assert await stack.get("a") == 1
    assert stack.failures == {"0:down": 1, "1:memory": 0}  # then skipped, not retried
    assert stack.backend._dirty[0] == {"a": None}


async def test_tiers_must_share_a_codec() -> None:
    with pytest.raises(ConfigurationError, match="codec"):
        FallbackStorage(MemoryStorage(), MemoryStorage(codec=MSGPACK))
    with pytest.raises(ConfigurationError):
        FallbackStorage(MemoryStorage())


async def test_cache_serves_hits_and_bounds_its_size() -> None:
    cached = CachedStorage(MemoryStorage(), max_size=2)
    for key in "abc":
        await cached.set(key, key)
        await cached.get(key)
        await cached.get(key)
    assert len(cached.backend) == 2 and cached.backend.hits == 3
    returned = await cached.get("c")
    returned_again = await cached.get("c")
    assert returned == returned_again == "c"
    await cached.set("d", {"x": []})
    first = await cached.get("d")
    first["x"].append(1)  # mutating a returned value never changes what the cache holds
    assert await cached.get("d") == {"x": []}
