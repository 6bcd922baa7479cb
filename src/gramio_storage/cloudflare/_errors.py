"""The one place where Cloudflare KV failures become the library's errors.

Two drivers, two tables, as httpx maps httpcore's exceptions in one table:

* REST (httpx): :func:`transport_error` for exceptions raised before an answer arrived (timeouts,
  network errors, a closed or foreign-loop client), :func:`status_error` for an HTTP answer
  that is not a success. :func:`retryable` says which of the resulting errors the REST client
  retries.
* Binding: :func:`binding_errors`, a context manager around each binding call, reads the status
  the runtime puts in its messages (``KV PUT failed: 413 ...``).

Every REST message holding text from the server or the driver goes through the client's
:class:`~gramio_storage._redact.Redactor`, so an API token a server (or a proxy) echoes back
never reaches an exception, a log or a traceback. (A binding carries no credentials.)
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec

from .._errors import (
    AuthenticationError,
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    InvalidKeyError,
    RateLimitedError,
    StorageError,
    ValueTooLargeError,
)
from .._redact import Redactor

__all__ = [
    "CODE_KEY_NOT_FOUND",
    "NAME",
    "about",
    "binding_errors",
    "bulk_failure",
    "envelope",
    "error_code",
    "retry_after",
    "retryable",
    "status_cause",
    "status_error",
    "transport_error",
]

NAME = "cloudflare"
CODE_KEY_NOT_FOUND = 10009  # a 404 with this code is a missing key; any other 404 is an error

# HTTP statuses (REST answers and binding messages alike) with their own error type.
_BY_STATUS: dict[int, type[StorageError]] = {
    401: AuthenticationError,
    403: AuthenticationError,
    413: ValueTooLargeError,
    414: InvalidKeyError,
    429: RateLimitedError,
}
_BINDING_STATUS = re.compile(r"KV [A-Z_ ]+ failed: (\d{3}) ")


def about(key: str | None) -> str:
    """How a message names what a request was for."""
    return "a bulk request" if key is None else f"key {key!r}"


def retryable(error: StorageError) -> bool:
    """Whether the REST client retries after ``error`` (every KV request is idempotent)."""
    return isinstance(error, (BackendTimeoutError, BackendUnavailableError, RateLimitedError))


# ---------------------------------------------------------------------- REST


def transport_error(
    e: Exception, *, method: str, key: str | None, base_url: str, attempts: int, redact: Redactor
) -> StorageError | None:
    """The error for an exception httpx raised instead of answering (None: not ours to map)."""
    where = f"{method} for {about(key)}"
    if isinstance(e, httpx.TimeoutException):
        return BackendTimeoutError(
            f"Cloudflare KV did not answer {where} in time ({attempts} attempts)",
            key=key,
            backend=NAME,
        )
    if isinstance(e, httpx.TransportError):
        return BackendUnavailableError(
            redact(
                f"Cannot reach Cloudflare KV at {base_url} for {about(key)}: "
                f"{e.__class__.__name__}: {e}"
            ),
            key=key,
            backend=NAME,
        )
    if isinstance(e, RuntimeError):
        # httpx: "Cannot send a request, as the client has been closed."; anyio/asyncio:
        # "Event loop is closed" (a caller's client with connections from an earlier loop).
        text = str(e)
        if "closed" in text or "event loop" in text.lower():
            return BackendUnavailableError(
                f"The HTTP client cannot send {where}: {text} (a client passed in must be "
                "open and used on the event loop that created its connections)",
                key=key,
                backend=NAME,
            )
        return None
    if isinstance(e, httpx.HTTPError):  # decoding, redirects: not worth a retry
        return BackendError(
            redact(f"Cloudflare KV {where} failed: {e.__class__.__name__}: {e}"),
            key=key,
            backend=NAME,
        )
    return None


def status_error(
    response: httpx.Response,
    *,
    key: str | None,
    attempts: int,
    account_id: str,
    base_url: str,
    redact: Redactor,
) -> StorageError:
    """The error for a non-success HTTP answer; raise it ``from`` :func:`status_cause`."""
    status = response.status_code
    detail = redact(_error_detail(response))
    where = f"{response.request.method} for {about(key)}"
    error = _BY_STATUS.get(status) or (BackendUnavailableError if status >= 500 else BackendError)
    if error is AuthenticationError:
        message = (
            f"Cloudflare refused the API token ({where}: HTTP {status}, {detail}); check that "
            f"the token is valid and has the 'Workers KV Storage' permission on account "
            f"{account_id}"
        )
    elif error is RateLimitedError:
        wait = retry_after(response)
        after = "" if wait is None else f"; it asks to retry after {wait:g}s"
        return RateLimitedError(
            f"Cloudflare KV rate-limited {where} after {attempts} attempts "
            f"(HTTP 429, {detail}){after}",
            key=key,
            backend=NAME,
            retry_after=wait,
        )
    elif error is ValueTooLargeError:
        message = f"Cloudflare KV refused {where} as too large (HTTP 413, {detail})"
    elif error is InvalidKeyError:
        message = f"Cloudflare KV refused {where}: key too long (HTTP 414, {detail})"
    elif status == 404:
        message = (
            f"Cloudflare KV answered 404 to {where} ({detail}): check account_id, "
            f"namespace_id and base_url ({base_url})"
        )
    else:
        message = (
            f"Cloudflare KV failed {where}: HTTP {status} ({detail}) after {attempts} attempts"
        )
    return error(message, key=key, backend=NAME)


def status_cause(response: httpx.Response, redact: Redactor) -> httpx.HTTPStatusError:
    """The driver-level exception chained as ``__cause__`` of :func:`status_error`'s error."""
    return httpx.HTTPStatusError(
        redact(f"HTTP {response.status_code} {_error_detail(response)}"),
        request=response.request,
        response=response,
    )


def error_code(response: httpx.Response) -> int | None:
    """The first Cloudflare error code in an error envelope, if any."""
    try:
        errors = msgspec.json.decode(response.content).get("errors") or []
        return int(errors[0]["code"])
    except Exception:
        return None


def retry_after(response: httpx.Response) -> float | None:
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


def envelope(response: httpx.Response) -> dict[str, Any]:
    """The decoded JSON envelope of a successful answer; a non-JSON body is a BackendError."""
    try:
        body = msgspec.json.decode(response.content)
    except msgspec.DecodeError as e:
        raise BackendError(
            f"Cloudflare KV sent a response that is not JSON (HTTP {response.status_code}) "
            f"to {response.request.method} {response.request.url.path}",
            backend=NAME,
        ) from e
    if not isinstance(body, dict):
        raise BackendError("Cloudflare KV sent an unexpected response shape", backend=NAME)
    return body


def bulk_failure(failed: list[str], action: str, total: int) -> BackendError:
    """The error for a bulk request whose result lists ``unsuccessful_keys``."""
    shown = ", ".join(repr(k) for k in failed[:20])
    more = f" and {len(failed) - 20} more" if len(failed) > 20 else ""
    return BackendError(
        f"Cloudflare KV could not {action} {len(failed)} of {total} keys in a bulk "
        f"request: {shown}{more} (Cloudflare asks to retry them)",
        key=failed[0],
        backend=NAME,
    )


def _error_detail(response: httpx.Response) -> str:
    """The API's "code N: message" list, or the reason phrase for a non-envelope answer."""
    try:
        errors = msgspec.json.decode(response.content).get("errors") or []
        text = "; ".join(f"code {e.get('code')}: {e.get('message')}" for e in errors)
    except Exception:
        text = ""
    return text or (response.reason_phrase or "no details")


# ---------------------------------------------------------------------- binding


@contextlib.contextmanager
def binding_errors(key: str | None) -> Iterator[None]:
    """Map what a binding call raises ("KV PUT failed: 413 ...") to the library's errors."""
    try:
        yield
    except StorageError:
        raise
    except Exception as e:
        message = str(e)
        match = _BINDING_STATUS.search(message)
        status = int(match.group(1)) if match else 0
        error = _BY_STATUS.get(status, BackendError)
        if error is AuthenticationError:
            error = BackendError  # a binding carries no credentials
        raise error(
            f"The KV binding failed for {about(key)}: {message}", key=key, backend=NAME
        ) from e
