"""CloudflareKVStorage: one facade over either KV client (REST or binding), and its URLs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from .._backend_util import query_options
from .._codecs import JSON, Codec, JSONCodec
from .._errors import ConfigurationError
from .._protocol import TTL
from .._storage import BaseStorage
from .._validate import ttl_seconds
from ._backend import CAPABILITIES, CloudflareKVBackend, KVClient
from ._binding import BindingClient, KVBinding
from ._errors import NAME
from ._rest import TOKEN_ENV, RestClient

__all__ = ["CloudflareKVStorage", "cloudflare_storage"]

_URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "base_url": str,
    "ttl": float,
    "timeout": float,
    "connect_timeout": float,
    "max_connections": int,
    "retries": int,
    "max_retry_wait": float,
}
_REST_ONLY = ("account_id", "namespace_id", "api_token", "base_url", "client")


class CloudflareKVStorage(BaseStorage):
    """A storage in a Cloudflare Workers KV namespace, over the REST API or a Worker's binding.

    One class, two clients, the same behaviour (keys, values, errors, unsupported operations):

    * REST, for bots running anywhere: ``CloudflareKVStorage(account_id, namespace_id,
      api_token=...)`` talks to ``api.cloudflare.com`` through one pooled ``httpx.AsyncClient``.
    * Binding, inside a Python Worker: ``CloudflareKVStorage(binding=env.KV)`` (or
      :meth:`from_binding`, or GramIO's :func:`cloudflare_storage`) calls the namespace binding.

    Values are stored as the codec encodes them (compact JSON text by default) under the bare
    key, so a GramIO bot on Workers and a Python bot can share a namespace. KV has no atomic
    operations: ``add``, ``incr`` and ``update`` raise
    :class:`~gramio_storage.UnsupportedOperationError`.

    Args:
        account_id: REST: the Cloudflare account id (32 hex characters).
        namespace_id: REST: the KV namespace id (32 hex characters, not its title).
        binding: The namespace binding (``env.KV``), instead of the REST options.
        api_token: REST: a token with the "Workers KV Storage" permission; defaults to the
            ``CLOUDFLARE_API_TOKEN`` environment variable. Never shown in reprs, errors or logs.
        base_url: REST: the API root, ``https://api.cloudflare.com/client/v4`` by default
            (change it for a proxy or a local emulator).
        client: REST: an ``httpx.AsyncClient`` to use instead of creating one; it is left open
            on :meth:`close`, and the token is optional (the client may carry its own
            ``Authorization`` header).
        timeout: REST: seconds per HTTP request (connect, read, write, pool), own client only;
            ``None``: no timeout.
        connect_timeout: REST: seconds to connect, when different from ``timeout``.
        max_connections: REST: connections the own client keeps at most.
        retries: REST: retries after HTTP 429, a 5xx, a timeout or a network error.
        max_retry_wait: REST: the longest ``retry-after`` (seconds) waited for; a longer one
            raises :class:`~gramio_storage.RateLimitedError` at once (the API blocks an
            over-limit token for minutes, which no bot handler should sit through).
        bulk_get: Binding: read up to 100 keys per ``binding.get([...])`` in ``get_many``; turn
            it off on a runtime older than bulk reads (April 2025).
        to_js: Binding: converts option dicts and key lists into JavaScript values; Pyodide's
            ``to_js`` (dicts as plain objects) inside a Worker by default.
        ttl: Default time to live for writes; at least 60 seconds (KV's minimum).
        codec: How values become bytes; JSON (the default) keeps GramIO compatibility.
        max_value_bytes: Refuse encoded values larger than this (KV's own limit: 25 MiB).

    Raises:
        ConfigurationError: Malformed ids, no token, REST options mixed with ``binding``, or a
            ``binding`` without the binding's methods.

    Example::

        storage = CloudflareKVStorage(
            account_id="023e105f4ecef8ad9ca31a8372d0c353",
            namespace_id="0f2ac74b498b48028cb68387c421e279",
        )  # token from CLOUDFLARE_API_TOKEN
        await storage.set("session:1", {"step": "ask_name"}, ttl=3600)
    """

    def __init__(
        self,
        account_id: str | None = None,
        namespace_id: str | None = None,
        *,
        binding: KVBinding | None = None,
        api_token: str | None = None,
        base_url: str | None = None,
        client: httpx.AsyncClient | None = None,
        timeout: float | None = 30.0,
        connect_timeout: float | None = None,
        max_connections: int = 64,
        retries: int = 3,
        max_retry_wait: float = 30.0,
        bulk_get: bool = True,
        to_js: Callable[[Any], Any] | None = None,
        ttl: TTL | None = None,
        codec: Codec = JSON,
        max_value_bytes: int | None = None,
    ) -> None:
        if ttl is not None:
            ttl_seconds(ttl, CAPABILITIES)  # refuse a bad default before creating a client
        text = isinstance(codec, JSONCodec)
        kv: KVClient
        if binding is not None:
            rest = (account_id, namespace_id, api_token, base_url, client)
            mixed = [n for n, v in zip(_REST_ONLY, rest, strict=True) if v is not None]
            if mixed:
                raise ConfigurationError(
                    f"binding= replaces the REST options; drop {', '.join(mixed)}",
                    backend=NAME,
                )
            kv = BindingClient(binding, bulk_get=bulk_get, to_js=to_js, text=text)
        else:
            kv = RestClient(
                account_id,
                namespace_id,
                api_token=api_token,
                base_url=base_url,
                client=client,
                timeout=timeout,
                connect_timeout=connect_timeout,
                max_connections=max_connections,
                retries=retries,
                max_retry_wait=max_retry_wait,
            )
        self._rest = kv if isinstance(kv, RestClient) else None
        super().__init__(
            CloudflareKVBackend(kv, text_values=text),
            codec=codec,
            ttl=ttl,
            max_value_bytes=max_value_bytes,
        )

    @classmethod
    def from_binding(cls, binding: KVBinding, **options: Any) -> CloudflareKVStorage:
        """``CloudflareKVStorage(binding=binding, **options)``: a Workers binding (``env.KV``).

        ``options`` are the constructor's binding-mode keywords: ``bulk_get``, ``to_js``,
        ``ttl``, ``codec``, ``max_value_bytes``.
        """
        return cls(binding=binding, **options)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> CloudflareKVStorage:
        """Create a REST storage from ``cloudflare://<account_id>/<namespace_id>``.

        Query parameters ``base_url``, ``ttl``, ``timeout``, ``connect_timeout``,
        ``max_connections``, ``retries`` and ``max_retry_wait`` are accepted; keyword
        ``options`` go to the constructor (``api_token=``, ``codec=``...). The token never goes
        in the URL (URLs end up in logs): pass ``api_token=`` or set ``CLOUDFLARE_API_TOKEN``.

        Raises:
            ConfigurationError: The URL is malformed or carries credentials.
        """
        try:
            parts = urlsplit(url)
        except ValueError as e:
            raise ConfigurationError(f"Malformed cloudflare:// URL: {e}", backend=NAME) from None
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
        parsed = query_options(url, _URL_OPTIONS, scheme="cloudflare")
        return cls(parts.netloc, segments[0], **{**parsed, **options})

    # ------------------------------------------------------------------ read-only views

    @property
    def backend(self) -> CloudflareKVBackend:
        """The :class:`CloudflareKVBackend` over the REST or binding client."""
        return self._backend  # type: ignore[return-value]

    @property
    def mode(self) -> str:
        """``"rest"`` or ``"binding"``: which client the storage goes through."""
        return "binding" if self._rest is None else "rest"

    @property
    def account_id(self) -> str | None:
        """The account id (REST); ``None`` on a binding, which does not reveal it."""
        return None if self._rest is None else self._rest.account_id

    @property
    def namespace_id(self) -> str | None:
        """The namespace id (REST); ``None`` on a binding, which does not reveal it."""
        return None if self._rest is None else self._rest.namespace_id

    @property
    def base_url(self) -> str | None:
        """The API root requests go to (REST); ``None`` on a binding."""
        return None if self._rest is None else self._rest.base_url

    @property
    def client(self) -> httpx.AsyncClient | None:
        """The ``httpx.AsyncClient`` in use (REST); ``None`` on a binding."""
        return None if self._rest is None else self._rest.client

    @property
    def binding(self) -> KVBinding | None:
        """The namespace binding (binding mode); ``None`` over REST."""
        kv = self.backend.client
        return kv.binding if isinstance(kv, BindingClient) else None


def cloudflare_storage(binding: KVBinding) -> CloudflareKVStorage:
    """GramIO's ``cloudflareStorage(env.KV)``: a :class:`CloudflareKVStorage` on a binding."""
    return CloudflareKVStorage(binding=binding)
