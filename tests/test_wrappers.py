"""Every wrapper passes the conformance kit and the state machine, over memory and SQLite."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gramio_storage import JSON, MSGPACK, BaseStorage, MemoryStorage
from gramio_storage.sqlite import SQLiteStorage
from gramio_storage.testing import StorageTests, make_state_machine
from gramio_storage.wrappers import (
    CachedStorage,
    CompressedCodec,
    EncryptedStorage,
    FallbackStorage,
    clamp_ttl,
    instrument,
)

KEY = bytes(range(32))
OLD_KEY = bytes(range(1, 33))
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Wrap = Callable[[Callable[[], BaseStorage], "FakeClock | None"], BaseStorage]

# name -> builds the wrapped storage from a factory of fresh inner storages (and a fake clock
# for memory, None on SQLite: real time).
WRAPS: dict[str, Wrap] = {
    "fallback": lambda make, clock: FallbackStorage(make(), make()),
    "cached": lambda make, clock: (
        CachedStorage(make(), clock=clock) if clock else CachedStorage(make())
    ),
    "encrypted": lambda make, clock: EncryptedStorage(make(), keys=[KEY, OLD_KEY]),
    "clamped": lambda make, clock: clamp_ttl(make(), min_ttl=0.001, max_ttl=10**7),
    "instrumented": lambda make, clock: instrument(make(), tracer_provider=_PROVIDER),
    "stack": lambda make, clock: instrument(
        CachedStorage(
            EncryptedStorage(clamp_ttl(make(), max_ttl=10**7), keys=[KEY]),
            **({"clock": clock} if clock else {}),
        ),
        tracer_provider=_PROVIDER,
    ),
}


def memory_factory(clock: FakeClock | None, codec: object = JSON) -> Callable[[], BaseStorage]:
    def make() -> BaseStorage:
        if clock is None:
            return MemoryStorage(codec=codec)  # type: ignore[arg-type]
        return MemoryStorage(clock=clock, codec=codec)  # type: ignore[arg-type]

    return make


def sqlite_factory(directory: Path, codec: object = JSON) -> Callable[[], BaseStorage]:
    counter = iter(range(1_000_000))

    def make() -> BaseStorage:
        return SQLiteStorage(directory / f"db{next(counter)}.sqlite", codec=codec)  # type: ignore[arg-type]

    return make


class _OnMemory(StorageTests):
    wrap = "fallback"
    ttl_precision = 0.0

    @pytest.fixture
    async def storage(self) -> AsyncIterator[BaseStorage]:
        self.clock = FakeClock()
        storage = WRAPS[self.wrap](memory_factory(self.clock), self.clock)
        yield storage
        await storage.close()

    async def advance_time(self, storage: BaseStorage, seconds: float) -> None:
        self.clock.now += seconds


class _OnSQLite(StorageTests):
    wrap = "fallback"

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[BaseStorage]:
        storage = WRAPS[self.wrap](sqlite_factory(tmp_path), None)
        yield storage
        await storage.close()


class TestFallbackMemory(_OnMemory):
    wrap = "fallback"


class TestFallbackSQLite(_OnSQLite):
    wrap = "fallback"


class TestFallbackMemoryInFrontOfSQLite(StorageTests):
    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[BaseStorage]:
        storage = FallbackStorage(MemoryStorage(max_size=100_000), SQLiteStorage(tmp_path / "f.db"))
        yield storage
        await storage.close()


class TestCachedMemory(_OnMemory):
    wrap = "cached"


class TestCachedSQLite(_OnSQLite):
    wrap = "cached"


class TestEncryptedMemory(_OnMemory):
    wrap = "encrypted"


class TestEncryptedSQLite(_OnSQLite):
    wrap = "encrypted"


class TestClampedMemory(_OnMemory):
    wrap = "clamped"


class TestClampedSQLite(_OnSQLite):
    wrap = "clamped"


class TestInstrumentedMemory(_OnMemory):
    wrap = "instrumented"


class TestInstrumentedSQLite(_OnSQLite):
    wrap = "instrumented"


class TestStackMemory(_OnMemory):
    wrap = "stack"


class TestStackSQLite(_OnSQLite):
    wrap = "stack"


class _Compressed(StorageTests):
    codec: object = CompressedCodec(JSON, min_size=0)


class TestCompressedMemory(_Compressed):
    ttl_precision = 0.0

    @pytest.fixture
    async def storage(self) -> AsyncIterator[BaseStorage]:
        self.clock = FakeClock()
        storage = memory_factory(self.clock, self.codec)()
        yield storage
        await storage.close()

    async def advance_time(self, storage: BaseStorage, seconds: float) -> None:
        self.clock.now += seconds


class TestCompressedZlibMsgpackSQLite(_Compressed):
    codec = CompressedCodec(MSGPACK, min_size=0, algorithm="zlib")

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[BaseStorage]:
        storage = sqlite_factory(tmp_path, self.codec)()
        yield storage
        await storage.close()


class TestCompressedJSONSQLite(_Compressed):
    codec = CompressedCodec(JSON, min_size=64)  # counters stay native digits

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[BaseStorage]:
        storage = sqlite_factory(tmp_path, self.codec)()
        yield storage
        await storage.close()


# ---------------------------------------------------------------------- state machines


def _memory_machine(wrap: str) -> type:
    return make_state_machine(lambda: WRAPS[wrap](memory_factory(None), None)).TestCase


def _sqlite_machine(wrap: str) -> type:
    def factory() -> BaseStorage:
        directory = Path(tempfile.mkdtemp(prefix="gramio-wrappers-"))
        return WRAPS[wrap](sqlite_factory(directory), None)

    return make_state_machine(factory).TestCase


TestFallbackMemoryMachine = _memory_machine("fallback")
TestCachedMemoryMachine = _memory_machine("cached")
TestEncryptedMemoryMachine = _memory_machine("encrypted")
TestClampedMemoryMachine = _memory_machine("clamped")
TestInstrumentedMemoryMachine = _memory_machine("instrumented")
TestStackMemoryMachine = _memory_machine("stack")
TestCompressedMemoryMachine = make_state_machine(
    lambda: MemoryStorage(codec=CompressedCodec(JSON, min_size=0))  # type: ignore[arg-type]
).TestCase
TestFallbackSQLiteMachine = _sqlite_machine("fallback")
TestCachedSQLiteMachine = _sqlite_machine("cached")
TestStackSQLiteMachine = _sqlite_machine("stack")
