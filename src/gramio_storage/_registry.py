"""``storage_from_url``: pick and build a backend from a URL, importing only that backend.

The registry also owns what every URL shares: ``?prefix=`` (applied once, as a
:meth:`~gramio_storage.BaseStorage.with_prefix` view, so no backend parses it) and the one
:class:`~gramio_storage.MissingDependencyError` message for a backend whose extra is missing.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from ._errors import (
    ConfigurationError,
    MissingDependencyError,
    StorageError,
    UnknownSchemeError,
)
from ._storage import BaseStorage

__all__ = ["import_backend", "known_schemes", "storage_from_url"]

ENTRY_POINT_GROUP = "gramio_storage.adapters"


class _Adapter(NamedTuple):
    module: str  # a module of this package
    attr: str  # the class; it has a ``from_url(url, **options)`` classmethod
    extra: str | None  # the pip extra that installs the backend's driver


# A lazy table, as fsspec keeps it: nothing is imported until a URL asks for it.
_BUILTIN: dict[str, _Adapter] = {
    "memory": _Adapter("memory", "MemoryStorage", None),
    "sqlite": _Adapter("sqlite", "SQLiteStorage", None),  # stdlib sqlite3
    "postgresql": _Adapter("postgres", "PostgresStorage", "postgres"),
    "postgres": _Adapter("postgres", "PostgresStorage", "postgres"),
    "redis": _Adapter("redis", "RedisStorage", "redis"),
    "rediss": _Adapter("redis", "RedisStorage", "redis"),
    "unix": _Adapter("redis", "RedisStorage", "redis"),
    "cloudflare": _Adapter("cloudflare", "CloudflareKVStorage", "cloudflare"),
}


def known_schemes() -> list[str]:
    """Every scheme ``storage_from_url`` understands: built-in ones and installed adapters."""
    return sorted({*_BUILTIN, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})


def import_backend(module: str, extra: str | None) -> ModuleType:
    """Import ``gramio_storage.<module>``; a missing driver is one ``MissingDependencyError``."""
    try:
        return importlib.import_module(f"gramio_storage.{module}")
    except MissingDependencyError:
        raise
    except ImportError as e:
        if extra is None or e.name == f"gramio_storage.{module}":
            raise
        if "pip install" in str(e):  # the backend module already named the extra
            raise MissingDependencyError(str(e)) from None
        raise MissingDependencyError(
            f"The {module} backend needs the optional dependency {e.name or e}: "
            f"pip install 'gramio-storage[{extra}]'"
        ) from None


def _split_prefix(url: str) -> tuple[str, str | None]:
    """``url`` without its ``prefix=`` query option, and that option's value.

    The URL is cut as text, not rebuilt by ``urlunsplit`` (which turns ``unix:///path`` into
    ``unix:/path``): everything else stays exactly as the caller wrote it.
    """
    head, sep, rest = url.partition("?")
    if not sep:
        return url, None
    query, hash_, fragment = rest.partition("#")
    kept: list[str] = []
    prefix: str | None = None
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == "prefix":
            prefix = parse_qsl(part, keep_blank_values=True)[0][1] if value else ""
        elif part:
            kept.append(part)
    if prefix is None:
        return url, None
    rebuilt = head + ("?" + "&".join(kept) if kept else "") + (hash_ + fragment if hash_ else "")
    return rebuilt, prefix


def storage_from_url(url: str, **options: Any) -> BaseStorage:
    """Create a storage from a URL such as ``memory://`` or ``sqlite:///bot.db``.

    The scheme picks the backend; ``options`` go to its constructor (``ttl=``, ``codec=``...).
    Any URL may end in ``?prefix=bot1:`` (or ``&prefix=``): the storage returned is then a
    :meth:`~gramio_storage.BaseStorage.with_prefix` view, and closing it closes the storage.
    Third-party packages (``gramio-storage-*``) add schemes through the entry-point group
    ``gramio_storage.adapters``, whose objects are storage classes with a ``from_url`` method.

    Raises:
        ConfigurationError: The URL is malformed (no ``scheme://``, a broken host part...).
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
    url, prefix = _split_prefix(url)
    adapter = _BUILTIN.get(scheme)
    if adapter is not None:
        factory = getattr(import_backend(adapter.module, adapter.extra), adapter.attr)
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
    try:
        storage = from_url(url, **options) if from_url is not None else factory(url, **options)
    except ValueError as e:
        if isinstance(e, StorageError):
            raise
        raise ConfigurationError(f"Malformed {scheme}:// URL: {e}") from None
    if prefix:
        view: BaseStorage = storage.with_prefix(prefix)
        view._view = False  # the only handle the caller has: closing it closes the backend
        return view
    return storage  # type: ignore[no-any-return]
