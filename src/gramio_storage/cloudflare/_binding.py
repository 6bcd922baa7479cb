"""The binding client: Workers KV through a namespace binding (``env.KV``) in a Python Worker.

The binding is a JavaScript object whose methods return promises, awaited directly from Python
(Pyodide). It has no bulk writes or deletes, so those are one call per key, 100 at a time; a
Worker invocation may make at most 1,000 KV operations on the free plan. Failures are mapped in
:func:`._errors.binding_errors`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from .._backend_util import chunks
from .._errors import ConfigurationError
from ._errors import binding_errors

__all__ = ["BindingClient", "KVBinding"]

CONCURRENCY = 100  # binding calls in flight at once for set_many/delete_many
BULK_GET_KEYS = 100


class KVBinding(Protocol):
    """A Workers KV namespace binding: ``env.KV`` in a Python Worker.

    A JavaScript object whose methods return promises. ``get`` of a list of keys (bulk read) is
    optional (see ``bulk_get``).
    """

    def get(self, key: Any, type: str = ...) -> Awaitable[Any]:
        """Read one key (``None`` if missing), or a list of up to 100 keys (a ``Map``)."""
        ...

    def put(self, key: str, value: Any, options: Any = ...) -> Awaitable[Any]:
        """Write a value; options: ``expirationTtl``, ``expiration``, ``metadata``."""
        ...

    def delete(self, key: str) -> Awaitable[Any]:
        """Delete a key (resolves to nothing, whether it existed or not)."""
        ...

    def list(self, options: Any = ...) -> Awaitable[Any]:
        """List keys by ``prefix``, ``limit``, ``cursor``: ``{keys, list_complete, cursor}``."""
        ...


class BindingClient:
    """Workers KV through a binding (the ``KVClient`` protocol of ``._backend``).

    Args:
        binding: The namespace binding, or any object with its async ``get``, ``put``,
            ``delete`` and ``list`` methods.
        bulk_get: Read up to 100 keys per ``binding.get([...])`` call.
        to_js: Converts option dicts, key lists and binary values into JavaScript values;
            Pyodide's ``to_js`` (dicts as plain objects) inside a Worker, identity elsewhere.
        text: Values are UTF-8 text (the JSON codec): written and read as strings.
    """

    def __init__(
        self,
        binding: KVBinding,
        *,
        bulk_get: bool,
        to_js: Callable[[Any], Any] | None,
        text: bool,
    ) -> None:
        for method in ("get", "put", "delete", "list"):
            if not callable(getattr(binding, method, None)):
                raise ConfigurationError(
                    f"binding= needs a Workers KV binding (env.KV) with async get, put, delete "
                    f"and list methods; {binding.__class__.__qualname__} has no {method}()",
                    backend="cloudflare",
                )
        self.binding = binding
        self.bulk_reads = bulk_get
        self._to_js = to_js if to_js is not None else _default_to_js()
        self._text = text

    def describe(self) -> dict[str, object]:
        return {"binding": self.binding.__class__.__qualname__}

    async def _call(self, key: str | None, call: Awaitable[Any]) -> Any:
        with binding_errors(key):
            return await call

    # ------------------------------------------------------------------ single keys

    async def get(self, key: str) -> bytes | None:
        if self._text:
            return _bytes(await self._call(key, self.binding.get(key)))
        return _bytes(await self._call(key, self.binding.get(key, "arrayBuffer")))

    async def has(self, key: str) -> bool:
        return await self.get(key) is not None

    async def put(self, key: str, data: bytes, ttl: int | None) -> None:
        value: Any = data.decode() if self._text else self._to_js(data)
        if ttl is None:
            await self._call(key, self.binding.put(key, value))
        else:
            options = self._to_js({"expirationTtl": ttl})
            await self._call(key, self.binding.put(key, value, options))

    async def delete(self, key: str) -> None:
        await self._call(key, self.binding.delete(key))

    # ------------------------------------------------------------------ bulk

    async def get_bulk(self, keys: Sequence[str]) -> dict[str, bytes | None]:
        """Text values of up to 100 keys in one ``get([...])`` call (a JS ``Map``)."""
        result = await self._call(None, self.binding.get(self._to_js(list(keys))))
        return {k: _bytes(result.get(k)) for k in keys}

    async def put_many(self, items: Sequence[tuple[str, bytes]], ttl: int | None) -> None:
        await self.put_entries([(key, data, ttl) for key, data in items])

    async def put_entries(self, items: Sequence[tuple[str, bytes, int | None]]) -> None:
        for chunk in chunks(items, CONCURRENCY):
            await asyncio.gather(*(self.put(k, data, ttl) for k, data, ttl in chunk))

    async def delete_many(self, keys: Sequence[str]) -> None:
        for chunk in chunks(keys, CONCURRENCY):
            await asyncio.gather(*(self.delete(k) for k in chunk))

    async def pages(self, prefix: str, limit: int) -> AsyncIterator[list[tuple[str, float | None]]]:
        """``(name, expiration or None)`` page by page, following ``cursor``."""
        options: dict[str, Any] = {"limit": limit}
        if prefix:
            options["prefix"] = prefix
        while True:
            page = await self._call(None, self.binding.list(self._to_js(options)))
            names = [
                (_field(item, "name"), _field(item, "expiration"))
                for item in _field(page, "keys") or ()
            ]
            if names:
                yield names
            # Pages can be empty before the end: trust list_complete, not the page size.
            if _field(page, "list_complete") or not _field(page, "cursor"):
                return
            options["cursor"] = _field(page, "cursor")

    async def close(self) -> None:
        return None  # the Workers runtime owns the binding


def _bytes(value: Any) -> bytes | None:
    """A binding's answer as bytes: ``None``, a ``str``, bytes, or a JsProxy of an ArrayBuffer."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return bytes(value.to_bytes())


def _field(obj: Any, name: str) -> Any:
    """Read ``name`` from a dict, or from a JsProxy of a JS object (missing: None)."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _default_to_js() -> Callable[[Any], Any]:
    """Pyodide's converter inside a Python Worker (dicts become plain JS objects); else identity."""
    try:
        from js import Object  # type: ignore[import-not-found]
        from pyodide.ffi import to_js  # type: ignore[import-not-found]
    except ImportError:
        return _identity

    def convert(value: Any) -> Any:
        return to_js(value, dict_converter=Object.fromEntries)

    return convert


def _identity(value: Any) -> Any:
    return value
