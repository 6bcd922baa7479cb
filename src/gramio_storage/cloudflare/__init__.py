"""Cloudflare Workers KV: one storage over the REST API (httpx) or a Python Worker's binding.

* **REST**: ``CloudflareKVStorage(account_id, namespace_id, api_token=...)`` talks to
  ``api.cloudflare.com`` with one pooled ``httpx.AsyncClient``; for bots running anywhere.
* **Binding**: ``CloudflareKVStorage(binding=env.KV)`` (or GramIO's
  ``cloudflare_storage(env.KV)``) inside a Python Worker, where the namespace is an object with
  async ``get``/``put``/``delete``/``list``.

Both are one class over two small clients behind the ``KVClient`` protocol, as httpx puts its
transports under one client. Modules: ``_rest`` (:class:`RestClient`), ``_binding``
(:class:`BindingClient`), ``_errors`` (the one place failures of either become the library's
errors), ``_backend`` (:class:`CloudflareKVBackend`), ``_storage`` (:class:`CloudflareKVStorage`
and its URLs).
"""

from __future__ import annotations

try:
    import httpx  # noqa: F401 - the REST client's driver, checked here once
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "The Cloudflare KV backend needs httpx: pip install 'gramio-storage[cloudflare]'",
        name="httpx",
    ) from e

from ._backend import CloudflareKVBackend, KVClient
from ._binding import BindingClient, KVBinding
from ._rest import RestClient
from ._storage import CloudflareKVStorage, cloudflare_storage

__all__ = [
    "BindingClient",
    "CloudflareKVBackend",
    "CloudflareKVStorage",
    "KVBinding",
    "KVClient",
    "RestClient",
    "cloudflare_storage",
]
