"""The example adapter passes the same conformance kit as the built-in backends."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dbm_storage import DbmStorage
from gramio_storage import BaseStorage, Key
from gramio_storage.testing import StorageTests, make_state_machine


class TestDbmStorage(StorageTests):
    max_expiry_wait = 1.0  # real time: the kit waits 0.3 s for its expiry test

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[BaseStorage]:
        storage = DbmStorage(tmp_path / "kv")
        yield storage
        await storage.close()


def _fresh() -> DbmStorage:
    return DbmStorage(Path(tempfile.mkdtemp()) / "kv")


TestDbmStorageMachine = make_state_machine(_fresh).TestCase


async def test_data_survives_reopening(tmp_path: Path) -> None:
    """It is a persistent store: a new instance over the same file sees the data."""
    async with DbmStorage(tmp_path / "kv") as storage:
        await storage.set(Key("views", int), 41)
        await storage.incr("views")
    async with DbmStorage(tmp_path / "kv") as storage:
        assert await storage.get(Key("views", int)) == 42
