"""``storage_from_url``: pick and build a backend from a URL, importing only that backend."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, NamedTuple

from ._errors import ConfigurationError, MissingDependencyError, UnknownSchemeError
from ._storage import BaseStorage

__all__ = ["storage_from_url"]

ENTRY_POINT_GROUP = "gramio_storage.adapters"


class _Adapter(NamedTuple):
    target: str  # "module:Class"; the class has a ``from_url(url, **options)`` classmethod
    extra: str | None  # the pip extra that installs the backend's driver


# A lazy table, as fsspec keeps it: nothing is imported until a URL asks for it.
_BUILTIN: dict[str, _Adapter] = {
    "memory": _Adapter("gramio_storage.memory:MemoryStorage", None),
    "sqlite": _Adapter("gramio_storage.sqlite:SQLiteStorage", None),  # stdlib sqlite3
    "postgresql": _Adapter("gramio_storage.postgres:PostgresStorage", "postgres"),
    "postgres": _Adapter("gramio_storage.postgres:PostgresStorage", "postgres"),
    "redis": _Adapter("gramio_storage.redis:RedisStorage", "redis"),
    "rediss": _Adapter("gramio_storage.redis:RedisStorage", "redis"),
    "unix": _Adapter("gramio_storage.redis:RedisStorage", "redis"),
    "cloudflare": _Adapter("gramio_storage.cloudflare:CloudflareKVStorage", "cloudflare"),
}


def known_schemes() -> list[str]:
    """Every scheme ``storage_from_url`` understands: built-in ones and installed adapters."""
    return sorted({*_BUILTIN, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})


def storage_from_url(url: str, **options: Any) -> BaseStorage:
    """Create a storage from a URL such as ``memory://`` or ``sqlite:///bot.db``.

    The scheme picks the backend; ``options`` go to its constructor (``ttl=``, ``codec=``...).
    Third-party packages (``gramio-storage-*``) add schemes through the entry-point group
    ``gramio_storage.adapters``, whose objects are storage classes with a ``from_url`` method.

    Raises:
        UnknownSchemeError: No adapter handles the scheme; the message lists the known ones.
        MissingDependencyError: The backend's extra is not installed; the message says which
            ``pip install`` to run.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"storage URL must be a str, got {url.__class__.__qualname__}")
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    if not sep or not scheme:
        raise ConfigurationError(
            "Storage URL must look like 'scheme://...' (for example 'memory://'); "
            f"known schemes: {', '.join(known_schemes())}"
        )
    adapter = _BUILTIN.get(scheme)
    if adapter is not None:
        factory = _load(adapter, scheme)
    else:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == scheme]
        if not found:
            raise UnknownSchemeError(
                f"No storage adapter for scheme {scheme!r}; known schemes: "
                f"{', '.join(known_schemes())}. Third-party adapters register the entry-point "
                f"group {ENTRY_POINT_GROUP!r}."
            )
        try:
            factory = found[0].load()
        except ImportError as e:
            raise MissingDependencyError(
                f"The adapter for {scheme!r} ({found[0].value}) failed to import: {e}"
            ) from e
    from_url = getattr(factory, "from_url", None)
    storage = from_url(url, **options) if from_url is not None else factory(url, **options)
    return storage  # type: ignore[no-any-return]


def _load(adapter: _Adapter, scheme: str) -> Any:
    module_name, _, attr = adapter.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        if adapter.extra is None:
            raise
        raise MissingDependencyError(
            f"The {scheme}:// backend needs an optional dependency ({e.name or e}). "
            f"Install it with: pip install 'gramio-storage[{adapter.extra}]'"
        ) from e
    return getattr(module, attr)
