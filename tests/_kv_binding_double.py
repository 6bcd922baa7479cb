"""An in-process stand-in for a Workers KV binding (``env.KV``), as a Python Worker sees it.

Python Workers cannot run offline here (the runtime downloads Pyodide at start), so binding mode
is tested against this double. It copies the binding's documented semantics and Miniflare's
validation, seen through Pyodide's conversions:

* ``get(key)`` -> ``str`` or ``None`` (JS null); ``get(key, "arrayBuffer")`` -> an object with
  ``to_bytes()`` (a JsProxy of an ArrayBuffer); ``get([<= 100 keys])`` -> a ``Mapping`` (a JsProxy
  of a JS ``Map``) with ``None`` for missing keys;
* ``put(key, value, {expirationTtl, expiration})``: ``expirationTtl`` < 60 and expirations less
  than 60 s ahead are rejected, as are keys that are empty, ``.``/``..`` or over 512 UTF-8 bytes
  and values over 25 MiB, with the binding's error text (``KV PUT failed: 400 ...``);
* ``delete(key)`` resolves to nothing, whether or not the key existed;
* ``list({prefix, limit, cursor})`` -> an object with attributes ``keys`` (objects with ``name``
  and ``expiration`` only when set), ``list_complete`` and ``cursor`` (only while incomplete);
  keys in UTF-8 byte order, at most ``limit`` (<= 1000) per page, expired keys hidden.

Time comes from ``clock`` (seconds since the epoch), so tests can move it.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["JsObject", "KVBindingDouble"]

MAX_KEY_BYTES = 512
MAX_VALUE_BYTES = 25 * 1024 * 1024
MIN_TTL = 60
MAX_BULK_GET = 100
MAX_LIST = 1000


class JsObject:
    """A JS object as Pyodide shows it: properties are attributes; a missing one raises."""

    def __init__(self, **properties: Any) -> None:
        self.__dict__.update(properties)


class ArrayBufferProxy:
    """A JsProxy of an ArrayBuffer: Python code calls ``to_bytes()``."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def to_bytes(self) -> bytes:
        return self._data


class KVError(Exception):
    """What a rejected binding call raises in Python (a JsException with the JS message)."""


class KVBindingDouble:
    """A Workers KV namespace binding, in memory. ``calls`` records every method called."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._data: dict[str, tuple[bytes, int | None]] = {}  # key -> (value, expiration s)
        self.calls: list[str] = []

    # -------------------------------------------------------------- binding methods

    async def get(self, key: Any, type: str = "text") -> Any:
        self.calls.append("get")
        if isinstance(key, (list, tuple)):
            if len(key) > MAX_BULK_GET:
                raise KVError(
                    f"KV GET_BULK failed: 400 You can request a maximum of {MAX_BULK_GET} keys"
                )
            if type not in ("text", "json"):
                raise KVError(f"KV GET_BULK failed: 400 Invalid type {type!r}")
            for k in key:
                self._validate("GET_BULK", k)
            return {k: self._read(k, type) for k in key}  # a JS Map
        self._validate("GET", key)
        return self._read(key, type)

    async def put(self, key: str, value: Any, options: Any = None) -> None:
        self.calls.append("put")
        self._validate("PUT", key)
        if isinstance(value, str):
            data = value.encode()
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
        else:
            raise KVError("KV PUT failed: 400 value must be a string, ArrayBuffer or stream")
        if len(data) > MAX_VALUE_BYTES:
            raise KVError(
                f"KV PUT failed: 413 Value length of {len(data)} exceeds limit of "
                f"{MAX_VALUE_BYTES}."
            )
        now = int(self.clock())
        expiration = None
        ttl = _option(options, "expirationTtl")
        at = _option(options, "expiration")
        if ttl is not None:
            if ttl < MIN_TTL:
                raise KVError(
                    f"KV PUT failed: 400 Invalid expiration_ttl of {ttl}. "
                    f"Expiration TTL must be at least {MIN_TTL}."
                )
            expiration = now + int(ttl)
        elif at is not None:
            if at < now + MIN_TTL:
                raise KVError(
                    f"KV PUT failed: 400 Invalid expiration of {at}. Expiration times must be "
                    f"at least {MIN_TTL} seconds in the future."
                )
            expiration = int(at)
        self._data[key] = (data, expiration)

    async def delete(self, key: str) -> None:
        self.calls.append("delete")
        self._validate("DELETE", key)
        self._data.pop(key, None)

    async def list(self, options: Any = None) -> JsObject:
        self.calls.append("list")
        prefix = _option(options, "prefix") or ""
        limit = _option(options, "limit") or MAX_LIST
        cursor = _option(options, "cursor")
        if not 0 < limit <= MAX_LIST:
            raise KVError(f"KV LIST failed: 400 Invalid key_count_limit of {limit}.")
        after = base64.b64decode(cursor).decode() if cursor else None
        live = sorted(
            (k for k in list(self._data) if k.startswith(prefix) and self._live(k)),
            key=lambda k: k.encode(),
        )
        if after is not None:
            live = [k for k in live if k.encode() > after.encode()]
        page, rest = live[:limit], live[limit:]
        keys = []
        for name in page:
            expiration = self._data[name][1]
            keys.append(
                JsObject(name=name)
                if expiration is None
                else JsObject(name=name, expiration=expiration)
            )
        if rest:
            token = base64.b64encode(page[-1].encode()).decode()
            return JsObject(keys=keys, list_complete=False, cursor=token, cacheStatus=None)
        return JsObject(keys=keys, list_complete=True, cacheStatus=None)

    # -------------------------------------------------------------- helpers

    def raw(self, key: str) -> bytes | None:
        """The stored bytes of a live key (what another Worker would read), for assertions."""
        return self._data[key][0] if key in self._data and self._live(key) else None

    def _live(self, key: str) -> bool:
        expiration = self._data[key][1]
        if expiration is not None and self.clock() >= expiration:
            del self._data[key]
            return False
        return True

    def _read(self, key: str, type: str) -> Any:
        if key not in self._data or not self._live(key):
            return None
        data = self._data[key][0]
        if type == "arrayBuffer":
            return ArrayBufferProxy(data)
        if type == "json":
            import json

            return json.loads(data)
        return data.decode(errors="replace")

    @staticmethod
    def _validate(op: str, key: Any) -> None:
        if not isinstance(key, str):
            raise KVError(f"KV {op} failed: 400 key must be a string")
        if key == "":
            raise KVError(f"KV {op} failed: 400 Key names must not be empty")
        if key in (".", ".."):
            raise KVError(
                f'KV {op} failed: 400 Illegal key name "{key}". Please use a different name.'
            )
        size = len(key.encode())
        if size > MAX_KEY_BYTES:
            raise KVError(
                f"KV {op} failed: 414 UTF-8 encoded length of {size} exceeds key length limit "
                f"of {MAX_KEY_BYTES}."
            )


def _option(options: Any, name: str) -> Any:
    if options is None:
        return None
    if isinstance(options, Mapping):
        return options.get(name)
    return getattr(options, name, None)
