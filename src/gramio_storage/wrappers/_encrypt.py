"""Encryption at rest: AES-256-GCM per value, with the storage key bound as associated data.

Why a Backend wrapper and not a codec: a codec's ``encode(value)`` never sees the key, so it
cannot bind a ciphertext to the key it is stored under, and a value copied (by anyone with write
access) to another key would decrypt there: one user's session moved onto another user's key.
Giving codecs the key would change the facade's codec protocol for every codec; a Backend
already receives the full key with every call, so :class:`EncryptedBackend` encrypts the bytes
the codec produced, with the full key (the view's prefix included) as associated data. The
facade and the codec protocol stay untouched, and any codec (JSON, msgpack, CompressedCodec)
works under it: compress-then-encrypt is the right order, and it is what the stack gives.

Stored layout: ``0x01`` | key id (4 bytes, SHA-256 of the key) | nonce (12 random bytes) |
ciphertext and tag. The first key encrypts; any listed key decrypts (its id says which), so
keys rotate by putting the new key first. Random 96-bit nonces: rotate a key well before 2**32
writes. Encrypted values are not readable by GramIO's adapters (nor by anyone without a key).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Sequence

from .._backend import Backend, Entry, parse_int
from .._errors import (
    ConfigurationError,
    DecodeError,
    KeyNotFoundError,
    UnsupportedOperationError,
)
from .._storage import BaseStorage
from ._base import WrapperBackend, derive, wrap_root

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError as e:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "Encryption needs the cryptography package: pip install 'gramio-storage[encryption]'"
    ) from e

__all__ = ["EncryptedBackend", "EncryptedStorage", "generate_key"]

VERSION = 0x01
_NONCE = 12
_ID = 4
_HEAD = 1 + _ID + _NONCE
OVERHEAD = _HEAD + 16  # header plus the GCM tag


def generate_key() -> bytes:
    """A new random 256-bit key (keep it in your secret store, not next to the data)."""
    return AESGCM.generate_key(bit_length=256)


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"gramio-storage key id\x00" + key).digest()[:_ID]


class EncryptedBackend(WrapperBackend):
    """``inner`` with every value encrypted under ``keys[0]``; any of ``keys`` decrypts.

    Args:
        inner: The backend that stores the ciphertexts.
        keys: AES keys (16, 24 or 32 bytes; 32 recommended, see :func:`generate_key`).

    Raises:
        ConfigurationError: No key, a key of the wrong size, or two equal keys.
    """

    def __init__(self, inner: Backend, keys: Sequence[bytes]) -> None:
        super().__init__(inner)
        if isinstance(keys, (bytes, bytearray, str)):
            raise ConfigurationError("keys must be a list of keys, not a single key")
        keys = [bytes(k) for k in keys] if keys else []
        if not keys:
            raise ConfigurationError("EncryptedBackend needs at least one key")
        ciphers: dict[bytes, AESGCM] = {}
        for key in keys:
            if len(key) not in (16, 24, 32):
                raise ConfigurationError(
                    f"an AES key is 16, 24 or 32 bytes long, got one of {len(key)} bytes"
                )
            kid = _key_id(key)
            if kid in ciphers:
                raise ConfigurationError("the same key is listed twice")
            ciphers[kid] = AESGCM(key)
        self._ciphers = ciphers
        self._current_id = _key_id(keys[0])
        self._current = ciphers[self._current_id]
        limit = inner.capabilities.max_value_bytes
        self.capabilities = derive(
            inner.capabilities,
            max_value_bytes=None if limit is None else limit - OVERHEAD,
        )

    def describe(self) -> dict[str, object]:
        return {**self.inner.describe(), "encrypted": True}  # never a key, not even its id

    # ------------------------------------------------------------------ the cipher

    def seal(self, key: str, data: bytes) -> bytes:
        """Encrypt ``data`` for storage under ``key``."""
        nonce = os.urandom(_NONCE)
        body = self._current.encrypt(nonce, bytes(data), key.encode())
        return bytes((VERSION,)) + self._current_id + nonce + body

    def open(self, key: str, data: bytes) -> bytes:
        """Decrypt what is stored under ``key``; DecodeError if it was not sealed for it."""
        data = bytes(data)
        if len(data) < OVERHEAD or data[0] != VERSION:
            raise self._refused(key, "it is not an encrypted value")
        cipher = self._ciphers.get(data[1 : 1 + _ID])
        if cipher is None:
            raise self._refused(key, "it was encrypted with a key that is not configured")
        try:
            return cipher.decrypt(data[1 + _ID : _HEAD], data[_HEAD:], key.encode())
        except InvalidTag:
            raise self._refused(
                key, "authentication failed (tampered, or stored under another key)"
            ) from None

    def _refused(self, key: str, why: str) -> DecodeError:
        return DecodeError(
            f"Cannot decrypt the value stored under key {key!r}: {why}",
            key=key,
            backend=self.capabilities.name,
        )

    def _maybe_open(self, key: str, data: bytes | None) -> bytes | None:
        return None if data is None else self.open(key, data)

    # ------------------------------------------------------------------ the contract

    async def get(self, key: str) -> bytes | None:
        return self._maybe_open(key, await self.inner.get(key))

    async def set(self, key: str, data: bytes, ttl: float | None) -> None:
        await self.inner.set(key, self.seal(key, data), ttl)

    async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | None]:
        found = await self.inner.get_many(keys)
        return [self._maybe_open(k, d) for k, d in zip(keys, found, strict=True)]

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        await self.inner.set_many([(k, self.seal(k, d)) for k, d in items], ttl)

    async def get_entries(self, keys: Sequence[str]) -> list[tuple[bytes | None, float | None]]:
        entries = await self.inner.get_entries(keys)
        return [(self._maybe_open(k, d), t) for k, (d, t) in zip(keys, entries, strict=True)]

    async def set_entries(self, entries: Sequence[Entry], *, overwrite: bool = True) -> list[bool]:
        sealed = [(k, self.seal(k, d), t) for k, d, t in entries]
        return await self.inner.set_entries(sealed, overwrite=overwrite)

    async def add(self, key: str, data: bytes, ttl: float | None) -> bool:
        return await self.inner.add(key, self.seal(key, data), ttl)

    async def update(
        self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None
    ) -> None:
        def step(data: bytes | None) -> bytes:
            return self.seal(key, fn(self._maybe_open(key, data)))

        await self.inner.update(key, step, ttl)

    async def incr(self, key: str, amount: int, ttl: float | None) -> int:
        # Ciphertext is not digits: count through the inner update (atomic where it is), and
        # keep an existing key's expiry as incr promises.
        keep = ttl
        with contextlib.suppress(KeyNotFoundError, UnsupportedOperationError):
            keep = await self.inner.ttl(key)
        result: list[int] = []

        def step(data: bytes | None) -> bytes:
            plain = self._maybe_open(key, data)
            value = amount if plain is None else parse_int(self, key, plain) + amount
            result[:] = (value,)
            return self.seal(key, str(value).encode())

        await self.inner.update(key, step, keep if keep is None or keep > 0 else ttl)
        return result[0]


class EncryptedStorage(BaseStorage):
    """``storage`` with every value encrypted (AES-GCM) and bound to its full key.

    The codec is the storage's (JSON by default): values are encoded, then encrypted. A
    value moved to another key, or written without the key, reads as
    :class:`~gramio_storage.DecodeError`. Not readable by GramIO's adapters.

    Args:
        storage: The storage (or view) to store ciphertexts in; closed with this one.
        keys: AES keys, the current one first; older ones still decrypt (rotation).
        max_value_bytes: Refuse encoded values larger than this (before encryption).

    Example::

        key = bytes.fromhex(os.environ["STORAGE_KEY"])
        storage = EncryptedStorage(SQLiteStorage("bot.db"), keys=[key])
    """

    def __init__(
        self,
        storage: BaseStorage,
        *,
        keys: Sequence[bytes],
        max_value_bytes: int | None = None,
    ) -> None:
        if getattr(storage.codec, "stores_references", False):
            raise ConfigurationError("EncryptedStorage needs a storage that encodes values")
        holder: list[EncryptedBackend] = []

        def wrap(root: Backend) -> Backend:
            holder.append(EncryptedBackend(root, keys))
            return holder[0]

        backend = wrap_root(storage, wrap)
        self._encrypted = holder[0]
        super().__init__(
            backend, codec=storage.codec, ttl=storage.default_ttl, max_value_bytes=max_value_bytes
        )

    @property
    def encrypted_backend(self) -> EncryptedBackend:
        """The :class:`EncryptedBackend` doing the encryption (under the view's prefix)."""
        return self._encrypted
