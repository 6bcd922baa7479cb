"""gramio-storage: typed async key-value storage for Telegram bots and their plugins.

The Python form of GramIO's storage contract (``get``/``has``/``set``/``delete``), with typed
keys, TTLs, bulk and atomic operations, prefix views, and backends from memory to SQLite, Redis,
PostgreSQL and Cloudflare KV behind one API::

    from gramio_storage import Key, MemoryStorage

    VIEWS = Key("views", int)
    storage = MemoryStorage()
    await storage.incr(VIEWS)

Backend classes import lazily from here (``from gramio_storage import SQLiteStorage``): the
module behind one is imported when the name is first used, so importing this package never
imports an optional driver, and a missing extra raises one :class:`MissingDependencyError`
naming the ``pip install``.
"""

from typing import TYPE_CHECKING, Any

from ._backend import GONE, Backend, Capabilities, Entry
from ._codecs import JSON, MSGPACK, Codec, JSONCodec, MsgpackCodec
from ._errors import (
    AuthenticationError,
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    CodecError,
    ConfigurationError,
    DecodeError,
    EncodeError,
    InvalidArgumentError,
    InvalidKeyError,
    InvalidTTLError,
    KeyNotFoundError,
    MissingDependencyError,
    RateLimitedError,
    StorageClosedError,
    StorageError,
    UnknownSchemeError,
    UnsupportedOperationError,
    ValueTooLargeError,
)
from ._keys import Key
from ._protocol import TTL, Storage
from ._registry import storage_from_url
from ._storage import BaseStorage
from .memory import MemoryBackend, MemoryStorage, in_memory_storage

if TYPE_CHECKING:
    from .cloudflare import CloudflareKVStorage, cloudflare_storage
    from .postgres import PostgresStorage
    from .redis import RedisStorage, redis_storage
    from .sqlite import SQLiteStorage, sqlite_storage
    from .wrappers import (
        CachedStorage,
        CompressedCodec,
        EncryptedStorage,
        FallbackStorage,
        clamp_ttl,
        instrument,
        with_fallback_storages,
    )

__version__ = "0.2.0.dev0"

# name -> (module, extra). Resolved by __getattr__ on first use.
_LAZY: dict[str, tuple[str, str | None]] = {
    "SQLiteStorage": ("sqlite", None),
    "sqlite_storage": ("sqlite", None),
    "RedisStorage": ("redis", "redis"),
    "redis_storage": ("redis", "redis"),
    "PostgresStorage": ("postgres", "postgres"),
    "CloudflareKVStorage": ("cloudflare", "cloudflare"),
    "cloudflare_storage": ("cloudflare", "cloudflare"),
    "FallbackStorage": ("wrappers", None),
    "with_fallback_storages": ("wrappers", None),
    "CachedStorage": ("wrappers", None),
    "CompressedCodec": ("wrappers", None),
    "clamp_ttl": ("wrappers", None),
    "EncryptedStorage": ("wrappers", "encryption"),
    "instrument": ("wrappers", "otel"),
}


def __getattr__(name: str) -> Any:
    lazy = _LAZY.get(name)
    if lazy is None:
        raise AttributeError(f"module 'gramio_storage' has no attribute {name!r}")
    from ._registry import import_backend

    value = getattr(import_backend(*lazy), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "GONE",
    "JSON",
    "MSGPACK",
    "TTL",
    "AuthenticationError",
    "Backend",
    "BackendError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "BaseStorage",
    "CachedStorage",
    "Capabilities",
    "CloudflareKVStorage",
    "Codec",
    "CodecError",
    "CompressedCodec",
    "ConfigurationError",
    "DecodeError",
    "EncodeError",
    "EncryptedStorage",
    "Entry",
    "FallbackStorage",
    "InvalidArgumentError",
    "InvalidKeyError",
    "InvalidTTLError",
    "JSONCodec",
    "Key",
    "KeyNotFoundError",
    "MemoryBackend",
    "MemoryStorage",
    "MissingDependencyError",
    "MsgpackCodec",
    "PostgresStorage",
    "RateLimitedError",
    "RedisStorage",
    "SQLiteStorage",
    "Storage",
    "StorageClosedError",
    "StorageError",
    "UnknownSchemeError",
    "UnsupportedOperationError",
    "ValueTooLargeError",
    "__version__",
    "clamp_ttl",
    "cloudflare_storage",
    "in_memory_storage",
    "instrument",
    "redis_storage",
    "sqlite_storage",
    "storage_from_url",
    "with_fallback_storages",
]
