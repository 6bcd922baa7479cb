"""Composable storages: wrappers are Backends over Backends, so they stack on every storage.

========================  =========================================================  =========
name                      what                                                       extra
========================  =========================================================  =========
``FallbackStorage``       tiers: read the first that has a key, write to all         -
``with_fallback_storages``  GramIO's name for it                                     -
``CachedStorage``         process-local LRU near cache; Redis: server invalidation   -
``CompressedCodec``       a codec compressing another codec's bytes (zstd or zlib)   ``zstd``
``EncryptedStorage``      AES-GCM per value, the full key bound as associated data   ``encryption``
``clamp_ttl``             write TTLs clamped into ``[min_ttl, max_ttl]``             -
``instrument``            OpenTelemetry spans and metrics                            ``otel``
========================  =========================================================  =========

Each ``...Storage`` takes a storage (or a view) and is a storage; its ``.backend`` is the
wrapper Backend (``FallbackBackend``, ``CachedBackend``...), usable directly over any Backend.
Names import lazily, so importing this package never needs an optional dependency. See
``docs/composition.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._base import PrefixedBackend, WrapperBackend
    from ._cache import CachedBackend, CachedStorage
    from ._compress import CompressedCodec
    from ._encrypt import EncryptedBackend, EncryptedStorage, generate_key
    from ._fallback import FallbackBackend
    from ._fallback_storage import FallbackStorage, with_fallback_storages
    from ._limits import TTLClampBackend, TTLClampedStorage, clamp_ttl
    from ._otel import InstrumentedBackend, InstrumentedStorage, instrument

# name -> (module, extra needed or None)
_LAZY: dict[str, tuple[str, str | None]] = {
    "WrapperBackend": ("_base", None),
    "PrefixedBackend": ("_base", None),
    "FallbackBackend": ("_fallback", None),
    "FallbackStorage": ("_fallback_storage", None),
    "with_fallback_storages": ("_fallback_storage", None),
    "CachedBackend": ("_cache", None),
    "CachedStorage": ("_cache", None),
    "CompressedCodec": ("_compress", None),
    "EncryptedBackend": ("_encrypt", "encryption"),
    "EncryptedStorage": ("_encrypt", "encryption"),
    "generate_key": ("_encrypt", "encryption"),
    "TTLClampBackend": ("_limits", None),
    "TTLClampedStorage": ("_limits", None),
    "clamp_ttl": ("_limits", None),
    "InstrumentedBackend": ("_otel", "otel"),
    "InstrumentedStorage": ("_otel", "otel"),
    "instrument": ("_otel", "otel"),
}


def __getattr__(name: str) -> Any:
    lazy = _LAZY.get(name)
    if lazy is None:
        raise AttributeError(f"module 'gramio_storage.wrappers' has no attribute {name!r}")
    module_name, extra = lazy
    try:
        module = importlib.import_module(f".{module_name}", __name__)
    except ImportError as e:
        if extra is None:
            raise
        from .._errors import MissingDependencyError

        raise MissingDependencyError(
            f"{name} needs an optional dependency: pip install 'gramio-storage[{extra}]' ({e})"
        ) from e
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "CachedBackend",
    "CachedStorage",
    "CompressedCodec",
    "EncryptedBackend",
    "EncryptedStorage",
    "FallbackBackend",
    "FallbackStorage",
    "InstrumentedBackend",
    "InstrumentedStorage",
    "PrefixedBackend",
    "TTLClampBackend",
    "TTLClampedStorage",
    "WrapperBackend",
    "clamp_ttl",
    "generate_key",
    "instrument",
    "with_fallback_storages",
]
