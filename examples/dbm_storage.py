"""A complete third-party backend in a few lines: gramio-storage over the stdlib ``dbm`` module.

This is the running example of ``docs/writing-adapters.md``. ``DbmBackend`` implements the four
required methods of :class:`gramio_storage.Backend` plus ``ttl`` (a persistent backend should
report expiries) and ``close``; the facade, ``BaseStorage``, supplies typed keys, codecs, prefix
views, key/TTL validation, bulk operations, ``clear``, the closed state, and in-process atomic
``add``/``incr``/``update``. It passes the conformance kit: see ``test_dbm_storage.py``.

Each value is stored as an 8-byte expiry timestamp (a double; 0 for none) followed by the
encoded bytes. ``dbm.dumb`` is pure Python and blocking, which is fine for an example and for
small bots; a production backend would talk to its database asynchronously.
"""

from __future__ import annotations

import dbm.dumb
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gramio_storage import Backend, BaseStorage, Capabilities

_HEADER = struct.Struct("<d")  # expiry as seconds since the epoch; 0.0 means "never"


class DbmBackend(Backend):
    """Keys and values in a ``dbm.dumb`` file set, with per-key expiry."""

    capabilities = Capabilities(name="dbm", persistent=True, max_ttl=10**9)

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = dbm.dumb.open(self.path, "c")  # noqa: SIM115 - closed by close()

    def _read(self, key: str) -> tuple[float, bytes] | None:
        raw = self._db.get(key.encode())
        if raw is None:
            return None
        (expires,) = _HEADER.unpack_from(raw)
        if expires and expires <= time.time():
            del self._db[key.encode()]  # lazy expiry
            return None
        return expires, raw[_HEADER.size :]

    async def get(self, key: str) -> bytes | None:
        found = self._read(key)
        return None if found is None else found[1]

    async def set(self, key: str, data: bytes, ttl: float | None) -> None:
        expires = time.time() + ttl if ttl is not None else 0.0
        self._db[key.encode()] = _HEADER.pack(expires) + data

    async def delete(self, key: str) -> bool:
        if self._read(key) is None:
            return False
        del self._db[key.encode()]
        return True

    async def scan(self, prefix: str) -> AsyncIterator[str]:
        for raw_key in list(self._db.keys()):  # a snapshot: deleting while we yield is fine
            key = raw_key.decode()
            if key.startswith(prefix) and self._read(key) is not None:
                yield key

    async def ttl(self, key: str) -> float | None:
        found = self._read(key)
        if found is None:
            raise self.not_found(key)
        return found[0] - time.time() if found[0] else None

    async def close(self) -> None:
        self._db.close()

    def describe(self) -> dict[str, object]:
        return {"path": self.path}


class DbmStorage(BaseStorage):
    """The user-facing storage: ``DbmStorage("bot.kv", ttl=3600)``."""

    def __init__(self, path: str | Path, **options: Any) -> None:
        super().__init__(DbmBackend(path), **options)  # codec=..., ttl=...

    @classmethod
    def from_url(cls, url: str, **options: Any) -> DbmStorage:
        """``dbm:///path/to/file`` (registered through the entry-point group in a real package)."""
        return cls(url.removeprefix("dbm://"), **options)
