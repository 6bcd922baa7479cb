"""gramio-storage: typed async key-value storage for Telegram bots and their plugins.

The Python form of GramIO's storage contract (``get``/``has``/``set``/``delete``), with typed
keys, TTLs, bulk and atomic operations, prefix views, and backends from memory to SQLite, Redis,
PostgreSQL and Cloudflare KV behind one API::

    from gramio_storage import Key, MemoryStorage

    VIEWS = Key("views", int)
    storage = MemoryStorage()
    await storage.incr(VIEWS)

Backend modules (``gramio_storage.sqlite``, ``.redis``...) are imported on demand, so importing
this package never imports an optional driver.
"""

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
from .memory import MemoryStorage

__version__ = "0.1.0"

__all__ = [
    "JSON",
    "MSGPACK",
    "TTL",
    "AuthenticationError",
    "BackendError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "BaseStorage",
    "Codec",
    "CodecError",
    "ConfigurationError",
    "DecodeError",
    "EncodeError",
    "InvalidKeyError",
    "InvalidTTLError",
    "JSONCodec",
    "Key",
    "KeyNotFoundError",
    "MemoryStorage",
    "MissingDependencyError",
    "MsgpackCodec",
    "RateLimitedError",
    "Storage",
    "StorageClosedError",
    "StorageError",
    "UnknownSchemeError",
    "UnsupportedOperationError",
    "ValueTooLargeError",
    "__version__",
    "storage_from_url",
]
