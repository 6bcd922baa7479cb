"""A complete third-party adapter in a few lines: gramio-storage over the stdlib ``dbm`` module.

This is the running example of ``docs/writing-adapters.md``. It implements the five hooks a
persistent backend needs (four required ones plus ``_ttl``); ``BaseStorage`` supplies typed keys,
codecs, prefixes, TTL validation, bulk operations, ``clear``, and in-process atomic
``add``/``incr``/``update``. It passes the conformance kit: see ``test_dbm_storage.py``.

Each value is stored as an 8-byte expiry timestamp (a double; 0 for none) followed by the
encoded bytes. ``dbm.dumb`` is pure Python and blocking, which is fine for an example and for
small bots; a production adapter would talk to its database asynchronously.
"""

from __future__ import annotations

import dbm.dumb
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gramio_storage import BaseStorage

_HEADER = struct.Struct("<d")  # expiry as seconds since the epoch; 0.0 means "never"


class DbmStorage(BaseStorage):
    """Keys and values in a ``dbm.dumb`` file set, with per-key expiry."""

    backend_name = "dbm"

    def __init__(self, path: str | Path, **options: Any) -> None:
        super().__init__(**options)  # codec=..., ttl=...
        self._path = str(path)
        self._db = dbm.dumb.open(self._path, "c")  # noqa: SIM115 - closed by _close()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> DbmStorage:
        """``dbm:///path/to/file`` (registered through the entry-point group in a real package)."""
        return cls(url.removeprefix("dbm://"), **options)

    def _repr_fields(self) -> dict[str, object]:
        return {"path": self._path}

    def _read(self, key: str) -> tuple[float, bytes] | None:
        raw = self._db.get(key.encode())
        if raw is None:
            return None
        (expires,) = _HEADER.unpack_from(raw)
        if expires and expires <= time.time():
            del self._db[key.encode()]  # lazy expiry
            return None
        return expires, raw[_HEADER.size :]

    # --- the hooks -------------------------------------------------------------------------

    async def _get(self, key: str) -> bytes | None:
        found = self._read(key)
        return None if found is None else found[1]

    async def _set(self, key: str, data: bytes, ttl: float | None) -> None:
        expires = time.time() + ttl if ttl is not None else 0.0
        self._db[key.encode()] = _HEADER.pack(expires) + data

    async def _delete(self, key: str) -> bool:
        if self._read(key) is None:
            return False
        del self._db[key.encode()]
        return True

    async def _scan(self, prefix: str) -> AsyncIterator[str]:
        for raw_key in list(self._db.keys()):  # a snapshot: deleting while we yield is fine
            key = raw_key.decode()
            if key.startswith(prefix) and self._read(key) is not None:
                yield key

    async def _ttl(self, key: str) -> float | None:
        found = self._read(key)
        if found is None:
            raise self._not_found(key)
        return found[0] - time.time() if found[0] else None

    async def _close(self) -> None:
        self._db.close()
