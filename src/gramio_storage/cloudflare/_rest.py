"""The REST client: Workers KV through the Cloudflare API (``api.cloudflare.com``), over httpx.

One pooled ``httpx.AsyncClient``; every request is retried after HTTP 429 (honouring
``retry-after``), a 5xx answer, a timeout or a network error, since every KV request is
idempotent. Failures are mapped in :mod:`._errors`; the API token is only ever in the
``Authorization`` header, and a :class:`~gramio_storage._redact.Redactor` scrubs it out of any
text a server sends back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import msgspec

from .._backend_util import chunks, positive_seconds
from .._errors import ConfigurationError
from .._redact import Redactor
from . import _errors
from ._errors import CODE_KEY_NOT_FOUND, NAME

__all__ = ["DEFAULT_BASE_URL", "TOKEN_ENV", "RestClient"]

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
TOKEN_ENV = "CLOUDFLARE_API_TOKEN"  # noqa: S105 - the variable's name, not a secret
_ID = re.compile(r"[0-9a-fA-F]{32}")
BULK_GET_KEYS = 100
BULK_WRITE_KEYS = 10_000
BULK_WRITE_BYTES = 99_000_000  # the API's limit is 100 MB per request; keep a margin
_BACKOFF = 0.25
_MAX_BACKOFF = 8.0

# Indirection so tests can observe (and skip) the waits between retries.
_sleep = asyncio.sleep


class RestClient:
    """Workers KV over the Cloudflare REST API (the ``KVClient`` protocol of ``._backend``).

    Takes and checks the REST options of :class:`~gramio_storage.cloudflare.CloudflareKVStorage`
    (documented there); nothing is sent until the first operation.

    Raises:
        ConfigurationError: Malformed ids, no token (and no ``client``), or a bad number.
    """

    bulk_reads = True  # POST /bulk/get returns text values, 100 keys per request

    def __init__(
        self,
        account_id: str | None,
        namespace_id: str | None,
        *,
        api_token: str | None = None,
        base_url: str | None = None,
        client: httpx.AsyncClient | None = None,
        timeout: float | None = 30.0,
        connect_timeout: float | None = None,
        max_connections: int = 64,
        retries: int = 3,
        max_retry_wait: float = 30.0,
    ) -> None:
        self.account_id = _cloudflare_id("account_id", account_id)
        self.namespace_id = _cloudflare_id("namespace_id", namespace_id)
        timeout = positive_seconds(timeout, "timeout", backend=NAME)
        connect_timeout = positive_seconds(connect_timeout, "connect_timeout", backend=NAME)
        if max_retry_wait != 0:
            max_retry_wait = positive_seconds(max_retry_wait, "max_retry_wait", backend=NAME) or 0.0
        for option, number, least in (
            ("retries", retries, 0),
            ("max_connections", max_connections, 1),
        ):
            if number.__class__ is not int or number < least:
                raise ConfigurationError(
                    f"{option} must be an int >= {least}, got {number!r}", backend=NAME
                )
        token = api_token if api_token is not None else os.environ.get(TOKEN_ENV)
        if client is None and not token:
            raise ConfigurationError(
                f"Cloudflare KV needs an API token: pass api_token=... or set {TOKEN_ENV}",
                backend=NAME,
            )
        token = token or ""
        base_url = base_url or DEFAULT_BASE_URL
        self.base_url = base_url.rstrip("/")
        self._namespace_url = (
            f"{self.base_url}/accounts/{self.account_id}/storage/kv/namespaces/{self.namespace_id}"
        )
        self._values_url = self._namespace_url + "/values/"
        self._metadata_url = self._namespace_url + "/metadata/"
        self._redact = Redactor([token])
        self._retries = retries
        self._max_retry_wait = max_retry_wait
        self._owns_client = client is None
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout or timeout)
        self._limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max(1, max_connections // 2),
        )
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = client if client is not None else self._new_client()
        # Own clients by event loop: httpx connections belong to the loop that opened them, so
        # a second asyncio.run() (or a loop in another thread) gets a client of its own.
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._unused: httpx.AsyncClient | None = self._client if client is None else None
        # A caller's client gets the token per request (its own headers may differ).
        self._headers = None if client is None or not token else self._auth

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(headers=self._auth, timeout=self._timeout, limits=self._limits)

    @property
    def client(self) -> httpx.AsyncClient:
        """The ``httpx.AsyncClient`` requests go through (the latest one, if several loops)."""
        return self._client

    def _current(self) -> httpx.AsyncClient:
        """The client for the running event loop (a caller's client is used everywhere)."""
        if not self._owns_client:
            return self._client
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            for gone in [old for old in self._clients if old.is_closed()]:
                _abandon(self._clients.pop(gone))
            client, self._unused = self._unused or self._new_client(), None
            self._clients[loop] = client
        self._client = client
        return client

    def describe(self) -> dict[str, object]:
        fields: dict[str, object] = {
            "account_id": self.account_id,
            "namespace_id": self.namespace_id,
        }
        if self.base_url != DEFAULT_BASE_URL:
            fields["base_url"] = self.base_url
        return fields

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
        """Send one request with retries; map failures (see :mod:`._errors`).

        With ``missing_ok``, a 404 meaning "key not found" (code 10009) is returned to the
        caller; any other 404 (unknown namespace, wrong base_url) is an error.
        """
        client = self._current()
        attempt = 0
        while True:
            attempt += 1
            wait: float | None = None
            try:
                response = await client.request(method, url, content=content, headers=self._headers)
            except (httpx.HTTPError, RuntimeError) as e:
                error = _errors.transport_error(
                    e,
                    method=method,
                    key=key,
                    base_url=self.base_url,
                    attempts=attempt,
                    redact=self._redact,
                )
                if error is None:
                    raise
                if attempt > self._retries or not _errors.retryable(error):
                    raise error from e
                await _sleep(self._delay(attempt))
                continue
            status = response.status_code
            if status < 300:
                return response
            if status == 404 and missing_ok and _errors.error_code(response) == CODE_KEY_NOT_FOUND:
                return response
            if status == 429 or status >= 500:
                wait = self._delay(attempt)
                if status == 429:
                    after = _errors.retry_after(response)
                    if after is not None:
                        wait = after if after <= self._max_retry_wait else None
                if wait is not None and attempt <= self._retries:
                    await _sleep(wait)
                    continue
            raise _errors.status_error(
                response,
                key=key,
                attempts=attempt,
                account_id=self.account_id,
                base_url=self.base_url,
                redact=self._redact,
            ) from _errors.status_cause(response, self._redact)

    @staticmethod
    def _delay(attempt: int) -> float:
        """Exponential backoff with "equal" jitter: 0.125-0.25 s, 0.25-0.5 s... capped at 8 s.

        Never near zero (unlike full jitter), so a retry never hits the API straight away.
        """
        base: float = min(_BACKOFF * 2 ** (attempt - 1), _MAX_BACKOFF)
        return base / 2 + random.random() * base / 2  # noqa: S311 - jitter, not crypto

    # ------------------------------------------------------------------ single keys

    async def get(self, key: str) -> bytes | None:
        response = await self._send("GET", self._values_url + _path(key), key, missing_ok=True)
        return response.content if response.status_code == 200 else None

    async def has(self, key: str) -> bool:
        # The metadata endpoint answers 404 for a missing key without sending the value.
        response = await self._send("GET", self._metadata_url + _path(key), key, missing_ok=True)
        return response.status_code == 200

    async def put(self, key: str, data: bytes, ttl: int | None) -> None:
        url = self._values_url + _path(key)
        if ttl is not None:
            url += f"?expiration_ttl={ttl}"
        await self._send("PUT", url, key, content=data)

    async def delete(self, key: str) -> None:
        await self._send("DELETE", self._values_url + _path(key), key)

    # ------------------------------------------------------------------ bulk

    async def get_bulk(self, keys: Sequence[str]) -> dict[str, bytes | None]:
        """Text values of up to 100 keys in one request (``None`` for missing ones)."""
        body = msgspec.json.encode({"keys": keys, "type": "text"})
        response = await self._send(
            "POST", self._namespace_url + "/bulk/get", _one(keys), content=body
        )
        result = _errors.envelope(response).get("result") or {}
        values: dict[str, str | None] = result.get("values") or {}
        return {k: None if (v := values.get(k)) is None else v.encode() for k in keys}

    async def put_many(self, items: Sequence[tuple[str, bytes]], ttl: int | None) -> None:
        await self.put_entries([(key, data, ttl) for key, data in items])

    async def put_entries(self, items: Sequence[tuple[str, bytes, int | None]]) -> None:
        entries: list[bytes] = []
        for key, data, ttl in items:
            entry: dict[str, Any]
            try:
                entry = {"key": key, "value": data.decode()}
            except UnicodeDecodeError:
                entry = {"key": key, "value": base64.b64encode(data).decode(), "base64": True}
            if ttl is not None:
                entry["expiration_ttl"] = ttl
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

    async def _bulk_write(
        self, entries: list[bytes], items: Sequence[tuple[str, bytes, int | None]]
    ) -> None:
        body = b"[" + b",".join(entries) + b"]"
        key = items[0][0] if len(items) == 1 else None
        response = await self._send("PUT", self._namespace_url + "/bulk", key, content=body)
        _check_bulk(response, "write", len(items))

    async def delete_many(self, keys: Sequence[str]) -> None:
        for chunk in chunks(keys, BULK_WRITE_KEYS):
            response = await self._send(
                "POST",
                self._namespace_url + "/bulk/delete",
                _one(chunk),
                content=msgspec.json.encode(list(chunk)),
            )
            _check_bulk(response, "delete", len(chunk))

    async def pages(self, prefix: str, limit: int) -> AsyncIterator[list[tuple[str, float | None]]]:
        """``(name, expiration or None)`` page by page; the cursor names the last key."""
        # Percent-encode by hand: form encoding would send a space as "+", which some
        # decoders keep as a literal "+".
        url = f"{self._namespace_url}/keys?limit={limit}"
        if prefix:
            url += "&prefix=" + quote(prefix, safe="")
        next_url = url
        while True:
            body = _errors.envelope(await self._send("GET", next_url, None))
            page = body.get("result") or []
            if page:
                yield [(item["name"], item.get("expiration")) for item in page]
            cursor = (body.get("result_info") or {}).get("cursor")
            if not cursor:
                return
            next_url = url + "&cursor=" + quote(cursor, safe="")

    async def close(self) -> None:
        if not self._owns_client:
            return  # the caller's client
        clients, self._clients = self._clients, {}
        unused, self._unused = self._unused, None
        if unused is not None:
            await unused.aclose()  # never connected: nothing to wait for
        here = asyncio.get_running_loop()
        for loop, client in clients.items():
            if loop is here:
                await client.aclose()
            elif loop.is_closed():
                _abandon(client)
            else:  # a loop still running in another thread closes its own client
                asyncio.run_coroutine_threadsafe(client.aclose(), loop)


def _cloudflare_id(name: str, value: object) -> str:
    if isinstance(value, str) and _ID.fullmatch(value):
        return value
    raise ConfigurationError(
        f"{name} must be a Cloudflare id of 32 hex characters, got {value!r} (the namespace id "
        "is shown under Workers KV in the dashboard, not its title); inside a Worker, pass "
        "binding=env.KV instead",
        backend=NAME,
    )


def _abandon(client: httpx.AsyncClient) -> None:
    """Close the sockets of a client whose event loop has closed, awaiting nothing.

    ``aclose()`` needs the client's loop, which is gone, and left alone the sockets stay open
    until garbage collection (with a ResourceWarning each). So each pooled connection's asyncio
    transport is finished directly (httpx and httpcore keep these private: if their layout
    changes, this does nothing and the garbage collector closes the sockets as before).
    """
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    for connection in list(getattr(pool, "connections", ())):
        stream = getattr(getattr(connection, "_connection", None), "_network_stream", None)
        transport = getattr(getattr(stream, "_stream", None), "_transport", None)
        finish = getattr(transport, "_call_connection_lost", None)
        if finish is not None:
            with contextlib.suppress(Exception):
                finish(None)  # closes the socket


def _path(key: str) -> str:
    """``key`` as one percent-encoded path segment (``/``, ``?``, ``#``, ``%`` included)."""
    return quote(key, safe="")


def _one(keys: Sequence[str]) -> str | None:
    """The key a bulk request's errors name: the only one, or none."""
    return keys[0] if len(keys) == 1 else None


def _check_bulk(response: httpx.Response, action: str, total: int) -> None:
    result = _errors.envelope(response).get("result") or {}
    failed = result.get("unsuccessful_keys") or []
    if failed:
        raise _errors.bulk_failure(failed, action, total)
