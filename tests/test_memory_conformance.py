"""MemoryStorage passes the conformance kit in both modes, with a fake clock for expiry."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gramio_storage import BaseStorage, MemoryStorage
from gramio_storage.testing import StorageTests, make_state_machine


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _MemoryBase(StorageTests):
    ttl_precision = 0.0  # the fake clock is exact
    codec_none = False

    @pytest.fixture
    async def storage(self) -> AsyncIterator[BaseStorage]:
        self.clock = FakeClock()
        storage = (
            MemoryStorage(codec=None, clock=self.clock)
            if self.codec_none
            else MemoryStorage(clock=self.clock)
        )
        yield storage
        await storage.close()

    async def advance_time(self, storage: BaseStorage, seconds: float) -> None:
        self.clock.now += seconds


class TestMemoryEncoded(_MemoryBase):
    pass


class TestMemoryReference(_MemoryBase):
    codec_none = True
    encodes_values = False


class TestMemoryBounded(_MemoryBase):
    """A size bound large enough for the kit must not change any behaviour."""

    @pytest.fixture
    async def storage(self) -> AsyncIterator[BaseStorage]:
        self.clock = FakeClock()
        storage = MemoryStorage(max_size=100_000, clock=self.clock)
        yield storage
        await storage.close()


TestMemoryEncodedMachine = make_state_machine(MemoryStorage).TestCase
TestMemoryReferenceMachine = make_state_machine(lambda: MemoryStorage(codec=None)).TestCase
