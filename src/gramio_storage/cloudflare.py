"""Cloudflare Workers KV, over the REST API (httpx) or through a Python Worker's KV binding.

Two ways in, one class, the same behaviour:

* **REST**: ``CloudflareKVStorage(account_id, namespace_id, api_token=...)`` talks to
  ``api.cloudflare.com`` with one pooled ``httpx.AsyncClient``; for bots running anywhere.
* **Binding**: ``CloudflareKVStorage.from_binding(env.KV)`` inside a Python Worker, where the
  namespace is an object with async ``get``/``put``/``delete``/``list``.

Values are stored exactly as the codec encodes them (compact JSON text by default), under the
bare key, so a GramIO bot on Workers (``@gramio/storage-cloudflare``) and a Python bot can share
one namespace. KV has no atomic operations, so ``add``, ``incr`` and ``update`` raise
:class:`~gramio_storage.UnsupportedOperationError` rather than pretending.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import math
import os
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, NoReturn, Protocol
from urllib.parse import parse_qsl, quote, urlsplit

import msgspec

from ._codecs import JSON, Codec, JSONCodec
from ._errors import (
    AuthenticationError,
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigurationError,
    InvalidKeyError,
    MissingDependencyError,
    RateLimitedError,
    StorageClosedError,
    StorageError,
    UnsupportedOperationError,
    ValueTooLargeError,
)
from ._protocol import TTL
from ._storage import BaseStorage

try:
    import httpx
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        "The Cloudflare KV backend needs httpx. "
        "Install it with: pip install 'gramio-storage[cloudflare]'"
    ) from e

__all__ = ["CloudflareKVBindingStorage", "CloudflareKVStorage", "KVBinding"]

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
TOKEN_ENV = "CLOUDFLARE_API_TOKEN"  # noqa: S105 - the variable's name, not a secret

# Limits of Workers KV (https://developers.cloudflare.com/kv/platform/limits/).
MAX_KEY_BYTES = 512
MAX_VALUE_BYTES = 25 * 1024 * 1024
MIN_TTL = 60
BULK_GET_KEYS = 100
BULK_WRITE_KEYS = 10_000
BULK_WRITE_BYTES = 99_000_000  # the API's limit is 100 MB per request; keep a margin
LIST_LIMIT = 1000

_ID = re.compile(r"[0-9a-fA-F]{32}")
_DOTS = frozenset((".", ".."))
_CODE_KEY_NOT_FOUND = 10009
_CODE_NAMESPACE_NOT_FOUND = 10013
_BINDING_ERROR = re.compile(r"KV [A-Z_ ]+ failed: (\d{3}) ")

# Indirection so tests can observe (and skip) the waits between retries.
_sleep = asyncio.sleep


class KVBinding(Protocol):
    """What :meth:`CloudflareKVStorage.from_binding` needs: a Workers KV namespace binding.

    In a Python Worker this is ``env.KV`` (a JavaScript object whose methods return promises,
    awaited directly from Python). ``get`` of a list of keys (bulk read) is optional.
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


class CloudflareKVStorage(BaseStorage):
    """A storage in a Cloudflare Workers KV namespace, through the Cloudflare REST API.

    Args:
        account_id: The Cloudflare account id (32 hex characters).
        namespace_id: The KV namespace id (32 hex characters, not its title).
        api_token: An API token with the "Workers KV Storage" permission; defaults to the
            ``CLOUDFLARE_API_TOKEN`` environment variable. Never shown in reprs or errors.
        base_url: The API root, ``https://api.cloudflare.com/client/v4`` by default (change it
            for a proxy or a local emulator).
        client: An ``httpx.AsyncClient`` to use instead of creating one; the storage then
            leaves it open on :meth:`close`, and the token is optional (the client may carry
            its own ``Authorization`` header).
        timeout: Seconds per HTTP request (connect, read, write, pool), for the own client.
        retries: How many times a request is retried after HTTP 429, a 5xx answer, a timeout
            or a network error, before the error is raised. Every KV request is idempotent.
        max_retry_wait: The longest ``retry-after`` (seconds) honoured by waiting; a longer
            one raises :class:`~gramio_storage.RateLimitedError` at once (the API blocks an
            over-limit token for minutes, which no bot handler should sit through).
        ttl: Default time to live for writes; at least 60 seconds (KV's minimum).
        codec: How values become bytes; JSON (the default) keeps GramIO compatibility.

    Example::

        storage = CloudflareKVStorage(
            account_id="023e105f4ecef8ad9ca31a8372d0c353",
            namespace_id="0f2ac74b498b48028cb68387c421e279",
        )  # token from CLOUDFLARE_API_TOKEN
        await storage.set("session:1", {"step": "ask_name"}, ttl=3600)
    """

    backend_name: ClassVar[str] = "cloudflare"
    min_ttl: ClassVar[float] = float(MIN_TTL)

    _client: httpx.AsyncClient

    def __init__(
        self,
        account_id: str,
        namespace_id: str,
        *,
        api_token: str | None = None,
        base_url: str | None = None,
        client: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        max_retry_wait: float = 30.0,
        ttl: TTL | None = None,
        codec: Codec = JSON,
    ) -> None:
        super().__init__(codec=codec, ttl=ttl)
        for name, value in (("account_id", account_id), ("namespace_id", namespace_id)):
            if not isinstance(value, str) or not _ID.fullmatch(value):
                raise ConfigurationError(
                    f"{name} must be a Cloudflare id of 32 hex characters, got {value!r} "
                    "(the namespace id is shown under Workers KV in the dashboard, not its title)"
                )
        if retries.__class__ is not int or retries < 0:
            raise ConfigurationError(f"retries must be an int >= 0, got {retries!r}")
        if not max_retry_wait >= 0:
            raise ConfigurationError(f"max_retry_wait must be >= 0, got {max_retry_wait!r}")
        token = api_token if api_token is not None else os.environ.get(TOKEN_ENV)
        if client is None and not token:
            raise ConfigurationError(
                f"Cloudflare KV needs an API token: pass api_token=... or set {TOKEN_ENV}"
            )
        self.account_id = account_id
        self.namespace_id = namespace_id
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._namespace_url = (
            f"{self.base_url}/accounts/{account_id}/storage/kv/namespaces/{namespace_id}"
        )
        self._values_url = self._namespace_url + "/values/"
        self._metadata_url = self._namespace_url + "/metadata/"
        self._token = token or ""
        self._retries = retries
        self._max_retry_wait = float(max_retry_wait)
        self._backoff = 0.25
        # JSON text can travel as JSON strings in bulk calls; other codecs need base64.
        self._text = isinstance(codec, JSONCodec)
        self._owns_client = client is None
        if client is None:
            self._client = httpx.AsyncClient(
                headers={"Authorization": f"Bearer {token}"},
                timeout=timeout,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            )
            self._headers: dict[str, str] | None = None
        else:
            self._client = client
            self._headers = {"Authorization": f"Bearer {token}"} if token else None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> CloudflareKVStorage:
        """Create a storage from ``cloudflare://<account_id>/<namespace_id>``.

        Query parameters ``base_url``, ``timeout``, ``retries`` and ``max_retry_wait`` are
        accepted; keyword ``options`` go to the constructor (``api_token=``, ``ttl=``...). The
        token never goes in the URL (URLs end up in logs): pass ``api_token=`` or set
        ``CLOUDFLARE_API_TOKEN``.

        Raises:
            ConfigurationError: The URL is malformed or carries credentials.
        """
        parts = urlsplit(url)
        if parts.scheme.lower() != "cloudflare":
            raise ConfigurationError(f"Not a cloudflare:// URL: {parts.scheme}://...")
        if "@" in parts.netloc:
            raise ConfigurationError(
                "cloudflare:// URLs must not contain credentials; pass api_token=... or set "
                f"{TOKEN_ENV}"
            )
        segments = [s for s in parts.path.split("/") if s]
        if not parts.netloc or len(segments) != 1:
            raise ConfigurationError(
                "Cloudflare KV URL must be cloudflare://<account_id>/<namespace_id>, got "
                f"{parts.scheme}://{parts.netloc}{parts.path}"
            )
        query: dict[str, Any] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name == "base_url":
                query[name] = value
            elif name in ("timeout", "max_retry_wait"):
                query[name] = _number(name, value, float)
            elif name == "retries":
                query[name] = _number(name, value, int)
            else:
                raise ConfigurationError(
                    f"Unknown cloudflare:// URL parameter {name!r} "
                    "(known: base_url, timeout, retries, max_retry_wait)"
                )
        return cls(parts.netloc, segments[0], **{**query, **options})

    @classmethod
    def from_binding(
        cls,
        binding: KVBinding,
        *,
        bulk_get: bool = True,
        to_js: Callable[[Any], Any] | None = None,
        ttl: TTL | None = None,
        codec: Codec = JSON,
    ) -> CloudflareKVBindingStorage:
        """Use a Workers KV binding (``env.KV`` in a Python Worker) instead of the REST API.

        Args:
            binding: The namespace binding, or any object with its async ``get``, ``put``,
                ``delete`` and ``list`` methods.
            bulk_get: Read up to 100 keys per ``binding.get([...])`` call in ``get_many``;
                turn it off on a runtime older than bulk reads (April 2025).
            to_js: Converts the option dicts and key lists passed to the binding into
                JavaScript values. By default Pyodide's ``to_js`` (with
                ``Object.fromEntries`` for dicts) inside a Worker, identity elsewhere.
            ttl: Default time to live for writes; at least 60 seconds.
            codec: How values become bytes.
        """
        return CloudflareKVBindingStorage(
            binding, bulk_get=bulk_get, to_js=to_js, ttl=ttl, codec=codec
        )

    def _repr_fields(self) -> dict[str, object]:
        fields: dict[str, object] = {
            "account_id": self.account_id,
            "namespace_id": self.namespace_id,
        }
        if self.base_url != DEFAULT_BASE_URL:
            fields["base_url"] = self.base_url
        return fields

    # ------------------------------------------------------------------ validation

    def _path(self, key: str) -> str:
        """Check ``key`` against KV's rules and percent-encode it as one path segment."""
        try:
            # 128 characters are at most 512 UTF-8 bytes: most keys skip the encode.
            if (len(key) > 128 and len(key.encode()) > MAX_KEY_BYTES) or key in _DOTS:
                raise self._bad_key(key)
            return quote(key, safe="")
        except UnicodeEncodeError as e:
            raise self._not_unicode(key) from e

    def _check_key(self, key: str) -> None:
        """:meth:`_path`'s checks, for keys sent in a request body (bulk calls, listings)."""
        try:
            size = len(key.encode())
        except UnicodeEncodeError as e:
            raise self._not_unicode(key) from e
        if size > MAX_KEY_BYTES or key in _DOTS:
            raise self._bad_key(key)

    def _not_unicode(self, key: str) -> InvalidKeyError:
        return InvalidKeyError(
            f"Key {key!r} is not valid Unicode text (it has a lone surrogate); Cloudflare KV "
            "keys are UTF-8",
            key=key,
            backend=self.backend_name,
        )

    def _bad_key(self, key: str) -> InvalidKeyError:
        if key in _DOTS:
            why = "'.' and '..' are not allowed as Cloudflare KV keys"
        else:
            size = len(key.encode(errors="surrogatepass"))
            why = f"{size} UTF-8 bytes exceeds Cloudflare KV's limit of {MAX_KEY_BYTES} bytes"
        return InvalidKeyError(f"Invalid key {key!r}: {why}", key=key, backend=self.backend_name)

    def _check_value(self, key: str, data: bytes) -> None:
        if len(data) > MAX_VALUE_BYTES:
            raise ValueTooLargeError(
                f"The value for key {key!r} is {len(data)} bytes encoded, above Cloudflare "
                f"KV's limit of {MAX_VALUE_BYTES} bytes (25 MiB); nothing was written",
                key=key,
                backend=self.backend_name,
            )

    # ------------------------------------------------------------------ HTTP

    async def _send(
        self,
        method: str,
        url: str,
        key: str | None,
        *,
        content: bytes | None = None,
        missing_ok: bool = False,
    ) -> httpx.Response:
        """Send one request, retrying 429/5xx/network failures; map failures to our errors.

        With ``missing_ok``, a 404 meaning "key not found" (code 10009) is returned to the
        caller; any other 404 (unknown namespace, wrong base_url) is an error.
        """
        attempt = 0
        while True:
            try:
                response = await self._client.request(
                    method, url, content=content, headers=self._headers
                )
            except httpx.TimeoutException as e:
                if attempt < self._retries:
                    attempt += 1
                    await _sleep(self._delay(attempt))
                    continue
                raise BackendTimeoutError(
                    f"Cloudflare KV did not answer {method} for {_about(key)} in time "
                    f"({attempt + 1} attempts)",
                    key=key,
                    backend=self.backend_name,
                ) from e
            except httpx.TransportError as e:
                if attempt < self._retries:
                    attempt += 1
                    await _sleep(self._delay(attempt))
                    continue
                raise BackendUnavailableError(
                    f"Cannot reach Cloudflare KV at {self.base_url} for {_about(key)}: "
                    f"{e.__class__.__name__}: {e}",
                    key=key,
                    backend=self.backend_name,
                ) from e
            except RuntimeError as e:
                if self._client.is_closed:
                    raise StorageClosedError(
                        f"The Cloudflare KV storage (or its HTTP client) is closed; {method} "
                        f"for {_about(key)} was not sent",
                        key=key,
                        backend=self.backend_name,
                    ) from e
                raise
            status = response.status_code
            if status < 300:
                return response
            if status == 404 and missing_ok and _error_code(response) == _CODE_KEY_NOT_FOUND:
                return response
            if status == 429 or status >= 500:
                wait = self._delay(attempt + 1)
                if status == 429:
                    retry_after = _retry_after(response)
                    if retry_after is not None:
                        if retry_after > self._max_retry_wait:
                            self._raise(response, key, attempt, retry_after)
                        wait = retry_after
                if attempt < self._retries:
                    attempt += 1
                    await _sleep(wait)
                    continue
            self._raise(response, key, attempt, _retry_after(response))

    def _delay(self, attempt: int) -> float:
        """Exponential backoff with jitter: about 0.25 s, 0.5 s, 1 s... capped at 8 s."""
        base: float = min(self._backoff * 2 ** (attempt - 1), 8.0)
        return base / 2 + random.random() * base / 2  # noqa: S311 - jitter, not crypto

    def _raise(
        self, response: httpx.Response, key: str | None, attempt: int, retry_after: float | None
    ) -> NoReturn:
        status = response.status_code
        detail = self._scrub(_error_detail(response))
        where = f"{response.request.method} for {_about(key)}"
        cause = httpx.HTTPStatusError(
            f"HTTP {status} {detail}", request=response.request, response=response
        )
        if status in (401, 403):
            raise AuthenticationError(
                f"Cloudflare refused the API token ({where}: HTTP {status}, {detail}); check "
                f"that the token is valid and has the 'Workers KV Storage' permission on "
                f"account {self.account_id}",
                key=key,
                backend=self.backend_name,
            ) from cause
        if status == 429:
            after = "" if retry_after is None else f"; it asks to retry after {retry_after:g}s"
            raise RateLimitedError(
                f"Cloudflare KV rate-limited {where} after {attempt + 1} attempts "
                f"(HTTP 429, {detail}){after}",
                key=key,
                backend=self.backend_name,
                retry_after=retry_after,
            ) from cause
        if status == 413:
            raise ValueTooLargeError(
                f"Cloudflare KV refused {where} as too large (HTTP 413, {detail})",
                key=key,
                backend=self.backend_name,
            ) from cause
        if status == 414:
            raise InvalidKeyError(
                f"Cloudflare KV refused {where}: key too long (HTTP 414, {detail})",
                key=key,
                backend=self.backend_name,
            ) from cause
        if status == 404:
            raise BackendError(
                f"Cloudflare KV answered 404 to {where} ({detail}): check account_id, "
                f"namespace_id and base_url ({self.base_url})",
                key=key,
                backend=self.backend_name,
            ) from cause
        error = BackendUnavailableError if status >= 500 else BackendError
        raise error(
            f"Cloudflare KV failed {where}: HTTP {status} ({detail}) after {attempt + 1} attempts",
            key=key,
            backend=self.backend_name,
        ) from cause

    def _scrub(self, text: str) -> str:
        """Remove the token from text the server sent back, should it ever echo it."""
        return text.replace(self._token, "***") if self._token else text

    # ------------------------------------------------------------------ required hooks

    async def _get(self, key: str) -> bytes | None:
        response = await self._send("GET", self._values_url + self._path(key), key, missing_ok=True)
        return response.content if response.status_code == 200 else None

    async def _set(self, key: str, data: bytes, ttl: float | None) -> None:
        url = self._values_url + self._path(key)
        self._check_value(key, data)
        if ttl is not None:
            # KV counts whole seconds; rounding down keeps ttl() <= what was asked.
            url += f"?expiration_ttl={int(ttl)}"
        await self._send("PUT", url, key, content=data)

    async def _delete(self, key: str) -> bool:
        # KV's DELETE does not say whether the key existed: ask first (one metadata read).
        existed = await self._has(key)
        await self._send("DELETE", self._values_url + self._path(key), key)
        return existed

    async def _scan(self, prefix: str) -> AsyncIterator[str]:
        async for page in self._pages(prefix, LIST_LIMIT):
            for item in page:
                yield item["name"]

    async def _pages(self, prefix: str, limit: int) -> AsyncIterator[list[dict[str, Any]]]:
        """List keys page by page; the cursor names the last key, so deletes are safe."""
        # Percent-encode by hand: form encoding would send a space as "+", which some
        # decoders keep as a literal "+".
        url = f"{self._namespace_url}/keys?limit={limit}"
        if prefix:
            url += "&prefix=" + quote(prefix, safe="")
        next_url = url
        while True:
            response = await self._send("GET", next_url, None)
            body = _envelope(response)
            page = body.get("result") or []
            if page:
                yield page
            cursor = (body.get("result_info") or {}).get("cursor")
            if not cursor:
                return
            next_url = url + "&cursor=" + quote(cursor, safe="")

    # ------------------------------------------------------------------ optional hooks

    async def _has(self, key: str) -> bool:
        # The metadata endpoint answers 404 for a missing key without sending the value.
        response = await self._send(
            "GET", self._metadata_url + self._path(key), key, missing_ok=True
        )
        return response.status_code == 200

    async def _get_many(self, keys: Sequence[str]) -> Sequence[bytes | None]:
        for key in keys:
            self._check_key(key)
        if not self._text:
            # Bulk reads return text or parsed JSON, never raw bytes: read binary values singly.
            return await asyncio.gather(*(self._get(k) for k in keys))
        unique = list(dict.fromkeys(keys))
        chunks = [unique[i : i + BULK_GET_KEYS] for i in range(0, len(unique), BULK_GET_KEYS)]
        found: dict[str, str | None] = {}
        for part in await asyncio.gather(*(self._bulk_get(chunk) for chunk in chunks)):
            found.update(part)
        return [None if (v := found.get(k)) is None else v.encode() for k in keys]

    async def _bulk_get(self, keys: list[str]) -> dict[str, str | None]:
        body = msgspec.json.encode({"keys": keys, "type": "text"})
        response = await self._send(
            "POST",
            self._namespace_url + "/bulk/get",
            keys[0] if len(keys) == 1 else None,
            content=body,
        )
        result = _envelope(response).get("result") or {}
        values: dict[str, str | None] = result.get("values") or {}
        return values

    async def _set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        entries: list[bytes] = []
        for key, data in items:
            self._check_key(key)
            self._check_value(key, data)
            entry: dict[str, Any]
            try:
                entry = {"key": key, "value": data.decode()}
            except UnicodeDecodeError:
                entry = {"key": key, "value": base64.b64encode(data).decode(), "base64": True}
            if ttl is not None:
                entry["expiration_ttl"] = int(ttl)
            entries.append(msgspec.json.encode(entry))
        # Chunks of at most 10,000 entries and ~100 MB, as the bulk endpoint requires.
        start = size = 0
        for i, entry_bytes in enumerate(entries):
            full = i - start == BULK_WRITE_KEYS
            if full or (i > start and size + len(entry_bytes) > BULK_WRITE_BYTES):
                await self._bulk_write(entries[start:i], items[start:i])
                start, size = i, 0
            size += len(entry_bytes) + 1
        if start < len(entries):
            await self._bulk_write(entries[start:], items[start:])

    async def _bulk_write(self, entries: list[bytes], items: Sequence[tuple[str, bytes]]) -> None:
        body = b"[" + b",".join(entries) + b"]"
        response = await self._send(
            "PUT",
            self._namespace_url + "/bulk",
            items[0][0] if len(items) == 1 else None,
            content=body,
        )
        self._check_bulk(response, "write", len(items))

    def _check_bulk(self, response: httpx.Response, action: str, total: int) -> None:
        result = _envelope(response).get("result") or {}
        failed = result.get("unsuccessful_keys") or []
        if failed:
            shown = ", ".join(repr(k) for k in failed[:20])
            more = f" and {len(failed) - 20} more" if len(failed) > 20 else ""
            raise BackendError(
                f"Cloudflare KV could not {action} {len(failed)} of {total} keys in a bulk "
                f"request: {shown}{more} (Cloudflare asks to retry them)",
                key=failed[0],
                backend=self.backend_name,
            )

    async def _delete_many(self, keys: Sequence[str]) -> int:
        unique = list(dict.fromkeys(keys))
        for key in unique:
            self._check_key(key)
        # KV's bulk delete does not report which keys existed: count them with bulk reads.
        chunks = [unique[i : i + BULK_GET_KEYS] for i in range(0, len(unique), BULK_GET_KEYS)]
        parts = await asyncio.gather(*(self._bulk_get(chunk) for chunk in chunks))
        existing = sum(v is not None for part in parts for v in part.values())
        await self._bulk_delete(unique)
        return existing

    async def _bulk_delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), BULK_WRITE_KEYS):
            chunk = keys[i : i + BULK_WRITE_KEYS]
            response = await self._send(
                "POST",
                self._namespace_url + "/bulk/delete",
                chunk[0] if len(chunk) == 1 else None,
                content=msgspec.json.encode(chunk),
            )
            self._check_bulk(response, "delete", len(chunk))

    async def _clear(self, prefix: str) -> int:
        deleted = 0
        async for page in self._pages(prefix, LIST_LIMIT):
            await self._bulk_delete([item["name"] for item in page])
            deleted += len(page)
        return deleted

    async def _scan_ttl(self, prefix: str) -> AsyncIterator[tuple[str, float | None]]:
        # The listing carries each key's expiration: no request per key (see _ttl).
        async for page in self._pages(prefix, LIST_LIMIT):
            now = time.time()
            for item in page:
                expiration = item.get("expiration")
                if expiration is None:
                    yield item["name"], None
                elif (left := float(expiration) - now) > 0:
                    yield item["name"], left

    async def _ttl(self, key: str) -> float | None:
        self._check_key(key)
        # A listing reports expirations without sending values; the key itself sorts first
        # among the keys it prefixes, so the first page of 10 holds it if it exists.
        async for page in self._pages(key, 10):
            item = page[0]
            if item["name"] == key:
                return _seconds_left(self, key, item.get("expiration"))
            break
        raise self._not_found(key)

    # KV has no compare-and-set, transactions or counters: refuse instead of racing.

    async def _add(self, key: str, data: bytes, ttl: float | None) -> bool:
        self._unsupported("add", key)

    async def _incr(self, key: str, amount: int, ttl: float | None) -> int:
        self._unsupported("incr", key)

    async def _update(
        self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None
    ) -> None:
        self._unsupported("update", key)

    def _unsupported(self, operation: str, key: str) -> NoReturn:
        raise UnsupportedOperationError(
            f"The cloudflare backend cannot {operation}() key {key!r}: Workers KV has no "
            "atomic operations (no compare-and-set, counters or transactions, and writes take "
            "up to 60 s to reach every location). Use get()/set() where a lost update is "
            "acceptable, or a Durable Object, D1, Redis or PostgreSQL for atomic ones.",
            key=key,
            backend=self.backend_name,
        )

    async def _close(self) -> None:
        if self._owns_client:
            await self._client.aclose()


class CloudflareKVBindingStorage(CloudflareKVStorage):
    """A storage on a Workers KV binding, for Python Workers; behaves like the REST storage.

    Made by :meth:`CloudflareKVStorage.from_binding`.

    The binding has no bulk writes or deletes, so ``set_many``/``delete_many``/``clear`` issue
    one call per key (concurrently, 100 at a time); a Worker invocation may make at most 1,000
    KV operations on the free plan.
    """

    def __init__(
        self,
        binding: KVBinding,
        *,
        bulk_get: bool = True,
        to_js: Callable[[Any], Any] | None = None,
        ttl: TTL | None = None,
        codec: Codec = JSON,
    ) -> None:
        BaseStorage.__init__(self, codec=codec, ttl=ttl)
        for method in ("get", "put", "delete", "list"):
            if not callable(getattr(binding, method, None)):
                raise ConfigurationError(
                    f"from_binding() needs a Workers KV binding (env.KV) with async get, put, "
                    f"delete and list methods; {binding.__class__.__qualname__} has no "
                    f"{method}()"
                )
        self._binding = binding
        self._bulk = bulk_get
        self._to_js = to_js if to_js is not None else _default_to_js()
        self._text = isinstance(codec, JSONCodec)

    def _repr_fields(self) -> dict[str, object]:
        return {"binding": self._binding.__class__.__qualname__}

    async def _call(self, key: str | None, call: Awaitable[Any]) -> Any:
        """Await a binding call, mapping its errors ("KV PUT failed: 413 ...") to ours."""
        try:
            return await call
        except Exception as e:
            message = str(e)
            match = _BINDING_ERROR.search(message)
            status = int(match.group(1)) if match else 0
            if status == 413:
                error: type[StorageError] = ValueTooLargeError
            elif status == 414:
                error = InvalidKeyError
            elif status == 429:
                error = RateLimitedError
            else:
                error = BackendError
            raise error(
                f"The KV binding failed for {_about(key)}: {message}",
                key=key,
                backend=self.backend_name,
            ) from e

    def _value_of(self, value: Any) -> bytes | None:
        if value is None:
            return None
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        return bytes(value.to_bytes())  # a Pyodide JsProxy of an ArrayBuffer

    async def _get(self, key: str) -> bytes | None:
        self._check_key(key)
        if self._text:
            return self._value_of(await self._call(key, self._binding.get(key)))
        return self._value_of(await self._call(key, self._binding.get(key, "arrayBuffer")))

    async def _has(self, key: str) -> bool:
        return await self._get(key) is not None

    async def _set(self, key: str, data: bytes, ttl: float | None) -> None:
        self._check_key(key)
        self._check_value(key, data)
        await self._put(key, data, ttl)

    async def _put(self, key: str, data: bytes, ttl: float | None) -> None:
        value: Any = data.decode() if self._text else self._to_js(data)
        if ttl is None:
            await self._call(key, self._binding.put(key, value))
        else:
            options = self._to_js({"expirationTtl": int(ttl)})
            await self._call(key, self._binding.put(key, value, options))

    async def _delete(self, key: str) -> bool:
        existed = await self._has(key)  # the binding's delete does not say either
        await self._call(key, self._binding.delete(key))
        return existed

    async def _pages(self, prefix: str, limit: int) -> AsyncIterator[list[dict[str, Any]]]:
        options: dict[str, Any] = {"limit": limit}
        if prefix:
            options["prefix"] = prefix
        while True:
            page = await self._call(None, self._binding.list(self._to_js(options)))
            names = [
                {"name": _field(item, "name"), "expiration": _field(item, "expiration")}
                for item in _field(page, "keys") or ()
            ]
            if names:
                yield names
            # Pages can be empty before the end: trust list_complete, not the page size.
            if _field(page, "list_complete") or not _field(page, "cursor"):
                return
            options["cursor"] = _field(page, "cursor")

    async def _get_many(self, keys: Sequence[str]) -> Sequence[bytes | None]:
        for key in keys:
            self._check_key(key)
        if not (self._bulk and self._text):
            return await asyncio.gather(*(self._get(k) for k in keys))
        unique = list(dict.fromkeys(keys))
        found: dict[str, bytes | None] = {}
        for i in range(0, len(unique), BULK_GET_KEYS):
            chunk = unique[i : i + BULK_GET_KEYS]
            result = await self._call(None, self._binding.get(self._to_js(chunk)))
            for key in chunk:
                found[key] = self._value_of(result.get(key))
        return [found[k] for k in keys]

    async def _set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        for key, data in items:
            self._check_key(key)
            self._check_value(key, data)
        for i in range(0, len(items), BULK_GET_KEYS):
            await asyncio.gather(*(self._put(k, d, ttl) for k, d in items[i : i + BULK_GET_KEYS]))

    async def _delete_many(self, keys: Sequence[str]) -> int:
        unique = list(dict.fromkeys(keys))
        found = await self._get_many(unique)
        await self._remove(unique)
        return sum(v is not None for v in found)

    async def _remove(self, keys: list[str]) -> None:
        for i in range(0, len(keys), BULK_GET_KEYS):
            chunk = keys[i : i + BULK_GET_KEYS]
            await asyncio.gather(*(self._call(k, self._binding.delete(k)) for k in chunk))

    async def _clear(self, prefix: str) -> int:
        deleted = 0
        async for page in self._pages(prefix, LIST_LIMIT):
            await self._remove([item["name"] for item in page])
            deleted += len(page)
        return deleted

    async def _close(self) -> None:
        return None  # the Workers runtime owns the binding


# ---------------------------------------------------------------------- helpers


def _about(key: str | None) -> str:
    return "a bulk request" if key is None else f"key {key!r}"


def _number(name: str, text: str, kind: Callable[[str], Any]) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise ConfigurationError(f"cloudflare:// URL parameter {name} must be a number") from None


def _envelope(response: httpx.Response) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(response.content)
    except msgspec.DecodeError as e:
        raise BackendError(
            f"Cloudflare KV sent a response that is not JSON (HTTP {response.status_code}) "
            f"to {response.request.method} {response.request.url.path}",
            backend="cloudflare",
        ) from e
    if not isinstance(body, dict):
        raise BackendError("Cloudflare KV sent an unexpected response shape", backend="cloudflare")
    return body


def _error_code(response: httpx.Response) -> int | None:
    try:
        errors = msgspec.json.decode(response.content).get("errors") or []
        return int(errors[0]["code"])
    except Exception:
        return None


def _error_detail(response: httpx.Response) -> str:
    """The API's "code N: message" list, or the reason phrase for a non-envelope answer."""
    try:
        errors = msgspec.json.decode(response.content).get("errors") or []
        text = "; ".join(f"code {e.get('code')}: {e.get('message')}" for e in errors)
    except Exception:
        text = ""
    return text or (response.reason_phrase or "no details")


def _retry_after(response: httpx.Response) -> float | None:
    """``retry-after`` as seconds: a number, or an HTTP date."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _seconds_left(storage: BaseStorage, key: str, expiration: Any) -> float | None:
    if expiration is None:
        return None
    left = float(expiration) - time.time()
    if left <= 0:  # past its deadline but not yet purged: as good as gone
        raise storage._not_found(key)
    return left


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
